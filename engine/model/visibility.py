"""How much of each Gaussian the training views saw (for FATE §3.4's completion).

Rendered weight. The colour of a pixel is ``C(p) = Σᵢ cᵢ αᵢ(p) Tᵢ(p) + T(p)·bg`` (3DGS), so
``∂(Σ_p C(p)) / ∂cᵢ = Σ_p αᵢ(p) Tᵢ(p) =: wᵢ`` — the share of the image Gaussian i paints, in
pixels. One extra backward of ``image.sum()`` with respect to the colours gives every ``wᵢ`` of a
frame, with any rasteriser (the PyTorch reference or gsplat).

Normalisation (our choice; FATE has no visibility). A Gaussian's weight alone depends on its size
and on how many neighbours overlap it, so the weights are normalised per *face*: for frame f,

    seen_f(face) = clamp( Σ_{i bound to face} wᵢ  /  A⁺_f(face), 0, 1 )

where ``A⁺_f`` is the face's projected area in pixels when the face is turned towards the camera
by more than ``min_cos`` (cos of the angle between its normal and the direction to the camera),
else the face does not count in that frame. For an opaque, unoccluded surface the Gaussians of a
face paint about its projected area (every pixel's weights sum to its alpha, 1), so a fully seen
face scores ≈ 1; an occluded or back-facing face 0. The weights are rendered with every Gaussian
at opacity :data:`SURFACE_OPACITY` (the head as its closed, opaque surface), so a part that
training left transparent still counts as seen when the views saw it. The
face's visibility is the best frame's score (``max_f``): seen once, head-on and unoccluded, is
seen. Vertices average their faces, and a Gaussian takes the barycentric interpolation of its
face's vertex values, so the visibility varies smoothly over the surface (and over UV maps).

Files: ``visibility.safetensors`` in the avatar folder (``gaussian`` [N], ``face`` [F + M],
``vertex`` [V], float32 in [0, 1]; metadata ``frames``): written by the trainer, read by the
baker (which writes the ``visibility`` map, docs/FORMATS.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from engine.geometry.cameras import Camera
from engine.geometry.mesh_ops import face_frames, face_vertices
from engine.model.gaussians import WorldGaussians
from engine.raster import rasterize

log = logging.getLogger(__name__)

VISIBILITY_FILE = "visibility.safetensors"
"""File name inside the avatar folder (also ``AvatarFolder.VISIBILITY``)."""

MIN_COS = 0.3
"""A face counts in a frame when cos(normal, direction to the camera) exceeds this (~73°)."""

FULL_COS = 0.6
"""Faces seen at cos >= this (~53° or closer to head-on) count fully; more grazing views count
linearly less (``min(1, cos / FULL_COS)``): a surface only ever seen near the silhouette was
barely seen (few pixels, blended with the background)."""

SURFACE_OPACITY = 0.99
"""Opacity every Gaussian gets in the visibility pass: visibility is about the *surface* (the
closed head occluding itself), not about how opaque training left it."""

RINGS = 3
"""Vertex neighbourhood (edge rings) over which painted weight and projected area are summed."""


@dataclass
class Visibility:
    """Visibility of the avatar's surface over a set of views, each value in [0, 1].

    Attributes:
        face: per face (mesh + mouth faces). [F] float32
        vertex: per vertex (mean of its faces). [V] float32
        gaussian: per Gaussian (its face's vertex values at its barycentric coordinate). [N] float32
        frames: how many views were accumulated.
    """

    face: Tensor
    vertex: Tensor
    gaussian: Tensor
    frames: int


def rendered_weights(g: WorldGaussians, camera: Camera, backend: str = "auto",
                     opacity: float | None = SURFACE_OPACITY) -> Tensor:
    """Each Gaussian's rendered weight ``wᵢ = Σ_p αᵢ(p) Tᵢ(p)`` in one view (module doc).

    Args:
        g: placed Gaussians (any autograd state; they are detached here).
        camera: the view.
        backend: rasteriser ("auto", "torch" or "gsplat").
        opacity: every Gaussian's opacity for this pass (None = their own).
    Returns:
        weights, pixels (0 for Gaussians that paint nothing). [N] float32
    """
    colors = g.colors.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        op = g.opacities.detach() if opacity is None else torch.full_like(g.opacities.detach(), float(opacity))
        out = rasterize(g.means.detach(), g.covars.detach(), op, colors, camera,
                        torch.zeros(3, device=colors.device), backend=backend)
        (grad,) = torch.autograd.grad(out.image[..., 0].sum(), colors)
    return grad[:, 0].clamp_min(0.0)


def projected_face_areas(verts: Tensor, faces: Tensor, camera: Camera, min_cos: float = MIN_COS,
                         with_cos: bool = False):
    """Projected area of each face that is turned towards the camera (``A⁺`` of the module doc).

    Args:
        verts: posed vertices, meters, world frame. [V, 3]
        faces: int64 [F, 3].
        camera: OpenCV camera.
        min_cos: faces whose cos(normal, direction to the camera) is at most this get 0.
        with_cos: also return each face's cos(normal, direction to the camera) [F].
    Returns:
        areas, pixels²; 0 for faces turned away, behind the camera or with their centroid outside
        the image. [F]
    """
    R, t = camera.viewmat[:3, :3], camera.viewmat[:3, 3]
    cam = verts @ R.T + t  # [V, 3] camera frame
    z = cam[:, 2].clamp_min(1e-6)
    uv = torch.stack([camera.K[0, 0] * cam[:, 0] / z + camera.K[0, 2],
                      camera.K[1, 1] * cam[:, 1] / z + camera.K[1, 2]], dim=-1)
    tri = uv[faces]  # [F, 3, 2]
    a, b = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area = 0.5 * (a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).abs()
    _, _, n = face_frames(verts, faces)
    centroid = face_vertices(verts, faces).mean(dim=1)
    to_cam = camera.center.to(verts) - centroid
    cos = (n * to_cam).sum(-1) / to_cam.norm(dim=-1).clamp_min(1e-12)
    c = tri.mean(dim=1)
    inside = (c[:, 0] >= 0) & (c[:, 0] < camera.width) & (c[:, 1] >= 0) & (c[:, 1] < camera.height)
    front = (cos > min_cos) & (cam[faces][:, :, 2] > 0).all(-1) & inside
    area = torch.where(front, area, torch.zeros_like(area))
    return (area, cos) if with_cos else area


@torch.no_grad()
def accumulate_visibility(views: Iterable[tuple[Tensor, WorldGaussians, Camera]], faces: Tensor, face_idx: Tensor,
                          bary: Tensor, num_vertices: int, backend: str = "auto",
                          min_cos: float = MIN_COS, full_cos: float = FULL_COS) -> Visibility:
    """Visibility of every vertex, face and Gaussian over a set of views (module doc).

    The ratio painted weight / projected area is formed per vertex neighbourhood (the vertex and
    its :data:`RINGS` edge rings): each Gaussian's weight goes to its face's corners by its
    barycentric coordinates, each face's area in thirds to its corners, and both are summed over
    the neighbourhood before dividing, so a face with few or no Gaussians of its own (sparse
    sampling, pruning) is not read as unseen. Each frame's ratio is weighted by the view's
    obliquity (:data:`FULL_COS`), and the best frame counts.

    Args:
        views: per view the posed vertices [V, 3], the Gaussians placed on them and the camera.
        faces: mesh + mouth faces the Gaussians are bound to, int64. [F, 3]
        face_idx: each Gaussian's face, int64. [N]
        bary: each Gaussian's barycentric coordinates. [N, 3]
        num_vertices: V.
        backend: rasteriser.
        min_cos: see :func:`projected_face_areas`.
        full_cos: faces seen at cos >= this count fully, more grazing ones linearly less
            (:data:`FULL_COS`); 0 = every view that sees a face at all counts fully.
    Returns:
        :class:`Visibility` (on the CPU).
    """
    V = int(num_vertices)
    corner = faces[face_idx].reshape(-1)  # [N·3]
    ring = _one_ring(faces, V)
    best = torch.zeros(V, device=faces.device)
    n = 0
    for verts, g, cam in views:
        w = rendered_weights(g, cam, backend)
        painted = torch.zeros(V, device=w.device).index_add_(0, corner, (w[:, None] * bary).reshape(-1))
        area, cos = projected_face_areas(verts, faces, cam, min_cos, with_cos=True)
        flat = faces.reshape(-1)
        area_v = torch.zeros(V, device=w.device).index_add_(0, flat, (area / 3).repeat_interleave(3))
        obliquity = (cos / full_cos).clamp(0, 1) if full_cos > 0 else torch.ones_like(cos)
        quality = torch.zeros(V, device=w.device).index_add_(
            0, flat, (area / 3 * obliquity).repeat_interleave(3))
        for _ in range(RINGS):
            painted, area_v, quality = ring(painted), ring(area_v), ring(quality)
        score = torch.where(area_v > 0, painted / area_v.clamp_min(1e-9), torch.zeros_like(area_v)).clamp(0, 1)
        score = score * torch.where(area_v > 0, quality / area_v.clamp_min(1e-9), torch.zeros_like(area_v))
        best = torch.maximum(best, score)
        n += 1
    return _spread(best, faces, face_idx, bary, n)


def _one_ring(faces: Tensor, num_vertices: int):
    """``x ↦`` x summed over each vertex and its edge neighbours (a function of [V] tensors)."""
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = torch.unique(torch.cat([e, e.flip(1)]), dim=0)

    def ring(x: Tensor) -> Tensor:
        return x.clone().index_add_(0, e[:, 0], x[e[:, 1]])

    return ring


def _spread(vertex: Tensor, faces: Tensor, face_idx: Tensor, bary: Tensor, frames: int) -> Visibility:
    """Vertex values → face means and Gaussian barycentric interpolation."""
    face = vertex[faces].mean(-1)
    gauss = (vertex[faces[face_idx]] * bary).sum(-1)
    return Visibility(face.float().cpu(), vertex.float().cpu(), gauss.clamp(0, 1).float().cpu(), int(frames))


def evenly_spaced(indices: list[int], count: int) -> list[int]:
    """``count`` entries of ``indices`` spread evenly over it (all of them when count <= 0 or
    count >= len)."""
    if count <= 0 or count >= len(indices):
        return list(indices)
    pick = np.linspace(0, len(indices) - 1, count).round().astype(int)
    return [indices[k] for k in pick]


def sequence_visibility(avatar, seq, indices: list[int], device: torch.device, backend: str = "auto") -> Visibility:
    """Visibility of a trained avatar over frames ``indices`` of the sequence it was trained on.

    Args:
        avatar: :class:`engine.model.avatar.Avatar`.
        seq: :class:`engine.data.sequence.Sequence` (tracking corrections of the avatar applied).
        indices: frame indices.
        device: where to render.
        backend: rasteriser.
    """
    from engine.model.avatar import frame_inputs

    def views():
        for i in indices:
            shape, expr, pose, trans, cam = frame_inputs(avatar, seq, i, device)
            verts, _ = avatar.posed_vertices(shape[None], expr[None], pose[None], trans[None])
            yield verts[0], avatar.gaussians.place(verts[0], avatar.faces), cam

    g = avatar.gaussians
    with torch.no_grad():
        return accumulate_visibility(views(), avatar.faces, g.face_idx, g.bary, avatar.head.num_vertices, backend)


def tracking_visibility(avatar, tracking: dict, indices: list[int], device: torch.device,
                        backend: str = "auto", min_cos: float = MIN_COS,
                        full_cos: float = FULL_COS) -> Visibility:
    """:func:`sequence_visibility` from an avatar folder's ``tracking.npz`` (as loaded by
    ``AvatarFolder.load``) instead of a sequence — for avatars saved without visibility, and, with
    ``min_cos`` and ``full_cos`` 0, for the bake's "seen at any angle" (the full-head stage's
    opacity: see :func:`accumulate_visibility`)."""
    def views():
        shape = torch.as_tensor(tracking["shape"], device=device)
        for i in indices:
            expr = torch.as_tensor(tracking["expr"][i], device=device)
            pose = torch.as_tensor(tracking["pose"][i], device=device)
            trans = torch.as_tensor(tracking["translation"][i], device=device)
            cam = Camera(torch.as_tensor(tracking["viewmat"][i], device=device),
                         torch.as_tensor(tracking["K"][i], device=device), int(tracking["width"]),
                         int(tracking["height"]))
            verts, _ = avatar.posed_vertices(shape[None], expr[None], pose[None], trans[None])
            yield verts[0], avatar.gaussians.place(verts[0], avatar.faces), cam

    g = avatar.gaussians
    with torch.no_grad():
        return accumulate_visibility(views(), avatar.faces, g.face_idx, g.bary, avatar.head.num_vertices, backend,
                                    min_cos, full_cos)


BACKGROUND_MASK = 0.1
"""A frame's mask below this at a vertex's projection: the frame shows background there."""

BACKGROUND_MARGIN = 2
"""… and within this many mask pixels around it (the person dilated first): a vertex on the
true silhouette, half over the background, is not outside it."""


@torch.no_grad()
def over_background(avatar, tracking: dict, mask_of, indices: list[int], device: torch.device,
                    threshold: float = BACKGROUND_MASK) -> Tensor:
    """Per vertex, whether some training frame shows *background* where the vertex projects (its
    person mask below ``threshold``, inside the image): the surface there lies outside the
    person's silhouette (a visual-hull test, the person dilated by :data:`BACKGROUND_MARGIN`
    pixels), whatever the occlusion, so training made it see-through on purpose — a tracked mesh
    larger than the head, a neck below the mask's cut.

    Args:
        avatar: the loaded avatar (``posed_vertices``, ``head.num_vertices``).
        tracking: ``tracking.npz`` arrays (shape, expr, pose, translation, viewmat, K, width, height).
        mask_of: frame index → its mask [H, W, 1] float in [0, 1] (any size: sampled at the
            vertex's relative image position).
        indices: the frames to test.
        device: torch device.
        threshold: see :data:`BACKGROUND_MASK`.
    Returns:
        float32 [V] on the CPU: 1 where some frame shows background at the vertex, else 0.
    """
    V = int(avatar.head.num_vertices)
    out = torch.zeros(V, dtype=torch.bool, device=device)
    shape = torch.as_tensor(tracking["shape"], device=device)
    W, H = int(tracking["width"]), int(tracking["height"])
    for i in indices:
        expr = torch.as_tensor(tracking["expr"][i], device=device)
        pose = torch.as_tensor(tracking["pose"][i], device=device)
        trans = torch.as_tensor(tracking["translation"][i], device=device)
        verts, _ = avatar.posed_vertices(shape[None], expr[None], pose[None], trans[None])
        vm = torch.as_tensor(tracking["viewmat"][i], device=device).float()
        K = torch.as_tensor(tracking["K"][i], device=device).float()
        cam = verts[0].float() @ vm[:3, :3].T + vm[:3, 3]
        z = cam[:, 2].clamp_min(1e-6)
        x, y = K[0, 0] * cam[:, 0] / z + K[0, 2], K[1, 1] * cam[:, 1] / z + K[1, 2]
        m = torch.as_tensor(mask_of(i), device=device).float()
        k = 2 * BACKGROUND_MARGIN + 1  # the person dilated by the margin
        m = torch.nn.functional.max_pool2d(m.permute(2, 0, 1)[None], k, stride=1, padding=BACKGROUND_MARGIN)[0]
        m = m.permute(1, 2, 0)
        h, w = m.shape[:2]
        col, row = (x / W * w).floor().long(), (y / H * h).floor().long()
        inside = (cam[:, 2] > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
        val = m[row.clamp(0, h - 1), col.clamp(0, w - 1), 0]
        out |= inside & (val < threshold)
    return out.float().cpu()


def save_visibility(folder: Path, vis: Visibility) -> Path:
    """Writes ``<folder>/visibility.safetensors`` (atomic). Returns its path."""
    from engine.io.atomic import write_safetensors

    path = Path(folder) / VISIBILITY_FILE
    write_safetensors(path, {"gaussian": vis.gaussian.contiguous(), "face": vis.face.contiguous(),
                             "vertex": vis.vertex.contiguous()}, {"frames": str(vis.frames)})
    return path


def load_visibility(folder: Path, num_gaussians: int) -> Visibility | None:
    """Reads ``<folder>/visibility.safetensors``; None when the avatar has none (trained before
    visibility existed) or when it no longer matches the Gaussians (a warning says so)."""
    from safetensors import safe_open

    path = Path(folder) / VISIBILITY_FILE
    if not path.exists():
        return None
    with safe_open(str(path), framework="pt") as f:
        t = {k: f.get_tensor(k) for k in f.keys()}
        frames = int((f.metadata() or {}).get("frames", 0))
    if t["gaussian"].shape[0] != num_gaussians:
        log.warning("%s holds %d Gaussians, the avatar %d: recomputing the visibility", path,
                    t["gaussian"].shape[0], num_gaussians)
        return None
    return Visibility(t["face"], t["vertex"], t["gaussian"], frames)
