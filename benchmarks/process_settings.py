"""What each process setting of the command line is worth: `temtool segment` of one micrograph
from the prompt, with every setting of `temtool.cli.process` as it is, and with each one
undone in turn; optionally against an earlier checkout of temtool (``--previous``), run the
same way. Configurations alternate round by round, so a slow spell of a shared machine weighs
on all of them alike.

    python benchmarks/process_settings.py [--size 2048] [--rounds 8] [--previous DIR] [--json out.json]

Each run is ``python -m temtool.cli segment M --out O --json`` in a fresh process, from the
user's environment (a fresh cache: the shipped model, as a new user gets it). Prints the
median and the spread of wall time, user and system CPU time and peak resident memory per
configuration, and the machine. Undoing a setting means giving the variable the value the
library would use without it (OpenBLAS's own thread timeout, NumPy's huge-page advice on).
The allocator setting (`keep_freed_memory`) pays between micrographs, so it is measured by
`benchmarks/folder_speed.py` with and without ``--glibc-defaults``.
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

# configuration -> environment changes (None: the variable removed)
UNDO = {
    "as it is": {},
    "without OPENBLAS_THREAD_TIMEOUT": {"OPENBLAS_THREAD_TIMEOUT": "28"},  # OpenBLAS's default
    "without NUMPY_MADVISE_HUGEPAGE": {"NUMPY_MADVISE_HUGEPAGE": "1"},  # NumPy's default advice
}


def run_once(f: Path, out: Path, env: dict, source: Path) -> dict:
    """One `temtool segment` from the prompt; wall, user and system time and peak memory of
    that process alone (``os.wait4``)."""
    env = dict(env, PYTHONPATH=str(source), TEMTOOL_CACHE=str(out.parent / "cache"))
    cmd = [sys.executable, "-m", "temtool.cli", "segment", str(f), "--out", str(out), "--json"]
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

    configs = {name: (changes, ROOT) for name, changes in UNDO.items()}
    if args.previous:
        configs["previous code"] = ({}, Path(args.previous).resolve())
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        f = tmp / f"m{args.size}.tif"
        write_tiff(f, simulate_image(config_for("standard", pixel_size_nm=0.5), args.size, seed=1).image, 0.5)
        for changes, source in configs.values():  # untimed: caches, compiled modules
            run_once(f, tmp / "warmup", {**USER_ENVIRONMENT, **changes}, source)
        for r in range(args.rounds):
            order = list(configs) if r % 2 == 0 else list(reversed(configs))
            for name in order:
                changes, source = configs[name]
                runs[name].append(run_once(f, tmp / f"o{r}", {**USER_ENVIRONMENT, **changes}, source))
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
    base = runs["as it is"]
    for name, rs in runs.items():
        if name == "as it is":
            continue
        faster = sum(a["wall_s"] < b["wall_s"] for a, b in zip(base, rs))
        print(f"as it is faster than '{name}' in {faster} of {len(rs)} rounds")
    report(args.json, size_px=args.size, rounds=args.rounds, runs=runs, summary=summary)


if __name__ == "__main__":
    main()
