"""Mouth-closing faces: triangles that close the gap between the lips.

FATE (supp., "each method incorporates the FLAME template with additional faces to
close the mouth cavity") and FlashAvatar add faces between FLAME's upper and lower
inner lip so that Gaussians can live in the mouth opening. We derive them from the
mesh itself, with no new vertices:

1. find the boundary loops (edges used by exactly one face), each ordered the way
   the faces around it traverse it;
2. pick the inner-lip loop: among loops whose bounding box straddles the
   mid-sagittal plane x = 0 (FLAME's mouth and neck; eye holes do not), the one whose
   centroid is most frontal (+z), and only if it lies in front of the mesh's median
   depth by 2 % of the mesh's depth (so a mesh with only a neck opening gets no
   mouth faces);
3. split the loop at its two mouth corners (smallest and largest x) into an upper
   and a lower chain and zip the chains into a triangle strip, advancing along
   whichever chain is behind in normalised arc length;
4. orient every strip triangle so that it traverses its loop edge opposite to the
   adjacent mesh face (consistent winding, normals facing out/forward like FLAME's).

For FLAME's texture-space template (``head_template_mesh.obj``) the inner-lip loop
has 32 vertices (the neck loop 30), giving 32 - 2 = 30 faces, the count FATE uses.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["boundary_loops", "select_mouth_loop", "lip_chains", "chain_arc_length", "mouth_closing_faces"]


def _directed_boundary_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boundary half-edges (as the faces traverse them) and their face index.

    Args:
        faces: triangles. [F, 3] int64
    Returns:
        edges [B, 2] int64 (a -> b in face winding order), face [B] int64.
    """
    f = np.asarray(faces, dtype=np.int64)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], axis=0)
    face_of = np.concatenate([np.arange(len(f))] * 3)
    key = np.sort(e, axis=1)
    _, inv, cnt = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    single = cnt[inv.reshape(-1)] == 1
    return e[single], face_of[single]


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """Boundary loops of a triangle mesh.

    Each loop is ordered as the adjacent faces traverse it (so for an outward-facing
    mesh the loop runs clockwise seen from outside the hole).

    Args:
        faces: triangles. [F, 3] int64
    Returns:
        list of vertex-index loops, each [L] int64, in order of their smallest vertex.
        A boundary vertex shared by two loops (a pinch) is walked only once; such
        non-manifold boundaries are logged.
    """
    edges, _ = _directed_boundary_edges(faces)
    nxt: dict[int, list[int]] = {}
    for a, b in edges.tolist():
        nxt.setdefault(a, []).append(b)
    if any(len(v) > 1 for v in nxt.values()):
        logger.warning("mesh boundary is not manifold: a vertex starts several boundary edges")
    used: set[tuple[int, int]] = set()
    loops: list[np.ndarray] = []
    for start in sorted(nxt):
        for first in nxt[start]:
            if (start, first) in used:
                continue
            loop = [start]
            a, b = start, first
            while True:
                used.add((a, b))
                if b == start:
                    break
                loop.append(b)
                cands = [c for c in nxt.get(b, []) if (b, c) not in used]
                if not cands:
                    break
                a, b = b, cands[0]
            loops.append(np.asarray(loop, dtype=np.int64))
    return loops


def select_mouth_loop(loops: list[np.ndarray], vertices: np.ndarray) -> np.ndarray | None:
    """Picks the inner-lip loop among the boundary loops (see module docstring, step 2).

    Args:
        loops: boundary loops from :func:`boundary_loops`.
        vertices: positions, FLAME canonical frame (+Y up, +Z out of the face). [V, 3]
    Returns:
        The chosen loop [L] int64, or None when no loop qualifies.
    """
    v = np.asarray(vertices, dtype=np.float64)
    if not loops:
        return None
    scale = float(np.ptp(v[:, 0])) or 1.0
    tol = 1e-3 * scale
    candidates = []
    for loop in loops:
        if len(loop) < 4:
            continue
        p = v[loop]
        straddles = p[:, 0].min() < -tol and p[:, 0].max() > tol
        centred = abs(p[:, 0].mean()) < 0.05 * scale
        if straddles and centred:
            candidates.append(loop)
    if not candidates:
        return None
    best = max(candidates, key=lambda lp: v[lp, 2].mean())
    if v[best, 2].mean() <= np.median(v[:, 2]) + 0.02 * float(np.ptp(v[:, 2])):
        return None  # not in front of the head: a neck or another opening, not lips
    return best


def _strip_between_chains(upper: np.ndarray, lower: np.ndarray, v: np.ndarray) -> list[tuple[int, int, int]]:
    """Zips two vertex chains that share their end vertices into triangles.

    Both chains run from the same corner to the same other corner. Returns
    len(upper) + len(lower) - 4 + 2 triangles (no degenerate ones), unoriented.
    """

    ta, tb = chain_arc_length(upper, v), chain_arc_length(lower, v)
    p, q = len(upper) - 1, len(lower) - 1
    i = j = 0
    tris: list[tuple[int, int, int]] = []
    while i < p or j < q:
        if i < p and (j == q or ta[i + 1] <= tb[j + 1]):
            tri = (int(upper[i]), int(upper[i + 1]), int(lower[j]))
            i += 1
        else:
            tri = (int(upper[i]), int(lower[j + 1]), int(lower[j]))
            j += 1
        if len(set(tri)) == 3:
            tris.append(tri)
    return tris


