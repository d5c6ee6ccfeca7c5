"""The main job, rerun as a new user runs it: `temtool tune` with no arguments from an empty
cache (dataset seed 0, the built-in `sim:randomised`), and the same on the same recipe drawn
with other dataset seeds (simulated into a folder, then `temtool tune --data FOLDER`). Nothing
is chosen here: the defaults run as they are.

    python benchmarks/main_job.py [--seeds 0 1]

Writes benchmarks/results/main_job_seed{S}.csv (the results table, with each network's test
Dice minus the tuned threshold's and its paired bootstrap interval over test images) and
main_job_seed{S}_baselines.json, and prints the wall time, the verdict line temtool printed,
the recipe hash and the commit (what benchmarks/results/provenance.json records).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def run(seed: int, work: Path) -> None:
    env = {**os.environ, "TEMTOOL_CACHE": str(work / "cache")}  # an empty cache: simulated on first use
    cli = [sys.executable, "-m", "temtool.cli"]
    t0 = time.perf_counter()
    if seed == 0:
        args = [*cli, "tune", "--directory", str(work / "logs")]
    else:
        from temtool.data.dataset import BUILTIN, write_simulated_dataset

        spec = BUILTIN["randomised"]
        data = work / f"randomised-seed{seed}"
        write_simulated_dataset(
            data,
            regime=spec["regime"],
            n=spec["n"],
            size=spec["size"],
            seed=seed,
            workers=2,
            overrides=spec["overrides"],
            randomised=True,
        )
        args = [*cli, "tune", "--data", str(data), "--directory", str(work / "logs")]
    r = subprocess.run(args, capture_output=True, text=True, env=env, cwd=work)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"seed {seed}: {' '.join(args)} failed:\n{r.stderr[-2000:]}")
    project = next((work / "logs").iterdir())
    shutil.copy(project / "results.csv", RESULTS / f"main_job_seed{seed}.csv")
    shutil.copy(project / "baselines.json", RESULTS / f"main_job_seed{seed}_baselines.json")
    verdict = [line for line in r.stdout.splitlines() if "tuned threshold" in line]
    print(f"\n## dataset seed {seed}: {seconds / 60:.1f} min from an empty cache\n")
    print(r.stdout)
    print("verdict:", " ".join(verdict))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args()
    from temtool.data.dataset import builtin_recipe_hash

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    print(f"commit {commit.stdout.strip()}, sim:randomised recipe {builtin_recipe_hash('randomised')}")
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            run(seed, Path(tmp))
    print(json.dumps(machine()))


if __name__ == "__main__":
    main()
