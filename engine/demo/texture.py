"""The demo subject's skin: a procedural albedo at canonical surface points, and the same as a
texture over a head's UV layout. Colours are encoded (sRGB) in [0, 1]."""

from __future__ import annotations

import math

import numpy as np
import torch

from engine.model.head_model import HeadModel


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


# ---------------------------------------------------------------------- subject
def demo_albedo(points: np.ndarray, normals: np.ndarray, head: HeadModel, seed: int = 0) -> np.ndarray:
    """The demo subject's skin texture: :func:`engine.demo.synthetic.albedo` (skin tone variation,
    cheeks, freckles, lips, brows, irises, hair) plus a dark lash line along each eye opening
    and a light stubble on the chin and jaw (high frequencies on purpose).

    Args:
        points: canonical surface points, meters, FLAME frame. [N, 3]
        normals: unit normals at those points. [N, 3]
        head: the demo head (its eye joints and mouth place the features).
        seed: texture seed.
    Returns:
        encoded (sRGB) colours in [0, 1]. [N, 3] float32
    """
    # synthetic.albedo is per point; chunks bound its [N, 90, 3] freckle distance temporaries
    chunk = 1 << 16
    col = np.concatenate([albedo(points[i:i + chunk], normals[i:i + chunk], head, seed)
                          for i in range(0, len(points), chunk)] or [np.zeros((0, 3), np.float32)])
    col = col.astype(np.float64)
    lm = landmarks(head)
    eye_gap = float(np.linalg.norm(lm["left_eye"] - lm["right_eye"]))
    unit = eye_gap / 0.064  # the features below are sized for the demo head (eye gap 64 mm)
    eye_r = 0.0125 * unit
    # lash line: a thin dark band on the upper lid rim, just outside each eyeball
    for side in (lm["left_eye"], lm["right_eye"]):
        rel = points - side
        r = np.linalg.norm(rel, axis=1)
        rim = np.exp(-((r - 1.07 * eye_r) / (0.07 * eye_r)) ** 2) * (r > 1.02 * eye_r)
        rim *= np.clip((rel[:, 1] + 0.25 * eye_r) / (0.3 * eye_r), 0.0, 1.0)
        col = col * (1 - 0.85 * rim[:, None]) + 0.85 * rim[:, None] * 0.06
    # stubble: tiny dark dots on the chin and along the jaw (a 1.6 mm hash grid)
    mouth = lm["mouth"]
    rel = (points - (mouth + np.array([0.0, -0.028, 0.0]) * unit)) / (np.array([0.055, 0.024, 1.0]) * unit)
    region = np.clip(1.5 * (1.0 - rel[:, 0] ** 2 - rel[:, 1] ** 2), 0.0, 1.0) * (normals[:, 2] > 0.2)
    lips = ((points - mouth) / (np.array([0.028, 0.011, 1.0]) * unit)) ** 2
    region *= np.clip(2.0 * (lips[:, 0] + lips[:, 1]) - 2.0, 0.0, 1.0)
    q = np.floor(points / (0.0016 * unit))
    h = np.sin(q @ np.array([12.9898, 78.233, 37.719]) + seed) * 43758.5453
    dots = region * ((h - np.floor(h)) > 0.75)
    col = col * (1 - 0.4 * dots[:, None]) + 0.4 * dots[:, None] * np.array([0.2, 0.14, 0.1])
    return np.clip(col, 0.0, 1.0).astype(np.float32)


def albedo_texture(head: HeadModel, resolution: int, seed: int = 0) -> np.ndarray:
    """The demo albedo as a texture over the head's UV layout.

    Every texel whose centre lies in a UV triangle gets :func:`demo_albedo` at the canonical
    surface point of that texel centre (:func:`engine.geometry.uv.sample_uv_texels` +
    :func:`engine.geometry.mesh_ops.barycentric_points`); every other texel takes the colour of the
    nearest covered texel, so bilinear lookups at island borders never mix in a background colour.

    Args:
        head: the head model (mesh + mouth faces are covered).
        resolution: texels per side.
        seed: texture seed.
    Returns:
        encoded (sRGB) colours, row 0 = top (v ≈ 1). [R, R, 3] float32
    """
    from scipy.ndimage import distance_transform_edt

    from engine.geometry.mesh_ops import barycentric_points, vertex_normals
    from engine.geometry.uv import sample_uv_texels

    R = int(resolution)
    s = sample_uv_texels(head.uvs, head.faces_uv_all, R)
    faces = torch.as_tensor(head.faces_all, dtype=torch.long)
    verts = torch.as_tensor(head.v_template, dtype=torch.float64)
    face_idx = torch.as_tensor(s.face_idx, dtype=torch.long)
    bary = torch.as_tensor(s.bary, dtype=torch.float64)
    pts = barycentric_points(verts, faces, face_idx, bary)
    nrm = torch.nn.functional.normalize(barycentric_points(vertex_normals(verts, faces), faces, face_idx, bary), dim=-1)
    colors = demo_albedo(pts.numpy(), nrm.numpy(), head, seed)
    img = np.zeros((R, R, 3), np.float32)
    filled = np.zeros((R, R), bool)
    img[s.texel[:, 0], s.texel[:, 1]] = colors
    filled[s.texel[:, 0], s.texel[:, 1]] = True
    if not filled.all():
        _, (ri, ci) = distance_transform_edt(~filled, return_indices=True)
        img = img[ri, ci]
    return img
