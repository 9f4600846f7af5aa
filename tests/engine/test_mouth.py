"""engine/mouth.py: mouth-closing faces from the inner-lip boundary loop."""

from __future__ import annotations

import numpy as np
import pytest

from engine.model.demo_head import build_demo_head
from engine.model.mouth import boundary_loops, mouth_closing_faces, select_mouth_loop


def _normals(v, f):
    v = np.asarray(v, dtype=np.float64)
    return np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])


def _edge_use(faces):
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, cnt = np.unique(e, axis=0, return_counts=True)
    return cnt


def _directed_edges(faces):
    return {(int(a), int(b)) for f in faces for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))}


def test_flame_template_boundary_loops(flame_template):
    loops = boundary_loops(flame_template.faces)
    # FLAME's template is closed except for the neck and the inner-lip opening
    assert sorted(len(lp) for lp in loops) == [30, 32]
    mouth = select_mouth_loop(loops, flame_template.vertices)
    assert len(mouth) == 32
    assert flame_template.vertices[mouth, 2].mean() > flame_template.vertices[:, 2].mean()


def test_flame_template_mouth_faces(flame_template):
    m = flame_template
    mf, mft = mouth_closing_faces(m.faces, m.faces_uv, m.vertices)
    assert mf.shape == (30, 3) and mft.shape == (30, 3)
    assert mf.dtype == np.int64 and mft.dtype == np.int64
    loop = select_mouth_loop(boundary_loops(m.faces), m.vertices)
    # only loop vertices, no new vertices, no degenerate triangles
    assert set(mf.ravel().tolist()) == set(loop.tolist())
    assert all(len(set(f)) == 3 for f in mf.tolist())
    # the hole is closed: every edge of mesh + mouth faces is used exactly twice,
    # except the neck loop (30 edges) which stays open
    cnt = _edge_use(np.concatenate([m.faces, mf]))
    assert (cnt == 1).sum() == 30 and cnt.max() == 2
    # winding consistent with the lips: no directed edge is shared with a mesh face
    assert not (_directed_edges(mf) & _directed_edges(m.faces))
    # normals point out of the face (+z, FLAME canonical frame)
    n = _normals(m.vertices, mf)
    nz = n[:, 2] / np.linalg.norm(n, axis=1)
    assert (nz > 0.5).all(), nz.min()
    # uv indices come from the adjacent lip faces
    for vi, ti in zip(mf.ravel(), mft.ravel()):
        assert ti in set(m.faces_uv[m.faces == vi].tolist())


def test_flame_template_mouth_faces_positive_uv_area(flame_template):
    m = flame_template
    mf, mft = mouth_closing_faces(m.faces, m.faces_uv, m.vertices)
    uv = m.uvs.astype(np.float64)[mft]
    area = 0.5 * np.cross(uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0])
    # the lens between the lips in UV: most faces have positive (front-facing) UV area,
    # the corner ones are slivers
    assert area.sum() > 5e-4
    assert (area > -1e-6).all()


def test_no_front_loop_gives_no_faces():
    # an open cylinder around y: two loops, both centred, neither in front of the rest
    n, rows = 24, 5
    th = 2 * np.pi * np.arange(n) / n
    v = np.array([[np.sin(t), y, np.cos(t)] for y in np.linspace(0, 1, rows) for t in th])
    f = []
    for i in range(rows - 1):
        for j in range(n):
            a, b, c, d = i * n + j, (i + 1) * n + j, i * n + (j + 1) % n, (i + 1) * n + (j + 1) % n
            f += [[a, b, c], [c, b, d]]
    mf, mft = mouth_closing_faces(np.array(f), None, v)
    assert mf.shape == (0, 3) and mft is None


def test_demo_head_mouth_faces():
    m = build_demo_head()
    loops = boundary_loops(m.faces)
    mouth = select_mouth_loop(loops, m.v_template)
    assert mouth is not None
    assert len(m.mouth_faces) == len(mouth) - 2
    # eye holes and the neck are not picked: the mouth loop is centred and in front
    assert abs(m.v_template[mouth, 0].mean()) < 1e-6
    assert m.v_template[mouth, 1].mean() == pytest.approx(-0.045, abs=0.005)
    n = _normals(m.v_template, m.mouth_faces)
    assert (n[:, 2] > 0).all()
    assert not (_directed_edges(m.mouth_faces) & _directed_edges(m.faces))
