"""Image operations shared by the training losses and the evaluation metrics: the BCHW layout and
SSIM with a Gaussian window (Wang et al. 2004).

Images are encoded (sRGB) colours in [0, 1], ``[H, W, 3]`` (the engine's layout, top row first)
or ``[B, 3, H, W]``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_C1 = 0.01**2
"""SSIM luminance constant (K1 · L)² with K1 = 0.01 and data range L = 1."""


SSIM_C2 = 0.03**2
"""SSIM contrast constant (K2 · L)² with K2 = 0.03 and data range L = 1."""


SSIM_SIGMA = 1.5
"""Standard deviation of the Gaussian SSIM window, pixels (Wang et al. 2004)."""


def to_bchw(image: Tensor) -> Tensor:
    """Image layout → ``[B, C, H, W]``.

    Args:
        image: ``[H, W, C]`` (engine layout) or ``[B, C, H, W]``.
    Returns:
        ``[B, C, H, W]`` (a view where possible; ``B = 1`` for a single image).
    """
    if image.ndim == 3:
        return image.permute(2, 0, 1).unsqueeze(0)
    if image.ndim == 4:
        return image
    raise ValueError(f"expected an image [H, W, C] or [B, C, H, W], got shape {list(image.shape)}")


def _gaussian_kernel_1d(window: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Normalised 1-D Gaussian window centred on the middle tap. [window]"""
    coords = torch.arange(window, dtype=torch.float64) - (window - 1) / 2.0
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(device=device, dtype=dtype)


def ssim(
    pred: Tensor,
    gt: Tensor,
    window: int = 11,
    *,
    padding: Literal["valid", "same"] = "valid",
    reduction: Literal["mean", "none"] = "mean",
) -> Tensor:
    """Structural similarity (Wang et al. 2004) with a Gaussian window, differentiable.

    Local statistics use an ``window``×``window`` Gaussian window (σ = 1.5 px) applied per
    channel; ``C1 = 0.01²``, ``C2 = 0.03²`` (data range 1). For each pixel::

        SSIM = (2 μx μy + C1)(2 σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))

    Args:
        pred: image in [0, 1]. [H, W, C] or [B, C, H, W]
        gt: same shape as ``pred``.
        window: odd window size in pixels.
        padding: ``"valid"`` (default) keeps only windows fully inside the image (as
            scikit-image / pytorch-msssim do); ``"same"`` zero-pads by ``window // 2`` (as the
            3DGS training code does), so border windows see black.
        reduction: ``"mean"`` returns the mean over pixels, channels and batch; ``"none"``
            returns the SSIM map.
    Returns:
        scalar tensor, or the map [B, C, H', W'] (H' = H − window + 1 for ``"valid"``).
    """
    if pred.shape != gt.shape:
        raise ValueError(f"ssim: pred {list(pred.shape)} and gt {list(gt.shape)} differ in shape")
    if window % 2 != 1 or window < 1:
        raise ValueError(f"ssim: window must be a positive odd size, got {window}")
    x = to_bchw(pred)
    y = to_bchw(gt)
    if not x.is_floating_point():
        raise ValueError(f"ssim: expected floating-point images, got {x.dtype}")
    _, c, h, w = x.shape
    if padding == "valid" and (h < window or w < window):
        raise ValueError(f"ssim: image {h}×{w} is smaller than the {window}×{window} window")
    g = _gaussian_kernel_1d(window, SSIM_SIGMA, x.dtype, x.device)
    # One separable blur over the five moment maps: x, y, x², y², xy (5·C channels).
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    pad = window // 2 if padding == "same" else 0
    kh = g.view(1, 1, window, 1).expand(5 * c, 1, window, 1)
    kw = g.view(1, 1, 1, window).expand(5 * c, 1, 1, window)
    blurred = F.conv2d(stack, kh, padding=(pad, 0), groups=5 * c)
    blurred = F.conv2d(blurred, kw, padding=(0, pad), groups=5 * c)
    mu_x, mu_y, e_xx, e_yy, e_xy = blurred.split(c, dim=1)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    sigma_xx = e_xx - mu_xx
    sigma_yy = e_yy - mu_yy
    sigma_xy = e_xy - mu_xy
    num = (2.0 * mu_xy + SSIM_C1) * (2.0 * sigma_xy + SSIM_C2)
    den = (mu_xx + mu_yy + SSIM_C1) * (sigma_xx + sigma_yy + SSIM_C2)
    smap = num / den
    return smap.mean() if reduction == "mean" else smap
