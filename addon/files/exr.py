"""A minimal single-part scanline OpenEXR writer and header reader (numpy + zlib, no bpy).

Why: Blender saves every float image as RGB(A), so a 1-channel ``Y`` map (opacity, offset) would
come back with three channels; Sync Maps writes data maps with this module instead, keeping the
file's channel names, pixel type and the engine's ``fateChannelOrder`` attribute, bit-exactly.
Format reference: the OpenEXR file layout document (magic, header attributes, offset table,
scanline chunks; ZIP = 16 scanlines per chunk, byte-interleave + delta predictor + zlib).
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import write_bytes

__all__ = ["ExrHeader", "read_exr_header", "write_exr", "ExrError", "CHANNEL_ORDER_ATTR"]

MAGIC = 20000630
CHANNEL_ORDER_ATTR = "fateChannelOrder"
_PIXEL_TYPES = {0: np.dtype("<u4"), 1: np.dtype("<f2"), 2: np.dtype("<f4")}
_COMPRESSION = {"none": 0, "zips": 2, "zip": 3}
_LINES_PER_CHUNK = {0: 1, 2: 1, 3: 16}


class ExrError(ValueError):
    """The file is not a single-part scanline EXR this module can handle."""


@dataclass
class ExrHeader:
    """What :func:`read_exr_header` found.

    Attributes:
        channels: channel names in file order (sorted by name, as EXR stores them).
        pixel_types: per channel 0 = uint, 1 = half, 2 = float.
        width, height: data window size, px.
        compression: EXR compression code.
        channel_order: the engine's ``fateChannelOrder`` (its channel order), or None.
    """

    channels: list[str]
    pixel_types: list[int]
    width: int
    height: int
    compression: int
    channel_order: list[str] | None


def _cstr(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(b"\0", pos)
    return buf[pos:end].decode("latin-1"), end + 1


def read_exr_header(path: str | os.PathLike) -> ExrHeader:
    """Reads the header of a single-part scanline EXR file.

    Raises:
        ExrError: not an EXR, multi-part/tiled/deep, or a malformed header.
    """
    path = Path(path)
    with open(path, "rb") as f:
        buf = f.read(65536)
    if len(buf) < 8 or struct.unpack_from("<i", buf, 0)[0] != MAGIC:
        raise ExrError(f"{path}: not an OpenEXR file")
    flags = struct.unpack_from("<I", buf, 4)[0]
    if flags & 0x200 or flags & 0x800 or flags & 0x1000:
        raise ExrError(f"{path}: tiled, deep or multi-part EXR files are not supported here")
    pos = 8
    channels, ptypes, window, compression, order = [], [], None, 0, None
    try:
        while buf[pos] != 0:
            name, pos = _cstr(buf, pos)
            typ, pos = _cstr(buf, pos)
            size = struct.unpack_from("<i", buf, pos)[0]
            pos += 4
            value = buf[pos:pos + size]
            pos += size
            if name == "channels":
                q = 0
                while value[q] != 0:
                    ch, q = _cstr(value, q)
                    ptype = struct.unpack_from("<i", value, q)[0]
                    xs, ys = struct.unpack_from("<ii", value, q + 8)
                    if (xs, ys) != (1, 1):
                        raise ExrError(f"{path}: subsampled channel {ch!r} not supported")
                    channels.append(ch)
                    ptypes.append(ptype)
                    q += 16
            elif name == "dataWindow":
                window = struct.unpack("<iiii", value)
            elif name == "compression":
                compression = value[0]
            elif name == CHANNEL_ORDER_ATTR:
                order = value.decode("utf-8", "replace").split(",")
    except (IndexError, struct.error, ValueError) as exc:
        raise ExrError(f"{path}: malformed EXR header ({exc})") from exc
    if window is None or not channels:
        raise ExrError(f"{path}: EXR header without channels or dataWindow")
    xmin, ymin, xmax, ymax = window
    if order is not None and sorted(order) != sorted(channels):
        order = None
    return ExrHeader(channels=channels, pixel_types=ptypes, width=xmax - xmin + 1, height=ymax - ymin + 1,
                     compression=compression, channel_order=order)


def _attr(name: str, typ: str, value: bytes) -> bytes:
    return name.encode() + b"\0" + typ.encode() + b"\0" + struct.pack("<i", len(value)) + value


def _zip_compress(raw: bytes) -> bytes:
    a = np.frombuffer(raw, np.uint8)
    t = np.concatenate([a[0::2], a[1::2]])
    d = t.astype(np.int16)
    d[1:] = (t[1:].astype(np.int16) - t[:-1].astype(np.int16) + 128) % 256
    return zlib.compress(d.astype(np.uint8).tobytes())


def write_exr(path: str | os.PathLike, pixels: np.ndarray, channels: list[str],
              pixel_type: int | list[int] = 2, compression: str = "zip",
              channel_order: list[str] | None = None) -> None:
    """Writes a single-part scanline EXR atomically (temp file in the same folder, then rename).

    Args:
        path: output file.
        pixels: values per channel, row 0 = the top row (as stored in files). [H, W, C]
        channels: one name per channel of ``pixels`` (stored sorted by name, as EXR requires).
        pixel_type: 1 = half, 2 = float (per channel or one for all).
        compression: "zip" (16 lines per chunk), "zips" or "none".
        channel_order: written as the ``fateChannelOrder`` string attribute (default: ``channels``).
    """
    path = Path(path)
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    H, W, C = pixels.shape
    if len(channels) != C or len(set(channels)) != C:
        raise ExrError(f"{path}: {C} channels need {C} unique names, found {channels}")
    ptypes = [pixel_type] * C if isinstance(pixel_type, int) else list(pixel_type)
    if any(p not in (1, 2) for p in ptypes):
        raise ExrError(f"{path}: pixel types must be 1 (half) or 2 (float), found {ptypes}")
    order = sorted(range(C), key=lambda i: channels[i])
    names = [channels[i] for i in order]
    types = [ptypes[i] for i in order]
    comp = _COMPRESSION[compression]

    chlist = b"".join(n.encode() + b"\0" + struct.pack("<iB3xii", t, 0, 1, 1) for n, t in zip(names, types)) + b"\0"
    header = struct.pack("<iI", MAGIC, 2)
    header += _attr("channels", "chlist", chlist)
    header += _attr("compression", "compression", bytes([comp]))
    header += _attr("dataWindow", "box2i", struct.pack("<iiii", 0, 0, W - 1, H - 1))
    header += _attr("displayWindow", "box2i", struct.pack("<iiii", 0, 0, W - 1, H - 1))
    header += _attr("lineOrder", "lineOrder", bytes([0]))
    header += _attr("pixelAspectRatio", "float", struct.pack("<f", 1.0))
    header += _attr("screenWindowCenter", "v2f", struct.pack("<ff", 0.0, 0.0))
    header += _attr("screenWindowWidth", "float", struct.pack("<f", 1.0))
    header += _attr(CHANNEL_ORDER_ATTR, "string", ",".join(channel_order or channels).encode())
    header += b"\0"

    planes = [np.ascontiguousarray(pixels[:, :, i].astype(_PIXEL_TYPES[t])) for i, t in zip(order, types)]
    lines = _LINES_PER_CHUNK[comp]
    chunks = []
    for y0 in range(0, H, lines):
        y1 = min(H, y0 + lines)
        raw = b"".join(plane[y].tobytes() for y in range(y0, y1) for plane in planes)
        data = raw
        if comp in (2, 3):
            packed = _zip_compress(raw)
            if len(packed) < len(raw):
                data = packed
        chunks.append(struct.pack("<ii", y0, len(data)) + data)
    offset = len(header) + 8 * len(chunks)
    table = []
    for c in chunks:
        table.append(offset)
        offset += len(c)
    body = header + struct.pack(f"<{len(table)}Q", *table) + b"".join(chunks)

    write_bytes(path, body)
