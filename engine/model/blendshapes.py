"""Learnable personalised blendshapes (FATE Eq. 5).

    T = LBS( B_P(Θ; P + ΔP) + B_E(Ψ; E + ΔE) ) with a per-vertex template offset Δ.

ΔE [V, 3, E], ΔP [(J-1)·9, V·3] (smplx's posedirs layout) and Δ [V, 3] start at zero and
are optimised with a small learning rate (supp. §7.2: 1e-5), regularised by the Laplacian and
FLAME terms of Eq. 14 (``engine.train.losses``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from engine.model.flame_layer import FlameLayer


class LearnedBlendshapes(nn.Module):
    """ΔE, ΔP and Δ for a head model.

    Args:
        num_vertices: V.
        num_expr: number of expression components used (E).
        num_pose_feats: rows of posedirs, (J-1)·9.
        enabled: when False the deltas stay zero and are not returned as parameters.
    """

    def __init__(self, num_vertices: int, num_expr: int, num_pose_feats: int, enabled: bool = True):
        super().__init__()
        self.enabled = enabled
        self.delta_exprdirs = nn.Parameter(torch.zeros(num_vertices, 3, num_expr), requires_grad=enabled)
        self.delta_posedirs = nn.Parameter(torch.zeros(num_pose_feats, num_vertices * 3), requires_grad=enabled)
        self.delta_vertices = nn.Parameter(torch.zeros(num_vertices, 3), requires_grad=enabled)

    def deltas(self) -> dict[str, Tensor]:
        """Keyword arguments for :meth:`engine.model.flame_layer.FlameLayer.forward`."""
        return {
            "delta_exprdirs": self.delta_exprdirs,
            "delta_posedirs": self.delta_posedirs,
            "delta_vertices": self.delta_vertices,
        }


def deform(flame: FlameLayer, blendshapes: LearnedBlendshapes | None, shape: Tensor, expr: Tensor,
           pose: Tensor, translation: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Posed vertices with and without the learnt blendshapes.

    Args:
        flame: the head model's LBS layer.
        blendshapes: learnt deltas, or None for plain FLAME.
        shape: [B, S]; expr: [B, E]; pose: [B, J·3] axis-angle; translation: [B, 3] meters or None.
    Returns:
        verts: with the learnt deltas, meters. [B, V, 3]
        verts_ref: plain FLAME (for the FLAME regulariser of Eq. 14), no grad. [B, V, 3]
    """
    deltas = blendshapes.deltas() if blendshapes is not None else {}
    verts, _ = flame(shape, expr, pose, **deltas)
    with torch.no_grad():
        verts_ref, _ = flame(shape, expr, pose) if deltas else (verts.detach(), None)
    if translation is not None:
        verts = verts + translation[:, None, :]
        verts_ref = verts_ref + translation[:, None, :]
    return verts, verts_ref
