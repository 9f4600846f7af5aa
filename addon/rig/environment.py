"""A relightable avatar's learnt environment as a Blender World (the video's light).

The engine writes the environment as a lat-long radiance EXR in its room frame — camera right,
forward, up (``engine/model/environment.py``) — in Blender's equirectangular mapping. The World
looks it up with the world direction turned into that frame by the still camera's rotation:
Texture Coordinate (Generated) → Mapping (Vector, rotation ``R_roomᵀ``, ``R_room`` = the
camera's right / forward / up axes as columns) → Environment Texture (Linear, equirectangular)
→ Background (strength 1) → World Output. From the still camera the avatar then looks as in the
video; the World is not made the scene's (the artist switches to it), and has a fake user.
"""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

__all__ = ["WORLD_MARKER", "room_rotation", "build_environment_world"]

WORLD_MARKER = "fate_environment"
"""World property: the avatar the learnt environment belongs to."""


def room_rotation(camera: bpy.types.Object | None) -> Matrix:
    """``R_room``: the camera's right, forward and up axes as columns, Blender world (the identity
    without a camera). 3×3"""
    if camera is None:
        return Matrix.Identity(3)
    M = camera.matrix_world.to_3x3().normalized()
    return Matrix((M.col[0], -M.col[2], M.col[1])).transposed()


def build_environment_world(name: str, exr: Path, camera: bpy.types.Object | None) -> bpy.types.World:
    """Creates the World ``<name>_environment`` (module doc).

    Args:
        name: the avatar's name.
        exr: the environment map (``maps/environment.exr`` or ``blender/environment.exr``).
        camera: the still camera whose room frame the map is in (None: the world frame).
    Returns:
        the World (fake user, property ``fate_environment`` = ``name``).
    """
    img = bpy.data.images.load(str(Path(exr).resolve()), check_existing=False)
    img.name = f"{name}_environment"
    try:
        img.colorspace_settings.name = "Linear Rec.709"
    except TypeError:  # an OCIO config without it
        img.colorspace_settings.name = "Non-Color"
    world = bpy.data.worlds.new(f"{name}_environment")
    if world.node_tree is None:  # Blender < 5.0
        world.use_nodes = True
    tree = world.node_tree
    nodes, links = tree.nodes, tree.links
    nodes.clear()
    coords = nodes.new("ShaderNodeTexCoord")
    mapping = nodes.new("ShaderNodeMapping")
    mapping.vector_type = "VECTOR"
    R = room_rotation(camera)
    mapping.inputs["Rotation"].default_value = R.transposed().to_euler("XYZ")
    env = nodes.new("ShaderNodeTexEnvironment")
    env.image = img
    env.interpolation = "Linear"
    env.projection = "EQUIRECTANGULAR"
    bg = nodes.new("ShaderNodeBackground")
    bg.inputs["Strength"].default_value = 1.0
    out = nodes.new("ShaderNodeOutputWorld")
    links.new(coords.outputs["Generated"], mapping.inputs["Vector"])
    links.new(mapping.outputs["Vector"], env.inputs["Vector"])
    links.new(env.outputs["Color"], bg.inputs["Color"])
    links.new(bg.outputs["Background"], out.inputs["Surface"])
    for i, node in enumerate((coords, mapping, env, bg, out)):
        node.location = (-900 + 250 * i, 0)
    mean = np.asarray(_mean_radiance(img), np.float32)
    world.color = tuple(float(x) for x in mean)  # what Workbench / the sidebar show
    world.use_fake_user = True
    world[WORLD_MARKER] = name
    return world


def _mean_radiance(img: bpy.types.Image) -> np.ndarray:
    """Mean RGB of a (small) float image, for the World's viewport colour."""
    w, h = img.size
    if w == 0 or h == 0:
        return np.zeros(3)
    px = np.empty(w * h * img.channels, np.float32)
    img.pixels.foreach_get(px)
    return px.reshape(-1, img.channels)[:, :3].mean(0)