def lip_chains(faces: np.ndarray, vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The inner-lip loop split at its mouth corners (module docstring, steps 1–3).

    Args:
        faces: triangles. [F, 3] int64
        vertices: rest positions, FLAME canonical frame, meters. [V, 3]
    Returns:
        (upper, lower): vertex chains [Lu], [Ll] int64, both from the left corner (smallest x)
        to the right corner (largest x); or None (logged) when the mesh has no inner-lip loop.
    """
    v = np.asarray(vertices, dtype=np.float64)
    loops = boundary_loops(np.asarray(faces, dtype=np.int64))
    loop = select_mouth_loop(loops, v)
    if loop is None:
        logger.warning("no inner-lip boundary loop found among %d loops: no mouth faces", len(loops))
        return None
    n = len(loop)
    k_left = int(np.argmin(v[loop, 0]))
    k_right = int(np.argmax(v[loop, 0]))
    # Two chains from the left corner to the right corner, one each way round the loop.
    fwd = np.array([loop[(k_left + s) % n] for s in range(((k_right - k_left) % n) + 1)])
    bwd = np.array([loop[(k_left - s) % n] for s in range(((k_left - k_right) % n) + 1)])
    return (fwd, bwd) if v[fwd, 1].mean() >= v[bwd, 1].mean() else (bwd, fwd)


def chain_arc_length(chain: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Normalised arc length along a vertex chain: 0 at its first vertex, 1 at its last. [L]"""
    seg = np.linalg.norm(np.diff(np.asarray(vertices, np.float64)[chain], axis=0), axis=1)
    t = np.concatenate([[0.0], np.cumsum(seg)])
    return t / t[-1] if t[-1] > 0 else np.linspace(0.0, 1.0, len(chain))


def mouth_closing_faces(
    faces: np.ndarray,
    faces_uv: np.ndarray | None,
    vertices: np.ndarray,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Triangles that close the inner-lip opening (FATE / FlashAvatar mouth faces).

    Args:
        faces: mesh triangles. [F, 3] int64
        faces_uv: uv indices of each triangle corner, or None. [F, 3] int64
        vertices: rest positions, FLAME canonical frame (+Y up, +Z forward), meters. [V, 3]
    Returns:
        mouth_faces: new triangles over existing vertices only, wound consistently
            with the adjacent lip faces. [M, 3] int64 (M = loop size - 2; M = 0 when
            no inner-lip loop is found)
        mouth_faces_uv: uv index of each corner, taken from the adjacent face that
            uses the corner's loop edge (so no new uvs); None if ``faces_uv`` is None.
            [M, 3] int64
    """
    f = np.asarray(faces, dtype=np.int64)
    v = np.asarray(vertices, dtype=np.float64)
    empty = np.zeros((0, 3), dtype=np.int64)
    chains = lip_chains(f, v)
    if chains is None:
        return empty, (None if faces_uv is None else empty.copy())
    upper, lower = chains
    n = len(upper) + len(lower) - 2
    tris = np.asarray(_strip_between_chains(upper, lower, v), dtype=np.int64).reshape(-1, 3)

    # Orientation: a closing face must traverse each loop edge b -> a where the mesh has a -> b.
    edges, edge_face = _directed_boundary_edges(f)
    mesh_dir = {(int(a), int(b)): int(fi) for (a, b), fi in zip(edges, edge_face)}
    out = []
    for tri in tris.tolist():
        votes = 0
        for s in range(3):
            a, b = tri[s], tri[(s + 1) % 3]
            if (a, b) in mesh_dir:
                votes -= 1  # same direction as the mesh face: wrong way round
            elif (b, a) in mesh_dir:
                votes += 1
        if votes < 0:
            tri = [tri[0], tri[2], tri[1]]
        elif votes == 0:
            logger.warning("mouth face %s has no loop edge; orientation not checked", tri)
        out.append(tri)
    mouth = np.asarray(out, dtype=np.int64).reshape(-1, 3)
    logger.debug("inner-lip loop: %d vertices -> %d mouth faces", n, len(mouth))

    if faces_uv is None:
        return mouth, None
    ft = np.asarray(faces_uv, dtype=np.int64)
    # uv of each loop vertex: from the face that holds the loop edge starting at it.
    uv_of: dict[int, int] = {}
    for (a, b), fi in zip(edges.tolist(), edge_face.tolist()):
        if a in uv_of:
            continue
        corner = int(np.nonzero(f[fi] == a)[0][0])
        uv_of[a] = int(ft[fi, corner])
    mouth_uv = np.vectorize(lambda i: uv_of[int(i)], otypes=[np.int64])(mouth) if len(mouth) else empty.copy()
    return mouth, mouth_uv.astype(np.int64).reshape(-1, 3)
