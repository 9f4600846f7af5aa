"""Densification hyper-parameters (FATE §3.2, supp. §7.2): one config for every strategy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class DensifyConfig:
    """Hyper-parameters of densification (defaults: FATE supp. §7.2)."""

    strategy: Literal["sampling", "threshold", "temporal", "none"] = "sampling"
    """"sampling" (FATE §3.2), "threshold" (3DGS), "temporal" (STAvatar: per-cluster statistics and
    a fused perceptual error, sampled like FATE) or "none"."""
    start: int = 500
    """first step at which densification may run"""
    stop: int = 10**9
    """no densification after this step"""
    every: int = 3000
    """densify every N steps"""
    count: int = 1000
    """sampling, temporal: Gaussians added per densification"""
    grad_threshold: float = 2e-3
    """threshold: mean ‖∂L/∂μ‖ (μ in meters) above which a Gaussian is cloned/split; on the 128²
    demo sequence about the 90th percentile early in training"""
    split_scale: float = 2.0
    """threshold: Gaussians whose largest scale multiplier exceeds this are split, others cloned"""
    prune_every: int = 2000
    """prune every N steps"""
    prune_opacity: float = 5e-3
    """prune Gaussians with opacity below this"""
    reset_every: int = 60_000
    """reset opacities every N steps (0 = never); FATE's code: 60k, i.e. never within its schedule
    (supp. §7.2 of the paper text says 6k)"""
    reset_opacity: float = 0.01
    """opacities are clamped to at most this at a reset"""
    max_gaussians: int = 100_000
    """budget: densification never exceeds it"""
    gradient: Literal["screen", "world"] = "screen"
    """sampling: the importance of Eq. 6 — "screen": ‖∂L/∂μ₂ᴅ‖ of the projected centres (pixels)
    summed over the steps a Gaussian was drawn, as FATE's code does; "world": the mean ‖∂L/∂μ‖ of
    the 3D centres (meters), this project's round-1 rule. The threshold strategy always uses the
    world-space mean (its ``grad_threshold`` is in those units)."""
    child_scale: float = 0.75
    """sampling, temporal: scale multiplier of each new child (FATE's code: 0.75; 1 = the parent's scale)"""

    clusters: int = 4
    """temporal: K, clusters of training frames by expression and jaw pose (k-means)"""
    error_weight: float = 1.0
    """temporal: weight of the fused perceptual error against the screen gradient in the
    importance (each normalised by its mean; 0 = gradient only)"""
    error_dssim: float = 0.2
    """temporal: λ of the fused error map (1 − λ)·L1 + λ·D-SSIM"""

    def __post_init__(self):
        from engine.errors import ConfigError
        from engine.jobs.config import check_ranges

        if self.strategy not in ("sampling", "threshold", "temporal", "none"):
            raise ConfigError(f"densify.strategy must be 'sampling', 'threshold', 'temporal' or 'none', "
                              f"found {self.strategy!r}")
        if self.gradient not in ("screen", "world"):
            raise ConfigError(f"densify.gradient must be 'screen' or 'world', found {self.gradient!r}")
        if not 0 < self.child_scale <= 4:
            raise ConfigError(f"densify.child_scale must be in (0, 4], found {self.child_scale}")
        check_ranges(self, non_negative=("start", "stop", "every", "count", "grad_threshold", "prune_every",
                                         "prune_opacity", "reset_every", "reset_opacity", "max_gaussians",
                                         "error_weight"),
                     positive=("split_scale",), at_least_one=("clusters",), unit_interval=("error_dssim",))
