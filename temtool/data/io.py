"""Reading and writing micrographs and masks.

Readers return float32 2-D arrays and, where the file knows it, the pixel size in nm.
Every failure is a :class:`~temtool.errors.TemtoolError` that names the file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from temtool.errors import ParameterError, TemtoolError

__all__ = [
    "atomic_dir",
    "check_writable",
    "check_new_folder",
    "clean_stale_temporaries",
    "clean_stale_staged_files",
    "pid_alive",
    "Micrograph",
    "pixel_size_from_axes",
    "unit_to_nm",
    "PLAUSIBLE_PIXEL_NM",
    "IMAGE_SUFFIXES",
    "read_image",
    "read_mask",
    "write_tiff",
    "write_png",
    "atomic_write",
]

MICROSCOPY_SUFFIXES = {
    ".dm3": "digitalmicrograph",
    ".dm4": "digitalmicrograph",
    ".ser": "tia",
    ".emd": "emd",
    ".mrc": "mrc",
}
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy", *MICROSCOPY_SUFFIXES)
_UNIT_NM = {  # keys as normalised by unit_to_nm
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometre": 1.0,
    "um": 1e3,
    "micron": 1e3,
    "micrometer": 1e3,
    "micrometre": 1e3,
    "mm": 1e6,
    "a": 0.1,
    "angstrom": 0.1,
    "m": 1e9,
    "meter": 1e9,
    "metre": 1e9,
    "pm": 1e-3,
    "cm": 1e7,
    "centimeter": 1e7,
    "centimetre": 1e7,
    "in": 2.54e7,
    "inch": 2.54e7,
    "inche": 2.54e7,  # "inches", its plural s removed
}

# pixel sizes an electron microscope records, nm: from sub-angstrom HRTEM sampling to an SEM
# overview; a calibration outside is a tag of some other program (72 dpi) or a unit mix-up
PLAUSIBLE_PIXEL_NM = (1e-3, 1e4)


def unit_to_nm(unit: str) -> float | None:
    """nm per ``unit`` for the spellings real files use (``nm``, ``n_m``, ``µm``, ``um``,
    ``Å``, ``angstrom``, ``m``, ...); None if it is not a length."""
    u = str(unit).strip().lower().replace("_", "").replace(" ", "")
    u = u.replace("\u00b5", "u").replace("µ", "u").replace("μ", "u").replace("å", "a")
    if u.endswith("s") and len(u) > 3:  # nanometers, microns, angstroms
        u = u[:-1]
    return _UNIT_NM.get(u)


def _axis_nm(ax: dict) -> float | None:
    factor = unit_to_nm(ax.get("units", ""))
    scale = ax.get("scale")
    if factor is None or not isinstance(scale, (int, float)) or not scale > 0:
        return None
    return float(scale) * factor


def pixel_size_from_axes(axes: list[dict], where: str) -> float | None:
    """The pixel size (nm) of an image from its two signal axes, RosettaSciIO's axis dicts
    (``scale``, ``units``) in array order (y, x), read from x: None when it is not a length;
    pixels that are not square are refused (``where`` names the image) rather than treated as square."""
    scales = [_axis_nm(a) for a in axes[-2:]]
    if len(scales) == 2 and None not in scales and abs(scales[0] / scales[1] - 1) > 0.01:
        raise TemtoolError(
            f"{where}: pixels are not square ({scales[0]:.4g} nm along y, {scales[1]:.4g} nm along x); "
            "resample the image to square pixels first"
        )
    return scales[-1] if scales else None


def _pick_frame(data: np.ndarray, path: Path, frame: int | None) -> np.ndarray:
    """One frame of a stack ``(N, H, W)``."""
    n = data.shape[0]
    if frame is None:
        raise TemtoolError(
            f"{path}: a stack of {n} frames of {data.shape[1]}x{data.shape[2]} px; choose one "
            f"with --frame (0 to {n - 1})"
        )
    if not 0 <= frame < n:
        raise TemtoolError(f"{path}: has {n} frames (0 to {n - 1}); --frame {frame} is not one of them")
    return data[frame]


def _read_microscopy(path: Path, frame: int | None = None) -> tuple[np.ndarray, float | None]:
    """DM3/DM4, SER, EMD and MRC through RosettaSciIO (the ``microscopy`` extra): the first
    image signal (a frame of it, for stacks) and its pixel size in nm. Pixels that are not
    square are refused rather than silently treated as square."""
    import importlib

    module = MICROSCOPY_SUFFIXES[path.suffix.lower()]
    try:
        reader = importlib.import_module(f"rsciio.{module}").file_reader
    except ImportError:
        raise TemtoolError(
            f"{path}: reading {path.suffix} files needs the microscopy extra: "
            "pip install 'temtool[microscopy]'"
        ) from None
    signals = reader(str(path))
    for sig in signals:
        data = np.asarray(sig["data"])
        axes = [a for a in sig.get("axes", []) if a.get("size", 2) > 1]
        if np.squeeze(data).ndim not in (2, 3):
            continue
        data = np.squeeze(data)
        if data.ndim == 3:
            data = _pick_frame(data, path, frame)
        return data, pixel_size_from_axes(axes, str(path))
    raise TemtoolError(f"{path}: holds no 2-D image (found {[np.shape(s['data']) for s in signals]})")


@dataclass
class Micrograph:
    data: np.ndarray  # (H, W) float32
    pixel_size_nm: float | None
    path: Path
    notes: tuple[str, ...] = ()  # what reading did or refused (a calibration not used, a rescale)


def _tiff_pixel_size_nm(tif) -> float | None:
    """Pixel size from ImageJ metadata or the TIFF resolution tags, in nm."""
    page = tif.pages[0]
    if tif.is_ome and tif.ome_metadata:
        m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tif.ome_metadata)
        u = re.search(r'PhysicalSizeXUnit="([^"]+)"', tif.ome_metadata)
        if m:
            factor = unit_to_nm(u.group(1) if u else "um")  # OME's default unit: micrometres
            return float(m.group(1)) * factor if factor else None
    ij = tif.imagej_metadata or {}
    unit = str(ij.get("unit", "")).strip()
    tags = page.tags
    res = tags.get("XResolution")
    if res is None:
        return None
    num, den = res.value
    if num == 0:
        return None
    per_unit = den / num  # units per pixel
    if unit:
        factor = unit_to_nm(unit)
        return per_unit * factor if factor else None
    resunit = tags.get("ResolutionUnit")
    code = int(resunit.value) if resunit is not None else 2
    if code == 3:  # centimetre
        return per_unit * 1e7
    return None  # inch or none: not a physical calibration for micrographs


def read_image(path: str | os.PathLike, channel: int | None = None, frame: int | None = None) -> Micrograph:
    """Read a 2-D micrograph as float32, as image viewers show it.

    Greyscale files are read as they are; palette, CMYK and other colour modes are converted
    to RGB, and RGB(A) files whose colour channels are equal become one channel (grey+alpha:
    the grey); a truly coloured image needs ``channel``. TIFFs stored white-is-zero
    (``photometric=miniswhite``) are inverted, and an EXIF orientation is applied. A stack of
    frames (or an animated PNG, a multi-page TIFF) needs ``frame``.
    """
    path = Path(path)
    if not path.is_file():
        raise TemtoolError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise TemtoolError(f"{path}: the file is empty (0 bytes)")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise TemtoolError(
            f"{path}: unknown image format {suffix!r}; temtool reads {', '.join(IMAGE_SUFFIXES)}"
        )
    pixel_size = None
    try:
        if suffix in (".tif", ".tiff"):
            data, pixel_size = _read_tiff(path)
        elif suffix in (".png", ".jpg", ".jpeg"):
            data, frame = _read_pil(path, frame), None  # the frame is chosen while reading
        elif suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            data, pixel_size = _read_microscopy(path, frame)
    except TemtoolError:
        raise
    except Exception as e:  # corrupt, truncated, unreadable
        if "imagecodecs" in str(e):  # a codec missing here, not a fault of the file
            raise TemtoolError(
                f"{path}: its compression needs the imagecodecs package ({e}); pip install imagecodecs"
            ) from None
        raise TemtoolError(
            f"{path}: cannot read the file ({type(e).__name__}: {e}); is it corrupt or truncated?"
        ) from None
    return _checked(path, _to_2d(np.asarray(data), path, channel, frame), pixel_size)


def _read_tiff(path: Path) -> tuple[np.ndarray, float | None]:
    """The pixels of a TIFF as stored, inverted where its photometric interpretation says
    white is zero, and its pixel size (nm) if the tags give one."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        data = tif.asarray()
        if page.photometric == tifffile.PHOTOMETRIC.MINISWHITE:
            if data.dtype.kind in "ui":
                data = (2 ** int(page.bitspersample) - 1) - data.astype(np.int64)
            elif data.dtype == bool:
                data = ~data
            else:
                data = np.max(data) + np.min(data) - data
        return data, _tiff_pixel_size_nm(tif)


