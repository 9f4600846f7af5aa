"""3DGS threshold densification, adapted to UV-bound Gaussians.

Gaussians whose mean gradient norm exceeds ``grad_threshold`` are cloned (small ones) or split
into two with scales / 1.6 (large ones); children land at a random barycentric point of the same
face, since a UV-bound Gaussian cannot leave its face.
"""

from __future__ import annotations

import torch
from torch import Tensor

from engine.model.gaussians import UVGaussians
from engine.train.densify.base import Strategy

SPLIT_SHRINK = 1.6
"""3DGS: a split parent and its child take the parent's scale / 1.6."""


class ThresholdStrategy(Strategy):
    """3DGS densification: every Gaussian above the gradient threshold, highest first."""

    def select_parents(self, state: dict[str, Tensor], model: UVGaussians, room: int,
                       generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Returns:
            parents: int64 [P]
            scale_factor: 1/1.6 for split (large) parents, 1 for cloned ones. [P]
        """
        cfg = self.config
        importance = self.mean_grad(state)
        idx = torch.nonzero(importance > cfg.grad_threshold).squeeze(1)
        idx = idx[torch.argsort(importance[idx], descending=True)][:room]
        large = model.scale_multipliers()[idx].amax(dim=1) > cfg.split_scale
        factor = torch.where(large, torch.full_like(large, 1 / SPLIT_SHRINK, dtype=torch.float32),
                             torch.ones_like(large, dtype=torch.float32))
        return idx, factor
