"""The relightable appearance (HRAvatar §3.3): BRDF, environment and shading against closed forms,
relighting and albedo edits, and a tiny pbr avatar through train → save → load → bake → render."""

from __future__ import annotations

import math

import pytest
import torch

from engine.model.brdf import (
    brdf_lut,
    fresnel_schlick_roughness,
    integrate_brdf,
    lookup_lut,
)
from engine.model.environment import (
    Environment,
    camera_to_room,
    direction_to_latlong,
    latlong_directions,
    prefilter_operators,
)
from engine.model.pbr import gaussian_normals, linear_to_srgb, shade_radiance, srgb_to_linear


# ---------------------------------------------------------------------- BRDF
def test_split_sum_at_roughness_zero_is_schlicks_fresnel():
    """A mirror lobe: F0·A + B is Schlick's Fresnel at the view angle, A = 1 − (1 − N·V)^5,
    B = (1 − N·V)^5 (every importance sample is the mirror direction, so exact to float64)."""
    nv = torch.tensor([0.02, 0.1, 0.3, 0.6, 0.9, 1.0], dtype=torch.float64)
    a, b = integrate_brdf(nv, torch.zeros_like(nv), samples=64)
    torch.testing.assert_close(a, 1 - (1 - nv) ** 5, rtol=0, atol=1e-9)
    torch.testing.assert_close(b, (1 - nv) ** 5, rtol=0, atol=1e-9)


def test_split_sum_at_normal_incidence_and_full_roughness():
    """At N·V = 1, roughness 1 (α = 1: D uniform) the Smith–Schlick (k = ½) integral is
    ∫₀^½ 2(1 − 2ξ)/(2 − 2ξ) dξ = 1 − ln 2 for A + B; 1024 Hammersley samples: |error| < 2e-3."""
    a, b = integrate_brdf(torch.tensor([1.0]), torch.tensor([1.0]))
    assert abs(float(a + b) - (1 - math.log(2))) < 2e-3


def test_lut_is_energy_conserving_and_samples_its_texels():
    """Directional albedo with F0 = 1 (A + B) never exceeds 1; the bilinear lookup at a texel
    centre returns that texel (float32 rounding only)."""
    lut = brdf_lut()
    assert float((lut[..., 0] + lut[..., 1]).max()) <= 1.0 + 1e-3
    S = lut.shape[0]
    i, j = 7, 20
    a, b = lookup_lut(lut, torch.tensor([(j + 0.5) / S]), torch.tensor([(i + 0.5) / S]))
    torch.testing.assert_close(torch.stack([a[0], b[0]]), lut[i, j], rtol=0, atol=1e-6)


def test_fresnel_term_is_f0_at_normal_incidence():
    """k_s(N·V = 1) = F0 up to UE4's fit 2^−12.5 ≈ 1.7e-4 of (max(1 − o, F0) − F0); at grazing
    incidence it is the roughness-capped max(1 − o, F0)."""
    f0 = torch.tensor([0.04, 0.08, 0.15])
    o = torch.tensor([0.5, 0.7, 1.0])
    torch.testing.assert_close(fresnel_schlick_roughness(f0, torch.ones(3), o), f0, rtol=0, atol=2e-4)
    torch.testing.assert_close(fresnel_schlick_roughness(f0, torch.zeros(3), o), torch.maximum(1 - o, f0),
                               rtol=0, atol=1e-6)


# ---------------------------------------------------------------------- environment
def _single_texel_light(i: int = 5, j: int = 7, irradiance: float = 2.0):
    d, sa = latlong_directions(16)
    rad = torch.full((16, 32, 3), 1e-9, dtype=torch.float64)
    rad[i, j] = irradiance / sa[i, j]
    return Environment.from_radiance(rad.float()), d[i, j].float(), irradiance


