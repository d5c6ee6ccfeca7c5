"""A bundle as a BioImage.IO model package (spec 0.5), so that the network reaches Fiji
(deepImageJ), ilastik, QuPath and napari without temtool.

The package holds the bundle's ONNX graph with the softmax added (its output is the particle
probability, :func:`temtool.model.onnx_graph.probability_graph`), the per-image
standardisation as its preprocessing (``zero_mean_unit_variance`` over y and x), a test input
simulated for the model's regime and the output temtool computes for it, a cover image,
documentation written from ``bundle.json``, the study and the training data as citations, and
the licence. The receptive field's one-sided reach (in whole pooling steps) is the output's
halo: programs that tile discard that margin of each tile, as ``segment`` does.

bioimageio.core's blockwise prediction standardises the whole image, then tiles: beyond the
halo it gives temtool's probability. Its whole-image prediction pads by the halo first and
standardises the padded image, so its statistics, and its probabilities, differ slightly.

What ``segment`` does around the network is not in the package: the polarity decision,
annotation masking, resampling to the model's scale, test-time augmentation, the reflected
border and post-processing. The documentation says so, and what input the model expects.

``bioimageio.spec`` writes and validates the package and ``bioimageio.core`` test-runs it (the
``bioimageio`` extra); :func:`export_package` refuses without them rather than write a package
nobody checked.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from temtool.data.io import atomic_dir, atomic_write, check_new_folder, check_writable
from temtool.data.simulate import config_for, simulate_image
from temtool.errors import ParameterError, TemtoolError
from temtool.image.normalise import standardize
from temtool.inference.segmenter import Segmenter
from temtool.model.bundle import NORMALISATIONS, Bundle, load_bundle
from temtool.model.onnx_graph import ONNX_FILE, OPSET, probability_graph
from temtool.model.registry import find_bundle, shipped_models
from temtool.version import __version__

__all__ = ["ExportResult", "export_package", "export_packages", "zoo_available", "STUDY_URL", "MSA_DATA_DOI"]

STUDY_URL = "https://arxiv.org/abs/2204.04250"  # Sytwu, Groschner & Scott (2022), the study
STUDY_TEXT = (
    "Sytwu K., Groschner C., Scott M. C. Understanding the Influence of Receptive Field and "
    "Network Complexity in Neural-Network-Guided TEM Image Analysis. Microscopy and "
    "Microanalysis (2022)."
)
MSA_DATA_DOI = "10.69761/HDTA8338"  # the CC-BY-4.0 micrographs the standard model saw
MSA_DATA_TEXT = (
    "Deep Learning Applications in Microscopy: Segmentation and Tracking. Elemental "
    "Microscopy (2024). Bright-field TEM micrographs with masks, CC-BY-4.0."
)
TEST_SEED = 20221  # the simulated test input's seed (any fixed value: the package is reproducible)
EXTRA = 'pip install "temtool[bioimageio]"'


def zoo_available() -> bool:
    """Whether bioimageio.spec and bioimageio.core can be imported here."""
    try:
        import bioimageio.core  # noqa: F401
        import bioimageio.spec  # noqa: F401
    except ImportError:
        return False
    return True


def _require_zoo() -> None:
    if not zoo_available():
        raise TemtoolError(
            f"exporting a BioImage.IO package needs bioimageio.spec and bioimageio.core: {EXTRA}"
        )


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_package` wrote and how the package's own test went."""

    bundle: str
    package: str  # the folder or .zip written
    status: str  # bioimageio.core's test: "passed" (anything else is not written)
    input_px: tuple[int, int]  # the test input's size
    halo_px: int
    max_difference: float  # largest |package output - temtool's probability| on the test input


def _check_exportable(b: Bundle) -> None:
    if b.normalisation not in NORMALISATIONS:
        raise TemtoolError(f"{b.path}: normalisation {b.normalisation!r} has no BioImage.IO preprocessing")
    why = b.onnx_problem()
    if why is not None:
        raise TemtoolError(f"{b.path}: cannot be exported: {why}")
    if b.arch.n_classes != 2:
        raise TemtoolError(
            f"{b.path}: {b.arch.n_classes} output classes; the package describes particle/background"
        )


def _test_image(b: Bundle) -> np.ndarray:
    """A simulated micrograph the model is made for: HRTEM at the bundle's pixel size,
    bright-field with particles in the middle of the trained size range."""
    if b.regime == "hrtem":
        cfg, size = config_for("hrtem", pixel_size_nm=b.pixel_size_nm or 0.02), 512
    else:
        diameter_nm = 20.0
        if b.diameter_range_px:
            lo, hi = b.diameter_range_px
            px = diameter_nm / math.sqrt(lo * hi)
        else:
            px = b.pixel_size_nm or 0.12
        cfg, size = config_for("standard", pixel_size_nm=px), 256
    return simulate_image(cfg, size=size, seed=TEST_SEED).image.astype(np.float32)


