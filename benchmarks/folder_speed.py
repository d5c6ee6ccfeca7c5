"""A folder of micrographs end to end: one file after the other (``workers=0``) against the
pipeline of `segment_files` (read ahead, model stage, ``workers`` threads that post-process,
measure and write), the same files, model and outputs, in one run.

    python benchmarks/folder_speed.py [--n 8] [--size 1024] [--workers 2] [--runtime auto]

Prints seconds per micrograph for each, the peak resident memory of the process, and the
machine. The process has the settings the console script gives `temtool segment`.
"""

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from temtool.cli.process import configure_process  # noqa: E402

configure_process(["segment"])  # as the console script sets them, before NumPy loads
sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402

from temtool.data.io import write_tiff  # noqa: E402
from temtool.data.simulate import config_for, simulate_image  # noqa: E402
from temtool.inference.choice import ModelChooser  # noqa: E402
from temtool.inference.pipeline import segment_files  # noqa: E402

SHIPPED = Path(__file__).resolve().parent.parent / "temtool" / "pretrained" / "standard"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runtime", default="auto")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "in").mkdir()
        cfg = config_for("standard", pixel_size_nm=0.5)
        for i in range(args.n):
            write_tiff(tmp / "in" / f"m{i:03d}.tif", simulate_image(cfg, args.size, seed=i).image, 0.5)
        chooser = ModelChooser(SHIPPED, runtime=args.runtime)
        segment_files([str(tmp / "in" / "m000.tif")], tmp / "warm", chooser)  # load once
        print(
            f"{args.n} micrographs of {args.size}x{args.size}, runtime {chooser.loaded[str(SHIPPED)].runtime}"
        )
        print("| workers | s per micrograph | total s | files ok |")
        print("|---|---|---|---|")
        for workers in (0, args.workers, 0, args.workers):  # twice each, interleaved
            t0 = time.perf_counter()
            res = segment_files([str(tmp / "in")], tmp / f"out{workers}", chooser, workers=workers)
            dt = time.perf_counter() - t0
            print(f"| {workers} | {dt / args.n:.2f} | {dt:.1f} | {len(res['results'])} |")
    print(f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print(machine())


if __name__ == "__main__":
    main()
