"""BakeNet's 11 output channels ↔ activated attribute maps (supp. §7.3, Eq. 24).

Channels are activated *per texel* before the bilinear lookup, so the written maps are exactly
what baking rendered: scale through the Eq. 24 normalisation on the log scale, colour and opacity
through a sigmoid, the normal offset through ``shell · tanh``, rotation as axis-angle.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

CHANNELS = {"scale": (0, 3), "rotation": (3, 6), "color": (6, 9), "opacity": (9, 10), "offset": (10, 11)}
"""Slices of BakeNet's 11 output channels (supp. §7.3 order)."""


@dataclass
class ScaleNorm:
    """Eq. 24: s = s_max − softplus(−(v + s_mean) + s_max) on the log scale (GGHead-style)."""

    s_mean: float
    s_max: float

    def __call__(self, v: Tensor) -> Tensor:
        return self.s_max - F.softplus(-(v + self.s_mean) + self.s_max)

    def inverse(self, s: Tensor) -> Tensor:
        """v such that self(v) = s (s < s_max)."""
        y = (self.s_max - s).clamp_min(1e-6)
        return -(torch.log(torch.expm1(y)) - self.s_max) - self.s_mean


def activate(raw: Tensor, scale_norm: ScaleNorm, shell: float) -> dict[str, Tensor]:
    """Raw BakeNet output [11, R, R] → activated maps name → [R, R, C] (engine.maps units)."""
    def ch(name):
        a, b = CHANNELS[name]
        return raw[a:b].permute(1, 2, 0)
    return {
        "color": torch.sigmoid(ch("color")),
        "opacity": torch.sigmoid(ch("opacity")),
        "scale": torch.exp(scale_norm(ch("scale"))),
        "rotation": ch("rotation"),
        "offset": shell * torch.tanh(ch("offset")),
    }


def raw_from_maps(maps: dict[str, Tensor], scale_norm: ScaleNorm, shell: float) -> Tensor:
    """Inverse of :func:`activate`: activated maps → raw BakeNet channels.

    Args:
        maps: name → float32 [R, R, C] in engine.maps units (colour and opacity in [0, 1], scale in
            meters relative to the face scale, rotation axis-angle in the face frame, offset in
            meters along the normal).
        scale_norm: the Eq. 24 normalisation the raw scale channels go through.
        shell: the offset bound in meters (offset = shell·tanh(raw)).
    Returns:
        float32 [11, R, R] on the CPU, channels in :data:`CHANNELS` order (supp. §7.3).

    Colour and opacity are clamped to (1e-4, 1 − 1e-4) and the offset to ±0.999·shell first, so
    the logit/atanh stay finite.
    """
    R = maps["color"].shape[0]
    inverse = {
        "color": torch.logit(maps["color"].clamp(1e-4, 1 - 1e-4)),
        "opacity": torch.logit(maps["opacity"].clamp(1e-4, 1 - 1e-4)),
        "scale": scale_norm.inverse(torch.log(maps["scale"].clamp_min(1e-8))),
        "rotation": maps["rotation"],
        "offset": torch.atanh((maps["offset"] / shell).clamp(-0.999, 0.999)),
    }
    raw = torch.zeros(11, R, R)
    for name, (a, b) in CHANNELS.items():
        raw[a:b] = inverse[name].reshape(R, R, b - a).permute(2, 0, 1)
    return raw


def standardise(x: Tensor) -> Tensor:
    """Per-channel zero mean, unit variance of a [C, H, W] tensor (constant channels → 0)."""
    mu = x.mean((1, 2), keepdim=True)
    return (x - mu) / x.std((1, 2), keepdim=True).clamp_min(1e-6)
