"""STAvatar (issue 20): UV-adaptive soft binding and temporal adaptive density control."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.model.gaussians import UVGaussians
from engine.model.soft_binding import fold_static_offsets, place_soft
from engine.train.densify.config import DensifyConfig
from engine.train.densify.factory import make_strategy
from engine.train.densify.temporal import (
    FRAME_KEY,
    cluster_frames,
    footprint_error,
    fused_error_map,
)


@pytest.fixture(scope="module")
def soft_avatar(demo_dataset):
    """A fresh soft-bound avatar on the demo dataset, Gaussians given random (non-default)
    rotations, scales and normal offsets so that hard placement is not trivial."""
    from engine.data import load_sequence
    from engine.model.avatar import build_avatar
    from engine.model.resolve import resolve_head_model

    seq = load_sequence(demo_dataset)
    av = build_avatar(resolve_head_model("demo"), seq, torch.device("cpu"), uv_resolution=32, shell=0.01,
                      learn_blendshapes=True, refine_tracking=False, binding="soft", soft_resolution=32,
                      soft_width=8)
    g = av.gaussians
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        g.rotation.copy_(torch.randn(g.rotation.shape, generator=gen))
        g.scale_log.add_(0.3 * torch.randn(g.scale_log.shape, generator=gen))
        g.offset_raw.copy_(0.5 * torch.randn(g.offset_raw.shape, generator=gen))
    return av, seq


def _frame_mesh(av, seq, i):
    from engine.model.avatar import frame_inputs

    shape, expr, pose, trans, _ = frame_inputs(av, seq, i, "cpu")
    verts, _ = av.posed_vertices(shape[None], expr[None], pose[None], trans[None])
    return shape, expr, pose, verts[0].detach()


# ---------------------------------------------------------------------- soft binding
def test_zero_offsets_reproduce_hard_binding_exactly(soft_avatar):
    av, seq = soft_avatar
    shape, expr, pose, verts = _frame_mesh(av, seq, 7)
    hard = av.gaussians.place(verts, av.faces)
    delta = av.binding_offsets(shape, expr, pose)
    # the untrained network's last layer is zero-initialised: δ is exactly 0 for every Gaussian
    assert delta.shape == (len(av.gaussians), 9) and torch.count_nonzero(delta) == 0
    soft = av.place(verts, delta)
    for name in ("means", "covars", "colors", "opacities", "scales", "rotmats"):
        assert torch.equal(getattr(soft, name), getattr(hard, name)), name  # bit for bit
    # planted fault: any non-zero offset moves the Gaussians (the comparison above can fail)
    moved = av.place(verts, torch.full_like(delta, 1e-3))
    assert not torch.equal(moved.means, hard.means) and not torch.equal(moved.covars, hard.covars)


def test_offsets_act_in_the_face_frame(soft_avatar):
    # δ_p = (0, 0, 1): one face scale k_f along the face normal; δ_s = log 2: scales doubled;
    # δ_r = (0, 0, 2·tan(θ/2)): a turn by θ about the face normal (module table).
    from engine.geometry.mesh_ops import face_frames

    av, seq = soft_avatar
    _, _, _, verts = _frame_mesh(av, seq, 3)
    g = av.gaussians
    n = len(g)
    R_f, k_f, n_f = (x[g.face_idx] for x in face_frames(verts, av.faces))
    hard = place_soft(g, verts, av.faces, None)
    theta = 0.3
    delta = torch.zeros(n, 9)
    delta[:, 2] = 1.0
    delta[:, 5] = 2 * np.tan(theta / 2)
    delta[:, 6:9] = np.log(2.0)
    soft = place_soft(g, verts, av.faces, delta)
    torch.testing.assert_close(soft.means, hard.means + k_f[:, None] * n_f, atol=1e-7, rtol=0)
    torch.testing.assert_close(soft.scales, 2 * hard.scales, atol=1e-9, rtol=1e-5)
    c, s = np.cos(theta), np.sin(theta)
    turn = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1.0]], dtype=torch.float32)
    expected = R_f @ turn @ R_f.transpose(1, 2) @ hard.rotmats  # turn about n_f in world axes
    torch.testing.assert_close(soft.rotmats, expected, atol=1e-5, rtol=0)


def test_static_fold_reproduces_a_constant_offset_on_the_rest_mesh(soft_avatar):
    # the static bake folds δ into raw hard parameters: on the mesh it was folded on, the hard
    # placement of the folded Gaussians equals the soft placement with δ (float32 round-off;
    # the normal part stays inside the shell here)
    av, seq = soft_avatar
    _, _, _, verts = _frame_mesh(av, seq, 0)
    g = av.gaussians
    gen = torch.Generator().manual_seed(1)
    delta = 0.05 * torch.randn(len(g), 9, generator=gen)
    delta[:, 2] *= 0.01  # keep the normal offset within the 1 cm shell
    folded = fold_static_offsets(g, delta, verts, av.faces)
    a = place_soft(g, verts, av.faces, delta)
    b = folded.place(verts, av.faces)
    torch.testing.assert_close(b.means, a.means, atol=2e-6, rtol=0)  # meters; faces are ~mm
    torch.testing.assert_close(b.covars, a.covars, atol=1e-10, rtol=1e-4)


def test_soft_binding_round_trips_through_the_avatar_folder(tmp_path, soft_avatar):
    import copy

    from engine.avatar_folder import AvatarFolder
    from engine.train.config import TrainConfig

    av, seq = soft_avatar
    av = copy.deepcopy(av)
    with torch.no_grad():  # a non-trivial network: its output is no longer zero
        torch.nn.init.normal_(av.soft_binding.net.head.weight, std=1e-2)
    folder = AvatarFolder(tmp_path)
    folder.save(av, seq, TrainConfig(dataset="x", output=str(tmp_path), binding="soft"))
    shape, expr, pose, verts = _frame_mesh(av, seq, 11)
    want = av.place(verts, av.binding_offsets(shape, expr, pose))
    live = folder.load("cpu", soft_binding=True).avatar
    got = live.place(verts, live.binding_offsets(shape, expr, pose))
    torch.testing.assert_close(got.means, want.means, atol=0, rtol=0)
    static = folder.load("cpu").avatar  # the static bake: hard Gaussians, no network
    assert static.soft_binding is None and len(static.gaussians) == len(av.gaussians)
    assert not torch.equal(static.gaussians.scale_log, av.gaussians.scale_log)  # mean δ folded in


# ---------------------------------------------------------------------- temporal ADC
def test_clustering_is_deterministic_for_a_seed_and_finds_the_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0, 0], [5, 0, 0], [0, 5, 0]])
    truth = np.repeat(np.arange(3), 30)
    x = centres[truth] + rng.normal(scale=0.3, size=(90, 3))
    a, _ = cluster_frames(x, 3, seed=11)
    b, _ = cluster_frames(x, 3, seed=11)
    np.testing.assert_array_equal(a, b)
    # the labels partition the frames like the truth (up to renaming)
    for j in range(3):
        assert len(np.unique(a[truth == j])) == 1
    assert len(np.unique(a)) == 3
    c, _ = cluster_frames(x, 10**3, seed=0)  # more clusters than frames: at most one per frame
    assert c.max() < 90


def test_fused_error_map_is_zero_for_a_perfect_render():
    gen = torch.Generator().manual_seed(0)
    img = torch.rand(32, 40, 3, generator=gen)
    e = fused_error_map(img, img.clone())
    assert e.shape == (32, 40)
    assert float(e.abs().max()) < 1e-6  # SSIM(x, x) = 1 up to float32 round-off
    bad = img.clone()
    bad[10:20, 10:20] = 1 - bad[10:20, 10:20]
    e = fused_error_map(bad, img)
    assert float(e[12:18, 12:18].min()) > 0.1 and float(e[:, 30:].max()) < 1e-6


def test_footprint_error_is_the_box_mean_around_each_centre():
    err = torch.zeros(20, 20)
    err[0:10, 0:10] = 1.0
    means2d = torch.tensor([[5.0, 5.0], [15.0, 15.0], [10.0, 5.0], [5.0, 5.0]])
    radii = torch.tensor([6, 6, 6, 0])  # σ = 2 px: a 5×5 box; the last is not drawn
    out = footprint_error(err, means2d, radii)
    torch.testing.assert_close(out, torch.tensor([1.0, 0.0, 0.4, 0.0]))  # 10/25 straddles the edge


def _grid_model(side=20):
    """side² Gaussians on one quad, each identified by its colour coefficient sh0[:, 0] = index."""
    n = side * side
    verts = torch.tensor([[0, 0, 0], [0.01, 0, 0], [0, 0.01, 0], [0.01, 0.01, 0.0]])
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    bary = torch.full((n, 3), 1 / 3)
    m = UVGaussians.from_bindings(torch.zeros(n, dtype=torch.long), bary, verts, faces)
    m.sh0.data[:, 0] = torch.arange(n, dtype=torch.float32)
    ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    means2d = torch.stack([xs.flatten() * 4.0 + 2.0, ys.flatten() * 4.0 + 2.0], dim=-1)  # 80×80 image
    return m, means2d


@pytest.mark.parametrize("error_weight", [1.0, 0.0])
def test_temporal_strategy_adds_children_where_the_error_is_high(error_weight):
    m, means2d = _grid_model()
    opt = torch.optim.Adam([{"params": [getattr(m, p)], "lr": 1e-2} for p in UVGaussians.PARAMETERS])
    d = make_strategy(DensifyConfig(strategy="temporal", clusters=2, start=1, every=1, count=40, prune_every=0,
                                    reset_every=0, error_weight=error_weight))
    state = d.initialize_state(len(m))
    state[FRAME_KEY] = torch.tensor([0, 1])
    gt = torch.full((80, 80, 3), 0.5)
    image = gt.clone()
    image[0:20, 60:80] = 1.0  # the planted error region: top-right 20×20 px = 25 of 400 Gaussians
    positions = means2d.clone().requires_grad_(True)
    positions.grad = torch.zeros_like(positions)  # no positional gradient at all
    for frame in (0, 1):
        d.step_post_backward(state, {"means": None, "means2d": positions, "radii": torch.full((400,), 3),
                                     "frame": frame, "image": image, "gt": gt})
    before = len(m)
    counts = d.step_post_update(state, 1, m, opt, torch.Generator().manual_seed(0))
    if error_weight == 0:  # planted fault: without the error term nothing is worth a child
        assert counts["added"] == 0 and len(m) == before
        return
    assert counts["added"] == 40 and len(m) == before + 40
    parents = m.sh0.data[before:, 0].long()
    px = means2d[parents]
    inside = (px[:, 0] > 60) & (px[:, 1] < 20)
    near = (px[:, 0] > 60 - 8) & (px[:, 1] < 20 + 8)  # D-SSIM's 11×11 window spreads the error
    assert bool(near.all()) and float(inside.float().mean()) >= 0.9


def test_clusters_keep_a_transient_region_from_being_averaged_away():
    # Gaussian 0 is wrong only in the frames of cluster 1 (one frame in four), Gaussian 1 a bit
    # wrong everywhere: over all frames their mean errors tie (0.25 vs 0.25), per cluster
    # Gaussian 0 wins (1.0 vs 0.25)
    m, means2d = _grid_model(side=2)
    d = make_strategy(DensifyConfig(strategy="temporal", clusters=2))
    state = d.initialize_state(len(m))
    state[FRAME_KEY] = torch.tensor([0, 0, 0, 1])
    gt = torch.zeros(8, 8, 3)
    for frame in range(4):
        image = gt.clone()
        image[4:8, 4:8] = 0.25  # Gaussian 3's footprint
        if frame == 3:
            image[0:4, 0:4] = 1.0  # Gaussian 0's footprint
        d.step_post_backward(state, {"means": None, "means2d": means2d, "radii": torch.full((4,), 3),
                                     "frame": frame, "image": image, "gt": gt})
    imp = d.importance(state)
    assert imp[0] > 2 * imp[3] > 0


def test_soft_temporal_training_resumes_exactly(tmp_path, demo_dataset):
    """Soft binding + temporal densification through the checkpoint: 4 + 4 steps == 8 steps
    (the network, its Adam moments, the per-cluster statistics and the frame clusters)."""
    from safetensors.torch import load_file

    from engine.train.config import TrainConfig
    from engine.train.trainer import train

    def cfg(out, steps, **kw):
        return TrainConfig(dataset=str(demo_dataset), output=str(out), steps=steps, uv_resolution=32,
                           preview_every=0, checkpoint_every=4, device="cpu", threads=1, binding="soft",
                           soft_uv_resolution=16, soft_width=4, lr_soft_binding=1e-2,
                           densify=DensifyConfig(strategy="temporal", clusters=3, start=3, every=3, count=20,
                                                 prune_every=3, reset_every=0), **kw)

    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(cfg(whole, 8))
    train(cfg(parts, 4))
    train(cfg(parts, 8, resume=True))
    for name in ("gaussians.safetensors", "soft_binding.safetensors"):
        a, b = load_file(str(whole / name)), load_file(str(parts / name))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=1e-5, msg=f"{name}: {key}")
    ck = load_file(str(whole / "checkpoints" / "last.safetensors"))
    assert ck["densifier/frame_cluster"].max() == 2 and ck["densifier/cluster_count"].shape[1] == 3
    net = load_file(str(whole / "soft_binding.safetensors"))["net.head.weight"]
    assert torch.count_nonzero(net) > 0  # the network trained
