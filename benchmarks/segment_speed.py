"""Segmentation speed: megapixels per second for 2048x2048 and 4096x4096 micrographs with the
default (shipped standard-TEM, depth-2, 4-8-16) model, with and without TTA, input reading
and all outputs (mask, probability TIFF, overlay, particle CSV, histogram) included.

    python benchmarks/segment_speed.py [--sizes 2048 4096] [--tta] [--model M]

Also checks the particle table against the simulated truth (count, median diameter).
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

from temtool.data.io import write_tiff  # noqa: E402
from temtool.data.simulate import config_for, simulate_image  # noqa: E402
from temtool.inference.pipeline import segment_file  # noqa: E402
from temtool.inference.segmenter import Segmenter  # noqa: E402
from temtool.model.bundle import load_bundle  # noqa: E402
from temtool.study.train import gpu_info  # noqa: E402

SHIPPED = Path(__file__).resolve().parent.parent / "temtool" / "pretrained" / "standard"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    ap.add_argument("--tta", action="store_true", help="also time with 8-fold TTA")
    ap.add_argument("--model", default=str(SHIPPED))
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    bundle = load_bundle(args.model)
    arch = bundle.arch
    px = bundle.pixel_size_nm or 0.5  # a model scaled by particle size: 20 nm Au at 0.5 nm/px
    gpu = gpu_info()
    print(f"model {arch.label()}, micrographs at {px} nm/px; device {gpu['name'] if gpu else 'CPU'}")
    cfg = config_for("standard", pixel_size_nm=px)
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            sim = simulate_image(cfg, size, seed=1)
            f = Path(tmp) / f"m{size}.tif"
            write_tiff(f, sim.image, px)
            for tta in (False, True) if args.tta else (False,):
                seg = Segmenter.from_bundle(bundle, tta=tta)
                segment_file(f, Path(tmp) / "out", seg)  # warm-up (graph tracing)
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    res = segment_file(f, Path(tmp) / "out", seg)
                    times.append(time.perf_counter() - t0)
                t = min(times)
                true_d = [p["diameter_nm"] for p in sim.particles if not p["touches_border"]]
                print(
                    f"{size}x{size} tta={tta!s:5s}: {t:6.2f} s  {size * size / 1e6 / t:6.2f} Mpx/s  "
                    f"tiles {res['tiling']['tiles']} x {'x'.join(map(str, res['tiling']['tile_px']))} px  "
                    f"| particles {res['particles']} "
                    f"(truth {len(sim.particles)}), median diameter {res['diameter_median']:.1f} nm "
                    f"(truth {np.median(true_d):.1f} nm)",
                    flush=True,
                )
    print(machine())


if __name__ == "__main__":
    main()
