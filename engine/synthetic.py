"""Ground-truth sequences with exactly known parameters, for tests, benchmarks and the demo.

A *dense ground-truth Gaussian head*: the head model's surface sampled at a high UV resolution,
each sample an opaque flat splat coloured by :func:`albedo` (a procedural skin texture with
brows, lips, irises, freckles and a hairline — high frequencies on purpose), animated with
known FLAME expression/jaw/eye/neck parameters and seen by a camera that orbits like a head
turning (INSTA puts head rotation into the camera). Rendered with the engine's rasteriser and
written in the INSTA layout, the last ``test_fraction`` of frames as the test split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from engine.cameras import Camera, look_at_opencv
from engine.gaussians import initial_scale_log, place_gaussians
from engine.head_model import FlameLayer, HeadModel
from engine.mesh_ops import barycentric_points, vertex_normals
from engine.raster import rasterize
from engine.uv import sample_uv_texels


@dataclass
class SyntheticConfig:
    """A synthetic talking-head sequence."""

    frames: int = 100
    """number of frames"""
    resolution: int = 128
    """square image size, pixels"""
    test_fraction: float = 0.2
    """the last fraction of frames is the test split"""
    gt_uv_resolution: int = 384
    """UV sampling resolution of the dense ground-truth head"""
    max_yaw_deg: float = 25.0
    """head turn amplitude (camera orbit), degrees"""
    max_pitch_deg: float = 12.0
    """head nod amplitude, degrees"""
    expression_scale: float = 1.2
    """amplitude of the expression coefficients"""
    jaw_open_rad: float = 0.25
    """maximum jaw opening, radians"""
    seed: int = 0
    """random seed"""


def _noise3(points: np.ndarray, freq: float, seed: int) -> np.ndarray:
    """Smooth pseudo-random field on R³: a sum of random plane waves. [N]"""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(12, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    phases = rng.uniform(0, 2 * np.pi, 12)
    return np.mean(np.sin(freq * points @ dirs.T + phases), axis=1) * math.sqrt(2.0)


def landmarks(head: HeadModel) -> dict[str, np.ndarray]:
    """Canonical positions (meters) of the eyes (eye joints) and the mouth (mouth-face centroid)."""
    J = np.asarray(head.J_regressor) @ head.v_template
    names = list(head.joint_names)
    mouth = head.v_template[np.unique(head.mouth_faces)].mean(axis=0) if len(head.mouth_faces) else J[names.index("jaw")]
    return {"left_eye": J[names.index("left_eye")], "right_eye": J[names.index("right_eye")], "mouth": mouth}


def albedo(points: np.ndarray, normals: np.ndarray, head: HeadModel, seed: int = 0) -> np.ndarray:
    """Procedural skin texture in encoded (sRGB) colour at canonical surface points.

    Args:
        points: canonical surface points, meters, FLAME frame. [N, 3]
        normals: unit normals at those points. [N, 3]
        head: the head model (its eyes and mouth place the features).
    Returns:
        colours in [0, 1]. [N, 3] float32
    """
    lm = landmarks(head)
    eye_l, eye_r, mouth = lm["left_eye"], lm["right_eye"], lm["mouth"]
    eye_gap = np.linalg.norm(eye_l - eye_r)
    skin = np.array([0.86, 0.66, 0.55])
    n1 = _noise3(points, 60.0, seed)
    n2 = _noise3(points, 250.0, seed + 1)
    col = skin[None] * (1.0 + 0.06 * n1[:, None] + 0.03 * n2[:, None])
    # cheeks: a little redder
    for side in (eye_l, eye_r):
        cheek = side + np.array([0.0, -0.035, 0.0]) * (eye_gap / 0.065)
        w = np.exp(-np.sum((points - cheek) ** 2, axis=1) / (2 * (0.25 * eye_gap) ** 2))
        col = col * (1 - 0.25 * w[:, None]) + 0.25 * w[:, None] * np.array([0.9, 0.5, 0.45])
    # freckles: small dark dots around the nose and cheeks
    rng = np.random.default_rng(seed + 7)
    centre = 0.5 * (eye_l + eye_r) + np.array([0.0, -0.25 * eye_gap, 0.3 * eye_gap])
    dots = centre + rng.normal(scale=[0.45 * eye_gap, 0.2 * eye_gap, 0.2 * eye_gap], size=(90, 3))
    d2 = ((points[:, None, :] - dots[None]) ** 2).sum(-1).min(axis=1)
    fr = np.exp(-d2 / (2 * (0.035 * eye_gap) ** 2))
    col = col * (1 - 0.45 * fr[:, None]) + 0.45 * fr[:, None] * np.array([0.55, 0.33, 0.22])
    # lips
    rel = (points - mouth) / np.array([0.42 * eye_gap, 0.16 * eye_gap, 0.5 * eye_gap])
    lip = np.clip(1.5 - np.sum(rel ** 2, axis=1), 0, 1)
    col = col * (1 - 0.8 * lip[:, None]) + 0.8 * lip[:, None] * np.array([0.72, 0.25, 0.28])
    # brows: dark arcs above each eye, with hair-like streaks
    for side in (eye_l, eye_r):
        rel = points - (side + np.array([0.0, 0.32 * eye_gap, 0.1 * eye_gap]))
        band = np.exp(-(rel[:, 1] + 2.0 * rel[:, 0] ** 2 / eye_gap) ** 2 / (2 * (0.07 * eye_gap) ** 2))
        band *= np.exp(-rel[:, 0] ** 2 / (2 * (0.3 * eye_gap) ** 2)) * (normals[:, 2] > 0.2)
        streak = 0.75 + 0.25 * np.sin(points[:, 0] * 900.0)
        col = col * (1 - 0.85 * band[:, None] * streak[:, None]) + 0.85 * band[:, None] * streak[:, None] * 0.18
    # eyes: sclera, iris, pupil on the parts facing forward from the eye joint
    for side in (eye_l, eye_r):
        rel = points - side
        r = np.linalg.norm(rel, axis=1)
        on_eye = r < 0.6 * eye_gap * 0.25 * 1.6
        dirs = rel / np.maximum(r[:, None], 1e-9)
        ang = np.arccos(np.clip(dirs[:, 2], -1, 1))
        eye_col = np.where((ang < 0.38)[:, None], np.array([0.18, 0.38, 0.55]), np.array([0.93, 0.92, 0.9]))
        eye_col = np.where((ang < 0.17)[:, None], np.array([0.03, 0.03, 0.04]), eye_col)
        col = np.where(on_eye[:, None], eye_col, col)
    # hair cap above the hairline, with streaks
    top = points[:, 1] > (eye_l[1] + 0.9 * eye_gap) - 0.25 * eye_gap * (points[:, 2] < 0)
    streak = 0.8 + 0.2 * np.sin(points[:, 0] * 700.0 + 40.0 * points[:, 2])
    col = np.where(top[:, None], np.array([0.25, 0.16, 0.1]) * streak[:, None], col)
    return np.clip(col, 0.0, 1.0).astype(np.float32)


@dataclass
class GroundTruthHead:
    """The dense ground-truth Gaussian head bound to the head model's mesh."""

    face_idx: Tensor  # [N] int64
    bary: Tensor  # [N, 3]
    colors: Tensor  # [N, 3]
    scale_mult: Tensor  # [N, 3]