def test_white_lambertian_sphere_under_one_direction_light():
    """A direction light of irradiance E0 from s: order-2 SH gives exactly the truncated series
    E0/π · (¼ + ½ cos + 5/16 · (3cos² − 1)/2) (float32: 1e-5), which is within 0.1·E0/π of the
    true clamped cosine max(cos, 0)·E0/π (Ramamoorthi & Hanrahan's worst case, 9.2 % here)."""
    env, s, E0 = _single_texel_light()
    n = torch.nn.functional.normalize(torch.randn(2000, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    c = n @ s
    white = env.irradiance(n)  # a white Lambertian surface's radiance, linear RGB
    trunc = E0 / math.pi * (0.25 + 0.5 * c + 5 / 16 * (3 * c * c - 1) / 2)
    torch.testing.assert_close(white[:, 0], trunc, rtol=0, atol=1e-5)
    assert float((white[:, 0].detach() - E0 / math.pi * c.clamp_min(0)).abs().max()) < 0.1 * E0 / math.pi


def test_uniform_environment_lights_evenly():
    """A uniform radiance c: irradiance c in every direction (the lat-long quadrature of band 2 is
    off by 0.3 % at most) and prefiltered specular c at every roughness (rows sum to 1)."""
    env = Environment(radiance=0.7)
    n = torch.nn.functional.normalize(torch.randn(500, 3), dim=-1)
    torch.testing.assert_close(env.irradiance(n), torch.full((500, 3), 0.7), rtol=3e-3, atol=0)
    torch.testing.assert_close(env.specular(n, torch.rand(500)), torch.full((500, 3), 0.7), rtol=1e-5, atol=0)
    ops = prefilter_operators(16)
    torch.testing.assert_close(ops.sum(-1), torch.ones(ops.shape[:2]), rtol=0, atol=1e-5)
    torch.testing.assert_close(ops[0], torch.eye(ops.shape[1]))


def test_latlong_is_blenders_equirectangular():
    """Blender's Environment Texture (checked in Cycles): +X at the centre column, +Y at u = ¼,
    −Y at u = ¾, the zenith at the top; the room frame is (camera right, forward, up)."""
    d = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0], [0, 0, 1.0]])
    u, v = direction_to_latlong(d)
    torch.testing.assert_close(u, torch.tensor([0.5, 0.25, 0.75, 0.5]))
    torch.testing.assert_close(v, torch.tensor([0.5, 0.5, 0.5, 1.0]))
    cv = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])  # OpenCV right, down, forward
    torch.testing.assert_close(camera_to_room(cv), torch.tensor([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]))


# ---------------------------------------------------------------------- shading
def test_srgb_round_trip():
    x = torch.linspace(0, 1, 101)
    torch.testing.assert_close(linear_to_srgb(srgb_to_linear(x)), x, rtol=0, atol=1e-6)


def test_normal_is_the_shortest_axis_on_the_face_side():
    """The shortest axis, flipped to the side of the face normal (the local z)."""
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0]))  # axes x, −y, −z: the short axis points inwards
    rot = flip[None].expand(2, 3, 3).clone()
    scales = torch.tensor([[1.0, 1.0, 0.1], [0.1, 1.0, 1.0]])
    n = gaussian_normals(rot, scales, rot)
    torch.testing.assert_close(n, torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))


def test_shading_of_a_white_diffuse_surface_is_its_irradiance():
    """Albedo 1, F0 0 at normal incidence: the specular term is I_env · (0·A + B) with B(N·V = 1)
    ≈ 0 (1e-6 at roughness ≥ 0.5), so the radiance is the irradiance."""
    env = Environment(radiance=0.5)
    n = torch.tensor([[0.0, 0.0, 1.0]])
    out = shade_radiance(torch.ones(1, 3), torch.tensor([0.8]), torch.tensor([0.0]), n, n,
                         env.irradiance(n), env.specular, brdf_lut())
    torch.testing.assert_close(out, env.irradiance(n), rtol=0, atol=1e-4)


