"""The segmenter: a trained ResUNet's particle probability for micrographs of any size.

A :class:`Segmenter` is made from a model bundle (:meth:`Segmenter.from_bundle`) and reads
everything it needs from it: the normalisation, the training pixel size (images are resampled
to it and back) and the one-sided reach of the receptive field (the context each tile keeps,
:mod:`temtool.inference.tiling`). ``segment``, ``evaluate``, the scores written into bundles
and the benchmarks all go through it: temtool has one inference path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from temtool.errors import ParameterError, TemtoolError
from temtool.image.dihedral import dihedral, tta_members
from temtool.image.normalise import standardize
from temtool.image.resample import RESAMPLE_TOLERANCE, pixel_size_scale, resample
from temtool.inference.compiled import CompiledForward, is_keras_model, predict_tiled_on_device
from temtool.inference.measure import typical_diameter_px
from temtool.inference.tiling import DEFAULT_BORDER_PX, TileGeometry, predict_tiled, predict_whole
from temtool.model.architecture import Architecture
from temtool.model.bundle import Bundle, load_bundle
from temtool.model.receptive_field import tile_reach_px


@dataclass
class Segmenter:
    """Particle probability maps for micrographs of any size from a trained ResUNet.

    Build it with :meth:`from_bundle`. ``margin_px`` enlarges the context each tile keeps (it
    can never go below the model's one-sided reach); ``tta`` averages the 8 dihedral
    transforms.
    """

    model: object
    arch: Architecture
    reach_px: int
    pixel_size_nm: float | None = None  # the model's training pixel size
    normalisation: str = "per_image_standardize"
    batch_size: int = 4
    tta: bool = False
    margin_px: int | None = None
    # the largest tile side: bounds the network's working memory for any micrograph size
    # (the trade-off against speed is measured in benchmarks/RESULTS.md)
    max_tile_px: int = 1280
    border_px: int = DEFAULT_BORDER_PX  # reflected border around the image (temtool.inference.tiling)
    diameter_range_px: tuple[float, float] | None = None  # particle sizes the model was trained on
    name: str = ""
    runtime: str = "keras"  # what runs the network: "keras", or "onnx" (temtool.model.onnx_graph)
    regime: str | None = None  # what the model was trained on: "standard", "hrtem" (None: unknown)

    def __post_init__(self):
        if self.batch_size < 1:
            raise ParameterError("batch_size", f"must be >= 1, got {self.batch_size}")
        if self.margin_px is not None and self.margin_px < self.reach_px:
            raise ParameterError(
                "margin_px",
                f"{self.margin_px} is smaller than the model's one-sided receptive-field reach "
                f"({self.reach_px} px): tiles would see less context than the model needs",
            )
        self.geometry = TileGeometry.for_model(
            self.arch.pool_product, self.reach_px, self.margin_px, self.max_tile_px, self.border_px
        )

    @classmethod
    def from_bundle(cls, bundle, runtime: str = "auto", **kw) -> Segmenter:
        """A segmenter for a bundle (a :class:`~temtool.model.bundle.Bundle` or its folder);
        ``runtime``: see :meth:`~temtool.model.bundle.Bundle.inference_model`."""

        b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        model, runtime = b.inference_model(runtime)
        return cls(
            model,
            b.arch,
            b.reach_px,
            b.pixel_size_nm,
            normalisation=b.normalisation,
            diameter_range_px=b.diameter_range_px,
            name=str(b.path),
            runtime=runtime,
            regime=b.regime,
            **kw,
        )

    @classmethod
    def for_model(cls, model, arch: Architecture, pixel_size_nm: float | None = None, **kw) -> Segmenter:
        """A segmenter for a model in memory (a Keras model being trained, or anything with
        ``predict_on_batch``) of architecture ``arch`` at ``pixel_size_nm``: the tiles keep
        the context :func:`temtool.model.receptive_field.tile_reach_px`, as a bundle's would."""
        return cls(model, arch, tile_reach_px(arch), pixel_size_nm, **kw)

    # ----------------------------------------------------------------- network passes
    @property
    def channels(self) -> tuple[str, ...]:
        """What :meth:`forward` returns per pixel, in order: the particle probability, its TTA
        spread (with ``tta``) and, for an instance-aware network, the boundary probability.
        One channel comes back as ``(N, h, w)``, several as ``(N, C, h, w)``."""
        return (
            ("particle",)
            + (("spread",) if self.tta else ())
            + (("boundary",) if self.arch.instance_aware else ())
        )

    def forward(self, tiles: np.ndarray) -> np.ndarray:
        """:attr:`channels` of a batch of standardised tiles ``(N, h, w)``. The particle
        probability is the sigmoid of the logit difference for two classes (the softmax),
        1 - P(background) for an instance-aware network; with TTA, the mean over the 8
        dihedral transforms and their standard deviation (of the particle probability). On
        the Keras runtime all of it runs compiled on the backend's device
        (:class:`temtool.inference.compiled.CompiledForward`); on ONNX Runtime the transforms are host
        array views around each network call (so is any object with a Keras-like
        ``predict_on_batch``)."""
        stage = self._device_stage()
        if stage is not None:
            return stage(tiles)
        if not self.tta:
            return self._probability(tiles)

        ks = tta_members(self.tta)
        total, square = None, np.zeros(tiles.shape, np.float32)
        for k in ks:
            p = dihedral(self._probability(dihedral(tiles, k, axes=(-2, -1))), k, axes=(-2, -1), inverse=True)
            total = p.copy() if total is None else total + p
            part = p[:, 0] if p.ndim == 4 else p
            square += part * part
        mean = total / len(ks)
        part = mean[:, 0] if mean.ndim == 4 else mean
        sd = np.sqrt(np.maximum(square / len(ks) - part * part, 0))
        return np.stack([part, sd, *([mean[:, 1]] if mean.ndim == 4 else [])], axis=1)

    def _probability(self, tiles: np.ndarray) -> np.ndarray:
        """The network's particle probability of ``(N, h, w)`` tiles on the host runtime, and
        for an instance-aware network its boundary probability: ``(N, 2, h, w)``. Two classes:
        the sigmoid of the logit difference, computed in place (no temporary per step)."""
        x = np.ascontiguousarray(tiles[..., None], np.float32)
        logits = np.asarray(self.model.predict_on_batch(x), np.float32)
        if logits.shape[-1] == 3:
            e = np.exp(logits - logits.max(axis=-1, keepdims=True))
            e /= e.sum(axis=-1, keepdims=True)
            return np.stack([1 - e[..., 0], e[..., 2]], axis=1)
        d = np.subtract(logits[..., 1], logits[..., 0])
        np.clip(d, -80, 80, out=d)
        np.negative(d, out=d)
        np.exp(d, out=d)
        d += 1
        return np.reciprocal(d, out=d)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Probability ``(H, W)`` float32 of a standardised image at the model's scale, tiled;
        equal to :meth:`predict_whole` everywhere. With several :attr:`channels`
        ``(C, H, W)``, e.g. with TTA mean and spread.
        On the Keras runtime tiles are cut, run and blended on the backend's device."""
        return self.predict_tiled(image)[0]

    def predict_tiled(self, image: np.ndarray) -> tuple[np.ndarray, dict]:
        """:meth:`predict` and the tiling summary (:func:`temtool.inference.tiling.predict_tiled`)."""
        stage = self._device_stage()
        if stage is not None:
            return predict_tiled_on_device(stage.on_device, image, self.geometry, self.batch_size)
        return predict_tiled(self.forward, image, self.geometry, self.batch_size)

    def _device_stage(self):
        """The compiled model stage of a Keras model on the Keras runtime (built once per TTA
        setting), or None: ONNX Runtime and stand-ins with ``predict_on_batch`` use the host."""
        if self.runtime != "keras" or not is_keras_model(self.model):
            return None
        if getattr(self, "_compiled", None) is None or self._compiled.tta != self.tta:
            self._compiled = CompiledForward(self.model, self.tta)
        return self._compiled

    def predict_whole(self, image: np.ndarray) -> np.ndarray:
        """The same in one pass over the whole padded image (the reference for tiling)."""
        return predict_whole(self.forward, image, self.geometry)

    # ----------------------------------------------------------------- micrographs
    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """The bundle's normalisation."""
        if self.normalisation != "per_image_standardize":
            raise TemtoolError(f"{self.name}: unknown normalisation {self.normalisation!r}")
        return standardize(image)

    def _resampled(self, x: np.ndarray, scale: float) -> tuple[np.ndarray, dict]:
        """:meth:`predict_tiled` of ``x`` resampled by ``scale`` (on the resampled grid)."""
        if scale == 1:
            return self.predict_tiled(x)
        shape = (max(8, round(x.shape[0] * scale)), max(8, round(x.shape[1] * scale)))
        if shape[0] * shape[1] > 2**31:
            raise TemtoolError(
                f"resampling {x.shape[1]}x{x.shape[0]} px by x{scale:.3g} would make "
                f"{shape[1]}x{shape[0]} px; check the pixel size"
            )
        return self.predict_tiled(resample(x, shape))

    def _at_scale(
        self, x: np.ndarray, scale: float, made: tuple[np.ndarray, dict] | None = None
    ) -> tuple[np.ndarray, dict]:
        """:meth:`predict_tiled` of ``x`` resampled by ``scale`` (or ``made``, that prediction
        already made), back on ``x``'s grid."""
        out, tiling = self._resampled(x, scale) if made is None else made
        if scale == 1:
            return out, tiling
        if out.ndim == 3:
            return np.stack([resample(o, x.shape) for o in out]), tiling
        return resample(out, x.shape), tiling

    def _scale_by_particles(self, x: np.ndarray) -> tuple[float, tuple[np.ndarray, dict] | None, str | None]:
        """Resampling factor from the particles' typical size (see :meth:`scale_for`), the
        prediction at that factor (on the resampled grid) if it was already made, and a note."""

        lo, hi = self.diameter_range_px
        target = float(np.sqrt(lo * hi))
        look = min(1.0, 512 / max(x.shape))  # a quick first look at large images
        made: dict[float, tuple[np.ndarray, dict]] = {}
        d, want = None, 1.0
        for _ in range(4):
            if look not in made:
                made[look] = self._resampled(x, look)
            p = made[look][0]
            d_here = typical_diameter_px((p[0] if p.ndim == 3 else p) > 0.5)
            if d_here is None and look < 1:  # too small to see at this scale: look closer
                look = min(1.0, 4 * look)
                continue
            if d_here is None:
                break
            d = d_here / look  # in px of x
            want = 1.0 if lo <= d <= hi else target / d  # native when the model knows the size
            if abs(want / look - 1) <= RESAMPLE_TOLERANCE or want == 1.0:
                break
            look = want  # predict there and check the size again
        if d is None:
            return 1.0, made.get(1.0), "no particles found to estimate their size: no resampling"
        scale = 1.0 if abs(want - 1) <= RESAMPLE_TOLERANCE else want
        note = None
        if scale != 1.0:
            note = f"particles ~{d:.0f} px across: resampled x{scale:.3g} to the model's {target:.0f} px"
        return scale, made.get(scale), note

    def scale_for(
        self, x: np.ndarray, pixel_size_nm: float | None
    ) -> tuple[float, tuple[np.ndarray, dict] | None, str | None]:
        """The resampling factor that brings a (normalised) micrograph to the model's scale,
        the prediction at that factor if choosing it already made one (on the resampled
        grid), and a note saying how it was chosen.

        A model trained at one pixel size (``pixel_size_nm`` in its bundle) is matched by
        pixel size. A model trained over a range of particle sizes in px
        (``particle_diameter_px``) is matched by the particles themselves, as Cellpose's size
        model does: a first pass finds them and their typical diameter
        (:func:`temtool.inference.measure.typical_diameter_px`) decides; inside the trained range the
        image is used as it is, outside it is resampled to the middle of the range.
        """
        if self.diameter_range_px:
            return self._scale_by_particles(x)
        scale = pixel_size_scale(pixel_size_nm, self.pixel_size_nm)
        if scale != 1.0:
            return scale, None, f"resampled x{scale:.3g} to the model's {self.pixel_size_nm:g} nm/px"
        if pixel_size_nm is None and self.pixel_size_nm:
            return 1.0, None, "pixel size unknown: no resampling (pass --pixel-size)"
        return 1.0, None, None

    def probability(
        self, image: np.ndarray, pixel_size_nm: float | None = None, normalised: bool = False
    ) -> Probability:
        """Particle probability of a micrograph on its own pixel grid (normalised as in
        training unless ``normalised``, resampled to the model's scale and back, see
        :meth:`scale_for`), the TTA spread (with ``tta``), and notes on what was done."""
        x = image if normalised else self.preprocess(image)
        scale, made, note = self.scale_for(x, pixel_size_nm)
        p, tiling = self._at_scale(x, scale, made)
        by_name = dict(zip(self.channels, p)) if p.ndim == 3 else {"particle": p}
        return Probability(
            by_name["particle"],
            by_name.get("spread"),
            [note] if note else [],
            scale,
            tiling,
            by_name.get("boundary"),
        )


class Probability(NamedTuple):
    """What :meth:`Segmenter.probability` returns."""

    prob: np.ndarray  # (H, W) float32, particle probability
    spread: np.ndarray | None  # (H, W) float32, standard deviation over TTA members, or None
    notes: list[str]
    scale: float  # resampling factor used (1: none)
    tiling: dict  # how the image was tiled (temtool.inference.tiling.predict_tiled)
    boundary: np.ndarray | None = None  # (H, W) float32, an instance-aware network's boundary probability
