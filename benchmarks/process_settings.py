"""What each process setting of the command line is worth: `temtool segment` of one micrograph
from the prompt, with every setting of `temtool.cli.process` as it is, and with each one
undone in turn; optionally against an earlier checkout of temtool (``--previous``), run the
same way. Configurations alternate round by round, so a slow spell of a shared machine weighs
on all of them alike.

    python benchmarks/process_settings.py [--size 2048] [--rounds 8] [--previous DIR] [--json out.json]

Each run is ``python -m temtool.cli segment M --out O --json`` in a fresh process, from the
user's environment with Python's compiled-module caches as an installation has them (an
untimed run of each configuration first), and a fresh cache (the shipped model, as a new user
gets it). With ``--previous``, the earlier code is also run with each of the process tricks
it had undone in turn (for the code before the redesign of 2026-12-07: the memory prefault,
the deferred NumPy modules, the exit without the interpreter's shutdown). Prints the
median and the spread of wall time, user and system CPU time and peak resident memory per
configuration, and the machine. Undoing a setting means giving the variable the value the
library would use without it (NumPy's huge-page advice on); a candidate setting not kept
(OpenBLAS's thread timeout) is tried by giving it.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _machine import report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
USER_ENVIRONMENT = dict(os.environ)

# configuration -> environment changes
UNDO = {
    "as it is": {},
    "without NUMPY_MADVISE_HUGEPAGE": {"NUMPY_MADVISE_HUGEPAGE": "1"},  # NumPy's default advice
    "with OPENBLAS_THREAD_TIMEOUT=4": {"OPENBLAS_THREAD_TIMEOUT": "4"},  # removed: did not pay
}
# configuration of the previous code -> Python run before its command line (its own names)
PREVIOUS = {
    "previous code": "",
    "previous code without its prefault": "import temtool.memory as m; m.prefault = lambda nbytes: None",
    "previous code without deferred NumPy modules": (
        "import temtool._env as e; e.defer_numpy_modules = lambda *a, **k: []"
    ),
    "previous code without its fast exit": (
        "import os, sys; os._exit = lambda code: (_ for _ in ()).throw(SystemExit(code))"
    ),
}


def run_once(f: Path, out: Path, env: dict, source: Path, prelude: str = "") -> dict:
    """One `temtool segment` from the prompt (after ``prelude``, Python run first in that
    process); wall, user and system time and peak memory of that process alone (``os.wait4``)."""
    env = dict(env, PYTHONPATH=str(source), TEMTOOL_CACHE=str(out.parent / "cache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # compiled modules kept, as installed
    launch = ["-m", "temtool.cli"]
    if prelude:
        launch = ["-c", f"{prelude}\nimport sys; sys.argv[0] = 'temtool'; from temtool.cli import run; run()"]
    cmd = [sys.executable, *launch, "segment", str(f), "--out", str(out), "--json"]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=out.parent)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise RuntimeError(f"{cmd} failed: {p.stderr.read().decode()[-2000:]}")
    p.stderr.close()
    peak_mb = usage.ru_maxrss / 1024
    return {"wall_s": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime, "peak_mb": peak_mb}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--previous", default=None, help="an earlier checkout (its folder holding temtool/)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from temtool.data.io import write_tiff
    from temtool.data.simulate import config_for, simulate_image

    configs = {name: (changes, ROOT, "") for name, changes in UNDO.items()}
    if args.previous:
        previous = Path(args.previous).resolve()
        configs.update({name: ({}, previous, prelude) for name, prelude in PREVIOUS.items()})
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        f = tmp / f"m{args.size}.tif"
        write_tiff(f, simulate_image(config_for("standard", pixel_size_nm=0.5), args.size, seed=1).image, 0.5)
        for changes, source, prelude in configs.values():  # untimed: caches, compiled modules
            run_once(f, tmp / "warmup", {**USER_ENVIRONMENT, **changes}, source, prelude)
        for r in range(args.rounds):
            order = list(configs) if r % 2 == 0 else list(reversed(configs))
            for name in order:
                changes, source, prelude = configs[name]
                env = {**USER_ENVIRONMENT, **changes}
                runs[name].append(run_once(f, tmp / f"o{r}", env, source, prelude))
    print(f"`temtool segment` of a {args.size}x{args.size} micrograph from the prompt, {args.rounds} rounds")
    print("| configuration | wall s, median (min-max) | user s | system s | peak MB |")
    print("|---|---|---|---|---|")
    summary = {}
    for name, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        lo, hi = min(r["wall_s"] for r in rs), max(r["wall_s"] for r in rs)
        summary[name] = {"median": med, "wall_min_s": lo, "wall_max_s": hi}
        print(
            f"| {name} | {med['wall_s']:.2f} ({lo:.2f}-{hi:.2f}) | {med['user_s']:.2f} | "
            f"{med['sys_s']:.2f} | {med['peak_mb']:.0f} |"
        )
    for base_name in ("as it is", "previous code"):
        base = runs.get(base_name)
        for name, rs in runs.items():
            if (
                base is None
                or name == base_name
                or (base_name == "previous code") != name.startswith("previous")
            ):
                continue
            faster = sum(a["wall_s"] < b["wall_s"] for a, b in zip(base, rs))
            print(f"'{base_name}' faster than '{name}' in {faster} of {len(rs)} rounds")
    report(args.json, size_px=args.size, rounds=args.rounds, runs=runs, summary=summary)


if __name__ == "__main__":
    main()
