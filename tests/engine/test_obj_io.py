"""engine/obj_io.py: reading and writing textured triangle meshes."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import HeadModelError
from engine.io.obj import ObjMesh, read_obj, write_obj


def test_read_polygons_are_fan_triangulated(tmp_path):
    p = tmp_path / "poly.obj"
    p.write_text(
        "# quad + pentagon, mixed corner forms\n"
        "mtllib x.mtl\no thing\n"
        "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 2 0.5 0\n"
        "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nvt 0.5 0.5\n"
        "vn 0 0 1\n"
        "usemtl skin\ns off\n"
        "f 1/1/1 2/2/1 3/3/1 4/4/1\n"
        "f -4/-4 5/5 -3/-3 -2/-2 -5/-5\n"  # negative (relative) indices
        "f 1//1 2//1 4//1\n"
    )
    m = read_obj(p)
    assert m.vertices.shape == (5, 3) and m.vertices.dtype == np.float32
    assert m.uvs.shape == (5, 2) and m.uvs.dtype == np.float32
    np.testing.assert_array_equal(
        m.faces, [[0, 1, 2], [0, 2, 3], [1, 4, 2], [1, 2, 3], [1, 3, 0], [0, 1, 3]]
    )
    np.testing.assert_array_equal(
        m.faces_uv, [[0, 1, 2], [0, 2, 3], [1, 4, 2], [1, 2, 3], [1, 3, 0], [-1, -1, -1]]
    )
    assert m.faces.dtype == np.int64 and m.faces_uv.dtype == np.int64


def test_write_read_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    mesh = ObjMesh(
        vertices=rng.normal(size=(20, 3)).astype(np.float32),
        uvs=rng.random((25, 2)).astype(np.float32),
        faces=rng.integers(0, 20, size=(30, 3)),
        faces_uv=rng.integers(0, 25, size=(30, 3)),
    )
    p = tmp_path / "sub" / "m.obj"
    write_obj(p, mesh)
    back = read_obj(p)
    # 6 decimals are written: 5e-7 rounding plus float32 representation
    np.testing.assert_allclose(back.vertices, mesh.vertices, atol=1e-6, rtol=0)
    np.testing.assert_allclose(back.uvs, mesh.uvs, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(back.faces, mesh.faces)
    np.testing.assert_array_equal(back.faces_uv, mesh.faces_uv)
    assert [q.name for q in p.parent.iterdir()] == ["m.obj"]  # no temp file left behind


def test_write_without_uvs(tmp_path):
    mesh = ObjMesh(
        vertices=np.eye(3, dtype=np.float32),
        uvs=np.zeros((0, 2), np.float32),
        faces=np.array([[0, 1, 2]]),
        faces_uv=np.zeros((0, 3), np.int64),
    )
    write_obj(tmp_path / "a.obj", mesh)
    back = read_obj(tmp_path / "a.obj")
    np.testing.assert_array_equal(back.faces, [[0, 1, 2]])
    np.testing.assert_array_equal(back.faces_uv, [[-1, -1, -1]])


@pytest.mark.parametrize(
    "text, match",
    [
        ("v 0 0 0\nv 1 0 0\nf 1 2 3\n", "out of range"),
        ("v 0 0 0\nf 1 2\n", "expected >= 3"),
        ("v 0 0 x\n", "malformed"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nf 1/1 2/2 3/1\n", "uv index out of range"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", "index 0"),
    ],
)
def test_bad_files_raise(tmp_path, text, match):
    p = tmp_path / "bad.obj"
    p.write_text(text)
    with pytest.raises(HeadModelError, match=match):
        read_obj(p)


def test_missing_file(tmp_path):
    with pytest.raises(HeadModelError, match="not found"):
        read_obj(tmp_path / "nope.obj")


def test_real_flame_template(flame_template):
    m = flame_template
    assert m.vertices.shape == (5023, 3)
    assert m.uvs.shape == (5118, 2)
    assert m.faces.shape == (9976, 3)
    assert m.faces_uv.min() >= 0 and m.faces_uv.max() < 5118
    assert m.faces.min() == 0 and m.faces.max() == 5022
    assert (m.uvs >= 0).all() and (m.uvs <= 1).all()
