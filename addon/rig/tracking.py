"""The tracked training sequence on an imported avatar, as layered animation an artist can direct.

Keys on frames 1..T: the ``Exp`` values, the joint quaternions and the root bone's location.
Each datablock's keys go into one action that becomes a strip of the NLA track
:data:`TRACK_NAME` ("FATE Tracking"), and the active action is left empty: keys the artist sets
go into a layer on top, which adds to the tracking (shape keys: "ADD"; rig: "COMBINE", i.e.
quaternions multiply) or replaces it (``AnimData.action_blend_type`` "REPLACE"); muting the
track or lowering its influence blends the tracking out.

Head motion. A monocular tracker may express the head's turns as camera motion (INSTA-style
orbits: per-frame ``viewmat``, root pose near zero) or as FLAME global pose (a fixed camera).
With ``camera="STILL"`` the importer puts the rigid motion that makes both the same onto the
root bone (:func:`addon.rig.flame_math.head_motion_for_still_camera`) and adds a still camera
(the view of :func:`addon.rig.flame_math.still_camera_frame`): from that camera every frame looks
exactly as from the tracked one, and from any other camera the head turns in the world. With
``camera="TRACKED"`` the root keeps FLAME's own pose and the camera replays the tracked views
(for checking against the footage).
"""

from __future__ import annotations

import bpy
import numpy as np
from mathutils import Matrix

from ..files.avatar import HeadData, Tracking
from . import animation, flame_math
from .animation import DriverVar
from .bindings import PROP_ROLE, ROLE_CAMERA

__all__ = ["TRACK_NAME", "EXPRESSION_LAYER_BLEND", "POSE_LAYER_BLEND", "CAMERA_MODES", "animate_tracking",
           "root_joint_per_frame", "build_camera", "apply_scene_settings"]

TRACK_NAME = "FATE Tracking"
"""Name of the NLA track (and strip) holding the tracked animation, on the shape keys and the rig."""
EXPRESSION_LAYER_BLEND = "ADD"
"""Blend type of the artist's layer over the tracked expressions (shape keys)."""
POSE_LAYER_BLEND = "COMBINE"
"""Blend type of the artist's layer over the tracked pose (quaternions multiply, locations add)."""
CAMERA_MODES = ("STILL", "TRACKED")
"""``camera`` values of :func:`build_camera` and the importer."""


def root_joint_per_frame(head: HeadData, expr: np.ndarray) -> np.ndarray:
    """The root joint regressed from each frame's expressed mesh (what the rig's MCH bone follows).

    Args:
        head: the head model.
        expr: expression values per frame (the first E of the head's). [T, E]
    Returns:
        J_root = J_regressor[0] · (v_template + exprdirs · ψ_t), m, FLAME canonical. [T, 3] float64
    """
    E = expr.shape[1]
    D = flame_math.joint_expression_basis(head.J_regressor[:1], head.exprdirs[:, :, :E])[0]  # [3, E]
    return head.rest_joints()[0] + np.asarray(expr, np.float64) @ D.T