def _cover(image: np.ndarray, prob: np.ndarray, path: Path) -> None:
    """The input and the particle probability side by side (2:1, as the zoo shows covers)."""
    from PIL import Image

    lo, hi = np.percentile(image, (0.5, 99.5))
    grey = np.clip((image - lo) / max(hi - lo, 1e-12), 0, 1)
    both = np.concatenate([grey, np.clip(prob, 0, 1)], axis=1)
    Image.fromarray((both * 255).round().astype(np.uint8)).save(path)


def _scalar_scores(test: dict, prefix: str = "") -> list[tuple[str, object]]:
    """The numbers of a bundle's test record, nested keys joined (per-image lists left out)."""
    out = []
    for k, v in test.items():
        if isinstance(v, dict):
            out += _scalar_scores(v, f"{prefix}{k}.")
        elif isinstance(v, (int, float, str)) and not isinstance(v, bool):
            out.append((f"{prefix}{k}", v))
    return out


def _documentation(b: Bundle, halo_px: int, min_px: int) -> str:
    meta = b.metadata
    arch = b.arch
    test = (meta.get("metrics") or {}).get("test") or {}
    lines = [
        f"# temtool ResUNet ({b.regime or 'unknown regime'}): nanoparticles in TEM micrographs",
        "",
        "A residual UNet from [temtool](https://pypi.org/project/temtool/), after Sytwu, Groschner & "
        "Scott (2022), that gives the probability that each pixel belongs to a nanoparticle.",
        "",
        "## Input",
        "",
        "- One grey micrograph, particles **darker** than the background (bright-field TEM). "
        "Invert HAADF-STEM, dark-field or SEM images with bright particles first.",
    ]
    if b.diameter_range_px:
        lo, hi = b.diameter_range_px
        lines.append(
            f"- Particles {lo:g} to {hi:g} px across (resample the micrograph so they are; "
            "temtool's `segment` does this itself)."
        )
    if b.pixel_size_nm:
        lines.append(f"- Pixel size {b.pixel_size_nm:g} nm (resample other micrographs to it).")
    lines += [
        f"- Height and width multiples of {arch.pool_product} px, at least {min_px} px.",
        "- Preprocessing in the package: per-image standardisation (mean 0, standard deviation 1), "
        "as in training.",
        "",
        "## Output",
        "",
        "- `probability`: the particle probability (softmax of the two class logits), 0 to 1. "
        "Threshold at 0.5 for a mask.",
        f"- Halo {halo_px} px: the network's one-sided receptive-field reach ({b.reach_px} px) "
        "in whole pooling steps. Within that distance "
        "of a tile's edge the output saw zero padding, so tiled prediction should discard it.",
        "- With bioimageio.core, predict blockwise (`blocksize_parameter=0`): it standardises the "
        "whole image, then tiles, and matches temtool beyond the halo. Its whole-image prediction "
        "standardises the image padded by the halo, which shifts the probabilities.",
        "",
        "## Network",
        "",
        f"- Depth {arch.depth}, pools {','.join(map(str, arch.pools))}, filters "
        f"{','.join(map(str, arch.filters))}, {meta.get('params', '?')} parameters.",
        f"- Receptive field {b.rf_px} px (study convention), exact {b.exact_rf_px} px.",
        f"- Training data: {(meta.get('data') or {}).get('path', 'not recorded')}.",
    ]
    scores = _scalar_scores(test)
    if scores:
        lines += ["", "## Scores recorded in the bundle (its test data)", ""]
        lines += [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in scores]
    lines += [
        "",
        "## What temtool's `segment` adds",
        "",
        "temtool decides the polarity per image, masks burned-in scale bars and labels, resamples "
        "to the model's scale, can average eight flips and rotations (TTA), pads the micrograph by "
        "reflection, and turns the mask into counted and measured particles. This package is the "
        "network alone with its preprocessing.",
        "",
        "## Licence and citations",
        "",
        "Weights MIT, like temtool. Cite the study (Sytwu, Groschner & Scott 2022)"
        + (
            " and the CC-BY-4.0 micrographs it was fine-tuned on (DOI 10.69761/HDTA8338)."
            if (meta.get("data") or {}).get("real_train")
            else "."
        ),
        "",
        f"Exported by temtool {__version__}.",
    ]
    return "\n".join(lines) + "\n"


