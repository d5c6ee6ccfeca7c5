"""The pictures in docs/interop.md, made the way a user would make them:

1. ``temtool.segment_signal`` on a HyperSpy signal: a real bright-field micrograph from
   examples/data/real-tem (CC-BY-4.0, pixel size not stated, so sizes in px) and a simulated
   stack calibrated in angstrom (sizes in nm); the micrograph, its labels, and the count.
2. ``temtool export standard hrtem``: the two packages' cover images (the test input beside
   the package's particle probability), as the model zoo shows them.

    python examples/interop_figures.py

Writes docs/figures/segment_signal.png, docs/figures/zoo_cover_standard.png,
docs/figures/zoo_cover_hrtem.png and docs/figures/interop.json (what was run, the counts, the
package checks, the commit).
"""

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import hyperspy.api as hs  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import temtool  # noqa: E402
from temtool.data.io import read_image  # noqa: E402
from temtool.data.simulate import config_for, simulate_image  # noqa: E402
from temtool.inference.zoo import export_packages  # noqa: E402

FIGURES = HERE.parent / "docs" / "figures"


def _commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=HERE, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def hyperspy_figure() -> dict:
    real = read_image(HERE / "data" / "real-tem" / "images" / "image_13.png").data
    s_real = hs.signals.Signal2D(real)
    s_real.metadata.General.title = "image_13 (real, uncalibrated)"
    r_real = temtool.segment_signal(s_real)

    stack = np.stack(
        [simulate_image(config_for("standard", pixel_size_nm=0.5), size=256, seed=s).image for s in (1, 2, 3)]
    ).astype(np.float32)
    s_sim = hs.signals.Signal2D(stack)
    for ax in s_sim.axes_manager.signal_axes:
        ax.scale, ax.units = 5.0, "Å"
    r_sim = temtool.segment_signal(s_sim)

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.8))
    panels = [
        (real, None, "real micrograph (HyperSpy Signal2D, no calibration)"),
        (real, r_real.labels, f"{len(r_real.particles)} particles, sizes in px"),
        (stack[0], None, "simulated stack, axes in Å (frame 0 of 3)"),
        (stack[0], r_sim.labels[0], f"frame 0: {r_sim.frames[0]['particles']} particles, sizes in nm"),
    ]
    for ax, (img, lab, title) in zip(axes, panels):
        ax.imshow(img, cmap="gray")
        if lab is not None:
            ax.imshow(np.ma.masked_equal(lab, 0) % 20, cmap="tab20", alpha=0.55, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(FIGURES / "segment_signal.png", dpi=90)
    return {
        "real": {
            "file": "examples/data/real-tem/images/image_13.png",
            "particles": len(r_real.particles),
            "pixel_size_nm": r_real.pixel_size_nm,
            "mean_equivalent_diameter_px": r_real.frames[0]["diameter_mean"],
            "model": Path(r_real.frames[0]["model"]).name,
        },
        "simulated_stack": {
            "recipe": "simulate_image(config_for('standard', pixel_size_nm=0.5), size=256, seed=1..3); "
            "axes 5 Å",
            "pixel_size_nm": r_sim.pixel_size_nm,
            "pixel_size_source": r_sim.pixel_size_source,
            "particles_per_frame": [f["particles"] for f in r_sim.frames],
            "mean_equivalent_diameter_nm_per_frame": [f["diameter_mean"] for f in r_sim.frames],
        },
    }


def _zoo_vs_temtool(package: Path) -> dict:
    """bioimageio.core's two ways of predicting a new micrograph against temtool's probability
    (segment's tiled inference at the model's scale): blockwise and whole-image."""
    from bioimageio.core import load_model_description, predict

    from temtool.image.normalise import standardize
    from temtool.inference.segmenter import Segmenter
    from temtool.model.registry import shipped_models

    image = simulate_image(config_for("standard", pixel_size_nm=0.5), size=216, seed=7).image.astype(
        np.float32
    )
    model = load_model_description(package)
    tiled = Segmenter.from_bundle(shipped_models()["standard"], runtime="onnx").predict(standardize(image))
    out = {"image": "simulate_image(config_for('standard', pixel_size_nm=0.5), size=216, seed=7)"}
    for how, kw in (("blockwise", {"blocksize_parameter": 0}), ("whole_image", {})):
        got = np.asarray(
            predict(model=model, inputs={"image": image[None, :, :, None]}, **kw).members["probability"].data
        )
        d = np.abs(got[0, :, :, 0] - tiled)
        out[how] = {
            "max_difference": float(d.max()),
            "max_difference_beyond_56_px": float(d[56:-56, 56:-56].max()),
        }
    return out


def zoo_covers() -> tuple[list[dict], dict]:
    with tempfile.TemporaryDirectory() as t:
        results = export_packages(["standard", "hrtem"], Path(t) / "packages")
        for r in results:
            name = Path(r.package).stem
            with zipfile.ZipFile(r.package) as z:
                (FIGURES / f"zoo_cover_{name}.png").write_bytes(z.read("cover.png"))
        prediction = _zoo_vs_temtool(Path(t) / "packages" / "standard.zip")
        return [
            {
                "bundle": Path(r.bundle).name,
                "status": r.status,
                "test_input_px": list(r.input_px),
                "halo_px": r.halo_px,
                "max_difference": r.max_difference,
            }
            for r in results
        ], prediction


def main() -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    packages, prediction = zoo_covers()
    record = {
        "command": "python examples/interop_figures.py",
        "commit": _commit(),
        "temtool_version": temtool.__version__,
        "hyperspy": hyperspy_figure(),
        "bioimageio_packages": packages,
        "standard_package_on_a_new_micrograph": prediction,
    }
    (FIGURES / "interop.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
