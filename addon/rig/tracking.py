"""The tracked training sequence on an imported avatar: keyframes on frames 1..T for the ``Exp``
values, the joint quaternions and the root location (FLAME translation), and ``<name>_camera``
(a child of the rig) replaying the training cameras.
"""

from __future__ import annotations

import bpy
import numpy as np
from mathutils import Matrix

from ..files.avatar import HeadData, Tracking
from . import animation, flame_math
from .bindings import PROP_ROLE, ROLE_CAMERA
from .mesh import expression_key_name

__all__ = ["animate_tracking", "build_camera"]


def animate_tracking(obj: bpy.types.Object, rig: bpy.types.Object, head: HeadData, tracking: Tracking,
                     warnings: list[str]) -> None:
    """Keys the tracked sequence on frames 1..T: Exp values, joint quaternions, root location."""
    T = tracking.num_frames
    frames = np.arange(1, T + 1, dtype=np.float32)
    key = obj.data.shape_keys
    E = min(head.num_expressions, tracking.expr.shape[1])
    if tracking.expr.shape[1] > head.num_expressions:
        warnings.append(f"tracking has {tracking.expr.shape[1]} expression coefficients, the head "
                        f"{head.num_expressions}: the extra ones were ignored")
    key_action = f"{obj.name}_tracked_expressions"
    for k in range(E):
        animation.key_channels(key, f'key_blocks["{expression_key_name(k)}"].value', frames,
                               tracking.expr[:, k], action_name=key_action)
    rig_action = f"{rig.name}_tracked_pose"
    for j, joint in enumerate(head.joint_names):
        q = flame_math.make_quaternions_continuous(
            flame_math.axis_angle_to_quaternion(tracking.pose[:, 3 * j:3 * j + 3]))
        animation.key_channels(rig, f'pose.bones["{joint}"].rotation_quaternion', frames, q,
                               group=joint, action_name=rig_action)
    root = head.joint_names[0]
    # The root bone's rest frame is the armature's, so its location is FLAME's translation.
    animation.key_channels(rig, f'pose.bones["{root}"].location', frames, tracking.translation,
                           group=root, action_name=rig_action)


def build_camera(name: str, tracking: Tracking, rig: bpy.types.Object, collection: bpy.types.Collection,
                 scene: bpy.types.Scene) -> bpy.types.Object:
    """A camera (child of the rig) replaying the tracked cameras on frames 1..T.

    Sets the scene's resolution, pixel aspect, frame range and active camera.
    """
    T = tracking.num_frames
    frames = np.arange(1, T + 1, dtype=np.float32)
    cam_data = bpy.data.cameras.new(f"{name}_camera")
    cam = bpy.data.objects.new(f"{name}_camera", cam_data)
    collection.objects.link(cam)
    cam.parent = rig
    cam.rotation_mode = "QUATERNION"
    cam_data.clip_start = 0.01
    cam_data.clip_end = 100.0
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
    quats = np.array([Matrix(m[:3, :3].tolist()).to_quaternion()[:] for m in c2w])
    quats = flame_math.make_quaternions_continuous(quats)
    action = f"{name}_camera_tracked"
    animation.key_channels(cam, "location", frames, c2w[:, :3, 3], action_name=action)
    animation.key_channels(cam, "rotation_quaternion", frames, quats, action_name=action)
    render = scene.render
    render.resolution_x, render.resolution_y = p0["resolution_x"], p0["resolution_y"]
    render.resolution_percentage = 100
    render.pixel_aspect_x, render.pixel_aspect_y = p0["pixel_aspect_x"], p0["pixel_aspect_y"]
    scene.frame_start, scene.frame_end = 1, T
    scene.camera = cam
    cam[PROP_ROLE] = ROLE_CAMERA
    return cam
