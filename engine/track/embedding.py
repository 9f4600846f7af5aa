"""The landmark embedding: where each MediaPipe Face Mesh landmark lies on a head model's surface.

File (``python -m engine landmarks --head_model DIR --output FILE.npz``)::

    mediapipe_index [L] int64    MediaPipe landmark number (0–477)
    face_index      [L] int64    triangle of the model (its ``faces``, mouth faces excluded)
    barycentric     [L, 3] float32, rows sum to 1
    head_hash       str          sha256 of the model's template and faces (which model it is for)
    method          str          how it was computed

How it is computed (no third-party embedding file; the MediaPipe→FLAME files in circulation are
non-commercial): the model's neutral template is rendered (:mod:`engine.track.mesh_render`,
textured when an albedo is given, else a uniform skin tone) from a few views around the front
(yaw and pitch within ±12°), MediaPipe Face Mesh detects its 478 landmarks in each render, and
every landmark is back-projected through the face-id buffer to a surface point. Per landmark the
points of the views that see its surface within 60° of the view direction are combined (median per
coordinate) and snapped to the closest point of the mesh. This registers MediaPipe's own 3D face
geometry (the model's canonical face is what its landmark network predicts on) to the template; the
Apache-2.0 ``canonical_face_model.obj`` of MediaPipe's repository is not in the 0.10.21 wheel
(``mediapipe/modules/face_geometry/data`` is empty), so the detector itself is the reference.
The demo head (:mod:`engine.model.demo_head`) is rendered with its own albedo, i.e. from its own
construction: its eyes, brows and lips are where its builder put them.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import TrackError
from engine.track.detect import NUM_LANDMARKS, FaceMesh
from engine.track.mesh_render import rasterize_mesh, shade, vertex_normals

FORMAT = "fate-landmark-embedding"
VIEWS_DEG = ((0.0, 0.0), (-12.0, 0.0), (12.0, 0.0), (0.0, -8.0), (0.0, 8.0), (-8.0, 6.0), (8.0, 6.0))
"""(yaw, pitch) of the template renders, degrees."""


def head_hash(v_template: np.ndarray, faces: np.ndarray) -> str:
    """sha256 of a head model's template and faces (float32 / int64 bytes)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(v_template, np.float32).tobytes())
    h.update(np.ascontiguousarray(faces, np.int64).tobytes())
    return h.hexdigest()


