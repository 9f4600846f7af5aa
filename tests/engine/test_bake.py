"""Neural baking acceptance (issue 3): quality cost of baking, map continuity, map files and
orientation, validation of edited maps, and the sticker edit round trip."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from engine.bake.bakenet import BakeNet
from engine.bake.baker import bake
from engine.bake.config import BakeConfig
from engine.bake.direct_fit import direct_fit_maps
from engine.maps import (
    MAP_SPECS,
    apply_sticker,
    gaussian_uvs,
    load_maps,
    sample_map,
    total_variation,
)

# CPU-sized bake: a narrow U-Net (FATE: base 64 at 512²) on 256² maps — twice the 128² UV sampling
# of the trained avatar, FATE's ratio (its 512² maps for 256² sampling) — residual over the
# low-passed direct fit (init="direct", the default), single-threaded so the run is deterministic.
# Without the full-head stage (its own tests: test_full_head.py), so these measure the bake alone.
QUICK_BAKE = dict(resolution=256, base_channels=16, depth=4, steps=150, checkpoint_every=0, device="cpu",
                  threads=1, full_head=False)
R = QUICK_BAKE["resolution"]


def _baked_copy(trained_avatar, tmp_path_factory, name: str, **overrides):
    d = tmp_path_factory.mktemp(name) / "avatar"
    shutil.copytree(trained_avatar, d)
    bake(BakeConfig(avatar=str(d), **{**QUICK_BAKE, **overrides}))
    return d


def _eval_maps(avatar):
    from engine.evaluate.config import EvalConfig
    from engine.evaluate.evaluate import run_eval
    return run_eval(EvalConfig(avatar=str(avatar), split="test", from_maps=True, device="cpu"))


@pytest.fixture(scope="module")
def baked_avatar(trained_avatar, tmp_path_factory):
    """A copy of the trained avatar, baked (full bake: geometry + appearance)."""
    return _baked_copy(trained_avatar, tmp_path_factory, "baked")


@pytest.fixture(scope="module")
def baked_metrics(baked_avatar):
    return _eval_maps(baked_avatar)


def test_baking_cost_is_bounded(trained_metrics, baked_metrics):
    # Issue 3: <= 1.0 dB on held-out frames (FATE reports ~0.6 dB). Measured: 31.18 -> 31.74 dB
    # (baking *gained* 0.56 dB: the image stage keeps optimising the appearance).
    drop = trained_metrics["psnr"] - baked_metrics["psnr"]
    print(f"trained {trained_metrics['psnr']:.2f} dB, baked {baked_metrics['psnr']:.2f} dB, drop {drop:.2f} dB")
    assert drop <= 1.0, (trained_metrics, baked_metrics)


def test_appearance_only_baking_cost_is_bounded(trained_avatar, trained_metrics, tmp_path_factory):
    """Supp. §9: colour + opacity baked, geometry kept; maps of the geometry are the direct fit."""
    d = _baked_copy(trained_avatar, tmp_path_factory, "baked_appearance", appearance_only=True)
    m = _eval_maps(d)
    drop = trained_metrics["psnr"] - m["psnr"]
    print(f"appearance only: trained {trained_metrics['psnr']:.2f} dB, baked {m['psnr']:.2f} dB, drop {drop:.2f} dB")
    assert drop <= 1.0, (trained_metrics, m)
    assert json.loads((d / "maps" / "maps.json").read_text())["bake_config"]["appearance_only"] is True


def test_per_texel_density_renders_the_baked_maps(baked_avatar, baked_metrics):
    """eval --from_maps --texel_stride 1: one Gaussian per covered texel of the R² maps, sized to
    the texel. The scale and rotation maps give way to texel-sized discs, so at this coarse map
    size the render gives up quality for paint fidelity: observed 27.9 dB against 32.7 dB for the
    baked avatar (the test schedule); the floor keeps it a faithful render of the maps."""
    from engine.evaluate.config import EvalConfig
    from engine.evaluate.evaluate import run_eval
    from engine.geometry.uv import island_mask
    from engine.model.demo_head import build_demo_head

    head = build_demo_head()
    m = run_eval(EvalConfig(avatar=str(baked_avatar), split="test", from_maps=True, texel_stride=1, device="cpu",
                            out=str(baked_avatar / "metrics_texel.json")))
    assert m["num_gaussians"] == int(island_mask(head.uvs, head.faces_uv_all, R).sum())
    assert m["texel_stride"] == 1
    assert m["psnr"] >= 26.0 and m["psnr"] < baked_metrics["psnr"], (m["psnr"], baked_metrics["psnr"])


def test_maps_files_and_manifest(baked_avatar):
    maps_dir = baked_avatar / "maps"
    manifest = json.loads((maps_dir / "maps.json").read_text())
    assert manifest["format"] == "fate-maps" and manifest["resolution"] == R
    assert set(manifest["maps"]) == set(MAP_SPECS) | {"visibility"}  # + the visibility map (issue 16)
    assert manifest["maps"]["color"]["colorspace"] == "sRGB"
    assert manifest["maps"]["scale"]["colorspace"] == "Non-Color"
    maps, _ = load_maps(maps_dir)
    for name, spec in MAP_SPECS.items():
        assert maps[name].shape == (R, R, spec.channels)
        assert (maps_dir / f"{name}.png").exists()
    assert 0 <= float(maps["color"].min()) and float(maps["color"].max()) <= 1
    assert 0 <= float(maps["opacity"].min()) and float(maps["opacity"].max()) <= 1
    assert (baked_avatar / "bakenet.safetensors").exists()


def test_baked_colour_map_is_smoother_than_direct_fit(baked_avatar):
    """FATE Fig. 4: a per-texel fit of the Gaussians is noisy; BakeNet's map is continuous."""
    from engine.avatar_folder import load_avatar
    from engine.geometry.uv import island_mask

    av = load_avatar(baked_avatar).avatar
    maps, _ = load_maps(baked_avatar / "maps")
    uv = gaussian_uvs(av.gaussians.face_idx, av.gaussians.bary, av.head.uvs, av.head.faces_uv_all)
    direct = direct_fit_maps({"color": av.gaussians.colors().detach()}, uv, R)["color"]
    mask = island_mask(av.head.uvs, av.head.faces_uv_all, R)
    tv_baked, tv_direct = total_variation(maps["color"], mask), total_variation(direct, mask)
    print(f"total variation inside islands: baked {tv_baked:.4f}, direct {tv_direct:.4f}")
    # measured 0.046 vs 0.133 in the deterministic test schedule (ground-truth albedo: 0.037)
    assert tv_baked < 0.6 * tv_direct


