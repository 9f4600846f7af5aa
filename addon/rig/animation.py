"""Keyframes and drivers through bpy, portable across Blender 4.2–5.x.

Blender 4.4 introduced slotted actions and 5.0 removed ``Action.fcurves``; :func:`ensure_fcurve`
uses ``Action.fcurve_ensure_for_datablock`` where it exists and the legacy API otherwise.
Keyframes are written in bulk with ``foreach_set`` (one call per curve, not per key).
"""

from __future__ import annotations

from collections.abc import Sequence

import bpy
import numpy as np

__all__ = ["ensure_fcurve", "set_keyframes", "key_channels", "push_to_nla", "nla_strip", "add_driver",
           "DriverVar"]

# FCurve keyframe interpolation enum values (bpy: CONSTANT=0, LINEAR=1, BEZIER=2).
_INTERPOLATION = {"CONSTANT": 0, "LINEAR": 1, "BEZIER": 2}


def ensure_fcurve(id_data: bpy.types.ID, data_path: str, index: int = 0, *, group: str = "",
                  action_name: str | None = None) -> bpy.types.FCurve:
    """The F-curve animating ``id_data.<data_path>[index]``, created (with an action) if needed.

    Args:
        id_data: the animated datablock (object, shape-key datablock, ...).
        data_path: RNA path relative to ``id_data``.
        index: array index of the property.
        group: channel group name ("" = none).
        action_name: name of the action created when ``id_data`` has none.
    """
    ad = id_data.animation_data or id_data.animation_data_create()
    if ad.action is None:
        ad.action = bpy.data.actions.new(action_name or f"{id_data.name}_action")
    action = ad.action
    if hasattr(action, "fcurve_ensure_for_datablock"):  # Blender 4.4+ (slotted actions)
        return action.fcurve_ensure_for_datablock(id_data, data_path, index=index, group_name=group)
    fc = action.fcurves.find(data_path, index=index)  # Blender 4.2–4.3
    if fc is None:
        fc = action.fcurves.new(data_path, index=index, action_group=group)
    return fc


def set_keyframes(fc: bpy.types.FCurve, frames: np.ndarray, values: np.ndarray,
                  interpolation: str = "LINEAR") -> None:
    """Replaces the keyframes of ``fc``.

    Args:
        fc: the F-curve.
        frames: frame numbers. [T]
        values: values at those frames. [T]
        interpolation: "CONSTANT", "LINEAR" or "BEZIER".
    """
    frames = np.asarray(frames, dtype=np.float32)
    values = np.asarray(values, dtype=np.float32)
    kp = fc.keyframe_points
    if len(kp):
        kp.clear()
    kp.add(len(frames))
    kp.foreach_set("co", np.ascontiguousarray(np.stack([frames, values], -1).reshape(-1)))
    kp.foreach_set("interpolation", np.full(len(frames), _INTERPOLATION[interpolation], np.int32))
    fc.update()


def key_channels(id_data: bpy.types.ID, data_path: str, frames: np.ndarray, values: np.ndarray,
                 *, group: str = "", action_name: str | None = None,
                 interpolation: str = "LINEAR") -> None:
    """Keys every array index of a property over time.

    Args:
        id_data: the animated datablock.
        data_path: RNA path of an array property (or a scalar when ``values`` is [T]).
        frames: frame numbers. [T]
        values: values per frame and index. [T, C] or [T]
        group: channel group name.
        action_name: name for a newly created action.
        interpolation: keyframe interpolation.
    """
    values = np.asarray(values)
    if values.ndim == 1:
        values = values[:, None]
    for c in range(values.shape[1]):
        fc = ensure_fcurve(id_data, data_path, c, group=group, action_name=action_name)
        set_keyframes(fc, frames, values[:, c], interpolation)