def build_ground_truth_head(head: HeadModel, flame: FlameLayer, uv_resolution: int, seed: int = 0) -> GroundTruthHead:
    """Dense opaque splats at every UV texel of ``uv_resolution``², coloured by :func:`albedo`."""
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
    return GroundTruthHead(face_idx, bary, colors, scale)


def make_motion(cfg: SyntheticConfig, num_expr: int, num_joints: int) -> dict[str, np.ndarray]:
    """Smooth, known per-frame parameters: expr [T, E], pose [T, J·3], yaw/pitch [T] radians."""
    rng = np.random.default_rng(cfg.seed)
    t = np.arange(cfg.frames) / max(cfg.frames - 1, 1)
    k = min(num_expr, 12)
    expr = np.zeros((cfg.frames, num_expr))
    for c in range(k):
        f, ph = rng.uniform(0.8, 2.5), rng.uniform(0, 2 * np.pi)
        expr[:, c] = cfg.expression_scale * np.sin(2 * np.pi * f * t + ph) * rng.uniform(0.4, 1.0)
    pose = np.zeros((cfg.frames, num_joints * 3))
    pose[:, 3:6] = 0.08 * np.stack([np.sin(2 * np.pi * 1.3 * t), np.sin(2 * np.pi * 0.7 * t), 0 * t], 1)
    pose[:, 6] = cfg.jaw_open_rad * np.clip(np.sin(2 * np.pi * 2.1 * t + 0.3), 0, 1)
    if num_joints >= 5:
        gaze = 0.15 * np.stack([np.sin(2 * np.pi * 0.9 * t), np.sin(2 * np.pi * 1.7 * t), 0 * t], 1)
        pose[:, 9:12] = gaze
        pose[:, 12:15] = gaze
    yaw = np.radians(cfg.max_yaw_deg) * np.sin(2 * np.pi * 1.0 * t)
    pitch = np.radians(cfg.max_pitch_deg) * np.sin(2 * np.pi * 1.6 * t + 1.0)
    return {"expr": expr.astype(np.float32), "pose": pose.astype(np.float32), "yaw": yaw, "pitch": pitch}


