"""engine/head_model.py: loading FLAME-format models, the .npz format and FlameLayer."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from engine.errors import HeadModelError
from engine.model.demo_head import build_demo_head
from engine.model.flame_layer import FlameLayer
from engine.model.head_model import (
    FLAME_JOINT_NAMES,
    HeadModel,
    load_head_model,
    model_info,
)


# ------------------------------------------------------------ numpy reference LBS
def _rodrigues(r: np.ndarray) -> np.ndarray:
    th = np.linalg.norm(r)
    if th < 1e-12:
        return np.eye(3)
    k = r / th
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K


def lbs_reference(m: HeadModel, beta, psi, pose, d_expr=None, d_pose=None, d_verts=None):
    """Plain float64 FLAME: shape/expression blend, joint regression, pose correctives
    from (R - I) of joints 1.., kinematic chain, linear blend skinning."""
    T = m.v_template.astype(np.float64) + (0 if d_verts is None else d_verts)
    E = m.exprdirs.astype(np.float64) + (0 if d_expr is None else d_expr)
    P = m.posedirs.astype(np.float64) + (0 if d_pose is None else d_pose)
    vs = T + m.shapedirs[:, :, : len(beta)].astype(np.float64) @ beta + E[:, :, : len(psi)] @ psi
    Jl = m.J_regressor.astype(np.float64) @ vs
    J = m.num_joints
    R = [_rodrigues(np.asarray(pose[3 * j: 3 * j + 3], dtype=np.float64)) for j in range(J)]
    feat = np.concatenate([(R[j] - np.eye(3)).ravel() for j in range(1, J)])
    vp = vs + (feat @ P).reshape(-1, 3)
    G = []
    for j in range(J):
        M = np.eye(4)
        M[:3, :3] = R[j]
        M[:3, 3] = Jl[j] if j == 0 else Jl[j] - Jl[m.parents[j]]
        G.append(M if j == 0 else G[m.parents[j]] @ M)
    A = np.stack([np.block([[g[:3, :3], (g[:3, 3] - g[:3, :3] @ Jl[j])[:, None]], [np.zeros((1, 3)), 1]])
                  for j, g in enumerate(G)])
    Tv = np.einsum("vj,jab->vab", m.lbs_weights.astype(np.float64), A)
    v = np.einsum("vab,vb->va", Tv[:, :3, :3], vp) + Tv[:, :3, 3]
    return v, np.stack([g[:3, 3] for g in G])


@pytest.fixture(scope="module")
def demo():
    return build_demo_head()


@pytest.fixture(scope="module")
def flame_model(flame2020_pickle, flame_template_path):
    return load_head_model(flame2020_pickle, obj_path=flame_template_path)


# --------------------------------------------------------------------- loading
def test_load_flame2020_pickle_with_template(flame_model, flame_arrays, flame_template):
    m = flame_model
    assert m.num_vertices == 5023 and m.faces.shape == (9976, 3)
    assert m.num_shape == 300 and m.num_expr == 100
    assert m.posedirs.shape == (36, 5023 * 3)
    assert m.J_regressor.shape == (5, 5023) and isinstance(m.J_regressor, np.ndarray)
    np.testing.assert_array_equal(m.parents, [-1, 0, 1, 1, 1])
    assert m.joint_names == FLAME_JOINT_NAMES
    # the template's 5118 UVs, then one per inner-lip vertex for the mouth faces' own island (issue 12)
    assert m.uvs.shape == (5118 + 32, 2) and m.faces_uv.shape == (9976, 3)
    assert m.mouth_faces_uv.min() >= 5118
    assert m.mouth_faces.shape == (30, 3) and m.mouth_faces_uv.shape == (30, 3)
    assert m.v_template.dtype == np.float32 and m.faces.dtype == np.int64
    # 300 shape + 100 expression, in the pickle's order; posedirs laid out like smplx.FLAME
    sd = flame_arrays["shapedirs"]
    np.testing.assert_allclose(m.shapedirs, sd[:, :, :300], rtol=1e-6, atol=0)  # float64 -> float32
    np.testing.assert_allclose(m.exprdirs, sd[:, :, 300:], rtol=1e-6, atol=0)
    pd = flame_arrays["posedirs"]
    np.testing.assert_allclose(m.posedirs, pd.reshape(-1, 36).T, rtol=1e-6, atol=0)
    np.testing.assert_allclose(m.J_regressor, flame_arrays["J_regressor"].toarray(), rtol=1e-6, atol=0)
    np.testing.assert_array_equal(m.faces, flame_template.faces)


def test_load_folder_and_flame2023_layout(tmp_path, flame_arrays, flame_template_path, write_flame2020_pickle):
    # a FLAME 2023-like folder: 300 shape + 50 expression components, template beside it
    arrays = dict(flame_arrays)
    arrays["shapedirs"] = arrays["shapedirs"][:, :, :350]
    write_flame2020_pickle(tmp_path / "flame2023.pkl", arrays)
    os.symlink(flame_template_path, tmp_path / "head_template_mesh.obj")  # never copied
    m = load_head_model(tmp_path)
    assert (m.num_shape, m.num_expr) == (300, 50)
    assert len(m.mouth_faces) == 30
    assert m.name == "FLAME (flame2023.pkl)"


@pytest.fixture
def small_pickle(tmp_path, synthetic_flame_arrays, write_flame2020_pickle):
    rng = np.random.default_rng(5)
    arrays = synthetic_flame_arrays(rng.normal(size=(40, 3)), rng.integers(0, 40, (60, 3)), rng, 310)
    write_flame2020_pickle(tmp_path / "generic_model.pkl", arrays)
    return tmp_path / "generic_model.pkl"


def test_pickle_without_uvs_is_an_error(small_pickle):
    with pytest.raises(HeadModelError, match="no UV layout"):
        load_head_model(small_pickle)


def test_obj_vertex_count_mismatch(tmp_path, small_pickle):
    (tmp_path / "small.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nf 1/1 2/2 3/3\n")
    with pytest.raises(HeadModelError, match="3 vertices.*has 40"):
        load_head_model(small_pickle, obj_path=tmp_path / "small.obj")


def test_unsafe_pickle_refused_through_loader(tmp_path):
    (tmp_path / "generic_model.pkl").write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(HeadModelError, match=r"os\.system"):
        load_head_model(tmp_path)


def test_missing_key_and_bad_shapes(tmp_path, demo):
    d = demo.to_npz_dict()
    bad = {k: v for k, v in d.items() if k != "J_regressor"}
    np.savez(tmp_path / "a.npz", **bad)
    with pytest.raises(HeadModelError, match="'J_regressor'"):
        load_head_model(tmp_path / "a.npz")
    bad = dict(d)
    bad["posedirs"] = np.zeros((3, 3))
    np.savez(tmp_path / "b.npz", **bad)
    with pytest.raises(HeadModelError, match="posedirs"):
        load_head_model(tmp_path / "b.npz")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(HeadModelError, match="no head model found"):
        load_head_model(tmp_path / "empty_dir")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(HeadModelError, match="unknown head model file type"):
        load_head_model(tmp_path / "x.txt")


def test_npz_roundtrip_no_pickle(tmp_path, demo):
    p = tmp_path / "head_model.npz"
    demo.save_npz(p)
    with np.load(p, allow_pickle=False) as z:
        assert str(z["name"]) == demo.name
        assert list(z["joint_names"]) == demo.joint_names
        assert z["posedirs"].shape == (demo.num_vertices, 3, 36)
    back = load_head_model(p)
    for k in ("v_template", "faces", "shapedirs", "exprdirs", "posedirs", "J_regressor", "parents",
              "lbs_weights", "uvs", "faces_uv", "mouth_faces", "mouth_faces_uv"):
        np.testing.assert_array_equal(getattr(back, k), getattr(demo, k), err_msg=k)
    assert back.name == demo.name and back.joint_names == demo.joint_names
    assert back.sha256() == demo.sha256()
    assert [q.name for q in tmp_path.iterdir()] == ["head_model.npz"]


def test_npz_with_pickle_keys_and_template(tmp_path, flame_arrays, flame_template_path, flame_model):
    d = {k: v for k, v in flame_arrays.items() if k not in ("bs_style", "bs_type")}
    d["J_regressor"] = d["J_regressor"].toarray()
    np.savez(tmp_path / "flame.npz", **d)
    m = load_head_model(tmp_path / "flame.npz", obj_path=flame_template_path)
    assert m.sha256() != flame_model.sha256()  # name differs (file name)
    np.testing.assert_array_equal(m.exprdirs, flame_model.exprdirs)
    np.testing.assert_array_equal(m.mouth_faces, flame_model.mouth_faces)


def test_sha256_changes_with_content(demo):
    h = demo.sha256()
    assert len(h) == 64 and h == build_demo_head().sha256()
    other = build_demo_head()
    other.exprdirs[0, 0, 0] += 1e-4
    assert other.sha256() != h


def test_model_info(demo, tmp_path):
    info = model_info(demo)
    assert info == {
        "name": "FATE demo head (procedural, not FLAME)",
        "vertices": demo.num_vertices,
        "faces": len(demo.faces),
        "mouth_faces": len(demo.mouth_faces),
        "uvs": len(demo.uvs),
        "shape_dim": demo.num_shape,
        "expr_dim": demo.num_expr,
        "pose_dim": 15,
        "joint_names": FLAME_JOINT_NAMES,
        "sha256": demo.sha256(),
        "flame_version": None,
    }
    demo.save_npz(tmp_path / "d.npz")
    assert model_info(tmp_path / "d.npz") == info
    json.dumps(info)


def test_model_info_flame(flame_model):
    info = model_info(flame_model)
    assert (info["vertices"], info["faces"], info["mouth_faces"], info["uvs"]) == (5023, 9976, 30, 5118 + 32)
    assert (info["shape_dim"], info["expr_dim"], info["pose_dim"]) == (300, 100, 15)


# ------------------------------------------------------------------ FlameLayer
def test_zero_parameters_give_template(demo):
    layer = FlameLayer(demo)
    v, j = layer(torch.zeros(2, 4), torch.zeros(2, 3), torch.zeros(2, 15))
    # float32 LBS with identity transforms: exact up to rounding of T @ v (~1e-8 m)
    torch.testing.assert_close(v, torch.as_tensor(demo.v_template).expand(2, -1, -1), rtol=0, atol=1e-6)
    Jrest = demo.J_regressor.astype(np.float64) @ demo.v_template
    torch.testing.assert_close(j[0].double(), torch.as_tensor(Jrest), rtol=0, atol=1e-6)


def test_layer_matches_numpy_lbs_demo(demo):
    rng = np.random.default_rng(1)
    layer = FlameLayer(demo)
    for _ in range(3):
        beta = rng.normal(size=demo.num_shape)
        psi = rng.normal(size=demo.num_expr)
        pose = rng.normal(scale=0.25, size=15)
        v, j = layer(torch.tensor(beta[None], dtype=torch.float32), torch.tensor(psi[None], dtype=torch.float32),
                     torch.tensor(pose[None], dtype=torch.float32))
        vr, jr = lbs_reference(demo, beta, psi, pose)
        # float32 vs float64 on ~0.2 m coordinates: worst seen ~1e-7 m
        np.testing.assert_allclose(v[0].numpy(), vr, rtol=0, atol=1e-5)
        np.testing.assert_allclose(j[0].numpy(), jr, rtol=0, atol=1e-5)


def test_layer_matches_numpy_lbs_flame_topology(flame_model):
    rng = np.random.default_rng(2)
    layer = FlameLayer(flame_model)
    beta = rng.normal(scale=0.5, size=300)
    psi = rng.normal(scale=0.5, size=100)
    pose = rng.normal(scale=0.15, size=15)
    v, j = layer(torch.tensor(beta[None], dtype=torch.float32), torch.tensor(psi[None], dtype=torch.float32),
                 torch.tensor(pose[None], dtype=torch.float32))
    vr, jr = lbs_reference(flame_model, beta, psi, pose)
    # this template sits ~1.5 m from the origin: float32 rounding ~1e-7 relative
    np.testing.assert_allclose(v[0].numpy(), vr, rtol=0, atol=1e-5)
    np.testing.assert_allclose(j[0].numpy(), jr, rtol=0, atol=1e-5)


def test_fewer_components_are_zero_padded_and_too_many_refused(demo):
    layer = FlameLayer(demo)
    rng = np.random.default_rng(3)
    s = torch.tensor(rng.normal(size=(2, 4)), dtype=torch.float32)
    e = torch.tensor(rng.normal(size=(2, 5)), dtype=torch.float32)
    p = torch.tensor(rng.normal(scale=0.2, size=(2, 15)), dtype=torch.float32)
    s_full = torch.cat([s, torch.zeros(2, demo.num_shape - 4)], 1)
    e_full = torch.cat([e, torch.zeros(2, demo.num_expr - 5)], 1)
    v1, j1 = layer(s, e, p)
    v2, j2 = layer(s_full, e_full, p)
    torch.testing.assert_close(v1, v2, rtol=0, atol=1e-7)  # same sums, different order
    torch.testing.assert_close(j1, j2, rtol=0, atol=1e-7)
    with pytest.raises(HeadModelError, match="expr: 15 components given.*has 14"):
        layer(s, torch.zeros(2, demo.num_expr + 1), p)
    with pytest.raises(HeadModelError, match="pose"):
        layer(s, e, torch.zeros(2, 12))
    # a [1, S] shape broadcasts over the batch of poses
    v3, _ = layer(s[:1], e, p)
    v4, _ = layer(s[:1].expand(2, -1), e, p)
    torch.testing.assert_close(v3, v4, rtol=0, atol=0)


def test_deltas_enter_before_skinning(demo):
    rng = np.random.default_rng(4)
    layer = FlameLayer(demo)
    V, E = demo.num_vertices, demo.num_expr
    dE = rng.normal(scale=1e-3, size=(V, 3, E))
    dP = rng.normal(scale=1e-3, size=(36, V * 3))
    dV = rng.normal(scale=1e-3, size=(V, 3))
    beta = rng.normal(size=demo.num_shape)
    psi = rng.normal(size=E)
    pose = rng.normal(scale=0.2, size=15)
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    v, j = layer(f(beta[None]), f(psi[None]), f(pose[None]), f(dE), f(dP), f(dV))
    vr, jr = lbs_reference(demo, beta, psi, pose, dE, dP, dV)
    np.testing.assert_allclose(v[0].numpy(), vr, rtol=0, atol=1e-5)  # float32 vs float64
    np.testing.assert_allclose(j[0].numpy(), jr, rtol=0, atol=1e-5)


def test_differentiable_in_all_inputs(demo):
    layer = FlameLayer(demo)
    V, E = demo.num_vertices, demo.num_expr
    torch.manual_seed(0)
    shape = torch.randn(2, demo.num_shape, requires_grad=True)
    expr = torch.randn(2, E, requires_grad=True)
    pose = (0.2 * torch.randn(2, 15)).requires_grad_()
    dE = torch.zeros(V, 3, E, requires_grad=True)
    dP = torch.zeros(36, V * 3, requires_grad=True)
    dV = torch.zeros(V, 3, requires_grad=True)
    v, j = layer(shape, expr, pose, dE, dP, dV)
    (v.square().sum() + j.square().sum()).backward()
    for name, t in (("shape", shape), ("expr", expr), ("pose", pose), ("dE", dE), ("dP", dP), ("dV", dV)):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0, name


def test_jaw_pose_corrective_applied(demo):
    # the demo head's only non-zero corrective row is (R_jaw - I)[2, 1]: it must act
    layer = FlameLayer(demo)
    pose = torch.zeros(1, 15)
    pose[0, 6] = 0.3
    v_with, _ = layer(None, None, pose)
    v_wo, _ = layer(None, None, pose, delta_posedirs=-torch.as_tensor(demo.posedirs))
    assert (v_with - v_wo).norm(dim=-1).max() > 1e-3
