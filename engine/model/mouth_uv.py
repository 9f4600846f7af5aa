"""The mouth-closing faces' own UV island.

The mouth-closing faces (:mod:`engine.model.mouth`) are built over the inner-lip vertices, so if
they reuse those vertices' UVs they cover a sliver of the atlas (on FLAME's texture space: UV area
5.6e-4, i.e. 35 Gaussians at 256² and 19 of the 30 faces with none), and on other layouts their
triangles can span the atlas and overlap other faces, so baked and painted texels would mix the
mouth with the nose or the forehead. FATE ships a template whose mouth has an island of its own
(UV area 8.8e-3 → 578 Gaussians at 256²).

Here the engine lays that island out itself, for any head model:

1. the strip between the upper and lower inner-lip chains is unrolled into a rectangle: a lip
   vertex at normalised arc length ``s`` along its chain goes to ``u = s``, the upper chain to the
   top edge, the lower chain to the bottom edge, the two mouth corners to mid-height of the left
   and right edges;
2. the rectangle (aspect ``ASPECT``, area ``TARGET_AREA`` — FATE's island's area) is placed in the
   largest free part of the atlas that holds it: the atlas's covered texels are rasterised at
   ``SEARCH_RESOLUTION``, grown by ``MARGIN_TEXELS``, and the first free position is taken
   (smaller islands, down to ``MIN_AREA``, and a rotated island are tried in turn);
3. each lip vertex of the strip gets a new UV coordinate (appended to the model's ``uvs``), so the
   mesh faces keep theirs.

When no free space is found the derived (lip) UVs are kept and a warning says so. A template that
already brings its own mouth faces with their own UVs (FATE's ``head_template_mouth_close.obj``)
is used as it is (:func:`engine.model.head_model.load_head_model`).
"""

from __future__ import annotations

import logging

import numpy as np

from engine.geometry.uv import island_mask
from engine.model.mouth import chain_arc_length, lip_chains, mouth_closing_faces

logger = logging.getLogger(__name__)

TARGET_AREA = 1.25e-2
"""UV area of the mouth island box; inside the edge inset (EDGE_INSET) that leaves ~8.8e-3 for the
faces, the area of FATE's template's mouth island (~578 Gaussians at 256²)."""
MIN_AREA = 2.0e-3
"""Smallest island worth placing (≈130 Gaussians at 256²); below it the lip UVs are kept."""
ASPECT = 4.0
"""Width : height of the island (a mouth is wider than it opens)."""
SEARCH_RESOLUTION = 512
"""Texels per side of the atlas mask the free space is searched in."""
MARGIN_TEXELS = 3
"""Free texels kept around the island at the search resolution (bilinear lookups and paint
brushes never reach into another island)."""
EDGE_INSET = 0.08
"""Fraction of the island's height and width left free inside it on each side, so texel centres
near its border still fall inside its triangles."""


def free_rectangle(uvs: np.ndarray, faces_uv: np.ndarray, area: float = TARGET_AREA,
                   aspect: float = ASPECT) -> tuple[float, float, float, float] | None:
    """A free axis-aligned rectangle of the UV atlas (no face's texels in it or near it).

    Tries ``area`` then smaller areas (×0.8 each time) down to :data:`MIN_AREA`, each wide
    (``aspect`` : 1) then tall (1 : ``aspect``).

    Args:
        uvs: [T, 2] OBJ convention (origin bottom-left).
        faces_uv: [F, 3] int64.
        area: wanted UV area.
        aspect: wanted width : height.
    Returns:
        (u0, v0, u1, v1) in OBJ convention, or None when nothing of at least MIN_AREA fits.
    """
    R = SEARCH_RESOLUTION
    used = island_mask(uvs, faces_uv, R)
    if MARGIN_TEXELS > 0:
        used = _dilate(used, MARGIN_TEXELS)
    table = np.zeros((R + 1, R + 1), np.int64)
    table[1:, 1:] = np.cumsum(np.cumsum(used, axis=0), axis=1)
    a = float(area)
    while a >= MIN_AREA:
        for asp in (aspect, 1.0 / aspect):
            w = int(np.ceil(np.sqrt(a * asp) * R))
            h = int(np.ceil(np.sqrt(a / asp) * R))
            if w >= R or h >= R:
                continue
            box = table[h:, w:] - table[:-h, w:] - table[h:, :-w] + table[:-h, :-w]
            free = np.argwhere(box == 0)  # [K, 2] top-left (row, col) of free h×w windows
            if len(free):
                r, c = free[0]
                return (c / R, 1.0 - (r + h) / R, (c + w) / R, 1.0 - r / R)
        a *= 0.8
    return None


