"""engine/flame_pickle.py: the restricted unpickler for FLAME model files."""

from __future__ import annotations

import os
import pickle
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from engine.errors import HeadModelError
from engine.io.flame_pickle import load_flame_pickle


@pytest.fixture
def small_arrays(synthetic_flame_arrays):
    rng = np.random.default_rng(0)
    verts = rng.normal(size=(40, 3))
    faces = rng.integers(0, 40, size=(60, 3))
    return synthetic_flame_arrays(verts, faces, rng, n_components=12)


def _check_same(loaded, arrays):
    for k, v in arrays.items():
        if sp.issparse(v):
            assert sp.issparse(loaded[k]), k
            np.testing.assert_array_equal(loaded[k].toarray(), v.toarray())
        elif isinstance(v, str):
            assert str(loaded[k]) == v
        else:
            assert isinstance(loaded[k], np.ndarray), k
            assert loaded[k].dtype == np.asarray(v).dtype, k
            np.testing.assert_array_equal(loaded[k], v)


def test_flame2020_style_pickle_with_chumpy(tmp_path, small_arrays, write_flame2020_pickle):
    path = tmp_path / "generic_model.pkl"
    write_flame2020_pickle(path, small_arrays)
    assert "chumpy" not in sys.modules  # loading must not need chumpy
    assert b"chumpy.ch" in path.read_bytes()
    loaded = load_flame_pickle(path)
    _check_same(loaded, small_arrays)
    assert "chumpy" not in sys.modules


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
def test_protocols_and_reconstructor_forms(tmp_path, protocol, fake_chumpy):
    # protocols 0/1 go through copyreg._reconstructor, 2+ through NEWOBJ; 5 may use _frombuffer
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    with fake_chumpy() as ch:
        data = pickle.dumps(
            {"shapedirs": ch.Ch(x), "J_regressor": sp.csr_matrix(np.eye(3)), "f": np.arange(6).reshape(2, 3)},
            protocol=protocol,
        )
    (tmp_path / "m.pkl").write_bytes(data)
    loaded = load_flame_pickle(tmp_path / "m.pkl")
    np.testing.assert_array_equal(loaded["shapedirs"], x)
    np.testing.assert_array_equal(loaded["J_regressor"].toarray(), np.eye(3))
    np.testing.assert_array_equal(loaded["f"], np.arange(6).reshape(2, 3))


def test_reduce_based_chumpy_form(tmp_path, fake_chumpy):
    x = np.linspace(0, 1, 7)
    with fake_chumpy() as ch:
        ch.Ch.__reduce__ = lambda self: (type(self), (self.x,))
        data = pickle.dumps({"weights": ch.Ch(x)}, protocol=2)
    (tmp_path / "r.pkl").write_bytes(data)
    np.testing.assert_array_equal(load_flame_pickle(tmp_path / "r.pkl")["weights"], x)


def test_chumpy_object_without_value_is_dropped(tmp_path, caplog, fake_chumpy):
    with fake_chumpy() as ch:
        data = pickle.dumps({"J": ch.add(ch.Ch(np.ones(3)), ch.Ch(np.ones(3))), "f": np.zeros((1, 3))}, protocol=2)
    (tmp_path / "op.pkl").write_bytes(data)
    loaded = load_flame_pickle(tmp_path / "op.pkl")
    assert set(loaded) == {"f"}
    assert "chumpy.ch_ops.add" in caplog.text


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_os_system_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v_template": np.zeros((1, 3)), "x": _Evil(marker)}, protocol=2))
    with pytest.raises(HeadModelError) as info:
        load_flame_pickle(path)
    msg = str(info.value)
    assert f"{os.system.__module__}.system" in msg  # 'posix.system' on Linux: how pickle names it
    assert str(path) in msg
    assert not marker.exists()


def test_os_system_by_name_protocol0(tmp_path):
    marker = tmp_path / "pwned0"
    path = tmp_path / "evil0.pkl"
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(HeadModelError, match=r"'os\.system'") as info:
        load_flame_pickle(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload, name",
    [
        (b"cbuiltins\neval\n(S'1+1'\ntR.", "builtins.eval"),
        (b"c__builtin__\neval\n(S'1+1'\ntR.", "__builtin__.eval"),
        (b"csubprocess\nPopen\n(S'true'\ntR.", "subprocess.Popen"),
        (b"cnumpy\nload\n(S'x'\ntR.", "numpy.load"),
        (b"cscipy.sparse\nload_npz\n(S'x'\ntR.", "scipy.sparse.load_npz"),
    ],
)
def test_other_globals_are_refused(tmp_path, payload, name):
    path = tmp_path / "g.pkl"
    path.write_bytes(payload)
    with pytest.raises(HeadModelError, match=name.replace(".", r"\.")):
        load_flame_pickle(path)


def test_not_a_dict_and_garbage(tmp_path):
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(HeadModelError, match="expected a pickled dict"):
        load_flame_pickle(tmp_path / "list.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"\x00\x01 not a pickle")
    with pytest.raises(HeadModelError, match="cannot read FLAME pickle"):
        load_flame_pickle(tmp_path / "junk.pkl")
    with pytest.raises(HeadModelError, match="not found"):
        load_flame_pickle(tmp_path / "missing.pkl")


def test_real_topology_pickle(flame2020_pickle, flame_arrays):
    loaded = load_flame_pickle(flame2020_pickle)
    _check_same(loaded, flame_arrays)
    assert loaded["shapedirs"].shape == (5023, 3, 400)
    assert sp.issparse(loaded["J_regressor"])
