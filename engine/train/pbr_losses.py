"""The relightable avatar's regularisers (HRAvatar §3.4: ``λ_normal L_normal + λ_albedo L_albedo +
λ_tv TV(o)``; weights from HRAvatar's code, TrainConfig).

What differs from HRAvatar, and why:

- ``L_normal``: HRAvatar compares the rendered normal map with normals from the rendered depth.
  Here each Gaussian's shading normal is pulled towards the **bound mesh normal** (the bound
  face's vertex normals interpolated at its barycentric point, posed): ``mean(1 − N·N_mesh)``.
  Per Gaussian, so it needs no second rasterisation (on the CPU that would double a step).
- ``L_albedo``: HRAvatar pulls the rendered albedo towards the pseudo albedo of an off-the-shelf
  intrinsic-decomposition network; we ship no network. What that prior resolves — images under
  one lighting cannot tell a bright light on a dark face from the reverse — is fixed here by an
  **albedo-scale prior** instead: the opacity-weighted mean environment irradiance ``I_irr(N)``
  over the Gaussians seen in the frame is white and 1 (``Σ_c (mean_c − 1)²``), so the albedo
  carries the image's brightness and the light only its variation. A gauge, not a cue: it does
  not tell shading from albedo, the head turning under the fixed light does.
- ``TV(o)``: HRAvatar's total variation of the rendered roughness map becomes a total variation
  over the mesh: the mean ``|o_i − ō_f(i)|`` of each Gaussian to its face's mean, plus the mean
  ``|ō_f − ō_g|`` over faces sharing an edge (no second rasterisation either).
"""

from __future__ import annotations

import torch
from torch import Tensor

from engine.geometry.mesh_ops import vertex_normals
from engine.model.pbr import Shading


def mesh_normals_at(verts: Tensor, faces: Tensor, face_idx: Tensor, bary: Tensor) -> Tensor:
    """Smooth mesh normals at the Gaussians' bindings: the bound face's area-weighted vertex
    normals, interpolated barycentrically and normalised.

    Args:
        verts: posed vertices, meters. [V, 3]; faces: int64 [F, 3]
        face_idx: int64 [N]; bary: [N, 3]
    Returns:
        unit normals. [N, 3]
    """
    vn = vertex_normals(verts, faces)
    n = (bary[..., None] * vn[faces[face_idx]]).sum(-2)
    return torch.nn.functional.normalize(n, dim=-1)


def normal_loss(normals: Tensor, mesh_normals: Tensor) -> Tensor:
    """``mean(1 − N·N_mesh)`` over the Gaussians (0 when every normal follows the mesh)."""
    return (1.0 - (normals * mesh_normals).sum(-1)).mean()


def albedo_scale_loss(irradiance: Tensor, opacities: Tensor, visible: Tensor) -> Tensor:
    """``Σ_c (m_c − 1)²`` with ``m`` the opacity-weighted mean of ``I_irr(N)`` over the visible
    Gaussians (module doc).

    Args:
        irradiance: environment irradiance at each Gaussian's normal, linear. [N, 3]
        opacities: [N]; visible: bool [N] (e.g. ``radii > 0``).
    """
    w = opacities * visible.to(opacities.dtype)
    mean = (w[:, None] * irradiance).sum(0) / w.sum().clamp_min(1e-8)
    return (mean - 1.0).square().sum()


def face_adjacency(faces: Tensor) -> Tensor:
    """Pairs of faces that share an edge. [E, 2] int64"""
    f = faces.detach().cpu()
    edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).sort(dim=1).values
    owner = torch.arange(f.shape[0]).repeat(3)
    key = edges[:, 0] * (int(f.max()) + 1) + edges[:, 1]
    order = torch.argsort(key)
    key, owner = key[order], owner[order]
    same = key[1:] == key[:-1]
    return torch.stack([owner[:-1][same], owner[1:][same]], -1).to(faces.device)


def roughness_tv(roughness: Tensor, face_idx: Tensor, adjacency: Tensor, num_faces: int) -> Tensor:
    """Total variation of the roughness over the mesh (module doc).

    Args:
        roughness: [N]; face_idx: int64 [N]
        adjacency: :func:`face_adjacency`. [E, 2]
        num_faces: F.
    """
    count = torch.bincount(face_idx, minlength=num_faces).to(roughness.dtype)
    mean = torch.zeros(num_faces, dtype=roughness.dtype, device=roughness.device).index_add(0, face_idx, roughness)
    mean = mean / count.clamp_min(1.0)
    inner = (roughness - mean[face_idx]).abs().mean()
    both = (count[adjacency[:, 0]] > 0) & (count[adjacency[:, 1]] > 0)
    pairs = adjacency[both]
    across = (mean[pairs[:, 0]] - mean[pairs[:, 1]]).abs().mean() if len(pairs) else roughness.new_zeros(())
    return inner + across


class PBRRegularisers:
    """The three terms for one training run (the face adjacency computed once).

    Args:
        faces: mesh + mouth faces, int64. [F, 3]
        lambda_normal, lambda_albedo, lambda_tv: the weights (TrainConfig).
    """

    def __init__(self, faces: Tensor, lambda_normal: float, lambda_albedo: float, lambda_tv: float):
        self.faces = faces
        self.adjacency = face_adjacency(faces)
        self.weights = (float(lambda_normal), float(lambda_albedo), float(lambda_tv))

    def __call__(self, shading: Shading, verts: Tensor, face_idx: Tensor, bary: Tensor, opacities: Tensor,
                 radii: Tensor) -> Tensor:
        """The weighted sum for one frame.

        Args:
            shading: the frame's :class:`engine.model.pbr.Shading`.
            verts: posed vertices, meters. [V, 3]
            face_idx: int64 [N]; bary: [N, 3]; opacities: [N]
            radii: the rasteriser's radii (0 = not visible), px. [N]
        """
        w_n, w_a, w_tv = self.weights
        loss = shading.colors.new_zeros(())
        if w_n > 0:
            loss = loss + w_n * normal_loss(shading.normals, mesh_normals_at(verts, self.faces, face_idx, bary))
        if w_a > 0:
            loss = loss + w_a * albedo_scale_loss(shading.irradiance, opacities, radii > 0)
        if w_tv > 0:
            loss = loss + w_tv * roughness_tv(shading.roughness, face_idx, self.adjacency, self.faces.shape[0])
        return loss