def test_map_orientation_top_row_is_v1():
    # A map whose top row (row 0) is 1 and the rest 0: uv with v near 1 reads 1, v near 0 reads 0.
    m = torch.zeros(8, 8, 1)
    m[0] = 1.0
    vals = sample_map(m, torch.tensor([[0.5, 1.0 - 0.5 / 8], [0.5, 0.5 / 8]]))
    torch.testing.assert_close(vals[:, 0], torch.tensor([1.0, 0.0]))
    # texel centre of (row r, col c) is ((c + .5)/W, 1 - (r + .5)/H): exact lookups
    m = torch.arange(64, dtype=torch.float32).reshape(8, 8, 1)
    uv = torch.tensor([[(3 + 0.5) / 8, 1 - (5 + 0.5) / 8]])
    assert float(sample_map(m, uv)) == 5 * 8 + 3


def test_bakenet_shapes_match_fate():
    net = BakeNet(base=64, depth=4)
    widths = [m[0].out_channels for m in [net.inc, *net.down]]
    assert widths == [64, 128, 256, 512, 1024]  # supp. §7.3: 64 → 1024, doubling
    out = BakeNet(base=8, depth=4)(torch.randn(1, 11, 32, 32))
    assert out.shape == (1, 11, 32, 32)


def test_raw_from_maps_inverts_activate():
    from engine.bake.channels import ScaleNorm, activate, raw_from_maps

    torch.manual_seed(0)
    norm, shell = ScaleNorm(s_mean=-1.0, s_max=0.5), 0.01
    raw = torch.randn(11, 8, 8)
    maps = activate(raw, norm, shell)
    back = activate(raw_from_maps(maps, norm, shell), norm, shell)
    for name in maps:
        torch.testing.assert_close(back[name], maps[name], atol=1e-5, rtol=1e-4)