# PIL modes that image viewers show in colour: converted to RGB first (palette, print, video)
_PIL_TO_RGB = ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX")


def _read_pil(path: Path, frame: int | None) -> np.ndarray:
    """PNG/JPEG pixels by their mode, as a viewer shows them: EXIF orientation applied,
    palettes and colour spaces to RGB, grey+alpha to its grey, one frame of an animation."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        n = getattr(im, "n_frames", 1)
        if n > 1:
            if frame is None:
                raise TemtoolError(
                    f"{path}: holds {n} frames (an animation); choose one with --frame 0 to {n - 1}"
                )
            if not 0 <= frame < n:
                raise TemtoolError(
                    f"{path}: holds {n} frames (0 to {n - 1}); --frame {frame} is not one of them"
                )
            im.seek(frame)
        im = ImageOps.exif_transpose(im)
        if im.mode in _PIL_TO_RGB:
            im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
        elif im.mode in ("LA", "La"):
            im = im.getchannel("L")
        elif im.mode == "1":
            im = im.convert("L")
        return np.asarray(im)


def _checked(path: Path, data: np.ndarray, pixel_size: float | None) -> Micrograph:
    """The micrograph as float32, refused where it holds no pixel numbers, nothing, or NaN/Inf."""
    if data.dtype.kind not in "biuf":
        raise TemtoolError(f"{path}: holds {data.dtype} values, not pixel numbers")
    if data.size == 0:
        raise TemtoolError(f"{path}: the image is empty ({data.shape[0]}x{data.shape[1]})")
    with np.errstate(over="ignore", invalid="ignore"):
        data = data.astype(np.float32, copy=False)  # check after the cast: float64 may overflow
    if not np.isfinite(data).all():
        raise TemtoolError(
            f"{path}: contains NaN or Inf pixels, or values beyond float32 (about 3.4e38); "
            "fix or remove them before use"
        )
    notes = []
    if pixel_size is not None and not (np.isfinite(pixel_size) and pixel_size > 0):
        pixel_size = None  # a calibration that is no length (0, inf, NaN) is no calibration
    lo, hi = PLAUSIBLE_PIXEL_NM
    if pixel_size is not None and not lo <= pixel_size <= hi:
        notes.append(
            f"the file's pixel size, {pixel_size:.4g} nm/px, is outside what electron microscopes "
            f"record ({lo:g}-{hi:g} nm/px): not used (pass --pixel-size if you know it)"
        )
        pixel_size = None
    data, scaled = _finite_scale(data)
    if scaled:
        notes.append(scaled)
    return Micrograph(data, pixel_size, path, tuple(notes))


def _finite_scale(data: np.ndarray) -> tuple[np.ndarray, str | None]:
    """``data`` scaled by a power of two (exact) where its values are so large that sums and
    squares of them would overflow float32; segmentation does not depend on the scale."""
    top = float(np.max(np.abs(data)))
    if top <= 2.0**64:
        return data, None
    k = int(np.ceil(np.log2(top))) - 32
    note = f"pixel values up to {top:.3g}: scaled by 2^-{k} so that arithmetic on them stays finite"
    return np.ldexp(data, -k).astype(np.float32), note


def _to_2d(data: np.ndarray, path: Path, channel: int | None, frame: int | None = None) -> np.ndarray:
    data = np.squeeze(data)
    if data.ndim == 2:
        return data
    if data.ndim == 3 and data.shape[-1] not in (3, 4):
        return _pick_frame(data, path, frame)
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        if channel is not None:
            if not 0 <= channel < data.shape[-1]:
                raise TemtoolError(
                    f"{path}: has {data.shape[-1]} channels (0 to {data.shape[-1] - 1}); "
                    f"--channel {channel} is not one of them"
                )
            return data[..., channel]
        rgb = data[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return rgb[..., 0]
        raise TemtoolError(
            f"{path}: a coloured RGB image; micrographs are greyscale. Choose a channel "
            "(--channel 0, 1 or 2) if one of them holds the data"
        )
    raise TemtoolError(f"{path}: expected a 2-D image, got an array of shape {data.shape}")


def read_mask(path: str | os.PathLike, channel: int | None = None) -> np.ndarray:
    """Read a mask as uint8 0/1. Accepts 0/1, 0/255, bool, instance-ID maps, and RGB(A) masks
    (one channel: ``channel``, or the first when the colour channels agree)."""
    m = read_image(path, channel=channel).data
    return binarize_mask(m, path)


def binarize_mask(m: np.ndarray, path) -> np.ndarray:
    """0/1, 0/255, bool or integer instance labels -> uint8 0/1; anything else is an error."""
    values = np.unique(m)
    if values.size == 1 or (values.size == 2 and values[0] == 0):
        return (m > 0).astype(np.uint8)
    integer = values.min() >= 0 and np.all(values == np.round(values))
    if integer and values[0] == 0 and (m == 0).mean() >= 0.05:
        return (m > 0).astype(np.uint8)  # instance IDs on a zero background
    raise TemtoolError(
        f"{path}: mask values are not binary-like (found {values.size} distinct values from "
        f"{values.min():g} to {values.max():g}); masks must be 0/1, 0/255, or integer labels "
        "on a 0 background (is this an image?)"
    )


def read_h5_stack(path: str | os.PathLike) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Images (and masks, if present) from an HDF5 file in the study's layout: keys ``images``
    and ``labels``/``maps``/``masks``, stored NCHW, NHWC, NHW or HW. Two-channel masks (one-hot
    background/particle) use the particle channel."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            keys = list(f.keys())
            if "images" not in f:
                raise TemtoolError(f"{path}: no 'images' dataset in this HDF5 file (keys: {keys})")
            imgs = _split_stack(np.asarray(f["images"]), path, "images")
            mkey = next((k for k in ("labels", "maps", "masks") if k in f), None)
            masks = _split_stack(np.asarray(f[mkey]), path, mkey) if mkey else None
    except TemtoolError:
        raise
    except Exception as e:
        raise TemtoolError(f"{path}: cannot read the HDF5 file ({type(e).__name__}: {e})") from None
    if masks is not None and len(masks) != len(imgs):
        raise TemtoolError(f"{path}: {len(imgs)} images but {len(masks)} masks")
    return imgs, masks


def _split_stack(a: np.ndarray, path: Path, key: str) -> list[np.ndarray]:
    if a.ndim == 2:
        return [a]
    if a.ndim == 3:
        return list(a)
    if a.ndim == 4:
        if a.shape[1] in (1, 2, 3) and a.shape[-1] not in (1, 2, 3):
            a = np.moveaxis(a, 1, -1)  # NCHW -> NHWC
        c = a.shape[-1]
        if c == 1:
            return list(a[..., 0])
        if c == 2:
            return list(a[..., 1])
    raise TemtoolError(f"{path}: '{key}' has shape {a.shape}; expected NHW, NCHW or NHWC")


def check_writable(out: str | os.PathLike, param: str = "out_dir") -> Path:
    """Before any work: ``out`` must be a folder or not exist yet, and its nearest existing
    parent writable, or a :class:`ParameterError` naming ``param`` says why."""

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ParameterError(param, f"{out} exists and is not a folder; choose another")
    parent = out if out.exists() else out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ParameterError(param, f"{out}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ParameterError(param, f"{out}: no permission to write in {parent}")
    return out


def check_new_folder(out: str | os.PathLike, overwrite: bool, param: str = "out_dir") -> Path:
    """:func:`check_writable`, and ``out`` empty or absent unless ``overwrite``."""

    out = check_writable(out, param)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ParameterError(
            param, f"{out} exists and is not empty; choose another folder or pass --overwrite"
        )
    return out


def pid_alive(pid: int) -> bool:
    """Whether a process of that id runs (one of another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_stale_temporaries(out: str | os.PathLike) -> list[Path]:
    """Remove the temporary folders of earlier runs writing ``out`` whose process is gone
    (killed with SIGKILL, power loss); returns what was removed."""
    out = Path(out)
    removed = []
    if not out.parent.is_dir():
        return removed
    for p in out.parent.glob(f".{out.name}.tmp-*"):
        pid = p.name[len(f".{out.name}.tmp-") :].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


_STAGED_NAME = re.compile(r"^\..+\.(?:part|tmp)-(\d+)(?:\.[^.]*)?$")  # .NAME.part-PID.EXT, .NAME.tmp-PID.EXT


def clean_stale_staged_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the files that runs whose process is gone (killed by SIGKILL, power loss) left
    in ``folder`` under a temporary name (:func:`atomic_write`'s ``.NAME.tmp-PID.EXT``,
    the output set's ``.NAME.part-PID.EXT``); returns what was removed."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _STAGED_NAME.match(p.name)
        if m and p.is_file() and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, replace: bool = True):
    """Yield a temporary folder beside ``out``; on success it is renamed to ``out``, on any
    error or interrupt it is removed, so ``out`` is never seen half-written.

    ``replace=True`` swaps out an existing ``out``; ``replace=False`` refuses to, so if another
    process filled ``out`` meanwhile, this result is not silently lost or mixed in: a
    :class:`TemtoolError` says so. Temporary folders of dead earlier runs are removed first.
    """
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temporaries(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    except OSError as e:
        raise TemtoolError(f"{out}: cannot write here ({e.strerror or e})") from None
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; follow the umask like mkdir
    try:
        yield tmp
        if replace:
            old = None
            if out.exists():
                old = out.with_name(f".{out.name}.old-{os.getpid()}")
                os.replace(out, old)
            os.replace(tmp, out)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(tmp, out)  # onto nothing or an empty folder only
            except OSError:
                raise TemtoolError(
                    f"{out}: another process wrote this folder while this run was working; "
                    "nothing of this run was kept (use another folder, or --overwrite)"
                ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path`` so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write(path: Path, write, atomic: bool) -> None:
    if atomic:
        atomic_write(path, write)
    else:
        write(path)


def write_tiff(path: Path, data: np.ndarray, pixel_size_nm: float | None = None, atomic: bool = True) -> None:
    """Write a TIFF: float data as float32, integer data as it is (label images). The pixel
    size goes into the ImageJ unit and resolution tags (the one place temtool writes them),
    except for 32-bit integers, which ImageJ TIFFs cannot hold. ``atomic``: under a
    temporary name, then renamed (:func:`atomic_write`); else straight to ``path``."""
    import tifffile

    arr = np.asarray(data)
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float32, copy=False)
    kw = {}
    if pixel_size_nm and (arr.dtype.kind == "f" or arr.dtype.itemsize <= 2):
        kw = {
            "imagej": True,
            "resolution": (1 / pixel_size_nm, 1 / pixel_size_nm),
            "metadata": {"unit": "nm"},
        }
    _write(Path(path), lambda p: tifffile.imwrite(p, arr, **kw), atomic)


def write_png(path: Path, data: np.ndarray, atomic: bool = True) -> None:
    """Write an integer image (uint8 or uint16) as PNG (``atomic``: see :func:`write_tiff`)."""
    from PIL import Image

    arr = np.asarray(data)
    if arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG needs uint8 or uint16, got {arr.dtype}")
    _write(Path(path), lambda p: Image.fromarray(arr).save(p, format="PNG", compress_level=1), atomic)
