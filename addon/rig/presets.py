"""Named expression presets, reset to neutral, and an eye look-at target for an imported avatar.

A preset is the current frame's expression values (the expression shape keys of
``fate_expressions``) and the rotations of the pose joints (every joint bone but the root, which
carries the head's global motion), saved under a name in the head's ``fate_expression_presets``
(:data:`addon.rig.bindings.PROP_PRESETS`; stored in the .blend, works for any head model).
Applying a preset (or the neutral pose) sets those values and, by default, keys them on the
current frame in the artist's layer over the tracking (:mod:`.tracking`): Blender's keying remaps
the value through the layer's blend type, so the face shows the preset on that frame whether the
layer adds to or replaces the tracking.

The look-at target is an Empty ``<name>_look_at`` (a child of the rig object, in FLAME axes) that
the eye bones follow with a Damped Track constraint (their +Z, FLAME's gaze direction, points at
it); lower the constraints' influence to blend back to the tracked gaze. The pose correctives are
driven by the bones' own rotations, so the constraint's extra eye rotation gets none (FLAME's
eye joints have none to speak of).
"""

from __future__ import annotations

import bpy
import numpy as np

from ..errors import AvatarError
from .bindings import PROP_EXPRESSIONS, PROP_PRESETS, PROP_ROLE, ROLE_LOOK_AT

__all__ = ["LOOK_AT_CONSTRAINT", "rig_of", "pose_joints", "eye_joints", "capture_preset", "save_preset",
           "preset_names", "delete_preset", "apply_preset", "reset_to_neutral", "add_look_at_target"]

LOOK_AT_CONSTRAINT = "FATE Look At"
"""Name of the eye bones' Damped Track constraint."""


def rig_of(head: bpy.types.Object) -> bpy.types.Object:
    """The head's armature (its parent).

    Raises:
        AvatarError: the head is not parented to an armature (not an imported avatar).
    """
    rig = head.parent
    if rig is None or rig.type != "ARMATURE":
        raise AvatarError(f"object '{head.name}' has no armature parent: import the avatar with FATE")
    return rig


def _expression_keys(head: bpy.types.Object) -> list[bpy.types.ShapeKey]:
    """The head's expression keys: those ``fate_expressions`` names or, for avatars imported
    before it existed, every key but the Basis and the ``Pose_`` correctives."""
    if head.type != "MESH" or head.data.shape_keys is None:
        raise AvatarError(f"object '{head.name}' has no shape keys: import the avatar with FATE")
    keys = head.data.shape_keys.key_blocks
    if PROP_EXPRESSIONS not in head:
        return [kb for kb in keys[1:] if not kb.name.startswith("Pose_")]
    names = list(head[PROP_EXPRESSIONS])
    missing = [n for n in names if n not in keys]
    if missing:
        raise AvatarError(f"object '{head.name}': expression keys {missing} not found (renamed or "
                          f"deleted? '{PROP_EXPRESSIONS}' lists them)")
    return [keys[n] for n in names]


def pose_joints(rig: bpy.types.Object) -> list[str]:
    """The joint bones a preset stores: every deform bone except the root (``MCH-`` bones skipped)."""
    joints = [b for b in rig.data.bones if not b.name.startswith("MCH-")]
    return [b.name for b in joints if b.parent is not None and b.parent.parent is not None]


def eye_joints(rig: bpy.types.Object) -> list[str]:
    """The joint bones whose name contains "eye" (FLAME: left_eye, right_eye)."""
    return [name for name in pose_joints(rig) if "eye" in name.lower()]


def capture_preset(head: bpy.types.Object) -> dict:
    """The current expression values and pose-joint rotations.

    Returns:
        {"expressions": {key name: value}, "bones": {joint: [w, x, y, z]}}.
    """
    rig = rig_of(head)
    return {"expressions": {kb.name: float(kb.value) for kb in _expression_keys(head)},
            "bones": {j: [float(c) for c in rig.pose.bones[j].rotation_quaternion] for j in pose_joints(rig)}}


def save_preset(head: bpy.types.Object, name: str) -> dict:
    """Saves the current frame's expression and pose as preset ``name`` (replacing one of that name).

    Raises:
        AvatarError: empty name, or not an imported avatar.
    """
    name = name.strip()
    if not name:
        raise AvatarError("a preset needs a name")
    preset = capture_preset(head)
    presets = dict(head[PROP_PRESETS].to_dict()) if PROP_PRESETS in head else {}
    presets[name] = preset
    head[PROP_PRESETS] = presets
    return preset


