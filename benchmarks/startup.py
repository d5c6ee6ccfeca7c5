"""What a CPU user feels: `temtool segment` wall time from the prompt and warm inside one
process, for a 128x128 and a 2048x2048 micrograph, on each inference runtime (Keras on its
backend, the previous path; ONNX Runtime, the default for bundles with a graph), each as a
ratio to one bare forward pass of the same model over the same pixels measured in this run.

    python benchmarks/startup.py [--sizes 128 2048] [--repeat 3] [--json out.json] [--module]

Times are the best of ``--repeat`` runs (the machine's noise is one-sided); warm runs and
bare passes alternate, so a slow spell of a shared machine weighs on both alike. "From the
prompt" is a fresh `temtool` process writing every output (mask, probability, labels,
overlay, particle table, histogram), with the shipped model chosen as a new user gets it: the
installed console script, with compiled-module caches as an installation has them
(``--module``: ``python -m temtool.cli`` in this environment, as measured before 2026-12-01).
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from temtool.cli.process import configure_process  # noqa: E402

USER_ENVIRONMENT = dict(os.environ)  # the commands from the prompt start from this, as a user's
configure_process(["segment"])  # as the console script sets them, before NumPy loads
sys.path.insert(0, os.path.dirname(__file__))
import numpy as np  # noqa: E402
from _machine import best, report  # noqa: E402

from temtool.backend import start_backend  # noqa: E402

start_backend()

from temtool.data.io import write_tiff  # noqa: E402
from temtool.data.simulate import config_for, simulate_image  # noqa: E402
from temtool.inference.choice import ModelChooser  # noqa: E402
from temtool.inference.pipeline import segment_file  # noqa: E402
from temtool.model.bundle import load_bundle  # noqa: E402

SHIPPED = Path(__file__).resolve().parent.parent / "temtool" / "pretrained" / "standard"
RUNTIMES = ("keras", "onnx")


def bare_models() -> dict:
    """The shipped model on each runtime, for one bare forward pass over the whole image."""
    b = load_bundle(SHIPPED)
    return {rt: b.inference_model(rt)[0] for rt in RUNTIMES}


def temtool_command(module: bool = False) -> list[str]:
    """What a user types: the ``temtool`` console script installed beside this Python (else,
    or with ``module``, ``python -m temtool.cli``)."""
    script = Path(sys.executable).with_name("temtool")
    return [str(script)] if script.is_file() and not module else [sys.executable, "-m", "temtool.cli"]


def from_prompt(f: Path, runtime: str, repeat: int, tmp: Path, as_installed: bool = True) -> float:
    """Best of ``repeat`` runs of the command. ``as_installed``: the console script, with
    Python's compiled-module caches as an installation has them (pip compiles a regular
    install's modules; an editable install's are compiled on first use, so one untimed run
    comes first). Without it, ``python -m temtool.cli`` as before 2026-12-01 (seventh), which
    compiled temtool's modules at every run where ``PYTHONDONTWRITEBYTECODE`` was set."""
    env = dict(USER_ENVIRONMENT, TEMTOOL_CACHE=str(tmp / "cache"))  # a new user: the shipped model
    if as_installed:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    cmd = temtool_command(module=not as_installed)
    cmd += ["segment", str(f), "--out", str(tmp / f"p-{runtime}")]
    cmd += ["--runtime", "auto" if runtime == "onnx" else runtime, "--json"]

    def run():
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(r.stderr[-2000:])

    if as_installed:
        run()
    return best(run, repeat)


def warm_and_bare(
    f: Path, image: np.ndarray, runtime: str, model, repeat: int, tmp: Path
) -> tuple[float, float]:
    """Best of ``repeat`` warm `segment_file` runs and of as many bare passes, taken in
    alternation, so that a slow spell of the machine weighs on both alike."""
    x = image[None, ..., None].astype(np.float32)
    x = (x - x.mean()) / x.std()
    chooser = ModelChooser(SHIPPED, runtime=runtime)
    segment_file(f, tmp / "warm", chooser)  # load, trace, allocate once
    for _ in range(2):  # the runtime plans its memory on the second call of a shape
        model.predict_on_batch(x)
    bare, warm = [], []
    for _ in range(repeat):
        bare.append(best(lambda: model.predict_on_batch(x), 1))
        warm.append(best(lambda: segment_file(f, tmp / "warm", chooser), 1))
    return min(bare), min(warm)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 2048])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument("--module", action="store_true", help="from the prompt as python -m temtool.cli")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for size in args.sizes:
            sim = simulate_image(config_for("standard", pixel_size_nm=0.5), size, seed=1)
            f = tmp / f"m{size}.tif"
            write_tiff(f, sim.image, 0.5)
            models, here = bare_models(), []
            for rt in RUNTIMES:
                prompt = from_prompt(f, rt, args.repeat, tmp, as_installed=not args.module)
                bare, inproc = warm_and_bare(f, sim.image, rt, models[rt], args.repeat, tmp)
                here.append(
                    {
                        "size_px": size,
                        "runtime": rt,
                        "bare_pass_s": bare,
                        "from_prompt_s": prompt,
                        "warm_s": inproc,
                    }
                )
            keras_bare = next(r["bare_pass_s"] for r in here if r["runtime"] == "keras")
            for r in here:
                r["bare_keras_pass_s"] = keras_bare
            rows += here
    print("| micrograph | runtime | bare pass | from the prompt | ratio | warm in-process | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        b = r["bare_pass_s"]
        print(
            f"| {r['size_px']}x{r['size_px']} | {r['runtime']} | {b:.3f} s | {r['from_prompt_s']:.2f} s | "
            f"{r['from_prompt_s'] / b:.2f}x | {r['warm_s']:.2f} s | {r['warm_s'] / b:.2f}x |"
        )
    print("\nratios are to the bare pass on the same runtime; Keras bare passes:", end=" ")
    print(
        ", ".join(f"{r['size_px']}: {r['bare_keras_pass_s']:.3f} s" for r in rows if r["runtime"] == "keras")
    )
    command = temtool_command(module=args.module)
    caches = "" if args.module else " (compiled modules as installed)"
    print(f"from the prompt: {' '.join(command)}{caches}")
    report(args.json, rows=rows, command=command, as_installed=not args.module)


if __name__ == "__main__":
    main()
