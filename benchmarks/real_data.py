"""Real micrographs out of the box: the shipped default model (as `temtool segment` runs it, no
options) against Gaussian + Otsu with its smoothing chosen on the training micrographs, on
real micrographs the model never saw (leave-micrographs-out: examples/data/real-tem is kept
out of its training by examples/train_pretrained.py). Dice and particle-count error per
image; then domain-randomised simulations beside Otsu tuned on others of them; crowded fields
of large overlapping particles at the study's sampling, beside Otsu tuned on others; then the
study-sampling case of issue 12 (a 4096x4096 simulated standard-TEM micrograph at 0.12 nm/px):
which model is chosen, the time and the count.

    python benchmarks/real_data.py [--model temtool/pretrained/standard] [--randomised 80]
                                   [--skip-large] [--skip-crowded]

Prints a Markdown table and the machine it ran on.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
import numpy as np  # noqa: E402
from _machine import machine  # noqa: E402

from temtool.backend import start_backend  # noqa: E402

start_backend()

from temtool.data.io import read_image, read_mask, write_tiff  # noqa: E402
from temtool.inference.choice import ModelChooser  # noqa: E402
from temtool.inference.classical import otsu_segment  # noqa: E402
from temtool.inference.measure import PostProcessing, measure_particles  # noqa: E402
from temtool.inference.pipeline import segment_file  # noqa: E402
from temtool.study.baselines import best_otsu_sigma  # noqa: E402
from temtool.study.metrics import binary_scores_np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HELD_OUT = ROOT / "examples" / "data" / "real-tem"
TRAIN = ROOT.parent / "shared" / "data" / "msa-seg-track-train"


def pairs(folder: Path, skip: set[str] = frozenset()) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for p in sorted((folder / "images").glob("*.png"), key=lambda q: int(q.stem.split("_")[-1])):
        if p.stem not in skip:
            out[p.stem] = (
                read_image(p).data,
                read_mask(folder / "labels" / p.name.replace("image_", "label_"), 0),
            )
    return out


def _mask(path: Path) -> np.ndarray:
    return read_mask(path) > 0


def count(mask: np.ndarray) -> int:
    return len(measure_particles(mask, None, min_area_px=1)[1])


def real(model: str | None) -> None:
    held = pairs(HELD_OUT)
    train = pairs(TRAIN, skip=set(held)) if (TRAIN / "images").is_dir() else {}
    sigma = best_otsu_sigma([v[0] for v in train.values()], [v[1] for v in train.values()]) if train else 2.0
    chooser = ModelChooser(model)
    post = PostProcessing()
    print(
        f"\nHeld-out real micrographs ({HELD_OUT.relative_to(ROOT)}); Otsu sigma {sigma:g} px chosen on "
        f"{len(train)} training micrographs\n"
    )
    print("| image | model Dice | Otsu Dice | particles (truth) | count error | model | notes |")
    print("|---|---|---|---|---|---|---|")
    dice, odice, errs = [], [], []
    for name, (img, mask) in held.items():
        seg = chooser(None, img)
        r = seg.probability(img)
        pred, _ = post.apply(r.prob)
        n, n_true = count(pred), count(mask)
        d = binary_scores_np(mask, pred)["dice"]
        od = binary_scores_np(mask, otsu_segment(img, sigma))["dice"]
        dice.append(d)
        odice.append(od)
        errs.append((n - n_true) / n_true)
        print(
            f"| {name} | {d:.3f} | {od:.3f} | {n} ({n_true}) | {100 * errs[-1]:+.0f}% | "
            f"{Path(seg.name).name} | {'; '.join(r.notes)} |"
        )
    print(
        f"| **mean** | **{np.mean(dice):.3f}** | {np.mean(odice):.3f} | | "
        f"{100 * np.mean(np.abs(errs)):.0f}% (abs) | | |"
    )


def large(model: str | None) -> None:
    from temtool.data.simulate import config_for, simulate_image

    print("\nSimulated standard TEM at the study's sampling (20 nm Au, 0.12 nm/px), no options:\n")
    print("| size | model chosen | time s | Dice | particles (truth) | median d nm (truth) | notes |")
    print("|---|---|---|---|---|---|---|")
    cfg = config_for("standard", pixel_size_nm=0.12)
    with tempfile.TemporaryDirectory() as tmp:
        for size in (2048, 4096):
            sim = simulate_image(cfg, size, seed=1)
            f = Path(tmp) / f"m{size}.tif"
            write_tiff(f, sim.image, 0.12)
            chooser = ModelChooser(model)
            segment_file(f, Path(tmp) / "warm", chooser)  # load and trace once
            t0 = time.perf_counter()
            res = segment_file(f, Path(tmp) / "out", chooser)
            dt = time.perf_counter() - t0
            true_d = np.median([p["diameter_nm"] for p in sim.particles if not p["touches_border"]])
            med = f"{res['diameter_median']:.1f}" if res["diameter_median"] is not None else "-"
            pred, truth = _mask(Path(tmp) / "out" / f"m{size}_mask.png"), sim.mask > 0
            dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
            print(
                f"| {size}x{size} | {Path(res['model']).name} | {dt:.2f} | {dice:.3f} | {res['particles']} "
                f"({len(sim.particles)}) | {med} ({true_d:.1f}) | {'; '.join(res['notes'])} |"
            )


def crowded(model: str | None) -> None:
    """Crowded fields of large overlapping particles at the study's standard-TEM sampling (20 nm
    Au at 0.12 nm/px, 1024x1024, seeds 1-5 and 10-15), no options, beside Gaussian + Otsu with
    its sigma chosen on 6 other fields (seeds 200-205)."""
    from temtool.data.simulate import config_for, simulate_image

    cfg = config_for("standard", pixel_size_nm=0.12)
    tune = [simulate_image(cfg, 1024, seed=k) for k in range(200, 206)]
    sigma = best_otsu_sigma([s.image for s in tune], [s.mask for s in tune])
    chooser, post = ModelChooser(model), PostProcessing()
    print(
        f"\nCrowded study-sampling fields (20 nm Au at 0.12 nm/px, 1024x1024, no options; Otsu sigma "
        f"{sigma:g} px chosen on 6 others)\n"
    )
    print("| seed | particle share | model Dice | Otsu Dice (tuned) |")
    print("|---|---|---|---|")
    d, o = [], []
    for k in list(range(1, 6)) + list(range(10, 16)):
        sim = simulate_image(cfg, 1024, seed=k)
        truth = sim.mask > 0
        pred, _ = post.apply(chooser(None, sim.image).probability(sim.image).prob)
        d.append(binary_scores_np(truth, pred)["dice"])
        o.append(binary_scores_np(truth, otsu_segment(sim.image, sigma))["dice"])
        print(f"| {k} | {truth.mean():.2f} | {d[-1]:.3f} | {o[-1]:.3f} |")
    d, o = np.array(d), np.array(o)
    print(
        f"| **mean +- sd** | | **{d.mean():.3f} +- {d.std():.3f}** | {o.mean():.3f} +- {o.std():.3f} |\n\n"
        f"model wins {(d > o).sum()}/{len(d)}"
    )


def randomised(model: str | None, n: int) -> None:
    """The shipped default (model choice included) against Gaussian + Otsu on domain-randomised
    micrographs (256x256, seeds 10000+): Otsu's sigma chosen on another n (seeds 20000+), as
    for a real set, and at each image's own best sigma (an oracle no user has)."""
    from temtool.data.randomise import randomised_batch
    from temtool.study.baselines import OTSU_SIGMAS_PX

    def otsu_table(seed):
        return [
            (s, [binary_scores_np(s.mask > 0, otsu_segment(s.image, g))["dice"] for g in OTSU_SIGMAS_PX])
            for s in randomised_batch(n, 256, seed=seed, workers=2)
        ]

    tune = otsu_table(20000)
    best = int(np.argmax(np.mean([d for _, d in tune], axis=0)))
    chooser, post = ModelChooser(model), PostProcessing()
    rows = []
    for sim, od in otsu_table(10000):
        seg = chooser(None, sim.image)
        pred, _ = post.apply(seg.probability(sim.image).prob)
        drawn = sim.params["randomised"]
        counts = drawn["dose_e_per_A2"][0] * (10 * drawn["pixel_size_nm"]) ** 2
        rows.append(
            (binary_scores_np(sim.mask > 0, pred)["dice"], od[best], max(od), counts, Path(seg.name).name)
        )
    d, o, oracle, counts, names = map(np.array, zip(*rows))
    print(
        f"\nDomain-randomised micrographs ({n}, 256x256, no options; Otsu sigma {OTSU_SIGMAS_PX[best]:g} px "
        f"chosen on {n} others)\n"
    )
    print("| counts/px | images | model Dice | Otsu Dice (tuned) | Otsu, best sigma per image | model wins |")
    print("|---|---|---|---|---|---|")
    for label, lo, hi in (("0-20", 0, 20), ("20-200", 20, 200), (">= 200", 200, np.inf), ("all", 0, np.inf)):
        k = (counts >= lo) & (counts < hi)
        print(
            f"| {label} | {k.sum()} | {d[k].mean():.3f} | {o[k].mean():.3f} | {oracle[k].mean():.3f} | "
            f"{(d[k] > o[k]).sum()}/{k.sum()} |"
        )
    print(f"\nmodels chosen: {dict(zip(*np.unique(names, return_counts=True)))}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="a bundle (default: what segment picks)")
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--skip-crowded", action="store_true")
    ap.add_argument("--randomised", type=int, default=80, help="domain-randomised images (0: none)")
    args = ap.parse_args()
    os.environ.setdefault("TEMTOOL_CACHE", tempfile.mkdtemp())  # ignore the user's last model
    real(args.model)
    if args.randomised:
        randomised(args.model, args.randomised)
    if not args.skip_crowded:
        crowded(args.model)
    if not args.skip_large:
        large(args.model)
    print()
    print(machine())


if __name__ == "__main__":
    main()