def _describe(b: Bundle, folder: Path, halo_px: int, min_px: int, name: str):
    """The spec 0.5 model description of the files in ``folder``."""
    import bioimageio.spec.model.v0_5 as v

    # the pixel size goes into the config and the documentation, not the axes: bioimageio.core
    # 0.11 derives an output size from input size x scale / scale and floors it (112 px at
    # 0.02152 nm becomes 111 px), so a calibrated axis fails its own test
    step = b.arch.pool_product
    in_axes = [
        v.BatchAxis(),
        v.SpaceInputAxis(id=v.AxisId("y"), size=v.ParameterizedSize(min=min_px, step=step)),
        v.SpaceInputAxis(id=v.AxisId("x"), size=v.ParameterizedSize(min=min_px, step=step)),
        v.ChannelAxis(channel_names=[v.Identifier("intensity")]),
    ]
    out_axes = [
        v.BatchAxis(),
        *(
            v.SpaceOutputAxisWithHalo(
                id=v.AxisId(a),
                size=v.SizeReference(tensor_id=v.TensorId("image"), axis_id=v.AxisId(a)),
                halo=halo_px,
            )
            for a in ("y", "x")
        ),
        v.ChannelAxis(channel_names=[v.Identifier("particle")]),
    ]
    cite = [v.CiteEntry(text=STUDY_TEXT, url=v.HttpUrl(STUDY_URL))]
    if (b.metadata.get("data") or {}).get("real_train"):
        cite.append(v.CiteEntry(text=MSA_DATA_TEXT, doi=v.Doi(MSA_DATA_DOI)))
    return v.ModelDescr(
        name=name,
        description=(
            f"Residual UNet ({b.regime or 'TEM'}) giving the nanoparticle probability per pixel of a "
            "transmission electron micrograph; particles darker than the background."
        ),
        authors=[v.Author(name="temtool developers")],
        cite=cite,
        license=v.LicenseId("MIT"),
        documentation=v.FileDescr(source=folder / "README.md"),
        covers=[v.FileDescr(source=folder / "cover.png")],
        tags=["electron-microscopy", "tem", "nanoparticles", "semantic-segmentation", "unet", "2d", "onnx"],
        version=__version__,
        inputs=[
            v.InputTensorDescr(
                id=v.TensorId("image"),
                description="grey micrograph, particles darker than the background",
                axes=in_axes,
                test_tensor=v.FileDescr(source=folder / "test_input.npy"),
                data=v.IntervalOrRatioDataDescr(type="float32"),
                preprocessing=[
                    v.ZeroMeanUnitVarianceDescr(
                        kwargs=v.ZeroMeanUnitVarianceKwargs(axes=[v.AxisId("y"), v.AxisId("x")])
                    )
                ],
            )
        ],
        outputs=[
            v.OutputTensorDescr(
                id=v.TensorId("probability"),
                description="particle probability",
                axes=out_axes,
                test_tensor=v.FileDescr(source=folder / "test_output.npy"),
                data=v.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
            )
        ],
        weights=v.WeightsDescr(onnx=v.OnnxWeightsDescr(source=folder / "model.onnx", opset_version=OPSET)),
        config={
            "temtool": {
                "architecture": b.arch.to_dict(),
                "regime": b.regime,
                "rf_px": b.rf_px,
                "exact_rf_px": b.exact_rf_px,
                "reach_px": b.reach_px,
                "pixel_size_nm": b.pixel_size_nm,
                "particle_diameter_px": list(b.diameter_range_px) if b.diameter_range_px else None,
                "polarity": "particles darker than the background",
                "temtool_version": __version__,
            }
        },
    )


def _package_test(source) -> tuple[str, str]:
    """bioimageio.core's own test of a package (validation, then the test input through the
    model): its status and, when it did not pass, the first error."""
    from bioimageio.core import test_model

    summary = test_model(source)
    if summary.status == "passed":
        return "passed", ""
    errors = [e for d in summary.details for e in d.errors]
    first = f"{errors[0].loc}: {errors[0].msg}" if errors else "no detail"
    return str(summary.status), first


def _check_out(out: Path, overwrite: bool) -> None:
    """``out`` may be written: absent, an empty folder, or ``overwrite``; a .zip's folder writable."""
    if out.suffix.lower() == ".zip":
        if out.is_dir():
            raise TemtoolError(f"{out}: is a folder; a .zip package needs a file name")
        if out.exists() and not overwrite:
            raise ParameterError("out", f"{out} exists; choose another name or pass --overwrite")
        check_writable(out.parent, "out")
        return
    if out.exists() and not out.is_dir():
        raise ParameterError("out", f"{out} is a file; name a folder or a .zip")
    check_new_folder(out, overwrite, "out")


