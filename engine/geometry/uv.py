"""UV rasterisation: texel centres → (face, barycentric) samples, and UV ↔ pixel helpers.

FATE binds Gaussians to the mesh through UV space (§3.1: "we uniformly sample ...
Gaussians in the UV space"): every texel centre of a ``res × res`` UV image that
falls inside a UV triangle gives one sample, identified by its face and its
barycentric coordinate, which also places it on the 3D mesh.

Conventions (docs/ARCHITECTURE.md): UVs follow the ``.obj`` convention, origin
bottom-left, u right, v up; image arrays are stored top row first, so texel
``(row, col)`` has its centre at ``u = (col + 0.5) / res``, ``v = 1 - (row + 0.5) / res``.
Pixel coordinates are continuous with pixel centres at integer + 0.5 (x = column,
y = row), the same convention as the engine's cameras.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "UVSamples",
    "sample_uv_texels",
    "uv_to_pixel",
    "pixel_to_uv",
    "island_mask",
    "uv_overlap_texels",
]

# Barycentric tolerance of the inside test: texel centres exactly on a shared edge
# count as inside (then go to one face only); 1e-6 is far below a texel at 8k.
_INSIDE_EPS = 1e-6
# Candidate texels handled per chunk (bounds the memory of the vectorised test).
_CHUNK_TEXELS = 1 << 22


@dataclass
class UVSamples:
    """Texel-centre samples of a UV layout.

    Attributes:
        face_idx: face containing each sample. [N] int64
        bary: barycentric coordinate in that face (sums to 1, >= 0). [N, 3] float32
        uv: the texel centre, OBJ convention (origin bottom-left). [N, 2] float32
        texel: (row, col) of the texel, row 0 = top of the image (v ≈ 1). [N, 2] int64
    """

    face_idx: np.ndarray
    bary: np.ndarray
    uv: np.ndarray
    texel: np.ndarray

    def __len__(self) -> int:
        return int(self.face_idx.shape[0])


def _texel_hits(
    uvs: np.ndarray, faces_uv: np.ndarray, resolution: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (texel, face) pairs whose texel centre lies inside the face's UV triangle.

    Args:
        uvs: [T, 2] OBJ convention.
        faces_uv: [F, 3] int64 into ``uvs``.
        resolution: texels per side.
    Returns:
        texel linear index row * res + col [H] int64, face [H] int64,
        barycentric [H, 3] float64 (may be down to -1e-6), sorted by texel then face.
    """
    res = int(resolution)
    if res <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    uv = np.asarray(uvs, dtype=np.float64)
    ft = np.asarray(faces_uv, dtype=np.int64).reshape(-1, 3)
    if len(ft) == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z.copy(), np.zeros((0, 3))
    # Pixel space: x = u * res, y = (1 - v) * res; texel centres at integer + 0.5.
    P = np.stack([uv[:, 0] * res, (1.0 - uv[:, 1]) * res], axis=-1)[ft]  # [F, 3, 2]
    a, b, c = P[:, 0], P[:, 1], P[:, 2]
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    ok = np.abs(det) > 1e-12
    # Texel centre k + 0.5 in [min, max]  <=>  k in [ceil(min - 0.5), floor(max - 0.5)].
    lo = np.clip(np.ceil(P.min(axis=1) - 0.5).astype(np.int64), 0, res - 1)
    hi = np.clip(np.floor(P.max(axis=1) - 0.5).astype(np.int64), 0, res - 1)
    w = np.where(ok, hi[:, 0] - lo[:, 0] + 1, 0).clip(min=0)
    h = np.where(ok, hi[:, 1] - lo[:, 1] + 1, 0).clip(min=0)
    count = w * h
    faces_all = np.nonzero(count > 0)[0]

    out_t, out_f, out_b = [], [], []
    start = 0
    csum = np.cumsum(count[faces_all])
    while start < len(faces_all):
        base = csum[start - 1] if start > 0 else 0
        stop = int(np.searchsorted(csum, base + _CHUNK_TEXELS, side="right"))
        stop = max(stop, start + 1)
        fids = faces_all[start:stop]
        cnt = count[fids]
        fi = np.repeat(fids, cnt)
        offs = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        col = lo[fi, 0] + offs % w[fi]
        row = lo[fi, 1] + offs // w[fi]
        px = col + 0.5
        py = row + 0.5
        ax, ay = a[fi, 0], a[fi, 1]
        d = det[fi]
        l1 = ((px - ax) * (c[fi, 1] - ay) - (c[fi, 0] - ax) * (py - ay)) / d
        l2 = ((b[fi, 0] - ax) * (py - ay) - (px - ax) * (b[fi, 1] - ay)) / d
        l0 = 1.0 - l1 - l2
        inside = (l0 >= -_INSIDE_EPS) & (l1 >= -_INSIDE_EPS) & (l2 >= -_INSIDE_EPS)
        out_t.append((row * res + col)[inside])
        out_f.append(fi[inside])
        out_b.append(np.stack([l0, l1, l2], axis=-1)[inside])
        start = stop
    t = np.concatenate(out_t)
    f = np.concatenate(out_f)
    bc = np.concatenate(out_b)
    order = np.lexsort((f, t))
    return t[order], f[order], bc[order]


