"""Densification hyper-parameters (FATE §3.2, supp. §7.2): one config for every strategy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class DensifyConfig:
    """Hyper-parameters of densification (defaults: FATE supp. §7.2)."""

    strategy: Literal["sampling", "threshold", "none"] = "sampling"
    """"sampling" (FATE §3.2), "threshold" (3DGS) or "none"."""
    start: int = 500
    """first step at which densification may run"""
    stop: int = 10**9
    """no densification after this step"""
    every: int = 3000
    """densify every N steps"""
    count: int = 1000
    """sampling: Gaussians added per densification"""
    grad_threshold: float = 2e-3
    """threshold: mean ‖∂L/∂μ‖ (μ in meters) above which a Gaussian is cloned/split; on the 128²
    demo sequence about the 90th percentile early in training"""
    split_scale: float = 2.0
    """threshold: Gaussians whose largest scale multiplier exceeds this are split, others cloned"""
    prune_every: int = 2000
    """prune every N steps"""
    prune_opacity: float = 5e-3
    """prune Gaussians with opacity below this"""
    reset_every: int = 6000
    """reset opacities every N steps (0 = never)"""
    reset_opacity: float = 0.01
    """opacities are clamped to at most this at a reset"""
    max_gaussians: int = 100_000
    """budget: densification never exceeds it"""

    def __post_init__(self):
        if self.strategy not in ("sampling", "threshold", "none"):
            from engine.errors import ConfigError
            raise ConfigError(f"densify.strategy must be 'sampling', 'threshold' or 'none', found {self.strategy!r}")
        from engine.jobs.config import check_ranges
        check_ranges(self, non_negative=("start", "stop", "every", "count", "grad_threshold", "prune_every",
                                         "prune_opacity", "reset_every", "reset_opacity", "max_gaussians"),
                     positive=("split_scale",))
