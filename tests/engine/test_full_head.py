"""Full-head completion (issue 16, FATE §3.4): visibility, the built-in UV completion, the
pseudo-view fine-tune and pluggable generators — engine only.

Truth: the engine's dense ground-truth demo head (``engine.demo.synthetic``) that the session's
sequence was rendered from (yaw ±25°, pitch ±12°), here at neutral expression from all around;
the oracle generator (``engine.demo.oracle:generate_synthetic``) returns those same renders at the
bake's pseudo views (which are 15° off the measured yaws). The main job measures the same against
Cycles (tests/e2e/test_main_job.py).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from engine.bake.baker import bake
from engine.bake.config import BakeConfig
from engine.errors import CompletionError

# CPU-sized bake (as test_bake's QUICK_BAKE) plus a short full-head stage.
FULL_BAKE = dict(resolution=128, base_channels=16, depth=4, steps=100, checkpoint_every=0, device="cpu",
                 threads=1, full_head_steps=40)
MEASURED_YAWS = (0.0, 90.0, 180.0, 270.0)


def _copy(trained_avatar, tmp_path_factory, name):
    d = tmp_path_factory.mktemp(name) / "avatar"
    shutil.copytree(trained_avatar, d)
    return d


@pytest.fixture(scope="module")
def completed_avatar(trained_avatar, tmp_path_factory):
    d = _copy(trained_avatar, tmp_path_factory, "full_head")
    bake(BakeConfig(avatar=str(d), **FULL_BAKE))
    return d


@pytest.fixture(scope="module")
def oracle_avatar(completed_avatar, tmp_path_factory):
    """The completed avatar's full-head stage redone with the oracle (from maps_seen)."""
    d = tmp_path_factory.mktemp("full_head_oracle") / "avatar"
    shutil.copytree(completed_avatar, d)
    bake(BakeConfig(avatar=str(d), full_head_only=True, completion_generator="engine.demo.oracle:generate_synthetic",
                    **FULL_BAKE))
    return d


def _eval_views(avatar_dir):
    from engine.avatar_folder import load_avatar
    from engine.bake.pseudo_views import orbit_rig, ring_viewmats

    loaded = load_avatar(avatar_dir)
    tr, head = loaded.tracking, loaded.avatar.head
    rig = orbit_rig(head.v_template, tr["viewmat"], tr["translation"], tr["K"][0], int(tr["width"]), int(tr["height"]))
    views = [(y, 0.0) for y in MEASURED_YAWS]
    return rig, ring_viewmats(rig, views), head


@pytest.fixture(scope="module")
def full_head_numbers(trained_avatar, completed_avatar, oracle_avatar):
    """Masked PSNR and coverage per measured yaw: trained / completed / oracle-completed."""
    from engine.demo.synthetic import render_neutral_views
    from engine.demo.views import render_views, view_metrics

    rig, mats, head = _eval_views(trained_avatar)
    truth = render_neutral_views(head, mats, np.asarray(rig.K), rig.width, rig.height)
    views = [{"viewmat": m.tolist(), "K": [list(r) for r in rig.K]} for m in mats]
    out = {}
    for label, folder, from_maps in (("trained", trained_avatar, False), ("completed", completed_avatar, True),
                                     ("oracle", oracle_avatar, True)):
        rendered = render_views(folder, views, torch.device("cpu"), from_maps)
        out[label] = {y: view_metrics(rgb, a, t) for y, (rgb, a), t in zip(MEASURED_YAWS, rendered, truth)}
    print(out)
    return out


# ---------------------------------------------------------------------- visibility
def _vertex_facing(head):
    from engine.geometry.mesh_ops import vertex_normals

    v = torch.as_tensor(head.v_template)
    n = vertex_normals(v, torch.as_tensor(head.faces, dtype=torch.long))
    skin = torch.zeros(len(v), dtype=torch.bool)
    skin[torch.as_tensor(np.unique(head.faces))] = True
    # not the eyeballs: the back of an eyeball faces away but sits behind the seen eye, within the
    # 3 vertex rings the visibility is spread over
    names = list(head.joint_names)
    eyes = [names.index(n) for n in ("left_eye", "right_eye") if n in names]
    skin &= ~torch.as_tensor(np.asarray(head.lbs_weights)[:, eyes].sum(1) > 0.5)
    return n[:, 2], skin


