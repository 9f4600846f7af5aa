"""Blender cameras and 3D views → the engine's OpenCV camera convention, as the drawer takes them.

OpenCV: x right, y down, z forward; ``viewmat`` world→camera; intrinsics in pixels with the
principal point from the top-left image corner and pixel centres at integer + 0.5. Scene
cameras go through :func:`camera_from_object`, the 3D viewport through :func:`camera_from_view`.
"""

from __future__ import annotations

from dataclasses import dataclass

import bpy
import numpy as np

from ..errors import SplatError
from ..rig.flame_math import GL_CV_FLIP, blender_c2w_to_opencv_w2c

__all__ = ["DrawCamera", "intrinsics_from_projection", "render_size", "camera_from_object",
           "camera_from_view", "border_rect", "crop_camera"]


@dataclass
class DrawCamera:
    """A camera in the engine's OpenCV convention, as the splat drawer consumes it.

    Attributes:
        viewmat: world→camera, OpenCV axes (x right, y down, z forward), meters. [4, 4] float64
        fx, fy: focal lengths, pixels (orthographic: pixels per meter).
        cx, cy: principal point, pixels from the top-left image corner.
        width, height: image size, pixels.
        near, far: camera-z range kept, meters (Gaussian centres outside are culled).
        ortho: orthographic projection (``px = fx·x + cx``) instead of pinhole (``fx·x/z + cx``).
    """

    viewmat: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    near: float = 0.01
    far: float = 1e10
    ortho: bool = False

    @property
    def K(self) -> np.ndarray:
        """Intrinsics, pixels. [3, 3] float64"""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def key(self) -> tuple:
        """Hashable identity (the drawer re-sorts only when this changes)."""
        return (self.viewmat.astype(np.float64).tobytes(), self.fx, self.fy, self.cx, self.cy,
                self.width, self.height, self.near, self.far, self.ortho)


def intrinsics_from_projection(P: np.ndarray, width: int, height: int
                               ) -> tuple[float, float, float, float, bool, float, float]:
    """OpenGL projection matrix → OpenCV intrinsics and clip range.

    Derivation (camera looks down −z_gl; ``x_cv = x_gl``, ``y_cv = −y_gl``, ``z_cv = −z_gl``):
    perspective ``px = (ndc_x + 1) W/2`` gives ``fx = P00 W/2``, ``cx = (1 − P02) W/2``,
    ``fy = P11 H/2``, ``cy = (1 + P12) H/2`` (rows counted from the top); orthographic
    ``fx = P00 W/2``, ``cx = (1 + P03) W/2``, ``fy = P11 H/2``, ``cy = (1 − P13) H/2``.

    Args:
        P: projection (window) matrix, OpenGL convention. [4, 4]
        width, height: image size, pixels.
    Returns:
        (fx, fy, cx, cy, ortho, near, far); near/far are camera-z distances, meters.
    """
    P = np.asarray(P, dtype=np.float64)
    ortho = abs(P[3, 3] - 1.0) < 1e-9 and abs(P[3, 2]) < 1e-9
    fx = P[0, 0] * width / 2.0
    fy = P[1, 1] * height / 2.0
    if ortho:
        cx = (1.0 + P[0, 3]) * width / 2.0
        cy = (1.0 - P[1, 3]) * height / 2.0
        near = (P[2, 3] + 1.0) / P[2, 2]
        far = (P[2, 3] - 1.0) / P[2, 2]
    else:
        cx = (1.0 - P[0, 2]) * width / 2.0
        cy = (1.0 + P[1, 2]) * height / 2.0
        near = P[2, 3] / (P[2, 2] - 1.0)
        far = P[2, 3] / (P[2, 2] + 1.0)
    return float(fx), float(fy), float(cx), float(cy), bool(ortho), float(near), float(far)


def render_size(render: bpy.types.RenderSettings) -> tuple[int, int]:
    """Output size in pixels (resolution × percentage)."""
    s = render.resolution_percentage / 100.0
    return max(1, int(render.resolution_x * s)), max(1, int(render.resolution_y * s))


