"""The drivers that make the rig equal FLAME's LBS (:mod:`addon.rig.flame_math`, module doc).

- pose correctives: each ``Pose_<joint>_<r><c>`` key = (R − I)[r, c] of the joint bone's
  quaternion;
- joint offsets: ΔJ = Σ_k ψ_k D_k in the rig properties ``fate_dJ_<joint>_<x|y|z>``, driven by the
  expression key values, and ``MCH-<joint>.location = (I − r_j) ΔJ_j``.

Every expression stays inside Blender's simple-expression subset (no Python auto-run needed).
"""

from __future__ import annotations

import bpy
import numpy as np

from ..files.avatar import HeadData
from . import animation, flame_math
from .animation import DriverVar
from .armature import mch_bone_name
from .mesh import expression_key_name

__all__ = ["JOINT_OFFSET_TOL", "add_corrective_drivers", "add_joint_offset_drivers", "joint_offset_prop"]

#: |weight| at or below which a term of ΔJ = Σ ψ_k D_k is dropped (m per unit; far below float32
#: resolution of the vertex positions).
JOINT_OFFSET_TOL = 1e-12


def joint_offset_prop(joint: str, axis: int) -> str:
    """Rig custom property holding one component of a joint's ΔJ (m, FLAME axes): ``fate_dJ_<joint>_<x|y|z>``.

    Scalar properties rather than one array, so that each component is its own depsgraph node
    and a driver depends only on the components it reads.
    """
    return f"fate_dJ_{joint}_{'xyz'[axis]}"


def _quat_vars(rig: bpy.types.Object, joint: str) -> list[DriverVar]:
    path = f'pose.bones["{joint}"].rotation_quaternion'
    return [DriverVar(n, rig, f"{path}[{i}]") for i, n in enumerate("wxyz")]


def add_corrective_drivers(obj: bpy.types.Object, rig: bpy.types.Object, head: HeadData) -> None:
    """Drives each ``Pose_<joint>_<r><c>`` key with (R − I)[r, c] of the joint bone's rotation."""
    key = obj.data.shape_keys
    names = flame_math.corrective_key_names(head.joint_names)
    i = 0
    for joint in head.joint_names[1:]:
        for r in range(3):
            for c in range(3):
                animation.add_driver(key, f'key_blocks["{names[i]}"].value', -1, _quat_vars(rig, joint),
                                     flame_math.corrective_expression(r, c))
                i += 1


def add_joint_offset_drivers(obj: bpy.types.Object, rig: bpy.types.Object, head: HeadData) -> list[str]:
    """Drives ΔJ (rig properties) from the Exp values and the MCH bones' locations from ΔJ.

    ΔJ_j = Σ_k ψ_k D_jk (:func:`addon.rig.flame_math.joint_expression_basis`) goes into the scalar
    properties ``fate_dJ_<joint>_<x|y|z>``; sums longer than a driver expression allows are split
    into partial sums ``fate_dJ_<joint>_<axis>_<p>`` added by a "Sum Values" driver.
    ``MCH-<joint>.location = (I − r_j) ΔJ_j``.

    Returns:
        the joints that got drivers (joints whose regressed position ignores the expression,
        such as FLAME's eyeballs, need none).
    """
    key = obj.data.shape_keys
    D = flame_math.joint_expression_basis(head.J_regressor, head.exprdirs)  # [J, 3, E]

    def evars(used):
        return [DriverVar(f"e{k}", key, f'key_blocks["{expression_key_name(head, k)}"].value') for k in used]

    driven = []
    for j, joint in enumerate(head.joint_names):
        if np.abs(D[j]).max(initial=0.0) <= JOINT_OFFSET_TOL:
            continue
        for a in range(3):
            prop = joint_offset_prop(joint, a)
            rig[prop] = 0.0
            chunks = flame_math.weighted_sum_chunks(D[j, a], tol=JOINT_OFFSET_TOL)
            if len(chunks) == 1:
                animation.add_driver(rig, f'["{prop}"]', -1, evars(chunks[0][1]), chunks[0][0])
            elif chunks:
                for p, (expr, used) in enumerate(chunks):
                    rig[f"{prop}_{p}"] = 0.0
                    animation.add_driver(rig, f'["{prop}_{p}"]', -1, evars(used), expr)
                animation.add_driver(rig, f'["{prop}"]', -1,
                                     [DriverVar(f"p{p}", rig, f'["{prop}_{p}"]') for p in range(len(chunks))],
                                     driver_type="SUM")
        pb_path = f'pose.bones["{mch_bone_name(joint)}"]'
        variables = _quat_vars(rig, joint) + [DriverVar(n, rig, f'["{joint_offset_prop(joint, i)}"]')
                                              for i, n in enumerate("abc")]
        for a in range(3):
            animation.add_driver(rig, f"{pb_path}.location", a, variables,
                                 flame_math.location_offset_expression(a))
        driven.append(joint)
    return driven
