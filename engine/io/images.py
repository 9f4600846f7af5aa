"""Image file IO: PNG/JPEG through imageio, OpenEXR through the OpenEXR 3.x Python API.

Arrays are ``[H, W, C]`` with row 0 the *top* row of the image (as stored in files;
docs/ARCHITECTURE.md, "UV"). 8-bit files hold encoded (sRGB) values, returned unchanged
as floats in [0, 1]; EXR files hold floats returned exactly as stored (no colour
transform). Every write is atomic (:func:`engine.io.atomic.atomic_path`), so a reader never
sees a half-written file.

Errors are :class:`ImageIOError` (a :class:`~engine.errors.FateError`) naming the file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.errors import FateError
from engine.io.atomic import atomic_path

log = logging.getLogger(__name__)

__all__ = ["ImageIOError", "read_image", "write_png", "write_exr", "read_exr"]

#: Header attribute in which :func:`write_exr` records the caller's channel order
#: (EXR stores channels sorted by name).
EXR_CHANNEL_ORDER_ATTR = "fateChannelOrder"

# Order used for channels of files that lack ``EXR_CHANNEL_ORDER_ATTR``.
_CANONICAL_RANK = {"Y": 0, "R": 1, "G": 2, "B": 3, "A": 4}
_DEFAULT_NAMES = {1: ["Y"], 2: ["R", "G"], 3: ["R", "G", "B"], 4: ["R", "G", "B", "A"]}


class ImageIOError(FateError):
    """An image file is missing, unreadable, or has an unsupported layout or dtype."""



def _to_float01(arr: np.ndarray, path: Path) -> np.ndarray:
    """Integer/bool pixel array → float32 in [0, 1] (value / dtype max)."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / np.float32(65535.0)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32)
    raise ImageIOError(f"{path}: unsupported pixel dtype {arr.dtype} "
                       "(expected 8- or 16-bit unsigned integers, bool or float)")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads a PNG/JPEG (imageio) or OpenEXR file.

    Args:
        path: image file.
    Returns:
        Pixels ``[H, W, C]`` float32, row 0 = top row. 8/16-bit files are divided by
        255/65535 (encoded values unchanged, so sRGB files stay sRGB); EXR values are
        returned as stored (half → float32 exactly). C is 1 for gray, 2 for gray+alpha,
        3 for RGB, 4 for RGBA (EXR: the file's channel count, see :func:`read_exr`).
    Raises:
        ImageIOError: missing or unreadable file, unsupported dtype.
    """
    path = Path(path)
    if path.suffix.lower() == ".exr":
        return read_exr(path)[0]
    if not path.is_file():
        raise ImageIOError(f"{path}: image file not found")
    import imageio.v3 as iio

    try:
        arr = np.asarray(iio.imread(path, plugin="pillow"))
    except Exception as e:  # imageio raises many types (OSError, ValueError, plugin errors)
        raise ImageIOError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ImageIOError(f"{path}: expected a single 2D image, found array of shape {arr.shape}")
    return _to_float01(arr, path)


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Writes an 8-bit PNG atomically.

    Args:
        path: output file (``.png``); parent folders are created.
        array: ``[H, W]`` or ``[H, W, C]`` with C in {1, 2, 3, 4}; uint8 is written as
            is, floats are clipped to [0, 1] and rounded to ``round(255 · v)``.
            Row 0 = top row; values are written unchanged (encode sRGB before if needed).
    Raises:
        ImageIOError: wrong shape/dtype, NaN values, or the write failed.
    """
    path = Path(path)
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (2, 3, 4))):
        raise ImageIOError(f"{path}: write_png expects [H, W] or [H, W, C] with C in 1..4, "
                           f"found shape {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageIOError(f"{path}: write_png got NaN/Inf values")
        arr = np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ImageIOError(f"{path}: write_png expects uint8 or float in [0, 1], found {arr.dtype}")
    import imageio.v3 as iio

    try:
        with atomic_path(path) as tmp:
            iio.imwrite(tmp, np.ascontiguousarray(arr), plugin="pillow", extension=".png")
    except OSError as e:
        raise ImageIOError(f"{path}: cannot write PNG ({e})") from e


def write_exr(path: str | os.PathLike, array: np.ndarray,
              channel_names: Sequence[str] | None = None, half: bool = False) -> None:
    """Writes a scanline OpenEXR file (ZIP compression) atomically.

    The channel order given here is recorded in the header attribute
    ``fateChannelOrder`` so :func:`read_exr` returns the channels in the same order
    (EXR itself stores channels sorted by name).

    Args:
        path: output file (``.exr``); parent folders are created.
        array: ``[H, W]`` or ``[H, W, C]`` floats (written as float32, or float16 when
            ``half``); row 0 = top row. Values are written as given (linear data,
            no transform).
        channel_names: one unique name per channel; default Y / R,G / R,G,B / R,G,B,A
            for C = 1..4 (required for C > 4).
        half: store 16-bit half floats instead of 32-bit floats.
    Raises:
        ImageIOError: wrong shape, bad channel names, or the write failed.
    """
    import OpenEXR

    path = Path(path)
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] < 1 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageIOError(f"{path}: write_exr expects [H, W] or [H, W, C], found shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ImageIOError(f"{path}: write_exr expects a float array, found {arr.dtype}")
    c = arr.shape[2]
    if channel_names is None:
        if c not in _DEFAULT_NAMES:
            raise ImageIOError(f"{path}: {c} channels need explicit channel_names")
        names = list(_DEFAULT_NAMES[c])
    else:
        names = [str(n) for n in channel_names]
    if len(names) != c:
        raise ImageIOError(f"{path}: {len(names)} channel names {names} for {c} channels")
    if len(set(names)) != c or any(not n or "," in n for n in names):
        raise ImageIOError(f"{path}: channel names must be unique, non-empty and without commas, "
                           f"found {names}")
    dtype = np.float16 if half else np.float32
    channels = {n: np.ascontiguousarray(arr[:, :, i].astype(dtype)) for i, n in enumerate(names)}
    header = {
        "compression": OpenEXR.ZIP_COMPRESSION,
        "type": OpenEXR.scanlineimage,
        EXR_CHANNEL_ORDER_ATTR: ",".join(names),
    }
    try:
        with atomic_path(path) as tmp:
            with OpenEXR.File(header, channels) as f:
                f.write(str(tmp))
    except (OSError, RuntimeError, TypeError, ValueError) as e:
        raise ImageIOError(f"{path}: cannot write EXR ({type(e).__name__}: {e})") from e


def read_exr(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """Reads a single-part scanline or tiled OpenEXR file.

    Channel order: the order recorded by :func:`write_exr` if present; otherwise
    Y, R, G, B, A first (in that order), then the remaining names alphabetically.

    Args:
        path: ``.exr`` file.
    Returns:
        (pixels ``[H, W, C]`` float32 as stored (half and float exactly; uint32 cast),
        channel names ``[C]``).
    Raises:
        ImageIOError: missing or unreadable file, subsampled or differently sized channels.
    """
    import OpenEXR

    path = Path(path)
    if not path.is_file():
        raise ImageIOError(f"{path}: EXR file not found")
    try:
        with OpenEXR.File(str(path), separate_channels=True) as f:
            # Copy what we need while the file is open: the header dict and the
            # channel arrays are views that the File releases on close.
            recorded = f.header().get(EXR_CHANNEL_ORDER_ATTR)
            recorded = str(recorded) if isinstance(recorded, str) else None
            channels = {str(name): np.array(ch.pixels, copy=True)
                        for name, ch in f.channels().items()}
    except (OSError, RuntimeError, TypeError, ValueError) as e:
        raise ImageIOError(f"{path}: cannot read EXR ({type(e).__name__}: {e})") from e
    if not channels:
        raise ImageIOError(f"{path}: EXR file has no channels")
    names = list(channels)
    if recorded is not None and sorted(recorded.split(",")) == sorted(names):
        names = recorded.split(",")
    else:
        names.sort(key=lambda n: (_CANONICAL_RANK.get(n, len(_CANONICAL_RANK)), n))
    shapes = {n: channels[n].shape for n in names}
    first = shapes[names[0]]
    if len(first) != 2 or any(s != first for s in shapes.values()):
        raise ImageIOError(f"{path}: channels must all be full-resolution 2D planes, "
                           f"found shapes {shapes}")
    out = np.stack([channels[n].astype(np.float32) for n in names], axis=-1)
    return out, names
