"""The bench job's config (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class BenchConfig:
    """A benchmark run."""

    suite: str = "raster"
    """comma-separated: raster, render (forward-only FPS), densify, train, bake, fate (round-1 vs
    FATE-code training settings), binding (hard/soft binding × sampling/temporal densification),
    track (tracker accuracy and speed), appearance (static vs HeadGaS vs dynamic maps and map shape keys)"""
    dataset: str = ""
    """dataset for the fate, binding and appearance suites (default: the synthetic sequence of ``frames`` ×
    ``resolution``; for appearance with the expression-dependent layers)"""
    steps: int = 1500
    """training steps for the densify/train suites"""
    frames: int = 100
    """synthetic sequence length for the densify/train suites"""
    resolution: int = 128
    """image size for the densify/train suites"""
    gaussians: int = 20000
    """Gaussian count for the raster suite"""
    bake_steps: int = 150
    """image-objective steps per bake (bake suite; init=noise also gets its 500 warm-up steps)"""
    bake_resolution: int = 128
    """map resolution for the bake suite"""
    bake_channels: int = 16
    """BakeNet base width for the bake suite (FATE: 64)"""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """auto, cuda or cpu"""
    workdir: str = ""
    """where datasets/avatars are written (default: a temp folder)"""
    out: str = ""
    """write the results as JSON here too"""
