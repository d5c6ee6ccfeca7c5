"""Real micrographs out of the box. First, where ../shared/data/emps-train is present, published
figures from many labs (dark and bright particles) with object scores, `segment` beside Gaussian +
Otsu given the same polarity decision and post-processing (:func:`emps`). Then the shipped
default model (as `temtool segment` runs it, no options) against Gaussian + Otsu with its
smoothing chosen on the training micrographs, on real micrographs the model never saw
(leave-micrographs-out: examples/data/real-tem is kept out of its training by
examples/train_pretrained.py). Dice and particle-count error per
image; then domain-randomised simulations beside Otsu tuned on others of them; crowded fields
of large overlapping particles at the study's sampling, beside Otsu tuned on others; then the
study-sampling case of issue 12 (a 4096x4096 simulated standard-TEM micrograph at 0.12 nm/px):
which model is chosen, the time and the count.

    python benchmarks/real_data.py [--model temtool/pretrained/standard] [--randomised 80]
                                   [--skip-large] [--skip-crowded]
    python benchmarks/real_data.py --only emps --json benchmarks/results/real_data_emps.json

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


def _interval(diff: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the mean of paired differences (resampling images)."""
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (n_boot, len(diff)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _emps_table(rows: list[dict]) -> dict:
    """Print the published-figures table (all, dark, bright); return its numbers."""
    groups = {
        "all": rows,
        "dark particles": [r for r in rows if r["truth"] == "dark"],
        "bright particles": [r for r in rows if r["truth"] == "bright"],
    }
    right = sum(r["truth"] == r["decided"] for r in rows)
    print(
        f"\nPublished figures ({len(rows)} of emps-train, no options; polarity decided out of fold, "
        f"{right}/{len(rows)} right; Otsu sigma chosen on the other folds; both after segment's "
        "post-processing and splitting)\n"
    )
    print(
        "| figures | n | method | Dice | object P | object R | object F1 | AP 0.5:0.95 | "
        "median abs count error | size distance |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    result = {}
    for g, sel in groups.items():
        if not sel:
            continue
        s = result[g] = _emps_summary(sel)
        for who, label in (("network", "temtool segment"), ("otsu", "Gaussian + Otsu")):
            v = s[who]
            print(
                f"| {g} | {len(sel)} | {label} | {v['dice']:.3f} | {v['precision']:.3f} | "
                f"{v['recall']:.3f} | {v['f1']:.3f} | {v['ap']:.3f} | "
                f"{100 * v['median_abs_count_error']:.0f}% | {v['size_distance']:.3f} |"
            )
        (dlo, dhi), (lo, hi) = s["dice_difference_ci95"], s["f1_difference_ci95"]
        print(
            f"| {g} | | network - Otsu, 95% paired bootstrap | [{dlo:+.3f}, {dhi:+.3f}] | | | "
            f"[{lo:+.3f}, {hi:+.3f}] | | | |"
        )
    return result


def _emps_summary(sel: list[dict]) -> dict:
    """Means over figures of each score, the median |count error|, and the paired bootstrap
    intervals of network minus Otsu for Dice and object F1."""
    out = {}
    for who in ("network", "otsu"):
        v = {m: float(np.mean([r[who][m] for r in sel])) for m in ("dice", "precision", "recall", "f1", "ap")}
        v["median_abs_count_error"] = float(np.median([abs(r[who]["count_error"]) for r in sel]))
        sd = [r[who]["size_distance"] for r in sel if r[who]["size_distance"] is not None]
        v["size_distance"] = float(np.mean(sd)) if sd else None
        out[who] = v
    for m in ("dice", "f1"):
        out[f"{m}_difference_ci95"] = _interval(np.array([r["network"][m] - r["otsu"][m] for r in sel]))
    return out


def emps(
    model: str | None,
    json_path: str | None,
    limit: int | None = None,
    by_figure: str | None = None,
    scale_bar: bool = True,
) -> None:
    """Published figures (../shared/data/emps-train, 366 crops from many labs, instance maps):
    `segment` with no options (polarity decided, annotations ignored, post-processing and
    particle splitting), beside Gaussian + Otsu given the same polarity decision, the same
    post-processing and the same splitting, its sigma chosen on the other folds (grouped by
    article). The polarity of each figure is the decision of rules fitted without its fold
    (benchmarks/results/polarity.json, out_of_fold), so no score rests on a rule fitted on the
    figure itself. Dice, object precision / recall / F1 at IoU 0.5, AP 0.5:0.95, median
    |count error| and size-distribution distance; by the true polarity of the figures.

    ``by_figure``: a JSON file mapping each figure to the bundle that segments it (written by
    examples/train_emps.py: the model fine-tuned without the figure's article); only the
    figures it names are scored."""
    import csv
    import json as js
    import subprocess

    from temtool.inference.annotations import mask_annotations
    from temtool.inference.pipeline import SegmentOptions, infer, particles_of
    from temtool.inference.polarity import invert
    from temtool.study.baselines import OTSU_SIGMAS_PX
    from temtool.study.metrics import instance_scores

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout
    commit = commit.strip()  # at the start: the code that runs
    emps_dir = ROOT.parent / "shared" / "data" / "emps-train"
    fit = js.loads((ROOT / "benchmarks" / "results" / "polarity.json").read_text())
    oof = fit["out_of_fold"]
    sys.path.insert(0, str(ROOT / "examples"))
    from fit_polarity import folds_by_group

    doi = {r["filename"]: r["doi"] for r in csv.DictReader(open(emps_dir / "sources.csv"))}
    bundle_of = js.loads(Path(by_figure).read_text()) if by_figure else {}
    names = sorted(n for n in oof if not by_figure or n in bundle_of)[:limit]
    folds = folds_by_group([doi[n] for n in names])
    truths = {n: read_image(emps_dir / "instances" / n).data.astype(np.int64) for n in names}
    images = {n: read_image(emps_dir / "images" / n).data for n in names}

    def oriented(n, decided):  # the annotation-filled figure, inverted where decided bright
        filled, drawn = mask_annotations(images[n])
        return (invert(filled) if decided == "bright" else filled), drawn

    # Otsu's sigma per fold, chosen on the other folds with each figure the right way round
    table = {
        n: [
            binary_scores_np(truths[n] > 0, otsu_segment(oriented(n, oof[n]["truth"])[0], g))["dice"]
            for g in OTSU_SIGMAS_PX
        ]
        for n in names
    }
    sigma = {}
    for f in range(folds.max() + 1):
        others = [n for n, k in zip(names, folds) if k != f]
        best = OTSU_SIGMAS_PX[int(np.argmax(np.mean([table[n] for n in others], axis=0)))]
        sigma.update({n: best for n, k in zip(names, folds) if k == f})

    post = PostProcessing()
    choosers = {b: ModelChooser(b) for b in sorted(set(bundle_of.values()))} or {model: ModelChooser(model)}

    def objects(prob, drawn):
        mask, _ = post.apply(np.asarray(prob, np.float32))
        if drawn is not None:
            mask[drawn] = 0
        labels, _ = measure_particles(mask, None, min_area_px=1, pinhole_px=0)
        return mask, labels

    rows = []
    t0 = time.perf_counter()
    for n in names:
        decided = oof[n]["decided"]
        f = emps_dir / "images" / n
        chooser = choosers[bundle_of.get(n, model)]
        options = SegmentOptions(polarity=decided, scale_bar=scale_bar)
        r = infer(f, read_image(f), chooser, options)  # as `segment` does
        # as segment does, in px (the scores do not depend on a pixel size): an instance-aware
        # network's labels follow its boundaries
        net_mask, net_post, net_labels, _ = particles_of(r.prob, None, post, r.boundary)
        x, drawn = oriented(n, decided)
        otsu_mask, otsu_labels = objects(
            otsu_segment(x, sigma[n]).astype(np.float32), drawn if drawn.any() else None
        )
        truth = truths[n]
        rows.append(
            {
                "figure": n,
                "truth": oof[n]["truth"],
                "decided": decided,
                "model": Path(r.model).name,
                "instances": net_post["instances"],
                "pixel_size_source": r.pixel_size_source,
                "network": {
                    "dice": binary_scores_np(truth > 0, net_mask)["dice"],
                    **instance_scores(truth, net_labels),
                },
                "otsu": {
                    "dice": binary_scores_np(truth > 0, otsu_mask)["dice"],
                    **instance_scores(truth, otsu_labels),
                },
                "otsu_sigma_px": sigma[n],
            }
        )
    seconds = time.perf_counter() - t0

    result = _emps_table(rows)
    chosen = {str(k): int(v) for k, v in zip(*np.unique([r["model"] for r in rows], return_counts=True))}
    print(f"\nmodels chosen: {chosen}; {seconds:.0f} s")
    if json_path:
        Path(json_path).write_text(
            js.dumps(
                {
                    "command": "python benchmarks/real_data.py " + " ".join(sys.argv[1:]),
                    "commit": commit,
                    "data": {
                        "emps-train": len(rows),
                        "polarity_fit": fit["commit"],
                        "scale_bar": scale_bar,
                        **({"models_by_figure": _fine_tuned(bundle_of)} if by_figure else {}),
                    },
                    "summary": result,
                    "models_chosen": chosen,
                    "per_figure": rows,
                    "machine": machine(),
                },
                indent=1,
            )
        )


def _fine_tuned(bundle_of: dict[str, str]) -> dict:
    """What each bundle of a figure -> bundle map was trained on (its emps_finetune record)."""
    from temtool.model.bundle import load_bundle

    return {b: load_bundle(b).metadata.get("emps_finetune") for b in sorted(set(bundle_of.values()))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="a bundle (default: what segment picks)")
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--skip-crowded", action="store_true")
    ap.add_argument("--randomised", type=int, default=80, help="domain-randomised images (0: none)")
    ap.add_argument("--only", choices=("emps",), help="run one section only")
    ap.add_argument("--emps-limit", type=int, default=None, help="the first N published figures only")
    ap.add_argument("--json", help="write the published-figures section's results here")
    ap.add_argument(
        "--models-by-figure",
        help="JSON: figure -> bundle (examples/train_emps.py's folds.json); scores those figures only",
    )
    ap.add_argument(
        "--no-scale-bar",
        action="store_true",
        help="published figures: do not read their scale bars (as before the reader existed)",
    )
    args = ap.parse_args()
    os.environ.setdefault("TEMTOOL_CACHE", tempfile.mkdtemp())  # ignore the user's last model
    if (ROOT.parent / "shared" / "data" / "emps-train").is_dir():
        emps(args.model, args.json, args.emps_limit, args.models_by_figure, not args.no_scale_bar)
    if args.only == "emps":
        print()
        print(machine())
        return
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
