"""engine.geometry.rotations: round trips, agreement with scipy, edge angles, gradients."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from engine.geometry import rotations as rot


def _random_axis_angle(n: int, seed: int, max_angle: float = math.pi) -> np.ndarray:
    """[n, 3] float64 rotation vectors with angles uniform in [0, max_angle)."""
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    return axis * rng.uniform(0.0, max_angle, size=(n, 1))


def _edge_axis_angle() -> np.ndarray:
    """Rotation vectors at the hard angles: 0, tiny, near π, exactly π. [k, 3] float64"""
    axis = np.array([[1.0, 2.0, -0.5], [0.3, -1.0, 0.2], [0.0, 0.0, 1.0]])
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    angles = [0.0, 1e-12, 1e-7, 1e-4, 1e-2, math.pi - 1e-3, math.pi - 1e-7, math.pi]
    return np.concatenate([axis * a for a in angles])


def _same_rotation_vec(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance between rotation vectors modulo the π ambiguity (compare matrices)."""
    return np.abs(Rotation.from_rotvec(a).as_matrix() - Rotation.from_rotvec(b).as_matrix()).max()


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_axis_angle_to_matrix_matches_scipy(dtype, tol):
    aa = np.concatenate([_random_axis_angle(200, 0), _edge_axis_angle()])
    ours = rot.axis_angle_to_matrix(torch.from_numpy(aa).to(dtype)).double().numpy()
    ref = Rotation.from_rotvec(aa).as_matrix()
    # tol: float64 ~ a few ulps; float32 ~ 16 ulps of 1.0 from the trig evaluation.
    np.testing.assert_allclose(ours, ref, rtol=0, atol=tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 5e-6)])
def test_matrix_to_axis_angle_matches_scipy(dtype, tol):
    aa = np.concatenate([_random_axis_angle(200, 1), _edge_axis_angle()])
    R = Rotation.from_rotvec(aa).as_matrix()
    ours = rot.matrix_to_axis_angle(torch.from_numpy(R).to(dtype)).double().numpy()
    ref = Rotation.from_matrix(R).as_rotvec()
    # Compare as matrices: at exactly π the axis sign is arbitrary.
    assert _same_rotation_vec(ours, ref) < tol
    # Away from π the vectors themselves agree (angle in [0, π)).
    away = np.linalg.norm(ref, axis=1) < math.pi - 1e-2
    # float32 tolerance: rotation-vector error ~ eps / sin(angle/2) away from π.
    np.testing.assert_allclose(ours[away], ref[away], rtol=0, atol=tol * 10)


def test_matrix_to_axis_angle_precision_near_zero_and_pi():
    # Near 0 the result must keep *relative* precision (tiny angles, float64).
    aa = np.array([[1e-9, -2e-9, 3e-9], [0.0, 0.0, 0.0], [1e-15, 0.0, 0.0]])
    out = rot.matrix_to_axis_angle(rot.axis_angle_to_matrix(torch.from_numpy(aa))).numpy()
    np.testing.assert_allclose(out, aa, rtol=1e-9, atol=1e-300)  # rtol: ~1e7 ulps slack, still exact digits
    # Near π the angle stays accurate (trace-based formulas lose ~sqrt(eps) here).
    axis = np.array([0.48, -0.6, 0.64])
    for eps in (1e-3, 1e-6, 1e-9):
        a = axis * (math.pi - eps)
        out = rot.matrix_to_axis_angle(rot.axis_angle_to_matrix(torch.from_numpy(a))).numpy()
        # tol 1e-12: float64 evaluation, well above eps * condition ~1e-15.
        assert abs(np.linalg.norm(out) - (math.pi - eps)) < 1e-12
        np.testing.assert_allclose(out, a, rtol=0, atol=1e-12)


def test_quaternion_conversions_match_scipy():
    aa = np.concatenate([_random_axis_angle(200, 2), _edge_axis_angle()])
    R = Rotation.from_rotvec(aa)
    ref_q = R.as_quat()[:, [3, 0, 1, 2]]  # scipy is xyzw
    ref_q *= np.where(ref_q[:, :1] < 0, -1.0, 1.0)
    q_from_aa = rot.axis_angle_to_quaternion(torch.from_numpy(aa)).numpy()
    q_from_m = rot.matrix_to_quaternion(torch.from_numpy(R.as_matrix())).numpy()
    # tol 1e-12: float64 arithmetic. At exactly π (w = 0) q and −q are both valid.
    for q in (q_from_aa, q_from_m):
        d = np.minimum(np.abs(q - ref_q).max(1), np.abs(q + ref_q).max(1))
        assert d.max() < 1e-12
    np.testing.assert_allclose(
        rot.quaternion_to_matrix(torch.from_numpy(ref_q)).numpy(), R.as_matrix(), rtol=0, atol=1e-12)
    back = rot.quaternion_to_axis_angle(torch.from_numpy(ref_q)).numpy()
    assert _same_rotation_vec(back, aa) < 1e-12


