"""Expression-dependent appearance (issue 19): HeadGaS feature blending, the map shape keys and
the conditioned BakeNet's driving signal, on the demo head at toy sizes (no trained fixture)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.map_keys import KeyFit, KeySpec, MapKeyAppearance, MapKeys, split_features, split_specs
from engine.model.appearance_drivers import make_drivers
from engine.model.headgas import BASIS, BIAS, attach_headgas


class _Seq:
    """The parts of a Sequence that build_avatar reads."""

    def __init__(self, head, frames: int = 4):
        self.shape = torch.zeros(head.num_shape)
        self.expr = torch.zeros(frames, head.num_expr)
        self.pose = torch.zeros(frames, head.num_joints * 3)

    def __len__(self) -> int:
        return self.expr.shape[0]


@pytest.fixture(scope="module")
def avatar(demo_head):
    """A demo-head avatar at 32² UV sampling (~700 Gaussians) with random static attributes."""
    from engine.model.avatar import build_avatar

    torch.manual_seed(0)
    av = build_avatar(demo_head, _Seq(demo_head), torch.device("cpu"), uv_resolution=32, shell=0.01,
                      learn_blendshapes=False, refine_tracking=False)
    g = av.gaussians
    with torch.no_grad():
        g.sh0.normal_(0.0, 1.0)
        g.opacity_logit.normal_(2.0, 1.0)
    return av


def _frame(head, seed: int):
    gen = torch.Generator().manual_seed(seed)
    expr = torch.randn(head.num_expr, generator=gen)
    pose = 0.2 * torch.randn(head.num_joints * 3, generator=gen)
    return expr, pose


def _with_headgas(av, head):
    import copy

    hg = copy.copy(av)
    hg.gaussians = copy.deepcopy(av.gaussians)
    attach_headgas(hg, torch.zeros(head.num_shape), 52, True, 8, 16, 2)
    with torch.no_grad():
        getattr(hg.gaussians, BIAS).normal_(0.0, 1.0)  # a trained-looking bias; F stays zero
    return hg


def test_headgas_with_zero_bases_is_the_static_avatar(avatar, demo_head):
    """F = 0: every expression renders FATE's static colour and opacity, bit for bit (HeadGaS
    initialises F to zero; the residual is measured from the neutral face)."""
    hg = _with_headgas(avatar, demo_head)
    assert getattr(hg.gaussians, BASIS).shape == (len(avatar.gaussians), 14 + 9, 8)  # D = 14 expr + 9 jaw
    verts = torch.as_tensor(demo_head.v_template)
    for seed in range(3):
        expr, pose = _frame(demo_head, seed)
        static = avatar.place(verts, expr=expr, pose=pose)
        dyn = hg.place(verts, expr=expr, pose=pose)
        assert torch.equal(dyn.colors, static.colors) and torch.equal(dyn.opacities, static.opacities)
    # planted fault: non-zero bases do change the appearance
    with torch.no_grad():
        getattr(hg.gaussians, BASIS).normal_(0.0, 1.0)
    dyn = hg.place(verts, expr=expr, pose=pose)
    assert (dyn.colors - static.colors).abs().max() > 1e-3


def test_headgas_neutral_face_is_static_and_outputs_stay_in_range(avatar, demo_head):
    hg = _with_headgas(avatar, demo_head)
    model, g = hg.appearance, hg.gaussians
    with torch.no_grad():
        getattr(g, BASIS).normal_(0.0, 30.0)  # extreme features
        for p in model.mlp.parameters():
            p.mul_(20.0)
    zero_e, zero_p = torch.zeros(demo_head.num_expr), torch.zeros(demo_head.num_joints * 3)
    c0, o0 = model(g, zero_e, zero_p)
    assert torch.equal(c0, g.colors()) and torch.equal(o0, g.opacities())  # d = 0: the static avatar
    expr, pose = _frame(demo_head, 1)
    with torch.no_grad():
        dc, da = model.residuals(g, model.drivers.values(5.0 * expr, pose))
    # bounded heads: |Δ colour| ≤ 2 (tanh/C0 twice, in encoded units), |Δ logit| ≤ 12
    assert float((dc * 0.28209479177387814).abs().max()) <= 2.0 + 1e-6
    assert float(da.abs().max()) <= 12.0 + 1e-5
    assert float(da.abs().max()) > 1.0  # the bound is reached for, not a no-op
    c, o = model(g, 5.0 * expr, pose)
    assert float(c.min()) >= 0.0 and float(c.max()) <= 1.0
    assert float(o.min()) >= 0.0 and float(o.max()) <= 1.0


def test_headgas_features_follow_densification_and_files(avatar, demo_head, tmp_path):
    from engine.model.gaussians import UVGaussians
    from engine.train.densify.ops import add_children, prune

    hg = _with_headgas(avatar, demo_head)
    g = hg.gaussians
    with torch.no_grad():
        getattr(g, BASIS).normal_()
    params = [getattr(g, n) for n in g.parameter_names()]
    opt = torch.optim.Adam(params, lr=1e-3)
    n = len(g)
    parents = torch.tensor([3, 7])
    add_children(g, opt, parents, torch.Generator().manual_seed(0))
    assert getattr(g, BASIS).shape[0] == n + 2
    torch.testing.assert_close(getattr(g, BASIS)[n:], getattr(g, BASIS)[parents], rtol=0, atol=0)
    assert all(any(p is q for q in opt.param_groups[0]["params"]) for p in (getattr(g, BASIS), getattr(g, BIAS)))
    keep = torch.ones(len(g), dtype=torch.bool)
    keep[0] = False
    kept_row = getattr(g, BASIS)[1].clone()
    prune(g, opt, keep)
    torch.testing.assert_close(getattr(g, BASIS)[0], kept_row, rtol=0, atol=0)
    back = UVGaussians.from_raw_state(g.raw_state(), g.shell)
    assert back.extra_names == [BASIS, BIAS]
    torch.testing.assert_close(getattr(back, BASIS), getattr(g, BASIS), rtol=0, atol=0)


# ---------------------------------------------------------------------- map shape keys
def _keys(R: int = 16, seed: int = 0) -> MapKeys:
    gen = torch.Generator().manual_seed(seed)
    specs = [KeySpec("smile", 1), KeySpec("smile", -1), KeySpec("Pose_jaw_21", 1)]
    return MapKeys(specs, 0.2 * torch.randn(3, R, R, 3, generator=gen), 0.2 * torch.randn(3, R, R, 1, generator=gen))


def test_map_keys_at_zero_weight_reproduce_the_base_exactly(demo_head):
    drivers = make_drivers(demo_head, demo_head.num_expr)
    uv = torch.rand(500, 2, generator=torch.Generator().manual_seed(1))
    blend = MapKeyAppearance(_keys(), drivers, uv)
    base_c, base_o = torch.rand(500, 3), torch.rand(500)
    base_c[:10] = torch.tensor([1.2, -0.1, 0.5])  # a float colour map may be painted out of [0, 1]
    zero_e, zero_p = torch.zeros(demo_head.num_expr), torch.zeros(demo_head.num_joints * 3)
    c, o = blend.blend(base_c, base_o, zero_e, zero_p)
    assert torch.equal(c, base_c) and torch.equal(o, base_o)
    # smile < 0 drives only the "smile-" key; other shape keys drive nothing
    e = zero_e.clone()
    e[drivers.names.index("frown")] = 2.0
    assert torch.equal(blend.blend(base_c, base_o, e, zero_p)[0], base_c)
    e[drivers.names.index("smile")] = -0.5
    c, _ = blend.blend(base_c, base_o, e, zero_p)
    expected = (base_c + 0.5 * blend.d_color[1]).clamp(0, 1)  # driven: clipped to [0, 1]
    torch.testing.assert_close(c, expected, rtol=0, atol=1e-6)


def test_a_painted_edit_is_kept_under_every_expression(demo_head):
    """The base is the painted colour map: changing it changes the result by the same amount under
    any expression (where nothing clips)."""
    drivers = make_drivers(demo_head, demo_head.num_expr)
    uv = torch.rand(300, 2, generator=torch.Generator().manual_seed(2))
    keys = _keys()
    keys.color *= 0.1
    blend = MapKeyAppearance(keys, drivers, uv)
    base = torch.full((300, 3), 0.5)
    painted = base.clone()
    painted[:100] = torch.tensor([0.3, 0.6, 0.45])  # the artist's edit on a third of the Gaussians
    for seed in range(3):
        expr, pose = _frame(demo_head, seed)
        expr[drivers.names.index("smile")] = 1.5
        a, _ = blend.blend(base, torch.ones(300), expr, pose)
        b, _ = blend.blend(painted, torch.ones(300), expr, pose)
        torch.testing.assert_close(b - a, painted - base, rtol=0, atol=1e-6)
        assert (a - base).abs().max() > 1e-3  # the expression does change the colour


def test_key_fit_recovers_a_split_linear_basis():
    """Deltas made by a known basis on the split features are fitted back (ridge 1e-8), and a
    feature that never fires gets no key."""
    gen = torch.Generator().manual_seed(3)
    drivers = type("D", (), {"names": ("a", "b")})()
    specs = split_specs(drivers)
    assert [s.name for s in specs] == ["a+", "a-", "b+", "b-"]
    true = torch.randn(4, 50, generator=gen)
    fit = KeyFit(specs, 50)
    for _ in range(40):
        d = torch.tensor([float(torch.randn(1, generator=gen)), abs(float(torch.randn(1, generator=gen)))])
        phi = split_features(d)
        assert phi[3] == 0  # "b-" never fires
        fit.add(phi, phi @ true)
    kept, D, stats = fit.solve(ridge=1e-8)
    assert [s.name for s in kept] == ["a+", "a-", "b+"]
    torch.testing.assert_close(D, true[:3], rtol=0, atol=1e-4)
    assert stats["explained"] == pytest.approx(1.0, abs=1e-4)


def test_key_fit_cross_validates_the_ridge():
    """Exactly linear deltas: the smallest ridge wins; pure noise: the largest (the keys then
    stay near zero instead of fitting the training frames)."""
    gen = torch.Generator().manual_seed(5)
    specs = [KeySpec("a", 1), KeySpec("a", -1), KeySpec("b", 1), KeySpec("b", -1)]
    true = torch.randn(4, 64, generator=gen)
    clean, noise = KeyFit(specs, 64), KeyFit(specs, 64)
    for t in range(30):
        phi = split_features(torch.randn(2, generator=gen))
        clean.add(phi, phi @ true, fold=t * 5 // 30)
        noise.add(phi, torch.randn(64, generator=gen), fold=t * 5 // 30)
    _, _, s_clean = clean.solve()
    _, D_noise, s_noise = noise.solve()
    assert s_clean["ridge"] == KeyFit.RIDGES[0] and s_noise["ridge"] == KeyFit.RIDGES[-1]
    assert s_clean["explained"] > 0.999 and float(D_noise.abs().mean()) < 0.3


# ---------------------------------------------------------------------- the conditioned BakeNet
def test_expression_conditioning_is_zero_at_rest_and_follows_the_expression(avatar, demo_head):
    from engine.bake.dynamic import ExpressionConditioning

    T = 6
    gen = torch.Generator().manual_seed(4)
    tracking = {"shape": np.zeros(demo_head.num_shape, np.float32),
                "expr": np.concatenate([np.zeros((1, demo_head.num_expr)),
                                        torch.randn(T - 1, demo_head.num_expr, generator=gen).numpy()]),
                "pose": np.zeros((T, demo_head.num_joints * 3), np.float32)}
    tracking["pose"][2, 6] = 0.2  # jaw open
    tracking["pose"][3, 0:3] = 0.3  # global rotation: rigid, not in the conditioning
    cond = ExpressionConditioning(avatar, tracking, 32, list(range(T)), components=0)
    assert torch.equal(cond.frame_map(0), torch.zeros(1, 3, 32, 32)) and torch.equal(cond.neutral, cond.frame_map(0))
    assert cond.frame_map(1).abs().max() > 0.3  # ~1.5 mm and more of displacement, in 5 mm units
    jaw_only = dict(tracking, expr=np.zeros_like(tracking["expr"]))
    c2 = ExpressionConditioning(avatar, jaw_only, 32, list(range(T)), components=0)
    assert c2.frame_map(2).abs().max() > 1.0 and torch.equal(c2.frame_map(3), c2.neutral)
    # the PCA projection keeps the training maps (T − 1 components span them) and clips novel ones
    pca = ExpressionConditioning(avatar, tracking, 32, list(range(T)), components=T - 1)
    torch.testing.assert_close(pca.frame_map(4), cond.frame_map(4), rtol=0, atol=1e-3)


# ---------------------------------------------------------------------- train → bake → maps/dynamic
@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory, demo_head) -> Path:
    """8 frames at 32² with the expression-dependent layers (a second)."""
    from engine.demo.config import SyntheticConfig
    from engine.demo.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("tiny_dynamic"), demo_head,
                                   SyntheticConfig(frames=8, resolution=32, gt_uv_resolution=64,
                                                   dynamic_appearance=True))


def test_headgas_trains_bakes_and_writes_map_keys(tiny_dataset, tmp_path):
    from engine.bake.baker import bake
    from engine.bake.config import BakeConfig
    from engine.evaluate.render import load_for_rendering
    from engine.map_keys import MapKeyAppearance
    from engine.model.headgas import HeadGaSAppearance
    from engine.train.config import TrainConfig
    from engine.train.trainer import train

    out = tmp_path / "hg"
    cfg = TrainConfig(dataset=str(tiny_dataset), output=str(out), steps=12, uv_resolution=32, device="cpu",
                      preview_every=0, checkpoint_every=6, threads=1, appearance="headgas")
    cfg.densify.start, cfg.densify.every, cfg.densify.count, cfg.densify.prune_every = 6, 6, 40, 6
    train(cfg)
    loaded = load_for_rendering(out, torch.device("cpu"), from_maps=False)
    assert isinstance(loaded.avatar.appearance, HeadGaSAppearance) and loaded.avatar.shading is None
    # avatar.json names the model; its file is published and hashed, no relightable shading beside it
    assert loaded.meta["appearance"] == "headgas" and "appearance.safetensors" in loaded.meta["files"]
    assert "shading.safetensors" not in loaded.meta["files"]
    assert float(getattr(loaded.avatar.gaussians, BASIS).abs().max()) > 0  # the bases were trained
    bake(BakeConfig(avatar=str(out), resolution=32, steps=3, base_channels=8, depth=2, device="cpu",
                    checkpoint_every=0, key_min_effect=0.0, full_head_steps=2))  # full head: its keys blend in too
    manifest = json.loads((out / "maps" / "maps.json").read_text())
    dyn = manifest["dynamic"]
    assert dyn["source"] == "headgas" and "Pose_jaw_21+" in dyn["keys"]
    with np.load(out / "maps" / "dynamic" / "color.npz") as z:
        assert z["deltas"].dtype == np.float16 and z["deltas"].shape == (len(dyn["keys"]), 32, 32, 3)
        assert [f"{n}{'+' if s > 0 else '-'}" for n, s in zip(z["shape_keys"], z["signs"])] == dyn["keys"]
    baked = load_for_rendering(out, torch.device("cpu"), from_maps=True)
    assert isinstance(baked.avatar.appearance, MapKeyAppearance)
    assert load_for_rendering(out, torch.device("cpu"), from_maps=True, map_keys=False).avatar.appearance is None


def test_dynamic_maps_bake_writes_map_keys(tiny_dataset, tmp_path):
    from engine.bake.baker import Baker
    from engine.bake.config import BakeConfig
    from engine.train.config import TrainConfig
    from engine.train.trainer import train

    out = tmp_path / "static"
    train(TrainConfig(dataset=str(tiny_dataset), output=str(out), steps=5, uv_resolution=32, device="cpu",
                      preview_every=0, checkpoint_every=0, threads=1))
    baker = Baker(BakeConfig(avatar=str(out), resolution=32, steps=4, base_channels=8, depth=2, device="cpu",
                             checkpoint_every=0, dynamic_maps=True, key_min_effect=0.0, lr=1e-2,
                             full_head=False))  # the conditioned net itself (the full-head stage replaces it)
    assert baker.net.inc[0].in_channels == 14  # 11 + the displacement map
    baker.run()
    with torch.no_grad():
        neutral, frame = baker.maps(), baker.maps(5)
    for k in ("scale", "rotation", "offset"):  # geometry is the neutral pass's
        assert torch.equal(neutral[k], frame[k])
    assert (neutral["color"] - frame["color"]).abs().max() > 0  # colour follows the expression
    manifest = json.loads((out / "maps" / "maps.json").read_text())
    assert manifest["dynamic"]["source"] == "dynamic_maps" and manifest["dynamic"]["keys"]
    from safetensors.torch import load_file

    assert "cond_mean" in load_file(str(out / "bakenet.safetensors"))


# ---------------------------------------------------------------------- the demo subject's layers
def test_demo_layers_are_driven_by_shape_keys_and_placed_on_their_features(demo_head):
    from engine.demo.expression_appearance import (LAYERS, composite, layer_factors, layer_rgba,
                                                   shape_key_values, surface_texels)

    pts, nrm, uv, is_mouth, _ = surface_texels(demo_head, 256)  # the forehead lines alias below ~200²
    layers = layer_rgba(pts, nrm, uv, is_mouth, demo_head)
    assert list(layers) == [layer.name for layer in LAYERS]
    for name in ("mouth_interior", "mouth_open"):
        assert np.array_equal(layers[name][:, 3] > 0, is_mouth)  # exactly the mouth-closing faces
    for name in ("brow_wrinkles", "smile_lines", "lid_crease_left"):
        a = layers[name][:, 3]
        assert a.max() > 0.5 and not (is_mouth & (a > 0)).any()
    wrinkles = pts[layers["brow_wrinkles"][:, 3] > 0.1]
    assert wrinkles[:, 1].min() > 0.04 and wrinkles[:, 2].min() > 0.0  # on the forehead, in front
    left = pts[layers["lid_crease_left"][:, 3] > 0.1]
    assert (left[:, 0] > 0).all()  # the subject's left is +x
    # the jaw opens the mouth layer through its corrective key: (R − I)[2, 1] = sin θ
    pose = np.zeros(demo_head.num_joints * 3, np.float32)
    pose[6] = 0.1
    values = shape_key_values(demo_head, np.zeros(demo_head.num_expr, np.float32), pose)
    assert values["Pose_jaw_21"] == pytest.approx(np.sin(0.1), abs=1e-6)
    f = layer_factors(values)
    assert f["mouth_open"] == pytest.approx(5.0 * np.sin(0.1), abs=1e-5) and f["mouth_interior"] == 1.0
    assert f["brow_wrinkles"] == 0.0 and layer_factors({"brow_raise": -1.0})["brow_wrinkles"] == 0.0
    base = np.full((len(pts), 3), 0.6, np.float32)
    closed = composite(base, layers, layer_factors({}))
    raised = composite(base, layers, layer_factors({"brow_raise": 1.0}))
    changed = np.abs(raised - closed).max(1) > 1e-3
    alpha = layers["brow_wrinkles"][:, 3]
    assert not (changed & (alpha == 0)).any() and changed[alpha > 0.01].all()  # where the wrinkles are
