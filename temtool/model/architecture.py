"""The one architecture description of temtool, and the residual UNet built from it.

The builder follows Sytwu, Groschner & Scott (2022): per level a residual block then max
pooling (kernel = stride = that level's pool size), one bottleneck block, and a decoder of
nearest-neighbour upsampling by the same factor, concatenation with the skip, and a residual
block; a final 1x1 convolution gives class logits (always float32).

Only Keras layers and ``keras.ops`` are used, so the model runs on the TensorFlow, JAX and
PyTorch backends alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from temtool.errors import ArchitectureError

if TYPE_CHECKING:  # Keras is imported where a model is built or read, not with the description
    import keras

__all__ = [
    "ArchitectureError",
    "Architecture",
    "build_resunet",
    "copy_weights",
    "count_params",
    "parse_int_list",
]


def parse_int_list(text: str | int | Sequence[int], option: str = "value") -> tuple[int, ...]:
    """Parse ``"2,4"``, ``"4"``, ``4`` or ``[2, 4]`` into a tuple of ints."""
    if isinstance(text, int):
        return (text,)
    if isinstance(text, str):
        parts = [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
        try:
            return tuple(int(p) for p in parts)
        except ValueError:
            raise ArchitectureError(
                f"{option}: expected integers separated by commas (e.g. 2,4), got {text!r}"
            ) from None
    return tuple(int(v) for v in text)


@dataclass(frozen=True)
class Architecture:
    """A residual UNet, described once and shared by builder, RF calculator, tuner and bundle.

    Attributes
    ----------
    depth : int
        Number of pooling levels (the study's "number of blocks"): 2 or 4 in the paper.
    pools : tuple of int
        Max-pooling size (kernel = stride) per level, ``depth`` entries, each >= 1.
    filters : tuple of int
        Convolution filters per level plus the bottleneck: ``depth + 1`` entries.
        The study uses (4, 8, 16) for depth 2 and (4, 8, 16, 32, 64) for depth 4.
    kernel_size : int
        Odd side length of the square convolution kernels (3 in the study).
    n_classes : int
        Number of output classes: 2 (the study's: background and particle), or 3 for an
        instance-aware network (background, particle interior, particle boundary; see
        :mod:`temtool.image.labels`), whose boundaries part touching particles.
    """

    depth: int = 2
    pools: tuple[int, ...] = (2, 2)
    filters: tuple[int, ...] = (4, 8, 16)
    kernel_size: int = 3
    n_classes: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "pools", tuple(int(p) for p in self.pools))
        object.__setattr__(self, "filters", tuple(int(f) for f in self.filters))
        if not isinstance(self.depth, int) or self.depth < 1:
            raise ArchitectureError(f"depth must be an integer >= 1, got {self.depth!r}")
        if len(self.pools) != self.depth:
            raise ArchitectureError(
                f"pools has {len(self.pools)} entries but depth is {self.depth}: "
                f"give one pool size for all levels or exactly {self.depth}"
            )
        if any(p < 1 for p in self.pools):
            raise ArchitectureError(f"pool sizes must be >= 1, got {list(self.pools)}")
        if len(self.filters) != self.depth + 1:
            raise ArchitectureError(
                f"filters has {len(self.filters)} entries but depth {self.depth} needs "
                f"{self.depth + 1} (one per level plus the bottleneck); or give one base "
                "number that doubles per level"
            )
        if any(f < 1 for f in self.filters):
            raise ArchitectureError(f"filters must be > 0, got {list(self.filters)}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ArchitectureError(f"kernel_size must be odd and >= 1, got {self.kernel_size}")
        if self.n_classes not in (2, 3):
            raise ArchitectureError(
                f"n_classes must be 2 (background, particle) or 3 (with particle boundaries), "
                f"got {self.n_classes}"
            )

    @classmethod
    def create(
        cls,
        depth: int = 2,
        pool: int | str | Sequence[int] = 2,
        filters: int | str | Sequence[int] = 4,
        kernel_size: int = 3,
        n_classes: int = 2,
    ) -> Architecture:
        """Build a description from convenient arguments.

        ``pool`` is one size for every level or one per level; ``filters`` is either a base
        that doubles per level (4 -> 4, 8, 16, ...) or an explicit list of ``depth + 1``.
        Strings such as ``"2,4"`` are accepted (as typed on the command line).
        """
        pools = parse_int_list(pool, "pool")
        if len(pools) == 1:
            pools = pools * depth
        filt = parse_int_list(filters, "filters")
        if len(filt) == 1:
            filt = tuple(filt[0] * 2**i for i in range(depth + 1))
        return cls(depth=depth, pools=pools, filters=filt, kernel_size=kernel_size, n_classes=n_classes)

    @property
    def instance_aware(self) -> bool:
        """Whether the network also outputs particle boundaries (3 classes)."""
        return self.n_classes == 3

    @property
    def pool_product(self) -> int:
        """Total downsampling factor; image sides must be multiples of it."""
        return math.prod(self.pools)

    def check_input_size(self, height: int, width: int) -> None:
        """Raise :class:`ArchitectureError` unless both sides are multiples of the pools."""
        m = self.pool_product
        bad = [n for n in (height, width) if n % m or n < m]
        if bad:
            raise ArchitectureError(
                f"input size {height}x{width} does not fit pools {list(self.pools)}: height and "
                f"width must be positive multiples of {m} (the product of the pool sizes); "
                f"pad or crop, e.g. to {max(m, height // m * m)}x{max(m, width // m * m)}"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["pools"] = list(self.pools)
        d["filters"] = list(self.filters)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Architecture:
        """The inverse of :meth:`to_dict`; :class:`ArchitectureError` for anything malformed."""
        if not isinstance(d, dict):
            raise ArchitectureError(f"expected an object, got {type(d).__name__}")
        ints = ("depth", "kernel_size", "n_classes")
        lists = ("pools", "filters")
        for k in ints:
            if k in d and (not isinstance(d[k], int) or isinstance(d[k], bool)):
                raise ArchitectureError(f"{k} must be an integer, got {d[k]!r:.40}")
        for k in lists:
            v = d.get(k)
            if not isinstance(v, (list, tuple)) or not all(
                isinstance(x, int) and not isinstance(x, bool) for x in v
            ):
                raise ArchitectureError(f"{k} must be a list of integers, got {v!r:.40}")
        return cls(**{k: (tuple(d[k]) if k in lists else d[k]) for k in (*ints, *lists) if k in d})

    @classmethod
    def of_model(cls, model: keras.Model) -> Architecture:
        """Read the description back from a model built by :func:`build_resunet` (its layer
        names and shapes); ``ValueError`` if the model is not one."""
        import keras

        by_name = {layer.name: layer for layer in model.layers}
        pools = [
            int(layer.pool_size[0]) for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)
        ]
        depth = len(pools)
        names = [f"enc{i}_conv1" for i in range(depth)] + ["bottleneck_conv1", "logits"]
        missing = [n for n in names if n not in by_name]
        if depth == 0 or missing:
            raise ValueError(f"no layer {missing[0] if missing else 'pool0'!r}")
        return cls(
            depth=depth,
            pools=tuple(pools),
            filters=tuple(int(by_name[n].filters) for n in names[:-1]),
            kernel_size=int(by_name["enc0_conv1"].kernel_size[0]),
            n_classes=int(by_name["logits"].filters),
        )

    def label(self) -> str:
        """Short human label, e.g. ``d2 p2,2 f4-8-16``."""
        base = f"d{self.depth} p{','.join(map(str, self.pools))} f{'-'.join(map(str, self.filters))}"
        return base + (" +boundary" if self.instance_aware else "")


def _residual_block(x, filters: int, kernel_size: int, name: str):
    """conv-BN-ReLU-conv-BN plus a 1x1 projection of the input, added, then ReLU."""
    import keras

    layers = keras.layers
    skip = layers.Conv2D(filters, 1, padding="same", name=f"{name}_skip")(x)
    y = layers.Conv2D(filters, kernel_size, padding="same", name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.Activation("relu", name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, kernel_size, padding="same", name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    y = layers.Add(name=f"{name}_add")([y, skip])
    return layers.Activation("relu", name=f"{name}_out")(y)


def build_resunet(
    arch: Architecture,
    input_shape: tuple[int | None, int | None] = (None, None),
    name: str | None = None,
) -> keras.Model:
    """Build the study's residual UNet for single-channel images.

    Parameters
    ----------
    arch : Architecture
        The description to build.
    input_shape : (H, W)
        Fixed input size in px, or ``(None, None)`` for any size that is a multiple of
        ``arch.pool_product`` (checked here when given).

    Returns
    -------
    keras.Model
        Maps ``(N, H, W, 1)`` images to ``(N, H, W, n_classes)`` float32 logits, whatever the
        global dtype policy (mixed precision computes the body in float16/bfloat16).
    """
    import keras

    h, w = input_shape
    if h is not None and w is not None:
        arch.check_input_size(h, w)
    layers = keras.layers
    inputs = keras.Input(shape=(h, w, 1), name="image")
    x = inputs
    skips = []
    for level in range(arch.depth):
        x = _residual_block(x, arch.filters[level], arch.kernel_size, f"enc{level}")
        skips.append(x)
        p = arch.pools[level]
        x = layers.MaxPooling2D(pool_size=p, strides=p, padding="valid", name=f"pool{level}")(x)
    x = _residual_block(x, arch.filters[arch.depth], arch.kernel_size, "bottleneck")
    for level in reversed(range(arch.depth)):
        p = arch.pools[level]
        x = layers.UpSampling2D(size=p, interpolation="nearest", name=f"up{level}")(x)
        x = layers.Concatenate(axis=-1, name=f"concat{level}")([x, skips[level]])
        x = _residual_block(x, arch.filters[level], arch.kernel_size, f"dec{level}")
    logits = layers.Conv2D(arch.n_classes, 1, padding="same", dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name or "resunet")


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Give ``target`` the weights of ``source``, a network of the same architecture or its
    2-class version when ``target`` is instance-aware (3 classes). A 2-class network's particle
    logit ``l`` becomes interior and boundary logits of ``l - log 2`` each: the softmax then
    gives the background exactly the probability it had, so the particle map (1 - P(background))
    starts where the 2-class network left it, split evenly between interior and boundary, and
    fine-tuning teaches only where the boundaries are."""
    import numpy as np

    src, dst = source.get_weights(), target.get_weights()
    if len(src) != len(dst):
        raise ArchitectureError(f"{source.name} and {target.name} differ in their layers")
    out = []
    for a, b in zip(src, dst):
        if a.shape == b.shape:
            out.append(a)
        elif a.shape[:-1] == b.shape[:-1] and (a.shape[-1], b.shape[-1]) == (2, 3):  # the logits
            shift = np.float32(math.log(2.0)) if a.ndim == 1 else np.float32(0.0)  # bias, kernel
            particle = a[..., 1:] - shift
            out.append(np.concatenate([a[..., :1], particle, particle], axis=-1).astype(a.dtype))
        else:
            raise ArchitectureError(
                f"{source.name} and {target.name} differ in their architecture "
                f"(weights {a.shape} vs {b.shape})"
            )
    target.set_weights(out)


def count_params(arch_or_model: Architecture | keras.Model) -> int:
    """Number of parameters (trainable and BatchNorm statistics) of a model or description."""
    model = arch_or_model
    if isinstance(arch_or_model, Architecture):
        model = build_resunet(arch_or_model)
    return int(model.count_params())


def count_trainable_params(arch_or_model: Architecture | keras.Model) -> int:
    """Number of trainable parameters."""
    model = arch_or_model
    if isinstance(arch_or_model, Architecture):
        model = build_resunet(arch_or_model)
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))
