"""engine.geometry.cameras: every convention conversion round-trips and projects where OpenCV says."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from engine.geometry import cameras as cam


def _project_opencv(w2c: np.ndarray, K: np.ndarray, X: np.ndarray) -> np.ndarray:
    """OpenCV's documented pinhole model (cv2.projectPoints without distortion):
    x_c = R X + t; u = fx x_c/z_c + cx; v = fy y_c/z_c + cy. [N, 2]"""
    xc = X @ w2c[:3, :3].T + w2c[:3, 3]
    return np.stack([K[0, 0] * xc[:, 0] / xc[:, 2] + K[0, 2],
                     K[1, 1] * xc[:, 1] / xc[:, 2] + K[1, 2]], axis=1)


def _random_rigid(rng, n: int) -> np.ndarray:
    """[n, 4, 4] float64 random rigid transforms."""
    m = np.tile(np.eye(4), (n, 1, 1))
    m[:, :3, :3] = Rotation.random(n, random_state=int(rng.integers(1 << 31))).as_matrix()
    m[:, :3, 3] = rng.normal(size=(n, 3))
    return m


def test_opengl_opencv_c2w_round_trip():
    rng = np.random.default_rng(0)
    c2w_gl = _random_rigid(rng, 10)
    w2c = cam.opengl_c2w_to_opencv_w2c(c2w_gl)
    np.testing.assert_allclose(cam.opencv_w2c_to_opengl_c2w(w2c), c2w_gl, rtol=0, atol=1e-12)
    # Same camera centre; OpenGL looks down -z, so the OpenCV +z axis is the GL -z axis.
    np.testing.assert_allclose(np.linalg.inv(w2c)[:, :3, 3], c2w_gl[:, :3, 3], rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.inv(w2c)[:, :3, 2], -c2w_gl[:, :3, 2], rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.inv(w2c)[:, :3, 1], -c2w_gl[:, :3, 1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(w2c[:, :3, :3]), 1.0, rtol=0, atol=1e-12)


def test_c2w_to_w2c_is_exact_inverse_and_involution():
    rng = np.random.default_rng(1)
    c2w = _random_rigid(rng, 8).astype(np.float32)  # float32 rotation: orthonormal to ~1e-7 only
    w2c = cam.c2w_to_w2c(c2w)
    np.testing.assert_allclose(w2c @ c2w.astype(np.float64), np.tile(np.eye(4), (8, 1, 1)),
                               rtol=0, atol=1e-14)
    # Inverting twice returns the float32 input exactly once cast back.
    np.testing.assert_array_equal(cam.c2w_to_w2c(w2c).astype(np.float32), c2w)


def test_opengl_w2c_to_opencv_w2c_projects_like_opengl():
    rng = np.random.default_rng(2)
    w2c_gl = _random_rigid(rng, 1)[0]
    w2c_cv = cam.opengl_w2c_to_opencv_w2c(w2c_gl)
    np.testing.assert_allclose(cam.opengl_w2c_to_opencv_w2c(w2c_cv), w2c_gl, rtol=0, atol=0)
    # GL projection (camera looks down -z, y up): u = f x/(-z) + cx, v = -f y/(-z) + cy.
    X = rng.normal(size=(20, 3))
    xg = X @ w2c_gl[:3, :3].T + w2c_gl[:3, 3]
    K = np.array([[300.0, 0, 64.5], [0, 310.0, 40.25], [0, 0, 1]])
    uv_gl = np.stack([300.0 * xg[:, 0] / -xg[:, 2] + 64.5, -310.0 * xg[:, 1] / -xg[:, 2] + 40.25], 1)
    np.testing.assert_allclose(_project_opencv(w2c_cv, K, X), uv_gl, rtol=1e-12, atol=1e-9)


def test_blender_c2w_looks_at_target():
    eye, target = np.array([0.3, -0.2, 1.5]), np.array([0.0, 0.05, 0.0])
    w2c = cam.look_at_opencv(eye, target)
    b = cam.opencv_w2c_to_blender_c2w(w2c)
    np.testing.assert_allclose(b[:3, 3], eye, rtol=0, atol=1e-12)
    view_dir = -b[:3, 2]  # Blender cameras look down local -Z
    expect = (target - eye) / np.linalg.norm(target - eye)
    np.testing.assert_allclose(view_dir, expect, rtol=0, atol=1e-12)
    assert b[:3, 1] @ np.array([0.0, 1.0, 0.0]) > 0.9  # local +Y is (roughly) world up
    np.testing.assert_allclose(b, cam.opencv_w2c_to_opengl_c2w(w2c), rtol=0, atol=0)


def test_look_at_and_fov_projection_match_opencv():
    W, H = 160, 120
    K = cam.intrinsics_from_fov(40.0, W, H)
    eye, target = np.array([0.1, 0.2, 1.0]), np.array([0.0, 0.0, 0.0])
    w2c = cam.look_at_opencv(eye, target)
    R = w2c[:3, :3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), rtol=0, atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-12)
    # The target lands on the principal point = the image centre (W/2, H/2).
    np.testing.assert_allclose(_project_opencv(w2c, K, target[None]), [[W / 2, H / 2]], atol=1e-9)
    # A point up (world +Y) from the target lands above the centre (smaller v).
    uv = _project_opencv(w2c, K, np.array([[0.0, 0.05, 0.0]]))
    assert uv[0, 1] < H / 2
    # A point at the top of the vertical field of view lands on the top edge (v = 0).
    d = np.linalg.norm(target - eye)
    up_cam = -R[1]  # camera "up" (−y in OpenCV) in world coordinates
    top = target + up_cam * d * math.tan(math.radians(20.0))
    np.testing.assert_allclose(_project_opencv(w2c, K, top[None])[0], [W / 2, 0.0], atol=1e-9)
    with pytest.raises(ValueError, match="parallel"):
        cam.look_at_opencv(np.array([0.0, 1.0, 0.0]), np.zeros(3))


def test_camera_dataclass_projection_centre_and_to():
    K = cam.normalized_to_pixel_intrinsics(1.5, 1.6, 0.5, 0.45, 200, 100)
    np.testing.assert_allclose(K, [[300.0, 0, 100.0], [0, 160.0, 45.0], [0, 0, 1]])
    w2c = cam.look_at_opencv([0.2, 0.1, 2.0], [0.0, 0.0, 0.0])
    c = cam.Camera(torch.tensor(w2c, dtype=torch.float32), torch.tensor(K, dtype=torch.float32), 200, 100)
    torch.testing.assert_close(c.center, torch.tensor([0.2, 0.1, 2.0]), rtol=0, atol=1e-6)  # float32
    c2 = c.to("cpu")
    assert c2.width == 200 and c2.height == 100 and torch.equal(c2.viewmat, c.viewmat)
    # A point projected with the Camera's tensors (x = K (R X + t)) lands where OpenCV says.
    X = np.array([[0.05, -0.03, 0.1]])
    xc = c.viewmat[:3, :3].double() @ torch.tensor(X[0]) + c.viewmat[:3, 3].double()
    uvw = c.K.double() @ xc
    uv = (uvw[:2] / uvw[2]).numpy()
    np.testing.assert_allclose(uv, _project_opencv(w2c, K, X)[0], rtol=0, atol=1e-4)  # float32 camera