def test_visibility_is_one_where_seen_and_zero_at_the_back(trained_avatar):
    from engine.avatar_folder import load_avatar
    from engine.model.visibility import load_visibility

    loaded = load_avatar(trained_avatar)
    vis = load_visibility(trained_avatar, len(loaded.avatar.gaussians))
    assert vis is not None and vis.frames == 32, "training writes visibility.safetensors over 32 frames"
    nz, skin = _vertex_facing(loaded.avatar.head)
    front = skin & (nz > 0.8) & (torch.as_tensor(loaded.avatar.head.v_template)[:, 1] > -0.06)  # face, not chin
    back = skin & (nz < -0.7)
    print(f"visibility: front {vis.vertex[front].mean():.3f} (q10 {vis.vertex[front].quantile(0.1):.3f}), "
          f"back {vis.vertex[back].mean():.4f} (max {vis.vertex[back].max():.3f})")
    # measured: front 0.98 (q10 0.94), back 0.0000 (max 0.002) — the views turn ±25°, the back faces away
    assert vis.vertex[front].mean() > 0.9 and vis.vertex[front].quantile(0.1) > 0.7
    assert vis.vertex[back].max() < 0.05
    assert 0 <= float(vis.gaussian.min()) and float(vis.gaussian.max()) <= 1


def test_visibility_does_not_see_through_the_head():
    """A front-facing surface behind an opaque one is unseen (the rendered weight, not the
    facing test alone, decides): two parallel quads of Gaussians, the camera in front."""
    from engine.geometry.cameras import Camera, look_at_opencv
    from engine.model.gaussians import WorldGaussians
    from engine.model.visibility import accumulate_visibility

    n = 24
    xs = torch.linspace(-0.05, 0.05, n)
    gx, gy = torch.meshgrid(xs, xs, indexing="ij")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)
    verts = torch.cat([torch.cat([grid, torch.full((n * n, 1), z)], 1) for z in (0.02, -0.02)])  # front, back
    idx = torch.arange(n * n).reshape(n, n)
    quads = torch.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], -1).reshape(-1, 4)
    tri = torch.cat([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    faces = torch.cat([tri, tri + n * n])  # counter-clockwise from +z: both face the camera
    F = len(faces)
    bary = torch.full((F, 3), 1 / 3)
    means = (verts[faces] * bary[..., None]).sum(1)
    covars = torch.eye(3).expand(F, 3, 3) * (0.004 ** 2)
    g = WorldGaussians(means=means, covars=covars, opacities=torch.full((F,), 0.99), colors=torch.rand(F, 3),
                       scales=torch.full((F, 3), 0.004), rotmats=torch.eye(3).expand(F, 3, 3))
    cam = Camera(torch.as_tensor(look_at_opencv(np.array([0, 0, 0.5]), np.zeros(3)), dtype=torch.float32),
                 torch.tensor([[300.0, 0, 64], [0, 300.0, 64], [0, 0, 1]]), 128, 128)
    vis = accumulate_visibility([(verts, g, cam)], faces, torch.arange(F), bary, len(verts), backend="torch")
    inner = (verts[:, :2].abs() < 0.035).all(1)
    front, behind = vis.vertex[: n * n][inner[: n * n]], vis.vertex[n * n:][inner[n * n:]]
    print(f"front quad {front.mean():.3f}, hidden quad {behind.mean():.3f}")
    assert front.mean() > 0.9 and behind.max() < 0.1


def test_seen_at_all_counts_turned_away_faces_in_view_but_not_hidden_ones():
    """The completion's opacity visibility (``min_cos`` −1, ``full_cos`` 0,
    engine.bake.pseudo_views.SEEN_ANY_MIN_COS): a quad turned away from the camera but in plain
    view (the rim of a too-large mesh beyond the true silhouette) counts as seen, which the
    default facing test does not; turned away and hidden behind an opaque quad it stays unseen."""
    from engine.bake.pseudo_views import SEEN_ANY_MIN_COS
    from engine.geometry.cameras import Camera, look_at_opencv
    from engine.model.gaussians import WorldGaussians
    from engine.model.visibility import accumulate_visibility

    n = 12
    xs = torch.linspace(-0.02, 0.02, n)
    gx, gy = torch.meshgrid(xs, xs, indexing="ij")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)
    idx = torch.arange(n * n).reshape(n, n)
    quads = torch.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], -1).reshape(-1, 4)
    ccw = torch.cat([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])  # counter-clockwise from +z: faces the camera
    # quad 0 faces the camera at x = −0.03; quad 1 turned away beside it (x = +0.03); quad 2 turned
    # away right behind quad 0
    parts = [(-0.03, 0.02, ccw), (0.03, 0.02, ccw[:, [0, 2, 1]]), (-0.03, -0.02, ccw[:, [0, 2, 1]])]
    verts = torch.cat([torch.cat([grid + torch.tensor([x, 0.0]), torch.full((n * n, 1), z)], 1) for x, z, _ in parts])
    faces = torch.cat([f + k * n * n for k, (_, _, f) in enumerate(parts)])
    F = len(faces)
    bary = torch.full((F, 3), 1 / 3)
    means = (verts[faces] * bary[..., None]).sum(1)
    g = WorldGaussians(means=means, covars=torch.eye(3).expand(F, 3, 3) * (0.003 ** 2),
                       opacities=torch.full((F,), 0.99), colors=torch.rand(F, 3),
                       scales=torch.full((F, 3), 0.003), rotmats=torch.eye(3).expand(F, 3, 3))
    cam = Camera(torch.as_tensor(look_at_opencv(np.array([0, 0, 0.5]), np.zeros(3)), dtype=torch.float32),
                 torch.tensor([[600.0, 0, 64], [0, 600.0, 64], [0, 0, 1]]), 128, 128)

    def per_quad(**kw):
        vis = accumulate_visibility([(verts, g, cam)], faces, torch.arange(F), bary, len(verts), backend="torch", **kw)
        inner = (grid.abs() < 0.014).all(1)
        return [float(vis.vertex[k * n * n:(k + 1) * n * n][inner].mean()) for k in range(3)]

    facing, away, hidden = per_quad(min_cos=SEEN_ANY_MIN_COS, full_cos=0.0)
    print(f"seen at all: facing {facing:.3f}, turned away {away:.3f}, hidden {hidden:.3f}")
    assert facing > 0.9 and away > 0.9 and hidden < 0.1
    assert per_quad(min_cos=0.0)[1] == 0.0  # the facing test alone calls the turned-away quad unseen


