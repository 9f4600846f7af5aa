"""Configs of the developer jobs: the main job (``demo``) and synthetic datasets (``synth``).
Torch-free, so the CLI imports them without waiting for torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


# ---------------------------------------------------------------------- config
@dataclass
class DemoConfig:
    """The main job (issue 6). Fields left at 0 take the preset's value (see :data:`PRESETS`)."""

    out: str = "out/demo"
    """output folder"""
    preset: Literal["auto", "cpu", "cuda", "test"] = "auto"
    """"auto" (= "cuda" when torch sees a GPU, else "cpu"), "cpu", "cuda" or "test" (CI-sized)"""
    frames: int = 0
    """frames of the sequence (the last fifth is the test split)"""
    resolution: int = 0
    """square image size, pixels"""
    samples: int = 0
    """Cycles samples per pixel"""
    texture_resolution: int = 0
    """albedo texture size, texels"""
    steps: int = 0
    """training steps"""
    uv_resolution: int = 0
    """UV sampling resolution of the initial Gaussians"""
    bake_resolution: int = 0
    """baked map resolution"""
    densify_count: int = 0
    """Gaussians added by each of the two sampling densifications (FATE §3.2)"""
    bake_steps: int = 0
    """baking steps (image objective; BakeNet starts from the direct-fit maps)"""
    bake_channels: int = 0
    """BakeNet base width"""
    turntable_frames: int = 0
    """frames of the 360° turntable"""
    sheet_frames: int = 4
    """test frames shown in the contact sheet"""
    full_head_steps: int = 0
    """pseudo-view + real-frame step pairs of the bake's full-head completion (FATE §3.4)"""
    view_yaws: int = 0
    """360° ground-truth views at pitch 0 (yaw steps of 360/N degrees), never trained on"""
    view_pitch_deg: int = 0
    """pitch of the extra views above/below at yaw 0/90/180/270 (0 = none)"""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """torch device: auto, cuda or cpu"""
    threads: int = 0
    """CPU threads for torch (train, bake, eval); presets: cpu/test 1 (a second thread gains ~1.4×
    on an idle 2-core machine but loses ~3× as soon as another process shares it), cuda: torch's
    default"""
    track: bool = True
    """go through the video: Cycles frames → subject.mp4 → python -m engine track → train on the tracked
    parameters (false: train on the exact parameters, the reference the closing note compares with)"""
    refine_test_steps: int = 60
    """Adam steps per test frame of the refined test PSNR (eval --refine_test_tracking)"""
    dynamic_appearance: bool = True
    """the subject's appearance changes with the expression: forehead wrinkles, smile lines, mouth
    interior with teeth, lid creases, blended in its Cycles material by its shape keys (issue 19)"""
    appearance: Literal["static", "headgas"] = "static"
    """the avatar's appearance model (TrainConfig.appearance): "static" is FATE's; "headgas" learns
    the expression-dependent appearance and its bake writes map shape keys that Blender blends
    (issue 19; docs/benchmarks.md). Not the default: the demo's video never shows the neutral face
    (expression norm ≥ 0.9 in every frame), and HeadGaS's neutral — what the full-head views, the
    pseudo views and an artist's zeroed shape keys show — drifts see-through (mean opacity 0.13,
    0.23 in a frame)"""
    relight: bool = True
    """also train a relightable (``pbr``) avatar and test it against Cycles under held-out lights
    (issue 18, engine/demo/relight.py)"""
    blender_python: str = ""
    """Python with the bpy module for the Blender stages (default: this interpreter)"""
    seed: int = 0
    """random seed"""


PRESETS: dict[str, dict[str, int]] = {
    "cpu": dict(frames=100, resolution=256, samples=16, texture_resolution=1024, steps=400,
                uv_resolution=160, densify_count=1000, bake_resolution=256, bake_steps=300,
                bake_channels=16, turntable_frames=72, threads=1,
                full_head_steps=100, view_yaws=12, view_pitch_deg=20),
    "cuda": dict(frames=150, resolution=512, samples=32, texture_resolution=2048, steps=6000,
                 uv_resolution=256, densify_count=5000, bake_resolution=512, bake_steps=1500,
                 bake_channels=32, turntable_frames=96,
                 full_head_steps=300, view_yaws=12, view_pitch_deg=20),
    "test": dict(frames=20, resolution=128, samples=8, texture_resolution=256, steps=150,
                 uv_resolution=64, densify_count=300, bake_resolution=128, bake_steps=30,
                 bake_channels=8, turntable_frames=6, threads=1,
                 full_head_steps=30, view_yaws=6, view_pitch_deg=0),
}
"""Defaults per preset; "cpu" fits the 15-minute budget of a 2-core CPU. Maps are twice the UV
sampling resolution of the initial Gaussians, FATE's ratio (512² maps for 256² sampling)."""

TRACK_PRESETS: dict[str, dict] = {
    "cpu": dict(rigid_steps=200, fit_steps=400, refine_avatar_steps=300, refine_frame_steps=20,
                refine_resolution=128, refine_uv_resolution=96),
    "cuda": dict(rigid_steps=300, fit_steps=600, refine_rounds=2, refine_avatar_steps=1500, refine_frame_steps=60,
                 refine_resolution=256, refine_uv_resolution=160),
    "test": dict(rigid_steps=60, fit_steps=100, refine_avatar_steps=40, refine_frame_steps=5,
                 refine_resolution=64, refine_uv_resolution=48),
}
"""The tracker's settings per preset (``python -m engine track`` flags)."""


@dataclass
class SyntheticConfig:
    """A synthetic talking-head sequence."""

    frames: int = 100
    """number of frames"""
    resolution: int = 128
    """square image size, pixels"""
    test_fraction: float = 0.2
    """the last fraction of frames is the test split"""
    gt_uv_resolution: int = 384
    """UV sampling resolution of the dense ground-truth head"""
    max_yaw_deg: float = 25.0
    """head turn amplitude (camera orbit), degrees"""
    max_pitch_deg: float = 12.0
    """head nod amplitude, degrees"""
    expression_scale: float = 1.2
    """amplitude of the expression coefficients"""
    jaw_open_rad: float = 0.25
    """maximum jaw opening, radians"""
    dynamic_appearance: bool = False
    """expression-dependent appearance: wrinkles, mouth interior, lid creases
    (engine.demo.expression_appearance; issue 19)"""
    seed: int = 0
    """random seed"""
