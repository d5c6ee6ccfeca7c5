"""Which way round a micrograph's contrast is: particles darker than the background (bright-field
TEM) or brighter (HAADF-STEM, dark field, most SEM figures), decided per image.

The models and the threshold look for darker particles; ``segment`` inverts an image decided
``bright`` first. Three cues, each weak alone, decide together:

- ``border``: where the image border's median lies against the Otsu threshold (in units of the
  1-99th percentile range). Micrographs are mostly framed by background, so a bright border
  means dark particles; crowded fields and particles cut by the border blur it.
- ``solidity``: the area-weighted solidity of the Otsu class below the threshold minus that of
  the class above it. Particles are compact and convex, while the background between them is
  not (the gaps of a monolayer are concave), so the particles' class is the more solid one.
- ``network``: the same solidity difference between what the network finds in the image as
  recorded and in the image inverted: a network that learned dark particles finds compact
  objects only the right way round. It costs a second pass of the network, so it is asked only
  when the first two cues are not already sure of dark particles (:data:`SURE_DARK_LOGIT`).

Two logistic rules combine them, P(dark) = sigmoid(w . f + b): :data:`IMAGE_RULE` on the first
two cues, :data:`FULL_RULE` on all three. Bright is decided only when the full rule says so and
the network's own view agrees (its solidity difference below :data:`NETWORK_MARGIN`): inverting a
bright-field micrograph wrecks it, so the network, which knows bright-field TEM well, has a veto.
The rules are fitted on published figures (``examples/fit_polarity.py`` on
``../shared/data/emps-train``, folds grouped by source article, with the shipped ``standard``
model as the network); the fit, the cross-validated accuracy of the whole procedure and its
checks on bright-field sets are in ``benchmarks/results/polarity.json``, and a test keeps the
coefficients here equal to those. Refit when the shipped model changes. The image cues are
computed on the image binned to at most :data:`MAX_SIDE_PX` a side, with burned-in annotations
left out.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

from temtool.image.resample import resample

__all__ = [
    "IMAGE_RULE",
    "FULL_RULE",
    "SURE_DARK_LOGIT",
    "NETWORK_MARGIN",
    "MAX_SIDE_PX",
    "FEATURES",
    "Polarity",
    "polarity_features",
    "network_cue",
    "rule_decision",
    "decide_polarity",
    "invert",
]

MAX_SIDE_PX = 1024
SMOOTH_PX = (1.0, 2.0, 4.0, 8.0)  # the one that separates the two Otsu classes best is used
MIN_REGION_PX = 20  # regions smaller than this do not count towards a class's solidity
FEATURES = ("border", "solidity", "network")
# weights (of FEATURES, in order) and bias of the logistic rules, written by examples/fit_polarity.py
# (benchmarks/results/polarity.json; a test keeps them equal)
IMAGE_RULE = {"weights": (11.4086, 10.1929), "bias": -1.0845}
FULL_RULE = {"weights": (9.3423, 6.2738, 6.4324), "bias": -1.0299}
SURE_DARK_LOGIT = 3.0  # IMAGE_RULE at or above this (P(dark) >= 0.95): dark, without the network cue
NETWORK_MARGIN = 0.05  # bright needs the network's solidity difference below this


class Polarity(NamedTuple):
    """A decision: ``polarity`` (``dark`` or ``bright``), ``p_dark`` (the probability of dark
    particles by the rule that decided), ``features`` (by name; ``network`` only where it was
    asked), ``rule`` (``image`` or ``full``)."""

    polarity: str
    p_dark: float
    features: dict[str, float]
    rule: str = "image"

    @property
    def confidence(self) -> float:
        """The probability of the decided polarity (0.5-1)."""
        return self.p_dark if self.polarity == "dark" else 1.0 - self.p_dark


def invert(image: np.ndarray) -> np.ndarray:
    """The contrast inverted within the image's range (float32): bright particles become dark."""
    x = np.asarray(image, np.float32)
    return np.float32(np.max(x)) + np.float32(np.min(x)) - x


