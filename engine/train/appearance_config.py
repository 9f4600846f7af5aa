"""Config of the expression-dependent appearance models (issue 19); torch-free like TrainConfig."""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import ConfigError


@dataclass
class HeadGaSConfig:
    """HeadGaS (ECCV 2024, §3.2) feature blending, used when ``appearance = "headgas"``."""

    num_expr: int = 52
    """B: the first B expression coefficients blend the feature bases (HeadGaS: 52)"""
    jaw: bool = True
    """also blend the jaw's pose feature R_jaw − I (the Pose_jaw_* shape keys): open-mouth
    appearance (teeth, mouth interior) follows the jaw (not in HeadGaS, whose blending weights
    are expression coefficients only)"""
    feature_dim: int = 32
    """f, per-Gaussian feature size (HeadGaS: 32)"""
    hidden: int = 64
    """width of the MLP's two hidden layers (HeadGaS: 64)"""
    pe_freqs: int = 4
    """positional-encoding frequencies of the canonical position fed to the MLP"""
    lr_features: float = 5e-4
    """Adam learning rate of the feature bases F and biases f0 (HeadGaS publishes none; on the
    synthetic dynamic sequence 2.5e-3, the 3DGS colour rate, fits the training frames and loses on
    held-out ones: docs/benchmarks.md)"""
    lr_mlp: float = 1e-3
    """Adam learning rate of the MLP"""
    lambda_residual: float = 0.0
    """weight of the mean |change from the neutral face| (colour units) in the loss (not in HeadGaS;
    an L1 form of Animatable Gaussians' ‖ΔO‖² regulariser against fitting single frames)"""

    def __post_init__(self):
        for name in ("num_expr", "feature_dim", "hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(f"headgas.{name} must be >= 1, found {getattr(self, name)}")
        if self.pe_freqs < 0:
            raise ConfigError(f"headgas.pe_freqs must be >= 0, found {self.pe_freqs}")