def push_to_nla(id_data: bpy.types.ID, track_name: str, blend_type: str) -> bpy.types.NlaStrip:
    """Moves the active action of ``id_data`` onto a new NLA track and leaves the active action empty.

    The artist's keys then go into a new active action evaluated on top of the track with
    ``blend_type`` (``AnimData.action_blend_type``): "ADD" adds to the track's values,
    "COMBINE" adds locations and multiplies quaternions, "REPLACE" replaces a keyed channel.
    Blender's keying remaps a value keyed through such a layer so that the result is the value
    set (checked with bpy 5.0, Python ``keyframe_insert`` included).

    Args:
        id_data: the animated datablock (it must have an active action).
        track_name: name of the new NLA track (and its strip).
        blend_type: blend type of the artist's layer.
    Returns:
        the strip (extrapolation "HOLD", blend "REPLACE", influence 1).
    """
    ad = id_data.animation_data
    action = ad.action
    track = ad.nla_tracks.new()
    track.name = track_name
    strip = track.strips.new(track_name, int(np.floor(action.frame_range[0])), action)
    ad.action = None
    ad.action_blend_type = blend_type
    return strip


def nla_strip(id_data: bpy.types.ID | None, track_name: str) -> bpy.types.NlaStrip | None:
    """The first strip of the NLA track ``track_name`` of ``id_data``, or None."""
    ad = getattr(id_data, "animation_data", None)
    track = ad.nla_tracks.get(track_name) if ad is not None else None
    return track.strips[0] if track is not None and len(track.strips) else None


class DriverVar:
    """A single-property driver variable: ``name`` reads ``id.<data_path>``.

    Args:
        name: variable name used in the expression (a Python identifier).
        id: the datablock read.
        data_path: RNA path relative to ``id`` (e.g. ``'pose.bones["jaw"].rotation_quaternion[0]'``).
    """

    __slots__ = ("name", "id", "data_path")

    def __init__(self, name: str, id: bpy.types.ID, data_path: str):  # noqa: A002 - bpy naming
        self.name, self.id, self.data_path = name, id, data_path


# bpy ID class → DriverTarget.id_type
_ID_TYPES = (("Object", "OBJECT"), ("Key", "KEY"), ("Mesh", "MESH"), ("Armature", "ARMATURE"),
             ("Scene", "SCENE"), ("Material", "MATERIAL"))


def _id_type(id_data: bpy.types.ID) -> str:
    for cls_name, id_type in _ID_TYPES:
        if isinstance(id_data, getattr(bpy.types, cls_name)):
            return id_type
    raise TypeError(f"driver targets of type {type(id_data).__name__} are not supported")


def add_driver(id_data: bpy.types.ID, data_path: str, index: int, variables: Sequence[DriverVar],
               expression: str = "", driver_type: str = "SCRIPTED") -> bpy.types.FCurve:
    """Adds (or replaces) a driver on ``id_data.<data_path>[index]``.

    Args:
        id_data: the driven datablock.
        data_path: RNA path of the driven property relative to ``id_data``.
        index: array index (-1 for a scalar property).
        variables: the driver's single-property variables.
        expression: the expression for ``driver_type == "SCRIPTED"``; must stay within
            Blender's simple-expression subset (checked) so no Python auto-run is needed.
        driver_type: "SCRIPTED" or "SUM" (sum of the variables).
    Returns:
        the driver F-curve.
    Raises:
        ValueError: the expression is too long for Blender or not a simple expression.
    """
    if index >= 0:
        try:
            id_data.driver_remove(data_path, index)
        except TypeError:
            pass
        fc = id_data.driver_add(data_path, index)
    else:
        try:
            id_data.driver_remove(data_path)
        except TypeError:
            pass
        fc = id_data.driver_add(data_path)
    # Blender 5.0 gives a new driver F-curve two Bézier keys (0,0)-(1,1); evaluating that curve
    # snaps values below ~1e-4 to 0 and perturbs others by ~1e-7. Without keys or modifiers the
    # driver's value passes through unchanged.
    if len(fc.keyframe_points):
        fc.keyframe_points.clear()
    for mod in list(fc.modifiers):
        fc.modifiers.remove(mod)
    drv = fc.driver
    drv.type = driver_type
    for var in variables:
        v = drv.variables.new()
        v.name = var.name
        v.type = "SINGLE_PROP"
        t = v.targets[0]
        t.id_type = _id_type(var.id)
        t.id = var.id
        t.data_path = var.data_path
    if driver_type == "SCRIPTED":
        if len(expression) > 255:
            raise ValueError(f"driver expression for {data_path}[{index}] is {len(expression)} characters; "
                             "Blender keeps at most 255")
        drv.expression = expression
        if not drv.is_simple_expression:
            raise ValueError(f"driver expression {expression!r} is not a simple expression")
    return fc