def test_over_background_flags_surface_outside_the_silhouette_only():
    """engine.model.visibility.over_background: a vertex that projects onto a frame's background
    (mask 0) is flagged; on the person (mask 1) or outside the image it is not; one frame of
    background is enough."""
    from types import SimpleNamespace

    from engine.model.visibility import over_background

    verts = torch.tensor([[-0.05, 0.0, 0.5], [0.05, 0.0, 0.5], [0.5, 0.0, 0.5], [0.0, 0.0, 0.5]])

    class Still:
        head = SimpleNamespace(num_vertices=len(verts))

        def posed_vertices(self, shape, expr, pose, trans):
            return (verts + trans[:, None])[None][0], None

    T = 2
    K = np.array([[100.0, 0, 32], [0, 100.0, 32], [0, 0, 1]])
    tracking = {"shape": np.zeros(3), "expr": np.zeros((T, 2)), "pose": np.zeros((T, 3)),
                "translation": np.zeros((T, 3)), "viewmat": np.stack([np.eye(4)] * T), "K": np.stack([K] * T),
                "width": 64, "height": 64}
    masks = {0: torch.ones(64, 64, 1), 1: torch.ones(128, 128, 1)}  # frame 1's mask at twice the size
    masks[1][:, :60] = 0.0  # background left of x = 30 px (of 64): vertex 0 (x = 22 px)
    out = over_background(Still(), tracking, lambda i: masks[i], [0, 1], torch.device("cpu"))
    assert out.tolist() == [1.0, 0.0, 0.0, 0.0]  # left: background; right: person; 2: outside; 3: centre
    # vertex 0 projects to column 44 of a 128² mask; background there, the person from column 46:
    # within BACKGROUND_MARGIN of the silhouette, so not outside it (a silhouette vertex)
    near = torch.ones(128, 128, 1)
    near[:, :46] = 0.0
    assert over_background(Still(), tracking, lambda i: near, [0], torch.device("cpu"))[0] == 0
    near[:, :50] = 0.0  # the person from column 50: outside
    assert over_background(Still(), tracking, lambda i: near, [0], torch.device("cpu"))[0] == 1
    assert over_background(Still(), tracking, lambda i: masks[i], [0], torch.device("cpu")).sum() == 0