def _binned(image: np.ndarray, drawn: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The image and its kept-pixel mask binned by a whole factor to at most MAX_SIDE_PX a side."""
    x = np.asarray(image, np.float32)
    keep = np.ones(x.shape, bool) if drawn is None else ~np.asarray(drawn, bool)
    k = math.ceil(max(x.shape) / MAX_SIDE_PX)
    if k > 1:
        h, w = (x.shape[0] // k) * k, (x.shape[1] // k) * k
        x = resample(x[:h, :w], (h // k, w // k))
        keep = resample(keep[:h, :w].astype(np.float32), (h // k, w // k)) > 0.999
    return x, keep


def _otsu(values: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(values))


def _separability(v: np.ndarray, t: float) -> float:
    """Otsu's separability of ``v`` split at ``t``: between-class over total variance (0-1)."""
    below = v < t
    w0 = below.mean()
    if w0 in (0.0, 1.0):
        return 0.0
    m0, m1 = v[below].mean(), v[~below].mean()
    return float(w0 * (1 - w0) * (m0 - m1) ** 2 / max(float(v.var()), 1e-12))


def _solidity(mask: np.ndarray) -> float:
    """Area-weighted mean solidity (area / convex-hull area) of the regions of ``mask`` of at
    least MIN_REGION_PX; 0 where there are none."""
    from skimage.measure import label, regionprops

    regions = [r for r in regionprops(label(mask)) if r.area >= MIN_REGION_PX]
    if not regions:
        return 0.0
    area = np.array([r.area for r in regions], float)
    return float((area * np.array([r.solidity for r in regions])).sum() / area.sum())


def polarity_features(image: np.ndarray, drawn: np.ndarray | None = None) -> dict[str, float]:
    """The cues of the module doc for ``image`` (2-D), without the pixels of ``drawn`` (burned-in
    annotations, :func:`temtool.inference.annotations.mask_annotations`)."""
    x, keep = _binned(image, drawn)
    best = None
    for sigma in SMOOTH_PX:
        s = ndi.gaussian_filter(x, sigma)
        v = s[keep] if keep.any() else s.ravel()
        lo, hi = np.percentile(v, [1, 99])
        if hi <= lo:  # flat: no evidence either way
            continue
        t = _otsu(v)
        eta = _separability(v, t)
        if best is None or eta > best[0]:
            best = (eta, s, v, t, float(hi - lo))
    if best is None:
        return {"border": 0.0, "solidity": 0.0}
    _, s, v, t, span = best
    ring = np.zeros(s.shape, bool)
    w = max(4, min(s.shape) // 32)
    ring[:w], ring[-w:], ring[:, :w], ring[:, -w:] = True, True, True, True
    ring &= keep
    border = (float(np.median(s[ring] if ring.any() else v)) - t) / span
    below = (s < t) & keep
    return {"border": border, "solidity": _solidity(below) - _solidity(keep & ~below)}


def network_cue(
    prob_recorded: np.ndarray, prob_inverted: np.ndarray, drawn: np.ndarray | None = None
) -> float:
    """The ``network`` cue: solidity of the network's particles (probability > 0.5) in the image
    as recorded minus in the image inverted, without the pixels of ``drawn``."""
    keep = True if drawn is None else ~np.asarray(drawn, bool)
    return _solidity((np.asarray(prob_recorded) > 0.5) & keep) - _solidity(
        (np.asarray(prob_inverted) > 0.5) & keep
    )


def _logit(rule: dict, f: dict[str, float]) -> float:
    return sum(w * f[n] for w, n in zip(rule["weights"], FEATURES)) + rule["bias"]


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


def rule_decision(
    features: dict[str, float], image_rule: dict | None = None, full_rule: dict | None = None
) -> Polarity:
    """The decision of the module doc from cues already measured (``network`` among them or
    not); ``image_rule``/``full_rule`` default to :data:`IMAGE_RULE`/:data:`FULL_RULE`."""
    image_rule, full_rule = image_rule or IMAGE_RULE, full_rule or FULL_RULE
    z = _logit(image_rule, features)
    if "network" not in features or z >= SURE_DARK_LOGIT:
        p = _sigmoid(z)
        return Polarity("dark" if p >= 0.5 else "bright", p, dict(features), "image")
    p = _sigmoid(_logit(full_rule, features))
    bright = p < 0.5 and features["network"] < NETWORK_MARGIN
    return Polarity("bright" if bright else "dark", p, dict(features), "full")


def decide_polarity(image: np.ndarray, drawn: np.ndarray | None = None, network=None) -> Polarity:
    """Dark or bright particles in ``image`` (see the module doc). ``network(x)``: the
    network's particle probability map of an image ``x``, asked for the image as recorded and
    inverted when the image cues are not sure of dark particles; None decides on the image
    cues alone (:data:`IMAGE_RULE`)."""
    f = polarity_features(image, drawn)
    if network is not None and _logit(IMAGE_RULE, f) < SURE_DARK_LOGIT:
        f["network"] = network_cue(network(image), network(invert(image)), drawn)
    return rule_decision(f)
