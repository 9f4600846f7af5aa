"""Map images → numpy, and bilinear sampling at the Gaussians' UVs.

Texel (row r from the bottom, column c) is centred at uv ``((c + 0.5) / W, (r + 0.5) / H)``;
lookups are bilinear with clamp to edge, and Blender's ``Image.pixels`` is bottom row first, so
no flip is needed between UV space and the pixel array.

Colour map: the values that matter are the *encoded* (sRGB) values the engine trained on.
A byte image's ``Image.pixels`` already gives them (Blender stores byte buffers encoded and
``pixels`` returns byte / 255 without colour management). A float image's buffer is scene
linear when its colour space is not a data / linear space (Blender converts e.g. an ``sRGB``
EXR to linear on load, and painting writes linear values): those pixels are re-encoded with
the sRGB transfer function. A float colour image tagged ``Non-Color`` (or a linear space) is
read as stored. Scalar maps (opacity, offset) are read from the red channel.
"""

from __future__ import annotations

from typing import Mapping

import bpy
import numpy as np

from ..errors import SplatError
from .colour import linear_to_srgb
from .geometry import MapSamples

__all__ = ["MAP_NAMES", "PBR_MAP_NAMES", "ENCODED_MAPS", "MAP_CHANNELS", "sample_bilinear", "is_linear_buffer",
           "image_pixels", "sample_maps", "required_maps"]

MAP_NAMES = ("color", "opacity", "scale", "rotation", "offset")
"""The attribute maps every head object needs (the fields of :class:`.geometry.MapSamples`)."""
PBR_MAP_NAMES = ("albedo", "opacity", "scale", "rotation", "offset", "roughness", "f0")
"""A relightable avatar's maps: ``albedo`` in the colour's place (same units, encoded sRGB),
plus ``roughness`` and ``f0`` (engine.maps.PBR_MAP_SPECS)."""
ENCODED_MAPS = ("color", "albedo")
"""Maps holding encoded (sRGB) colour (the rest are data)."""
MAP_CHANNELS = {"color": 3, "albedo": 3, "opacity": 1, "scale": 3, "rotation": 3, "offset": 1, "roughness": 1,
                "f0": 1}
"""Channels read from each map's image (scalar maps use the red channel)."""


def required_maps(pbr: bool) -> tuple[str, ...]:
    """The maps a head needs: :data:`MAP_NAMES`, or :data:`PBR_MAP_NAMES` for a relightable one."""
    return PBR_MAP_NAMES if pbr else MAP_NAMES


def sample_bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear, clamp-to-edge lookup of a bottom-row-first image at UV coordinates.

    Texel (row r from the bottom, column c) is centred at uv ((c + 0.5) / W, (r + 0.5) / H),
    so a UV at a texel centre returns that texel exactly.

    Args:
        image: [H, W, C] with row 0 = bottom (Blender ``Image.pixels`` order).
        uv: OBJ convention (origin bottom-left, v up). [N, 2]
    Returns:
        [N, C] float32
    """
    H, W = image.shape[:2]
    uv = np.asarray(uv, dtype=np.float64)
    x = uv[:, 0] * W - 0.5
    y = uv[:, 1] * H - 0.5
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = (x - x0)[:, None]
    fy = (y - y0)[:, None]
    x0i = x0.astype(np.int64)
    y0i = y0.astype(np.int64)
    c0 = np.clip(x0i, 0, W - 1)
    c1 = np.clip(x0i + 1, 0, W - 1)
    r0 = np.clip(y0i, 0, H - 1)
    r1 = np.clip(y0i + 1, 0, H - 1)
    img = image.astype(np.float64, copy=False)
    top = img[r0, c0] * (1.0 - fx) + img[r0, c1] * fx
    bot = img[r1, c0] * (1.0 - fx) + img[r1, c1] * fx
    return (top * (1.0 - fy) + bot * fy).astype(np.float32)


def is_linear_buffer(image: bpy.types.Image) -> bool:
    """Whether ``image.pixels`` holds scene-linear values of a colour-managed (encoded) image.

    True for float images in a display colour space such as sRGB (Blender decoded them on load;
    painting writes linear values); False for byte images (``pixels`` are the stored, encoded
    values) and for data or linear colour spaces (values as stored).
    """
    if not image.is_float:
        return False
    cs = image.colorspace_settings
    if getattr(cs, "is_data", False):
        return False
    name = cs.name
    linear_or_data = name in ("Non-Color", "Raw", "Working Space") or name.startswith("Linear")
    return not linear_or_data


def image_pixels(image: bpy.types.Image, encoded: bool = False) -> np.ndarray:
    """All pixels of a Blender image as an array, bottom row first.

    Args:
        image: the image (byte or float buffer).
        encoded: the image holds colour: return sRGB-encoded values (see the module docstring:
            float buffers of colour-managed images are linear and get re-encoded; alpha is
            left as is).
    Returns:
        [H, W, 4] float32, row 0 = bottom.
    Raises:
        SplatError: the image has no pixel data (missing file, zero size).
    """
    w, h = int(image.size[0]), int(image.size[1])
    ch = int(image.channels)
    if w <= 0 or h <= 0 or ch <= 0:
        raise SplatError(f"image '{image.name}' ({image.filepath or 'generated'}) has no pixels "
                         f"(size {w}x{h}, {ch} channels): is its file missing?")
    buf = np.empty(w * h * ch, dtype=np.float32)
    image.pixels.foreach_get(buf)
    px = buf.reshape(h, w, ch)
    if ch < 4:
        out = np.ones((h, w, 4), np.float32)
        if ch == 1:
            out[..., :3] = px[..., :1]
        else:
            out[..., :ch] = px
        px = out
    if encoded and is_linear_buffer(image):
        px = px.copy()
        px[..., :3] = linear_to_srgb(px[..., :3])
    return px


def sample_maps(images: Mapping[str, bpy.types.Image], uv: np.ndarray) -> MapSamples:
    """Reads the current pixels of the map images and samples them at each Gaussian's UV.

    Args:
        images: map name → image, for all of :data:`MAP_NAMES` (or :data:`PBR_MAP_NAMES`: the
            samples' ``color`` is then the albedo, and they carry roughness and F0).
        uv: Gaussian UVs, OBJ convention. [N, 2]
    Returns:
        MapSamples with N entries.
    """
    names = PBR_MAP_NAMES if "albedo" in images else MAP_NAMES
    vals = {}
    for m in names:
        px = image_pixels(images[m], encoded=(m in ENCODED_MAPS))
        s = sample_bilinear(px[..., :MAP_CHANNELS[m]], uv)
        vals["color" if m == "albedo" else m] = s[:, 0] if MAP_CHANNELS[m] == 1 else s
    return MapSamples(**vals)
