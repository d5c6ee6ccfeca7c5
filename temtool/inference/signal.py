"""Segmenting a HyperSpy or RosettaSciIO signal in a notebook: :func:`segment_signal`.

A 2-D signal (or a stack of them, frame by frame) goes through the same stages as a file in
``temtool segment`` (:func:`temtool.inference.pipeline.infer`, then
:func:`temtool.inference.pipeline.particles_of`), with the pixel size taken from its signal
axes (``scale`` and ``units``: nm, µm, Å, ...). Nothing is written to disk: the labels, the
probability and the particle table come back, sizes in nm when the axes are calibrated.

Accepted: a HyperSpy signal (anything with ``axes_manager`` and ``data``, lazy ones too), or
what RosettaSciIO's readers return (a dict with ``data`` and ``axes``, or a list holding one).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from temtool.data.io import Micrograph, pixel_size_from_axes, unit_to_nm
from temtool.errors import TemtoolError
from temtool.inference.choice import ModelChooser
from temtool.inference.measure import interior_diameters
from temtool.inference.pipeline import SegmentOptions, infer, particles_of
from temtool.inference.segmenter import Segmenter

__all__ = ["SignalSegmentation", "signal_frames", "segment_signal", "segment_image"]


@dataclass
class SignalSegmentation:
    """What :func:`segment_signal` returns.

    ``labels`` and ``probability`` have the signal's shape: ``(H, W)``, or ``(N, H, W)`` for a
    stack, and so has ``uncertainty`` with ``tta``. ``particles``: one row per particle (sizes
    in nm with a calibrated signal, the column names say the unit), with a ``frame`` column for
    a stack; ``pandas.DataFrame(result.particles)`` makes a table. ``frames``: per frame, the
    count, the mean diameter, the model, the polarity and the notes. ``labels_signal``: for a
    HyperSpy input, the labels as a HyperSpy signal with the input's axes (None otherwise)."""

    labels: np.ndarray
    probability: np.ndarray
    particles: list[dict]
    uncertainty: np.ndarray | None  # with tta: the spread of the 8 flipped and rotated predictions
    pixel_size_nm: float | None
    pixel_size_source: str | None  # "metadata" (the signal's axes), "option", "lattice", or None
    frames: list[dict] = field(default_factory=list)
    labels_signal: object | None = None


def _hyperspy_axes(signal) -> list[dict]:
    """The axes of a HyperSpy signal as RosettaSciIO axis dicts, in array order."""
    am = signal.axes_manager
    axes = list(am.as_dictionary().values())
    for ax in am.signal_axes:
        if not getattr(ax, "is_uniform", True):
            raise TemtoolError(f"signal axis {ax.name!r} is not uniform: temtool needs evenly spaced pixels")
    return axes


def signal_frames(signal) -> tuple[np.ndarray, float | None, list[str], bool]:
    """The image data of a signal: ``(N, H, W)`` float32 frames, the pixel size (nm) from its
    signal axes, notes on the calibration, and whether it is a stack (N frames) or one image."""
    if isinstance(signal, list):
        if len(signal) != 1:
            raise TemtoolError(f"a list of {len(signal)} signals: pass one of them")
        signal = signal[0]
    if hasattr(signal, "axes_manager"):
        am = signal.axes_manager
        if am.signal_dimension != 2:
            raise TemtoolError(
                f"a signal of dimension {am.signal_dimension}: temtool segments 2-D images (Signal2D)"
            )
        if am.navigation_dimension > 1:
            raise TemtoolError(
                f"navigation shape {am.navigation_shape}: temtool takes one image or a stack along "
                "one axis; pick one with signal.inav[...]"
            )
        axes, data = _hyperspy_axes(signal), signal.data
    elif isinstance(signal, dict) and "data" in signal:
        axes, data = list(signal.get("axes", [])), signal["data"]
        shown = [a for a in axes if not a.get("navigate", False)]
        if np.ndim(data) > 3:
            raise TemtoolError(f"shape {np.shape(data)}: temtool takes one image or a stack along one axis")
        if len(axes) != np.ndim(data) or len(shown) != 2:
            raise TemtoolError(
                f"a RosettaSciIO signal of shape {np.shape(data)} with {len(shown)} signal axes: "
                "temtool segments 2-D images"
            )
    else:
        raise TemtoolError(
            f"a {type(signal).__name__}: pass a HyperSpy signal or a RosettaSciIO signal dict (data, axes)"
        )
    data = np.asarray(data)  # a lazy (dask) signal is computed here
    if np.iscomplexobj(data) or data.dtype.names is not None:
        raise TemtoolError(f"data of type {data.dtype}: temtool segments real-valued grey images")
    notes: list[str] = []
    px = pixel_size_from_axes(axes[-2:], "signal")
    if px is None:
        units = {str(a.get("units")) for a in axes[-2:]}
        known = [u for u in units if unit_to_nm(u) is not None]
        notes.append(
            f"signal axes in {', '.join(sorted(units))}: not a length temtool knows, sizes in px"
            if not known
            else "signal axes not calibrated: sizes in px"
        )
    stack = data.ndim == 3
    frames = data.astype(np.float32)
    return (frames if stack else frames[None]), px, notes, stack


