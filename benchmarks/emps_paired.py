"""Published figures, paired: two or more runs of ``benchmarks/real_data.py --only emps --json``
(for example the shipped default and the models fine-tuned on emps-train without each figure's
article, ``--models-by-figure``) compared figure by figure, beside Gaussian + Otsu with the same
polarity decision and post-processing (the first run's; Otsu does not depend on the model).

    python benchmarks/emps_paired.py NAME=RESULT.json NAME=RESULT.json ... [--json OUT]

Prints, for all figures and by their true polarity, each run's mean Dice, object F1, AP, median
|count error| and median signed count error, and the paired 95% bootstrap interval (over
figures) of each run minus the first and minus Otsu. Only figures every run scored are compared.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
import numpy as np  # noqa: E402
from _machine import machine  # noqa: E402

from temtool.study.protocol import paired_difference  # noqa: E402

METRICS = ("dice", "f1", "ap")


def per(rows: dict, who: str, metric: str, names: list[str]) -> dict[str, float]:
    """``metric`` of ``who`` ("network" or "otsu") on each of ``names``."""
    return {n: rows[n][who][metric] for n in names}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="NAME=FILE, the first is the reference")
    ap.add_argument("--json", help="write the comparison here")
    args = ap.parse_args()
    runs = {}
    for item in args.runs:
        name, _, path = item.partition("=")
        data = json.loads(Path(path).read_text())
        runs[name] = {
            "file": path,
            "commit": data["commit"],
            "rows": {r["figure"]: r for r in data["per_figure"]},
        }
    common = sorted(set.intersection(*(set(r["rows"]) for r in runs.values())))
    first = next(iter(runs))
    ref = runs[first]["rows"]
    groups = {
        "all": common,
        "dark particles": [n for n in common if ref[n]["truth"] == "dark"],
        "bright particles": [n for n in common if ref[n]["truth"] == "bright"],
    }
    here = Path(__file__).resolve().parent.parent
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here)
    out = {
        "command": "python benchmarks/emps_paired.py " + " ".join(sys.argv[1:]),
        "commit": commit.stdout.strip(),
    }
    out["groups"] = {}
    out["runs"] = {k: {"file": v["file"], "commit": v["commit"]} for k, v in runs.items()}
    print(f"\nPublished figures of emps-train, paired over the {len(common)} figures every run scored\n")
    print(
        "| figures | n | method | Dice | object F1 | AP 0.5:0.95 | median abs count error | median (signed) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for g, names in groups.items():
        if len(names) < 2:
            continue
        res = out["groups"][g] = {"n": len(names)}

        methods = [(k, runs[k]["rows"], "network") for k in runs] + [("Gaussian + Otsu", ref, "otsu")]
        for label, rows, who in methods:
            v = {m: float(np.mean(list(per(rows, who, m, names).values()))) for m in METRICS}
            errors = [rows[n][who]["count_error"] for n in names]
            v["median_abs_count_error"] = float(np.median(np.abs(errors)))
            v["median_count_error"] = float(np.median(errors))  # signed: + over-counts
            res[label] = v
            print(
                f"| {g} | {len(names)} | {label} | {v['dice']:.3f} | {v['f1']:.3f} | {v['ap']:.3f} | "
                f"{100 * v['median_abs_count_error']:.0f}% | {100 * v['median_count_error']:+.0f}% |"
            )
        for k in runs:
            against = [(first, runs[first]["rows"], "network")] if k != first else []
            for other, rows, who in against + [("Gaussian + Otsu", ref, "otsu")]:
                d = {
                    m: paired_difference(per(runs[k]["rows"], "network", m, names), per(rows, who, m, names))
                    for m in METRICS
                }
                res[f"{k} - {other}"] = d
                cells = " | ".join(
                    f"{d[m]['mean']:+.3f} [{d[m]['ci95'][0]:+.3f}, {d[m]['ci95'][1]:+.3f}]" for m in METRICS
                )
                print(f"| {g} | | {k} - {other}, 95% paired bootstrap | {cells} | | |")
    out["machine"] = machine()
    print()
    print(machine())
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
