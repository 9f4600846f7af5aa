"""Restricted unpickler for FLAME model pickles (FLAME 2020 ``generic_model.pkl``, FLAME 2023).

The official FLAME pickles were written by Python 2 with ``chumpy`` installed: some
arrays (``shapedirs``, sometimes ``v_template``/``weights``) are ``chumpy.ch.Ch``
objects, ``J_regressor`` is a ``scipy.sparse.csc_matrix``. A pickle can run any code
it names, so this loader never imports what the file asks for. ``find_class``
answers from a fixed table:

- numpy array reconstruction (``numpy.core.multiarray._reconstruct``, its
  ``numpy._core`` twin, ``numpy.ndarray``, ``numpy.dtype``, ``...multiarray.scalar``,
  ``...numeric._frombuffer``);
- ``scipy.sparse`` csc/csr/coo matrices and arrays, under their old and new module paths;
- every class under the module ``chumpy`` becomes a stand-in that keeps the array
  chumpy stores in its state dict under ``'x'`` (or the first positional argument
  of a reduce-based form); chumpy itself is never imported;
- a few harmless builtins that Python 2/3 pickles use for containers (``set``,
  ``frozenset``, ``object``, bytes via ``_codecs.encode``) and a checked
  ``copyreg._reconstructor``.

Every other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) is
refused with :class:`~engine.errors.HeadModelError` naming the file and
``module.class`` before anything is called.
"""

from __future__ import annotations

import codecs
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from engine.errors import HeadModelError

logger = logging.getLogger(__name__)

__all__ = ["load_flame_pickle", "RestrictedUnpickler"]


class _ChumpyStandIn:
    """Stand-in for any ``chumpy`` class: remembers the array a chumpy object carried.

    ``chumpy.ch.Ch.__getstate__`` pickles the instance ``__dict__`` (minus weak
    references); its value lives under ``'x'``. Reduce-based forms (``Ch(array)``)
    pass the array as the first positional argument.
    """

    _chumpy_name = "chumpy.?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._value = args[0] if args else kwargs.get("x")
        self._state_keys: list[str] = []

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and (
            state[0] is None or isinstance(state[0], dict)
        ):
            # (dict state, slot state) as produced for classes with __slots__.
            merged: dict = {}
            for part in state:
                if isinstance(part, dict):
                    merged.update(part)
            state = merged
        if isinstance(state, dict):
            self._state_keys = [str(k) for k in state]
            if "x" in state:
                self._value = state["x"]
            elif "_value" in state:
                self._value = state["_value"]
        elif state is not None and getattr(self, "_value", None) is None:
            self._value = state

    def to_array(self) -> np.ndarray | None:
        """The stored value as a numpy array, or None if this object kept none."""
        value = getattr(self, "_value", None)
        if isinstance(value, _ChumpyStandIn):
            return value.to_array()
        if value is None:
            return None
        try:
            return np.asarray(value)
        except Exception:  # noqa: BLE001 - any failure means "no usable value"
            return None


_STANDIN_CACHE: dict[str, type] = {}


def _chumpy_standin(module: str, name: str) -> type:
    key = f"{module}.{name}"
    cls = _STANDIN_CACHE.get(key)
    if cls is None:
        cls = type(f"ChumpyStandIn_{name}", (_ChumpyStandIn,), {"_chumpy_name": key})
        _STANDIN_CACHE[key] = cls
    return cls


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """Checked replacement of ``copyreg._reconstructor`` (protocol 0/1 pickles).

    Only creates instances of classes this unpickler itself handed out.
    """
    if base is not object or not isinstance(cls, type):
        raise pickle.UnpicklingError(
            f"copyreg._reconstructor with base {base!r} is not allowed"
        )
    if not (issubclass(cls, _ChumpyStandIn) or cls in _SPARSE_CLASSES):
        raise pickle.UnpicklingError(
            f"copyreg._reconstructor for class {cls!r} is not allowed"
        )
    obj = object.__new__(cls)
    if issubclass(cls, _ChumpyStandIn):
        obj._value = None
        obj._state_keys = []
    if state is not None:
        raise pickle.UnpicklingError("copyreg._reconstructor with a base state is not allowed")
    return obj


