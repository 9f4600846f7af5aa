"""One frame's pose and expression fitted to its image with the avatar frozen (analysis by synthesis).

Used twice: by the tracker's photometric refinement (every frame, against a coarse avatar) and by
``eval --refine_test_tracking`` (the held-out frames against the trained avatar: the IMavatar /
PointAvatar evaluation protocol). Optimised with Adam: the head's global rotation (root) and
translation, the jaw, the eyes and the expression, as offsets from the given parameters, against
``L1(render, image)`` plus ``prior · |offset|²`` (rotations in radians, translation in decimetres,
expression coefficients). The avatar's parameters get no gradient and are left unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from engine.data.sequence import JOINT_SLICES
from engine.geometry.cameras import Camera
from engine.model.avatar import Avatar

REFINED_JOINTS = ("root", "jaw", "left_eye", "right_eye")


@dataclass
class FrameFit:
    """A frame's refined parameters and its final image loss."""

    expr: Tensor  # [E]
    pose: Tensor  # [J*3]
    translation: Tensor  # [3]
    loss: float


def fit_frame(avatar: Avatar, shape: Tensor, expr: Tensor, pose: Tensor, translation: Tensor, camera: Camera,
              image: Tensor, background: Tensor, steps: int = 60, lr: float = 3e-3, prior: float = 1e-2,
              refine_expr: bool = True, backend: str = "auto") -> FrameFit:
    """Refines one frame (module doc).

    Args:
        avatar: the frozen avatar.
        shape [S], expr [E], pose [J*3] axis-angle (radians), translation [3] (meters): the start.
        camera: the frame's camera; image: [H, W, 3] ground truth composited over ``background`` [3].
        steps: Adam steps; lr: their step size; prior: weight of the squared offsets.
        refine_expr: also fit the expression (else pose and translation only).
    Returns:
        the refined expression, pose and translation (detached) and the last L1 loss.
    """
    dev = image.device
    d_rot = torch.zeros(4, 3, device=dev, requires_grad=True)  # root, jaw, eyes (shared) offsets
    d_trans = torch.zeros(3, device=dev, requires_grad=True)
    d_expr = torch.zeros_like(expr, requires_grad=True)
    params = [d_rot, d_trans] + ([d_expr] if refine_expr else [])
    opt = torch.optim.Adam(params, lr=lr)
    frozen = [p for p in _avatar_params(avatar) if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        loss_v = float("nan")
        for _ in range(steps):
            e, p, t = _apply(expr, pose, translation, d_rot, d_trans, d_expr)
            out = avatar.render(shape, e, p, t, camera, background, backend)
            l1 = (out.image - image).abs().mean()
            reg = d_rot.square().sum() + (10.0 * d_trans).square().sum() + 0.1 * d_expr.square().sum()
            loss = l1 + prior * reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_v = float(l1.detach())
    finally:
        for p in frozen:
            p.requires_grad_(True)
    with torch.no_grad():
        e, p, t = _apply(expr, pose, translation, d_rot, d_trans, d_expr)
    return FrameFit(e.detach(), p.detach(), t.detach(), loss_v)


def _apply(expr, pose, translation, d_rot, d_trans, d_expr):
    p = pose.clone()
    p[JOINT_SLICES["root"]] = p[JOINT_SLICES["root"]] + d_rot[0]
    p[JOINT_SLICES["jaw"]] = p[JOINT_SLICES["jaw"]] + d_rot[1]
    if p.shape[0] >= 15:
        p[JOINT_SLICES["left_eye"]] = p[JOINT_SLICES["left_eye"]] + d_rot[2]
        p[JOINT_SLICES["right_eye"]] = p[JOINT_SLICES["right_eye"]] + d_rot[2]
    return expr + d_expr, p, translation + d_trans


def _avatar_params(avatar: Avatar):
    for module in (avatar.gaussians, avatar.blendshapes, avatar.tracking):
        yield from module.parameters()
