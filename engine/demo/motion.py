"""Talking-head motion with exactly known parameters, and the orbiting cameras that film it.

Shared by the main job's Cycles subject and the synthetic ground-truth sequences of the tests and
benchmarks, so both move the same way.
"""

from __future__ import annotations

import math

import numpy as np

from engine.geometry.cameras import look_at_opencv
from engine.model.demo_head import DEMO_EXPRESSION_NAMES, DEMO_HEAD_NAME
from engine.model.head_model import HeadModel


def talking_motion(head: HeadModel, frames: int, seed: int = 0, max_yaw_deg: float = 30.0,
                   max_pitch_deg: float = 15.0, expression_scale: float = 1.0,
                   jaw_open_rad: float = 0.22) -> dict[str, np.ndarray]:
    """A talking sequence, ``t`` in [0, 1] over the sequence.

    Smooth sines on the first 12 expression coefficients (amplitude ``expression_scale`` × U(0.4,
    1)), neck nod and turn (±0.07 rad), jaw opening (up to ``jaw_open_rad``) and gaze; every
    channel cycles 2.5–4.5 times per sequence, so the last 20 % (the test split) stays inside the
    range the first 80 % covers, as the end of a real monocular video does. The demo head also
    blinks (both eyes, three times). Head turns are an orbiting camera (the INSTA way):
    ``yaw = max_yaw · sin(2π·1.5·t)``, ``pitch = max_pitch · sin(2π·3.3·t)`` — a Lissajous path on
    which no test view is more than ~2.5° from a training view.

    Args:
        head: the head model (its expression and joint counts; blinks for the demo head).
        frames: T.
        seed: seed of the frequencies, phases and amplitudes.
        max_yaw_deg, max_pitch_deg: orbit amplitudes, degrees.
        expression_scale: multiplier of the expression amplitudes.
        jaw_open_rad: largest jaw opening, radians.
    Returns:
        expr [T, E], pose [T, J·3] axis-angle (rad), yaw [T], pitch [T] (rad, camera orbit).
    """
    rng = np.random.default_rng(seed)
    T = int(frames)
    t = np.arange(T, dtype=np.float64) / max(T - 1, 1)

    def wave(lo: float = 2.5, hi: float = 4.5) -> np.ndarray:
        return np.sin(2 * np.pi * rng.uniform(lo, hi) * t + rng.uniform(0, 2 * np.pi))

    expr = np.zeros((T, head.num_expr))
    for c in range(min(head.num_expr, 12)):
        expr[:, c] = expression_scale * rng.uniform(0.4, 1.0) * wave()
    pose = np.zeros((T, head.num_joints * 3))
    pose[:, 3] = 0.07 * wave()  # neck nod
    pose[:, 4] = 0.07 * wave()  # neck turn
    pose[:, 6] = jaw_open_rad * np.clip(wave(3.0, 4.0), 0.0, 1.0)  # jaw opens while talking
    if head.num_joints >= 5:
        gaze = 0.15 * np.stack([wave(), wave(), np.zeros(T)], 1)
        pose[:, 9:12] = gaze
        pose[:, 12:15] = gaze
    if head.name == DEMO_HEAD_NAME:
        period = max(T / 3.0, 8.0)  # three blinks per sequence
        phase = (np.arange(T) + 0.35 * period) % period
        blink = np.clip(1.0 - np.abs(phase - period / 2) / 2.2, 0.0, 1.0)
        for name in ("blink_left", "blink_right"):
            expr[:, DEMO_EXPRESSION_NAMES.index(name)] = blink
        expr[:, DEMO_EXPRESSION_NAMES.index("eyes_wide")] *= 0.5
    return {"expr": expr.astype(np.float32), "pose": pose.astype(np.float32),
            "yaw": np.radians(max_yaw_deg) * np.sin(2 * np.pi * 1.5 * t),
            "pitch": np.radians(max_pitch_deg) * np.sin(2 * np.pi * 3.3 * t)}


def orbit_cameras(head: HeadModel, yaw: np.ndarray, pitch: np.ndarray, resolution: int,
                  fill: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Cameras orbiting the head's centre (head turns expressed as camera motion, as in INSTA).

    Returns:
        viewmats [T, 4, 4] world→camera OpenCV; K [3, 3] pixels.
    """
    v = head.v_template
    lo, hi = v.min(axis=0), v.max(axis=0)
    centre = 0.5 * (lo + hi)
    height = float(hi[1] - lo[1])
    fx = 2.2 * resolution
    dist = fx * height / (fill * resolution)
    K = np.array([[fx, 0, resolution / 2], [0, fx, resolution / 2], [0, 0, 1]], dtype=np.float64)
    views = []
    for y, p in zip(yaw, pitch):
        d = np.array([math.sin(y) * math.cos(p), math.sin(p), math.cos(y) * math.cos(p)])
        views.append(look_at_opencv(centre + dist * d, centre))
    return np.stack(views), K
