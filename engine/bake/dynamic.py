"""The expression-conditioned BakeNet's driving signal (issue 19, after Animatable Gaussians,
CVPR 2024, §3.3–3.4).

Animatable Gaussians' CNN reads a *posed position map* of the template and writes pose-dependent
Gaussian maps. The head's equivalent is the **expression-deformed position map**: for every
covered texel of the bake resolution, the displacement of its surface point when the frame's
expression coefficients and jaw rotation are applied to the subject's canonical mesh (learnt
blendshapes included; neck, global rotation, eyes and translation left out: they move the head
rigidly and say nothing about its appearance), in meters / :data:`DISPLACEMENT_SCALE`, FLAME
axes, as 3 channels of the U-Net's input next to FATE's 11 (``dynamic_maps = true``).

Robustness to novel expressions (Animatable Gaussians' pose projection, §3.4): the training
frames' displacement maps X_t are flattened, their principal components S (``components`` of
them) and standard deviations σ computed, and every map — training or novel — is replaced by
its projection ``X̄ + S β`` with ``β = Sᵀ(X − X̄)`` clipped to ±2σ.
"""

from __future__ import annotations

import torch
from torch import Tensor

from engine.geometry.mesh_ops import barycentric_points
from engine.geometry.uv import sample_uv_texels

DISPLACEMENT_SCALE = 0.005
"""Meters of displacement that read as 1 in the conditioning channels (5 mm)."""
CHANNELS = 3
"""Conditioning channels added to BakeNet's input."""


class ExpressionConditioning:
    """Per-frame conditioning maps [1, 3, R, R] for the conditioned BakeNet (module doc).

    Args:
        avatar: the trained :class:`~engine.model.avatar.Avatar` (FLAME layer, learnt blendshapes).
        tracking: the avatar's ``tracking.npz`` arrays (shape, expr [T, E], pose [T, J·3]).
        resolution: R, the bake resolution.
        train_frames: frame indices whose maps span the PCA.
        components: principal components kept (0 = no projection).
        device: where the maps are made.
    """

    def __init__(self, avatar, tracking: dict, resolution: int, train_frames: list[int], components: int,
                 device: torch.device | str = "cpu"):
        head = avatar.head
        self.avatar, self.tracking, self.R, self.device = avatar, tracking, int(resolution), device
        s = sample_uv_texels(head.uvs, head.faces_uv_all, self.R)
        self.face_idx = torch.as_tensor(s.face_idx, dtype=torch.long, device=device)
        self.bary = torch.as_tensor(s.bary, dtype=torch.float32, device=device)
        self.lin = torch.as_tensor(s.texel[:, 0] * self.R + s.texel[:, 1], dtype=torch.long, device=device)
        self.shape = torch.as_tensor(tracking["shape"], dtype=torch.float32, device=device)
        joints = list(head.joint_names)
        self.jaw = joints.index("jaw") if "jaw" in joints else -1
        self.num_joints = head.num_joints
        n_expr = int(avatar.blendshapes.delta_exprdirs.shape[-1])
        self.rest = self._points(torch.zeros(n_expr, device=device), torch.zeros(self.num_joints * 3, device=device))
        X = torch.stack([self.displacement(i) for i in train_frames])  # [T, 3M]
        self.mean = X.mean(0)
        k = max(0, min(int(components), X.shape[0] - 1))
        if k:
            _, S, Vh = torch.linalg.svd(X - self.mean, full_matrices=False)
            self.basis = Vh[:k]  # [k, 3M]
            self.sigma = S[:k] / max(X.shape[0] - 1, 1) ** 0.5
        else:
            self.basis, self.sigma = None, None
        self.neutral = self.to_map(self.project(torch.zeros_like(self.mean)))

    @torch.no_grad()
    def _points(self, expr: Tensor, pose: Tensor) -> Tensor:
        """Surface points of the covered texels with the expression and jaw applied. [M, 3] m"""
        p = torch.zeros(self.num_joints * 3, device=self.device)
        if self.jaw >= 0:
            p[3 * self.jaw: 3 * self.jaw + 3] = pose[3 * self.jaw: 3 * self.jaw + 3]
        n_expr = int(self.avatar.blendshapes.delta_exprdirs.shape[-1])
        e = torch.zeros(n_expr, device=self.device)
        k = min(n_expr, expr.shape[0])
        e[:k] = expr[:k]
        verts, _ = self.avatar.posed_vertices(self.shape[None], e[None], p[None], None)
        return barycentric_points(verts[0], self.avatar.faces, self.face_idx, self.bary)

    def displacement(self, i: int) -> Tensor:
        """Frame i's scaled displacement of the covered texels, flattened. [3M]"""
        expr = torch.as_tensor(self.tracking["expr"][i], dtype=torch.float32, device=self.device)
        pose = torch.as_tensor(self.tracking["pose"][i], dtype=torch.float32, device=self.device)
        return ((self._points(expr, pose) - self.rest) / DISPLACEMENT_SCALE).reshape(-1)

    def project(self, x: Tensor) -> Tensor:
        """The PCA projection with ±2σ clipping (identity without components). [3M] → [3M]"""
        if self.basis is None:
            return x
        beta = (x - self.mean) @ self.basis.T
        beta = torch.maximum(torch.minimum(beta, 2 * self.sigma), -2 * self.sigma)
        return self.mean + beta @ self.basis

    def to_map(self, x: Tensor) -> Tensor:
        """Flattened texel values [3M] → map [1, 3, R, R] (uncovered texels 0)."""
        out = torch.zeros(self.R * self.R, 3, device=self.device)
        out[self.lin] = x.reshape(-1, 3)
        return out.T.reshape(1, 3, self.R, self.R)

    def frame_map(self, i: int) -> Tensor:
        """The conditioning map of frame i (any split). [1, 3, R, R]"""
        return self.to_map(self.project(self.displacement(i)))

    def state(self) -> dict[str, Tensor]:
        """The projection's tensors, saved with the BakeNet weights (``cond_*`` keys)."""
        out = {"cond_mean": self.mean, "cond_neutral": self.neutral}
        if self.basis is not None:
            out.update(cond_basis=self.basis, cond_sigma=self.sigma)
        return out