# ---------------------------------------------------------------------- completion
def test_completed_maps_are_closed_and_keep_what_was_seen(trained_avatar):
    from engine.avatar_folder import load_avatar
    from engine.bake.completion import complete_maps, texel_visibility
    from engine.bake.direct_fit import direct_fit_maps
    from engine.geometry.uv import island_mask
    from engine.maps import gaussian_uvs
    from engine.model.visibility import load_visibility

    loaded = load_avatar(trained_avatar)
    av, head = loaded.avatar, loaded.avatar.head
    g = av.gaussians
    uv = gaussian_uvs(g.face_idx, g.bary, head.uvs, head.faces_uv_all)
    seen = direct_fit_maps({k: v.detach() for k, v in g.activated().items()}, uv, 128)
    vis = load_visibility(trained_avatar, len(g))
    done = complete_maps(seen, vis.vertex, head)
    isl = torch.as_tensor(island_mask(head.uvs, head.faces_uv_all, 128))
    tv = texel_visibility(vis.vertex, head.uvs, head.faces_all, head.faces_uv_all, 128)[..., 0]
    for name, m in done.items():
        assert torch.isfinite(m).all(), name
        assert m.shape[:2] == (128, 128), name
    unseen = isl & (tv < 0.1)
    # the direct fit leaves the unseen back near the initial opacity 0.1 (translucent): a hole
    print(f"opacity at unseen texels: direct fit {seen['opacity'][unseen].mean():.3f}, "
          f"completed min {done['opacity'][unseen].min():.3f}; {int(unseen.sum())} texels")
    assert float(seen["opacity"][unseen].mean()) < 0.5
    # what the video saw, even at a grazing angle, keeps the bake's opacity (it may be low: the
    # mouth, thin edges, a mesh larger than the person); what it never saw is closed
    from engine.bake.completion import OPACITY_SEEN_LO

    never = isl & (tv < OPACITY_SEEN_LO)
    op = done["opacity"][never]
    # a texel interpolates its corners: below OPACITY_SEEN_LO one corner can still be at ~3× it,
    # which keeps up to ~1/4 of the bake's value (measured min 0.76)
    assert float(op.mean()) > 0.9 and float(op.min()) > 0.7, (float(op.mean()), float(op.min()))
    # seen texels (visibility >= 0.8) keep the bake's values exactly
    keep = isl & (tv >= 0.8)
    for name in ("color", "opacity", "scale"):
        # a texel's visibility is interpolated from its corners; one corner below SEEN_HI blends
        # a little of the fill in (measured: colour/scale at most 0.016, opacity 3 of 7720 texels
        # up to 0.067)
        torch.testing.assert_close(done[name][keep], seen[name][keep], atol=0.1, rtol=0)
    # the back is filled with colours of the head, not the initial grey (0.5, 0.5, 0.5)
    grey = (done["color"][unseen] - 0.5).abs().max(-1).values
    assert float((grey < 0.02).float().mean()) < 0.05


# ---------------------------------------------------------------------- the bake with the full-head stage
def test_bake_writes_the_visibility_map(completed_avatar):
    import json

    from engine.maps import MAP_SPECS, load_maps

    manifest = json.loads((completed_avatar / "maps" / "maps.json").read_text())
    assert set(manifest["maps"]) == set(MAP_SPECS) | {"visibility"}
    assert manifest["maps"]["visibility"]["colorspace"] == "Non-Color"
    maps, _ = load_maps(completed_avatar / "maps")
    v = maps["visibility"]
    assert v.shape == (128, 128, 1) and 0 <= float(v.min()) and float(v.max()) <= 1 + 1e-6  # EXR float round-off
    assert (completed_avatar / "maps" / "visibility.png").is_file()
    assert (completed_avatar / "maps_seen.safetensors").is_file()


