"""Minimal 8-bit PNG writer (stdlib zlib + numpy, no bpy): the maps' previews after Sync Maps.

Writes greyscale, RGB or RGBA, one IDAT chunk, filter 0 on every row; atomic (a temp file in the
same folder, then ``os.replace``), like every file of the avatar folder.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from .atomic import write_bytes

__all__ = ["encode_png", "write_png"]

_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels → PNG colour type (grey, RGB, RGBA)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(array: np.ndarray) -> bytes:
    """The PNG file of an 8-bit image.

    Args:
        array: uint8, row 0 = top. [H, W] or [H, W, C] with C in {1, 3, 4}
    Returns:
        the file's bytes.
    Raises:
        ValueError: another shape or dtype.
    """
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] not in _COLOR_TYPES or 0 in a.shape[:2]:
        raise ValueError(f"encode_png expects uint8 [H, W] or [H, W, 1|3|4], found {a.dtype} {a.shape}")
    h, w, c = a.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), a.reshape(h, w * c)], axis=1)
    header = struct.pack(">IIBBBBB", w, h, 8, _COLOR_TYPES[c], 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + _chunk(b"IEND", b""))


def write_png(path: Path, array: np.ndarray) -> None:
    """Writes :func:`encode_png` of ``array`` to ``path`` atomically.

    Raises:
        ValueError: see :func:`encode_png`.
        OSError: the folder is not writable.
    """
    write_bytes(Path(path), encode_png(array))
