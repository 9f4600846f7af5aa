"""PSNR, SSIM and LPIPS-VGG (user-supplied weights) of engine.evaluate.metrics."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.errors import ConfigError
from engine.evaluate import metrics
from engine.evaluate.metrics import (
    LPIPS,
    LPIPS_CHANNELS,
    evaluate_images,
    make_lpips,
    psnr,
    ssim_metric,
)
from engine.vgg import VGG16Features


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    """Random VGG16 weights (torchvision keys, .safetensors) + random non-negative lpips `vgg.pth`."""
    from safetensors.torch import save_file

    torch.manual_seed(2)
    folder = tmp_path_factory.mktemp("lpips")
    vgg_state = {k: v.contiguous() for k, v in VGG16Features(30).state_dict().items()}
    vgg_path = folder / "vgg16.safetensors"
    save_file(vgg_state, str(vgg_path))
    lin_state = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) / c for k, c in enumerate(LPIPS_CHANNELS)}
    lin_path = folder / "vgg.pth"
    torch.save(lin_state, lin_path)
    return vgg_path, lin_path, vgg_state, lin_state


# --------------------------------------------------------------------------- PSNR


def test_psnr_of_known_mse():
    gt = np.full((16, 16, 3), 0.25)
    pred = gt + 0.1  # MSE = 0.01 → 20 dB
    assert psnr(pred, gt) == pytest.approx(20.0, abs=1e-9)  # float64 round-off of 0.35 − 0.25
    pred32, gt32 = torch.tensor(pred, dtype=torch.float32), torch.tensor(gt, dtype=torch.float32)
    assert psnr(pred32, gt32) == pytest.approx(20.0, abs=1e-5)  # float32 inputs: 0.1 is not exact
    assert psnr(gt, gt) == math.inf


def test_psnr_masked():
    gt = np.zeros((8, 8, 3))
    pred = gt.copy()
    pred[:4] = 0.01  # error only in the top half
    pred[4:] = 0.5
    mask = np.zeros((8, 8, 1))
    mask[:4] = 1.0
    assert psnr(pred, gt, mask) == pytest.approx(40.0, abs=1e-9)  # MSE 1e-4 inside the mask
    assert math.isnan(psnr(pred, gt, np.zeros((8, 8, 1))))


# --------------------------------------------------------------------------- SSIM


def _ssim_window_direct(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of one 11×11 window (σ = 1.5) by the textbook formula in float64. x, y: [11, 11]"""
    c = np.arange(11) - 5.0
    g = np.exp(-(c**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    mx, my = (w * x).sum(), (w * y).sum()
    vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
    cxy = (w * (x - mx) * (y - my)).sum()
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def test_ssim_identical_and_noise():
    rng = np.random.default_rng(0)
    img = rng.random((32, 32, 3))
    assert ssim_metric(img, img) == pytest.approx(1.0, abs=1e-12)  # float64 path
    noise = rng.random((32, 32, 3))
    assert ssim_metric(img, noise) < 0.2  # independent uniform images share no structure
    noisy = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1)
    assert 0.2 < ssim_metric(img, noisy) < 1.0


def test_ssim_matches_direct_formula_on_one_window():
    rng = np.random.default_rng(1)
    x = rng.random((11, 11, 3))  # 11×11: exactly one valid window per channel
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    ref = np.mean([_ssim_window_direct(x[..., c], y[..., c]) for c in range(3)])
    assert ssim_metric(x, y) == pytest.approx(ref, abs=1e-4)
    xf, yf = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    assert ssim_metric(xf, yf) == pytest.approx(ref, abs=1e-4)  # float32 input, same answer


# --------------------------------------------------------------------------- LPIPS


def _lpips_reference(vgg_state: dict, lin_state: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS-VGG written out with F.conv2d from the raw state dicts. x, y: [B, 3, H, W] in [0, 1] → [B]"""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def feats(img):
        h = ((img * 2 - 1) - shift) / scale
        out = []
        for idx in range(30):
            key = f"features.{idx}.weight"
            if key in vgg_state:
                h = F.conv2d(h, vgg_state[key], vgg_state[f"features.{idx}.bias"], padding=1)
            elif idx in (4, 9, 16, 23):
                h = F.max_pool2d(h, 2)
            else:
                h = F.relu(h)
                if idx in (3, 8, 15, 22, 29):
                    out.append(h)
        return out

    total = torch.zeros(x.shape[0])
    for k, (a, b) in enumerate(zip(feats(x), feats(y))):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        d = F.conv2d((a - b) ** 2, lin_state[f"lin{k}.model.1.weight"])  # [B, 1, h, w]
        total = total + d.mean(dim=(1, 2, 3))
    return total


def test_lpips_random_weights(lpips_files):
    vgg_path, lin_path, vgg_state, lin_state = lpips_files
    lp = make_lpips(vgg_path, lin_path)
    assert isinstance(lp, LPIPS)
    x = torch.rand(2, 3, 32, 32)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    with torch.no_grad():
        assert torch.equal(lp(x, x), torch.zeros(2))  # identical images: exactly 0
        d = lp(x, y)
        ref = _lpips_reference(vgg_state, lin_state, x, y)
    assert d.shape == (2,) and torch.isfinite(d).all() and (d > 0).all()
    torch.testing.assert_close(d, ref, rtol=1e-4, atol=1e-6)  # float32, same formula, op order differs
    with torch.no_grad():
        torch.testing.assert_close(lp(y, x), d, rtol=1e-5, atol=1e-7)  # symmetric
        one = lp(x[0].permute(1, 2, 0), y[0].permute(1, 2, 0))  # [H, W, 3] layout
    torch.testing.assert_close(one, d[:1], rtol=1e-5, atol=1e-7)
    pred = y.clone().requires_grad_(True)
    lp(pred, x).sum().backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_make_lpips_missing(tmp_path, lpips_files, caplog, monkeypatch):
    monkeypatch.setattr(metrics, "_warned_no_lpips", False)
    with caplog.at_level(logging.INFO, logger="engine.evaluate.metrics"):
        assert make_lpips(None, None) is None
        assert make_lpips(None, None) is None
    assert sum("LPIPS weights not supplied" in r.getMessage() for r in caplog.records) == 1
    missing = tmp_path / "vgg.pth"
    with pytest.raises(ConfigError, match="vgg.pth"):
        make_lpips(lpips_files[0], missing)
    bad = tmp_path / "bad_lin.pth"
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, bad)
    with pytest.raises(ConfigError, match="lin1.model.1.weight"):
        make_lpips(lpips_files[0], bad)


# --------------------------------------------------------------------------- evaluate_images


def test_evaluate_images(lpips_files):
    rng = np.random.default_rng(3)
    gts = [rng.random((24, 24, 3)) for _ in range(2)]
    preds = [np.clip(g + 0.1, 0, 1) for g in gts]
    res = evaluate_images(preds, gts)
    assert res["lpips"] is None and res["n_images"] == 2
    assert res["psnr"] == pytest.approx(np.mean([psnr(p, g) for p, g in zip(preds, gts)]), abs=1e-12)
    assert res["ssim"] == pytest.approx(np.mean([ssim_metric(p, g) for p, g in zip(preds, gts)]), abs=1e-12)

    same = evaluate_images(gts, gts, lpips=make_lpips(lpips_files[0], lpips_files[1]))
    assert same["ssim"] == pytest.approx(1.0, abs=1e-12) and same["lpips"] == 0.0 and same["psnr"] == math.inf

    masks = [np.zeros((24, 24)) for _ in range(2)]
    for m in masks:
        m[:12] = 1.0
    wrong_bg = [g.copy() for g in gts]
    for w in wrong_bg:
        w[12:] = 0.0  # background differs, foreground identical
    masked = evaluate_images(wrong_bg, gts, masks)
    assert masked["psnr"] == math.inf and masked["ssim"] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="2 predictions, 1 ground truths"):
        evaluate_images(preds, gts[:1])