def segment_signal(
    signal,
    model: str | Path | Segmenter | None = None,
    options: SegmentOptions | None = None,
    tta: bool = False,
    **option_fields,
) -> SignalSegmentation:
    """Segment a HyperSpy/RosettaSciIO 2-D signal, or a stack of them frame by frame.

    ``model``: a bundle folder, a :class:`~temtool.inference.segmenter.Segmenter`, or None
    (``segment``'s default: the last trained model, else the shipped model for what each frame
    shows). ``options`` or keyword fields of :class:`~temtool.inference.pipeline.SegmentOptions`
    (``pixel_size_nm`` overrides the signal's calibration, ``polarity``, ``post``, ...).
    ``tta``: average the 8 flips and rotations, and return their spread as ``uncertainty``.
    """
    frames, px, notes, stack = signal_frames(signal)
    title = _title(signal)
    result = _segment_frames(frames, px, notes, model, options, tta, title, option_fields)
    if not stack:
        _one_image(result)
    if hasattr(signal, "axes_manager"):
        result.labels_signal = _labels_signal(signal, result.labels, title)
    return result


def segment_image(
    image: np.ndarray,
    pixel_size_nm: float | None = None,
    model: str | Path | Segmenter | None = None,
    options: SegmentOptions | None = None,
    tta: bool = False,
    title: str = "image",
    pixel_size_source: str | None = None,
    **option_fields,
) -> SignalSegmentation:
    """:func:`segment_signal` for a 2-D array and its pixel size (nm, or None: unknown), which
    came from ``pixel_size_source`` ("metadata", "option", ...; reported as given)."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise TemtoolError(f"{title}: an image of shape {image.shape}; temtool segments 2-D grey images")
    if np.iscomplexobj(image):
        raise TemtoolError(f"{title}: complex data; temtool segments real-valued grey images")
    notes = [] if pixel_size_nm else ["pixel size unknown: sizes in px"]
    r = _segment_frames(
        image.astype(np.float32)[None], pixel_size_nm, notes, model, options, tta, title, option_fields
    )
    _one_image(r)
    if pixel_size_nm and pixel_size_source and r.pixel_size_source == "metadata":
        r.pixel_size_source = pixel_size_source
    return r


def _one_image(r: SignalSegmentation) -> None:
    """A one-frame result as one image: ``(H, W)`` arrays, no frame column."""
    r.labels, r.probability = r.labels[0], r.probability[0]
    r.uncertainty = None if r.uncertainty is None else r.uncertainty[0]
    for row in r.particles:
        del row["frame"]


def _segment_frames(frames, px, notes, model, options, tta, title, option_fields) -> SignalSegmentation:
    """Each frame through segment's stages (:func:`~temtool.inference.pipeline.infer`, then
    :func:`~temtool.inference.pipeline.particles_of`)."""
    options = options or SegmentOptions()
    if option_fields:
        options = replace(options, **option_fields)
    if isinstance(model, Segmenter):
        seg = replace(model, tta=True) if tta and not model.tta else model
    else:
        seg = ModelChooser(model, tta=tta)
    where = Path(f"<{title or 'signal'}>")
    labels = np.zeros(frames.shape, np.int32)
    prob = np.zeros(frames.shape, np.float32)
    spread = np.zeros(frames.shape, np.float32) if tta else None
    rows_all, summaries = [], []
    r = None
    for i, image in enumerate(frames):
        r = infer(where, Micrograph(image, px, where, tuple(notes)), seg, options)
        _, _, lab, rows = particles_of(r.prob, r.pixel_size_nm, options.post, r.boundary)
        labels[i], prob[i] = lab, r.prob
        if spread is not None and r.spread is not None:
            spread[i] = r.spread
        unit = "nm" if r.pixel_size_nm else "px"
        d = interior_diameters(rows, unit)
        rows_all += [{"frame": i, **row} for row in rows]
        summaries.append(
            {
                "frame": i,
                "particles": len(rows),
                "diameter_mean": float(np.mean(d)) if d else None,
                "diameter_unit": unit,
                "model": r.model,
                "polarity": r.polarity,
                "notes": list(r.notes),
            }
        )
    return SignalSegmentation(
        labels=labels,
        probability=prob,
        particles=rows_all,
        uncertainty=spread,
        pixel_size_nm=r.pixel_size_nm,
        pixel_size_source=r.pixel_size_source,
        frames=summaries,
    )


def _title(signal) -> str:
    try:
        if hasattr(signal, "metadata"):
            return str(signal.metadata.General.title)
        if isinstance(signal, dict):
            return str(signal.get("metadata", {}).get("General", {}).get("title", ""))
    except AttributeError:
        pass
    return ""


def _labels_signal(signal, labels: np.ndarray, title: str):
    """The labels as a HyperSpy Signal2D with the signal's axes (its calibration kept)."""
    from hyperspy.api import signals

    out = signals.Signal2D(labels, axes=_hyperspy_axes(signal))
    out.metadata.General.title = f"particles of {title}" if title else "particles"
    return out