def test_fine_tune_keeps_what_the_video_saw(completed_avatar):
    """BakeConfig.full_head_keep_seen (default): texels the video saw (seen weight 1) leave the
    pseudo-view fine-tune with their seen bake's values; invented texels changed."""
    from safetensors.torch import load_file

    from engine.avatar_folder import load_avatar
    from engine.bake.completion import seen_weights
    from engine.maps import MAP_SPECS, load_maps
    from engine.model.visibility import load_visibility

    seen = load_file(str(completed_avatar / "maps_seen.safetensors"))
    final, _ = load_maps(completed_avatar / "maps")
    loaded = load_avatar(completed_avatar)
    vis = load_visibility(completed_avatar, len(loaded.avatar.gaussians))
    R = final["color"].shape[0]
    keep = seen_weights(vis.vertex, loaded.avatar.head, R)["color"][..., 0]
    kept, invented = keep > 0.999, keep < 0.001
    assert int(kept.sum()) > 500 and int(invented.sum()) > 500, (int(kept.sum()), int(invented.sum()))
    for name in ("color", "scale", "rotation"):
        f, s_ = final[name].reshape(R, R, -1), seen[name].reshape(R, R, -1)
        torch.testing.assert_close(f[kept], s_[kept], atol=2e-3, rtol=1e-3)  # EXR float32 round trip
    change = (final["color"] - seen["color"]).abs().amax(-1)
    assert float(change[invented].mean()) > 0.01  # the fill (and the fine-tune) painted the unseen
    assert set(MAP_SPECS) <= set(final)


def test_completion_covers_the_back_and_keeps_the_front(full_head_numbers):
    t, c = full_head_numbers["trained"], full_head_numbers["completed"]
    # measured (1000-step avatar, 100 + 40-pair bake, 128²; docs/benchmarks.md), PSNR / coverage:
    # trained 30.57/0.966 front, 18.58/0.778 and 18.54/0.770 sides, 17.67/0.926 back; completed
    # 28.01/0.971, 20.30/0.906, 19.84/0.886, 15.88/0.964. Opacity is closed only where no training
    # view painted the surface at all, and the fine-tune changes only invented texels
    # (full_head_keep_seen): before those two, the sides reached 0.961/0.955 but the tracked main
    # job's test frames lost 3.3 dB more. The see-through sides close and gain ~1.5 dB; the back is
    # covered but its fill colour is worse than the trained avatar's (the PSNR and coverage
    # targets are missed, see the benchmarks); the front pays the bake's cost.
    for yaw in (90.0, 180.0, 270.0):
        assert c[yaw]["coverage"] >= 0.87, (yaw, c[yaw])
    for yaw in (90.0, 270.0):
        assert c[yaw]["coverage"] > t[yaw]["coverage"] + 0.1, (yaw, t[yaw], c[yaw])
        assert c[yaw]["psnr"] > t[yaw]["psnr"] + 1.0, (yaw, t[yaw], c[yaw])
    assert c[180.0]["coverage"] > t[180.0]["coverage"] + 0.03
    assert c[0.0]["psnr"] > t[0.0]["psnr"] - 3.0  # a guard: measured -2.6 dB, the bake and the completion (target -0.3 dB, missed)


def test_oracle_generator_is_the_ceiling(full_head_numbers):
    c, o = full_head_numbers["completed"], full_head_numbers["oracle"]
    # measured +1.9 / +2.7 / +1.7 dB at 90° / 180° / 270° (oracle 22.19 / 18.60 / 21.55; +0.2–0.3 dB
    # before the fine-tune was kept to invented texels): the 40-pair fine-tune is still too short to
    # reach the truth (the 24 dB target is missed)
    for yaw in (90.0, 180.0, 270.0):
        assert o[yaw]["psnr"] > c[yaw]["psnr"] + 1.0, (yaw, c[yaw], o[yaw])


