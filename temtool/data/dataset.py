"""The dataset layout every temtool command reads, and the built-in simulated datasets.

Layout::

    DATASET/
      images/      micrographs (TIFF, PNG, NPY, ...)
      masks/       binary masks, matched to images by file stem
      instances/   optional instance-ID maps
      dataset.json optional: pixel_size_nm, regime, splits {train, val, test: [stems]}, notes

Built-in datasets are named ``sim:NAME`` (see :data:`BUILTIN`); they are generated on first use
and cached under ``$TEMTOOL_CACHE`` (default ``~/.cache/temtool``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from temtool.data.io import (
    IMAGE_SUFFIXES,
    atomic_dir,
    check_new_folder,
    read_image,
    read_mask,
    write_png,
    write_tiff,
)
from temtool.data.randomise import CROWDED, RANGES, randomised_batch
from temtool.data.simulate import GENERATOR_VERSION, config_for, simulate_batch
from temtool.errors import ParameterError, TemtoolError, check_positive
from temtool.image.labels import boundary_classes
from temtool.image.normalise import standardize
from temtool.paths import cache_dir, writable_cache_dir

__all__ = [
    "recipe",
    "recipe_hash",
    "builtin_recipe_hash",
    "BUILTIN",
    "Dataset",
    "dataset_name",
    "split_stems",
    "check_split",
    "cache_dir",
    "resolve_data",
    "load_dataset",
    "standardize",
    "write_simulated_dataset",
]

# The study's geometry (Sytwu et al. 2022): HRTEM of 5 nm Au at 0.02152 nm/px (fringe period
# d111 = 0.2355 nm = 10.9 px) and bright-field TEM of 20 nm Au at 0.124 nm/px, 512x512 patches.
STUDY_HRTEM_NM_PER_PX = 0.02152
STUDY_STANDARD_NM_PER_PX = 0.124

# name -> {regime, n (images), size (px), overrides (simulation config), about, scaled,
# randomised (optional: each image draws its own recipe, temtool.data.randomise)}
BUILTIN: dict[str, dict] = {
    "standard": {
        "regime": "standard",
        "n": 120,
        "size": 128,
        "overrides": {"pixel_size_nm": 0.5, "particles_per_256px2": (4.0, 12.0)},
        "about": "bright-field TEM, 20 nm Au at 0.5 nm/px, 128x128 (quick; not the study's sampling)",
        "scaled": "pixel size 0.5 nm/px instead of the study's 0.124 (particles 40 px, not 161 px), "
        "128 px crops, 120 images, particles 4-12 per 256x256",
    },
    "randomised": {
        "regime": "standard",
        "randomised": True,
        "n": 400,
        "size": 128,
        "overrides": {"pixel_size_nm": 0.5},
        "about": "bright-field TEM as it varies between microscopes and labs, 128x128 at 0.5 nm/px: "
        "each image draws its own dose (2-3,000 counts/px), defocus, carbon, illumination "
        "gradient, detector blur, particle size (4-32 nm), shape and crowding",
        "scaled": "not the study's data: the domain-randomised recipe of the shipped standard model "
        "(temtool.data.randomise) at one pixel size, so a receptive field in nm means one thing",
    },
    "standard-study": {
        "regime": "standard",
        "n": 300,
        "size": 512,
        "overrides": {"pixel_size_nm": STUDY_STANDARD_NM_PER_PX, "diameter_nm": 20.0},
        "about": "bright-field TEM at the study's geometry: 20 nm Au at 0.124 nm/px, 512x512",
        "scaled": "nothing: the study's pixel size, particle size and patch size",
    },
    "standard-cpu": {
        "regime": "standard",
        "n": 120,
        "size": 256,
        "overrides": {"pixel_size_nm": STUDY_STANDARD_NM_PER_PX, "diameter_nm": 20.0},
        "about": "sim:standard-study sized for a CPU: 256x256 crops, 120 images, same px scale",
        "scaled": "256 px crops (study 512) and 120 images (study-scale set 300); pixel size and "
        "particle size as the study, so a receptive field in px means the same",
    },
    "hrtem-study": {
        "regime": "hrtem",
        "n": 300,
        "size": 512,
        "overrides": {"pixel_size_nm": STUDY_HRTEM_NM_PER_PX, "diameter_nm": 5.0},
        "about": "HRTEM at the study's geometry: 5 nm Au at 0.02152 nm/px (fringes ~11 px), 512x512",
        "scaled": "nothing: the study's pixel size, particle size and patch size",
    },
    "hrtem": {
        "regime": "hrtem",
        "n": 120,
        "size": 256,
        "overrides": {"pixel_size_nm": STUDY_HRTEM_NM_PER_PX, "diameter_nm": 5.0},
        "about": "sim:hrtem-study sized for a CPU: 256x256 crops, 120 images, same px scale",
        "scaled": "256 px crops (study 512) and 120 images (study-scale set 300); pixel size, "
        "particle size (232 px) and fringe period (11 px) as the study, so a receptive field "
        "in px means the same",
    },
}


def dataset_name(spec: str | os.PathLike) -> str:
    """A short name for a dataset: ``standard`` for ``sim:standard``, else the folder name."""
    s = str(spec)
    return s[4:] if s.startswith("sim:") else Path(s).name or "data"


def check_split(split) -> tuple[float, float, float]:
    """Three finite non-negative shares (train, val, test) with a positive sum, normalised."""
    try:
        fr = tuple(float(v) for v in split)
    except (TypeError, ValueError):
        fr = ()
    if len(fr) != 3 or not all(math.isfinite(f) and f >= 0 for f in fr) or not sum(fr) > 0:
        raise ParameterError(
            "split", f"must be three finite non-negative shares such as 70,10,20, got {split!r:.60}"
        )
    total = sum(fr)
    return (fr[0] / total, fr[1] / total, fr[2] / total)


def split_stems(stems: list[str], split, seed: int | None = 0) -> dict[str, list[str]]:
    """Split items into train/val/test by the given shares: shuffled with ``seed`` (None keeps
    the order). With 2 or more items a positive val share gets at least one, with 3 or more a
    positive test share too; train keeps at least one."""
    fr = check_split(split)
    items = list(stems)
    if seed is not None:
        items = [items[i] for i in np.random.default_rng(seed).permutation(len(items))]
    n = len(items)
    n_val, n_test = int(round(fr[1] * n)), int(round(fr[2] * n))
    if n >= 2 and fr[1] > 0:
        n_val = max(n_val, 1)
    if n >= 3 and fr[2] > 0:
        n_test = max(n_test, 1)
    while n_val + n_test >= n and n_val + n_test > 0:  # keep one for training
        if n_test >= n_val and n_test > 0:
            n_test -= 1
        else:
            n_val -= 1
    n_train = n - n_val - n_test
    return {
        "train": items[:n_train],
        "val": items[n_train : n_train + n_val],
        "test": items[n_train + n_val :],
    }


# ------------------------------------------------------------------------------ writing
def write_simulated_dataset(
    out_dir: str | os.PathLike,
    regime: str = "hrtem",
    n: int = 300,
    size: int = 512,
    seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    overrides: dict | None = None,
    split: tuple[float, float, float] = (0.7, 0.1, 0.2),
    progress=None,
    notes: dict | None = None,
    randomised: bool = False,
) -> Path:
    """Simulate ``n`` micrographs and write them in the dataset layout, atomically.

    ``progress`` is called with the number of images done; ``notes`` are recorded in
    dataset.json (built-ins say what was scaled from the study). ``randomised``: each image
    draws its own microscope, specimen and detector (:mod:`temtool.data.randomise`, standard
    TEM only; of the ``overrides`` only ``pixel_size_nm`` applies, fixing the sampling).
    Returns the dataset folder.
    """

    out_dir = Path(out_dir)
    if n < 1:
        raise ParameterError("n", f"must be >= 1, got {n}")
    if size < 16:
        raise ParameterError("size", f"must be >= 16 px, got {size}")
    check_split(split)
    if regime not in ("standard", "hrtem", "haadf"):
        raise ParameterError("regime", f"must be 'standard', 'hrtem' or 'haadf', got {regime!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ParameterError("workers", f"must be >= 1, got {workers}")
    try:
        cfg = config_for(regime, **(overrides or {}))
    except ValueError as e:
        raise ParameterError("overrides", str(e)) from None
    if randomised and (regime != "standard" or set(overrides or {}) - {"pixel_size_nm"}):
        raise ParameterError(
            "overrides", "a randomised dataset is standard TEM; only pixel_size_nm can be fixed"
        )
    px = (overrides or {}).get("pixel_size_nm") if randomised else cfg.pixel_size_nm
    check_new_folder(out_dir, overwrite)
    with atomic_dir(out_dir, replace=overwrite) as tmp:
        for sub in ("images", "masks", "instances"):
            (tmp / sub).mkdir()
        records = []
        if randomised:
            gen = randomised_batch(n, size, seed=seed, workers=workers, pixel_size_nm=px)
        else:
            gen = simulate_batch(cfg, n, size=size, seed=seed, workers=workers)
        with contextlib.closing(gen) as batch:  # closed (workers stopped) at once on any error or Ctrl-C
            for i, sim in enumerate(batch):
                stem = f"sim_{i:05d}"
                write_tiff(tmp / "images" / f"{stem}.tif", sim.image, px)
                write_png(tmp / "masks" / f"{stem}.png", sim.mask)
                write_png(tmp / "instances" / f"{stem}.png", sim.instances.astype(np.uint16))
                records.append(
                    {
                        "stem": stem,
                        "params": sim.params,
                        "particles": sim.particles,
                        "counts_per_px": sim.counts_per_px,
                    }
                )
                if progress:
                    progress(i + 1)
        stems = [r["stem"] for r in records]
        meta = {
            "name": out_dir.name,
            "source": "temtool simulate",
            "generator_version": GENERATOR_VERSION,
            "recipe_hash": recipe_hash(regime, overrides, randomised),
            "regime": regime,
            "pixel_size_nm": px,
            "size_px": size,
            "n_images": n,
            "seed": seed,
            **({"notes": notes} if notes else {}),
            "config": _jsonable(
                {"randomised_ranges": RANGES, "pixel_size_nm": px} if randomised else cfg.__dict__
            ),
            "splits": split_stems(stems, split, seed=None),  # simulated images are i.i.d.
            "images": _jsonable(records),
        }
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=1))
    return out_dir


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    return x


def recipe(regime: str, overrides: dict | None = None, randomised: bool = False) -> dict:
    """What defines simulated data apart from its size, count and seed: the generator's
    version and every parameter its images are drawn from (the regime's configuration after
    ``overrides``, and for a randomised set the ranges of :mod:`temtool.data.randomise`)."""
    out: dict = {"generator_version": GENERATOR_VERSION, "regime": regime}
    if randomised:
        out["randomise"] = {"ranges": RANGES, "crowded": CROWDED}
        out["pixel_size_nm"] = (overrides or {}).get("pixel_size_nm")
    else:
        out["config"] = dataclasses.asdict(config_for(regime, **(overrides or {})))
    return _jsonable(out)


def recipe_hash(regime: str, overrides: dict | None = None, randomised: bool = False) -> str:
    """A short hash of :func:`recipe`: it changes whenever a range or default it draws from
    does. Datasets record it in dataset.json; results files record the one they used."""
    text = json.dumps(recipe(regime, overrides, randomised), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def builtin_recipe_hash(name: str) -> str:
    """:func:`recipe_hash` of the built-in dataset ``sim:NAME``."""
    spec = BUILTIN[name]
    return recipe_hash(spec["regime"], spec["overrides"], spec.get("randomised", False))


def builtin_path(name: str) -> Path:
    """The cache folder of ``sim:NAME``: keyed by its recipe (:func:`recipe_hash`) and its
    size, count and notes, so a changed recipe is a new dataset and an old cache is never
    served for it."""
    spec = json.dumps(BUILTIN.get(name, {}), sort_keys=True, default=str)
    key = builtin_recipe_hash(name) if name in BUILTIN else ""
    digest = hashlib.sha256((key + spec).encode()).hexdigest()[:8]
    return cache_dir() / "datasets" / f"sim-{name}-g{GENERATOR_VERSION}-{digest}"


def ensure_builtin(name: str, progress=None) -> Path:
    """Path of a built-in simulated dataset, generating it on first use."""
    if name not in BUILTIN:
        raise TemtoolError(
            f"unknown built-in dataset 'sim:{name}'; choose one of " + ", ".join(f"sim:{k}" for k in BUILTIN)
        )
    path = builtin_path(name)
    if (path / "dataset.json").is_file():
        return path
    writable_cache_dir()  # a clear line if TEMTOOL_CACHE names a file or an unwritable place
    spec = BUILTIN[name]
    try:
        write_simulated_dataset(
            path,
            regime=spec["regime"],
            n=spec["n"],
            size=spec["size"],
            seed=0,
            workers=min(2, os.cpu_count() or 1),
            overwrite=True,
            overrides=spec["overrides"],
            randomised=spec.get("randomised", False),
            progress=progress,
            notes={"builtin": f"sim:{name}", "about": spec["about"], "scaled": spec["scaled"]},
        )
    except OSError:
        if not (path / "dataset.json").is_file():  # another process may have won the race
            raise
    return path


def resolve_data(spec: str | os.PathLike, option: str = "--data") -> Path:
    """A dataset folder from a path or a ``sim:NAME`` built-in."""
    s = str(spec)
    if s.startswith("sim:"):
        return ensure_builtin(s[4:])
    path = Path(s)
    if not path.exists():
        raise TemtoolError(
            f"{option} {path}: no such folder (or use a built-in: "
            + ", ".join(f"sim:{k}" for k in BUILTIN)
            + ")"
        )
    if not path.is_dir():
        raise TemtoolError(f"{option} {path}: not a folder; a dataset has images/ and masks/ inside")
    return path


# ------------------------------------------------------------------------------ reading
class _LazyImages(Mapping):
    """stem -> array, read from disk on every access (for datasets larger than memory)."""

    def __init__(self, paths: dict[str, Path], read):
        self._paths, self._read = paths, read

    def __getitem__(self, stem):
        return self._read(self._paths[stem])

    def __len__(self):
        return len(self._paths)

    def __iter__(self):
        return iter(self._paths)


class LazyStack:
    """A read-on-demand stack ``(N, H, W[, 1])`` of one split: indexing with an int, a slice or
    an index array reads just those files. Quacks enough like an array for the feeder."""

    def __init__(self, store, stems: list[str], channel_axis: bool):
        self.store, self.stems, self.channel_axis = store, list(stems), channel_axis
        first = store[self.stems[0]]
        self.shape = (len(self.stems), *first.shape, *((1,) if channel_axis else ()))
        self.dtype = first.dtype

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            a = self.store[self.stems[int(idx)]]
            return a[..., None] if self.channel_axis else a
        picks = np.arange(len(self.stems))[idx]
        out = np.stack([self.store[self.stems[int(i)]] for i in picks])
        if out.shape[1:3] != self.shape[1:3]:
            raise TemtoolError("images of one split differ in size; cut them into equal patches")
        return out[..., None] if self.channel_axis else out


def memory_budget_bytes() -> int:
    """How much image data ``load_dataset`` keeps in memory before streaming from disk:
    ``$TEMTOOL_MAX_MEMORY_GB``, else a quarter of the machine's memory."""
    env = os.environ.get("TEMTOOL_MAX_MEMORY_GB")
    if env:
        return int(float(env) * 2**30)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


