"""Built-in full-head completion in UV space (our stand-in for FATE §3.4's generative prior).

What the training views never saw (``engine.model.visibility``) is filled from what they saw:

- **opacity** from the closed template surface: the head mesh is closed (mouth-closing faces,
  eyeballs; only the neck's cut is open), so every unseen part of it is skin or scalp and becomes
  opaque (``closed_opacity``) — the see-through back of a monocular avatar disappears. Only what
  the video never saw is closed (:data:`OPACITY_SEEN_LO`, :data:`OPACITY_SEEN_HI`): what it saw,
  even at a grazing angle, keeps the bake's opacity;
- **colour, scale, rotation and offset** by a harmonic (Laplacian) fill over the *mesh*: the
  values the bake found at well-seen vertices are kept (a screened Poisson fit, weight ``λ·c_v``
  with c_v the vertex's seen confidence) and the unseen vertices take the smoothest continuation,
  ``(L + λC) x = λC y`` with L the graph Laplacian of the mesh. Its vertical edges weigh
  :data:`VERTICAL` of the horizontal ones, so the back continues the seen sides at the same
  height: hair seen at the temples and the crown runs around the scalp, the neck's skin around
  the neck (hairlines and necklines run across a head). A hairline lower at the back than at
  the front, as the demo head's, is beyond it (docs/benchmarks.md, "Full head"). Solving on the mesh and not on the UV image keeps
  the fill continuous across UV seams (the demo head's seam runs down the back of the head).
  Scale is filled on the log scale, rotation as axis-angle in the face frame.

The fill is interpolated to every texel inside the UV islands (barycentric, at texel centres)
and blended with the baked maps by the texel's visibility (``smoothstep(lo, hi)``): seen texels
keep their baked value. Texels outside every island take the nearest island value (push-pull),
so bilinear lookups at island borders never read stale values.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from engine.bake.direct_fit import _fill_holes, gaussian_blur
from engine.geometry.uv import sample_uv_texels
from engine.maps import MAP_SPECS, sample_map

SEEN_LO, SEEN_HI = 0.3, 0.8
"""Visibility below ``SEEN_LO`` counts as unseen, above ``SEEN_HI`` as seen (smoothstep between)."""

OPACITY_SEEN_LO, OPACITY_SEEN_HI = 0.05, 0.2
"""The same for opacity, lower: a part the video saw at all, even at a grazing angle, keeps the
opacity the bake found. Where the head mesh is larger than the person (a tracked shape, ears,
the neck's cut) training made it see-through on purpose; closing it put opaque skin over the
silhouette (main job, tracked parameters: −3.7 dB on the test frames)."""


def smoothstep(x: Tensor, lo: float = SEEN_LO, hi: float = SEEN_HI) -> Tensor:
    """0 below ``lo``, 1 above ``hi``, the cubic Hermite step between."""
    t = ((x - lo) / (hi - lo)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def texel_visibility(vertex_vis: Tensor, uvs: np.ndarray, faces: np.ndarray, faces_uv: np.ndarray,
                     resolution: int) -> Tensor:
    """The ``visibility`` map: vertex visibility interpolated at every texel centre.

    Args:
        vertex_vis: per vertex, [0, 1]. [V]
        uvs, faces, faces_uv: the head model's UVs [T, 2], faces [F, 3] and UV faces [F, 3]
            (mesh + mouth faces).
        resolution: map size R.
    Returns:
        [R, R, 1] float32, row 0 = top (v≈1); texels outside the islands take the nearest island
        texel's value.
    """
    return _texels_from_vertices(vertex_vis.float()[:, None], uvs, faces, faces_uv, resolution)


def _texels_from_vertices(values: Tensor, uvs, faces, faces_uv, resolution: int) -> Tensor:
    """Per-vertex values [V, C] → [R, R, C] map (barycentric at texel centres, push-pull outside)."""
    R = int(resolution)
    s = sample_uv_texels(uvs, faces_uv, R)
    f = torch.as_tensor(np.asarray(faces)[s.face_idx], dtype=torch.long)
    vals = (values[f] * torch.as_tensor(s.bary)[..., None]).sum(1)
    out = torch.zeros(R, R, values.shape[1])
    filled = torch.zeros(R, R, dtype=torch.bool)
    rows, cols = torch.as_tensor(s.texel[:, 0]), torch.as_tensor(s.texel[:, 1])
    out[rows, cols] = vals
    filled[rows, cols] = True
    return _fill_holes(out, filled)


def vertex_values(m: Tensor, uvs: np.ndarray, faces: np.ndarray, faces_uv: np.ndarray, num_vertices: int) -> Tensor:
    """A map read back at the mesh vertices: each vertex averages the map at its UV corners
    (a vertex on a UV seam has several).

    Args:
        m: [R, R, C] map.
        uvs, faces, faces_uv: as in :func:`texel_visibility`.
        num_vertices: V.
    Returns:
        [V, C] float32 (0 for vertices no face uses).
    """
    v = torch.as_tensor(np.asarray(faces).reshape(-1), dtype=torch.long)
    t = torch.as_tensor(np.asarray(faces_uv).reshape(-1), dtype=torch.long)
    pairs = torch.unique(torch.stack([v, t], 1), dim=0)
    vals = sample_map(m.float(), torch.as_tensor(uvs, dtype=torch.float32)[pairs[:, 1]])
    total = torch.zeros(num_vertices, m.shape[-1]).index_add_(0, pairs[:, 0], vals)
    count = torch.zeros(num_vertices).index_add_(0, pairs[:, 0], torch.ones(len(pairs)))
    return total / count.clamp_min(1)[:, None]


def harmonic_fill(values: np.ndarray, confidence: np.ndarray, faces: np.ndarray, weight: float = 100.0,
                  eps: float = 1e-6, verts: np.ndarray | None = None, vertical: float = 1.0) -> np.ndarray:
    """Screened-Poisson fill on the mesh: ``argmin_x Σ_edges a_e ‖x_i − x_j‖² + weight·Σ_v c_v ‖x_v − y_v‖²``.

    Args:
        values: y, per vertex. [V, C]
        confidence: c_v in [0, 1] (0 = unknown). [V]
        faces: int [F, 3] (edges of the graph).
        weight: λ; large keeps confident values.
        eps: a tiny pull to the confident mean, so parts with no confident vertex stay defined.
        verts: canonical vertex positions [V, 3] (FLAME frame, +Y up) for anisotropic edges.
        vertical: weight of a vertical edge relative to a horizontal one (edge weight
            ``a_e = vertical + (1 − vertical)·(1 − (Δy/|Δ|)²)``; 1 = isotropic). Below 1 the fill
            continues the seen surface at the same height — hairlines and necklines run across
            the head — instead of averaging the crown with the neck.
    Returns:
        x, [V, C] float64.
    """
    from scipy.sparse import coo_matrix, diags
    from scipy.sparse.linalg import splu

    V = values.shape[0]
    f = np.asarray(faces, dtype=np.int64)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e = np.unique(np.sort(e, axis=1), axis=0)
    a = np.ones(len(e))
    if verts is not None and vertical != 1.0:
        d = np.asarray(verts, np.float64)[e[:, 1]] - np.asarray(verts, np.float64)[e[:, 0]]
        up = d[:, 1] ** 2 / np.maximum((d ** 2).sum(1), 1e-18)
        a = vertical + (1.0 - vertical) * (1.0 - up)
    A = coo_matrix((np.r_[a, a], (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(V, V)).tocsr()
    L = diags(np.asarray(A.sum(1)).ravel()) - A
    c = weight * np.clip(confidence, 0, 1).astype(np.float64)
    y = values.astype(np.float64)
    mean = (y * confidence[:, None]).sum(0) / max(float(confidence.sum()), 1e-9)
    lu = splu((L + diags(c + eps)).tocsc())
    return lu.solve(c[:, None] * y + eps * mean[None])


VERTICAL = 0.1
"""Relative weight of vertical mesh edges in the fill (:func:`harmonic_fill`)."""


def seen_weights(vertex_vis: Tensor, head, resolution: int, opacity_vis: Tensor | None = None) -> dict[str, Tensor]:
    """How much of its baked (seen) value each texel keeps in the completion, per map (module
    doc): ``smoothstep(visibility)`` between :data:`SEEN_LO` and :data:`SEEN_HI`, for opacity
    between :data:`OPACITY_SEEN_LO` and :data:`OPACITY_SEEN_HI` of ``opacity_vis``.

    Args:
        vertex_vis: per-vertex visibility [V]; opacity_vis: the any-angle one [V] (None = vertex_vis).
        head: the head model (``uvs``, ``faces_all``, ``faces_uv_all``).
        resolution: R.
    Returns:
        map name → weight in [0, 1] [R, R, 1] float32 (1 = the baked value is kept).
    """
    uvs, faces, faces_uv = head.uvs, head.faces_all, head.faces_uv_all
    seen = _texels_from_vertices(smoothstep(vertex_vis.float())[:, None], uvs, faces, faces_uv, resolution)
    ovis = (vertex_vis if opacity_vis is None else opacity_vis).float()
    seen_opacity = _texels_from_vertices(smoothstep(ovis, OPACITY_SEEN_LO, OPACITY_SEEN_HI)[:, None],
                                         uvs, faces, faces_uv, resolution)
    return {name: (seen_opacity if name == "opacity" else seen) for name in MAP_SPECS}


@torch.no_grad()
def complete_maps(maps: dict[str, Tensor], vertex_vis: Tensor, head, closed_opacity: float = 0.995,
                  weight: float = 100.0, vertical: float = VERTICAL,
                  opacity_vis: Tensor | None = None) -> dict[str, Tensor]:
    """The built-in completion of baked maps (module doc).

    Args:
        maps: name → activated map [R, R, C] (the five attribute maps, engine.maps units).
        vertex_vis: per-vertex visibility [V] (``engine.model.visibility.Visibility.vertex``).
        head: the head model (``uvs``, ``faces_all``, ``faces_uv_all``, ``num_vertices``).
        closed_opacity: opacity of the unseen closed surface.
        weight: λ of :func:`harmonic_fill`.
        vertical: its relative weight of vertical edges (on the head model's template).
        opacity_vis: per-vertex visibility counting every angle (``min_cos`` 0) [V], deciding
            where opacity is closed; None = ``vertex_vis``.
    Returns:
        name → completed map [R, R, C] float32 (no NaN; every texel defined).
    """
    R = next(iter(maps.values())).shape[0]
    uvs, faces, faces_uv, V = head.uvs, head.faces_all, head.faces_uv_all, head.num_vertices
    keep = seen_weights(vertex_vis, head, R, opacity_vis)
    conf = smoothstep(vertex_vis.float()).numpy()
    out = {}
    for name in MAP_SPECS:
        m = maps[name].float().cpu()
        if m.ndim == 2:
            m = m[..., None]
        if name == "opacity":
            fill = torch.full_like(m, float(closed_opacity))
        else:
            domain = torch.log(m.clamp_min(1e-8)) if name == "scale" else m
            y = vertex_values(gaussian_blur(domain, 1.0), uvs, faces, faces_uv, V).numpy()
            x = torch.as_tensor(harmonic_fill(y, conf, faces, weight, verts=head.v_template, vertical=vertical),
                                dtype=torch.float32)
            fill = _texels_from_vertices(x, uvs, faces, faces_uv, R)
            if name == "scale":
                fill = fill.exp()
        w = keep[name]
        blended = w * m + (1 - w) * fill
        out[name] = blended if maps[name].ndim == 3 else blended[..., 0]
    return out
