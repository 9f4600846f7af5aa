"""The main job's light rigs: the training light and the held-out lights of the relighting test.

Every rig is written down in the **room frame** of the scene camera — ``x`` = camera right,
``y`` = camera forward, ``z`` = camera up (the frame the engine's learnt environment lives in,
``engine/model/environment.py``) — and placed in the Blender world around the head by
:func:`apply_lighting`. The demo renders with the still camera and the head turning on its rig,
and the lights are children of that camera, so they stay fixed in the world while the head
turns, as in a real room: the shading moves over the face from frame to frame, which is what
lets a relightable avatar tell its albedo from its shading.

Units are Blender's (measured in Cycles, see ``addon/splats/shading.py``): a sun of strength S
gives a white diffuse surface facing it the radiance S/π; a point light of P watts at d meters
P/(4π²d²); an area light facing the surface P/(π²d²); a uniform world of colour c, c.

- ``train``: the video's light — a soft white sun from the camera's left, above and in front
  (the subject's right) and a uniform grey world;
- ``key_mirrored`` (held out): the same sun from the other side;
- ``warm_cool`` (held out): a warm area key from the camera's right and a cool point fill from
  its left over a dim world.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import bpy
import numpy as np
from mathutils import Matrix, Vector

__all__ = ["LightSpec", "Lighting", "LIGHTINGS", "HELD_OUT", "room_basis", "apply_lighting", "clear_lighting"]

LIGHT_PREFIX = "FATE demo light"
"""Name prefix of the light objects a rig adds (:func:`clear_lighting` removes them)."""


@dataclass(frozen=True)
class LightSpec:
    """One light of a rig.

    Attributes:
        kind: Blender light type: "SUN", "POINT", "SPOT" or "AREA".
        towards: direction from the head to the light, room frame (normalised on use).
        energy: sun strength (W/m²) or power (W).
        color: linear RGB.
        distance: point / spot / area lights: meters from the head centre.
        size: sun: angular diameter (deg); point / spot: radius (m); area: square side (m).
    """

    kind: str
    towards: tuple[float, float, float]
    energy: float
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    distance: float = 0.0
    size: float = 0.0


@dataclass(frozen=True)
class Lighting:
    """A light rig: a uniform world colour (linear, strength 1) and its lights."""

    name: str
    world: tuple[float, float, float]
    lights: tuple[LightSpec, ...] = field(default_factory=tuple)


LIGHTINGS: dict[str, Lighting] = {
    "train": Lighting("train", (0.6, 0.6, 0.6), (
        LightSpec("SUN", (-0.45, -0.7, 0.55), 1.5, size=40.0),)),
    "key_mirrored": Lighting("key_mirrored", (0.6, 0.6, 0.6), (
        LightSpec("SUN", (0.45, -0.7, 0.55), 1.5, size=40.0),)),
    "warm_cool": Lighting("warm_cool", (0.12, 0.12, 0.14), (
        LightSpec("AREA", (0.6, -0.6, 0.5), 7.5, (1.0, 0.72, 0.45), distance=0.8, size=0.2),
        LightSpec("POINT", (-0.7, -0.5, 0.1), 16.0, (0.45, 0.6, 1.0), distance=0.9, size=0.05))),
}
"""The rigs by name (module doc)."""
HELD_OUT = ("key_mirrored", "warm_cool")
"""The lights the avatar never saw (the relighting test)."""


def room_basis(camera: bpy.types.Object) -> Matrix:
    """Columns: the room frame's axes (camera right, forward, up) in the Blender world. 3×3"""
    M = camera.matrix_world.to_3x3().normalized()
    right, up, back = M.col[0], M.col[1], M.col[2]
    return Matrix((right, -back, up)).transposed()


def clear_lighting(scene: bpy.types.Scene) -> None:
    """Removes the lights a rig added (objects named :data:`LIGHT_PREFIX` …)."""
    for obj in list(scene.objects):
        if obj.type == "LIGHT" and obj.name.startswith(LIGHT_PREFIX):
            data = obj.data
            bpy.data.objects.remove(obj, do_unlink=True)
            if data.users == 0:
                bpy.data.lights.remove(data)


def _world(scene: bpy.types.Scene, rgb: tuple[float, float, float]) -> None:
    world = scene.world or bpy.data.worlds.new("FATE demo world")
    scene.world = world
    world.color = rgb
    if world.node_tree is None:
        world.use_nodes = True
    tree = world.node_tree
    bg = next((n for n in tree.nodes if n.type == "BACKGROUND"), None)
    if bg is None:
        bg = tree.nodes.new("ShaderNodeBackground")
        out = next((n for n in tree.nodes if n.type == "OUTPUT_WORLD"), None) or tree.nodes.new("ShaderNodeOutputWorld")
        tree.links.new(bg.outputs["Background"], out.inputs["Surface"])
    for link in list(bg.inputs["Color"].links):
        tree.links.remove(link)
    bg.inputs["Color"].default_value = (*rgb, 1.0)
    bg.inputs["Strength"].default_value = 1.0


def apply_lighting(scene: bpy.types.Scene, lighting: Lighting, camera: bpy.types.Object,
                   centre: Vector) -> list[bpy.types.Object]:
    """Replaces the rig's lights in ``scene`` by ``lighting`` (and sets the world colour).

    Args:
        scene: the scene.
        lighting: the rig (:data:`LIGHTINGS`).
        camera: the camera whose room frame the rig is written in (the still camera).
        centre: the head centre, Blender world, m (where the lights point).
    Returns:
        the new light objects, children of ``camera`` (placed for the current frame): fixed in the
        world with a still camera, moving with a tracked one so that each view is lit as the
        same room would light that head turn.
    """
    clear_lighting(scene)
    _world(scene, lighting.world)
    basis = room_basis(camera)
    made = []
    for k, spec in enumerate(lighting.lights):
        d = np.asarray(spec.towards, np.float64)
        towards = basis @ Vector((d / np.linalg.norm(d)).tolist())
        data = bpy.data.lights.new(f"{LIGHT_PREFIX} {lighting.name} {k}", spec.kind)
        data.energy = float(spec.energy)
        data.color = spec.color
        if spec.kind == "SUN":
            data.angle = math.radians(spec.size)
        elif spec.kind == "AREA":
            data.shape = "SQUARE"
            data.size = float(spec.size)
        else:
            data.shadow_soft_size = float(spec.size)
        obj = bpy.data.objects.new(data.name, data)
        scene.collection.objects.link(obj)
        obj.rotation_mode = "QUATERNION"
        obj.rotation_quaternion = (-towards).to_track_quat("-Z", "Y")  # lights shine along their −Z
        obj.location = centre + towards * float(spec.distance) if spec.kind != "SUN" else centre
        bpy.context.view_layer.update()
        obj.parent = camera
        obj.matrix_parent_inverse = camera.matrix_world.inverted()
        made.append(obj)
    return made