def test_unet_depth_keeps_the_bottom_level_at_least_8_texels():
    from engine.bake.bakenet import unet_depth

    assert [unet_depth(r) for r in (32, 64, 128, 256, 512)] == [2, 3, 4, 4, 4]
    assert all(r // 2 ** unet_depth(r) >= 8 for r in (32, 64, 128, 256, 512))


def test_gaussian_blur_keeps_constants_and_mass():
    from engine.bake.direct_fit import gaussian_blur

    const = torch.full((16, 16, 3), 0.25)
    torch.testing.assert_close(gaussian_blur(const, 1.5), const)
    impulse = torch.zeros(33, 33, 1)
    impulse[16, 16] = 1.0
    out = gaussian_blur(impulse, 2.0)
    assert abs(float(out.sum()) - 1.0) < 1e-5  # normalised kernel, away from the border
    assert float(out[16, 16]) < 0.05 and float(out[16, 18]) > 0.5 * float(out[16, 16])  # σ = 2 texels


def test_noise_init_warm_start_regresses_the_attributes(trained_avatar, tmp_path):
    """FATE's formulation (maps from noise alone): the warm-up moves the sampled maps towards the
    trained Gaussians' attributes."""
    from engine.bake.baker import Baker

    d = tmp_path / "avatar"
    shutil.copytree(trained_avatar, d)
    baker = Baker(BakeConfig(avatar=str(d), init="noise", resolution=32, base_channels=8, depth=2,
                             steps=0, warmup_steps=150, checkpoint_every=0, device="cpu", threads=1,
                             full_head=False))
    assert baker.cfg.warmup_steps == 150 and baker.base_raw is None

    def colour_error():
        with torch.no_grad():
            vals = baker.gaussian_attributes(baker.maps())
        return float((vals["color"] - baker.target["color"]).abs().mean())

    before = colour_error()
    baker.run()
    assert colour_error() < 0.75 * before  # measured 0.116 → 0.072
    assert (d / "maps" / "color.exr").exists()
    # FATE's recipe (issue 12): no warm-up, constant lr, rotation and scale regularisers 0.1
    fate, ours = BakeConfig(init="noise"), BakeConfig()
    assert (fate.warmup, fate.final_lr, fate.rotation_weight, fate.scale_weight) == (0, 1e-3, 0.1, 0.1)
    assert (ours.warmup, ours.final_lr, ours.rotation_weight, ours.scale_weight) == (0, 1e-4, 0.0, 0.0)


def test_fate_bakenet_is_fates_unet():
    """init="noise" uses FATE's U-Net: BatchNorm, bilinear up-sampling, 512 channels at the bottom."""
    from engine.bake.bakenet import FateBakeNet

    net = FateBakeNet(64, 4)
    bottom = net.down[-1]
    assert bottom[0].out_channels == 512 and net.down[-2][0].out_channels == 512
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 18  # 9 blocks × 2
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules())
    x = torch.rand(1, 11, 32, 32) * 2 - 1
    assert net(x).shape == (1, 11, 32, 32)


def test_cancelled_bake_resumes_to_the_same_maps(trained_avatar, tmp_path):
    """Cancel writes a checkpoint; --resume continues it to the maps an uninterrupted bake writes."""
    from engine.errors import CancelledError
    from engine.jobs.cancel import CancelToken

    small = dict(QUICK_BAKE, resolution=32, base_channels=8, depth=2, steps=8)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    for d in (whole, parts):
        shutil.copytree(trained_avatar, d, ignore=shutil.ignore_patterns("maps", "bakenet*"))
    bake(BakeConfig(avatar=str(whole), **small))

    token = CancelToken(listen_stdin=False)

    class CancelAtStep3:
        def progress(self, stage, step, total, **kw):
            if step == 3:
                token.request()

    with pytest.raises(CancelledError) as err:
        bake(BakeConfig(avatar=str(parts), **small), sink=CancelAtStep3(), cancel=token)
    assert (parts / "maps_checkpoint.safetensors").is_file() and "step 3" in str(err.value)
    assert not (parts / "maps").exists()
    result = bake(BakeConfig(avatar=str(parts), resume=True, **small))
    assert result["steps"] == 8 and not (parts / "maps_checkpoint.safetensors").exists()
    a, _ = load_maps(whole / "maps")
    b, _ = load_maps(parts / "maps")
    for name in MAP_SPECS:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-5)


def test_edited_maps_are_validated(baked_avatar, tmp_path, caplog):
    from engine.errors import MapsError
    from engine.io.images import write_exr

    d = tmp_path / "maps"
    shutil.copytree(baked_avatar / "maps", d)
    # wrong resolution: resampled with a warning
    write_exr(d / "opacity.exr", np.full((64, 64, 1), 0.5, np.float32))
    maps, _ = load_maps(d)
    assert maps["opacity"].shape == (R, R, 1) and "resampling" in caplog.text
    # NaN: error naming the file
    bad = np.zeros((R, R, 3), np.float32)
    bad[3, 4, 1] = np.nan
    write_exr(d / "scale.exr", bad)
    with pytest.raises(MapsError, match="scale.exr"):
        load_maps(d)
    # wrong channel count
    write_exr(d / "scale.exr", np.zeros((R, R, 2), np.float32))
    with pytest.raises(MapsError, match="channel"):
        load_maps(d)


