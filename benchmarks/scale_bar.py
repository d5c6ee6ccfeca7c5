"""How often the pixel size is read from a published figure's scale bar, how close it is, and what
it costs.

- Hand-checked: the 100 figures of ``benchmarks/data/emps_scale_bars.csv`` (the first 100 of
  ../shared/data/emps-train by name; labels read by eye, bar lengths checked by eye; see the
  file's header), by set: ``development`` (the rules were made looking at them) and ``check``.
  Of the figures with a labelled bar: the share read, and of those the share within 3% of the
  table. Figures without a labelled bar must give nothing.
- All 366 figures (``--all``): how many are read, and how many labels are read but give no
  pixel size (and why); no truth there.
- Cost (``--speed N``): ``segment_files`` on the first N figures, with and without
  ``--scale-bar``, the same model and options otherwise (best of 2 each).

    python benchmarks/scale_bar.py [--all] [--speed 30] [--json benchmarks/results/scale_bar.json]
"""

import argparse
import collections
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _machine import report  # noqa: E402

from temtool.data.io import read_image  # noqa: E402
from temtool.inference.scalebar import read_scale_bar  # noqa: E402

EMPS = HERE.parent.parent / "shared" / "data" / "emps-train"
TABLE = HERE / "data" / "emps_scale_bars.csv"
TOLERANCE = 0.03


def _summary(per: list[dict]) -> dict:
    labelled = [p for p in per if p["bar"] == "labelled"]
    read = [p for p in labelled if p["found_nm_per_px"] is not None]
    measured = [p for p in read if p["relative_error"] is not None]
    close = [p for p in measured if abs(p["relative_error"]) <= TOLERANCE]
    spurious = [p for p in per if p["bar"] != "labelled" and p["found_nm_per_px"] is not None]
    return {
        "figures": len(per),
        "labelled_bars": len(labelled),
        "read": len(read),
        "read_share": len(read) / len(labelled) if labelled else None,
        "read_with_hand_measured_truth": len(measured),
        "within_3_percent": len(close),
        "within_3_percent_share": len(close) / len(measured) if measured else None,
        "worst_relative_error": max((abs(p["relative_error"]) for p in measured), default=None),
        "value_without_a_labelled_bar": len(spurious),
    }


def hand_checked() -> dict:
    rows = list(csv.DictReader(line for line in open(TABLE) if not line.startswith("#")))
    per, times = [], []
    for r in rows:
        x = read_image(EMPS / "images" / r["filename"]).data
        t0 = time.perf_counter()
        found = read_scale_bar(x)
        times.append(time.perf_counter() - t0)
        truth = float(r["length_nm"]) / float(r["bar_px"]) if r["bar_px"] and r["length_nm"] else None
        err = None if truth is None or found.pixel_size_nm is None else found.pixel_size_nm / truth - 1
        per.append(
            {
                "set": r["set"],
                "filename": r["filename"],
                "bar": r["bar"],
                "truth_nm_per_px": truth,
                "found_nm_per_px": found.pixel_size_nm,
                "relative_error": err,
                "reason": found.reason,
            }
        )
    sets = sorted({p["set"] for p in per})
    return {
        **{s: _summary([p for p in per if p["set"] == s]) for s in sets},
        "all": _summary(per),
        "seconds_per_figure_median": float(np.median(times)),
        "per_figure": per,
    }


def every_figure() -> dict:
    names = sorted(p.name for p in (EMPS / "images").glob("*.png"))
    reasons = collections.Counter()
    read = 0
    for n in names:
        found = read_scale_bar(read_image(EMPS / "images" / n).data)
        if found.pixel_size_nm is not None:
            read += 1
        else:
            reasons[found.reason.split("'")[0].split(":")[0].strip()] += 1
    return {"figures": len(names), "read": read, "not_read_by_reason": dict(reasons.most_common())}


def speed(n: int) -> dict:
    from temtool.inference.choice import ModelChooser
    from temtool.inference.pipeline import SegmentOptions, segment_files

    files = sorted((EMPS / "images").glob("*.png"))[:n]
    chooser = ModelChooser(None)
    out = {}
    for label, on in (("without", False), ("with", True), ("without_again", False), ("with_again", True)):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            segment_files([str(f) for f in files], tmp, chooser, SegmentOptions(scale_bar=on))
            out[label] = time.perf_counter() - t0
    base = min(out["without"], out["without_again"])
    withbar = min(out["with"], out["with_again"])
    return {
        "figures": n,
        "seconds": out,
        "best_without_s": base,
        "best_with_s": withbar,
        "ratio": withbar / base,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--all", action="store_true", help="also read every figure of emps-train")
    ap.add_argument("--speed", type=int, default=0, help="time segment on this many figures")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ.setdefault("TEMTOOL_CACHE", tempfile.mkdtemp())
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    checked = hand_checked()
    for name in ("development", "check", "all"):
        c = checked[name]
        print(
            f"{name}: {c['read']} of {c['labelled_bars']} labelled bars read ({c['read_share']:.0%}); "
            f"{c['within_3_percent']} of {c['read_with_hand_measured_truth']} within 3% (worst "
            f"{c['worst_relative_error']:.1%}); {c['value_without_a_labelled_bar']} values on "
            "figures without a labelled bar"
        )
    print(f"{checked['seconds_per_figure_median']:.2f} s per figure (median)")
    results = {"hand_checked": checked}
    if args.all:
        results["all"] = every_figure()
        print(f"all: {results['all']}")
    if args.speed:
        results["speed"] = speed(args.speed)
        print(f"speed: {results['speed']}")
    report(
        args.json,
        benchmark="scale_bar",
        command="python benchmarks/scale_bar.py " + " ".join(sys.argv[1:]),
        commit=commit,
        table=str(TABLE.relative_to(HERE.parent)),
        **results,
    )


if __name__ == "__main__":
    main()