def test_relit_render_changes_where_the_light_moves():
    """A hemisphere of splats facing the camera, lit from its left, then from its right: the lit
    half of the image swaps (the mean of the right third minus the left third: about ∓0.16 in
    encoded values; an ignored or mirrored light fails)."""
    from engine.geometry.cameras import Camera
    from engine.model.gaussians import WorldGaussians
    from engine.model.pbr import PBRAppearance
    from engine.raster import rasterize

    g = torch.Generator().manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(4000, 3, generator=g), dim=-1)
    d = d[d[:, 2] < 0]  # the half facing a camera on −z (OpenCV z forward from the camera)
    means = 0.1 * d + torch.tensor([0.0, 0.0, 0.5])
    z = d
    x = torch.nn.functional.normalize(torch.cross(z, torch.tensor([[0.0, 1.0, 0.0]]).expand_as(z), dim=-1), dim=-1)
    y = torch.cross(z, x, dim=-1)
    rot = torch.stack([x, y, z], -1)
    scales = torch.tensor([0.012, 0.012, 0.002]).expand(len(d), 3)
    covars = (rot * scales[:, None].square()) @ rot.transpose(-1, -2)
    world = WorldGaussians(means, covars, torch.full((len(d), 3), 0.8), torch.full((len(d),), 0.9), scales, rot)
    cam = Camera(torch.eye(4), torch.tensor([[120.0, 0, 32], [0, 120.0, 32], [0, 0, 1]]), 64, 64)
    local = torch.eye(3).expand(len(d), 3, 3)  # the normal (z) is the face normal's side
    halves = []
    for side in (-1.0, 1.0):  # room frame: x = camera right
        rad = torch.full((16, 32, 3), 0.02)
        dirs, _ = latlong_directions(16)
        lobe = (dirs[..., 0] * side - dirs[..., 1] * 0.3).float()  # right/left, towards the camera
        rad += 3.0 * lobe.clamp_min(0)[..., None] ** 8
        app = PBRAppearance(Environment.from_radiance(rad))
        colors = app.shade(world, local, torch.full((len(d),), 0.8), torch.full((len(d),), 0.04), cam).colors
        img = rasterize(means, covars, world.opacities, colors, cam, torch.zeros(3)).image
        halves.append(float(img[:, 40:].mean().detach() - img[:, :24].mean().detach()))
    assert halves[0] < -0.1 and halves[1] > 0.1, halves


def test_bake_shading_trains_the_albedo_and_not_the_normals():
    """engine.bake.pbr_shading.shade_baked: the same colours as the model's shading, gradients into
    the albedo, none into the rotation and scale through the shading normals (an image gradient
    there, with no normal prior in the bake, drove a CPU main job's rotation maps to ±5e18)."""
    from engine.bake.pbr_shading import shade_baked
    from engine.geometry.cameras import Camera
    from engine.geometry.rotations import axis_angle_to_matrix
    from engine.model.gaussians import WorldGaussians
    from engine.model.pbr import PBRAppearance

    n = 64
    gen = torch.Generator().manual_seed(1)
    aa = (0.3 * torch.randn(n, 3, generator=gen)).requires_grad_()
    scales = torch.tensor([0.01, 0.008, 0.002]).repeat(n, 1).requires_grad_()
    albedo = torch.rand(n, 3, generator=gen).requires_grad_()
    rot = axis_angle_to_matrix(aa)
    covars = (rot * scales[:, None].square()) @ rot.transpose(-1, -2)
    means = torch.tensor([0.0, 0.0, 0.5]) + 0.05 * torch.randn(n, 3, generator=gen)
    world = WorldGaussians(means, covars, albedo, torch.full((n,), 0.9), scales, rot)
    cam = Camera(torch.eye(4), torch.tensor([[120.0, 0, 32], [0, 120.0, 32], [0, 0, 1]]), 64, 64)
    rad = torch.rand(16, 32, 3, generator=gen) * 2
    app = PBRAppearance(Environment.from_radiance(rad))
    pbr = {"roughness": torch.full((n,), 0.5), "f0": torch.full((n,), 0.04)}
    ours = shade_baked(app, world, rot, pbr, cam)
    theirs = app.shade(world, rot, pbr["roughness"], pbr["f0"], cam).colors
    torch.testing.assert_close(ours, theirs)
    ours.sum().backward()
    assert float(albedo.grad.abs().sum()) > 0
    assert aa.grad is None and scales.grad is None
    theirs.sum().backward()  # the model's own shading does reach them (what training regularises)
    assert float(aa.grad.abs().sum()) > 0


