"""Per-texel re-splat density (numpy only): one Gaussian at every (k-th) covered texel of the maps.

The trained Gaussians sit where training put them, so a map texel between them never reaches
the render: painting detail finer than their spacing is lost. At "per texel" density the splat
engine instead places one Gaussian at the centre of every ``stride``-th texel (both directions)
that a UV triangle covers, with the texel's colour, opacity and offset, shaped like the texel
block it stands for. The engine's twin is ``engine.maps.texel_bindings``.

Shape: texel (row r from the bottom, column c) of a W×H map has its centre at
``uv = ((c + 0.5) / W, (r + 0.5) / H)``. On a face with rest corners ``p_i`` and UVs ``t_i`` the
UV → surface Jacobian is ``J = [p1 − p0, p2 − p0] · [t1 − t0, t2 − t0]⁻¹`` (m per UV unit), so one
texel block spans ``a = J[:, 0] · k / W`` and ``b = J[:, 1] · k / H``. An isotropic Gaussian of
``sigma`` texel blocks mapped by ``[a | b]`` has the tangent covariance ``σ² (a aᵀ + b bᵀ)``; its
eigenvectors give the rotation about the face normal and its eigenvalues the two in-plane
standard deviations (the normal one is :data:`THICKNESS` of the smaller). Like every FATE
Gaussian it is stored relative to the face frame and the face scale ``k_f`` (FATE Eq. 2–3), so it
stretches and turns with the posed mesh.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import face_frames

__all__ = ["TEXEL_SIGMA", "THICKNESS", "TexelSplats", "covered_texels", "texel_splats"]

TEXEL_SIGMA = 0.6
"""Standard deviation of a texel Gaussian, in texel blocks: neighbours overlap enough to cover
the surface without holes (uniform map, opacity 1: ≥ 95 % alpha between centres) while a
neighbour's weight at one texel is exp(−1/(2·0.6²)) ≈ 0.25, so a one-texel line stays a line."""
THICKNESS = 0.1
"""Normal standard deviation as a fraction of the smaller in-plane one (flat discs)."""

_INSIDE_EPS = 1e-6
_CHUNK = 1 << 21


@dataclass
class TexelSplats:
    """The bindings and shapes of per-texel Gaussians.

    Attributes:
        face_idx: face containing the texel centre. [N] int32
        bary: barycentric coordinates of the centre in that face. [N, 3] float32
        uv: the texel centre, OBJ convention (origin bottom-left). [N, 2] float32
        scale: standard deviations as multiples of the face scale k_f. [N, 3] float32
        rotation: axis-angle in the face frame (about its normal), rad. [N, 3] float32
    """

    face_idx: np.ndarray
    bary: np.ndarray
    uv: np.ndarray
    scale: np.ndarray
    rotation: np.ndarray

    def __len__(self) -> int:
        return int(self.face_idx.shape[0])