@dataclass
class Dataset:
    """Images (standardised) and masks of one dataset, by split."""

    path: Path
    pixel_size_nm: float | None
    regime: str | None
    splits: dict[str, list[str]]
    images: dict[str, np.ndarray] = field(default_factory=dict)  # stem -> (H, W) float32
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # stem -> (H, W) uint8
    lazy: bool = False  # True: images and masks are read from disk on access
    # what a network trains on (:meth:`arrays`): "mask", or "boundary": ``boundary`` holds
    # stem -> (H, W) uint8, 0 background, 1 interior, 2 boundary
    # (:func:`temtool.image.labels.boundary_classes`, an instance-aware network's targets)
    targets: str = "mask"
    boundary: dict[str, np.ndarray] = field(default_factory=dict)
    instances_from: str | None = None  # "instances/" or "mask components" (targets "boundary")

    def arrays(self, split: str):
        """``x (N, H, W, 1) float32`` and ``y (N, H, W) uint8`` of a split (equal sizes): the
        masks, or the 3-class targets where :attr:`targets` is "boundary";
        :class:`LazyStack` views that read on demand when the dataset streams from disk."""
        stems = self.splits.get(split, [])
        if not stems:
            raise TemtoolError(f"{self.path}: the {split!r} split is empty")
        ys = self.boundary if self.targets == "boundary" else self.masks
        if self.lazy:
            return LazyStack(self.images, stems, True), LazyStack(ys, stems, False)
        shapes = {self.images[s].shape for s in stems}
        if len(shapes) > 1:
            raise TemtoolError(
                f"{self.path}: images of the {split!r} split differ in size "
                f"({sorted(shapes)[:3]}...); cut them into equal patches with 'temtool prepare'"
            )
        x = np.stack([self.images[s] for s in stems])[..., None]
        y = np.stack([ys[s] for s in stems])
        return x, y

    def summary(self) -> dict:
        return {
            "path": str(self.path),
            "pixel_size_nm": self.pixel_size_nm,
            "regime": self.regime,
            **{f"n_{k}": len(v) for k, v in self.splits.items()},
            "particle_fraction": float(np.mean([self.masks[s].mean() for s in list(self.masks)[:200]])),
            "targets": self.targets,
            **({"instances_from": self.instances_from} if self.instances_from else {}),
            "streamed_from_disk": self.lazy,
        }