def orbit_cameras(head: HeadModel, yaw: np.ndarray, pitch: np.ndarray, resolution: int,
                  fill: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Cameras orbiting the head's centre (head turns expressed as camera motion, as in INSTA).

    Returns:
        viewmats [T, 4, 4] world→camera OpenCV; K [3, 3] pixels.
    """
    v = head.v_template
    lo, hi = v.min(axis=0), v.max(axis=0)
    centre = 0.5 * (lo + hi)
    height = float(hi[1] - lo[1])
    fx = 2.2 * resolution
    dist = fx * height / (fill * resolution)
    K = np.array([[fx, 0, resolution / 2], [0, fx, resolution / 2], [0, 0, 1]], dtype=np.float64)
    views = []
    for y, p in zip(yaw, pitch):
        d = np.array([math.sin(y) * math.cos(p), math.sin(p), math.cos(y) * math.cos(p)])
        views.append(look_at_opencv(centre + dist * d, centre))
    return np.stack(views), K


@torch.no_grad()
def render_sequence(head: HeadModel, cfg: SyntheticConfig, background=(1.0, 1.0, 1.0)):
    """Renders the ground-truth sequence.

    Returns:
        dict with images uint8 [T, H, W, 3], masks uint8 [T, H, W], expr, pose, viewmats, K,
        shape (zeros [S]) and split list.
    """
    flame = FlameLayer(head)
    gt = build_ground_truth_head(head, flame, cfg.gt_uv_resolution, cfg.seed)
    motion = make_motion(cfg, head.num_expr, head.num_joints)
    views, K = orbit_cameras(head, motion["yaw"], motion["pitch"], cfg.resolution)
    faces = torch.as_tensor(head.faces_all, dtype=torch.long)
    bg = torch.tensor(background, dtype=torch.float32)
    shape = torch.zeros(1, head.num_shape)
    rot = torch.eye(3).expand(len(gt.face_idx), 3, 3)
    images, masks = [], []
    for i in range(cfg.frames):
        verts, _ = flame(shape, torch.as_tensor(motion["expr"][i:i + 1]), torch.as_tensor(motion["pose"][i:i + 1]))
        g = place_gaussians(verts[0], faces, gt.face_idx, gt.bary, gt.colors,
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
