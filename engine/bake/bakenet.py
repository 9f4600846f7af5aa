"""BakeNet: the U-Net of FATE's neural baking (supp. Fig. 10), the learnt pre-filter ℋ of Eq. 11."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.2, inplace=True))


class BakeNet(nn.Module):
    """U-Net of supp. Fig. 10: 11 → base → ×2 per level (to base·2^depth) → back to base → 11.

    Args:
        base: channels after the first convolution (FATE: 64).
        depth: number of 2× down-samplings (FATE: 4 → 1024 channels at the bottom).
        in_channels, out_channels: 11 each (noise in, attributes out).
    """

    def __init__(self, base: int = 64, depth: int = 4, in_channels: int = 11, out_channels: int = 11):
        super().__init__()
        widths = [base * 2 ** i for i in range(depth + 1)]
        self.inc = _Block(in_channels, widths[0])
        self.down = nn.ModuleList(_Block(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                for i in reversed(range(depth)))
        self.dec = nn.ModuleList(_Block(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.out = nn.Conv2d(widths[0], out_channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: noise [B, 11, R, R] → raw attribute channels [B, 11, R, R]."""
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        h = skips.pop()
        for up, dec in zip(self.up, self.dec):
            h = dec(torch.cat([up(h), skips.pop()], dim=1))
        return self.out(h)


def unet_depth(resolution: int, max_depth: int = 4) -> int:
    """U-Net down-sampling levels for a map size: FATE's 4, fewer for small maps so the bottom
    level stays at least 8 texels wide (32 → 2, 64 → 3, 128 and larger → 4)."""
    return max(1, min(max_depth, int(math.log2(resolution)) - 3))