def animate_tracking(obj: bpy.types.Object, rig: bpy.types.Object, head: HeadData, tracking: Tracking,
                     warnings: list[str], still_frame: int | None = None) -> None:
    """Keys the tracked sequence on frames 1..T into the NLA track :data:`TRACK_NAME`.

    Args:
        obj: the head mesh (its shape keys get the Exp values).
        rig: the armature (joint quaternions, root location).
        head: the head model.
        tracking: the tracked sequence.
        warnings: list to append problems to.
        still_frame: None = FLAME's own root pose and translation (the tracked camera moves);
            else the 0-based frame whose camera stays still and the head carries the motion.
    """
    T = tracking.num_frames
    frames = np.arange(1, T + 1, dtype=np.float32)
    key = obj.data.shape_keys
    E = min(head.num_expressions, tracking.expr.shape[1])
    if tracking.expr.shape[1] > head.num_expressions:
        warnings.append(f"tracking has {tracking.expr.shape[1]} expression coefficients, the head "
                        f"{head.num_expressions}: the extra ones were ignored")
    key_action = f"{obj.name}_tracked_expressions"
    for k in range(E):
        animation.key_channels(key, f'key_blocks["{head.expression_names[k]}"].value', frames,
                               tracking.expr[:, k], action_name=key_action)
    rig_action = f"{rig.name}_tracked_pose"
    root = head.joint_names[0]
    for j, joint in enumerate(head.joint_names[1:], start=1):
        q = flame_math.make_quaternions_continuous(
            flame_math.axis_angle_to_quaternion(tracking.pose[:, 3 * j:3 * j + 3]))
        animation.key_channels(rig, f'pose.bones["{joint}"].rotation_quaternion', frames, q,
                               group=joint, action_name=rig_action)
    if still_frame is None:
        q_root = flame_math.make_quaternions_continuous(flame_math.axis_angle_to_quaternion(tracking.pose[:, :3]))
        # The root bone's rest frame is the armature's, so its location is FLAME's translation.
        loc_root = tracking.translation
    else:
        q_root, loc_root = flame_math.head_motion_for_still_camera(
            tracking.pose[:, :3], tracking.translation, root_joint_per_frame(head, tracking.expr[:, :E]),
            tracking.viewmat, tracking.viewmat[still_frame])
    animation.key_channels(rig, f'pose.bones["{root}"].rotation_quaternion', frames, q_root,
                           group=root, action_name=rig_action)
    animation.key_channels(rig, f'pose.bones["{root}"].location', frames, loc_root,
                           group=root, action_name=rig_action)
    animation.push_to_nla(key, TRACK_NAME, EXPRESSION_LAYER_BLEND)
    animation.push_to_nla(rig, TRACK_NAME, POSE_LAYER_BLEND)


def _new_camera(name: str, rig: bpy.types.Object, collection: bpy.types.Collection) -> bpy.types.Object:
    cam_data = bpy.data.cameras.new(f"{name}_camera")
    cam = bpy.data.objects.new(f"{name}_camera", cam_data)
    collection.objects.link(cam)
    cam.parent = rig
    cam.rotation_mode = "QUATERNION"
    cam_data.clip_start = 0.01
    cam_data.clip_end = 100.0
    cam[PROP_ROLE] = ROLE_CAMERA
    return cam


def _place_camera(cam: bpy.types.Object, viewmat: np.ndarray) -> None:
    c2w = flame_math.opencv_w2c_to_blender_c2w(viewmat)  # FLAME frame (the rig's child)
    cam.location = tuple(c2w[:3, 3])
    cam.rotation_quaternion = Matrix(c2w[:3, :3].tolist()).to_quaternion()


def _drive_fit(cam_data: bpy.types.Camera, scene: bpy.types.Scene, aspect: float,
               horizontal: float, vertical: float, data_path: str) -> None:
    """Drives ``cam_data.<data_path>`` with ``horizontal`` when the scene's output is at most as
    wide as the tracked frame (``aspect``), else ``vertical``."""
    render = [DriverVar(n, scene, f"render.{p}") for n, p in
              (("rx", "resolution_x"), ("ry", "resolution_y"), ("ax", "pixel_aspect_x"), ("ay", "pixel_aspect_y"))]
    wider = f"rx*ax > {aspect:.9g}*ry*ay"
    animation.add_driver(cam_data, data_path, -1, render, f"{vertical:.9g} if {wider} else {horizontal:.9g}")


