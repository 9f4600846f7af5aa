"""Configs of the render and eval jobs (torch-free: the CLI and the schema import them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engine.errors import ConfigError
from engine.jobs.config import check_ranges


def _check_texel_stride(stride: int) -> None:
    if stride < 0:
        raise ConfigError(f"texel_stride must be 0 (as trained) or a positive stride, found {stride}")


@dataclass
class RenderConfig:
    """A render job."""

    avatar: str = ""
    """avatar folder"""
    out: str = ""
    """folder for the rendered PNGs (default: <avatar>/renders/<split>)"""
    split: Literal["train", "test", "all"] = "test"
    """"train", "test" or "all" frames of the avatar's own tracking"""
    driver: str = ""
    """another tracked dataset whose FLAME expression/pose (and cameras) drive the avatar: cross-reenactment"""
    from_maps: bool = False
    """re-splat the Gaussians from the baked (possibly edited) maps in <avatar>/maps"""
    texel_stride: int = 0
    """re-splat density with from_maps: 0 = the trained Gaussians, k >= 1 = one per k-th covered texel"""
    map_keys: bool = True
    """with from_maps: colour and opacity follow the map shape keys (maps/dynamic) by the frame's
    expression, as in Blender"""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """auto, cuda or cpu"""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """background colour"""
    force: bool = False
    """use a head model or maps that do not match the avatar's records (experts only)"""

    def __post_init__(self) -> None:
        _check_texel_stride(self.texel_stride)
        check_ranges(self, unit_interval=("background",))


@dataclass
class EvalConfig:
    """An evaluation job: metrics of rendered frames against the dataset's images → metrics.json."""

    avatar: str = ""
    """avatar folder"""
    dataset: str = ""
    """dataset with the ground truth (default: the one the avatar was trained on)"""
    split: Literal["train", "test", "all"] = "test"
    """which frames"""
    from_maps: bool = False
    """evaluate the baked avatar (maps) instead of the trained Gaussians"""
    texel_stride: int = 0
    """re-splat density with from_maps: 0 = the trained Gaussians, k >= 1 = one per k-th covered texel"""
    map_keys: bool = True
    """with from_maps: colour and opacity follow the map shape keys (maps/dynamic) by the frame's
    expression, as in Blender"""
    lpips_vgg: str = ""
    """VGG16 weights for LPIPS (torchvision state_dict); empty = no LPIPS"""
    lpips_lin: str = ""
    """LPIPS linear-layer weights (lpips package's vgg.pth); empty = no LPIPS"""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """auto, cuda or cpu"""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """background colour (also used to composite the ground truth)"""
    out: str = ""
    """metrics file (default: <avatar>/metrics_<split>.json)"""
    force: bool = False
    """use a head model or maps that do not match the avatar's records (experts only)"""
    refine_test_tracking: bool = False
    """also report metrics after fitting each evaluated frame's pose and expression to its image with the
    avatar frozen (IMavatar/PointAvatar protocol; the optimistic figure, reported beside the plain one)"""
    refine_steps: int = 60
    """Adam steps per frame of --refine_test_tracking"""

    def __post_init__(self) -> None:
        _check_texel_stride(self.texel_stride)
        check_ranges(self, unit_interval=("background",), at_least_one=("refine_steps",))
