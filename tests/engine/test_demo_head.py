"""engine/demo_head.py: the procedural demo head (not FLAME) in FLAME format."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from engine.geometry.uv import sample_uv_texels, uv_overlap_texels
from engine.model.demo_head import (
    DEMO_EXPRESSION_NAMES,
    DEMO_HEAD_NAME,
    DEMO_SHAPE_NAMES,
    build_demo_head,
    write_demo_head,
)
from engine.model.flame_layer import FlameLayer
from engine.model.head_model import FLAME_JOINT_NAMES, load_head_model
from engine.model.mouth import boundary_loops


@pytest.fixture(scope="module")
def head():
    return build_demo_head()


@pytest.fixture(scope="module")
def layer(head):
    return FlameLayer(head)


def _pose(**joints):
    p = torch.zeros(1, 15)
    for name, aa in joints.items():
        j = FLAME_JOINT_NAMES.index(name)
        p[0, 3 * j: 3 * j + 3] = torch.tensor(aa)
    return p


def _expr(head, **coeffs):
    e = torch.zeros(1, head.num_expr)
    for k, v in coeffs.items():
        e[0, DEMO_EXPRESSION_NAMES.index(k)] = v
    return e


def _eye_idx(head, side):
    return np.nonzero(head.lbs_weights[:, FLAME_JOINT_NAMES.index(side)] > 0.5)[0]


def test_counts_and_names(head):
    assert head.name == DEMO_HEAD_NAME == "FATE demo head (procedural, not FLAME)"
    assert 2000 <= head.num_vertices <= 6000
    assert head.num_joints == 5 and head.joint_names == FLAME_JOINT_NAMES
    np.testing.assert_array_equal(head.parents, [-1, 0, 1, 1, 1])
    assert head.num_expr == len(DEMO_EXPRESSION_NAMES) >= 12
    assert head.num_shape == len(DEMO_SHAPE_NAMES) >= 10
    assert head.posedirs.shape == (36, head.num_vertices * 3)
    assert len(head.mouth_faces) > 10
    for name in ("jaw_open", "smile", "frown", "brow_raise", "brow_furrow", "blink_left", "blink_right",
                 "pucker", "cheek_puff", "sneer", "mouth_left", "mouth_right"):
        assert name in DEMO_EXPRESSION_NAMES


def test_size_and_frame(head):
    v = head.v_template
    skin = np.ones(len(v), bool)
    skin[_eye_idx(head, "left_eye")] = skin[_eye_idx(head, "right_eye")] = False
    # ~0.2 m from the crown to the chin (the neck continues below), face towards +z
    chin_y = v[skin & (v[:, 2] > 0.04)][:, 1].min()
    assert 0.17 < v[:, 1].max() - chin_y < 0.24
    assert np.abs(v[:, 0].mean()) < 1e-6 and np.abs(v.mean(axis=0)).max() < 0.05
    nose = v[np.argmax(v[:, 2])]
    assert abs(nose[0]) < 1e-6 and nose[2] > 0.09


def test_deterministic_fast_and_seeded():
    t0 = time.perf_counter()
    a = build_demo_head()
    dt = time.perf_counter() - t0
    assert dt < 1.0, dt
    assert a.sha256() == build_demo_head(0).sha256()
    b = build_demo_head(seed=1)
    assert b.sha256() != a.sha256() and b.sha256() == build_demo_head(seed=1).sha256()


def test_mirror_symmetric(head):
    v = head.v_template.astype(np.float64)
    d, _ = cKDTree(v).query(v * [-1.0, 1.0, 1.0])
    assert d.max() < 1e-6  # every vertex has its mirror image (float32 positions)
    J = head.J_regressor.astype(np.float64) @ v
    np.testing.assert_allclose(J[:3, 0], 0.0, atol=1e-6)  # root, neck, jaw on the midline
    assert J[3, 0] > 0.02 and J[4, 0] < -0.02  # left eye = subject's left = +x


def test_weights_and_regressor(head):
    W = head.lbs_weights
    assert W.min() >= 0
    np.testing.assert_allclose(W.sum(axis=1), 1.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(head.J_regressor.sum(axis=1), 1.0, rtol=0, atol=1e-6)
    for side in ("left_eye", "right_eye"):
        idx = _eye_idx(head, side)
        assert len(idx) > 100
        np.testing.assert_array_equal(W[idx].max(axis=1), 1.0)  # eyeballs 100 % to their joint
    jaw = W[:, 2]
    v = head.v_template
    chin = np.argmin(np.where(v[:, 2] > 0.05, v[:, 1], np.inf))
    assert jaw[chin] > 0.9 and jaw[np.argmax(v[:, 1])] == 0.0


def test_normals_outward(head):
    v = head.v_template.astype(np.float64)
    f = head.faces
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    area = 0.5 * np.linalg.norm(n, axis=1)
    assert area.min() > 1e-7  # no degenerate triangles (0.1 mm^2)
    c = v[f].mean(axis=1)
    for side, j in (("left_eye", 3), ("right_eye", 4)):
        centre = head.J_regressor[j] @ v
        on_eye = np.isin(f[:, 0], _eye_idx(head, side))
        assert ((n[on_eye] * (c[on_eye] - centre)).sum(axis=1) > 0).all()
    skin = ~np.isin(f[:, 0], np.concatenate([_eye_idx(head, "left_eye"), _eye_idx(head, "right_eye")]))
    out = (n[skin] * (c[skin] - [0.0, 0.0, -0.005])).sum(axis=1) > 0
    assert out.mean() > 0.9  # radial test; nose/lip sides are the only exceptions


def test_boundary_loops(head):
    loops = boundary_loops(head.faces)
    assert len(loops) == 4  # neck, mouth, two eye holes
    loops_all = boundary_loops(head.faces_all)
    assert len(loops_all) == 3  # the mouth faces close the lips


@pytest.mark.parametrize("k", range(len(DEMO_EXPRESSION_NAMES)))
def test_every_expression_moves_something(head, k):
    d = np.linalg.norm(head.exprdirs[:, :, k], axis=1)
    assert d.max() > 0.002, (DEMO_EXPRESSION_NAMES[k], d.max())  # > 2 mm at coefficient 1
    assert d.max() < 0.012  # and stays localised and plausible
    assert (d > 1e-4).mean() < 0.25  # localised, not a global change
    eyes = np.concatenate([_eye_idx(head, "left_eye"), _eye_idx(head, "right_eye")])
    assert np.abs(head.exprdirs[eyes, :, k]).max() == 0.0


@pytest.mark.parametrize("k", range(len(DEMO_SHAPE_NAMES)))
def test_every_shape_component_moves_something(head, k):
    d = np.linalg.norm(head.shapedirs[:, :, k], axis=1)
    assert 0.002 < d.max() < 0.012, (DEMO_SHAPE_NAMES[k], d.max())
    for side in ("left_eye", "right_eye"):  # eyeballs translate rigidly with the face
        e = head.shapedirs[_eye_idx(head, side), :, k]
        np.testing.assert_allclose(e, np.broadcast_to(e[:1], e.shape), rtol=0, atol=1e-9)


def test_expressions_read_as_expressions(head, layer):
    v0 = head.v_template.astype(np.float64)
    mouth = np.unique(head.mouth_faces)
    upper = mouth[v0[mouth, 1] > v0[mouth, 1].mean()]
    lower = mouth[v0[mouth, 1] < v0[mouth, 1].mean()]
    corner_l = mouth[np.argmax(v0[mouth, 0])]

    def run(**c):
        v, _ = layer(None, _expr(head, **c), _pose())
        return v[0].double().numpy()

    gap0 = v0[upper, 1].mean() - v0[lower, 1].mean()
    v = run(jaw_open=1.0)
    assert v[upper, 1].mean() - v[lower, 1].mean() > gap0 + 0.004  # lips part by > 4 mm
    assert run(smile=1.0)[corner_l, 1] - v0[corner_l, 1] > 0.003  # mouth corners up
    assert run(frown=1.0)[corner_l, 1] - v0[corner_l, 1] < -0.003  # and down
    assert run(pucker=1.0)[mouth, 2].mean() - v0[mouth, 2].mean() > 0.003  # lips forward
    ml = run(mouth_left=1.0)
    assert ml[mouth, 0].mean() - v0[mouth, 0].mean() > 0.003  # towards +x (subject's left)
    # blinking closes the eye hole: the projected hole area shrinks by > 80 %
    for name, side in (("blink_left", 1.0), ("blink_right", -1.0)):
        eye_loop = [lp for lp in boundary_loops(head.faces) if np.sign(v0[lp, 0].mean()) == side
                    and abs(v0[lp, 1].mean() - 0.018) < 0.005][0]

        def area(p):
            x, y = p[eye_loop, 0], p[eye_loop, 1]
            return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))

        vb = run(**{name: 1.0})
        assert area(vb) < 0.2 * area(v0), name
        other = [lp for lp in boundary_loops(head.faces) if np.sign(v0[lp, 0].mean()) == -side
                 and abs(v0[lp, 1].mean() - 0.018) < 0.005][0]
        np.testing.assert_allclose(vb[other], v0[other], rtol=0, atol=1e-9)  # one eye only


def test_eyes_rigid_under_eye_rotation(head, layer):
    left, right = _eye_idx(head, "left_eye"), _eye_idx(head, "right_eye")
    v0, j0 = layer(None, None, _pose())
    v1, j1 = layer(None, None, _pose(left_eye=[0.0, 0.4, 0.0], right_eye=[0.2, 0.0, 0.0]))
    v0, v1 = v0[0].double().numpy(), v1[0].double().numpy()
    for idx, j in ((left, 3), (right, 4)):
        c = j0[0, j].double().numpy()
        np.testing.assert_allclose(j1[0, j].numpy(), c, rtol=0, atol=1e-6)  # centre stays
        # rigid: distances to the centre and between vertices preserved (float32: ~1e-8 m)
        np.testing.assert_allclose(np.linalg.norm(v1[idx] - c, axis=1),
                                   np.linalg.norm(v0[idx] - c, axis=1), rtol=0, atol=1e-6)
        d0 = np.linalg.norm(v0[idx][:, None] - v0[idx][None], axis=-1)
        d1 = np.linalg.norm(v1[idx][:, None] - v1[idx][None], axis=-1)
        np.testing.assert_allclose(d1, d0, rtol=0, atol=1e-6)
        assert np.abs(v1[idx] - v0[idx]).max() > 0.002  # and they did rotate (0.2 rad: 2.5 mm)
    skin = np.setdiff1d(np.arange(head.num_vertices), np.concatenate([left, right]))
    np.testing.assert_allclose(v1[skin], v0[skin], rtol=0, atol=1e-7)


def test_jaw_rotation_opens_mouth(head, layer):
    v0, _ = layer(None, None, _pose())
    v1, _ = layer(None, None, _pose(jaw=[0.3, 0.0, 0.0]))
    v0, v1 = v0[0].numpy(), v1[0].numpy()
    chin = np.argmin(np.where(v0[:, 2] > 0.05, v0[:, 1], np.inf))
    assert v1[chin, 1] < v0[chin, 1] - 0.015  # the chin drops by > 15 mm
    top = np.argmax(v0[:, 1])
    np.testing.assert_allclose(v1[top], v0[top], rtol=0, atol=1e-7)  # the crown does not move


def test_uv_layout(head):
    assert head.uvs.min() >= 0.0 and head.uvs.max() <= 1.0
    assert uv_overlap_texels(head.uvs, head.faces_uv_all, 256) == 0
    uv = head.uvs.astype(np.float64)[head.faces_uv]
    area = 0.5 * np.cross(uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0])
    assert (area > 0).all()  # no flipped UV triangles
    s = sample_uv_texels(head.uvs, head.faces_uv_all, 256)
    assert len(s) > 0.6 * 256 * 256  # a good fraction of UV space is used
    eyes = np.isin(head.faces[:, 0], np.concatenate([_eye_idx(head, "left_eye"), _eye_idx(head, "right_eye")]))
    eye_faces = set(np.nonzero(eyes)[0].tolist())
    assert sum(f in eye_faces for f in s.face_idx.tolist()) > 0.03 * len(s)  # eye islands


def test_write_and_load(tmp_path, head):
    m = write_demo_head(tmp_path / "demo_head.npz")
    assert m.sha256() == head.sha256()
    back = load_head_model(tmp_path / "demo_head.npz")
    assert back.name == DEMO_HEAD_NAME and back.sha256() == head.sha256()
