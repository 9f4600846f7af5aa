"""Losses of FATE §3.5 (Eq. 12–15) and the VGG16 stack behind the perceptual term."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.errors import ConfigError
from engine.image_ops import ssim
from engine.train import losses
from engine.train.losses import (
    PerceptualLoss,
    dssim_loss,
    flame_loss,
    l1_loss,
    laplacian_loss,
    make_perceptual_loss,
    scale_ratio_loss,
    uniform_laplacian,
)
from engine.vgg import RELU_TAPS, VGG16Features, conv_shapes, load_vgg16_state_dict

FLAME_OBJ = Path(__file__).resolve().parents[2] / "../shared/flame/head_template_mesh.obj"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def vgg_files(tmp_path_factory):
    """Randomly initialised VGG16 `features` weights in torchvision's key layout, as .pth and .safetensors."""
    from safetensors.torch import save_file

    torch.manual_seed(1)
    net = VGG16Features(last_layer=30)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}  # keys "features.N.weight"
    state["classifier.0.weight"] = torch.zeros(4, 4)  # ignored like torchvision's classifier
    folder = tmp_path_factory.mktemp("vgg")
    pth = folder / "vgg16.pth"
    torch.save(state, pth)
    st = folder / "vgg16.safetensors"
    save_file(state, str(st))
    return pth, st, state


# --------------------------------------------------------------------------- L1 / SSIM


def test_l1_loss_plain_and_masked():
    pred = torch.zeros(4, 4, 3)
    gt = torch.zeros(4, 4, 3)
    gt[:2] = 1.0  # top half differs by 1
    assert l1_loss(pred, gt).item() == pytest.approx(0.5, abs=1e-7)
    mask = torch.zeros(4, 4, 1)
    mask[:2] = 1.0
    assert l1_loss(pred, gt, mask).item() == pytest.approx(1.0, abs=1e-7)
    assert l1_loss(pred, gt, 1.0 - mask).item() == pytest.approx(0.0, abs=1e-7)
    assert l1_loss(pred, gt, torch.zeros(4, 4, 1)).item() == 0.0  # empty mask: 0, not NaN


def test_ssim_identical_is_one_and_layouts_agree():
    img = torch.rand(24, 20, 3)  # [H, W, 3]
    assert ssim(img, img).item() == pytest.approx(1.0, abs=1e-6)  # float32 round-off
    other = (img + 0.2 * torch.randn_like(img)).clamp(0, 1)
    a = ssim(img, other)
    b = ssim(img.permute(2, 0, 1)[None], other.permute(2, 0, 1)[None])  # [1, 3, H, W]
    torch.testing.assert_close(a, b, rtol=0, atol=1e-7)  # same numbers, other layout
    assert 0.0 < a.item() < 0.95
    assert dssim_loss(img, other).item() == pytest.approx((1 - a.item()) / 2, abs=1e-7)
    assert dssim_loss(img, img).item() == pytest.approx(0.0, abs=1e-6)


def _ssim_direct(x: np.ndarray, y: np.ndarray, sigma: float = 1.5) -> float:
    """SSIM of one 11×11 window by the textbook formula, float64. x, y: [11, 11]"""
    c = np.arange(11) - 5.0
    g = np.exp(-(c**2) / (2 * sigma**2))
    w = np.outer(g, g)
    w /= w.sum()
    mx, my = (w * x).sum(), (w * y).sum()
    vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
    cxy = (w * (x - mx) * (y - my)).sum()
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def test_ssim_map_matches_direct_formula():
    x = torch.rand(1, 3, 20, 17)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    smap = ssim(x, y, reduction="none")
    assert smap.shape == (1, 3, 10, 7)  # valid windows only
    for c, i, j in [(0, 0, 0), (1, 4, 3), (2, 9, 6)]:
        win = (0, c, slice(i, i + 11), slice(j, j + 11))
        ref = _ssim_direct(x[win].double().numpy(), y[win].double().numpy())
        assert smap[0, c, i, j].item() == pytest.approx(ref, abs=1e-4)  # float32 moments E[x²]−μ²
    same = ssim(x, y, padding="same", reduction="none")
    assert same.shape == (1, 3, 20, 17)
    torch.testing.assert_close(same[..., 5:-5, 5:-5], smap, rtol=0, atol=1e-6)  # interior agrees


def test_ssim_is_differentiable():
    x = torch.rand(1, 2, 12, 12, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 2, 12, 12, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: ssim(a, y), (x,), eps=1e-6, atol=1e-6)


def test_ssim_rejects_small_images():
    with pytest.raises(ValueError, match="smaller than"):
        ssim(torch.rand(8, 8, 3), torch.rand(8, 8, 3))


