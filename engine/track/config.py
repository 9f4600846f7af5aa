"""Configs of the tracker's jobs (torch-free: the CLI and the schema import them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engine.errors import ConfigError


@dataclass
class TrackConfig:
    """A tracking job: a portrait video (or a folder of frames) → an INSTA dataset + tracking/."""

    video: str = ""
    """video file (.mp4, .mov, ...) or a folder of frames (.png/.jpg, sorted by number)"""
    output: str = ""
    """dataset folder to write (INSTA layout; replaced only when the new one is complete)"""
    head_model: str = "demo"
    """"demo" (procedural demo head, not FLAME) or a FLAME folder / .pkl / .npz"""
    embedding: str = ""
    """landmark embedding .npz (python -m engine landmarks); empty = computed for the head model"""
    resolution: int = 512
    """side of the square images written, pixels"""
    max_frames: int = 0
    """use at most this many frames (after --fps); 0 = all"""
    fps: float = 0.0
    """resample the video to this constant frame rate; 0 = the video's own (average) rate"""
    test_fraction: float = 0.2
    """the last fraction of the kept frames is the test split"""
    crop_scale: float = 2.4
    """side of the square crop / size of the face box (the union over the clip)"""
    focal: float = 0.0
    """focal length of the video in pixels of its frames, if known; 0 = estimated by the fit"""
    num_shape: int = 100
    """identity components fitted (at most the model's)"""
    num_expr: int = 50
    """expression components fitted (at most the model's)"""
    rigid_steps: int = 200
    """Adam steps of the rigid stage (head rotation, translation, focal)"""
    fit_steps: int = 400
    """Adam steps of the full landmark fit (adds shape, expression, jaw, eyes)"""
    refine: bool = True
    """photometric refinement: coarse avatar fits alternating with per-frame pose/expression fits"""
    refine_rounds: int = 1
    """avatar-fit / frame-refinement rounds"""
    refine_avatar_steps: int = 300
    """training steps of each coarse avatar fit (on the training frames)"""
    refine_frame_steps: int = 30
    """Adam steps per frame of each frame refinement (every frame, test frames included)"""
    refine_resolution: int = 128
    """image side used by the photometric refinement, pixels"""
    refine_uv_resolution: int = 96
    """UV resolution of the coarse avatar's Gaussians"""
    smooth: float = 1.0
    """weight of the temporal smoothness terms"""
    overlay: bool = True
    """write tracking/overlay.mp4 (landmarks and the fitted mesh over the frames)"""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """torch device; auto = CUDA when available"""
    threads: int = 0
    """CPU threads for torch (0 = torch's default)"""
    seed: int = 0
    """random seed (the fit is deterministic for a seed)"""
    resume: bool = False
    """reuse the finished stages of an interrupted run of the same video and settings"""

    def __post_init__(self):
        if self.resolution < 64:
            raise ConfigError(f"resolution must be >= 64 px, found {self.resolution}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in (0, 1), found {self.test_fraction}")
        if self.crop_scale < 1.0:
            raise ConfigError(f"crop_scale must be >= 1, found {self.crop_scale}")
        if self.fps < 0 or self.max_frames < 0 or self.focal < 0:
            raise ConfigError("fps, max_frames and focal must be >= 0")
        if self.device not in ("auto", "cuda", "cpu"):
            raise ConfigError(f"device must be auto, cuda or cpu, found {self.device!r}")