def _dilate(mask: np.ndarray, k: int) -> np.ndarray:
    """Grows a boolean mask by ``k`` texels (square neighbourhood)."""
    out = mask.copy()
    R, C = mask.shape
    for dr in range(-k, k + 1):
        for dc in range(-k, k + 1):
            src = mask[max(0, -dr):R - max(0, dr), max(0, -dc):C - max(0, dc)]
            out[max(0, dr):R - max(0, -dr), max(0, dc):C - max(0, -dc)] |= src
    return out


def strip_layout(upper: np.ndarray, lower: np.ndarray, vertices: np.ndarray,
                 box: tuple[float, float, float, float]) -> dict[int, tuple[float, float]]:
    """UV of each lip vertex when the strip between the two chains is unrolled into ``box``.

    Args:
        upper, lower: vertex chains from the left to the right mouth corner. [Lu], [Ll] int64
        vertices: rest positions, meters. [V, 3]
        box: (u0, v0, u1, v1), OBJ convention.
    Returns:
        vertex index → (u, v); the corners sit at mid-height of the box's left and right edges.
    """
    u0, v0, u1, v1 = box
    du, dv = (u1 - u0) * EDGE_INSET, (v1 - v0) * EDGE_INSET
    u0, u1, v0, v1 = u0 + du, u1 - du, v0 + dv, v1 - dv
    out: dict[int, tuple[float, float]] = {}
    for chain, v in ((upper, v1), (lower, v0)):
        for k, s in zip(chain.tolist(), chain_arc_length(chain, vertices).tolist()):
            out[k] = (u0 + s * (u1 - u0), v)
    mid = 0.5 * (v0 + v1)
    out[int(upper[0])] = (u0, mid)
    out[int(upper[-1])] = (u1, mid)
    return out


def mouth_island(uvs: np.ndarray, faces: np.ndarray, faces_uv: np.ndarray, mouth_faces: np.ndarray,
                 vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """New UVs for the mouth-closing faces: an island of their own in a free part of the atlas.

    Args:
        uvs: the model's UV coordinates. [T, 2] OBJ convention
        faces: mesh triangles (without the mouth faces). [F, 3] int64
        faces_uv: their UV indices. [F, 3] int64
        mouth_faces: the mouth-closing triangles over the inner-lip vertices. [M, 3] int64
        vertices: rest positions, meters, FLAME frame. [V, 3]
    Returns:
        (uvs [T + L, 2] with one new coordinate per lip vertex, mouth_faces_uv [M, 3] int64 into
        them), or None (logged) when the mesh has no lip chains or the atlas has no free space.
    """
    if len(mouth_faces) == 0:
        return None
    chains = lip_chains(faces, vertices)
    if chains is None:
        return None
    box = free_rectangle(uvs, faces_uv)
    if box is None:
        logger.warning("no free space of UV area >= %.1e in the atlas: the mouth faces keep the lips' UVs "
                       "(few Gaussians in the mouth, baked texels shared with the lips)", MIN_AREA)
        return None
    layout = strip_layout(*chains, vertices, box)
    missing = sorted(set(np.unique(mouth_faces).tolist()) - set(layout))
    if missing:
        logger.warning("mouth faces use vertices %s outside the lip chains: keeping the lips' UVs", missing[:5])
        return None
    order = sorted(layout)
    new_index = {k: len(uvs) + i for i, k in enumerate(order)}
    new_uvs = np.asarray([layout[k] for k in order], dtype=np.float32)
    mouth_uv = np.vectorize(new_index.__getitem__, otypes=[np.int64])(np.asarray(mouth_faces, np.int64))
    area = (box[2] - box[0]) * (box[3] - box[1])
    logger.info("mouth island: UV box (%.3f, %.3f)–(%.3f, %.3f), area %.2e", *box, area)
    return np.concatenate([np.asarray(uvs, np.float32), new_uvs], axis=0), mouth_uv.reshape(-1, 3)


def close_mouth(uvs: np.ndarray, faces: np.ndarray, faces_uv: np.ndarray,
                vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mouth-closing faces with their own UV island (or the lips' UVs when none fits).

    Args:
        uvs: [T, 2]; faces: [F, 3] int64; faces_uv: [F, 3] int64; vertices: [V, 3] meters.
    Returns:
        (uvs [T' , 2], mouth_faces [M, 3] int64, mouth_faces_uv [M, 3] int64); M = 0 without lips.
    """
    mouth_faces, lip_uv = mouth_closing_faces(faces, faces_uv, vertices)
    lip_uv = np.zeros((0, 3), np.int64) if lip_uv is None else lip_uv
    island = mouth_island(uvs, faces, faces_uv, mouth_faces, vertices)
    if island is None:
        return np.asarray(uvs, np.float32), mouth_faces, lip_uv
    new_uvs, mouth_uv = island
    return new_uvs, mouth_faces, mouth_uv
