"""Sampling-based densification (FATE §3.2, Eq. 6–8).

Every ``every`` steps, ``count`` parents are drawn by multinomial sampling with probability
proportional to their importance; each child lands at a random barycentric point (Eq. 7–8) of its
parent's face, inherits the parent's attributes and (FATE's code) shrinks its scale by
``child_scale``, so the Gaussian count grows by a fixed, controllable amount.

Importance (``densify.gradient``): FATE's code accumulates the screen-space gradient norm
‖∂L/∂μ₂ᴅ‖ of each drawn Gaussian and samples proportionally to that *sum* (Gaussians seen in
more frames weigh more); ``"world"`` is this project's round-1 rule, the *mean* ‖∂L/∂μ‖ of the
3D centres.
"""

from __future__ import annotations

import torch
from torch import Tensor

from engine.model.gaussians import UVGaussians
from engine.train.densify.base import Strategy


class SamplingStrategy(Strategy):
    """FATE's strategy: ``count`` parents per densification, drawn by importance."""

    @property
    def gradient_source(self) -> str:
        return self.config.gradient

    @property
    def child_scale(self) -> float:  # type: ignore[override]
        return self.config.child_scale

    def importance(self, state: dict[str, Tensor]) -> Tensor:
        """Eq. 6's I_k: the summed screen gradient (FATE's code) or the mean world gradient. [N]"""
        return state["grad_accum"] if self.gradient_source == "screen" else self.mean_grad(state)

    def select_parents(self, state: dict[str, Tensor], model: UVGaussians, room: int,
                       generator: torch.Generator | None) -> tuple[Tensor, None]:
        return sample_parents(self.importance(state), min(self.config.count, room), generator), None


def sample_parents(importance: Tensor, count: int, generator: torch.Generator | None = None) -> Tensor:
    """Multinomial draw of parents with p_k = I_k / Σ I_i (FATE Eq. 6), with replacement.

    Args:
        importance: non-negative importance per Gaussian. [N]
        count: number of parents to draw.
        generator: CPU generator (the draw runs on the CPU so it is the same on every device).
    Returns:
        parent indices, int64. [count] (empty when all importances are zero)
    """
    total = importance.sum()
    if count <= 0 or not torch.isfinite(total) or total <= 0:
        return torch.empty(0, dtype=torch.long, device=importance.device)
    probs = (importance / total).float().cpu()
    idx = torch.multinomial(probs, count, replacement=True, generator=generator)
    return idx.to(importance.device)