def covered_texels(corner_uvs: np.ndarray, width: int, height: int, stride: int = 1
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Texel centres (every ``stride``-th in u and v) inside the UV triangles.

    The centres used are those of texels ``c = k·j + k // 2``, ``r = k·i + k // 2``. A centre inside
    several triangles (shared edges, overlaps) goes to the face where it is most interior
    (largest minimum barycentric), ties to the lowest face index, as
    ``engine.geometry.uv.sample_uv_texels`` does.

    Args:
        corner_uvs: UVs of each triangle's corners, OBJ convention. [F, 3, 2]
        width, height: map size, texels.
        stride: k ≥ 1.
    Returns:
        face_idx [N] int32, bary [N, 3] float32, uv [N, 2] float32, ordered by texel (row from
        the bottom, then column).
    Raises:
        ValueError: a non-positive size or stride.
    """
    W, H, k = int(width), int(height), int(stride)
    if W < 1 or H < 1 or k < 1:
        raise ValueError(f"map size and stride must be positive, found {W}x{H}, stride {k}")
    nx, ny = (W - k // 2 + k - 1) // k, (H - k // 2 + k - 1) // k  # samples per row / column
    P = np.asarray(corner_uvs, np.float64) * np.array([W, H], np.float64)  # texel units
    a, b, c = P[:, 0], P[:, 1], P[:, 2]
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    ok = np.abs(det) > 1e-12
    # sample j sits at x = k·j + k//2 + 0.5; those in [min, max] of the triangle
    off = k // 2 + 0.5
    lo = np.clip(np.ceil((P.min(1) - off) / k), 0, [nx - 1, ny - 1]).astype(np.int64)
    hi = np.clip(np.floor((P.max(1) - off) / k), -1, [nx - 1, ny - 1]).astype(np.int64)
    w = np.where(ok, hi[:, 0] - lo[:, 0] + 1, 0).clip(min=0)
    h = np.where(ok, hi[:, 1] - lo[:, 1] + 1, 0).clip(min=0)
    count = w * h
    faces = np.nonzero(count > 0)[0]
    out_s, out_f, out_b = [], [], []
    csum = np.cumsum(count[faces])
    start = 0
    while start < len(faces):
        base = csum[start - 1] if start else 0
        stop = max(int(np.searchsorted(csum, base + _CHUNK, side="right")), start + 1)
        fi = np.repeat(faces[start:stop], count[faces[start:stop]])
        cnt = count[faces[start:stop]]
        offs = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        jx = lo[fi, 0] + offs % w[fi]
        jy = lo[fi, 1] + offs // w[fi]
        px, py = k * jx + off, k * jy + off
        ax, ay, d = a[fi, 0], a[fi, 1], det[fi]
        l1 = ((px - ax) * (c[fi, 1] - ay) - (c[fi, 0] - ax) * (py - ay)) / d
        l2 = ((b[fi, 0] - ax) * (py - ay) - (px - ax) * (b[fi, 1] - ay)) / d
        bc = np.stack([1.0 - l1 - l2, l1, l2], -1)
        inside = bc.min(1) >= -_INSIDE_EPS
        out_s.append((jy * nx + jx)[inside])
        out_f.append(fi[inside])
        out_b.append(bc[inside])
        start = stop
    if not out_s:
        return np.zeros(0, np.int32), np.zeros((0, 3), np.float32), np.zeros((0, 2), np.float32)
    s, f, bc = np.concatenate(out_s), np.concatenate(out_f), np.concatenate(out_b)
    order = np.lexsort((f, -bc.min(1), s))  # per sample: most interior first, then lowest face
    s, f, bc = s[order], f[order], bc[order]
    first = np.ones(len(s), bool)
    first[1:] = s[1:] != s[:-1]
    s, f, bc = s[first], f[first], np.clip(bc[first], 0.0, None)
    bc /= bc.sum(1, keepdims=True)
    jx, jy = s % nx, s // nx
    uv = np.stack([(k * jx + off) / W, (k * jy + off) / H], -1)
    return f.astype(np.int32), bc.astype(np.float32), uv.astype(np.float32)


def _face_texel_shapes(rest_verts: np.ndarray, faces: np.ndarray, corner_uvs: np.ndarray, width: int,
                       height: int, stride: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Per face: the texel Gaussian's scale multiples [F, 3] and its angle about the normal [F] (rad).

    Faces with a degenerate UV triangle get zeros (no texel centre falls inside them).
    """
    v = np.asarray(rest_verts, np.float64)
    tri = v[np.asarray(faces)]  # [F, 3, 3]
    t = np.asarray(corner_uvs, np.float64)  # [F, 3, 2]
    dP = np.stack([tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]], -1)  # [F, 3, 2]
    dT = np.stack([t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]], -1)  # [F, 2, 2]
    det = dT[:, 0, 0] * dT[:, 1, 1] - dT[:, 0, 1] * dT[:, 1, 0]
    ok = np.abs(det) > 1e-20
    inv = np.stack([np.stack([dT[:, 1, 1], -dT[:, 0, 1]], -1), np.stack([-dT[:, 1, 0], dT[:, 0, 0]], -1)], -2)
    inv /= np.where(ok, det, 1.0)[:, None, None]
    J = dP @ inv  # m per UV unit, [F, 3, 2]
    step = J * (np.array([stride / width, stride / height]) * sigma)  # one texel block · σ
    R_f, k_f, _ = face_frames(v.astype(np.float32), np.asarray(faces))
    local = np.einsum("fji,fjk->fik", R_f.astype(np.float64), step)[:, :2]  # in-plane, face frame
    C = local @ local.transpose(0, 2, 1)  # tangent covariance, m², [F, 2, 2]
    theta = 0.5 * np.arctan2(2.0 * C[:, 0, 1], C[:, 0, 0] - C[:, 1, 1])
    mean, half = 0.5 * (C[:, 0, 0] + C[:, 1, 1]), 0.5 * (C[:, 0, 0] - C[:, 1, 1])
    rad = np.sqrt(half ** 2 + C[:, 0, 1] ** 2)
    s1, s2 = np.sqrt(np.maximum(mean + rad, 0.0)), np.sqrt(np.maximum(mean - rad, 0.0))
    scale = np.stack([s1, s2, THICKNESS * s2], -1) / np.maximum(k_f.astype(np.float64), 1e-12)[:, None]
    return np.where(ok[:, None], scale, 0.0), np.where(ok, theta, 0.0)


def texel_splats(rest_verts: np.ndarray, faces: np.ndarray, corner_uvs: np.ndarray, width: int,
                 height: int, stride: int = 1, sigma: float = TEXEL_SIGMA) -> TexelSplats:
    """Per-texel Gaussians of a map size (see the module doc for their shape).

    Args:
        rest_verts: rest vertices, mesh (FLAME) frame, m. [V, 3]
        faces: triangles (mesh + mouth faces, the head's polygon order), int. [F, 3]
        corner_uvs: UVs of each triangle's corners, OBJ convention. [F, 3, 2]
        width, height: map size, texels.
        stride: one Gaussian per ``stride``-th texel in u and v.
        sigma: standard deviation in texel blocks.
    Returns:
        :class:`TexelSplats`.
    """
    face_idx, bary, uv = covered_texels(corner_uvs, width, height, stride)
    scale, theta = _face_texel_shapes(rest_verts, faces, corner_uvs, width, height, stride, sigma)
    rotation = np.zeros((len(face_idx), 3))
    rotation[:, 2] = theta[face_idx]
    scale = scale[face_idx]
    return TexelSplats(face_idx, bary, uv, scale.astype(np.float32), rotation.astype(np.float32))
