"""What a CPU user feels: `temtool segment` wall time from the prompt and warm inside one
process, for a 128x128 and a 2048x2048 micrograph, on each inference runtime (Keras on its
backend, the previous path; ONNX Runtime, the default for bundles with a graph), each as a
ratio to one bare forward pass of the same model over the same pixels measured in this run.

    python benchmarks/startup.py [--sizes 128 2048] [--repeat 3] [--json out.json]

Times are the best of ``--repeat`` runs (the machine's noise is one-sided). "From the
prompt" is a fresh `temtool` process writing every output (mask, probability, labels,
overlay, particle table, histogram), with the shipped model chosen as a new user gets it.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
import numpy as np  # noqa: E402
from _machine import machine  # noqa: E402

from temtool._quiet import start_backend  # noqa: E402

start_backend()

from temtool.bundle import load_bundle  # noqa: E402
from temtool.data.io import write_tiff  # noqa: E402
from temtool.data.simulate import config_for, simulate_image  # noqa: E402
from temtool.segment import ModelChooser, segment_file  # noqa: E402

SHIPPED = Path(__file__).resolve().parent.parent / "temtool" / "pretrained" / "standard"
RUNTIMES = ("keras", "onnx")


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bare_passes(image: np.ndarray, repeat: int) -> dict:
    """One forward pass of the shipped model over the whole image (no tiling), warm."""
    b = load_bundle(SHIPPED)
    x = image[None, ..., None].astype(np.float32)
    x = (x - x.mean()) / x.std()
    out = {}
    for rt in RUNTIMES:
        model, _ = b.inference_model(rt)
        model.predict_on_batch(x)  # trace / allocate once
        out[rt] = best(lambda m=model: m.predict_on_batch(x), repeat)
    return out


def from_prompt(f: Path, runtime: str, repeat: int, tmp: Path) -> float:
    env = dict(os.environ, TEMTOOL_CACHE=str(tmp / "cache"))  # a new user: the shipped model
    cmd = [sys.executable, "-m", "temtool.cli", "segment", str(f), "--out", str(tmp / f"p-{runtime}")]
    cmd += ["--runtime", "auto" if runtime == "onnx" else runtime, "--json"]

    def run():
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(r.stderr[-2000:])

    return best(run, repeat)


def warm(f: Path, runtime: str, repeat: int, tmp: Path) -> float:
    chooser = ModelChooser(SHIPPED, runtime=runtime)
    segment_file(f, tmp / "warm", chooser)  # load, trace, allocate once
    return best(lambda: segment_file(f, tmp / "warm", chooser), repeat)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 2048])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for size in args.sizes:
            sim = simulate_image(config_for("standard", pixel_size_nm=0.5), size, seed=1)
            f = tmp / f"m{size}.tif"
            write_tiff(f, sim.image, 0.5)
            bare = bare_passes(sim.image, args.repeat)
            for rt in RUNTIMES:
                prompt, inproc = from_prompt(f, rt, args.repeat, tmp), warm(f, rt, args.repeat, tmp)
                rows.append(
                    {
                        "size_px": size,
                        "runtime": rt,
                        "bare_pass_s": bare[rt],
                        "bare_keras_pass_s": bare["keras"],
                        "from_prompt_s": prompt,
                        "warm_s": inproc,
                    }
                )
    print("| micrograph | runtime | bare pass | from the prompt | ratio | warm in-process | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        b = r["bare_pass_s"]
        print(
            f"| {r['size_px']}x{r['size_px']} | {r['runtime']} | {b:.3f} s | {r['from_prompt_s']:.2f} s | "
            f"{r['from_prompt_s'] / b:.1f}x | {r['warm_s']:.2f} s | {r['warm_s'] / b:.2f}x |"
        )
    print("\nratios are to the bare pass on the same runtime; Keras bare passes:", end=" ")
    print(
        ", ".join(f"{r['size_px']}: {r['bare_keras_pass_s']:.3f} s" for r in rows if r["runtime"] == "keras")
    )
    info = machine()
    print(info)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "machine": info}, indent=2))


if __name__ == "__main__":
    main()
