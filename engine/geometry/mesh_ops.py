"""Per-face quantities of a triangle mesh that UV-bound Gaussians ride on (FATE §3.1).

The face frame is the single definition shared by the engine (training, maps) and the
Blender splat runtime (``addon/splat_runtime.py`` re-implements it in numpy; a test
checks the two agree):

- ``e1 = normalize(v1 - v0)``
- ``n  = normalize(cross(v1 - v0, v2 - v0))`` (the face normal, right-hand rule)
- ``e2 = cross(n, e1)``
- ``R_f = [e1 | e2 | n]`` (columns), a proper rotation taking face-frame vectors to
  mesh (FLAME) coordinates;
- face scale ``k_f`` = mean of the three edge lengths, meters.
"""

from __future__ import annotations

import torch
from torch import Tensor

_EPS = 1e-12


def face_vertices(verts: Tensor, faces: Tensor) -> Tensor:
    """Gathers the corners of every face.

    Args:
        verts: vertex positions, meters. [..., V, 3]
        faces: vertex indices, int64. [F, 3]
    Returns:
        corners [..., F, 3 (corner), 3 (xyz)].
    """
    return verts[..., faces, :]


def face_frames(verts: Tensor, faces: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Rotation, scale and unit normal of every face.

    Args:
        verts: vertex positions, meters. [..., V, 3]
        faces: vertex indices, int64. [F, 3]
    Returns:
        R: face frames, columns (e1, e2, n). [..., F, 3, 3]
        k: face scale (mean edge length), meters. [..., F]
        n: unit face normals. [..., F, 3]
    """
    tri = face_vertices(verts, faces)
    a = tri[..., 1, :] - tri[..., 0, :]
    b = tri[..., 2, :] - tri[..., 0, :]
    c = tri[..., 2, :] - tri[..., 1, :]
    e1 = a / (a.norm(dim=-1, keepdim=True) + _EPS)
    n = torch.cross(a, b, dim=-1)
    n = n / (n.norm(dim=-1, keepdim=True) + _EPS)
    e2 = torch.cross(n, e1, dim=-1)
    R = torch.stack([e1, e2, n], dim=-1)
    k = (a.norm(dim=-1) + b.norm(dim=-1) + c.norm(dim=-1)) / 3.0
    return R, k, n


def barycentric_points(verts: Tensor, faces: Tensor, face_idx: Tensor, bary: Tensor) -> Tensor:
    """Surface points given by (face, barycentric) bindings: Σ_i bary_i · v_i (the UV map ℳ of Eq. 4).

    Args:
        verts: vertex positions, meters. [..., V, 3]
        faces: vertex indices, int64. [F, 3]
        face_idx: bound face of each point, int64. [N]
        bary: barycentric coordinates, rows sum to 1. [N, 3]
    Returns:
        points, meters. [..., N, 3]
    """
    tri = verts[..., faces[face_idx], :]  # [..., N, 3, 3]
    return (bary[..., None] * tri).sum(dim=-2)


def face_areas(verts: Tensor, faces: Tensor) -> Tensor:
    """Triangle areas, m². [..., F]"""
    tri = face_vertices(verts, faces)
    cr = torch.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :], dim=-1)
    return 0.5 * cr.norm(dim=-1)


def vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals. [..., V, 3]"""
    tri = face_vertices(verts, faces)
    fn = torch.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :], dim=-1)
    vn = torch.zeros_like(verts)
    for corner in range(3):
        vn = vn.index_add(-2, faces[:, corner], fn)
    return vn / (vn.norm(dim=-1, keepdim=True) + _EPS)
