"""Our Gaussian conventions → the standard 3DGS ones (Blender 5.3 splats, 3DGS PLY): the one place.

numpy only, no bpy. Ours (docs/ARCHITECTURE.md, "Conventions"; FORMATS.md, maps):

- colour: the training images' encoded (sRGB) values in [0, 1], one RGB per Gaussian (no
  view-dependent SH bands);
- opacity: activated, in [0, 1];
- scale/rotation: a covariance ``Σ = R diag(σ²) Rᵀ`` in the frame the Gaussians are placed in
  (FLAME canonical for the head object's mesh data, Blender world after ``matrix_world``).

The standard side (3DGS, Kerbl et al. 2023 §4; Blender 5.3's ``GAUSSIAN_SPLAT`` point clouds, see
``shared/docs/BLENDER_53_SPLATS.md``; the 3DGS PLY layout):

- SH degree-0 coefficient ``f_dc = (rgb − 0.5) / C0`` with ``C0 = 0.28209479`` (the renderer
  shows ``0.5 + C0 · f_dc`` as an sRGB-encoded value, so our training colour passes unchanged);
- Blender's ``radiance:base`` = ``(f_dc, opacity)`` [N, 4]; the PLY stores ``logit(opacity)``;
- Blender's ``scale`` = σ per axis, linear (m); the PLY stores ``log σ``;
- rotation as a unit quaternion ``w, x, y, z`` (Blender's ``rotation``; PLY ``rot_0..3``) whose
  matrix's columns are the Gaussian's axes.

The Geometry Nodes tree of :mod:`.native` evaluates :func:`dc_from_color` with the same constant
(:data:`SH_C0`); tests compare the tree's attributes with these functions.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SH_C0", "OPACITY_EPS", "dc_from_color", "color_from_dc", "radiance_base", "logit",
           "sigmoid", "quaternion_from_matrix", "matrix_from_quaternion",
           "scale_rotation_from_covariance", "covariance_from_scale_rotation"]

SH_C0 = 0.28209479177387814
"""Real SH band-0 constant ``1 / (2 sqrt(π))`` (3DGS ``C0``)."""
OPACITY_EPS = 1e-6
"""Opacities are clamped to [eps, 1 − eps] before :func:`logit` (finite PLY values)."""


def dc_from_color(rgb: np.ndarray) -> np.ndarray:
    """Encoded (sRGB) colour → SH degree-0 coefficients ``(rgb − 0.5) / C0``.

    Args:
        rgb: training-space colour in [0, 1]. [N, 3]
    Returns:
        f_dc. [N, 3] float32
    """
    return ((np.asarray(rgb, np.float64) - 0.5) / SH_C0).astype(np.float32)


def color_from_dc(dc: np.ndarray) -> np.ndarray:
    """SH degree-0 coefficients → encoded colour ``0.5 + C0 · f_dc`` (not clamped). [N, 3] float32"""
    return (0.5 + SH_C0 * np.asarray(dc, np.float64)).astype(np.float32)


def radiance_base(rgb: np.ndarray, opacity: np.ndarray) -> np.ndarray:
    """Blender 5.3's ``radiance:base`` attribute: ``(f_dc, opacity)``.

    Args:
        rgb: encoded colour in [0, 1]. [N, 3]
        opacity: in [0, 1]. [N]
    Returns:
        [N, 4] float32
    """
    return np.concatenate([dc_from_color(rgb), np.asarray(opacity, np.float32).reshape(-1, 1)], 1)


def logit(p: np.ndarray) -> np.ndarray:
    """Inverse sigmoid of opacities clamped to [eps, 1 − eps] (3DGS PLY ``opacity``). [N] float32"""
    p = np.clip(np.asarray(p, np.float64), OPACITY_EPS, 1.0 - OPACITY_EPS)
    return np.log(p / (1.0 - p)).astype(np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function (reads 3DGS PLY opacities). [N] float32"""
    return (1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))).astype(np.float32)


def quaternion_from_matrix(R: np.ndarray) -> np.ndarray:
    """Rotation matrices → unit quaternions ``w, x, y, z`` with ``w >= 0`` (Shepperd's method).

    Args:
        R: proper rotations (det +1), columns = the rotated axes. [N, 3, 3]
    Returns:
        [N, 4] float32
    """
    R = np.asarray(R, np.float64).reshape(-1, 3, 3)
    m = R
    tr = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    # Four candidate forms; each row uses the one with the largest divisor (stable).
    cand = np.stack([
        np.stack([1 + tr, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], -1),
        np.stack([m[:, 2, 1] - m[:, 1, 2], 1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2],
                  m[:, 0, 1] + m[:, 1, 0], m[:, 0, 2] + m[:, 2, 0]], -1),
        np.stack([m[:, 0, 2] - m[:, 2, 0], m[:, 0, 1] + m[:, 1, 0],
                  1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2], m[:, 1, 2] + m[:, 2, 1]], -1),
        np.stack([m[:, 1, 0] - m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1],
                  1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], -1),
    ], 1)  # [N, 4 forms, 4]
    diag = np.stack([tr, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], -1)
    pick = np.argmax(diag, -1)
    q = cand[np.arange(len(R)), pick]
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    return q.astype(np.float32)


def matrix_from_quaternion(q: np.ndarray) -> np.ndarray:
    """Quaternions ``w, x, y, z`` (normalised here) → rotation matrices. [N, 4] → [N, 3, 3] float32"""
    q = np.asarray(q, np.float64).reshape(-1, 4)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q.T
    R = np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], 1)
    return R.astype(np.float32)


def scale_rotation_from_covariance(covars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Covariances → per-axis σ and the rotation of the axes (eigendecomposition).

    Σ is symmetric positive semi-definite, so ``Σ = R diag(σ²) Rᵀ`` with R from ``eigh``; a
    column is flipped where needed so that det R = +1. The split is unique up to the order and
    signs of the axes, which a 3DGS reader does not see.

    Args:
        covars: m². [N, 3, 3]
    Returns:
        sigma: standard deviations along the axes, m, ascending. [N, 3] float32
        quat: the axes' rotation, ``w, x, y, z``. [N, 4] float32
    """
    C = np.asarray(covars, np.float64).reshape(-1, 3, 3)
    C = 0.5 * (C + C.transpose(0, 2, 1))
    evals, evecs = np.linalg.eigh(C)
    flip = np.linalg.det(evecs) < 0
    evecs[flip, :, 0] *= -1.0
    sigma = np.sqrt(np.maximum(evals, 0.0))
    return sigma.astype(np.float32), quaternion_from_matrix(evecs)


def covariance_from_scale_rotation(sigma: np.ndarray, quat: np.ndarray) -> np.ndarray:
    """``Σ = R diag(σ²) Rᵀ`` (3DGS eq. 6). [N, 3], [N, 4] (w, x, y, z) → [N, 3, 3] float32"""
    R = matrix_from_quaternion(quat).astype(np.float64)
    rs = R * np.asarray(sigma, np.float64).reshape(-1, 1, 3)
    return (rs @ rs.transpose(0, 2, 1)).astype(np.float32)
