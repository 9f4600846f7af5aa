"""Ground-truth sequences with exactly known parameters, for tests, benchmarks and the demo.

A *dense ground-truth Gaussian head*: the head model's surface sampled at a high UV resolution,
each sample an opaque flat splat coloured by :func:`albedo` (a procedural skin texture with
brows, lips, irises, freckles and a hairline — high frequencies on purpose), animated with
known FLAME expression/jaw/eye/neck parameters and seen by a camera that orbits like a head
turning (INSTA puts head rotation into the camera). Rendered with the engine's rasteriser and
written in the INSTA layout, the last ``test_fraction`` of frames as the test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from engine.demo.config import SyntheticConfig
from engine.demo.motion import orbit_cameras, talking_motion
from engine.demo.texture import albedo
from engine.geometry.cameras import Camera
from engine.geometry.mesh_ops import barycentric_points, vertex_normals
from engine.geometry.uv import sample_uv_texels
from engine.model.flame_layer import FlameLayer
from engine.model.gaussians import initial_scale_log, place_gaussians
from engine.model.head_model import HeadModel
from engine.raster import rasterize


@dataclass
class GroundTruthHead:
    """The dense ground-truth Gaussian head bound to the head model's mesh."""

    face_idx: Tensor  # [N] int64
    bary: Tensor  # [N, 3]
    colors: Tensor  # [N, 3]
    scale_mult: Tensor  # [N, 3]
    layers: dict | None = None  # expression-dependent layers, name -> [N, 4] (issue 19)


def build_ground_truth_head(head: HeadModel, flame: FlameLayer, uv_resolution: int, seed: int = 0,
                            dynamic_appearance: bool = False) -> GroundTruthHead:
    """Dense opaque splats at every UV texel of ``uv_resolution``², coloured by :func:`albedo`
    (with ``dynamic_appearance`` also the expression-dependent layers of
    :mod:`engine.demo.expression_appearance` at each splat)."""
    faces = torch.as_tensor(head.faces_all, dtype=torch.long)
    s = sample_uv_texels(head.uvs, head.faces_uv_all, uv_resolution)
    face_idx = torch.as_tensor(s.face_idx, dtype=torch.long)
    bary = torch.as_tensor(s.bary, dtype=torch.float32)
    verts = torch.as_tensor(head.v_template, dtype=torch.float32)
    pts = barycentric_points(verts, faces, face_idx, bary)
    vn = vertex_normals(verts, faces)
    nrm = torch.nn.functional.normalize(barycentric_points(vn, faces, face_idx, bary), dim=-1)
    colors = torch.as_tensor(albedo(pts.numpy(), nrm.numpy(), head, seed))
    scale = initial_scale_log(face_idx, verts, faces, factor=0.75).exp()
    scale[:, 2] *= 0.3  # flat along the normal
    layers = None
    if dynamic_appearance:
        from engine.demo.expression_appearance import layer_rgba

        layers = layer_rgba(pts.numpy(), nrm.numpy(), np.asarray(s.uv), np.asarray(s.face_idx) >= len(head.faces), head)
    return GroundTruthHead(face_idx, bary, colors, scale, layers)


@torch.no_grad()
def render_sequence(head: HeadModel, cfg: SyntheticConfig, background=(1.0, 1.0, 1.0)):
    """Renders the ground-truth sequence.

    Returns:
        dict with images uint8 [T, H, W, 3], masks uint8 [T, H, W], expr, pose, viewmats, K,
        shape (zeros [S]) and split list.
    """
    flame = FlameLayer(head)
    gt = build_ground_truth_head(head, flame, cfg.gt_uv_resolution, cfg.seed, cfg.dynamic_appearance)
    motion = talking_motion(head, cfg.frames, cfg.seed, cfg.max_yaw_deg, cfg.max_pitch_deg,
                            cfg.expression_scale, cfg.jaw_open_rad)
    views, K = orbit_cameras(head, motion["yaw"], motion["pitch"], cfg.resolution)
    faces = torch.as_tensor(head.faces_all, dtype=torch.long)
    bg = torch.tensor(background, dtype=torch.float32)
    shape = torch.zeros(1, head.num_shape)
    rot = torch.eye(3).expand(len(gt.face_idx), 3, 3)
    images, masks = [], []
    for i in range(cfg.frames):
        verts, _ = flame(shape, torch.as_tensor(motion["expr"][i:i + 1]), torch.as_tensor(motion["pose"][i:i + 1]))
        g = place_gaussians(verts[0], faces, gt.face_idx, gt.bary, _frame_colors(head, gt, motion, i),
                            torch.full((len(gt.face_idx),), 0.98), gt.scale_mult, rot,
                            torch.zeros(len(gt.face_idx)))
        cam = Camera(torch.as_tensor(views[i], dtype=torch.float32), torch.as_tensor(K, dtype=torch.float32),
                     cfg.resolution, cfg.resolution)
        out = rasterize(g.means, g.covars, g.opacities, g.colors, cam, bg, backend="torch")
        images.append((out.image.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8))
        masks.append((out.alpha[..., 0].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8))
    n_test = max(1, int(round(cfg.frames * cfg.test_fraction)))
    split = ["train"] * (cfg.frames - n_test) + ["test"] * n_test
    return {"images": np.stack(images), "masks": np.stack(masks), "expr": motion["expr"],
            "pose": motion["pose"], "viewmats": views, "K": K, "shape": np.zeros(head.num_shape, np.float32),
            "split": split}


