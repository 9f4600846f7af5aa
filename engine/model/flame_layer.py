"""The differentiable FLAME layer: a :class:`~engine.model.head_model.HeadModel` evaluated with
``smplx.lbs.lbs`` (shape + expression blendshapes, pose correctives, LBS), with FATE's learnt
corrections ΔE, ΔP, Δ (Eq. 5) added to the bases before skinning."""

from __future__ import annotations

import torch
from smplx.lbs import lbs
from torch import Tensor, nn

from engine.errors import HeadModelError
from engine.model.head_model import HeadModel


# ------------------------------------------------------------------ FLAME layer
class FlameLayer(nn.Module):
    """FLAME forward model through ``smplx.lbs.lbs`` (differentiable in every input).

    Buffers (float32 unless noted): ``v_template`` [V, 3], ``shapedirs`` [V, 3, S],
    ``exprdirs`` [V, 3, E], ``posedirs`` [(J-1)*9, V*3], ``J_regressor`` [J, V],
    ``parents`` [J] int64, ``lbs_weights`` [V, J], ``faces`` [F, 3] int64 and
    ``faces_all`` [F+M, 3] int64 (mesh + mouth faces).

    Args:
        model: the head model.
    """

    def __init__(self, model: HeadModel) -> None:
        super().__init__()
        self.name = model.name
        self.joint_names = list(model.joint_names)
        f32 = torch.float32
        self.register_buffer("v_template", torch.as_tensor(model.v_template, dtype=f32))
        self.register_buffer("shapedirs", torch.as_tensor(model.shapedirs, dtype=f32))
        self.register_buffer("exprdirs", torch.as_tensor(model.exprdirs, dtype=f32))
        self.register_buffer("posedirs", torch.as_tensor(model.posedirs, dtype=f32))
        self.register_buffer("J_regressor", torch.as_tensor(model.J_regressor, dtype=f32))
        self.register_buffer("parents", torch.as_tensor(model.parents, dtype=torch.int64))
        self.register_buffer("lbs_weights", torch.as_tensor(model.lbs_weights, dtype=f32))
        self.register_buffer("faces", torch.as_tensor(model.faces, dtype=torch.int64))
        self.register_buffer("faces_all", torch.as_tensor(model.faces_all, dtype=torch.int64))

    @property
    def num_shape(self) -> int:
        return int(self.shapedirs.shape[2])

    @property
    def num_expr(self) -> int:
        return int(self.exprdirs.shape[2])

    @property
    def num_joints(self) -> int:
        return int(self.parents.shape[0])

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    def _coeffs(self, x: Tensor | None, limit: int, what: str, batch: int) -> Tensor:
        """Checks a [B|1, K<=limit] coefficient tensor and broadcasts it to [batch, K]."""
        dev, dt = self.v_template.device, self.v_template.dtype
        if x is None:
            return torch.zeros(batch, 0, device=dev, dtype=dt)
        x = torch.as_tensor(x).to(device=dev, dtype=dt)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[0] not in (1, batch):
            raise HeadModelError(f"FlameLayer {what}: expected [{batch}, K] or [1, K], found {tuple(x.shape)}")
        if x.shape[1] > limit:
            raise HeadModelError(
                f"FlameLayer {what}: {x.shape[1]} components given, the model {self.name!r} has {limit}"
            )
        return x.expand(batch, -1)

    def _with_delta_exprdirs(self, delta: Tensor) -> Tensor:
        """The expression basis with ΔE added to its first E_d components (FATE Eq. 5). [V, 3, E]

        Raises:
            HeadModelError: ΔE is not [V, 3, E_d] with E_d ≤ E.
        """
        V, _, E = self.exprdirs.shape
        if delta.ndim != 3 or tuple(delta.shape[:2]) != (V, 3) or delta.shape[2] > E:
            raise HeadModelError(f"FlameLayer delta_exprdirs: expected [{V}, 3, E_d <= {E}], "
                                 f"found {tuple(delta.shape)}")
        delta = delta.to(device=self.exprdirs.device, dtype=self.exprdirs.dtype)
        k = delta.shape[2]
        return torch.cat([self.exprdirs[:, :, :k] + delta, self.exprdirs[:, :, k:]], dim=2)

    def forward(
        self,
        shape: Tensor | None,
        expr: Tensor | None,
        pose: Tensor,
        delta_exprdirs: Tensor | None = None,
        delta_posedirs: Tensor | None = None,
        delta_vertices: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Posed vertices and joints (FLAME canonical frame, meters).

        Missing trailing shape/expression components count as zero (S' <= S, E' <= E);
        deltas are added to the bases before skinning (FATE Eq. 5):
        ``T' = T + ΔV``, ``E' = E + ΔE``, ``P' = P + ΔP``.

        Args:
            shape: identity coefficients, or None for zeros. [B, S'] or [1, S']
            expr: expression coefficients, or None for zeros. [B, E'] or [1, E']
            pose: axis-angle per joint (root, neck, jaw, eyes for FLAME), rad. [B, J*3]
            delta_exprdirs: learnt expression-basis offset, meters, for the first E_d ≤ E
                components (a dataset tracked with fewer coefficients than the model learns
                ΔE for those only, as FATE slices the basis to the dataset's count). [V, 3, E_d]
            delta_posedirs: learnt pose-corrective offset. [(J-1)*9, V*3]
            delta_vertices: learnt template offset, meters. [V, 3]
        Returns:
            verts: [B, V, 3]
            joints: posed joint locations. [B, J, 3]
        Raises:
            HeadModelError: wrong shapes or more components than the model has.
        """
        dev, dt = self.v_template.device, self.v_template.dtype
        V, J = self.num_vertices, self.num_joints
        pose = torch.as_tensor(pose).to(device=dev, dtype=dt)
        if pose.ndim == 1:
            pose = pose[None]
        if pose.ndim != 2 or pose.shape[1] != J * 3:
            raise HeadModelError(f"FlameLayer pose: expected [B, {J * 3}] axis-angle, found {tuple(pose.shape)}")
        B = pose.shape[0]
        betas_s = self._coeffs(shape, self.num_shape, "shape", B)
        betas_e = self._coeffs(expr, self.num_expr, "expr", B)
        S_, E_ = betas_s.shape[1], betas_e.shape[1]

        exprdirs = self.exprdirs
        if delta_exprdirs is not None:
            exprdirs = self._with_delta_exprdirs(delta_exprdirs)
        posedirs = self.posedirs
        if delta_posedirs is not None:
            if tuple(delta_posedirs.shape) != tuple(posedirs.shape):
                raise HeadModelError(
                    f"FlameLayer delta_posedirs: expected {tuple(posedirs.shape)}, found {tuple(delta_posedirs.shape)}"
                )
            posedirs = posedirs + delta_posedirs.to(device=dev, dtype=dt)
        v_template = self.v_template
        if delta_vertices is not None:
            if tuple(delta_vertices.shape) != (V, 3):
                raise HeadModelError(f"FlameLayer delta_vertices: expected ({V}, 3), found {tuple(delta_vertices.shape)}")
            v_template = v_template + delta_vertices.to(device=dev, dtype=dt)

        # Only the components given take part (equivalent to zero padding, cheaper).
        betas = torch.cat([betas_s, betas_e], dim=1)
        dirs = torch.cat([self.shapedirs[:, :, :S_], exprdirs[:, :, :E_]], dim=2)
        verts, joints = lbs(
            betas, pose, v_template, dirs, posedirs, self.J_regressor, self.parents,
            self.lbs_weights, pose2rot=True,
        )
        return verts, joints
