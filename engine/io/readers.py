"""Reading the engine's own files with errors that name the file: safetensors, ``.npz``, JSON.

Corrupt or truncated files make the underlying libraries raise their own exception types
(``SafetensorError``, ``zipfile.BadZipFile``, ``EOFError``, ``json.JSONDecodeError``, ...); every
reader here turns them into the :class:`~engine.errors.FateError` subclass the caller names, with
the path and what is wrong. Each reader reads the file's bytes once and can check them against a
sha256 recorded elsewhere (a manifest), so what is parsed is exactly what was verified.

torch is imported only by :func:`load_safetensors`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import FateError

log = logging.getLogger(__name__)


def read_bytes(path: str | os.PathLike, error: type[FateError], expected_sha256: str | None = None,
               what: str = "file") -> bytes:
    """A file's bytes, optionally checked against a sha256.

    Args:
        path: the file.
        error: the FateError subclass to raise.
        expected_sha256: hex digest the bytes must have (None: no check).
        what: what the file is, for messages (e.g. ``"checkpoint"``).
    Raises:
        error: the file is missing or unreadable, or its sha256 differs (naming both digests).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise error(f"{path}: {what} not found") from exc
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror or exc})") from exc
    if expected_sha256 is not None:
        found = hashlib.sha256(data).hexdigest()
        if found != expected_sha256:
            raise error(f"{path}: {what} does not match its manifest (sha256 {found[:12]}…, expected "
                        f"{expected_sha256[:12]}…): the file was changed or replaced after it was written")
    return data


def load_safetensors(path: str | os.PathLike, error: type[FateError], device: str = "cpu",
                     expected_sha256: str | None = None, what: str = "file") -> dict:
    """Tensors of a safetensors file (name → torch tensor on ``device``).

    Raises:
        error: missing, unreadable, truncated or corrupt file, or a sha256 mismatch.
    """
    from safetensors.torch import load as load_bytes

    data = read_bytes(path, error, expected_sha256, what)
    try:
        tensors = load_bytes(data)
    except Exception as exc:  # SafetensorError and friends: the file is corrupt or truncated
        raise error(f"{path}: {what} is not a readable safetensors file "
                    f"({type(exc).__name__}: {exc}); it is corrupt or truncated") from exc
    if str(device) != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors


def load_npz(path: str | os.PathLike, error: type[FateError], expected_sha256: str | None = None,
             what: str = "file") -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` file read without pickle (name → numpy array).

    Raises:
        error: missing, unreadable, truncated or corrupt file, pickled objects, or a sha256
            mismatch.
    """
    data = read_bytes(path, error, expected_sha256, what)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise error(f"{path}: {what} is not a readable .npz file ({type(exc).__name__}: {exc}); "
                    "it is corrupt, truncated or holds pickled objects") from exc


def load_json(path: str | os.PathLike, error: type[FateError], what: str = "file") -> Any:
    """A JSON file's value.

    Raises:
        error: missing, unreadable or invalid JSON (with the parser's line and column).
    """
    data = read_bytes(path, error, None, what)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise error(f"{path}: {what} is not valid JSON ({exc})") from exc


def load_manifest(path: str | os.PathLike, error: type[FateError], fmt: str, version: int, what: str) -> dict:
    """A JSON object with ``"format": fmt`` and a ``format_version`` no newer than ``version``
    (files without one are version 1).

    Raises:
        error: unreadable, not an object, another format, or a newer version (naming the file).
    """
    data = load_json(path, error, what)
    if not isinstance(data, dict) or data.get("format") != fmt:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise error(f"{path}: format is {found!r}, expected {fmt!r}")
    found_version = data.get("format_version", 1)
    if not isinstance(found_version, int) or isinstance(found_version, bool):
        raise error(f"{path}: format_version must be an integer, found {found_version!r}")
    if found_version > version:
        raise error(f"{path}: format_version {found_version} is newer than this engine reads ({version}); "
                    "update the engine")
    return data


def check_provenance(recorded: str | None, found: str, what: str, remedy: str, error: type[FateError],
                     force: bool) -> None:
    """Refuses data whose sha256 differs from the one recorded for it; with ``force`` it is used,
    with a warning. Nothing to check when nothing was recorded.

    Args:
        recorded: the digest written when the data was made (None / "": unknown).
        found: the digest of what is there now.
        what: the sentence naming the file and what it should be, e.g. "x is not the head model …".
        remedy: what the user can do, e.g. "restore it, retrain".
    Raises:
        error: the digests differ and ``force`` is not set.
    """
    if not recorded or found == recorded:
        return
    msg = f"{what} (sha256 {found[:12]}…, recorded {recorded[:12]}…)"
    if not force:
        raise error(f"{msg}; {remedy}, or pass force=true to use it anyway")
    log.warning("%s; using it anyway (force)", msg)


def check_finite_arrays(arrays: dict[str, Any], where: str, error: type[FateError]) -> None:
    """Raises ``error`` naming ``where`` and the first array holding NaN/Inf.

    Args:
        arrays: name → numpy array or torch tensor (non-float entries are skipped).
        where: the file (or object) the arrays come from.
    """
    for name, arr in arrays.items():
        if hasattr(arr, "detach"):  # torch tensor, without importing torch
            if not arr.is_floating_point():
                continue
            bad = int((~arr.detach().isfinite()).sum())
        else:
            a = np.asarray(arr)
            if a.dtype.kind not in "fc":
                continue
            bad = int((~np.isfinite(a)).sum())
        if bad:
            raise error(f"{where}: '{name}' has {bad} NaN/Inf value(s)")