def _frame_colors(head: HeadModel, gt: GroundTruthHead, motion: dict, i: int) -> Tensor:
    """The splats' colours in frame i: the albedo, or with layers their composite (issue 19)."""
    if gt.layers is None:
        return gt.colors
    from engine.demo.expression_appearance import composite, layer_factors, shape_key_values

    f = layer_factors(shape_key_values(head, motion["expr"][i], motion["pose"][i]))
    return torch.as_tensor(composite(gt.colors.numpy(), gt.layers, f))


def write_synthetic_dataset(root: Path, head: HeadModel, cfg: SyntheticConfig) -> Path:
    """Renders the ground-truth sequence and writes it in the INSTA layout at ``root``."""
    from engine.data.insta import write_insta
    from engine.data.sequence import Sequence

    r = render_sequence(head, cfg)
    T = cfg.frames
    names = [f"{i:05d}" for i in range(T)]
    seq = Sequence(
        root=Path(root), frame_names=names, shape=torch.as_tensor(r["shape"]),
        expr=torch.as_tensor(r["expr"]), pose=torch.as_tensor(r["pose"]),
        translation=torch.zeros(T, 3), viewmats=torch.as_tensor(r["viewmats"], dtype=torch.float32),
        Ks=torch.as_tensor(np.repeat(r["K"][None], T, 0), dtype=torch.float32),
        width=cfg.resolution, height=cfg.resolution,
        image_paths=[Path(root) / "images" / f"{n}.png" for n in names],
        mask_paths=[Path(root) / "alpha" / f"{n}.png" for n in names], split=r["split"])
    write_insta(Path(root), seq, list(r["images"]), list(r["masks"]))
    return Path(root)


@torch.no_grad()
def render_neutral_views(head: HeadModel, viewmats: np.ndarray, K: np.ndarray, width: int, height: int,
                         gt_uv_resolution: int = 384, seed: int = 0) -> np.ndarray:
    """The dense ground-truth head at neutral expression and pose from given cameras (the truth
    of engine-only full-head tests and :func:`engine.demo.oracle.generate_synthetic`).

    Args:
        head: the head model.
        viewmats: world→camera (OpenCV). [V, 4, 4]
        K: intrinsics, pixels. [V, 3, 3] or [3, 3]
        width, height: image size, pixels.
        gt_uv_resolution: UV sampling of the ground-truth head (as :class:`SyntheticConfig`'s).
        seed: texture seed.
    Returns:
        straight-alpha RGBA, float32 in [0, 1]. [V, H, W, 4]
    """
    flame = FlameLayer(head)
    gt = build_ground_truth_head(head, flame, gt_uv_resolution, seed)
    faces = torch.as_tensor(head.faces_all, dtype=torch.long)
    verts = torch.as_tensor(head.v_template, dtype=torch.float32)
    n = len(gt.face_idx)
    g = place_gaussians(verts, faces, gt.face_idx, gt.bary, gt.colors, torch.full((n,), 0.98), gt.scale_mult,
                        torch.eye(3).expand(n, 3, 3), torch.zeros(n))
    Ks = np.broadcast_to(np.asarray(K, np.float32), (len(viewmats), 3, 3))
    out = []
    for m, k in zip(np.asarray(viewmats, np.float32), Ks):
        cam = Camera(torch.as_tensor(m), torch.as_tensor(np.array(k)), int(width), int(height))
        r = rasterize(g.means, g.covars, g.opacities, g.colors, cam, torch.zeros(3), backend="torch")
        a = r.alpha.clamp(0, 1)
        rgb = torch.where(a > 1e-4, r.image / a.clamp_min(1e-4), torch.zeros_like(r.image)).clamp(0, 1)
        out.append(torch.cat([rgb, a], -1).numpy())
    return np.stack(out).astype(np.float32)
