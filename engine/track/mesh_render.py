"""A small triangle-mesh rasteriser (numpy + OpenCV) for the tracker: face-id buffers, shaded or
textured images of a head mesh, silhouettes and wireframes.

Not a training renderer (that is :mod:`engine.raster`, Gaussians): it draws the mesh's triangles
back to front (painter's algorithm, ``cv2.fillConvexPoly`` with 1/16-pixel vertex positions) into a
face-id image; barycentric coordinates per pixel follow from the id (perspective-correct), and
colour from vertex normals (Lambert) and an optional texture. Exact enough for the small triangles
of a head mesh, where depth order between neighbours never matters at the pixel level.

Camera: OpenCV (x right, y down, z forward), ``K`` in pixels with pixel centres at integer + 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_SHIFT = 4  # fixed-point bits of cv2 polygon coordinates


@dataclass
class MeshRender:
    """A rasterised mesh.

    Attributes:
        face_id: [H, W] int64 triangle index per pixel, -1 = background.
        bary: [H, W, 3] float64 perspective-correct barycentric coordinates (0 on background).
        depth: [H, W] float64 camera z, meters (inf on background).
    """

    face_id: np.ndarray
    bary: np.ndarray
    depth: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """[H, W] bool: pixels covered by the mesh."""
        return self.face_id >= 0


def project(points: np.ndarray, viewmat: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points [..., 3] → pixels [..., 2] and camera depth [...] (OpenCV camera)."""
    p = np.asarray(points, np.float64) @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = p[..., 2]
    uv = p[..., :2] / np.maximum(z[..., None], 1e-9) * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    return uv, z


def rasterize_mesh(verts: np.ndarray, faces: np.ndarray, viewmat: np.ndarray, K: np.ndarray,
                   width: int, height: int, cull_backfaces: bool = True) -> MeshRender:
    """Face ids, barycentrics and depth of a mesh seen by a camera.

    Args:
        verts: [V, 3] world positions, meters.
        faces: [F, 3] int triangle vertex indices (counter-clockwise seen from outside).
        viewmat: [4, 4] world→camera, OpenCV axes.
        K: [3, 3] intrinsics, pixels.
        width, height: image size, pixels.
        cull_backfaces: skip triangles facing away from the camera.
    """
    import cv2

    faces = np.asarray(faces, np.int64)
    uv, z = project(verts, viewmat, K)
    tri_uv, tri_z = uv[faces], z[faces]
    keep = (tri_z > 1e-6).all(axis=1)
    if cull_backfaces:
        e1, e2 = tri_uv[:, 1] - tri_uv[:, 0], tri_uv[:, 2] - tri_uv[:, 0]
        keep &= (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]) < 0  # image y is down: CCW → negative area
    lo, hi = tri_uv.min(axis=1), tri_uv.max(axis=1)
    keep &= (hi[:, 0] >= 0) & (hi[:, 1] >= 0) & (lo[:, 0] <= width) & (lo[:, 1] <= height)
    order = np.flatnonzero(keep)
    order = order[np.argsort(-tri_z[order].mean(axis=1), kind="stable")]  # far to near
    ids = np.zeros((height, width, 3), np.uint8)
    # pixel centres at +0.5: cv2 puts pixel (i, j)'s centre at integer (j, i), so shift by -0.5
    pts = np.round((tri_uv - 0.5) * (1 << _SHIFT)).astype(np.int32)
    for f in order:
        code = int(f) + 1
        cv2.fillConvexPoly(ids, pts[f], (code & 255, (code >> 8) & 255, (code >> 16) & 255), cv2.LINE_8, _SHIFT)
    face_id = (ids[..., 0].astype(np.int64) | (ids[..., 1].astype(np.int64) << 8)
               | (ids[..., 2].astype(np.int64) << 16)) - 1
    bary = np.zeros((height, width, 3))
    depth = np.full((height, width), np.inf)
    yy, xx = np.nonzero(face_id >= 0)
    if len(yy):
        f = face_id[yy, xx]
        p = np.stack([xx + 0.5, yy + 0.5], axis=1)
        a, b, c = tri_uv[f, 0], tri_uv[f, 1], tri_uv[f, 2]
        v0, v1, v2 = b - a, c - a, p - a
        den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
        den = np.where(np.abs(den) < 1e-12, 1e-12, den)
        l1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
        l2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
        scr = np.clip(np.stack([1 - l1 - l2, l1, l2], axis=1), 0.0, 1.0)
        w = scr / tri_z[f]  # perspective-correct: screen weights / depth, renormalised
        w /= w.sum(axis=1, keepdims=True)
        bary[yy, xx] = w
        depth[yy, xx] = 1.0 / (scr / tri_z[f]).sum(axis=1) * scr.sum(axis=1)
    return MeshRender(face_id, bary, depth)


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals [V, 3]."""
    v = np.asarray(verts, np.float64)
    tri = v[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    out = np.zeros_like(v)
    for k in range(3):
        np.add.at(out, faces[:, k], n)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def shade(render: MeshRender, verts: np.ndarray, faces: np.ndarray, viewmat: np.ndarray,
          albedo: np.ndarray | None = None, uvs: np.ndarray | None = None, faces_uv: np.ndarray | None = None,
          background: tuple[float, float, float] = (0.5, 0.5, 0.5)) -> np.ndarray:
    """A Lambert-shaded image of a rasterised mesh, lit from the camera's upper left.

    Args:
        render: :func:`rasterize_mesh` of ``verts``/``faces``.
        viewmat: the camera it was rasterised with.
        albedo: optional texture [Ht, Wt, 3] float in [0, 1] (row 0 = v≈1, OBJ UVs);
            else a uniform skin tone.
        uvs, faces_uv: the texture's UVs [T, 2] and per-corner indices [F, 3] (with ``albedo``).
        background: RGB in [0, 1].
    Returns:
        [H, W, 3] uint8.
    """
    H, W = render.face_id.shape
    img = np.empty((H, W, 3))
    img[:] = background
    yy, xx = np.nonzero(render.mask)
    if not len(yy):
        return (img * 255 + 0.5).astype(np.uint8)
    f = render.face_id[yy, xx]
    b = render.bary[yy, xx]
    vn = vertex_normals(verts, faces)
    n = np.einsum("pk,pkc->pc", b, vn[faces[f]])
    n = n @ viewmat[:3, :3].T  # camera frame
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    light = np.array([-0.35, -0.45, -0.82])  # towards the light, camera frame (upper left, in front)
    light /= np.linalg.norm(light)
    lit = 0.35 + 0.65 * np.clip(n @ light, 0.0, 1.0)
    if albedo is not None and uvs is not None and faces_uv is not None:
        uv = np.einsum("pk,pkc->pc", b, uvs[faces_uv[f]])
        th, tw = albedo.shape[:2]
        col_i = np.clip((uv[:, 0] * tw).astype(np.int64), 0, tw - 1)
        row_i = np.clip(((1.0 - uv[:, 1]) * th).astype(np.int64), 0, th - 1)
        col = albedo[row_i, col_i, :3]
    else:
        col = np.array([0.80, 0.64, 0.54])
    img[yy, xx] = np.clip(col * lit[:, None], 0.0, 1.0)
    return (img * 255 + 0.5).astype(np.uint8)
