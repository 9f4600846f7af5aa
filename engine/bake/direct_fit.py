"""Maps without BakeNet: the direct per-texel fit of trained Gaussians (FATE Fig. 4's "direct"
maps), a push-pull hole fill, and the Gaussian low-pass used by ``init="direct"``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_blur(m: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of a UV map (the low-pass of the ``init="direct"`` starting maps).

    Args:
        m: float [R, R, C] map.
        sigma: standard deviation in texels (> 0); the kernel spans ±ceil(3σ).
    Returns:
        [R, R, C], same dtype and device; borders are replicated, the kernel sums to 1 (constants
        are kept).
    """
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = (k / k.sum()).to(m)
    c = m.shape[-1]
    img = m.permute(2, 0, 1)[None]
    img = F.conv2d(F.pad(img, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1),
                   groups=c)
    img = F.conv2d(F.pad(img, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1),
                   groups=c)
    return img[0].permute(1, 2, 0)


@torch.no_grad()
def direct_fit_maps(values: dict[str, Tensor], uv: Tensor, resolution: int, names=None) -> dict[str, Tensor]:
    """Per-texel fit without BakeNet: each texel averages the Gaussians whose UV falls in it;
    empty texels take the nearest filled texel (a push-pull fill). This is the 'direct
    optimisation' baseline of FATE Fig. 4 (discontinuous maps), and the geometry maps of an
    appearance-only bake.

    Args:
        values: name → activated values [N, C] or [N].
        uv: [N, 2] OBJ convention.
        resolution: map size R.
        names: the subset of ``values`` to fit (None = all).
    Returns:
        name → map [R, R, C].
    """
    R = resolution
    col = (uv[:, 0] * R).floor().clamp(0, R - 1).long()
    row = ((1 - uv[:, 1]) * R).floor().clamp(0, R - 1).long()
    lin = row * R + col
    count = torch.zeros(R * R).index_add_(0, lin, torch.ones(len(lin)))
    out = {}
    for name, v in values.items():
        if names is not None and name not in names:
            continue
        v2 = v.detach().cpu().float().reshape(len(lin), -1)
        acc = torch.zeros(R * R, v2.shape[1]).index_add_(0, lin, v2)
        m = (acc / count.clamp_min(1)[:, None]).reshape(R, R, -1)
        out[name] = _fill_holes(m, (count > 0).reshape(R, R))
    return out


def _fill_holes(m: Tensor, filled: Tensor) -> Tensor:
    """Push-pull fill of texels where ``filled`` is False. m [R, R, C], filled bool [R, R]."""
    if filled.all() or not filled.any():
        return m
    w = filled.float()[None, None]
    x = (m.permute(2, 0, 1)[None]) * w
    pyramid = [(x, w)]
    while pyramid[-1][0].shape[-1] > 1:
        x, w = F.avg_pool2d(pyramid[-1][0], 2, ceil_mode=True), F.avg_pool2d(pyramid[-1][1], 2, ceil_mode=True)
        pyramid.append((x, w))
    x, w = pyramid[-1]
    est = x / w.clamp_min(1e-8)
    for x, w in reversed(pyramid[:-1]):
        up = F.interpolate(est, size=x.shape[-2:], mode="nearest")
        est = torch.where(w > 0, x / w.clamp_min(1e-8), up)
    return est[0].permute(1, 2, 0)