def _safe_codecs_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 uses it to pickle ``bytes`` at protocol <= 2."""
    if not isinstance(obj, str) or codecs.lookup(encoding).name not in ("iso8859-1", "utf-8"):
        raise pickle.UnpicklingError(f"_codecs.encode({type(obj).__name__}, {encoding!r}) is not allowed")
    return codecs.encode(obj, encoding, errors)


_SPARSE_CLASSES: tuple[type, ...] = tuple(
    c
    for c in (
        sp.csc_matrix,
        sp.csr_matrix,
        sp.coo_matrix,
        getattr(sp, "csc_array", None),
        getattr(sp, "csr_array", None),
        getattr(sp, "coo_array", None),
    )
    if c is not None
)


def _numpy_attr(path: str) -> Any:
    """Resolves a numpy internal by dotted path on whichever numpy is installed."""
    import importlib

    short = path.replace("numpy._core.", "").replace("numpy.core.", "")
    mod_name, _, attr = short.rpartition(".")
    for root in ("numpy._core", "numpy.core"):
        try:
            mod = importlib.import_module(f"{root}.{mod_name}")
        except ImportError:
            continue
        if hasattr(mod, attr):
            return getattr(mod, attr)
    raise AttributeError(path)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "object"): object,
        ("__builtin__", "set"): set,
        ("__builtin__", "frozenset"): frozenset,
        ("__builtin__", "object"): object,
        ("copyreg", "_reconstructor"): _safe_reconstructor,
        ("copy_reg", "_reconstructor"): _safe_reconstructor,
        ("_codecs", "encode"): _safe_codecs_encode,
    }
    for root in ("numpy.core", "numpy._core"):
        for sub, attr in (
            ("multiarray", "_reconstruct"),
            ("multiarray", "scalar"),
            ("numeric", "_frombuffer"),
        ):
            try:
                table[(f"{root}.{sub}", attr)] = _numpy_attr(f"{root}.{sub}.{attr}")
            except AttributeError:
                pass
    for cls in _SPARSE_CLASSES:
        fmt = cls.__name__.split("_")[0]  # csc / csr / coo
        for mod in ("scipy.sparse", f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}", cls.__module__):
            table[(mod, cls.__name__)] = cls
    return table


_ALLOWED = _allowed_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves globals only from a fixed allow-list.

    Args:
        file: binary file object positioned at the pickle.
        source: the path shown in error messages.
    """

    def __init__(self, file: Any, source: str | os.PathLike) -> None:
        super().__init__(file, encoding="latin1", fix_imports=False)
        self._source = str(source)

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - pickle API
        if module == "chumpy" or module.startswith("chumpy."):
            return _chumpy_standin(module, name)
        found = _ALLOWED.get((module, name))
        if found is not None:
            return found
        raise HeadModelError(
            f"{self._source}: refusing to load global '{module}.{name}': a FLAME model "
            f"pickle may only contain numpy arrays, scipy.sparse matrices and chumpy arrays "
            f"(a pickle can run arbitrary code)"
        )

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102 - pickle API
        raise HeadModelError(f"{self._source}: persistent ids are not allowed in a FLAME model pickle")


def _to_plain(key: str, value: Any, source: str) -> np.ndarray | sp.spmatrix | None:
    """Converts one top-level pickle value to numpy / scipy.sparse, or None to drop it."""
    if isinstance(value, _ChumpyStandIn):
        arr = value.to_array()
        if arr is None:
            logger.warning(
                "%s: key %r is a %s without a stored value (state keys %s); dropped",
                source, key, value._chumpy_name, value._state_keys,
            )
        return arr
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            logger.warning("%s: key %r holds an object array %s; dropped", source, key, value.shape)
            return None
        return value
    if sp.issparse(value):
        return value
    if isinstance(value, (bool, int, float, str, bytes, list, tuple, np.generic)):
        try:
            return np.asarray(value)
        except Exception:  # noqa: BLE001
            logger.warning("%s: key %r (%s) is not array-like; dropped", source, key, type(value).__name__)
            return None
    logger.warning("%s: key %r has unsupported type %s; dropped", source, key, type(value).__name__)
    return None


def load_flame_pickle(path: str | os.PathLike) -> dict[str, np.ndarray | sp.spmatrix]:
    """Loads a FLAME model pickle without executing code from it.

    Args:
        path: ``generic_model.pkl`` (FLAME 2020), ``flame2023*.pkl`` or any pickle of
            a dict of numpy / chumpy arrays and scipy.sparse matrices (protocol 0-5,
            Python 2 pickles read with ``encoding='latin1'``).
    Returns:
        The pickled dict with chumpy objects replaced by ``np.ndarray`` (their
        values), numpy arrays and scipy.sparse matrices kept, Python scalars and
        strings as 0-d arrays; entries that have no usable value are dropped
        (logged).
    Raises:
        HeadModelError: the file is missing or unreadable, is not a dict, or names a
            global outside the allow-list (message names the file and ``module.class``).
    """
    path = Path(path)
    if not path.is_file():
        raise HeadModelError(f"FLAME pickle not found: {path}")
    try:
        with open(path, "rb") as fh:
            obj = RestrictedUnpickler(fh, path).load()
    except HeadModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad model file
        raise HeadModelError(f"{path}: cannot read FLAME pickle: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, dict):
        raise HeadModelError(f"{path}: expected a pickled dict of arrays, found {type(obj).__name__}")
    out: dict[str, np.ndarray | sp.spmatrix] = {}
    for key, value in obj.items():
        k = key.decode("latin1") if isinstance(key, bytes) else str(key)
        plain = _to_plain(k, value, str(path))
        if plain is not None:
            out[k] = plain
    return out
