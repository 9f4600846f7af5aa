"""The armature of an imported avatar: FLAME's joints as bones, and the LBS weights that bind the
head mesh to them (the maths behind it: :mod:`addon.rig.flame_math`).

Per joint a deform bone ``<joint>`` (rest head at J0 = J_regressor · v_template, identity rest
rotation, quaternion rotation mode) under a hidden mechanism bone ``MCH-<joint>`` whose driven
location (:mod:`.drivers`) compensates for the joints moving with the expression. The armature
object carries the fixed rotation R_x(+90°) that stands FLAME's +Y-up head up in Blender's +Z-up
world; its data stay in FLAME coordinates.
"""

from __future__ import annotations

import bpy
import numpy as np
from mathutils import Matrix

from ..files.avatar import HeadData
from . import flame_math
from .bindings import PROP_ROLE, ROLE_RIG

__all__ = ["build_rig", "add_skinning", "mch_bone_name"]


def mch_bone_name(joint: str) -> str:
    """Name of the mechanism bone carrying a joint's expression compensation."""
    return f"MCH-{joint}"


def _ensure_object_mode(context) -> None:
    if context.mode != "OBJECT" and context.active_object is not None:
        bpy.ops.object.mode_set(mode="OBJECT")


def build_rig(name: str, head: HeadData, collection: bpy.types.Collection, context) -> bpy.types.Object:
    """Creates the armature (see the module doc).

    Args:
        name: avatar name; the object is ``<name>_rig``.
        head: the head model.
        collection: collection to link into.
        context: ``bpy.context`` (edit mode is needed to create bones).
    Returns:
        the armature object, rotated R_x(+90°).
    """
    arm = bpy.data.armatures.new(f"{name}_rig")
    rig = bpy.data.objects.new(f"{name}_rig", arm)
    collection.objects.link(rig)
    rig.matrix_world = Matrix(flame_math.FLAME_TO_BLENDER_WORLD.tolist())
    rig.show_in_front = True
    J0 = head.rest_joints()
    extent = float(np.ptp(head.v_template, axis=0).max()) or 1.0
    length = 0.1 * extent

    _ensure_object_mode(context)
    view_layer = context.view_layer
    prev_active = view_layer.objects.active
    view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        ebones = arm.edit_bones
        deform = {}
        for j, joint in enumerate(head.joint_names):
            parent = deform[head.joint_names[head.parents[j]]] if head.parents[j] >= 0 else None
            mch = ebones.new(mch_bone_name(joint))
            bone = ebones.new(joint)
            for eb in (mch, bone):
                # Pointing along +Y with roll 0 gives the identity rest rotation.
                eb.head = tuple(J0[j])
                eb.tail = tuple(J0[j] + np.array([0.0, length, 0.0]))
                eb.roll = 0.0
                eb.use_connect = False
            mch.parent = parent
            mch.use_deform = False
            bone.parent = mch
            bone.use_deform = True
            deform[joint] = bone
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
        view_layer.objects.active = prev_active if prev_active is not None else rig

    for pb in rig.pose.bones:
        pb.rotation_mode = "QUATERNION"
    if hasattr(arm, "collections"):  # bone collections (Blender 4.0+)
        deform_coll = arm.collections.new("Joints")
        mch_coll = arm.collections.new("MCH")
        for b in arm.bones:
            (mch_coll if b.name.startswith("MCH-") else deform_coll).assign(b)
        mch_coll.is_visible = False
    for b in arm.bones:
        if b.name.startswith("MCH-"):
            b.hide = True
    rig[PROP_ROLE] = ROLE_RIG
    return rig


def add_skinning(obj: bpy.types.Object, rig: bpy.types.Object, head: HeadData) -> None:
    """LBS weights as vertex groups (one per joint) and an Armature modifier after the shape keys."""
    w = head.lbs_weights
    for j, joint in enumerate(head.joint_names):
        vg = obj.vertex_groups.new(name=joint)
        idx = np.nonzero(w[:, j] > 0)[0]
        # Group vertices with equal weights into one call (FLAME has many exact 1.0 weights).
        values, inverse = np.unique(w[idx, j], return_inverse=True)
        for u, value in enumerate(values):
            vg.add(idx[inverse == u].tolist(), float(value), "REPLACE")
    mod = obj.modifiers.new("Armature", "ARMATURE")
    mod.object = rig
    mod.use_vertex_groups = True
    mod.use_bone_envelopes = False
    mod.use_deform_preserve_volume = False