def test_quaternion_sign_and_norm_invariance():
    torch.manual_seed(0)
    q = torch.randn(50, 4, dtype=torch.float64)
    R1 = rot.quaternion_to_matrix(q)
    # q, −q and 3q describe the same rotation.
    torch.testing.assert_close(rot.quaternion_to_matrix(-q), R1, rtol=0, atol=1e-14)
    torch.testing.assert_close(rot.quaternion_to_matrix(3 * q), R1, rtol=0, atol=1e-14)
    torch.testing.assert_close(rot.quaternion_to_axis_angle(-2 * q), rot.quaternion_to_axis_angle(q),
                               rtol=0, atol=1e-13)
    qs = rot.matrix_to_quaternion(R1)
    assert (qs[:, 0] >= 0).all()
    torch.testing.assert_close(torch.linalg.vector_norm(qs, dim=-1), torch.ones(50, dtype=torch.float64),
                               rtol=0, atol=1e-15)


def test_rotation_6d_is_pytorch3d_row_convention():
    aa = _random_axis_angle(100, 3)
    R = torch.from_numpy(Rotation.from_rotvec(aa).as_matrix())
    d6 = rot.matrix_to_rotation_6d(R)
    # The 6 numbers are the first two ROWS of R.
    torch.testing.assert_close(d6[:, :3], R[:, 0, :], rtol=0, atol=0)
    torch.testing.assert_close(d6[:, 3:], R[:, 1, :], rtol=0, atol=0)
    torch.testing.assert_close(rot.rotation_6d_to_matrix(d6), R, rtol=0, atol=1e-15)
    # Gram–Schmidt: a scaled, skewed second row gives the same rotation.
    d6_bad = torch.cat([3.0 * d6[:, :3], 0.5 * d6[:, 3:] + 2.0 * d6[:, :3]], dim=1)
    torch.testing.assert_close(rot.rotation_6d_to_matrix(d6_bad), R, rtol=0, atol=1e-14)


def test_batch_dims_and_dtype_preserved():
    torch.manual_seed(1)
    aa = torch.randn(2, 3, 5, 3)
    R = rot.axis_angle_to_matrix(aa)
    assert R.shape == (2, 3, 5, 3, 3) and R.dtype == torch.float32
    assert rot.matrix_to_axis_angle(R).shape == (2, 3, 5, 3)
    assert rot.matrix_to_quaternion(R).shape == (2, 3, 5, 4)
    assert rot.axis_angle_to_quaternion(aa).shape == (2, 3, 5, 4)
    assert rot.matrix_to_rotation_6d(R).shape == (2, 3, 5, 6)
    assert rot.rotation_6d_to_matrix(rot.matrix_to_rotation_6d(R)).shape == (2, 3, 5, 3, 3)
    # Round trips in float32 (angles up to ~3.5 rad wrap; compare matrices).
    torch.testing.assert_close(rot.axis_angle_to_matrix(rot.matrix_to_axis_angle(R)), R,
                               rtol=0, atol=3e-6)  # float32 trig + atan2
    torch.testing.assert_close(rot.quaternion_to_matrix(rot.matrix_to_quaternion(R)), R,
                               rtol=0, atol=3e-6)


def test_gradients_finite_at_identity_and_pi():
    aa = torch.tensor([[0.0, 0.0, 0.0], [1e-20, 0.0, 0.0], [math.pi, 0.0, 0.0],
                       [0.0, math.pi - 1e-6, 0.0]], dtype=torch.float64, requires_grad=True)
    out = rot.matrix_to_axis_angle(rot.axis_angle_to_matrix(aa)).sum() \
        + rot.quaternion_to_axis_angle(rot.axis_angle_to_quaternion(aa)).sum()
    (g,) = torch.autograd.grad(out, aa)
    assert torch.isfinite(g).all()
    # At the identity the round trip is the identity map, so d(sum)/d(aa) = 2 per entry.
    torch.testing.assert_close(g[0], torch.full((3,), 2.0, dtype=torch.float64), rtol=0, atol=1e-10)


def test_gradcheck_small_and_generic_angles():
    for aa in (torch.tensor([[0.3, -0.2, 0.5]], dtype=torch.float64),
               torch.tensor([[1e-5, 2e-5, -1e-5]], dtype=torch.float64)):
        aa.requires_grad_(True)
        assert torch.autograd.gradcheck(rot.axis_angle_to_matrix, (aa,))
        assert torch.autograd.gradcheck(rot.axis_angle_to_quaternion, (aa,))
        R = rot.axis_angle_to_matrix(aa).detach().requires_grad_(True)
        assert torch.autograd.gradcheck(rot.matrix_to_axis_angle, (R,))
    d6 = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2),
                     requires_grad=True)
    assert torch.autograd.gradcheck(rot.rotation_6d_to_matrix, (d6,))