@dataclass
class LandmarkEmbedding:
    """MediaPipe landmarks bound to a head model's triangles (module doc)."""

    mediapipe_index: np.ndarray  # [L] int64
    face_index: np.ndarray  # [L] int64
    barycentric: np.ndarray  # [L, 3] float32
    head_hash: str = ""
    method: str = "render-detect"

    def __len__(self) -> int:
        return len(self.mediapipe_index)

    def points(self, verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Landmark positions [L, 3] on a mesh with the model's faces."""
        tri = np.asarray(verts, np.float64)[np.asarray(faces)[self.face_index]]
        return np.einsum("lk,lkc->lc", self.barycentric.astype(np.float64), tri)

    def save(self, path: str | Path) -> None:
        """Writes the ``.npz`` (atomic)."""
        from engine.io.atomic import write_npz

        write_npz(Path(path), format=np.array(FORMAT), mediapipe_index=self.mediapipe_index.astype(np.int64),
                  face_index=self.face_index.astype(np.int64), barycentric=self.barycentric.astype(np.float32),
                  head_hash=np.array(self.head_hash), method=np.array(self.method))

    @classmethod
    def load(cls, path: str | Path, num_faces: int | None = None) -> "LandmarkEmbedding":
        """Reads and checks an embedding file.

        Args:
            num_faces: the head model's triangle count (face indices are checked against it).
        Raises:
            TrackError: missing file or arrays, wrong shapes, indices out of range.
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise TrackError(f"--embedding {path}: cannot read ({exc})") from exc
        for key in ("mediapipe_index", "face_index", "barycentric"):
            if key not in data:
                raise TrackError(f"--embedding {path}: array {key!r} missing")
        mp_i, f_i, bary = data["mediapipe_index"], data["face_index"], data["barycentric"]
        L = len(mp_i)
        if mp_i.shape != (L,) or f_i.shape != (L,) or bary.shape != (L, 3) or L == 0:
            raise TrackError(f"--embedding {path}: expected mediapipe_index [L], face_index [L], barycentric [L, 3]; "
                             f"found {mp_i.shape}, {f_i.shape}, {bary.shape}")
        if mp_i.min() < 0 or mp_i.max() >= NUM_LANDMARKS:
            raise TrackError(f"--embedding {path}: mediapipe_index outside 0..{NUM_LANDMARKS - 1}")
        if num_faces is not None and (f_i.min() < 0 or f_i.max() >= num_faces):
            raise TrackError(f"--embedding {path}: face_index outside the head model's {num_faces} triangles "
                             "(an embedding of another head model?)")
        if not np.isfinite(bary).all() or np.abs(bary.sum(1) - 1).max() > 1e-3:
            raise TrackError(f"--embedding {path}: barycentric rows must be finite and sum to 1")
        return cls(mp_i.astype(np.int64), f_i.astype(np.int64), bary.astype(np.float32),
                   str(data.get("head_hash", "")), str(data.get("method", "")))


# ---------------------------------------------------------------------- computing it
def template_camera(verts: np.ndarray, yaw_deg: float, pitch_deg: float, resolution: int,
                    fill: float = 0.55) -> tuple[np.ndarray, np.ndarray]:
    """A camera in front of the face (FLAME +Z) turned by yaw/pitch about the face's centre.

    The face's centre is the centre of the front half of the template's bounding box; the face's
    height (eyes to chin, ~ the front half's height x 0.6) fills ``fill`` of the image.
    Returns:
        viewmat [4, 4] world→camera (OpenCV), K [3, 3] pixels.
    """
    v = np.asarray(verts, np.float64)
    front = v[v[:, 2] > np.percentile(v[:, 2], 50)]
    lo, hi = front.min(0), front.max(0)
    centre = 0.5 * (lo + hi)
    height = float(hi[1] - lo[1])
    f = 2.5 * resolution
    dist = f * height / (fill * resolution / 0.6) + 0.0
    y, p = math.radians(yaw_deg), math.radians(pitch_deg)
    d = np.array([math.sin(y) * math.cos(p), math.sin(p), math.cos(y) * math.cos(p)])
    eye = centre + dist * d
    fwd = (centre - eye) / np.linalg.norm(centre - eye)  # camera +z
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)  # camera +x
    down = np.cross(fwd, right)  # camera +y
    R = np.stack([right, down, fwd])
    view = np.eye(4)
    view[:3, :3] = R
    view[:3, 3] = -R @ eye
    K = np.array([[f, 0, resolution / 2], [0, f, resolution / 2], [0, 0, 1.0]])
    return view, K


def closest_points_on_mesh(points: np.ndarray, verts: np.ndarray, faces: np.ndarray,
                           candidates: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """For each point [N, 3] the closest point on the mesh: (face index [N], barycentric [N, 3]).

    Exact among the ``candidates`` triangles with the nearest centroids (closest point on a
    triangle: Ericson, Real-Time Collision Detection §5.1.5, in barycentric form).
    """
    v = np.asarray(verts, np.float64)
    tri = v[faces]
    cen = tri.mean(axis=1)
    d2 = ((points[:, None, :] - cen[None]) ** 2).sum(-1)
    k = min(candidates, len(faces))
    cand = np.argpartition(d2, k - 1, axis=1)[:, :k]
    best_f = np.zeros(len(points), np.int64)
    best_b = np.zeros((len(points), 3))
    best_d = np.full(len(points), np.inf)
    for j in range(k):
        f = cand[:, j]
        b = _closest_bary(points, tri[f, 0], tri[f, 1], tri[f, 2])
        q = np.einsum("nk,nkc->nc", b, tri[f])
        d = ((q - points) ** 2).sum(-1)
        better = d < best_d
        best_d[better], best_f[better], best_b[better] = d[better], f[better], b[better]
    return best_f, best_b


def _closest_bary(p, a, b, c):
    """Barycentric coordinates [N, 3] of the closest point of triangles (a, b, c) to p (all [N, 3])."""
    ab, ac = b - a, c - a
    # project onto the plane, then clamp to the triangle by trying the three edges
    n = np.cross(ab, ac)
    nn = np.maximum((n * n).sum(-1), 1e-300)
    ap = p - a
    v = (np.cross(ap, ac) * n).sum(-1) / nn
    w = (np.cross(ab, ap) * n).sum(-1) / nn
    u = 1 - v - w
    out = np.stack([u, v, w], axis=1)
    inside = (u >= 0) & (v >= 0) & (w >= 0)
    if inside.all():
        return out
    best = np.full(len(p), np.inf)
    res = out.copy()
    for i, j in ((0, 1), (1, 2), (2, 0)):
        P = [a, b, c]
        e0, e1 = P[i], P[j]
        d = e1 - e0
        t = np.clip(((p - e0) * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-300), 0, 1)
        q = e0 + t[:, None] * d
        dist = ((q - p) ** 2).sum(-1)
        bc = np.zeros((len(p), 3))
        bc[np.arange(len(p)), i] = 1 - t
        bc[np.arange(len(p)), j] += t
        upd = (~inside) & (dist < best)
        best[upd] = dist[upd]
        res[upd] = bc[upd]
    return res


def compute_embedding(verts: np.ndarray, faces: np.ndarray, albedo: np.ndarray | None = None,
                      uvs: np.ndarray | None = None, faces_uv: np.ndarray | None = None,
                      resolution: int = 512, views=VIEWS_DEG, max_angle_deg: float = 60.0) -> LandmarkEmbedding:
    """Embeds the 478 MediaPipe landmarks on a mesh by rendering and detecting (module doc).

    Args:
        verts: [V, 3] neutral template, meters, FLAME frame (+Y up, +Z out of the face).
        faces: [F, 3] triangles.
        albedo, uvs, faces_uv: optional texture of the head (see :func:`mesh_render.shade`).
        resolution: render size, pixels.
        views: (yaw, pitch) degrees of the renders.
        max_angle_deg: a view counts for a landmark when the surface there faces it within this angle.
    Raises:
        TrackError: MediaPipe finds no face in the frontal render (not a face-like mesh).
    """
    verts = np.asarray(verts, np.float64)
    faces = np.asarray(faces, np.int64)
    vn = vertex_normals(verts, faces)
    mesh = FaceMesh(video_mode=False, max_faces=1, min_score=0.2)
    samples: list[list[np.ndarray]] = [[] for _ in range(NUM_LANDMARKS)]
    try:
        for k, (yaw, pitch) in enumerate(views):
            view, K = template_camera(verts, yaw, pitch, resolution)
            r = rasterize_mesh(verts, faces, view, K, resolution, resolution)
            img = shade(r, verts, faces, view, albedo, uvs, faces_uv)
            lm = mesh(img)
            if lm is None:
                if k == 0:
                    raise TrackError("MediaPipe found no face in a frontal render of the head model's template; "
                                     "the landmark embedding needs a face-like head")
                continue
            cam_dir = -view[2, :3]  # towards the camera, world frame
            px = np.clip(np.floor(lm[:, :2]).astype(np.int64), 0, resolution - 1)
            for i in range(NUM_LANDMARKS):
                x, y = px[i]
                fid = r.face_id[y, x]
                if fid < 0:
                    continue
                p = r.bary[y, x] @ verts[faces[fid]]
                n = r.bary[y, x] @ vn[faces[fid]]
                if float(n @ cam_dir) / max(np.linalg.norm(n), 1e-12) >= math.cos(math.radians(max_angle_deg)):
                    samples[i].append(p)
    finally:
        mesh.close()
    have = [i for i in range(NUM_LANDMARKS) if samples[i]]
    pts = np.array([np.median(np.array(samples[i]), axis=0) for i in have])
    f, b = closest_points_on_mesh(pts, verts, faces)
    return LandmarkEmbedding(np.array(have, np.int64), f, b.astype(np.float32), head_hash(verts, faces),
                             f"render-detect ({len(views)} views, mediapipe face mesh)")
