"""How hard the simulated micrographs are for a classical baseline, beside the study's real
patches (shared/docs/real-hrtem-statistics.md), measured the same way: particle/background
contrast in background sd after averaging to about 0.05 nm/px, and Gaussian + Otsu Dice at the
best smoothing for the whole set (0-16 px at the study's 0.02152 nm/px, i.e. 0-0.34 nm), dark
particles and, as the real table does, the better polarity per image.

    python benchmarks/hrtem_calibration.py            # 40 images of 512x512 per regime
    python benchmarks/hrtem_calibration.py --n 100
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402

from temtool.data.dataset import STUDY_HRTEM_NM_PER_PX, STUDY_STANDARD_NM_PER_PX  # noqa: E402
from temtool.data.simulate import GENERATOR_VERSION, config_for, simulate_batch  # noqa: E402
from temtool.inference.classical import fourier_segment  # noqa: E402
from temtool.study.baselines import contrast_sd, otsu_sweep
from temtool.study.protocol import hard_dice  # noqa: E402

SIGMAS_PX = (0, 1, 2, 3, 4, 6, 8, 12, 16)
# The study's five labelled real patches (shared/docs/real-hrtem-statistics.md)
REAL = {
    "hrtem": {
        "contrast_sd": "0.22-0.79 (patches 0.79, 0.22, 0.40, 0.23)",
        "otsu_best": "0.37-0.86 (median ~0.5)",
    },
    "standard": {"contrast_sd": "4.77 (one patch)", "otsu_best": "0.94"},
}


def measure(regime: str, n: int, seed: int) -> dict:
    if regime == "hrtem":
        cfg = config_for("hrtem", pixel_size_nm=STUDY_HRTEM_NM_PER_PX, diameter_nm=5.0)
    else:
        cfg = config_for("standard", pixel_size_nm=STUDY_STANDARD_NM_PER_PX, diameter_nm=20.0)
    t0 = time.perf_counter()
    sims = [s for s in simulate_batch(cfg, n, 512, seed=seed, workers=2) if s.mask.sum() >= 400]
    sim_s = time.perf_counter() - t0
    images, masks = [s.image for s in sims], [s.mask for s in sims]
    block = max(1, round(0.05 / cfg.pixel_size_nm))
    contrast = np.array([contrast_sd(i, m, block) for i, m in zip(images, masks)])
    dark = otsu_sweep(images, masks, SIGMAS_PX, "dark")
    best = otsu_sweep(images, masks, SIGMAS_PX, "best")
    out = {
        "images": len(sims),
        "particle_fraction": float(np.mean([m.mean() for m in masks])),
        "contrast_median": float(np.nanmedian(contrast)),
        "contrast_p10_p90": (float(np.nanpercentile(contrast, 10)), float(np.nanpercentile(contrast, 90))),
        "otsu_dark": dark,
        "otsu_best_polarity": best,
        "sim_s_per_image": sim_s / n,
    }
    if regime == "hrtem":
        out["fourier"] = float(
            np.mean([hard_dice(m, fourier_segment(i, cfg.pixel_size_nm)) for i, m in zip(images, masks)])
        )
        counts: dict[str, int] = {}
        for s in sims:
            for p in s.particles:
                counts[p["fringe_class"]] = counts.get(p["fringe_class"], 0) + 1
        out["classes"] = counts
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--seed", type=int, default=123)
    args = ap.parse_args()
    print(f"machine: {machine()}; simulator {GENERATOR_VERSION}; {args.n} images of 512x512 per regime")
    for regime in ("hrtem", "standard"):
        r = measure(regime, args.n, args.seed)
        k_dark = max(r["otsu_dark"], key=r["otsu_dark"].get)
        k_best = max(r["otsu_best_polarity"], key=r["otsu_best_polarity"].get)
        print(
            f"\n{regime} (study geometry), {r['images']} images, "
            f"particle fraction {r['particle_fraction']:.2f}"
        )
        print(f"  {'':34s} {'simulated':>28s}   real (study patches)")
        lo, hi = r["contrast_p10_p90"]
        print(
            f"  {'contrast (background sd)':34s} {r['contrast_median']:>10.2f} (p10-p90 {lo:.2f}-{hi:.2f})"
            f"   {REAL[regime]['contrast_sd']}"
        )
        print(
            f"  {'Gaussian+Otsu, best sigma, dark':34s} {r['otsu_dark'][k_dark]:>10.3f} (sigma {k_dark:g} px)"
            f"{'':9s}   {REAL[regime]['otsu_best']}"
        )
        print(
            f"  {'  same, better polarity per image':34s} {r['otsu_best_polarity'][k_best]:>10.3f} "
            f"(sigma {k_best:g} px)"
        )
        print("  Otsu Dice by sigma (px): " + " ".join(f"{k:g}:{v:.3f}" for k, v in r["otsu_dark"].items()))
        if "fourier" in r:
            print(
                f"  Fourier filter (default smoothing): {r['fourier']:.3f}; particle classes {r['classes']}"
            )
        print(f"  simulation: {1000 * r['sim_s_per_image']:.0f} ms per image (2 workers)")


if __name__ == "__main__":
    main()
