"""Rendering helpers of the Blender tests: a frame through the scene's engine to a float EXR, read
back as numpy (top row first)."""

from __future__ import annotations

import math
from pathlib import Path

import bpy
import numpy as np


def read_exr_rgba(path: Path) -> np.ndarray:
    """An RGBA EXR written by Blender → [H, W, 4] float32, top row first (file order)."""
    img = bpy.data.images.load(str(path), check_existing=False)
    try:
        img.colorspace_settings.name = "Non-Color"  # the values as stored (scene linear)
        w, h = img.size
        buf = np.empty(w * h * 4, np.float32)
        img.pixels.foreach_get(buf)
        return buf.reshape(h, w, 4)[::-1].copy()
    finally:
        bpy.data.images.remove(img)


def render_exr(path: Path) -> np.ndarray:
    """Renders the current frame with the scene's engine to a 32-bit RGBA EXR and reads it."""
    rd = bpy.context.scene.render
    rd.image_settings.media_type = 'IMAGE'
    rd.image_settings.file_format = 'OPEN_EXR'
    rd.image_settings.color_depth = '32'
    rd.image_settings.color_mode = 'RGBA'
    rd.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    return read_exr_rgba(path)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images with values in [0, 1]."""
    mse = float(((a - b) ** 2).mean())
    return 10.0 * math.log10(1.0 / max(mse, 1e-20))
