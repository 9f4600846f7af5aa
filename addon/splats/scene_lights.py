"""The scene's lights and world as :class:`.shading.Lighting`, and the lit splats of a frame.

Read from an evaluated depsgraph (so its visibility rules apply: a light hidden in the viewport
does not light the viewport, one hidden from renders does not light F12):

- every light instance: type, colour × energy, world position and axis (its −Z), radius (sun:
  half its angle; point / spot: ``shadow_soft_size``; area: half its larger side), spot cone
  and blend;
- the world: the Background node feeding the active World Output — its colour, or an
  Environment Texture (equirectangular; optionally through a Mapping node from the Texture
  Coordinate's Generated output) — times its strength; anything else falls back to the
  Background's colour (logged once). HDRIs are box-filtered to at most 64 × 128 texels and
  resampled into the 16 × 32 world-frame map of :class:`.shading.Environment` (cached per image
  until the image changes: :func:`forget_images`).
"""

from __future__ import annotations

import logging
import math

import bpy
import numpy as np

from .cameras import DrawCamera
from .colour import srgb_to_linear
from .geometry import SplatGaussians
from .pixels import image_pixels
from .shading import ENV_HEIGHT, Environment, Lamp, Lighting, latlong_directions, sample_latlong, shade

log = logging.getLogger(__name__)

__all__ = ["scene_lighting", "world_environment", "lamps_of", "view_directions", "shade_gaussians",
           "forget_images"]

HDRI_MAX_HEIGHT = 64
"""HDRIs are box-filtered to at most this many rows before resampling (the map has 16)."""

_IMAGE_CACHE: dict[tuple, np.ndarray] = {}
_WARNED: set[str] = set()


def forget_images() -> None:
    """Drops the cached, filtered HDRIs (an image changed)."""
    _IMAGE_CACHE.clear()


def _warn_once(msg: str) -> None:
    if msg not in _WARNED:
        _WARNED.add(msg)
        log.warning("FATE Splats lighting: %s", msg)


# ---------------------------------------------------------------------- lamps
def lamps_of(depsgraph: bpy.types.Depsgraph) -> list[Lamp]:
    """Every visible light of the depsgraph as a :class:`.shading.Lamp` (module doc)."""
    lamps = []
    for inst in depsgraph.object_instances:
        obj = inst.object
        if obj.type != "LIGHT":
            continue
        data = obj.data
        M = np.array(inst.matrix_world, dtype=np.float64)
        axis = -M[:3, 2]
        axis /= max(np.linalg.norm(axis), 1e-12)
        color = np.array(data.color[:3], np.float32) * np.float32(data.energy)
        kind = data.type
        if kind == "SUN":
            lamps.append(Lamp("SUN", color, axis=axis.astype(np.float32), radius=0.5 * float(data.angle)))
            continue
        lamp = Lamp(kind, color, position=M[:3, 3].astype(np.float32), axis=axis.astype(np.float32))
        if kind == "AREA":
            sy = data.size_y if data.shape in ("RECTANGLE", "ELLIPSE") else data.size
            lamp.radius = 0.5 * float(max(data.size, sy))
        else:
            lamp.radius = float(data.shadow_soft_size)
        if kind == "SPOT":
            half = 0.5 * float(data.spot_size)
            lamp.spot_cos = math.cos(half)
            lamp.spot_smooth = (1.0 - lamp.spot_cos) * float(data.spot_blend)
        lamps.append(lamp)
    return lamps


# ---------------------------------------------------------------------- world
def _linked_node(socket, node_type: str):
    links = socket.links
    if links and links[0].from_node.type == node_type:
        return links[0].from_node
    return None


def _background_node(world: bpy.types.World):
    tree = world.node_tree
    if tree is None:
        return None
    outs = [n for n in tree.nodes if n.type == "OUTPUT_WORLD"]
    out = next((n for n in outs if getattr(n, "is_active_output", False)), outs[0] if outs else None)
    if out is None:
        return None
    return _linked_node(out.inputs["Surface"], "BACKGROUND")