def test_albedo_edit_changes_only_the_splats_bound_there():
    """Painting a UV box of the albedo map changes the albedo (and the shaded colour) of exactly the
    Gaussians whose bilinear footprint touches the box; every other Gaussian is bit-identical."""
    from engine.maps import set_gaussians_from_maps
    from engine.model.gaussians import UVGaussians
    from engine.model.pbr import PBRAppearance

    g = torch.Generator().manual_seed(1)
    n, R = 400, 32
    uv = torch.rand(n, 2, generator=g)
    gs = UVGaussians(torch.zeros(n, dtype=torch.long), torch.full((n, 3), 1 / 3), torch.zeros(n, 3),
                     torch.zeros(n), torch.zeros(n, 3), torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4), torch.zeros(n))
    PBRAppearance.add_parameters(gs)
    maps = {"albedo": torch.full((R, R, 3), 0.5), "roughness": torch.full((R, R, 1), 0.7),
            "f0": torch.full((R, R, 1), 0.05)}
    set_gaussians_from_maps(gs, maps, uv)
    before = gs.colors().clone()
    edited = maps["albedo"].clone()
    edited[4:10, 20:28] = torch.tensor([0.9, 0.1, 0.1])  # rows 4–9 (v 0.69–0.88), cols 20–27 (u 0.62–0.88)
    set_gaussians_from_maps(gs, {**maps, "albedo": edited}, uv)
    changed = (gs.colors() - before).abs().sum(-1) > 1e-6
    col, row = uv[:, 0] * R - 0.5, (1 - uv[:, 1]) * R - 0.5  # texel-centre coordinates
    touches = (col > 20 - 1) & (col < 27 + 1) & (row > 4 - 1) & (row < 9 + 1)
    assert changed.any() and bool((changed == touches).all())


# ---------------------------------------------------------------------- regularisers
def test_pbr_regularisers_vanish_on_their_ideal_and_not_elsewhere():
    """Normal loss 0 for normals on the mesh normal (1 for perpendicular ones); the albedo-scale
    prior 0 for a white unit mean irradiance over the visible Gaussians (invisible ones ignored);
    the roughness TV 0 for a constant roughness and positive across an edge between two faces."""
    from engine.train.pbr_losses import albedo_scale_loss, face_adjacency, normal_loss, roughness_tv

    n = torch.tensor([[0.0, 0, 1], [0, 1.0, 0]])
    assert float(normal_loss(n, n)) == 0.0
    assert float(normal_loss(n, torch.tensor([[1.0, 0, 0], [1.0, 0, 0]]))) == pytest.approx(1.0)
    irr = torch.tensor([[1.0, 1.0, 1.0], [5.0, 5.0, 5.0]])
    vis = torch.tensor([True, False])
    assert float(albedo_scale_loss(irr, torch.ones(2), vis)) == 0.0
    assert float(albedo_scale_loss(irr, torch.ones(2), torch.tensor([True, True]))) == pytest.approx(3 * 4.0)
    faces = torch.tensor([[0, 1, 2], [2, 1, 3], [4, 5, 6]])
    adj = face_adjacency(faces)
    assert sorted(adj[0].tolist()) == [0, 1] and len(adj) == 1  # faces 0, 1 share edge 1–2; face 2 none
    face_idx = torch.tensor([0, 0, 1, 1])
    assert float(roughness_tv(torch.full((4,), 0.7), face_idx, adj, 3)) == 0.0
    tv = roughness_tv(torch.tensor([0.6, 0.6, 0.9, 0.9]), face_idx, adj, 3)
    assert float(tv) == pytest.approx(0.3)  # no spread inside a face, 0.3 across the edge


