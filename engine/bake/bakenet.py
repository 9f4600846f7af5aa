"""BakeNet: the U-Net of FATE's neural baking (supp. Fig. 10), the learnt pre-filter ℋ of Eq. 11.

Two variants:

- ``style="fate"`` — as FATE's code builds it (the common "milesial" U-Net): each block is
  (3×3 conv without bias → BatchNorm → ReLU) × 2, max-pool down, bilinear up (align_corners)
  then concatenation with the skip, the bottom level as wide as the one above it (64 → 128 →
  256 → 512 → 512 for base 64, depth 4), a 1×1 output convolution with PyTorch's default init.
  BatchNorm always normalises with the statistics of the (single) input, in training and when
  the maps are written, as FATE's export does.
- ``style="residual"`` — this project's variant for ``init="direct"``: blocks of (3×3 conv →
  LeakyReLU 0.2) × 2, transposed-convolution up, bottom ``base·2^depth``, and a zero-initialised
  output so step 0 renders the direct fit exactly (the residual starts at zero).
"""

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


class _FateBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, mid: int | None = None):
        mid = mid or cout
        super().__init__(nn.Conv2d(cin, mid, 3, padding=1, bias=False),
                         nn.BatchNorm2d(mid, track_running_stats=False), nn.ReLU(inplace=True),
                         nn.Conv2d(mid, cout, 3, padding=1, bias=False),
                         nn.BatchNorm2d(cout, track_running_stats=False), nn.ReLU(inplace=True))


class FateBakeNet(nn.Module):
    """FATE's BakeNet U-Net (module doc, ``style="fate"``): 11 → 11 channels at the input's size.

    Args:
        base: channels after the first block (FATE: 64).
        depth: 2× down-samplings (FATE: 4; the bottom is ``base·2^(depth−1)`` wide: 512).
        in_channels, out_channels: 11 each.
    """

    def __init__(self, base: int = 64, depth: int = 4, in_channels: int = 11, out_channels: int = 11):
        super().__init__()
        widths = [base * 2 ** i for i in range(depth)] + [base * 2 ** (depth - 1)]
        self.inc = _FateBlock(in_channels, widths[0])
        self.down = nn.ModuleList(_FateBlock(widths[i], widths[i + 1]) for i in range(depth))
        ups, cur = [], widths[depth]
        for j in reversed(range(depth)):
            cin = cur + widths[j]
            cout = widths[j - 1] if j > 0 else widths[0]
            ups.append(_FateBlock(cin, cout, mid=cin // 2))
            cur = cout
        self.up = nn.ModuleList(ups)
        self.out = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """x: input maps [B, 11, R, R] (R divisible by 2^depth) → raw channels [B, 11, R, R]."""
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        h = skips.pop()
        for block in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            h = block(torch.cat([skip, h], dim=1))
        return self.out(h)


def make_bakenet(style: str, base: int, depth: int, in_channels: int = 11) -> nn.Module:
    """The BakeNet variant of a bake: "fate" (:class:`FateBakeNet`) or "residual" (:class:`BakeNet`);
    ``in_channels`` > 11 for the expression-conditioned BakeNet (``engine.bake.dynamic``)."""
    if style == "fate":
        return FateBakeNet(base, depth, in_channels=in_channels)
    if style == "residual":
        return BakeNet(base, depth, in_channels=in_channels)
    raise ValueError(f"unknown BakeNet style {style!r}")


def unet_depth(resolution: int, max_depth: int = 4) -> int:
    """U-Net down-sampling levels for a map size: FATE's 4, fewer for small maps so the bottom
    level stays at least 8 texels wide (32 → 2, 64 → 3, 128 and larger → 4)."""
    return max(1, min(max_depth, int(math.log2(resolution)) - 3))