def _filtered_hdri(img: bpy.types.Image) -> np.ndarray:
    """The image as linear RGB, top row first, box-filtered to ≤ :data:`HDRI_MAX_HEIGHT` rows
    (cached). [h, w, 3]"""
    key = (img.name, tuple(img.size), img.filepath, img.colorspace_settings.name, bool(img.is_dirty))
    hit = _IMAGE_CACHE.get(key)
    if hit is not None:
        return hit
    px = image_pixels(img)[::-1, :, :3]  # top row first
    if not img.is_float and not getattr(img.colorspace_settings, "is_data", False) \
            and img.colorspace_settings.name not in ("Non-Color", "Raw"):
        px = srgb_to_linear(px)  # a byte image holds encoded values
    h, w = px.shape[:2]
    f = max(1, int(math.ceil(h / HDRI_MAX_HEIGHT)))
    if f > 1:
        h2, w2 = h // f, w // f
        px = px[:h2 * f, :w2 * f].reshape(h2, f, w2, f, 3).mean((1, 3))
    out = np.ascontiguousarray(px, np.float32)
    _IMAGE_CACHE.clear()  # one HDRI at a time is plenty
    _IMAGE_CACHE[key] = out
    return out


def _mapping_rotation(env_node) -> tuple[np.ndarray, bool]:
    """(3×3 matrix, inverse?) of a Mapping node feeding the Environment Texture's Vector (the
    identity without one): the texture is looked up at ``R·S·d`` (VECTOR / POINT) or
    ``(R·S)⁻¹·d`` (TEXTURE)."""
    from mathutils import Euler

    mp = _linked_node(env_node.inputs["Vector"], "MAPPING")
    if mp is None:
        return np.eye(3), False
    rot = np.array(Euler(tuple(mp.inputs["Rotation"].default_value), "XYZ").to_matrix(), dtype=np.float64)
    scale = np.diag(np.array(mp.inputs["Scale"].default_value[:3], dtype=np.float64)) \
        if "Scale" in mp.inputs else np.eye(3)
    return rot @ scale, mp.vector_type == "TEXTURE"


def world_environment(world: bpy.types.World | None) -> Environment:
    """The world as an :class:`.shading.Environment` (module doc); black without a world."""
    if world is None:
        return Environment.uniform((0.0, 0.0, 0.0))
    bg = _background_node(world)
    if bg is None:
        return Environment.uniform(world.color[:3])
    strength = float(bg.inputs["Strength"].default_value)
    col_in = bg.inputs["Color"]
    env_node = _linked_node(col_in, "TEX_ENVIRONMENT")
    if env_node is None:
        if col_in.links:
            _warn_once(f"world '{world.name}': only a colour or an Environment Texture lights the splats; "
                       "using the Background colour")
        return Environment.uniform(np.array(col_in.default_value[:3]) * strength)
    img = env_node.image
    if img is None or img.size[0] == 0 or env_node.projection != "EQUIRECTANGULAR":
        _warn_once(f"world '{world.name}': the Environment Texture has no equirectangular image; using black")
        return Environment.uniform((0.0, 0.0, 0.0))
    hdri = _filtered_hdri(img)
    M, inverse = _mapping_rotation(env_node)
    d = latlong_directions(ENV_HEIGHT)[0].reshape(-1, 3)
    look = d @ (np.linalg.inv(M) if inverse else M).T
    look /= np.maximum(np.linalg.norm(look, axis=-1, keepdims=True), 1e-12)
    radiance = sample_latlong(hdri, look).reshape(ENV_HEIGHT, 2 * ENV_HEIGHT, 3) * strength
    return Environment.from_radiance(radiance)


def scene_lighting(depsgraph: bpy.types.Depsgraph) -> Lighting:
    """The world and the lamps that light a depsgraph's splats."""
    return Lighting(world_environment(depsgraph.scene.world), lamps_of(depsgraph))


# ---------------------------------------------------------------------- shading
def view_directions(cam: DrawCamera, positions: np.ndarray) -> np.ndarray:
    """Unit directions from the splats towards the camera (orthographic: the reversed view axis),
    world. [N, 3]"""
    V = np.asarray(cam.viewmat, np.float64)
    R, t = V[:3, :3], V[:3, 3]
    if cam.ortho:
        return np.broadcast_to((-R[2]).astype(np.float32), positions.shape).copy()
    d = (-(R.T @ t)).astype(np.float32) - positions
    return d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-12)


def shade_gaussians(g: SplatGaussians, lighting: Lighting, cam: DrawCamera) -> SplatGaussians:
    """``g`` with its relightable splats' colours replaced by their shading for ``cam``
    (:func:`.shading.shade`); ``g`` itself when nothing is relightable."""
    m = g.material
    if m is None or not m.lit.any():
        return g
    lit = m.lit
    colors = g.colors.copy()
    colors[lit] = shade(g.colors[lit], m.roughness[lit], m.f0[lit], m.normals[lit], g.means[lit],
                        view_directions(cam, g.means[lit]), lighting)
    return SplatGaussians(g.means, g.covars, colors, g.opacities, m)
