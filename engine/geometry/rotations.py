"""Rotation representation conversions (torch, batched, differentiable).

Conventions (docs/ARCHITECTURE.md, "rotations"):

- Rotation matrices ``R`` act on column vectors: ``x' = R @ x``. [..., 3, 3]
- Axis-angle (rotation vector) ``aa = angle * axis``, angle in radians, right-hand rule;
  FLAME poses use it (3 numbers per joint). [..., 3]
- Quaternions are ``wxyz`` (real part first), unit norm; functions that return one
  give the representative with ``w >= 0``. [..., 4]
- 6D rotations follow PyTorch3D (Zhou et al., "On the Continuity of Rotation
  Representations", CVPR 2019, with PyTorch3D's row convention): the 6 numbers are the
  *first two rows* of ``R``; :func:`rotation_6d_to_matrix` Gram–Schmidt-orthonormalises
  them and takes the third row as their cross product. This is what the metrical
  tracker / INSTA ``flame/jaw`` and ``flame/eyes`` files hold and what FATE decodes with
  ``pytorch3d.transforms.rotation_6d_to_matrix``.

Every function accepts any number of leading batch dimensions ``...`` and keeps the
input's dtype and device. Small-angle cases use Taylor expansions selected with
``torch.where`` on *safe* inputs, so values and gradients stay finite at the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "axis_angle_to_quaternion",
    "quaternion_to_axis_angle",
    "rotation_6d_to_matrix",
    "matrix_to_rotation_6d",
    "standardize_quaternion",
]


def _small_threshold(dtype: torch.dtype) -> float:
    """Squared-angle threshold below which Taylor series replace the closed forms.

    At ``theta**2 < eps`` the dropped ``theta**6`` terms are far below machine precision.
    """
    return float(torch.finfo(dtype).eps)


def _skew(v: Tensor) -> Tensor:
    """Cross-product matrix ``[v]x`` with ``[v]x @ u == v × u``.

    Args:
        v: vectors. [..., 3]
    Returns:
        skew-symmetric matrices. [..., 3, 3]
    """
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack(
        [zero, -z, y,
         z, zero, -x,
         -y, x, zero], dim=-1).reshape(v.shape[:-1] + (3, 3))


def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """Rodrigues' formula: rotation vector → rotation matrix.

    ``R = I + A [w]x + B [w]x²`` with ``A = sin θ / θ`` and ``B = (1 − cos θ) / θ²``
    (``B`` evaluated as ``½ (sin(θ/2) / (θ/2))²`` to avoid cancellation).

    Args:
        axis_angle: rotation vectors (angle · unit axis), radians. [..., 3]
    Returns:
        rotation matrices. [..., 3, 3]
    """
    theta2 = (axis_angle * axis_angle).sum(-1)  # [...]
    small = theta2 < _small_threshold(axis_angle.dtype)
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    half = 0.5 * theta
    a_big = torch.sin(theta) / theta
    b_big = 0.5 * (torch.sin(half) / half) ** 2
    a_small = 1.0 - theta2 / 6.0 + theta2 * theta2 / 120.0
    b_small = 0.5 - theta2 / 24.0 + theta2 * theta2 / 720.0
    a = torch.where(small, a_small, a_big)[..., None, None]
    b = torch.where(small, b_small, b_big)[..., None, None]
    k = _skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + a * k + b * (k @ k)


def standardize_quaternion(quaternion: Tensor) -> Tensor:
    """Returns the representative of ``q`` / ``−q`` with a non-negative real part.

    Args:
        quaternion: wxyz quaternions. [..., 4]
    Returns:
        wxyz quaternions with ``w >= 0``. [..., 4]
    """
    return torch.where(quaternion[..., :1] < 0, -quaternion, quaternion)


def quaternion_to_matrix(quaternion: Tensor) -> Tensor:
    """Quaternion (wxyz) → rotation matrix.

    Non-unit quaternions are accepted and treated as their normalised version
    (the formula divides by ``|q|²``).

    Args:
        quaternion: wxyz quaternions, non-zero. [..., 4]
    Returns:
        rotation matrices. [..., 3, 3]
    """
    w, x, y, z = quaternion.unbind(-1)
    s = 2.0 / (quaternion * quaternion).sum(-1)
    m = torch.stack(
        [1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w),
         s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w),
         s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)], dim=-1)
    return m.reshape(quaternion.shape[:-1] + (3, 3))


def matrix_to_quaternion(matrix: Tensor) -> Tensor:
    """Rotation matrix → unit quaternion (wxyz, ``w >= 0``), robust for every angle.

    Four candidate quaternions are formed, each dividing by one of ``|w|, |x|, |y|, |z|``
    (Shepperd's method); the one with the largest divisor (≥ ½) is kept, so no angle
    (including 0 and π) loses precision. The result is normalised, which also projects a
    slightly non-orthogonal input onto a rotation.

    Args:
        matrix: rotation matrices. [..., 3, 3]
    Returns:
        wxyz unit quaternions with ``w >= 0``. [..., 4]
    """
    if matrix.shape[-2:] != (3, 3):
        raise ValueError(f"matrix_to_quaternion: expected [..., 3, 3], found {tuple(matrix.shape)}")
    m = matrix
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # t_k = 4 q_k^2 for q = (w, x, y, z).
    t = torch.stack([1 + m00 + m11 + m22,
                     1 + m00 - m11 - m22,
                     1 - m00 + m11 - m22,
                     1 - m00 - m11 + m22], dim=-1)  # [..., 4]
    # The selected t is >= 1 (the largest q_k^2 is >= 1/4); clamping the others keeps
    # their (discarded) branches finite so gradients never see inf * 0.
    s = torch.sqrt(torch.clamp(t, min=0.1))  # s_k = 2 |q_k|
    cand = torch.stack([
        torch.stack([t[..., 0], m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, t[..., 1], m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, t[..., 2], m12 + m21], dim=-1),
        torch.stack([m10 - m01, m02 + m20, m12 + m21, t[..., 3]], dim=-1),
    ], dim=-2) / (2.0 * s[..., :, None])  # [..., 4 candidates, 4]
    best = t.argmax(dim=-1)  # [...]
    onehot = F.one_hot(best, num_classes=4).to(matrix.dtype)  # [..., 4]
    q = (cand * onehot[..., :, None]).sum(-2)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    return standardize_quaternion(q)


def axis_angle_to_quaternion(axis_angle: Tensor) -> Tensor:
    """Rotation vector → unit quaternion (wxyz, ``w >= 0`` for angles ≤ π).

    Args:
        axis_angle: rotation vectors, radians. [..., 3]
    Returns:
        wxyz unit quaternions ``(cos(θ/2), sin(θ/2) · axis)``. [..., 4]
    """
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)  # [..., 1]
    small = theta2 < _small_threshold(axis_angle.dtype)
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    half = 0.5 * theta
    # sin(θ/2)/θ and cos(θ/2), Taylor near 0.
    k_big = torch.sin(half) / theta
    k_small = 0.5 - theta2 / 48.0 + theta2 * theta2 / 3840.0
    w_small = 1.0 - theta2 / 8.0 + theta2 * theta2 / 384.0
    k = torch.where(small, k_small, k_big)
    w = torch.where(small, w_small, torch.cos(half))
    return torch.cat([w, axis_angle * k], dim=-1)


def quaternion_to_axis_angle(quaternion: Tensor) -> Tensor:
    """Quaternion (wxyz) → rotation vector with angle in [0, π].

    ``q`` and ``−q`` give the same result; non-unit quaternions are normalised.
    The angle is ``2 atan2(|v|, w)``, accurate near 0 and near π.

    Args:
        quaternion: wxyz quaternions, non-zero. [..., 4]
    Returns:
        rotation vectors, radians. [..., 3]
    """
    q = quaternion / torch.linalg.vector_norm(quaternion, dim=-1, keepdim=True)
    q = standardize_quaternion(q)
    w = q[..., :1]
    v = q[..., 1:]
    n2 = (v * v).sum(-1, keepdim=True)
    small = n2 < _small_threshold(q.dtype)
    n = torch.sqrt(torch.where(small, torch.ones_like(n2), n2))
    factor_big = 2.0 * torch.atan2(n, w) / n
    # |v| small implies w ≈ 1: 2 atan(n/w)/n ≈ 2/w − 2 n²/(3 w³).
    w_safe = torch.where(small, w, torch.ones_like(w))
    factor_small = 2.0 / w_safe - 2.0 * n2 / (3.0 * w_safe ** 3)
    return v * torch.where(small, factor_small, factor_big)


def matrix_to_axis_angle(matrix: Tensor) -> Tensor:
    """Rotation matrix → rotation vector with angle in [0, π].

    Goes through :func:`matrix_to_quaternion` and :func:`quaternion_to_axis_angle`,
    which keeps full precision near 0 and near π (where the trace/skew formula fails).
    At exactly π the sign of the axis is arbitrary (both describe the same rotation).

    Args:
        matrix: rotation matrices. [..., 3, 3]
    Returns:
        rotation vectors, radians. [..., 3]
    """
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def rotation_6d_to_matrix(d6: Tensor) -> Tensor:
    """6D rotation (PyTorch3D convention) → rotation matrix.

    The 6 numbers are two 3-vectors ``a1 = d6[..., :3]``, ``a2 = d6[..., 3:]``;
    Gram–Schmidt gives ``b1 = a1/|a1|``, ``b2 = normalise(a2 − (b1·a2) b1)``,
    ``b3 = b1 × b2``, and ``b1, b2, b3`` are the **rows** of ``R``.

    Args:
        d6: 6D rotations. [..., 6]
    Returns:
        rotation matrices. [..., 3, 3]
    """
    if d6.shape[-1] != 6:
        raise ValueError(f"rotation_6d_to_matrix: expected [..., 6], found {tuple(d6.shape)}")
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = F.normalize(b2, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-2)


def matrix_to_rotation_6d(matrix: Tensor) -> Tensor:
    """Rotation matrix → 6D rotation (PyTorch3D convention: first two rows, row-major).

    Args:
        matrix: rotation matrices. [..., 3, 3]
    Returns:
        6D rotations ``[R[0, :], R[1, :]]``. [..., 6]
    """
    return matrix[..., :2, :].reshape(matrix.shape[:-2] + (6,))