# ---------------------------------------------------------------------- a pbr avatar end to end
@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from engine.demo.config import SyntheticConfig
    from engine.demo.synthetic import write_synthetic_dataset
    from engine.model.demo_head import build_demo_head

    root = tmp_path_factory.mktemp("pbr_dataset")
    return write_synthetic_dataset(root, build_demo_head(), SyntheticConfig(frames=8, resolution=40,
                                                                            gt_uv_resolution=48))


def test_pbr_avatar_trains_saves_loads_bakes_and_renders(tiny_dataset, tmp_path):
    """12 steps with a densification and a prune at 6, a checkpoint, resume to 14, save, load,
    bake 4 steps: the appearance survives (environment, roughness and F0 within their bounds),
    the maps are albedo / roughness / f0 (no colour map) and maps.json says so, and the baked
    avatar renders from its maps."""
    import json

    from engine.avatar_folder import load_avatar
    from engine.bake.baker import bake
    from engine.bake.config import BakeConfig
    from engine.evaluate.config import EvalConfig
    from engine.evaluate.evaluate import run_eval
    from engine.model.pbr import F0_RANGE, ROUGHNESS_RANGE
    from engine.train.config import TrainConfig
    from engine.train.densify.config import DensifyConfig
    from engine.train.trainer import train

    out = tmp_path / "avatar"
    dens = DensifyConfig(strategy="sampling", start=6, every=6, stop=7, count=40, prune_every=6, reset_every=0)
    cfg = TrainConfig(dataset=str(tiny_dataset), output=str(out), device="cpu", steps=12, uv_resolution=24,
                      appearance="pbr", threads=1, preview_every=0, checkpoint_every=6, densify=dens)
    train(cfg)
    train(TrainConfig(**{**cfg.__dict__, "steps": 14, "resume": True}))
    la = load_avatar(out)
    app, g = la.avatar.shading, la.avatar.gaussians
    assert app is not None and la.avatar.appearance is None and la.meta["appearance"] == "pbr"
    assert (out / "blender" / "environment.exr").is_file()
    # published with the avatar and checked on load like its other files (avatar.json "files")
    assert {"shading.safetensors", "blender/environment.exr"} <= set(la.meta["files"])
    assert "appearance.safetensors" not in la.meta["files"]  # that is the HeadGaS model's file
    rough, f0 = app.roughness(g), app.f0(g)
    assert ROUGHNESS_RANGE[0] <= float(rough.min()) and float(rough.max()) <= ROUGHNESS_RANGE[1]
    assert F0_RANGE[0] <= float(f0.min()) and float(f0.max()) <= F0_RANGE[1]
    assert float(app.environment.raw.detach().std()) > 0  # the environment was optimised
    bake(BakeConfig(avatar=str(out), resolution=32, steps=4, base_channels=8, depth=2, device="cpu", threads=1,
                    checkpoint_every=0))
    manifest = json.loads((out / "maps" / "maps.json").read_text())
    assert manifest["appearance"] == "pbr" and (out / "maps" / manifest["environment"]["file"]).is_file()
    assert set(manifest["maps"]) == {"albedo", "opacity", "scale", "rotation", "offset", "roughness", "f0",
                                     "visibility"}  # + the visibility map every bake writes (issue 16)
    m = run_eval(EvalConfig(avatar=str(out), split="all", device="cpu", from_maps=True))
    assert m["psnr"] > 10.0  # a head, not noise (14 steps on a 40² sequence)
