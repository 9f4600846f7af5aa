"""Image-quality metrics reported by FATE (§4.2): PSNR, SSIM and LPIPS.

Images are encoded (sRGB) colours in [0, 1], ``[H, W, 3]`` (engine layout, top row first) or
``[B, 3, H, W]``, as torch tensors or numpy arrays. Metrics are computed in float64 where
cheap (PSNR, SSIM) and returned as Python floats.

LPIPS (Zhang et al. 2018, "vgg" variant, v0.1) needs two user-supplied files, never
downloaded: the VGG16 backbone (torchvision ``vgg16`` state dict or ``.safetensors``, as for
the perceptual loss) and the ``lpips`` package's linear-layer file ``vgg.pth``
(``lin0.model.1.weight`` … ``lin4.model.1.weight``, shapes [1, C, 1, 1] for
C = 64, 128, 256, 512, 512). Without them LPIPS is not reported (``None``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from engine.errors import ConfigError
from engine.image_ops import ssim, to_bchw
from engine.vgg import RELU_TAPS, load_vgg16_features, read_tensor_file

logger = logging.getLogger(__name__)

ArrayLike = Tensor | np.ndarray

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
"""LPIPS input shift per RGB channel, for images in [-1, 1] (the lpips package's ScalingLayer)."""
LPIPS_SCALE = (0.458, 0.448, 0.450)
"""LPIPS input scale per RGB channel, for images in [-1, 1]."""
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
"""Channels of the five VGG16 taps relu1_2 … relu5_3 that LPIPS compares."""
_LPIPS_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


def _as_tensor(x: ArrayLike, dtype: torch.dtype = torch.float64) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    return x.detach().to(dtype)


def psnr(pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Peak signal-to-noise ratio for images in [0, 1]: ``10 log10(1 / MSE)``, dB.

    Args:
        pred: image. [H, W, C] or [B, C, H, W] (any layout, as long as ``gt`` matches)
        gt: same shape as ``pred``.
        mask: optional weights broadcastable to ``pred`` (e.g. [H, W, 1], 1 = counted); the MSE
            is then the mean over the masked elements.
    Returns:
        PSNR in dB (``inf`` for identical images; ``nan`` for an empty mask).
    """
    p = _as_tensor(pred)
    g = _as_tensor(gt)
    if p.shape != g.shape:
        raise ValueError(f"psnr: pred {list(p.shape)} and gt {list(g.shape)} differ in shape")
    sq = (p - g).square()
    if mask is None:
        mse = float(sq.mean())
    else:
        w = _as_tensor(mask).expand_as(sq)
        total = float(w.sum())
        if total <= 0.0:
            return math.nan
        mse = float((sq * w).sum()) / total
    if mse == 0.0:
        return math.inf
    return -10.0 * math.log10(mse)


def ssim_metric(pred: ArrayLike, gt: ArrayLike, padding: str = "valid") -> float:
    """Mean SSIM (Gaussian 11×11 window, σ = 1.5) in float64.

    Args:
        pred: image in [0, 1]. [H, W, 3] or [B, 3, H, W]
        gt: same shape.
        padding: "valid" (windows fully inside the image: scikit-image, pytorch-msssim) or
            "same" (zero padding: FATE's and 3DGS's ``d_ssim``, whose border windows see black,
            which raises the score on a white-background frame's borders less than on black).
    Returns:
        SSIM in [-1, 1] (1 for identical images).
    """
    return float(ssim(_as_tensor(pred), _as_tensor(gt), window=11, padding=padding))


def _normalize_channels(feat: Tensor, eps: float = 1e-10) -> Tensor:
    """Unit-length feature vectors along channels, as LPIPS does. [B, C, H, W]"""
    return feat / (feat.square().sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """LPIPS-VGG distance (v0.1) from user-supplied weights.

    ``d(x, y) = Σ_l mean_hw( w_l · (f̂_l(x) − f̂_l(y))² )`` where ``f̂_l`` are the channel-
    normalised VGG16 activations at relu1_2 … relu5_3 and ``w_l`` the learnt non-negative
    1×1 linear weights. Inputs in [0, 1] are mapped to [-1, 1] and then shifted/scaled with
    :data:`LPIPS_SHIFT` / :data:`LPIPS_SCALE`.

    Args:
        vgg_path: VGG16 weights (torchvision ``vgg16`` state dict ``.pth`` or ``.safetensors``).
        lin_path: the lpips package's ``vgg.pth`` (``lin{k}.model.1.weight``) or a
            ``.safetensors`` file with those keys.
    Raises:
        ConfigError: a file is missing/unreadable or a key is missing/misshaped.
    """

    def __init__(self, vgg_path: Path | str, lin_path: Path | str) -> None:
        super().__init__()
        self.net = load_vgg16_features(vgg_path, last_layer=RELU_TAPS["relu5_3"])
        self.taps = [RELU_TAPS[name] for name in _LPIPS_TAPS]
        lin = read_tensor_file(Path(lin_path))
        weights = []
        for k, ch in enumerate(LPIPS_CHANNELS):
            key = f"lin{k}.model.1.weight"
            if key not in lin:
                raise ConfigError(
                    f"LPIPS weights {lin_path}: missing key '{key}' (expected shape [1, {ch}, 1, 1]); "
                    f"found keys {sorted(lin)[:8]}"
                )
            if tuple(lin[key].shape) != (1, ch, 1, 1):
                raise ConfigError(
                    f"LPIPS weights {lin_path}: key '{key}' has shape {list(lin[key].shape)}, "
                    f"expected [1, {ch}, 1, 1]"
                )
            weights.append(lin[key].float().view(1, ch, 1, 1))
        for k, w in enumerate(weights):
            self.register_buffer(f"lin{k}", w)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LPIPS":
        """Keeps the backbone in eval mode (the metric has no training behaviour)."""
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, pred: Tensor, gt: Tensor) -> Tensor:
        """LPIPS distance per image.

        Args:
            pred: image in [0, 1]. [H, W, 3] or [B, 3, H, W]
            gt: same shape.
        Returns:
            distance per image (0 for identical images; differentiable w.r.t. ``pred``). [B]
        """
        if pred.shape != gt.shape:
            raise ValueError(f"LPIPS: pred {list(pred.shape)} vs gt {list(gt.shape)}")
        if self.shift.device != pred.device:  # follow the images
            self.to(pred.device)
        x = (to_bchw(pred).to(self.shift.dtype) * 2.0 - 1.0 - self.shift) / self.scale
        y = (to_bchw(gt).to(self.shift.dtype) * 2.0 - 1.0 - self.shift) / self.scale
        fx = self.net(x, self.taps)
        fy = self.net(y, self.taps)
        total = x.new_zeros(x.shape[0])
        for k, (a, b) in enumerate(zip(fx, fy)):
            diff = (_normalize_channels(a) - _normalize_channels(b)).square()
            weighted = (diff * getattr(self, f"lin{k}")).sum(dim=1)  # 1×1 conv to one channel
            total = total + weighted.mean(dim=(1, 2))
        return total


_warned_no_lpips = False


def make_lpips(
    vgg_path: Path | str | None,
    lin_path: Path | str | None,
    device: torch.device | str = "cpu",
) -> LPIPS | None:
    """An :class:`LPIPS` metric when both weight files are given, else ``None``.

    Args:
        vgg_path: VGG16 backbone weights, or ``None``.
        lin_path: lpips ``vgg.pth`` linear weights, or ``None``.
        device: where the network lives.
    Returns:
        the metric, or ``None`` (logged once: LPIPS is then not reported).
    Raises:
        ConfigError: a given path does not exist or holds the wrong tensors.
    """
    global _warned_no_lpips
    given = [p for p in (vgg_path, lin_path) if p is not None and str(p) != ""]
    for p in given:
        if not Path(p).expanduser().is_file():
            raise ConfigError(f"LPIPS weights file not found: {Path(p).expanduser()}")
    if len(given) < 2:
        if not _warned_no_lpips:
            logger.info("LPIPS weights not supplied (VGG16 and lpips vgg.pth): LPIPS is not reported")
            _warned_no_lpips = True
        return None
    return LPIPS(Path(vgg_path).expanduser(), Path(lin_path).expanduser()).to(device)


def evaluate_images(
    preds: Sequence[ArrayLike] | ArrayLike,
    gts: Sequence[ArrayLike] | ArrayLike,
    masks: Sequence[ArrayLike] | ArrayLike | None = None,
    lpips: LPIPS | None = None,
) -> dict[str, float | int | None]:
    """Mean PSNR / SSIM / LPIPS over a set of image pairs.

    Predictions are clamped to [0, 1]. With masks, PSNR is the masked PSNR of each image and
    SSIM / LPIPS are computed on both images multiplied by the mask (background set to black
    in both), the usual practice for head avatars.

    Args:
        preds: N images in [0, 1], each [H, W, 3] (or a stacked [N, H, W, 3]).
        gts: N ground-truth images, same shapes.
        masks: optional N masks in [0, 1], each [H, W] or [H, W, 1].
        lpips: the LPIPS metric (see :func:`make_lpips`) or ``None``.
    Returns:
        ``{"psnr": dB, "ssim": float (valid region), "ssim_fate": float (zero-padded, as FATE's
        code computes it), "lpips": float or None, "lpips_net": "vgg" or None, "n_images": N}``
        (means over images).
    """
    n = len(preds)
    if len(gts) != n or (masks is not None and len(masks) != n):
        raise ValueError(
            f"evaluate_images: {n} predictions, {len(gts)} ground truths, "
            f"{'no' if masks is None else len(masks)} masks"
        )
    if n == 0:
        return {"psnr": math.nan, "ssim": math.nan, "ssim_fate": math.nan, "lpips": None, "lpips_net": None,
                "n_images": 0}
    psnrs, ssims, ssims_fate, lpipss = [], [], [], []
    for i in range(n):
        p = _as_tensor(preds[i]).clamp(0.0, 1.0)
        g = _as_tensor(gts[i])
        if p.ndim != 3 or p.shape[-1] != 3 or p.shape != g.shape:
            raise ValueError(
                f"evaluate_images: image {i}: expected pred and gt [H, W, 3], "
                f"got {list(p.shape)} and {list(g.shape)}"
            )
        m = None
        if masks is not None:
            m = _as_tensor(masks[i])
            if m.ndim == 2:
                m = m.unsqueeze(-1)
            if m.shape != (*p.shape[:2], 1):
                raise ValueError(
                    f"evaluate_images: mask {i} has shape {list(m.shape)}, expected {[*p.shape[:2], 1]}"
                )
        psnrs.append(psnr(p, g, m))
        pm, gm = (p, g) if m is None else (p * m, g * m)
        ssims.append(ssim_metric(pm, gm))
        ssims_fate.append(ssim_metric(pm, gm, padding="same"))
        if lpips is not None:
            dev = lpips.shift.device
            with torch.no_grad():
                d = lpips(pm.float().to(dev), gm.float().to(dev))
            lpipss.append(float(d.sum()))
    return {
        "psnr": float(np.mean(psnrs)),
        "ssim": float(np.mean(ssims)),
        "ssim_fate": float(np.mean(ssims_fate)),
        "lpips": float(np.mean(lpipss)) if lpips is not None else None,
        "lpips_net": "vgg" if lpips is not None else None,
        "n_images": n,
    }