def _render(avatar_dir, frame, expr_scale=None, jaw=None, background=1.0):
    from engine.avatar_folder import load_avatar
    from engine.geometry.cameras import Camera
    from engine.maps import load_maps_into

    loaded = load_avatar(avatar_dir)
    av, tr = loaded.avatar, loaded.tracking
    load_maps_into(av.gaussians, avatar_dir / "maps", av.head)
    expr = torch.as_tensor(tr["expr"][frame])
    pose = torch.as_tensor(tr["pose"][frame]).clone()
    if expr_scale is not None:
        expr = expr * expr_scale
    if jaw is not None:
        pose[6] = jaw
        pose[:3] = torch.tensor([0.0, 0.3, 0.0])  # turn the head (root joint)
    cam = Camera(torch.as_tensor(tr["viewmat"][frame]), torch.as_tensor(tr["K"][frame]),
                 int(tr["width"]), int(tr["height"]))
    with torch.no_grad():
        out = av.render(torch.as_tensor(tr["shape"]), expr, pose, torch.as_tensor(tr["translation"][frame]),
                        cam, torch.full((3,), background))
    return out.image, av, loaded


def _box_mask_render(avatar_dir, frame, box, **kw):
    """Render with a colour map that is white inside the UV box and black elsewhere, opacities as baked:
    tells which pixels show the box."""
    from engine.io.images import read_exr, write_exr

    tmp = avatar_dir.parent / (avatar_dir.name + "_mask")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(avatar_dir, tmp)
    col, _ = read_exr(tmp / "maps" / "color.exr")
    mask = apply_sticker(torch.zeros_like(torch.as_tensor(col)), torch.ones(4, 4, 3), box)
    write_exr(tmp / "maps" / "color.exr", mask.numpy())
    img, _, _ = _render(tmp, frame, background=0.0, **kw)
    return img


@pytest.mark.parametrize("variant", ["tracked", "other_expression_and_pose"])
def test_sticker_edit_round_trip(baked_avatar, tmp_path, variant):
    """Paint a pure red square into the colour map over a UV region of the face, re-splat, render:
    pixels showing that region turn red; pixels elsewhere change by less than a tolerance."""
    from engine.io.images import read_exr, write_exr

    kw = {} if variant == "tracked" else {"expr_scale": -1.0, "jaw": 0.2}
    edited = tmp_path / "avatar"
    shutil.copytree(baked_avatar, edited)
    # a UV region on the face: the UV of the Gaussians nearest the nose tip direction (max z)
    from engine.avatar_folder import load_avatar
    av = load_avatar(edited).avatar
    uv = gaussian_uvs(av.gaussians.face_idx, av.gaussians.bary, av.head.uvs, av.head.faces_uv_all)
    from engine.geometry.mesh_ops import barycentric_points
    pts = barycentric_points(torch.as_tensor(av.head.v_template), av.faces, av.gaussians.face_idx, av.gaussians.bary)
    front = int(torch.argmax(pts[:, 2] - 3 * (pts[:, 1] - pts[:, 1].median()).abs()))
    u, v = uv[front].tolist()
    box = (u - 0.04, v - 0.04, u + 0.04, v + 0.04)
    col, _ = read_exr(edited / "maps" / "color.exr")
    red = torch.tensor([1.0, 0.0, 0.0]).expand(8, 8, 3)
    write_exr(edited / "maps" / "color.exr", apply_sticker(torch.as_tensor(col), red, box).numpy())

    frame = 85  # a held-out frame
    before, _, _ = _render(baked_avatar, frame, **kw)
    after, _, _ = _render(edited, frame, **kw)
    where = _box_mask_render(baked_avatar, frame, box, **kw)[..., 0]  # brightness = box coverage
    # Compositing is linear in colour: with coverage c = Σ wᵢmᵢ of the painted texels, a pixel's red
    # is at least c and its green/blue at most 1 − c (white background included). A render that
    # ignored the edit fails the green/blue bound on skin (green ≈ 0.6).
    inside = where > 0.5
    assert inside.sum() >= 20, "the painted region must be visible"
    assert bool((after[..., 0] >= where - 2e-3)[inside].all())
    assert bool((after[..., 1:] <= (1 - where)[..., None] + 2e-3)[inside].all())  # turned red
    a = after[where > 0.75]
    assert len(a) >= 5 and float(a[:, 0].mean()) > 0.85 and float(a[:, 1:].mean()) < 0.2
    diff = (after - before).abs().amax(-1)
    # Elsewhere (no visible contribution of the box) nothing changes beyond float rounding ...
    elsewhere = where < 1e-4
    assert elsewhere.sum() > 0.5 * where.numel()
    assert float(diff[elsewhere].max()) < 1e-3
    # ... and every pixel changes by at most its coverage by the painted texels (+ rounding).
    assert bool((diff <= where + 2e-3).all())
