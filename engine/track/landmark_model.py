"""FLAME evaluated at the embedded landmarks only: the fit's forward model.

Exactly :class:`engine.model.flame_layer.FlameLayer` (smplx's LBS: blendshapes, pose correctives,
linear blend skinning) restricted to the vertices of the embedded landmarks' triangles, then the
barycentric combination — a few hundred vertices instead of 5023, so hundreds of frames fit in one
batch on a CPU. Joints come from precomputed regressions of the template and of the bases
(``J = J_regressor · (T + S·β + E·ψ)`` is linear), so nothing is evaluated on the full mesh.
"""

from __future__ import annotations

import numpy as np
import torch
from smplx.lbs import batch_rigid_transform, batch_rodrigues
from torch import Tensor, nn

from engine.model.head_model import HeadModel
from engine.track.embedding import LandmarkEmbedding


class LandmarkHead(nn.Module):
    """The head model's landmark positions as a function of its parameters.

    Buffers: the subset's template ``[U, 3]``, shape/expression bases ``[U, 3, S|E]``, pose
    correctives ``[(J-1)*9, U*3]``, skinning weights ``[U, J]``, the joint regressions of the
    template ``[J, 3]`` and bases ``[J, 3, S|E]``, and each landmark's three subset vertices
    ``[L, 3]`` with barycentric weights ``[L, 3]``.
    """

    def __init__(self, head: HeadModel, embedding: LandmarkEmbedding, num_shape: int, num_expr: int):
        super().__init__()
        faces = np.asarray(head.faces, np.int64)[embedding.face_index]  # [L, 3] vertex ids
        used, inverse = np.unique(faces.reshape(-1), return_inverse=True)
        self.num_shape = min(int(num_shape), head.num_shape)
        self.num_expr = min(int(num_expr), head.num_expr)
        f32 = torch.float32
        S, E = self.num_shape, self.num_expr
        J = head.num_joints
        V = head.num_vertices
        Jreg = np.asarray(head.J_regressor, np.float64)
        shapedirs = np.asarray(head.shapedirs, np.float64)[:, :, :S]
        exprdirs = np.asarray(head.exprdirs, np.float64)[:, :, :E]
        self.register_buffer("v_template", torch.as_tensor(head.v_template[used], dtype=f32))
        self.register_buffer("shapedirs", torch.as_tensor(shapedirs[used], dtype=f32))
        self.register_buffer("exprdirs", torch.as_tensor(exprdirs[used], dtype=f32))
        pd = np.asarray(head.posedirs, np.float64).reshape(-1, V, 3)[:, used].reshape(pd_rows(J), -1)
        self.register_buffer("posedirs", torch.as_tensor(pd, dtype=f32))
        self.register_buffer("lbs_weights", torch.as_tensor(head.lbs_weights[used], dtype=f32))
        self.register_buffer("J_template", torch.as_tensor(Jreg @ head.v_template, dtype=f32))
        self.register_buffer("J_shapedirs", torch.as_tensor(np.einsum("jv,vcs->jcs", Jreg, shapedirs), dtype=f32))
        self.register_buffer("J_exprdirs", torch.as_tensor(np.einsum("jv,vcs->jcs", Jreg, exprdirs), dtype=f32))
        self.register_buffer("parents", torch.as_tensor(head.parents, dtype=torch.int64))
        self.register_buffer("corner", torch.as_tensor(inverse.reshape(-1, 3), dtype=torch.int64))
        self.register_buffer("bary", torch.as_tensor(embedding.barycentric, dtype=f32))
        self.mediapipe_index = torch.as_tensor(embedding.mediapipe_index, dtype=torch.int64)

    @property
    def num_landmarks(self) -> int:
        return int(self.bary.shape[0])

    def forward(self, shape: Tensor, expr: Tensor, pose: Tensor, translation: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        """Posed landmark positions (FLAME/world frame, meters) and joints.

        Args:
            shape: [1|B, S'] identity coefficients (S' <= num_shape).
            expr: [B, E'] expression coefficients (E' <= num_expr).
            pose: [B, J*3] axis-angle per joint, radians (root = global rotation).
            translation: [B, 3] added after skinning, meters (FLAME's ``transl``).
        Returns:
            landmarks [B, L, 3], joints [B, J, 3].
        """
        B = pose.shape[0]
        S_, E_ = shape.shape[1], expr.shape[1]
        v_shaped = (self.v_template + torch.einsum("s,vcs->vc", shape[0], self.shapedirs[:, :, :S_]))[None] \
            + (expr @ self.exprdirs[:, :, :E_].reshape(-1, E_).T).reshape(B, -1, 3)
        joints = (self.J_template + torch.einsum("s,jcs->jc", shape[0], self.J_shapedirs[:, :, :S_]))[None] \
            + (expr @ self.J_exprdirs[:, :, :E_].reshape(-1, E_).T).reshape(B, -1, 3)
        J = joints.shape[1]
        rot = batch_rodrigues(pose.reshape(-1, 3)).reshape(B, J, 3, 3)
        eye = torch.eye(3, dtype=pose.dtype, device=pose.device)
        feat = (rot[:, 1:] - eye).reshape(B, -1)
        v_posed = v_shaped + (feat @ self.posedirs).reshape(B, -1, 3)
        posed_joints, A = batch_rigid_transform(rot, joints, self.parents, dtype=pose.dtype)
        # LBS: per vertex the blended transform sum_j w_vj A_j ([B, U, 3, 4]) applied to v_posed
        blended = (self.lbs_weights @ A[:, :, :3, :].reshape(B, J, 12)).reshape(B, -1, 3, 4)
        v = (blended[..., :3] * v_posed[:, :, None, :]).sum(-1) + blended[..., 3]
        lm = torch.einsum("lk,blkc->blc", self.bary, v[:, self.corner])
        if translation is not None:
            lm = lm + translation[:, None]
            posed_joints = posed_joints + translation[:, None]
        return lm, posed_joints


def pd_rows(num_joints: int) -> int:
    """Rows of FLAME's ``posedirs`` (9 per non-root joint)."""
    return (num_joints - 1) * 9
