"""How deep a neck must be to split two touching particles: the h-maxima depth of
``segment``'s distance-transform watershed (``temtool.inference.measure.SPLIT_DEPTH``, a
fraction of the median particle's inscribed radius), chosen on published figures
(../shared/data/emps-train) by cross-validation over the 5 article folds of
``benchmarks/results/polarity.json``.

Each figure is segmented once as ``benchmarks/real_data.py --only emps`` does (the shipped
default, polarity decided out of fold) and Gaussian + Otsu is thresholded with that run's
sigma; then both masks are split at every depth of ``--depths`` and scored (object F1 at IoU
0.5, AP 0.5:0.95, count error). For each fold the depth with the best mean object F1 of the
network on the other four folds is applied to it, so the cross-validated row is not chosen on
the figures it scores.

    python examples/split_depth.py --json docs/figures/split_depth.json
    python examples/split_depth.py --sims 60 --json docs/figures/split_depth_sims.json

``--sims N``: instead, N fresh domain-randomised 256-px fields (half of them crowded, seeds
31000+, exact instance maps) with the shipped standard model and Gaussian (2 px) + Otsu, at
every depth: how the depth does where touching particles are known exactly.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
os.environ.setdefault("TEMTOOL_CACHE", tempfile.mkdtemp())  # the shipped default, not a last model

from temtool.backend import start_backend  # noqa: E402

start_backend()

from fit_polarity import folds_by_group  # noqa: E402

from temtool.data.io import read_image  # noqa: E402
from temtool.inference import measure  # noqa: E402
from temtool.inference.annotations import mask_annotations  # noqa: E402
from temtool.inference.choice import ModelChooser  # noqa: E402
from temtool.inference.classical import otsu_segment  # noqa: E402
from temtool.inference.pipeline import SegmentOptions, infer  # noqa: E402
from temtool.inference.polarity import invert  # noqa: E402
from temtool.study.metrics import instance_scores  # noqa: E402

EMPS = ROOT.parent / "shared" / "data" / "emps-train"
DEPTHS = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


def segmented(names, oof, sigma):
    """figure -> (true instances, network mask, Otsu mask), and the seconds it took."""
    chooser, post = ModelChooser(None), measure.PostProcessing()

    t0 = time.perf_counter()
    masks = {}  # figure -> (truth, network mask, Otsu mask)
    for n in names:
        f = EMPS / "images" / n
        mg = read_image(f)
        image = mg.data
        r = infer(f, mg, chooser, SegmentOptions(polarity=oof[n]["decided"]))
        net, _ = post.apply(np.asarray(r.prob, np.float32))
        filled, drawn = mask_annotations(image)
        x = invert(filled) if oof[n]["decided"] == "bright" else filled
        otsu, _ = post.apply(otsu_segment(x, sigma[n]).astype(np.float32))
        otsu[drawn] = 0
        masks[n] = (read_image(EMPS / "instances" / n).data.astype(np.int64), net, otsu)
    return masks, time.perf_counter() - t0


def simulated(n: int, depths) -> dict:
    """Object F1 and AP at each depth on ``n`` randomised fields (see module doc)."""
    from temtool.data.randomise import randomised_batch

    chooser, post = ModelChooser(None), measure.PostProcessing()
    fields = []
    for crowded, seed in ((False, 31000), (True, 32000)):
        for sim in randomised_batch(n // 2, 256, seed=seed, workers=2, crowded=crowded):
            net, _ = post.apply(chooser(None, sim.image).probability(sim.image).prob)
            otsu, _ = post.apply(otsu_segment(sim.image, 2.0).astype(np.float32))
            fields.append((sim.instances.astype(np.int64), net, otsu))
    out = {}
    print(f"\nSplit depth on {len(fields)} randomised fields (half crowded), shipped standard model\n")
    print("| depth | network F1 | network AP | Otsu F1 | Otsu AP |")
    print("|---|---|---|---|---|")
    for depth in depths:
        measure.SPLIT_DEPTH = depth
        v = {}
        for who, k in (("network", 1), ("otsu", 2)):
            s = [
                instance_scores(f[0], measure.measure_particles(f[k], None, min_area_px=1, pinhole_px=0)[0])
                for f in fields
            ]
            v[f"{who}_f1"] = float(np.mean([x["f1"] for x in s]))
            v[f"{who}_ap"] = float(np.mean([x["ap"] for x in s]))
        out[str(depth)] = v
        print(
            f"| {depth:g} | "
            + " | ".join(f"{v[k]:.3f}" for k in ("network_f1", "network_ap", "otsu_f1", "otsu_ap"))
            + " |"
        )
    return out


def published(depths, json_path, commit) -> None:
    """The published-figures run (see module doc)."""
    runs = json.loads((ROOT / "benchmarks" / "results" / "real_data_emps.json").read_text())
    sigma = {r["figure"]: r["otsu_sigma_px"] for r in runs["per_figure"]}
    oof = json.loads((ROOT / "benchmarks" / "results" / "polarity.json").read_text())["out_of_fold"]
    doi = {r["filename"]: r["doi"] for r in csv.DictReader(open(EMPS / "sources.csv"))}
    names = sorted(oof)
    folds = folds_by_group([doi[n] for n in names])
    masks, inferred_s = segmented(names, oof, sigma)

    scores = {}  # depth -> method -> figure -> scores
    for depth in depths:
        measure.SPLIT_DEPTH = depth
        scores[depth] = {"network": {}, "otsu": {}}
        for n, (truth, net, otsu) in masks.items():
            for who, m in (("network", net), ("otsu", otsu)):
                labels, _ = measure.measure_particles(m, None, min_area_px=1, pinhole_px=0)
                scores[depth][who][n] = instance_scores(truth, labels)

    def mean(depth, who, metric, sel):
        return float(np.mean([scores[depth][who][n][metric] for n in sel]))

    print(f"\nSplit depth on {len(names)} published figures (emps-train), the shipped default and Otsu\n")
    print("| depth | network F1 | network AP | Otsu F1 | Otsu AP | network median abs count error |")
    print("|---|---|---|---|---|---|")
    table = {}
    for depth in depths:
        ce = np.median([abs(scores[depth]["network"][n]["count_error"]) for n in names])
        table[depth] = {
            k: mean(depth, who, m, names)
            for k, who, m in (
                ("network_f1", "network", "f1"),
                ("network_ap", "network", "ap"),
                ("otsu_f1", "otsu", "f1"),
                ("otsu_ap", "otsu", "ap"),
            )
        }
        table[depth]["network_median_abs_count_error"] = float(ce)
        v = table[depth]
        print(
            f"| {depth:g} | {v['network_f1']:.3f} | {v['network_ap']:.3f} | {v['otsu_f1']:.3f} | "
            f"{v['otsu_ap']:.3f} | {100 * ce:.0f}% |"
        )

    chosen, cv = {}, {"network": {}, "otsu": {}, "network_default": {}, "otsu_default": {}}
    for k in range(folds.max() + 1):
        train = [n for n, f in zip(names, folds) if f != k]
        best = max(depths, key=lambda d: mean(d, "network", "f1", train))
        chosen[k] = best
        for n, f in zip(names, folds):
            if f == k:
                for who in ("network", "otsu"):
                    cv[who][n] = scores[best][who][n]["f1"]
                    cv[f"{who}_default"][n] = scores[depths[0]][who][n]["f1"]
    from temtool.study.protocol import paired_difference

    result = {
        "depth_chosen_per_fold": chosen,
        "cv_f1": {k: float(np.mean(list(v.values()))) for k, v in cv.items()},
        "cv_network_minus_default": paired_difference(cv["network"], cv["network_default"]),
        "cv_network_minus_otsu": paired_difference(cv["network"], cv["otsu"]),
        "cv_otsu_minus_default": paired_difference(cv["otsu"], cv["otsu_default"]),
    }
    print(f"\ndepth chosen per fold (on the other four): {chosen}")
    print(f"cross-validated object F1: {json.dumps(result['cv_f1'])}")
    for k in ("cv_network_minus_default", "cv_network_minus_otsu", "cv_otsu_minus_default"):
        d = result[k]
        print(f"{k}: {d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")
    if json_path:
        Path(json_path).write_text(
            json.dumps(
                {
                    "command": "python examples/split_depth.py " + " ".join(sys.argv[1:]),
                    "commit": commit,
                    "data": {
                        "emps-train": len(names),
                        "polarity_fit": "benchmarks/results/polarity.json",
                        "otsu_sigma_from": "benchmarks/results/real_data_emps.json",
                    },
                    "inference_s": inferred_s,
                    "by_depth": {str(d): v for d, v in table.items()},
                    **result,
                },
                indent=1,
            )
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depths", type=float, nargs="+", default=list(DEPTHS))
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--sims", type=int, default=0, help="score N randomised fields instead")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    if args.sims:
        by_depth = simulated(args.sims, args.depths)
        if args.json:
            record = {"command": "python examples/split_depth.py " + " ".join(sys.argv[1:])}
            record.update(
                commit=commit.stdout.strip(), data=f"{args.sims} randomised fields, seeds 31000+/32000+"
            )
            Path(args.json).write_text(json.dumps({**record, "by_depth": by_depth}, indent=1))
        return
    published(args.depths, args.json, commit.stdout.strip())


if __name__ == "__main__":
    main()