def build_camera(name: str, tracking: Tracking, rig: bpy.types.Object, collection: bpy.types.Collection,
                 scene: bpy.types.Scene, still_frame: int | None = None) -> bpy.types.Object:
    """``<name>_camera``, a child of the rig.

    Args:
        name: avatar name.
        tracking: the tracked sequence.
        rig: the armature object (the camera's parent, FLAME frame).
        collection: collection to link into.
        scene: the scene whose output size the still camera's sensor fit follows.
        still_frame: None = replay the tracked cameras on frames 1..T (horizontal sensor fit,
            lens and shift keyed when they vary); else a still camera at that frame's view whose
            sensor fit and shifts are driven by the scene's output aspect
            (:func:`addon.rig.flame_math.fit_preserving_intrinsics`), so the whole tracked frame
            stays in view at any resolution.
    Returns:
        the camera object. The scene is not changed (:func:`apply_scene_settings`).
    """
    cam = _new_camera(name, rig, collection)
    cam_data = cam.data
    if still_frame is not None:
        fit = flame_math.fit_preserving_intrinsics(tracking.K[still_frame], tracking.width, tracking.height)
        cam_data.lens = fit["lens"]
        cam_data.sensor_width = fit["sensor_width"]
        cam_data.sensor_height = fit["sensor_height"]
        _drive_fit(cam_data, scene, fit["aspect"], 1, 2, "sensor_fit")  # HORIZONTAL = 1, VERTICAL = 2
        _drive_fit(cam_data, scene, fit["aspect"], fit["shift_x_h"], fit["shift_x_v"], "shift_x")
        _drive_fit(cam_data, scene, fit["aspect"], fit["shift_y_h"], fit["shift_y_v"], "shift_y")
        _place_camera(cam, tracking.viewmat[still_frame])
        return cam

    T = tracking.num_frames
    frames = np.arange(1, T + 1, dtype=np.float32)
    params = [flame_math.blender_camera_intrinsics(tracking.K[t], tracking.width, tracking.height)
              for t in range(T)]
    p0 = params[0]
    cam_data.sensor_fit = p0["sensor_fit"]
    cam_data.sensor_width = p0["sensor_width"]
    for attr in ("lens", "shift_x", "shift_y"):
        values = np.array([p[attr] for p in params])
        setattr(cam_data, attr, float(values[0]))
        if np.ptp(values) > 1e-7 * max(1.0, np.abs(values).max()):
            animation.key_channels(cam_data, attr, frames, values, action_name=f"{name}_camera_intrinsics")
    c2w = flame_math.opencv_w2c_to_blender_c2w(tracking.viewmat)  # [T, 4, 4], FLAME frame
    quats = flame_math.make_quaternions_continuous(flame_math.matrix_to_quaternion(c2w[:, :3, :3]))
    action = f"{name}_camera_tracked"
    animation.key_channels(cam, "location", frames, c2w[:, :3, 3], action_name=action)
    animation.key_channels(cam, "rotation_quaternion", frames, quats, action_name=action)
    return cam


def apply_scene_settings(scene: bpy.types.Scene, tracking: Tracking, camera: bpy.types.Object | None, *,
                         resolution: bool, frame_range: bool, active_camera: bool) -> list[str]:
    """Sets what the importer's options ask for, and nothing else.

    Args:
        scene: the scene.
        tracking: the tracked sequence (frame size, pixel aspect from K, frame count).
        camera: the imported camera.
        resolution: output size = the tracked frames', 100 %, pixel aspect from fx/fy.
        frame_range: frames 1..T.
        active_camera: make ``camera`` the scene camera.
    Returns:
        the settings changed, e.g. ["resolution", "frame range"].
    """
    changed = []
    if resolution:
        p = flame_math.blender_camera_intrinsics(tracking.K[0], tracking.width, tracking.height)
        render = scene.render
        render.resolution_x, render.resolution_y = p["resolution_x"], p["resolution_y"]
        render.resolution_percentage = 100
        render.pixel_aspect_x, render.pixel_aspect_y = p["pixel_aspect_x"], p["pixel_aspect_y"]
        changed.append("resolution")
    if frame_range:
        scene.frame_start, scene.frame_end = 1, tracking.num_frames
        changed.append("frame range")
    if active_camera and camera is not None:
        scene.camera = camera
        changed.append("active camera")
    return changed
