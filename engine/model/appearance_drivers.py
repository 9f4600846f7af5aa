"""What drives expression-dependent appearance: per-frame values named by the Blender shape keys
that carry the same numbers (issue 19).

HeadGaS (ECCV 2024, §3.2) blends its per-Gaussian feature bases with "the first B expression
coefficients". Here the driving vector is

    d = [ψ_1 … ψ_B,  (R_jaw − I)_00 … (R_jaw − I)_22]

the first B FLAME expression coefficients ψ and, optionally, the nine entries of the jaw's pose
feature ``R_jaw − I`` (the values FLAME's pose correctives are linear in, smplx ``lbs``). The jaw
is a bone, not an expression coefficient, in FLAME; without it an appearance model cannot tell
an open mouth (teeth, mouth interior) from a closed one. In Blender every entry of ``d`` is the
value of a shape key of the imported head: the expression keys (``expression_names`` or
``Exp000``…) and the driven pose correctives ``Pose_jaw_<r><c>`` (docs/FORMATS.md), so the map
shape keys (:mod:`engine.map_keys`) blend with exactly the weights the mesh is deformed with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from engine.geometry.rotations import axis_angle_to_matrix
from engine.model.head_model import HeadModel

JAW_JOINT = "jaw"
"""Name of the joint whose pose feature may drive appearance."""


def expression_key_names(head: HeadModel, count: int) -> list[str]:
    """Blender shape-key names of the first ``count`` expression coefficients: the demo head's
    named blendshapes, else ``Exp000``, ``Exp001``… (as the add-on names FLAME's)."""
    from engine.model.demo_head import DEMO_EXPRESSION_NAMES, DEMO_HEAD_NAME

    if head.name == DEMO_HEAD_NAME and count <= len(DEMO_EXPRESSION_NAMES):
        return list(DEMO_EXPRESSION_NAMES[:count])
    return [f"Exp{k:03d}" for k in range(count)]


def corrective_key_name(joint: str, r: int, c: int) -> str:
    """``Pose_<joint>_<r><c>``: the shape key driven by (R − I)[r, c] of the joint (docs/FORMATS.md)."""
    return f"Pose_{joint}_{r}{c}"


@dataclass(frozen=True)
class AppearanceDrivers:
    """The driving vector d of one avatar (module doc).

    Attributes:
        num_expr: B, expression coefficients used (the frame's first B; missing ones count 0).
        jaw_joint: index of the jaw joint in the pose vector, or -1 for none.
        names: the Blender shape-key name of each entry of d. [D]
    """

    num_expr: int
    jaw_joint: int
    names: tuple[str, ...]

    @property
    def size(self) -> int:
        """D = B (+ 9 with the jaw)."""
        return len(self.names)

    def values(self, expr: Tensor, pose: Tensor) -> Tensor:
        """d for one frame.

        Args:
            expr: expression coefficients (any count; the first B are used, missing ones are 0). [E]
            pose: axis-angle joint rotations, radians, FLAME joint order. [J·3]
        Returns:
            d, same dtype/device as ``expr``. [D]
        """
        B = self.num_expr
        e = expr[:B]
        if e.shape[0] < B:
            e = torch.cat([e, e.new_zeros(B - e.shape[0])])
        if self.jaw_joint < 0:
            return e
        aa = pose[3 * self.jaw_joint: 3 * self.jaw_joint + 3].to(e.dtype)
        feat = axis_angle_to_matrix(aa) - torch.eye(3, dtype=e.dtype, device=e.device)
        return torch.cat([e, feat.reshape(9)])


def make_drivers(head: HeadModel, num_expr: int, use_jaw: bool = True) -> AppearanceDrivers:
    """The driving vector of an avatar of ``head`` with ``num_expr`` expression coefficients.

    Args:
        head: the head model (joint names; the demo head's expression names).
        num_expr: B (at most the avatar's expression count; HeadGaS: 52).
        use_jaw: append the jaw's nine pose features (needs a joint named :data:`JAW_JOINT`).
    """
    names = expression_key_names(head, num_expr)
    jaw = list(head.joint_names).index(JAW_JOINT) if use_jaw and JAW_JOINT in head.joint_names else -1
    if jaw >= 0:
        names += [corrective_key_name(JAW_JOINT, r, c) for r in range(3) for c in range(3)]
    return AppearanceDrivers(int(num_expr), jaw, tuple(names))
