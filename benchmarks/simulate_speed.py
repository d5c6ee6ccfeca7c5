"""Simulation speed: 512x512 images per second for both regimes, with 1 and 2 workers,
and the end-to-end time of `temtool simulate` writing 300 HRTEM images.

    python benchmarks/simulate_speed.py [--n 60] [--full]
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402

from temtool.data.dataset import write_simulated_dataset  # noqa: E402
from temtool.data.simulate import config_for, simulate_batch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--full", action="store_true", help="also time writing 300 HRTEM images")
    args = ap.parse_args()
    results = {"machine": machine(), "size": args.size, "rows": []}
    for regime in ("standard", "hrtem"):
        cfg = config_for(regime)
        for workers in (1, 2):
            t0 = time.perf_counter()
            for _ in simulate_batch(cfg, args.n, size=args.size, seed=0, workers=workers):
                pass
            dt = time.perf_counter() - t0
            row = {"regime": regime, "workers": workers, "images_per_s": args.n / dt}
            results["rows"].append(row)
            print(f"{regime:9s} workers={workers}  {args.n / dt:6.1f} images/s")
    if args.full:
        tmp = tempfile.mkdtemp()
        try:
            t0 = time.perf_counter()
            write_simulated_dataset(os.path.join(tmp, "d"), "hrtem", n=300, size=512, workers=2)
            dt = time.perf_counter() - t0
        finally:
            shutil.rmtree(tmp)
        results["write_300_hrtem_512_s"] = dt
        print(f"write 300 HRTEM 512x512 images with 2 workers: {dt:.1f} s (target <= 20 s)")
    print(json.dumps(results["machine"]))


if __name__ == "__main__":
    main()
