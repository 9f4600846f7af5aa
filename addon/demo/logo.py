"""The scripted texture edit of the final demo stage: a logo stamped into the colour map, as an
artist would in Texture Paint."""

from __future__ import annotations

import bpy
import numpy as np

from ..splats.colour import srgb_to_linear
from ..splats.pixels import is_linear_buffer

__all__ = ["logo_rgba", "stamp_logo"]


def logo_rgba(size: int) -> np.ndarray:
    """A small round badge (blue disc, white ring and five-pointed star), anti-aliased.

    Returns:
        encoded (sRGB) RGBA in [0, 1], row 0 = top. [size, size, 4] float32
    """
    n = int(size)
    c = (np.arange(n) + 0.5) / n * 2.0 - 1.0
    x, y = np.meshgrid(c, -c)  # y up
    r = np.hypot(x, y)
    aa = 2.0 / n

    def cover(d: np.ndarray) -> np.ndarray:  # signed distance (inside < 0) → coverage
        return np.clip(0.5 - d / aa, 0.0, 1.0)

    disc = cover(r - 0.98)
    ring = cover(np.abs(r - 0.84) - 0.06)
    # star: polar radius of a five-pointed star, point up
    ang = np.arctan2(x, y)
    k = np.abs(((ang / (2 * np.pi / 5)) % 1.0) - 0.5) * 2.0  # 1 at the points, 0 between
    star_r = 0.28 + 0.38 * k ** 1.6
    star = cover(r - star_r)
    rgb = np.empty((n, n, 3), np.float32)
    rgb[:] = (0.08, 0.25, 0.75)
    white = np.maximum(ring, star)[..., None]
    rgb = rgb * (1 - white) + white * np.array([1.0, 0.95, 0.35], np.float32)
    return np.concatenate([rgb, disc[..., None]], axis=-1).astype(np.float32)


def stamp_logo(img: bpy.types.Image, uv_box: tuple[float, float, float, float]) -> int:
    """Stamps :func:`logo_rgba` into ``img`` over a UV box, as a Texture Paint stamp would.

    Writes ``Image.pixels`` (bottom row first; a float sRGB image holds scene-linear values, so
    the logo is decoded first) and composites with the logo's alpha.

    Args:
        img: the colour map image.
        uv_box: (u0, v0, u1, v1), OBJ convention (origin bottom-left).
    Returns:
        number of texels changed.
    """
    w, h = img.size
    px = np.empty(w * h * 4, np.float32)
    img.pixels.foreach_get(px)
    px = px.reshape(h, w, 4)  # row 0 = bottom (v ≈ 0)
    u0, v0, u1, v1 = uv_box
    c0, c1 = int(round(u0 * w)), int(round(u1 * w))
    r0, r1 = int(round(v0 * h)), int(round(v1 * h))
    if c1 <= c0 or r1 <= r0:
        raise ValueError(f"logo UV box {uv_box} covers no texel of {img.name} ({w}x{h})")
    n = max(c1 - c0, r1 - r0)
    logo = logo_rgba(n)
    # nearest resample to the box (rows of the logo are top first; the image bottom first)
    ri = ((np.arange(r1 - r0) + 0.5) / (r1 - r0) * n).astype(int)[::-1]
    ci = ((np.arange(c1 - c0) + 0.5) / (c1 - c0) * n).astype(int)
    patch = logo[ri][:, ci]
    rgb = srgb_to_linear(patch[..., :3]) if is_linear_buffer(img) else patch[..., :3]
    a = patch[..., 3:4]
    region = px[r0:r1, c0:c1, :3]
    px[r0:r1, c0:c1, :3] = rgb * a + region * (1 - a)
    img.pixels.foreach_set(px.reshape(-1))
    img.update()
    return int((a[..., 0] > 0).sum())
