"""Checks shared by the dataset readers: image headers, float files, finiteness, rigid transforms.

Every check raises :class:`~engine.errors.DatasetError` naming the file and the field.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import DatasetError

#: PNG colour types (IHDR) → channel count.
_PNG_COLOR_TYPES = {0: ("gray", 1), 2: ("RGB", 3), 3: ("palette", 1), 4: ("gray+alpha", 2),
                    6: ("RGBA", 4)}


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, read without decoding pixels."""

    width: int
    height: int
    channels: int      # 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA (palette: 1)
    bit_depth: int     # bits per channel
    mode: str          # "RGB", "RGBA", "gray", "gray+alpha", "palette", or PIL's mode


def read_image_header(path: Path) -> ImageHeader:
    """Reads size and pixel format from a PNG's IHDR, or from PIL (other formats).

    Raises:
        DatasetError: the file is missing or not a readable image.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(33)
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: file not found") from e
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e})") from e
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 29 and head[12:16] == b"IHDR":
        w, h, depth, ctype = struct.unpack(">IIBB", head[16:26])
        name, ch = _PNG_COLOR_TYPES.get(ctype, (f"color type {ctype}", 0))
        return ImageHeader(int(w), int(h), ch, int(depth), name)
    try:
        from PIL import Image

        with Image.open(path) as im:
            mode, (w, h) = im.mode, im.size
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, ...
        raise DatasetError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e
    known = {"RGB": (3, 8), "RGBA": (4, 8), "L": (1, 8), "LA": (2, 8), "1": (1, 1),
             "I;16": (1, 16), "P": (1, 8)}
    ch, depth = known.get(mode, (0, 0))
    named = {"L": "gray", "LA": "gray+alpha", "1": "gray", "I;16": "gray", "P": "palette"}
    return ImageHeader(int(w), int(h), ch, depth, named.get(mode, mode))


def check_image_file(path: Path, width: int, height: int, field_desc: str) -> ImageHeader:
    """Checks an image exists, is ``width`` × ``height`` and 8-bit RGB or RGBA.

    Args:
        path: image file.
        width, height: expected size in pixels.
        field_desc: where the path came from, e.g. ``"transforms_train.json frames[3].file_path"``.
    Raises:
        DatasetError: naming the file, the field, expected vs found.
    """
    if not path.is_file():
        raise DatasetError(f"{path}: image file not found ({field_desc})")
    hd = read_image_header(path)
    if (hd.width, hd.height) != (width, height):
        raise DatasetError(f"{path}: image is {hd.width}x{hd.height} px, expected "
                           f"{width}x{height} (w x h) ({field_desc})")
    if hd.mode not in ("RGB", "RGBA") or hd.bit_depth != 8:
        raise DatasetError(f"{path}: image is {hd.bit_depth}-bit {hd.mode}, expected 8-bit RGB "
                           f"or RGBA ({field_desc}); convert it, e.g. to 8-bit RGB PNG")
    return hd


def check_mask_file(path: Path, width: int, height: int, field_desc: str) -> ImageHeader:
    """Checks a mask exists, is ``width`` × ``height`` and gray/RGB(A) (1, 8 or 16 bit).

    Raises:
        DatasetError: naming the file, the field, expected vs found.
    """
    if not path.is_file():
        raise DatasetError(f"{path}: mask file not found ({field_desc})")
    hd = read_image_header(path)
    if (hd.width, hd.height) != (width, height):
        raise DatasetError(f"{path}: mask is {hd.width}x{hd.height} px, expected "
                           f"{width}x{height} (w x h) ({field_desc})")
    if hd.mode not in ("gray", "gray+alpha", "RGB", "RGBA") or hd.bit_depth not in (1, 8, 16):
        raise DatasetError(f"{path}: mask is {hd.bit_depth}-bit {hd.mode}, expected an 8-bit "
                           f"grayscale (or RGB) image ({field_desc})")
    return hd


def read_float_file(path: Path, field_desc: str) -> np.ndarray:
    """Reads whitespace-separated floats from a text file (``np.savetxt`` layout).

    Returns:
        values [N] float64.
    Raises:
        DatasetError: missing file, unparsable text, empty, NaN/Inf — naming file and field.
    """
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: file not found ({field_desc})") from e
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e}) ({field_desc})") from e
    try:
        arr = np.array(text.split(), dtype=np.float64)
    except ValueError as e:
        raise DatasetError(f"{path}: not a list of numbers ({field_desc}): {e}") from e
    if arr.size == 0:
        raise DatasetError(f"{path}: empty ({field_desc})")
    check_finite(arr, f"{path}", field_desc)
    return arr


def check_finite(arr: np.ndarray, where: str, field_desc: str) -> None:
    """Raises DatasetError naming ``where`` and ``field_desc`` if ``arr`` has NaN/Inf."""
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.flatnonzero(bad.reshape(-1))[0])
        raise DatasetError(f"{where}: {field_desc} has {int(bad.sum())} NaN/Inf value(s) "
                           f"(first at flat index {first})")


def stack_vectors(vectors: list[np.ndarray], sources: list[str], field_desc: str,
                  expected_len: int | None = None) -> np.ndarray:
    """Stacks per-frame vectors, checking that they all have the same length.

    Args:
        vectors: one 1D array per frame. [T] of [N]
        sources: file (or file + key) each vector came from. [T]
        field_desc: parameter name for messages, e.g. ``"flame/exp"``.
        expected_len: required N, if fixed (e.g. 6 for a 6D rotation).
    Returns:
        [T, N] float64.
    Raises:
        DatasetError: a ragged vector, naming its source, the field and both lengths.
    """
    n0 = expected_len if expected_len is not None else len(vectors[0])
    for v, src in zip(vectors, sources):
        if v.ndim != 1 or len(v) != n0:
            ref = (f"expected {n0}" if expected_len is not None
                   else f"first frame ({sources[0]}) has {n0}")
            raise DatasetError(f"{src}: {field_desc} has {v.size} values, {ref} "
                               "(ragged parameters)")
    return np.stack(vectors).astype(np.float64)


def check_rigid(m: np.ndarray, where: str, field_desc: str, tol: float = 1e-4) -> np.ndarray:
    """Checks a 3×4 or 4×4 rigid transform (finite, orthonormal rotation, det +1).

    Returns:
        the transform as 4×4 float64.
    Raises:
        DatasetError: naming ``where`` and ``field_desc``, with the defect found.
    """
    try:
        a = np.asarray(m, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{where}: {field_desc} is not a numeric matrix ({e})") from e
    if a.shape not in ((3, 4), (4, 4)):
        raise DatasetError(f"{where}: {field_desc} has shape {a.shape}, expected 4x4 or 3x4")
    check_finite(a, where, field_desc)
    if a.shape == (3, 4):
        a = np.vstack([a, [0.0, 0.0, 0.0, 1.0]])
    if not np.array_equal(a[3], [0.0, 0.0, 0.0, 1.0]):
        raise DatasetError(f"{where}: {field_desc} last row is {a[3].tolist()}, expected [0, 0, 0, 1]")
    r = a[:3, :3]
    err = float(np.abs(r @ r.T - np.eye(3)).max())
    det = float(np.linalg.det(r))
    if err > tol or det < 0:
        raise DatasetError(f"{where}: {field_desc} is not a rigid transform "
                           f"(|R Rᵀ − I| = {err:.2e}, det R = {det:.4f}; expected a rotation "
                           "without scale or mirroring)")
    return a


def numeric_sort_key(name: str) -> tuple:
    """Sort key: frame names by their integer value when numeric (FATE sorts INSTA frames
    with ``int(stem)``), other names after them, alphabetically."""
    try:
        return (0, int(name), name)
    except ValueError:
        return (1, 0, name)