# ---------------------------------------------------------------------- generators
def _views(V=2, H=8, W=6):
    from engine.bake.pseudo_views import PseudoViews

    z = np.zeros
    return PseudoViews(images=z((V, H, W, 3), np.float32), alpha=np.ones((V, H, W), np.float32),
                       unseen=z((V, H, W), np.float32), surface_images=z((V, H, W, 3), np.float32),
                       surface_alpha=np.ones((V, H, W), np.float32), viewmats=np.tile(np.eye(4), (V, 1, 1)),
                       K=np.tile(np.eye(3), (V, 1, 1)), yaw_deg=z(V), pitch_deg=z(V), background=np.ones(3),
                       reference_images=z((1, H, W, 3)), reference_viewmats=np.eye(4)[None], reference_K=np.eye(3)[None])


def test_generator_answers_are_checked_and_named():
    from engine.bake.pseudo_views import check_generated

    v = _views()
    rgb, mask = check_generated(np.full((2, 8, 6, 4), 0.5, np.float32), v, "my.gen:fn")
    assert rgb.shape == (2, 8, 6, 3) and mask.shape == (2, 8, 6) and float(mask.max()) == 0.5
    rgb, mask = check_generated(np.full((2, 8, 6, 3), 255, np.uint8), v, "my.gen:fn")
    assert float(rgb.min()) == 1.0 and float(mask.min()) == 1.0  # uint8 scaled, mask = rendered alpha
    with pytest.raises(CompletionError, match=r"'my.gen:fn'.*\(2, 16, 6, 3\).*\(2, 8, 6, 3 or 4\)"):
        check_generated(np.zeros((2, 16, 6, 3), np.float32), v, "my.gen:fn")
    with pytest.raises(CompletionError, match=r"'my.gen:fn'.*shape \(8, 6, 3\)"):
        check_generated(np.zeros((8, 6, 3), np.float32), v, "my.gen:fn")
    bad = np.zeros((2, 8, 6, 3), np.float32)
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(CompletionError, match=r"'my.gen:fn'.*NaN.*\[1\]"):
        check_generated(bad, v, "my.gen:fn")
    with pytest.raises(CompletionError, match=r"'my.gen:fn'.*values in \[2, 2\]"):
        check_generated(np.full((2, 8, 6, 3), 2.0, np.float32), v, "my.gen:fn")
    with pytest.raises(CompletionError, match="returned NoneType"):
        check_generated(None, v, "my.gen:fn")


def test_generator_spec_errors_name_it():
    from engine.bake.pseudo_views import load_generator

    with pytest.raises(CompletionError, match="'nosuchmodule_xyz:fn'.*cannot import"):
        load_generator("nosuchmodule_xyz:fn")
    with pytest.raises(CompletionError, match="'engine.demo.oracle:nope'.*no callable 'nope'"):
        load_generator("engine.demo.oracle:nope")
    with pytest.raises(CompletionError, match="module:function"):
        load_generator("engine.demo.oracle")
    assert callable(load_generator("engine.demo.oracle:generate_synthetic"))


def test_a_bad_generator_fails_the_bake_with_its_name(completed_avatar, tmp_path_factory, monkeypatch):
    """A generator returning half-size images stops the bake with a CompletionError naming it."""
    import sys
    import types

    mod = types.ModuleType("fate_test_bad_generator")
    mod.half = lambda views: views.images[:, ::2, ::2]
    monkeypatch.setitem(sys.modules, "fate_test_bad_generator", mod)
    d = tmp_path_factory.mktemp("bad_gen") / "avatar"
    shutil.copytree(completed_avatar, d)
    with pytest.raises(CompletionError, match="'fate_test_bad_generator:half' returned images of shape"):
        bake(BakeConfig(avatar=str(d), full_head_only=True, completion_generator="fate_test_bad_generator:half",
                        **FULL_BAKE))


def test_full_head_only_needs_an_earlier_bake(trained_avatar, tmp_path_factory):
    d = _copy(trained_avatar, tmp_path_factory, "no_seen")
    with pytest.raises(CompletionError, match="maps_seen.safetensors is missing"):
        bake(BakeConfig(avatar=str(d), full_head_only=True, **FULL_BAKE))
