"""HAADF-STEM without options: does `segment` find bright particles on a dark support?

Simulated HAADF-STEM fields (temtool.data.simulate, regime ``haadf``: Z-contrast, probe blur,
counting and read noise, scan-line jitter), seeds never used elsewhere, at two samplings
(10 nm Au at 0.2 nm/px, about 50 px across, and at 0.5 nm/px, about 20 px), a third of them
crowded. Each goes through `segment`'s library path with no options (``segment_image``: the
model chosen for the image, the polarity decided, post-processing and particle splitting),
beside Gaussian + Otsu given the same polarity decision and the same post-processing and
splitting (sigma chosen on separate tuning fields). Reported: how often the polarity was
decided bright (all are bright), Dice, object precision/recall/F1 at IoU 0.5, AP 0.5:0.95 and
|count error|, with paired 95% bootstrap intervals (network minus Otsu) over fields.

    python benchmarks/haadf.py [--n 30]

Writes benchmarks/results/haadf.json (the command, commit, recipe and every field's scores).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# a fresh user's defaults: no model trained here is remembered as the latest
os.environ["TEMTOOL_CACHE"] = tempfile.mkdtemp(prefix="temtool-haadf-")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine  # noqa: E402

from temtool.backend import start_backend  # noqa: E402

start_backend()

from temtool.data.simulate import config_for, simulate_batch  # noqa: E402
from temtool.inference.classical import otsu_segment  # noqa: E402
from temtool.inference.measure import PostProcessing  # noqa: E402
from temtool.inference.pipeline import particles_of  # noqa: E402
from temtool.inference.polarity import invert  # noqa: E402
from temtool.inference.signal import segment_image  # noqa: E402
from temtool.study.baselines import OTSU_SIGMAS_PX, best_otsu_sigma  # noqa: E402
from temtool.study.metrics import binary_scores_np, instance_scores  # noqa: E402
from temtool.study.protocol import paired_difference  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "haadf.json"
SIZE = 256
SETTINGS = {  # name: simulator overrides
    "0.2nm": {"pixel_size_nm": 0.2},
    "0.5nm": {"pixel_size_nm": 0.5},
    "0.2nm-crowded": {"pixel_size_nm": 0.2, "particles_per_256px2": (10.0, 16.0), "touching_fraction": 0.5},
}
TEST_SEED, TUNE_SEED = 424_242, 434_343


def fields(n: int, seed: int):
    for i, (name, over) in enumerate(SETTINGS.items()):
        for j, sim in enumerate(
            simulate_batch(config_for("haadf", **over), n, SIZE, seed=seed + i, workers=2)
        ):
            yield f"{name}_{j:03d}", sim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=30, help="fields per setting")
    args = ap.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    t0 = time.perf_counter()
    tune = list(fields(4, TUNE_SEED))  # the baseline's sigma, chosen on fields of their own
    sigma = best_otsu_sigma([invert(s.image) for _, s in tune], [s.mask for _, s in tune], OTSU_SIGMAS_PX)
    per = {"network": {}, "otsu": {}}
    decided = {}
    for stem, sim in fields(args.n, TEST_SEED):
        r = segment_image(sim.image)
        frame = r.frames[0]
        decided[stem] = frame["polarity"]["value"]
        truth = sim.instances.astype(np.int64)
        oriented = invert(sim.image) if decided[stem] == "bright" else sim.image
        otsu = otsu_segment(oriented, sigma).astype(np.float32)
        _, _, otsu_labels, _ = particles_of(otsu, None, PostProcessing())
        for who, labels in (("network", r.labels), ("otsu", otsu_labels)):
            s = instance_scores(truth, labels)
            s["abs_count_error"] = None if s["count_error"] is None else abs(s["count_error"])
            s["dice"] = binary_scores_np(truth > 0, labels > 0)["dice"]
            s["model"] = frame.get("model") if who == "network" else None
            per[who][stem] = s
        print(
            f"{stem}: {decided[stem]:6s} network F1 {per['network'][stem]['f1']:.2f} "
            f"Otsu F1 {per['otsu'][stem]['f1']:.2f}",
            flush=True,
        )
    keys = ("precision", "recall", "f1", "ap", "abs_count_error", "dice")

    def mean(d, keep):
        return {k: float(np.mean([v[k] for s, v in d.items() if keep(s) and v[k] is not None])) for k in keys}

    groups = {
        "all": lambda s: True,
        **{name: (lambda s, n=name: s.rsplit("_", 1)[0] == n) for name in SETTINGS},
    }
    table = {g: {who: mean(d, keep) for who, d in per.items()} for g, keep in groups.items()}
    for g, keep in groups.items():
        table[g]["decided_bright"] = float(np.mean([decided[s] == "bright" for s in decided if keep(s)]))
        for metric in ("f1", "dice", "ap"):
            table[g][f"network-otsu {metric}"] = paired_difference(
                {s: v[metric] for s, v in per["network"].items() if keep(s)},
                {s: v[metric] for s, v in per["otsu"].items() if keep(s)},
            )
    record = {
        "command": "python benchmarks/haadf.py " + " ".join(sys.argv[1:]),
        "commit": commit,
        "machine": machine(),
        "recipe": {
            "simulator": "temtool.data.simulate regime haadf (HAADFConfig defaults)",
            "settings": SETTINGS,
            "size_px": SIZE,
            "test_seeds": f"{TEST_SEED} + setting index",
            "tuning_seeds": f"{TUNE_SEED} + setting index, 4 fields each",
        },
        "otsu_sigma_px": sigma,
        "means": table,
        "decided": decided,
        "per_field": per,
        "time_s": time.perf_counter() - t0,
    }
    OUT.write_text(json.dumps(record, indent=1, default=float))
    for g, t in table.items():
        n, o = t["network"], t["otsu"]
        d = t["network-otsu f1"]
        print(
            f"{g:14s} bright {t['decided_bright']:.0%}  network Dice {n['dice']:.3f} F1 {n['f1']:.3f}  "
            f"Otsu Dice {o['dice']:.3f} F1 {o['f1']:.3f}  F1 diff {d['mean']:+.3f} {d['ci95']}"
        )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
