"""The model stage of `temtool segment`, in 512x512 tiles per second: the previous host path
(``predict_on_batch`` per TTA member, transforms and sigmoid in NumPy) against the compiled
device path of the Keras runtime (:class:`temtool.inference.compiled.CompiledForward`), and ONNX Runtime,
side by side in one run, with and without 8-fold TTA.

    python benchmarks/model_stage.py [--tile 512] [--batch 32] [--batches 8] [--json out.json]

Runs on whatever Keras backend and device it finds (on the GPU machine: Keras on JAX).
"""

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
import numpy as np  # noqa: E402
from _machine import report  # noqa: E402

from temtool.backend import start_backend  # noqa: E402

start_backend()

from temtool.inference.segmenter import Segmenter  # noqa: E402
from temtool.model.bundle import load_bundle  # noqa: E402
from temtool.study.train import gpu_info  # noqa: E402

SHIPPED = Path(__file__).resolve().parent.parent / "temtool" / "pretrained" / "standard"


def rate(seg: Segmenter, tiles: np.ndarray, batches: int) -> float:
    seg.forward(tiles)  # compile / allocate
    t0 = time.perf_counter()
    for _ in range(batches):
        seg.forward(tiles)
    return batches * len(tiles) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    b = load_bundle(SHIPPED)
    tiles = np.random.default_rng(0).standard_normal((args.batch, args.tile, args.tile)).astype(np.float32)
    gpu = gpu_info()
    device = gpu["name"] if gpu else "CPU"
    print(f"{b.arch.label()}, {args.tile}x{args.tile} tiles, batch {args.batch}; device {device}")
    rows = []
    paths = ("host", "keras", "onnx")
    if importlib.util.find_spec("onnxruntime") is None:  # the GPU machine may lack it
        paths = paths[:2]
        print("onnxruntime is not installed here: its rows are skipped")
    for tta in (False, True):
        for path in paths:
            model, runtime = b.inference_model("keras" if path == "host" else path)
            seg = Segmenter(model, b.arch, b.reach_px, tta=tta, runtime="host" if path == "host" else runtime)
            r = rate(seg, tiles, args.batches)
            rows.append({"path": path, "tta": tta, "tiles_per_s": r})
            print(f"| {path:5s} | TTA {'8' if tta else '1'} | {r:9.1f} tiles/s |", flush=True)
    report(args.json, rows=rows, gpu=gpu)


if __name__ == "__main__":
    main()
