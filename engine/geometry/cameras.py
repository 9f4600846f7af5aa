"""Pinhole cameras and the conversions between camera conventions.

The engine's one camera convention is OpenCV: x right, y down, z forward; a camera
is a world→camera rigid transform ``viewmat`` [4, 4] (meters) and intrinsics ``K``
[3, 3] in pixels, with pixel (0, 0)'s centre at (0.5, 0.5). Every other convention
is converted at the boundary by exactly one function here:

- INSTA ``transform_matrix`` (metrical tracker → INSTA ``scripts/transforms.py``, as
  read by FATE's ``InstaDataset``): camera→world in **OpenCV** axes — the script
  writes ``inv(w2c)`` of the tracker's OpenCV camera and FATE inverts it back without
  any axis flip. Use :func:`c2w_to_w2c`.
- NeRF / instant-ngp style ``transform_matrix``: camera→world, OpenGL axes
  (x right, y up, z back). Use :func:`opengl_c2w_to_opencv_w2c`.
- IMavatar ``world_mat``: world→camera in OpenGL axes (its projection divides by −z).
  Use :func:`opengl_w2c_to_opencv_w2c`.
- Blender cameras: camera→world (``matrix_world``), looking down −Z with +Y up, i.e.
  the OpenGL axes again; Blender's world is +Z up, which the head object's own
  rotation handles (see docs/ARCHITECTURE.md), not the camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# Flips y and z: OpenGL camera axes <-> OpenCV camera axes (its own inverse).
_GL_CV_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass
class Camera:
    """A pinhole camera in the engine's OpenCV convention.

    Attributes:
        viewmat: world→camera rigid transform, OpenCV axes, meters. [4, 4] float32
        K: intrinsics in pixels (fx, fy, cx, cy). [3, 3] float32
        width: image width in pixels.
        height: image height in pixels.
    """

    viewmat: Tensor
    K: Tensor
    width: int
    height: int

    def to(self, device: torch.device | str) -> "Camera":
        """Returns the same camera with its tensors on ``device``."""
        return Camera(self.viewmat.to(device), self.K.to(device), self.width, self.height)

    @property
    def center(self) -> Tensor:
        """Camera centre in world coordinates, meters. [3]"""
        R = self.viewmat[:3, :3]
        t = self.viewmat[:3, 3]
        return -R.T @ t


def opengl_c2w_to_opencv_w2c(c2w_gl: np.ndarray) -> np.ndarray:
    """NeRF/instant-ngp ``transform_matrix`` (OpenGL axes) → engine ``viewmat``.

    Not for INSTA data: INSTA's ``transform_matrix`` uses OpenCV axes (:func:`c2w_to_w2c`).

    Args:
        c2w_gl: camera→world, OpenGL camera axes (x right, y up, z backward). [4, 4] or [..., 4, 4]
    Returns:
        world→camera, OpenCV axes (x right, y down, z forward). [..., 4, 4] float64
    """
    c2w_cv = np.asarray(c2w_gl, dtype=np.float64) @ _GL_CV_FLIP
    return np.linalg.inv(c2w_cv)


def c2w_to_w2c(c2w: np.ndarray) -> np.ndarray:
    """Camera→world → world→camera in the same camera axes (INSTA ``transform_matrix``
    → engine ``viewmat``; it is its own inverse).

    A general 4×4 inverse in float64, so ``c2w_to_w2c(c2w_to_w2c(m))`` returns ``m`` to
    ~1e-16 even when ``m``'s rotation is only orthonormal to float32 precision.

    Args:
        c2w: camera→world rigid transforms, meters. [..., 4, 4]
    Returns:
        world→camera. [..., 4, 4] float64
    """
    return np.linalg.inv(np.asarray(c2w, dtype=np.float64))


def opengl_w2c_to_opencv_w2c(w2c_gl: np.ndarray) -> np.ndarray:
    """World→camera with OpenGL camera axes → engine ``viewmat`` (its own inverse).

    Flips the camera's y and z axes: ``diag(1, −1, −1, 1) @ w2c_gl``.

    Args:
        w2c_gl: world→camera, OpenGL axes (x right, y up, z backward). [..., 4, 4]
    Returns:
        world→camera, OpenCV axes. [..., 4, 4] float64
    """
    return _GL_CV_FLIP @ np.asarray(w2c_gl, dtype=np.float64)


def opencv_w2c_to_opengl_c2w(w2c_cv: np.ndarray) -> np.ndarray:
    """Engine ``viewmat`` → NeRF/instant-ngp ``transform_matrix`` (inverse of
    :func:`opengl_c2w_to_opencv_w2c`).

    Args:
        w2c_cv: world→camera, OpenCV axes. [..., 4, 4]
    Returns:
        camera→world, OpenGL axes. [..., 4, 4] float64
    """
    return np.linalg.inv(np.asarray(w2c_cv, dtype=np.float64)) @ _GL_CV_FLIP


def opencv_w2c_to_blender_c2w(w2c_cv: np.ndarray) -> np.ndarray:
    """Engine ``viewmat`` → a Blender camera's ``matrix_world`` in the same world frame.

    Blender cameras use OpenGL axes, so this equals :func:`opencv_w2c_to_opengl_c2w`;
    it exists so call sites say which convention they mean. The world frame is not
    changed: place the camera under the same parent/rotation as the head object.

    Args:
        w2c_cv: world→camera, OpenCV axes. [..., 4, 4]
    Returns:
        camera→world with the camera looking down its local −Z. [..., 4, 4] float64
    """
    return opencv_w2c_to_opengl_c2w(w2c_cv)


def normalized_to_pixel_intrinsics(fx: float, fy: float, cx: float, cy: float,
                                   width: int, height: int) -> np.ndarray:
    """IMavatar-style intrinsics normalised by the image size → ``K`` in pixels.

    Args:
        fx, fy, cx, cy: focal lengths and principal point divided by width (x) and height (y).
        width, height: image size in pixels.
    Returns:
        K in pixels. [3, 3] float64
    """
    return np.array([[fx * width, 0.0, cx * width],
                     [0.0, fy * height, cy * height],
                     [0.0, 0.0, 1.0]])


def look_at_opencv(eye: np.ndarray, target: np.ndarray, up: np.ndarray = (0.0, 1.0, 0.0)) -> np.ndarray:
    """World→camera (OpenCV) for a camera at ``eye`` looking at ``target``.

    Args:
        eye: camera centre, meters. [3]
        target: point the optical axis passes through, meters. [3]
        up: world direction that appears up in the image. [3]
    Returns:
        viewmat [4, 4] float64.
    """
    eye = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, dtype=np.float64))  # x = y × z with y = −up
    if not np.linalg.norm(x) > 1e-12:
        raise ValueError(f"look_at_opencv: view direction {z} is parallel to up {up}")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])  # rows: camera axes in world coords
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ eye
    return w2c


def intrinsics_from_fov(fov_y_deg: float, width: int, height: int) -> np.ndarray:
    """Pinhole ``K`` (pixels, square pixels, centred principal point) from a vertical FOV.

    Args:
        fov_y_deg: vertical field of view in degrees.
        width, height: image size in pixels.
    Returns:
        K [3, 3] float64.
    """
    f = 0.5 * height / np.tan(np.radians(fov_y_deg) / 2)
    return np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
