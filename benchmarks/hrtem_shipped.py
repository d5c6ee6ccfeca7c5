"""The shipped models and the model choice on HRTEM at the study's geometry: 12 micrographs
of the calibrated HRTEM simulation (5 nm Au, 0.02152 nm/px, 512x512, pixel size given), which
model `temtool segment` picks for each (temtool.inference.regime.classify), and the Dice of both shipped
models and of Gaussian + Otsu (sigma 12 px, the calibration's best) on each.

    python benchmarks/hrtem_shipped.py [--also NAME=BUNDLE ...]

``--also`` scores more bundles beside the shipped ones (e.g. a retrained candidate).
"""

import argparse
import os
import sys

import numpy as np

from temtool.data.dataset import STUDY_HRTEM_NM_PER_PX as PX
from temtool.data.simulate import config_for, simulate_image
from temtool.inference.classical import otsu_segment
from temtool.inference.measure import PostProcessing
from temtool.inference.regime import classify
from temtool.inference.segmenter import Segmenter

PRETRAINED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "temtool", "pretrained")
ap = argparse.ArgumentParser()
ap.add_argument("--also", nargs="*", default=[], metavar="NAME=BUNDLE")
args = ap.parse_args()
segs = {n: Segmenter.from_bundle(os.path.join(PRETRAINED, n)) for n in ("hrtem", "standard")}
segs.update({k: Segmenter.from_bundle(v) for k, v in (a.split("=", 1) for a in args.also)})
cfg = config_for("hrtem", pixel_size_nm=PX, diameter_nm=5.0)
rows = []
for s in range(12):
    sim = simulate_image(cfg, 512, seed=100 + s)
    t = sim.mask > 0
    c = classify(sim.image, PX)[0]
    d = {}
    for n, seg in segs.items():
        m = PostProcessing().apply(seg.probability(sim.image, PX).prob, PX)[0] > 0
        d[n] = 2 * (m & t).sum() / (m.sum() + t.sum())
    o = otsu_segment(sim.image, 12) > 0
    d["otsu12"] = 2 * (o & t).sum() / (o.sum() + t.sum())
    rows.append((c, d))
    print(s, c, {k: round(v, 3) for k, v in d.items()}, flush=True)
means = {k: round(np.mean([d[k] for _, d in rows]), 3) for k in rows[0][1]}
print("all", len(rows), "micrographs, mean Dice", means)
for c in ("hrtem", "standard"):
    sel = [d for cc, d in rows if cc == c]
    if sel:
        print(
            c,
            len(sel),
            "micrographs routed there, mean Dice",
            {k: round(np.mean([d[k] for d in sel]), 3) for k in sel[0]},
        )

sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402

print(machine())
