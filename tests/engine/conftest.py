"""Shared fixtures for the engine tests.

Head-model layer (obj_io / flame_pickle / head_model / mouth / uv):
- ``flame_template_path`` / ``flame_template``: the real FLAME texture-space template from
  ``../shared/flame`` (skipped with a reason where it is absent; never copied into the repo);
- ``fake_chumpy()``: installs throw-away ``chumpy`` / ``chumpy.ch`` / ``chumpy.ch_ops`` modules
  so that a test can write pickles that contain chumpy objects the way FLAME 2020's do;
- ``write_flame2020_pickle``: a FLAME 2020-style pickle (protocol 2, chumpy arrays, sparse
  J_regressor, uint32 ``f`` and ``kintree_table``) with synthetic random bases;
- ``flame2020_pickle``: that pickle for the real template's topology (session-scoped).
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import types
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import scipy.sparse as sp

_TEMPLATE_CANDIDATES = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "flame" / "head_template_mesh.obj",
    Path("/work/shared/flame/head_template_mesh.obj"),
)


def find_flame_template() -> Path | None:
    for p in _TEMPLATE_CANDIDATES:
        if p.is_file():
            return p.resolve()
    return None


@pytest.fixture(scope="session")
def flame_template_path() -> Path:
    p = find_flame_template()
    if p is None:
        pytest.skip("FLAME files not present: ../shared/flame/head_template_mesh.obj is missing")
    return p


@pytest.fixture(scope="session")
def flame_template(flame_template_path):
    from engine.io.obj import read_obj

    return read_obj(flame_template_path)


@contextlib.contextmanager
def fake_chumpy() -> Iterator[types.SimpleNamespace]:
    """Temporarily registers fake ``chumpy`` modules; yields their classes (Ch, add).

    ``Ch`` pickles like chumpy's: its ``__getstate__`` returns the instance dict, which
    holds the value under ``'x'`` next to bookkeeping entries (a set, a dict, flags).
    ``add`` is a chumpy op that stores children (``a``, ``b``) and no ``'x'``.
    """
    names = ("chumpy", "chumpy.ch", "chumpy.ch_ops")
    saved = {n: sys.modules.get(n) for n in names}

    def ch_init(self, x):
        self.x = np.asarray(x)
        self._dirty_vars = {"x"}
        self._itr = None
        self._depends_on_deps = {}
        self._make_dense = False
        self._make_sparse = False

    def getstate(self):
        return dict(self.__dict__)

    Ch = type("Ch", (), {"__module__": "chumpy.ch", "__init__": ch_init, "__getstate__": getstate})

    def add_init(self, a, b):
        self.a, self.b = a, b
        self._dirty_vars = set()

    add = type("add", (), {"__module__": "chumpy.ch_ops", "__init__": add_init, "__getstate__": getstate})
    root = types.ModuleType("chumpy")
    ch_mod = types.ModuleType("chumpy.ch")
    ops_mod = types.ModuleType("chumpy.ch_ops")
    ch_mod.Ch = Ch
    ops_mod.add = add
    root.ch, root.ch_ops = ch_mod, ops_mod
    sys.modules.update({"chumpy": root, "chumpy.ch": ch_mod, "chumpy.ch_ops": ops_mod})
    try:
        yield types.SimpleNamespace(Ch=Ch, add=add)
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def synthetic_flame_arrays(
    vertices: np.ndarray, faces: np.ndarray, rng: np.random.Generator, n_components: int = 400
) -> dict[str, np.ndarray | sp.spmatrix]:
    """FLAME-pickle arrays for a given topology with random bases (float64 like FLAME's).

    Returns keys v_template [V,3], f [F,3] uint32, shapedirs [V,3,K], posedirs [V,3,36],
    J_regressor csc [5,V] (rows sum to 1), weights [V,5] (rows sum to 1),
    kintree_table [2,5] uint32 (root parent = 2**32-1), J [5,3].
    """
    V = len(vertices)
    J = 5
    rows, cols, vals = [], [], []
    for j in range(J):
        idx = rng.choice(V, size=12, replace=False)
        w = rng.random(12) + 0.1
        rows += [j] * 12
        cols += idx.tolist()
        vals += (w / w.sum()).tolist()
    Jreg = sp.csc_matrix((vals, (rows, cols)), shape=(J, V))
    weights = rng.random((V, J)) ** 3
    weights /= weights.sum(axis=1, keepdims=True)
    return {
        "v_template": np.asarray(vertices, dtype=np.float64),
        "f": np.asarray(faces, dtype=np.uint32),
        "shapedirs": rng.normal(scale=2e-4, size=(V, 3, n_components)),
        "posedirs": rng.normal(scale=1e-3, size=(V, 3, (J - 1) * 9)),
        "J_regressor": Jreg,
        "weights": weights,
        "kintree_table": np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.uint32),
        "J": np.asarray(Jreg @ vertices),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def write_flame2020_pickle(path: Path, arrays: dict) -> None:
    """Writes ``arrays`` like FLAME 2020's generic_model.pkl: chumpy ``Ch`` for
    v_template, shapedirs and weights, protocol 2. The fake chumpy modules are removed
    again before this returns, so loading must not depend on them."""
    with fake_chumpy() as ch:
        d = dict(arrays)
        for k in ("v_template", "shapedirs", "weights"):
            d[k] = ch.Ch(d[k])
        with open(path, "wb") as fh:
            pickle.dump(d, fh, protocol=2)
    assert "chumpy" not in sys.modules


@pytest.fixture(scope="session")
def flame_arrays(flame_template) -> dict:
    return synthetic_flame_arrays(flame_template.vertices, flame_template.faces, np.random.default_rng(2020))


@pytest.fixture(scope="session")
def flame2020_pickle(tmp_path_factory, flame_arrays) -> Path:
    path = tmp_path_factory.mktemp("flame2020") / "generic_model.pkl"
    write_flame2020_pickle(path, flame_arrays)
    return path


@pytest.fixture(name="fake_chumpy")
def fake_chumpy_fixture():
    """The :func:`fake_chumpy` context manager (``with fake_chumpy() as ch: ch.Ch(x)``)."""
    return fake_chumpy


@pytest.fixture(name="synthetic_flame_arrays")
def synthetic_flame_arrays_fixture():
    """The :func:`synthetic_flame_arrays` builder."""
    return synthetic_flame_arrays


@pytest.fixture(name="write_flame2020_pickle")
def write_flame2020_pickle_fixture():
    """The :func:`write_flame2020_pickle` writer."""
    return write_flame2020_pickle