# --------------------------------------------------------------------------- scale ratio (Eq. 13)


def test_scale_ratio_loss_known_values():
    scales = torch.tensor([[1.0, 1.0, 1.0], [1.0, 2.0, 4.0], [0.01, 0.01, 0.2]])  # ratios 1, 4, 20
    assert scale_ratio_loss(scales, r=10.0).item() == pytest.approx(10.0 / 3.0, rel=1e-6)
    assert scale_ratio_loss(scales, r=30.0).item() == 0.0
    scales.requires_grad_(True)
    scale_ratio_loss(scales, r=3.0).backward()
    assert scales.grad[0].abs().sum() == 0  # under the threshold: no gradient
    assert scales.grad[2, 2] > 0 and scales.grad[2, :2].sum() < 0  # longer axis pushed down, short up
    assert scale_ratio_loss(torch.zeros(0, 3), 10.0).item() == 0.0


# --------------------------------------------------------------------------- Laplacian (Eq. 14)


def _grid(n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """A flat n×n vertex grid split into triangles. verts [n², 3], faces [2(n−1)², 3]"""
    ii, jj = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    verts = torch.stack([jj.flatten().float(), ii.flatten().float(), torch.zeros(n * n)], dim=1)
    faces = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            faces += [[a, b, d], [a, d, c]]
    return verts, torch.tensor(faces)


def test_uniform_laplacian_small_mesh():
    # Two triangles sharing edge 1-2, plus an isolated vertex 4.
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    L = uniform_laplacian(faces, num_vertices=5).to_dense()
    expected = torch.tensor([
        [1.0, -1 / 2, -1 / 2, 0.0, 0.0],
        [-1 / 3, 1.0, -1 / 3, -1 / 3, 0.0],
        [-1 / 3, -1 / 3, 1.0, -1 / 3, 0.0],
        [0.0, -1 / 2, -1 / 2, 1.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],  # isolated vertex: not penalised
    ])
    torch.testing.assert_close(L, expected, rtol=0, atol=1e-7)  # exact fractions in float32


def test_laplacian_loss_invariances_and_batching():
    verts, faces = _grid(5)
    L = uniform_laplacian(faces, verts.shape[0])
    assert laplacian_loss(torch.ones(25, 3) * 0.3, L).item() == pytest.approx(0.0, abs=1e-12)  # translation
    lx = torch.sparse.mm(L, verts)
    interior = [i * 5 + j for i in range(1, 4) for j in range(1, 4)]
    assert lx[interior].abs().max().item() < 1e-6  # a linear field is harmonic inside a grid
    bump = torch.zeros(25, 3)
    bump[12, 2] = 1.0  # centre vertex (6 neighbours in this triangulation) lifted 1 m
    deg = int((L.to_dense()[12] != 0).sum()) - 1
    # ||Lx||² = 1 at the centre + (1/deg_j)² at each neighbour j, averaged over 25 vertices.
    nbrs = [j for j in range(25) if j != 12 and L.to_dense()[12, j] != 0]
    deg_j = [int((L.to_dense()[j] != 0).sum()) - 1 for j in nbrs]
    expected = (1.0 + sum(1.0 / d**2 for d in deg_j)) / 25.0
    assert deg == len(nbrs)
    assert laplacian_loss(bump, L).item() == pytest.approx(expected, rel=1e-6)
    batch = torch.randn(3, 25, 3)
    per = torch.stack([laplacian_loss(b, L) for b in batch]).mean()
    torch.testing.assert_close(laplacian_loss(batch, L), per, rtol=1e-6, atol=0)  # float32 sums
    torch.testing.assert_close(laplacian_loss(batch, L.to_dense()), per, rtol=1e-6, atol=0)
    x = torch.randn(25, 3, requires_grad=True)
    laplacian_loss(x, L).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_uniform_laplacian_on_flame_template():
    if not FLAME_OBJ.is_file():
        pytest.skip("FLAME files not present (../shared/flame/head_template_mesh.obj)")
    from engine.io.obj import read_obj

    mesh = read_obj(FLAME_OBJ)
    L = uniform_laplacian(mesh.faces, mesh.vertices.shape[0])
    assert L.shape == (5023, 5023)
    row_sums = torch.sparse.sum(L, dim=1).to_dense()
    assert row_sums.abs().max().item() < 1e-5  # each row: 1 − deg·(1/deg)
    v = torch.as_tensor(mesh.vertices, dtype=torch.float32)
    assert laplacian_loss(v * 0 + 1.0, L).item() == pytest.approx(0.0, abs=1e-10)


# --------------------------------------------------------------------------- FLAME (Eq. 14)


def test_flame_loss_mean_squared_distance():
    ref = torch.randn(2, 10, 3)
    verts = ref.clone()
    verts[:, :5, 0] += 0.2  # half of the vertices moved 0.2 m along x
    assert flame_loss(verts, ref).item() == pytest.approx(0.5 * 0.04, rel=1e-5)
    assert flame_loss(ref, ref).item() == 0.0


# --------------------------------------------------------------------------- VGG16 / perceptual


def test_vgg16_keys_match_torchvision_layout():
    keys = set(VGG16Features(30).state_dict())
    convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision vgg16().features convs
    assert keys == {f"features.{i}.{p}" for i in convs for p in ("weight", "bias")}
    assert conv_shapes(22)["21.weight"] == (512, 512, 3, 3)
    assert RELU_TAPS == {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "relu5_3": 29}


def _manual_relu_features(state: dict, x: torch.Tensor, upto: int) -> torch.Tensor:
    """VGG16 forward written out with F.conv2d from the raw state dict, independent of VGG16Features."""
    for idx in range(upto + 1):
        key = f"features.{idx}.weight"
        if key in state:
            x = F.conv2d(x, state[key], state[f"features.{idx}.bias"], padding=1)
        elif idx in (4, 9, 16, 23, 30):
            x = F.max_pool2d(x, 2)
        else:
            x = F.relu(x)
    return x


def test_vgg16_features_loaded_match_manual_forward(vgg_files):
    pth, st, state = vgg_files
    from engine.vgg import load_vgg16_features

    for path in (pth, st):
        net = load_vgg16_features(path, last_layer=22)
        assert not any(p.requires_grad for p in net.parameters())
        x = torch.rand(1, 3, 32, 32)
        feats = net(x, [3, 8, 15, 22])
        assert [f.shape[1] for f in feats] == [64, 128, 256, 512]
        for tap, f in zip([3, 8, 15, 22], feats):
            ref = _manual_relu_features(state, x, tap)
            torch.testing.assert_close(f, ref, rtol=1e-5, atol=1e-5)  # same ops, same order


@pytest.mark.parametrize("which", ["pth", "safetensors"])
def test_perceptual_loss_with_random_weights(vgg_files, which):
    pth, st, _ = vgg_files
    loss_fn = PerceptualLoss(pth if which == "pth" else st, resize=None)
    gt = torch.rand(1, 3, 32, 32)
    assert loss_fn(gt, gt.clone()).item() == 0.0
    pred = (gt + 0.1 * torch.randn_like(gt)).clamp(0, 1).requires_grad_(True)
    value = loss_fn(pred, gt)
    assert torch.isfinite(value) and value.item() > 0
    value.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    hwc = loss_fn(pred.detach()[0].permute(1, 2, 0), gt[0].permute(1, 2, 0))  # [H, W, 3] layout
    torch.testing.assert_close(hwc, value.detach(), rtol=1e-6, atol=0)  # same computation


def test_make_perceptual_loss_choices(vgg_files, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(losses, "_warned_no_vgg", False)
    with caplog.at_level(logging.INFO, logger="engine.train.losses"):
        fn, name = make_perceptual_loss(None)
        make_perceptual_loss(None)
    assert name == "dssim" and fn is dssim_loss
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs.count("VGG16 weights not supplied: using D-SSIM as the perceptual term") == 1  # logged once

    missing = tmp_path / "nope" / "vgg16.pth"
    with pytest.raises(ConfigError, match=str(missing).replace("\\", "\\\\")):
        make_perceptual_loss(missing)

    fn, name = make_perceptual_loss(vgg_files[0])
    assert name == "vgg"
    img = torch.rand(40, 40, 3)  # resized to 224 inside, like FATE
    with torch.no_grad():
        assert fn(img, img).item() == 0.0
        assert fn(img, 1 - img).item() > 0


def test_bad_vgg_files_are_named(tmp_path, vgg_files):
    _, _, state = vgg_files
    bad = dict(state)
    bad["features.5.weight"] = torch.zeros(128, 32, 3, 3)
    p = tmp_path / "bad.pth"
    torch.save(bad, p)
    expected = r"features\.5\.weight.*\[128, 32, 3, 3\].*expected \[128, 64, 3, 3\]"
    with pytest.raises(ConfigError, match=expected):
        load_vgg16_state_dict(p)
    partial = {k: v for k, v in state.items() if not k.startswith("features.28")}
    p2 = tmp_path / "partial.pth"
    torch.save(partial, p2)
    with pytest.raises(ConfigError, match="missing key 'features.28.weight'"):
        load_vgg16_state_dict(p2)
    load_vgg16_state_dict(p2, last_layer=22)  # only relu4_3 needed: fine
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="cannot read weights file"):
        load_vgg16_state_dict(junk)