def preset_names(head: bpy.types.Object | None) -> list[str]:
    """Names of the head's saved presets, sorted."""
    if head is None or PROP_PRESETS not in head:
        return []
    return sorted(head[PROP_PRESETS].keys())


def delete_preset(head: bpy.types.Object, name: str) -> None:
    """Removes preset ``name``.

    Raises:
        AvatarError: no such preset.
    """
    if name not in preset_names(head):
        raise AvatarError(f"object '{head.name}' has no preset '{name}' (has {preset_names(head)})")
    presets = dict(head[PROP_PRESETS].to_dict())
    del presets[name]
    head[PROP_PRESETS] = presets


def _set_and_key(head: bpy.types.Object, expressions: dict, bones: dict, frame: int | None,
                 key: bool) -> None:
    rig = rig_of(head)
    keys = {kb.name: kb for kb in _expression_keys(head)}
    for n, value in expressions.items():
        if n in keys:
            keys[n].value = float(value)
            if key:
                keys[n].keyframe_insert("value", frame=frame)
    for j, q in bones.items():
        pb = rig.pose.bones.get(j)
        if pb is None:
            continue
        pb.rotation_quaternion = [float(c) for c in q]
        if key:
            pb.keyframe_insert("rotation_quaternion", frame=frame, group=j)


def apply_preset(head: bpy.types.Object, name: str, *, frame: int | None = None, key: bool = True) -> None:
    """Sets preset ``name`` (keys absent from the preset are left alone).

    Args:
        head: the head object.
        name: the preset.
        frame: frame to key on (default: the scene's current frame).
        key: key the values in the artist's layer (without a key the tracking sets them back on
            the next frame change).
    Raises:
        AvatarError: no such preset, or not an imported avatar.
    """
    if name not in preset_names(head):
        raise AvatarError(f"object '{head.name}' has no preset '{name}' (has {preset_names(head)})")
    preset = head[PROP_PRESETS][name].to_dict()
    frame = bpy.context.scene.frame_current if frame is None else frame
    _set_and_key(head, preset.get("expressions", {}), preset.get("bones", {}), frame, key)


def reset_to_neutral(head: bpy.types.Object, *, frame: int | None = None, key: bool = True) -> None:
    """Every expression value 0 and every pose joint at rest (identity), keyed like a preset."""
    rig = rig_of(head)
    frame = bpy.context.scene.frame_current if frame is None else frame
    _set_and_key(head, {kb.name: 0.0 for kb in _expression_keys(head)},
                 {j: [1.0, 0.0, 0.0, 0.0] for j in pose_joints(rig)}, frame, key)


def add_look_at_target(head: bpy.types.Object, distance: float = 0.5) -> bpy.types.Object:
    """Adds (or returns the existing) look-at Empty and the eye bones' Damped Track constraints.

    Args:
        head: the head object.
        distance: how far in front of the eyes the Empty starts, m (along FLAME +Z).
    Returns:
        the Empty ``<rig name minus _rig>_look_at``, a child of the rig object.
    Raises:
        AvatarError: the rig has no eye joints.
    """
    rig = rig_of(head)
    eyes = eye_joints(rig)
    if not eyes:
        raise AvatarError(f"armature '{rig.name}' has no eye joints (bones named '*eye*')")
    base = rig.name[:-4] if rig.name.endswith("_rig") else rig.name
    existing = next((c for c in rig.children if c.type == "EMPTY" and c.get(PROP_ROLE) == ROLE_LOOK_AT), None)
    target = existing or bpy.data.objects.new(f"{base}_look_at", None)
    if existing is None:
        for coll in rig.users_collection:
            coll.objects.link(target)
        target.parent = rig
        target.empty_display_type = "SPHERE"
        target.empty_display_size = 0.01
        centre = np.mean([np.array(rig.data.bones[e].head_local) for e in eyes], axis=0)
        target.location = tuple(centre + np.array([0.0, 0.0, distance]))
        target[PROP_ROLE] = ROLE_LOOK_AT
    for e in eyes:
        pb = rig.pose.bones[e]
        con = pb.constraints.get(LOOK_AT_CONSTRAINT) or pb.constraints.new("DAMPED_TRACK")
        con.name = LOOK_AT_CONSTRAINT
        con.target = target
        con.track_axis = "TRACK_Z"
    return target