def export_package(
    bundle, out: str | os.PathLike, name: str | None = None, overwrite: bool = False
) -> ExportResult:
    """Write ``bundle`` (a :class:`~temtool.model.bundle.Bundle` or its folder) as a BioImage.IO
    model package at ``out``: a ``.zip`` when ``out`` ends so, else a folder. The package is
    built in a temporary place, tested by bioimageio.core, and only then moved to ``out``
    (an existing one only with ``overwrite``): a package that does not pass is never written."""
    _require_zoo()
    from bioimageio.spec import save_bioimageio_package, save_bioimageio_package_as_folder

    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    _check_exportable(b)
    out = Path(out)
    _check_out(out, overwrite)
    step = b.arch.pool_product
    # the reach, rounded up to whole pooling steps: bioimageio.core's blocks add the halo on
    # each side, and the network needs sizes in whole steps
    halo_px = step * math.ceil(b.reach_px / step)
    min_px = 2 * halo_px + step  # one step of output beyond the halo; whole steps, as the halo
    image = _test_image(b)
    # temtool's probability of the test input: the network on the standardised image, one pass
    seg = Segmenter.from_bundle(b, runtime="onnx")
    expected = seg.forward(standardize(image)[None])[0]

    with tempfile.TemporaryDirectory(prefix="temtool-export-") as t:
        work = Path(t) / "files"
        work.mkdir()
        (work / "model.onnx").write_bytes(probability_graph(b.path / ONNX_FILE))
        np.save(work / "test_input.npy", image[None, :, :, None])
        np.save(work / "test_output.npy", expected[None, :, :, None].astype(np.float32))
        _cover(image, expected, work / "cover.png")
        (work / "README.md").write_text(_documentation(b, halo_px, min_px))
        stem = Path(b.path).name
        regime = b.regime or "TEM"
        model_name = name or (
            f"temtool ResUNet {regime}" if stem == regime else f"temtool ResUNet {stem} ({regime})"
        )
        descr = _describe(b, work, halo_px, min_px, model_name[:120])
        status, why = _package_test(descr)
        if status != "passed":
            raise TemtoolError(f"{b.path}: the package did not pass bioimageio's test ({status}): {why}")
        if out.suffix.lower() == ".zip":
            built = Path(t) / "package.zip"
            save_bioimageio_package(descr, output_path=built)
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(out, lambda p: shutil.copyfile(built, p))
        else:
            with atomic_dir(out, replace=overwrite) as tmp:
                save_bioimageio_package_as_folder(descr, output_path=tmp)
    max_diff = _check_written(out, image, expected)
    return ExportResult(str(b.path), str(out), status, image.shape, halo_px, max_diff)


def _check_written(out: Path, image: np.ndarray, expected: np.ndarray) -> float:
    """The written package's weights run on the test input with its preprocessing, against
    temtool's probability: the largest difference (the package says what temtool computes)."""
    import onnxruntime as ort

    if out.suffix.lower() == ".zip":
        import zipfile

        with zipfile.ZipFile(out) as z:
            data = z.read("model.onnx")
    else:
        data = (out / "model.onnx").read_bytes()
    x = (image - image.mean()) / (image.std() + 1e-6)  # the package's zero_mean_unit_variance
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(["probability"], {"image": x[None, :, :, None].astype(np.float32)})[0][0, :, :, 0]
    return float(np.abs(got - expected).max())


def _resolve(name: str | os.PathLike) -> Bundle:
    """A shipped model's name (``standard``, ``hrtem``) or a bundle folder, loaded."""
    path = find_bundle(name)
    if path is None:
        raise TemtoolError(
            f"{name}: neither a shipped model ({', '.join(shipped_models())}) nor a bundle folder "
            "(no bundle.json)"
        )
    return load_bundle(path)


def export_packages(
    bundles: list[str | os.PathLike], out: str | os.PathLike, overwrite: bool = False
) -> list[ExportResult]:
    """:func:`export_package` for each of ``bundles`` (shipped names or folders): one bundle
    is written at ``out``; several go into the folder ``out`` as ``NAME.zip``. Every bundle is
    checked before anything is written, so a bundle that cannot be exported writes nothing."""
    if not bundles:
        raise TemtoolError("name at least one bundle to export")
    _require_zoo()
    loaded = [_resolve(b) for b in bundles]
    for b in loaded:
        _check_exportable(b)
    out = Path(out)
    if len(loaded) == 1:
        return [export_package(loaded[0], out, overwrite=overwrite)]
    names = [Path(b.path).name for b in loaded]
    if len(set(names)) < len(names):
        raise TemtoolError(f"two bundles share a folder name ({', '.join(names)}): export them one at a time")
    if out.suffix.lower() == ".zip":
        raise TemtoolError(f"{out}: several bundles go into a folder (one NAME.zip each), not one .zip")
    targets = [out / f"{n}.zip" for n in names]
    for t in targets:
        _check_out(t, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    return [export_package(b, t, overwrite=overwrite) for b, t in zip(loaded, targets)]