def border_rect(render: bpy.types.RenderSettings, width: int, height: int, result_width: int,
                result_height: int) -> tuple[int, int, int, int]:
    """The pixels a render covers: the whole frame, or the render border.

    Blender sizes a border render's result to the border (whether or not it crops the output);
    its origin is the border's lower-left corner, ``int(min · size)`` as Blender rounds it.

    Args:
        render: the scene's render settings.
        width, height: full output size, pixels.
        result_width, result_height: the size of the result Blender gave the engine.
    Returns:
        (x0, y0, w, h): lower-left corner (x from the left, y from the bottom) and size, pixels.
    Raises:
        SplatError: the result does not fit the frame (an unknown border convention).
    """
    if not render.use_border or (result_width, result_height) == (width, height):
        return 0, 0, int(width), int(height)
    x0 = min(int(render.border_min_x * width), width - result_width)
    y0 = min(int(render.border_min_y * height), height - result_height)
    if x0 < 0 or y0 < 0:
        raise SplatError(f"render border {result_width}x{result_height} does not fit the "
                         f"{width}x{height} frame")
    return x0, y0, int(result_width), int(result_height)


def crop_camera(cam: DrawCamera, left: int, top: int, width: int, height: int) -> DrawCamera:
    """The same camera restricted to a pixel window (a render border): pixel centres and the
    projection are unchanged, the principal point moves by the window's offset.

    Args:
        cam: the full-frame camera.
        left, top: window offset from the top-left image corner, pixels.
        width, height: window size, pixels.
    """
    return DrawCamera(cam.viewmat, cam.fx, cam.fy, cam.cx - left, cam.cy - top, int(width), int(height),
                      near=cam.near, far=cam.far, ortho=cam.ortho)


def camera_from_object(cam_obj: bpy.types.Object, depsgraph: bpy.types.Depsgraph,
                       width: int, height: int, pixel_aspect: tuple[float, float] = (1.0, 1.0)
                       ) -> DrawCamera:
    """A scene camera (lens, sensor fit, shift, clip range, pixel aspect) → :class:`DrawCamera`.

    Args:
        cam_obj: the (evaluated) camera object.
        depsgraph: the depsgraph it was evaluated in.
        width, height: output size, pixels.
        pixel_aspect: (render.pixel_aspect_x, render.pixel_aspect_y).
    Raises:
        SplatError: a panoramic camera (the drawer projects pinhole or orthographic only).
    """
    if cam_obj.type != 'CAMERA':
        raise SplatError(f"object '{cam_obj.name}' is a {cam_obj.type}, expected a CAMERA")
    if cam_obj.data.type == 'PANO':
        raise SplatError(f"camera '{cam_obj.name}': panoramic cameras are not supported by the "
                         f"splat engine (use perspective or orthographic)")
    P = np.array(cam_obj.calc_matrix_camera(depsgraph, x=width, y=height,
                                            scale_x=pixel_aspect[0], scale_y=pixel_aspect[1]))
    fx, fy, cx, cy, ortho, _, _ = intrinsics_from_projection(P, width, height)
    viewmat = blender_c2w_to_opencv_w2c(np.array(cam_obj.matrix_world))
    return DrawCamera(viewmat, fx, fy, cx, cy, int(width), int(height),
                      near=float(cam_obj.data.clip_start), far=float(cam_obj.data.clip_end),
                      ortho=ortho)


def camera_from_view(region_data: bpy.types.RegionView3D, width: int, height: int) -> DrawCamera:
    """The 3D viewport's view (``RegionView3D``) → :class:`DrawCamera` of the region's size.

    Args:
        region_data: ``context.region_data``.
        width, height: region size, pixels.
    """
    P = np.array(region_data.window_matrix)
    fx, fy, cx, cy, ortho, near, far = intrinsics_from_projection(P, width, height)
    viewmat = GL_CV_FLIP @ np.array(region_data.view_matrix, dtype=np.float64)
    return DrawCamera(viewmat, fx, fy, cx, cy, int(width), int(height), near=near, far=far,
                      ortho=ortho)
