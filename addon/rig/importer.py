"""Builds a rigged, animated, paintable Blender head from an avatar folder (the "Import Avatar" step).

Pure functions taking explicit arguments; :class:`operators.avatar.FATE_OT_import_avatar` is a
thin wrapper. The files are parsed by :mod:`addon.files.avatar`; the parts are built by
:mod:`.armature`, :mod:`.mesh`, :mod:`.drivers`, :mod:`.tracking`, :mod:`.material` and
:mod:`.bindings`; the rig maths (why the result equals FLAME's LBS to float precision) is in
:mod:`addon.rig.flame_math`.

What :func:`import_avatar` creates, in a new collection ``<name>``:

- ``<name>_rig`` (armature object, rotation R_x(+90°) so FLAME's +Y-up head stands up in
  Blender's +Z-up world; armature data in FLAME coordinates): per joint a deform bone
  ``<joint>`` (rest head at J0 = J_regressor · v_template, identity rest rotation, quaternion
  rotation mode) and a hidden mechanism bone ``MCH-<joint>`` between it and its parent whose
  driven location compensates for the joints moving with the expression.
- ``<name>`` (mesh, child of the rig with an identity local transform, so its vertex data are
  FLAME coordinates): faces = mesh + mouth faces (face attribute ``fate_mouth``), UVs
  ``UVMap``, shape keys ``Basis`` (v_template), ``Exp000``… (exprdirs incl. the learnt ΔE),
  ``Pose_<joint>_<r><c>`` (posedirs incl. ΔP, driven by the bone rotations), one vertex group
  per joint (LBS weights) and an Armature modifier (linear blend, no preserve volume).
- custom properties on the rig: ``fate_dJ_<joint>_<x|y|z>`` = ΔJ (m), driven by the Exp values.
- tracked sequence as keyframes on frames 1..T in the NLA track "FATE Tracking" (expression
  values, joint quaternions, root rotation and location) and ``<name>_camera`` (child of the
  rig): by default a still camera with the head's motion on the root bone, or the tracked
  cameras replayed (:mod:`.tracking`).
- maps as images ``<name>_<map>`` (one set per import) and a material ``<name>_maps`` whose base
  colour is the colour map (the active paint slot), and ``<name>_bindings`` (see
  :mod:`addon.rig.bindings`; with the trained Gaussians' attributes when the folder has them).
- a relightable (``pbr``) avatar: the albedo map in the colour map's place (the paint target),
  roughness and F0 maps, the head marked ``fate_appearance = "pbr"`` and its learnt environment
  as the World ``<name>_environment`` (:mod:`.environment`; not made the scene's world).

The scene is changed only as asked (resolution, frame range, active camera), and a folder whose
map images in this file hold unsynced paint is not imported again (the paint would be lost).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np

from ..errors import AvatarError, MapsError
from ..files.avatar import AvatarData, MapEntry, read_avatar
from . import flame_math
from .armature import add_skinning, build_rig
from .bindings import (PROP_APPEARANCE, PROP_AVATAR_DIR, PROP_ENVIRONMENT, PROP_EXPRESSIONS, PROP_HEAD_MODEL,
                       PROP_MAP_PREFIX, PROP_PERCEPTUAL, create_bindings_object)
from .drivers import add_corrective_drivers, add_joint_offset_drivers
from .material import build_material, load_map_image
from .mesh import SLIDER_LIMIT, add_shape_keys, build_head_mesh
from .tracking import CAMERA_MODES, animate_tracking, apply_scene_settings, build_camera

log = logging.getLogger(__name__)

__all__ = ["ImportResult", "import_avatar"]


@dataclass
class ImportResult:
    """What :func:`import_avatar` created."""

    head: bpy.types.Object
    rig: bpy.types.Object
    collection: bpy.types.Collection
    camera: bpy.types.Object | None = None
    bindings: bpy.types.Object | None = None
    material: bpy.types.Material | None = None
    images: dict[str, bpy.types.Image] = field(default_factory=dict)
    num_frames: int = 0
    warnings: list[str] = field(default_factory=list)
    scene_changes: list[str] = field(default_factory=list)
    """The scene settings the import changed ("resolution", "frame range", "active camera")."""


def unsynced_map_images(entries: list[MapEntry]) -> list[bpy.types.Image]:
    """Images of this file that show one of these map files and hold unsaved (unsynced) paint."""
    paths = {str(Path(e.path).resolve()) for e in entries}
    return [img for img in bpy.data.images
            if img.is_dirty and img.filepath and str(Path(bpy.path.abspath(img.filepath)).resolve()) in paths]


def _unique_name(base: str) -> str:
    """``base``, or ``base.001``… when an avatar of that name is already in the file."""
    def taken(n: str) -> bool:
        return n in bpy.data.collections or n in bpy.data.objects or f"{n}_rig" in bpy.data.objects

    if not taken(base):
        return base
    i = 1
    while taken(f"{base}.{i:03d}"):
        i += 1
    return f"{base}.{i:03d}"


def _import_relightable(obj: bpy.types.Object, name: str, data: AvatarData, camera, context) -> None:
    """Marks a relightable avatar's head (``fate_appearance = "pbr"``: FATE Splats lights it) and
    brings its learnt environment in as a World (:mod:`.environment`), linked from the head."""
    from .environment import build_environment_world

    obj[PROP_APPEARANCE] = "pbr"
    if data.environment is not None:
        context.view_layer.update()  # the camera's world matrix
        obj[PROP_ENVIRONMENT] = build_environment_world(name, data.environment, camera)


def import_avatar(folder: str | Path, scene: bpy.types.Scene, context=None, *, name: str | None = None,
                  with_tracking: bool = True, with_maps: bool = True, expression_range: float = 3.0,
                  camera: str = "STILL", set_resolution: bool = True, set_frame_range: bool = True,
                  set_active_camera: bool = True) -> ImportResult:
    """Imports an avatar folder into ``scene`` (see the module doc for what is created).

    Args:
        folder: avatar folder (blender/head.npz required; tracking.npz, blender/bindings.npz and
            maps/ are imported when present, otherwise skipped with a warning).
        scene: scene to add the new collection to (must be ``context.scene``).
        context: ``bpy.context`` (default: the global one).
        name: avatar name (default: the folder name; ``.001``… appended when taken).
        with_tracking: import the tracked sequence and camera.
        with_maps: import the baked maps and material.
        expression_range: minimum ± slider range of the expression keys (widened to fit the
            tracked values, up to Blender's limit of 10).
        camera: "STILL" (the head carries the tracked motion, the camera stays) or "TRACKED"
            (the camera replays the tracked views), see :mod:`.tracking`.
        set_resolution: set the scene's output size and pixel aspect to the tracked frames'.
        set_frame_range: set the scene's frame range to 1..T.
        set_active_camera: make the imported camera the scene camera.
    Returns:
        an :class:`ImportResult` (warnings say what was skipped).
    Raises:
        AvatarError: the folder or blender/head.npz is missing or malformed, or ``camera`` is
            not one of :data:`.tracking.CAMERA_MODES`.
        MapsError: images of this folder's maps hold unsynced paint (nothing is imported).
    """
    context = context or bpy.context
    if camera not in CAMERA_MODES:
        raise AvatarError(f"camera must be one of {list(CAMERA_MODES)}, found {camera!r}")
    data: AvatarData = read_avatar(Path(folder), with_tracking=with_tracking, with_maps=with_maps)
    dirty = unsynced_map_images(data.maps)
    if dirty:
        raise MapsError(f"{', '.join(img.name for img in dirty)} of {data.folder} hold(s) unsynced "
                        "paint: run Sync Maps (or revert the image) before importing this avatar "
                        "again; nothing was imported")
    head = data.head
    name = _unique_name(name or data.folder.resolve().name)
    warnings = list(data.warnings)

    collection = bpy.data.collections.new(name)
    scene.collection.children.link(collection)
    rig = build_rig(name, head, collection, context)
    obj = build_head_mesh(name, head, collection, rig)
    if data.tracking is not None:
        peak = float(np.abs(data.tracking.expr).max(initial=0.0))
        if peak > SLIDER_LIMIT:
            warnings.append(f"tracked expression values reach {peak:.2f}; Blender's shape key "
                            f"sliders stop at ±{SLIDER_LIMIT:g}")
        expression_range = max(expression_range, math.ceil(peak))
    add_shape_keys(obj, head, expression_range)
    add_skinning(obj, rig, head)
    add_corrective_drivers(obj, rig, head)
    add_joint_offset_drivers(obj, rig, head)
    result = ImportResult(head=obj, rig=rig, collection=collection, warnings=warnings)

    if data.tracking is not None:
        still = flame_math.still_camera_frame(data.tracking.viewmat) if camera == "STILL" else None
        animate_tracking(obj, rig, head, data.tracking, warnings, still_frame=still)
        result.camera = build_camera(name, data.tracking, rig, collection, scene, still_frame=still)
        result.num_frames = data.tracking.num_frames
        result.scene_changes = apply_scene_settings(
            scene, data.tracking, result.camera, resolution=set_resolution, frame_range=set_frame_range,
            active_camera=set_active_camera)

    for entry in data.maps:
        img = load_map_image(entry, f"{name}_{entry.name}")
        result.images[entry.name] = img
        obj[PROP_MAP_PREFIX + entry.name] = img
    if result.images:
        if "color" not in result.images and "albedo" not in result.images:
            warnings.append("maps.json lists no 'color' map: the material has no base colour")
        result.material = build_material(name, result.images)
        obj.data.materials.append(result.material)

    if data.bindings is not None:
        result.bindings = create_bindings_object(name, data.bindings, obj, head.v_template, head.faces,
                                                 collection, trained=data.gaussians)
    for o in (obj, rig):
        o[PROP_AVATAR_DIR] = str(data.folder.resolve())
    if data.appearance == "pbr":
        _import_relightable(obj, name, data, result.camera, context)
    obj[PROP_HEAD_MODEL] = head.name
    obj[PROP_PERCEPTUAL] = data.perceptual
    obj[PROP_EXPRESSIONS] = list(head.expression_names)
    if data.tracking is not None:
        scene.frame_set(scene.frame_start if set_frame_range else scene.frame_current)
    for w in warnings:
        log.warning("import %s: %s", name, w)
    return result
