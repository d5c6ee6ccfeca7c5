"""What `temtool segment` does after the network, piece by piece, on a simulated micrograph's
probability map: the Gaussian smoothing of post-processing (SciPy's against
`temtool.image.filters.gaussian_filter`, which gives the same values), the whole post-processing,
particle measurement, the overlay's grey image, and the size histogram drawn with Pillow
against what importing and drawing it with Matplotlib costs in a fresh process.

    python benchmarks/finish_speed.py [--sizes 1024 2048 2080 4096] [--repeat 7] [--json out.json]

Times are the best of ``--repeat`` runs, except the fresh-process imports (best of three).
"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import numpy as np  # noqa: E402
from _machine import best, report  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

from temtool.data.simulate import config_for, simulate_image  # noqa: E402
from temtool.image.filters import gaussian_filter  # noqa: E402
from temtool.inference.measure import PostProcessing, measure_particles


def fresh(code: str, repeat: int = 3) -> float:
    """Best wall time of ``python -c code`` in a fresh process, less an empty interpreter's."""

    def run(c):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", c], check=True)
        return time.perf_counter() - t0

    return min(run(code) for _ in range(repeat)) - min(run("pass") for _ in range(repeat))


def probability_map(size: int) -> np.ndarray:
    """A smooth particle probability for a simulated micrograph (its mask, blurred)."""
    sim = simulate_image(config_for("standard", pixel_size_nm=0.5), size, seed=1)
    return ndi.gaussian_filter(sim.mask.astype(np.float32), 2.0)


def time_size(size: int, repeat: int) -> dict:
    from temtool.inference.outputs import overlay_grey

    prob = probability_map(size)
    assert np.array_equal(ndi.gaussian_filter(prob, 1.0), gaussian_filter(prob, 1.0))
    post = PostProcessing()
    mask, _ = post.apply(prob, 0.5)
    image = (1 - 0.5 * prob).astype(np.float32)
    return {
        "size_px": size,
        "scipy_gaussian_s": best(lambda: ndi.gaussian_filter(prob, 1.0), repeat),
        "temtool_gaussian_s": best(lambda: gaussian_filter(prob, 1.0), repeat),
        "postprocessing_s": best(lambda: post.apply(prob, 0.5), repeat),
        "measurement_s": best(lambda: measure_particles(mask, 0.5, 1, 0), repeat),
        "overlay_grey_s": best(lambda: overlay_grey(image), repeat),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 2080, 4096])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()
    rows = []
    print("| image | SciPy Gaussian | temtool Gaussian | post-processing | measurement | overlay grey |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        r = time_size(size, args.repeat)
        rows.append(r)
        ms = {k: v * 1e3 for k, v in r.items() if k.endswith("_s")}
        print(
            f"| {size}x{size} | {ms['scipy_gaussian_s']:.1f} ms | {ms['temtool_gaussian_s']:.1f} ms "
            f"| {ms['postprocessing_s']:.0f} ms | {ms['measurement_s']:.0f} ms "
            f"| {ms['overlay_grey_s']:.1f} ms |"
        )
    draw = (
        "import numpy as np; from temtool.inference.histogram import histogram_png; "
        "histogram_png('/dev/null', np.random.default_rng(0).normal(12, 2, 200), 'd (nm)', title='n = 200')"
    )
    mpl = (
        "import numpy as np; from matplotlib.figure import Figure; "
        "from matplotlib.backends.backend_agg import FigureCanvasAgg; "
        "fig = Figure(figsize=(4, 3)); FigureCanvasAgg(fig); ax = fig.add_subplot(); "
        "c, e = np.histogram(np.random.default_rng(0).normal(12, 2, 200), 30); ax.stairs(c, e, fill=True); "
        "fig.savefig('/dev/null', dpi=80, format='png')"
    )
    hist = {"pillow_fresh_s": fresh(draw), "matplotlib_fresh_s": fresh(mpl)}
    print(
        f"\nsize histogram from a fresh process (imports and drawing, less an empty interpreter): "
        f"Pillow {hist['pillow_fresh_s']:.2f} s, Matplotlib {hist['matplotlib_fresh_s']:.2f} s"
    )
    report(args.json, rows=rows, histogram=hist)


if __name__ == "__main__":
    main()
