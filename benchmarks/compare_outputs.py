"""Whether a change kept `temtool segment`'s outputs: the same micrographs segmented by two
checkouts of temtool, every output file compared byte for byte and every summary field
compared (but timings and paths).

    python benchmarks/compare_outputs.py PREVIOUS_DIR [--current DIR] [--shared ../shared]

``PREVIOUS_DIR`` (and ``--current``, default this checkout) is a folder holding ``temtool/``
(e.g. ``git worktree add /tmp/prev COMMIT``). Inputs: the 20 shared real micrographs
(``shared/data/msa-seg-track-train/images``), a simulated 2048x2048 bright-field micrograph
(several tiles) and a simulated HRTEM micrograph (the HRTEM model); each set with the
defaults, with ``--tta`` and with ``--runtime keras``. Prints each difference and a summary;
exits 1 if anything differs.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPTION_SETS = {"defaults": [], "tta": ["--tta"], "keras": ["--runtime", "keras"]}
IGNORED = {"time_s", "outputs", "model", "file"}


def segment(source: Path, inputs: list[Path], out: Path, options: list[str], cache: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(source), TEMTOOL_CACHE=str(cache))
    cmd = [sys.executable, "-m", "temtool.cli", "segment", *map(str, inputs), "--out", str(out), "--json"]
    r = subprocess.run(cmd + options, env=env, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{source}: {r.stderr[-2000:]}")
    return json.loads(r.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("previous")
    ap.add_argument("--current", default=str(ROOT))
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    args = ap.parse_args()
    sys.path.insert(0, args.current)
    from temtool.data.io import write_tiff
    from temtool.data.simulate import config_for, simulate_image

    differences, files, summaries = [], 0, 0
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sim = tmp / "simulated"
        sim.mkdir()
        write_tiff(
            sim / "std2048.tif", simulate_image(config_for("standard", pixel_size_nm=0.5), 2048, 3).image, 0.5
        )
        hr = config_for("hrtem")
        write_tiff(sim / "hr512.tif", simulate_image(hr, 512, 4).image, hr.pixel_size_nm)
        sets = {"simulated": [sim]}
        real = Path(args.shared) / "data" / "msa-seg-track-train" / "images"
        if real.is_dir():
            sets["shared real"] = [real]
        for set_name, inputs in sets.items():
            for opt_name, options in OPTION_SETS.items():
                if set_name == "shared real" and opt_name != "defaults":
                    continue  # 20 files: the defaults only
                res = {}
                for who, source in (("previous", args.previous), ("current", args.current)):
                    out = tmp / f"{set_name}-{opt_name}-{who}".replace(" ", "_")
                    res[who] = (out, segment(Path(source), inputs, out, options, tmp / "cache"))
                (a_dir, a), (b_dir, b) = res["previous"], res["current"]
                for f in sorted(a_dir.iterdir()):
                    files += 1
                    g = b_dir / f.name
                    if not g.is_file() or f.read_bytes() != g.read_bytes():
                        differences.append(f"{set_name}, {opt_name}: {f.name} differs")
                for x, y in zip(a["results"], b["results"]):
                    summaries += 1
                    for k in sorted(set(x) | set(y)):
                        if k not in IGNORED and x.get(k) != y.get(k):
                            differences.append(
                                f"{set_name}, {opt_name}: {Path(x['file']).name} summary {k!r} differs"
                            )
    for line in differences:
        print(line)
    print(f"{files} output files and {summaries} summaries compared: {len(differences)} differences")
    sys.exit(1 if differences else 0)


if __name__ == "__main__":
    main()
