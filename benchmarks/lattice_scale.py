"""How often ``segment --lattice au`` sets a pixel size, how close it is, and how often it sets
one where there is no lattice to see.

- HRTEM: simulated fields of 5 nm Au (the `sim:hrtem` simulator, seeds 0..N-1, 512x512) at
  their own pixel size and resampled by 0.8 and 1.25 (so the truth is not one number); with no
  calibration (set) and with a calibration 6% off (check).
- No lattice to match: simulated bright-field fields, the 20 bright-field micrographs of
  ../shared/data/msa-seg-track-train and the 366 published figures of ../shared/data/emps-train
  (most are not HRTEM at all): every pixel size set there is counted (not necessarily wrong
  for the few HRTEM figures, but never checked against a truth here).

    python benchmarks/lattice_scale.py [--n 40] [--json benchmarks/results/lattice_scale.json]
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _machine import machine, report  # noqa: E402

from temtool.data.io import read_image  # noqa: E402
from temtool.data.simulate import config_for, simulate_image  # noqa: E402
from temtool.image.resample import resample  # noqa: E402
from temtool.inference.lattice import lattice_scale  # noqa: E402

SHARED = HERE.parent.parent / "shared" / "data"


def hrtem(n: int) -> dict:
    cfg = config_for("hrtem")
    set_err, check_err, tried, times = [], [], 0, []
    for seed in range(n):
        image = simulate_image(cfg, 512, seed).image
        for zoom in (1.0, 0.8, 1.25):
            x = image if zoom == 1 else resample(image, (round(512 * zoom),) * 2)
            truth = cfg.pixel_size_nm / zoom
            t0 = time.perf_counter()
            found = lattice_scale(x, "au")
            times.append(time.perf_counter() - t0)
            checked = lattice_scale(x, "au", known_pixel_size_nm=truth * 1.06)
            tried += 1
            if found.pixel_size_nm:
                set_err.append(found.pixel_size_nm / truth - 1)
            if checked.pixel_size_nm:
                check_err.append(checked.pixel_size_nm / truth - 1)
    return {
        "images": tried,
        "set": len(set_err),
        "set_max_abs_error": float(np.max(np.abs(set_err))) if set_err else None,
        "set_within_3pct": int(np.sum(np.abs(set_err) <= 0.03)),
        "checked": len(check_err),
        "checked_max_abs_error": float(np.max(np.abs(check_err))) if check_err else None,
        "checked_within_3pct": int(np.sum(np.abs(check_err) <= 0.03)),
        "seconds_per_image_median": float(np.median(times)),
    }


def no_lattice(n_sim: int) -> dict:
    out = {}
    cfg = config_for("standard")
    out["simulated_bright_field"] = {
        "images": n_sim,
        "set": sum(
            lattice_scale(simulate_image(cfg, 512, s).image, "au").pixel_size_nm is not None
            for s in range(n_sim)
        ),
    }
    for name, folder in (
        ("msa_seg_track_train", SHARED / "msa-seg-track-train" / "images"),
        ("emps_train", SHARED / "emps-train" / "images"),
    ):
        files = sorted(folder.glob("*")) if folder.is_dir() else []
        hits = []
        for f in files:
            try:
                found = lattice_scale(read_image(f).data, "au")
            except Exception:  # noqa: BLE001 - an unreadable figure is not this benchmark's business
                continue
            if found.pixel_size_nm:
                hits.append(
                    {"file": f.name, "pixel_size_nm": found.pixel_size_nm, "planes": list(found.families)}
                )
        out[name] = {"images": len(files), "set": len(hits), "where": hits}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--n-bright-field", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    report(
        args.json,
        benchmark="lattice_scale",
        command="python benchmarks/lattice_scale.py " + " ".join(sys.argv[1:]),
        commit=commit,
        machine=machine(),
        hrtem=hrtem(args.n),
        no_lattice=no_lattice(args.n_bright_field),
    )


if __name__ == "__main__":
    main()