def _by_stem(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            if p.stem in out:
                raise TemtoolError(f"{folder}: two files share the stem {p.stem!r}; rename one")
            out[p.stem] = p
    return out


def _image_mask_files(path: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Image and mask files of a dataset folder by stem; every image needs its mask."""
    img_dir, mask_dir = path / "images", path / "masks"
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise TemtoolError(f"{path}: no {d.name}/ folder; a dataset has images/ and masks/")
    imgs, masks = _by_stem(img_dir), _by_stem(mask_dir)
    if not imgs:
        raise TemtoolError(f"{img_dir}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    missing = sorted(set(imgs) - set(masks))
    if missing:
        raise TemtoolError(f"{imgs[missing[0]]}: no mask with the same stem in {mask_dir}")
    extra = sorted(set(masks) - set(imgs))
    if extra:
        raise TemtoolError(f"{masks[extra[0]]}: no image with the same stem in {img_dir}")
    return imgs, masks


TARGETS = ("mask", "boundary")


def _boundary_reader(path: Path, imgs: dict[str, Path], masks: dict[str, Path]):
    """Where ``load_dataset(targets="boundary")`` reads each stem's target (its instance map,
    else its mask), how it reads one, and what it says the instances came from."""
    folder = path / "instances"
    if not folder.is_dir():
        return masks, lambda f: boundary_classes(ndi.label(read_mask(f))[0]), "mask components"
    inst = _by_stem(folder)
    missing = sorted(set(imgs) - set(inst))
    if missing:
        raise TemtoolError(f"{imgs[missing[0]]}: no instance map with the same stem in {folder}")

    def from_instances(f: Path) -> np.ndarray:
        lab = read_image(f).data
        if lab.ndim != 2 or lab.min() < 0 or not np.all(lab == np.round(lab)):
            raise TemtoolError(f"{f}: an instance map holds integer ids on a 0 background")
        return boundary_classes(lab.astype(np.int64))

    return {s: inst[s] for s in imgs}, from_instances, "instances/"


def read_dataset_json(where: Path) -> dict:
    """``dataset.json``, checked: an object whose ``pixel_size_nm`` is a positive number (or
    null), ``regime`` a string (or null), and ``splits`` maps split names to lists of stems."""
    try:
        meta = json.loads(Path(where).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise TemtoolError(f"{where}: not a readable JSON file ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict):
        raise TemtoolError(f"{where}: expected a JSON object, got {type(meta).__name__}")
    px = meta.get("pixel_size_nm")
    if px is not None and not (
        isinstance(px, (int, float)) and not isinstance(px, bool) and math.isfinite(px) and px > 0
    ):
        raise TemtoolError(
            f"{where}: 'pixel_size_nm' must be a positive number of nm or null, got {px!r:.40}"
        )
    if meta.get("regime") is not None and not isinstance(meta["regime"], str):
        raise TemtoolError(f"{where}: 'regime' must be a string or null")
    splits = meta.get("splits")
    if splits is not None:
        if not isinstance(splits, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in splits.values()
        ):
            raise TemtoolError(
                f"{where}: 'splits' must map split names to lists of file stems, "
                'e.g. {"train": ["a", "b"], "val": ["c"], "test": ["d"]}'
            )
        unknown = sorted(set(splits) - {"train", "val", "test"})
        if unknown:
            raise TemtoolError(f"{where}: unknown split {unknown[0]!r}; use train, val and test")
    return meta


def load_dataset(
    spec: str | os.PathLike,
    pixel_size_nm: float | None = None,
    seed: int = 0,
    split: tuple[float, float, float] = (0.7, 0.1, 0.2),
    in_memory: bool | None = None,
    targets: str = "mask",
) -> Dataset:
    """Read a dataset folder (or ``sim:NAME``): standardised images, binary masks, splits.

    Without splits in ``dataset.json`` the stems are shuffled with ``seed`` and split by the
    given fractions. ``in_memory=None`` keeps the data in memory when the image files fit in
    :func:`memory_budget_bytes`, else streams them from disk (read per batch); pass True or
    False to force either. ``targets="boundary"`` reads the 3-class targets of an
    instance-aware network instead of binary masks (:func:`temtool.image.labels.boundary_classes`)
    from ``instances/`` where the dataset has it (every image needs its map then), else from
    the masks' connected components (touching particles then stay one).
    """
    check_positive("pixel_size_nm", pixel_size_nm)
    if targets not in TARGETS:
        raise ParameterError("targets", f"must be one of {', '.join(TARGETS)}, got {targets!r}")
    path = resolve_data(spec)
    meta = read_dataset_json(path / "dataset.json") if (path / "dataset.json").exists() else {}
    imgs, masks = _image_mask_files(path)
    ds = Dataset(
        path=path,
        pixel_size_nm=pixel_size_nm or meta.get("pixel_size_nm"),
        regime=meta.get("regime"),
        splits={},
        targets=targets,
    )
    target_files, read_target = {}, None
    if targets == "boundary":
        target_files, read_target, ds.instances_from = _boundary_reader(path, imgs, masks)
    per_micrograph = meta.get("standardized") == "per_micrograph"

    def read_x(p: Path) -> np.ndarray:
        d = read_image(p).data
        return d if per_micrograph else standardize(d)

    def read_pair(stem: str):
        mg = read_image(imgs[stem])
        m = read_mask(masks[stem])
        if m.shape != mg.data.shape:
            raise TemtoolError(
                f"{masks[stem]}: mask is {m.shape[0]}x{m.shape[1]} but its image is "
                f"{mg.data.shape[0]}x{mg.data.shape[1]}"
            )
        t = read_target(target_files[stem]) if read_target else None
        if t is not None and t.shape != m.shape:
            raise TemtoolError(
                f"{target_files[stem]}: {t.shape[0]}x{t.shape[1]} but its mask is {m.shape[0]}x{m.shape[1]}"
            )
        return mg, m, t

    if in_memory is None:
        in_memory = sum(p.stat().st_size for p in imgs.values()) <= memory_budget_bytes()
    if in_memory:
        for stem in imgs:
            mg, m, t = read_pair(stem)
            ds.images[stem] = mg.data if per_micrograph else standardize(mg.data)
            ds.masks[stem] = m
            if t is not None:
                ds.boundary[stem] = t
    else:
        read_pair(next(iter(imgs)))  # fail early on an unreadable first pair
        ds.lazy = True
        ds.images = _LazyImages(imgs, read_x)
        ds.masks = _LazyImages(masks, read_mask)
        if read_target:
            ds.boundary = _LazyImages(target_files, read_target)
    ds.splits = _splits_of(meta, path, imgs, split, seed)
    return ds


def _splits_of(meta: dict, path: Path, imgs: dict[str, Path], split, seed) -> dict[str, list[str]]:
    """The splits ``dataset.json`` gives (checked against the images), else drawn."""
    splits = meta.get("splits")
    if not splits:
        return split_stems(sorted(imgs), split, seed=seed)
    unknown = [s for v in splits.values() for s in v if s not in imgs]
    if unknown:
        raise TemtoolError(f"{path / 'dataset.json'}: split lists {unknown[0]!r}, which has no image")
    return {k: list(v) for k, v in splits.items()}