def sample_uv_texels(uvs: np.ndarray, faces_uv: np.ndarray, resolution: int) -> UVSamples:
    """UV rasterisation: the face and barycentric coordinate of every covered texel centre.

    A texel centre inside several triangles (shared edges, or overlapping UVs) goes
    to the face where it is most interior (largest minimum barycentric), ties to the
    lowest face index. Samples are ordered by texel (row-major, top row first), so
    the result is deterministic.

    Args:
        uvs: texture coordinates, OBJ convention (origin bottom-left). [T, 2]
        faces_uv: uv indices per face corner. [F, 3] int64
        resolution: texels per side of the square UV image.
    Returns:
        :class:`UVSamples` with N = number of covered texels.
    """
    res = int(resolution)
    t, f, bc = _texel_hits(uvs, faces_uv, res)
    if len(t):
        score = bc.min(axis=1)
        order = np.lexsort((f, -score, t))
        t, f, bc = t[order], f[order], bc[order]
        first = np.ones(len(t), dtype=bool)
        first[1:] = t[1:] != t[:-1]
        t, f, bc = t[first], f[first], bc[first]
    bc = np.clip(bc, 0.0, None)
    bc = bc / bc.sum(axis=1, keepdims=True) if len(bc) else bc
    row, col = t // res, t % res
    uv = np.stack([(col + 0.5) / res, 1.0 - (row + 0.5) / res], axis=-1)
    return UVSamples(
        face_idx=f.astype(np.int64),
        bary=bc.astype(np.float32).reshape(-1, 3),
        uv=uv.astype(np.float32).reshape(-1, 2),
        texel=np.stack([row, col], axis=-1).astype(np.int64).reshape(-1, 2),
    )


def island_mask(uvs: np.ndarray, faces_uv: np.ndarray, resolution: int) -> np.ndarray:
    """Texels whose centre is covered by some UV triangle.

    Args:
        uvs: [T, 2] OBJ convention.
        faces_uv: [F, 3] int64.
        resolution: texels per side.
    Returns:
        mask, row 0 = top of the image (v ≈ 1). [res, res] bool
    """
    res = int(resolution)
    t, _, _ = _texel_hits(uvs, faces_uv, res)
    mask = np.zeros(res * res, dtype=bool)
    mask[t] = True
    return mask.reshape(res, res)


def uv_overlap_texels(
    uvs: np.ndarray, faces_uv: np.ndarray, resolution: int, margin: float = 1e-3
) -> int:
    """Counts texel centres strictly inside two or more UV triangles (a UV overlap check).

    Args:
        uvs: [T, 2] OBJ convention.
        faces_uv: [F, 3] int64.
        resolution: texels per side.
        margin: barycentric margin a centre must be inside a face by to count,
            so that centres on shared edges are not overlaps.
    Returns:
        number of texels covered more than once.
    """
    t, _, bc = _texel_hits(uvs, faces_uv, resolution)
    strict = bc.min(axis=1) > margin
    t = t[strict]
    if len(t) == 0:
        return 0
    _, cnt = np.unique(t, return_counts=True)
    return int((cnt > 1).sum())


def _stack_last(x0: Any, x1: Any, like: Any) -> Any:
    if isinstance(like, np.ndarray) or not hasattr(like, "new_tensor"):
        return np.stack([x0, x1], axis=-1)
    import torch

    return torch.stack([x0, x1], dim=-1)


def uv_to_pixel(uv: Any, resolution: int) -> Any:
    """UV (OBJ convention) → continuous pixel coordinates of a top-row-first image.

    Args:
        uv: [..., 2] (numpy array or torch tensor), origin bottom-left, v up.
        resolution: image side in pixels.
    Returns:
        [..., 2] (x = column, y = row), pixel centres at integer + 0.5, same type as ``uv``.
    """
    if not hasattr(uv, "new_tensor"):
        uv = np.asarray(uv, dtype=np.float64)
    return _stack_last(uv[..., 0] * resolution, (1.0 - uv[..., 1]) * resolution, uv)


def pixel_to_uv(xy: Any, resolution: int) -> Any:
    """Continuous pixel coordinates (x = column, y = row, top row first) → UV (OBJ convention).

    Inverse of :func:`uv_to_pixel`.

    Args:
        xy: [..., 2] (numpy array or torch tensor), pixel centres at integer + 0.5.
        resolution: image side in pixels.
    Returns:
        [..., 2] UV, origin bottom-left, same type as ``xy``.
    """
    if not hasattr(xy, "new_tensor"):
        xy = np.asarray(xy, dtype=np.float64)
    return _stack_last(xy[..., 0] / resolution, 1.0 - xy[..., 1] / resolution, xy)
