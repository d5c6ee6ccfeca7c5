"""A minimal Gatan DM3 writer for tests: one 2-D float32 image with a spatial calibration,
written from the published tag-file layout (big-endian tag structure, little-endian data)."""

import struct

import numpy as np


def _name(tag_id: int, name: str) -> bytes:
    raw = name.encode("latin-1")
    return struct.pack(">bh", tag_id, len(raw)) + raw


def _group(name: str, tags: list[bytes]) -> bytes:
    return _name(20, name) + struct.pack(">bbl", 0, 0, len(tags)) + b"".join(tags)


def _simple(name: str, etype: int, fmt: str, value) -> bytes:
    return _name(21, name) + b"%%%%" + struct.pack(">ll", 1, etype) + struct.pack("<" + fmt, value)


def _string(name: str, text: str) -> bytes:  # DM stores strings as uint16 arrays
    codes = [ord(c) for c in text]
    return (
        _name(21, name)
        + b"%%%%"
        + struct.pack(">llll", 3, 20, 4, len(codes))
        + struct.pack(f"<{len(codes)}H", *codes)
    )


def write_dm3(path, data: np.ndarray, pixel_size: float, unit: str = "nm") -> None:
    data = np.asarray(data, "<f4")
    h, w = data.shape
    dims = [
        _group(
            "", [_simple("Origin", 6, "f", 0.0), _simple("Scale", 6, "f", pixel_size), _string("Units", unit)]
        )
        for _ in range(2)
    ]
    image_data = _group(
        "ImageData",
        [
            _group(
                "Calibrations",
                [
                    _group(
                        "Brightness",
                        [_simple("Origin", 6, "f", 0.0), _simple("Scale", 6, "f", 1.0), _string("Units", "")],
                    ),
                    _group("Dimension", dims),
                ],
            ),
            _name(21, "Data") + b"%%%%" + struct.pack(">llll", 3, 20, 6, data.size) + data.tobytes(),
            _simple("DataType", 3, "l", 2),
            _group("Dimensions", [_simple("", 5, "L", w), _simple("", 5, "L", h)]),
            _simple("PixelDepth", 5, "L", 4),
        ],
    )
    image = _group("", [image_data, _group("ImageTags", []), _string("Name", "test")])
    root = struct.pack(">bbl", 1, 0, 1) + _group("ImageList", [image])
    header = struct.pack(">lll", 3, len(root) + 4, 1)
    with open(path, "wb") as f:
        f.write(header + root + b"\0" * 8)
