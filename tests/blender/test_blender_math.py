"""addon.rig.flame_math: rotations, driver expressions (evaluated as Python) and camera conversions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from addon.rig import flame_math as fm
from synthetic_avatar import rodrigues


def _eval(expr: str, **variables) -> float:
    """Evaluates one of our driver expressions (arithmetic only) as Blender's evaluator would."""
    return float(eval(expr, {"__builtins__": {}}, variables))  # noqa: S307 - our own arithmetic strings


def test_rotations_match_rodrigues():
    rng = np.random.default_rng(0)
    aa = np.concatenate([rng.normal(0, 1.0, (50, 3)), [[0.0, 0.0, 0.0], [1e-10, 0.0, 0.0], [math.pi, 0, 0]]])
    q = fm.axis_angle_to_quaternion(aa)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    # smplx-style Rodrigues adds 1e-8 to the angle: agreement to ~1e-8
    np.testing.assert_allclose(fm.quaternion_to_matrix(q * 3.7), rodrigues(aa), atol=2e-8)
    flips = fm.make_quaternions_continuous(np.array([[1.0, 0, 0, 0], [-0.99, -0.1, 0, 0], [0.98, 0.2, 0, 0]]))
    assert (np.einsum("ij,ij->i", flips[1:], flips[:-1]) > 0).all()


def test_driver_expressions_are_exact():
    """Corrective and location expressions equal (R − I) and (I − R)·ΔJ for non-unit quaternions."""
    rng = np.random.default_rng(1)
    for _ in range(20):
        q = rng.normal(size=4) * rng.uniform(0.3, 2.0)
        R = fm.quaternion_to_matrix(q)
        w, x, y, z = q
        for r in range(3):
            for c in range(3):
                assert _eval(fm.corrective_expression(r, c), w=w, x=x, y=y, z=z) == pytest.approx(
                    (R - np.eye(3))[r, c], abs=1e-12)
        dJ = rng.normal(0, 0.01, 3)
        loc = [_eval(fm.location_offset_expression(a), w=w, x=x, y=y, z=z, a=dJ[0], b=dJ[1], c=dJ[2])
               for a in range(3)]
        np.testing.assert_allclose(loc, (np.eye(3) - R) @ dJ, atol=1e-14)


def test_weighted_sum_chunks_fit_and_add_up():
    rng = np.random.default_rng(2)
    w = rng.normal(0, 1e-3, 100) * (rng.uniform(size=100) > 0.1)
    e = rng.normal(0, 2, 100)
    chunks = fm.weighted_sum_chunks(w, tol=0.0)
    assert len(chunks) > 1 and all(len(expr) <= fm.DRIVER_EXPRESSION_MAX for expr, _ in chunks)
    used = [k for _, ks in chunks for k in ks]
    assert used == [k for k in range(100) if w[k] != 0]  # zero weights dropped, order kept
    total = sum(_eval(expr, **{f"e{k}": e[k] for k in ks}) for expr, ks in chunks)
    assert total == pytest.approx(float(w @ e), rel=1e-8)  # weights printed with 9 significant digits
    assert fm.weighted_sum_chunks(np.zeros(5)) == []


def test_corrective_names_follow_posedirs_rows():
    names = fm.corrective_key_names(["root", "neck", "jaw", "left_eye", "right_eye"])
    assert len(names) == 36 and names[0] == "Pose_neck_00" and names[9 + 5] == "Pose_jaw_12"
    assert names[-1] == "Pose_right_eye_22"


def test_camera_pose_convention():
    """A camera at (0, 0, 1) looking at the origin (OpenCV) → Blender camera looking down its −Z."""
    w2c = np.eye(4)
    w2c[:3, :3] = np.diag([1.0, -1.0, -1.0])  # OpenCV camera on +Z looking towards −Z, y down
    w2c[:3, 3] = -w2c[:3, :3] @ np.array([0.0, 0.0, 1.0])
    c2w = fm.opencv_w2c_to_blender_c2w(w2c)
    np.testing.assert_allclose(c2w[:3, 3], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(c2w[:3, :3] @ [0, 0, -1], [0, 0, -1], atol=1e-12)  # looks at the origin
    np.testing.assert_allclose(c2w[:3, :3] @ [0, 1, 0], [0, 1, 0], atol=1e-12)   # image up = world +Y


@pytest.mark.parametrize("K, size", [
    (np.array([[600.0, 0, 320.0], [0, 600.0, 240.0], [0, 0, 1]]), (640, 480)),
    (np.array([[500.0, 0, 301.5], [0, 540.0, 260.25], [0, 0, 1]]), (640, 480)),   # fx ≠ fy, off-centre
    (np.array([[800.0, 0, 180.0], [0, 760.0, 330.0], [0, 0, 1]]), (384, 640)),    # portrait
])
def test_intrinsics_project_like_opencv(K, size):
    """Blender's camera with the converted settings projects points onto the same pixels as K."""
    bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed")
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    width, height = size
    p = fm.blender_camera_intrinsics(K, width, height)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    cam_data = bpy.data.cameras.new("cam")
    cam = bpy.data.objects.new("cam", cam_data)
    scene.collection.objects.link(cam)
    for attr in ("lens", "sensor_width", "sensor_fit", "shift_x", "shift_y"):
        setattr(cam_data, attr, p[attr])
    r = scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = width, height, 100
    r.pixel_aspect_x, r.pixel_aspect_y = p["pixel_aspect_x"], p["pixel_aspect_y"]
    # identity camera: looks down −Z; OpenCV point (x, y, z) = Blender (x, −y, −z)
    rng = np.random.default_rng(3)
    pts = np.stack([rng.uniform(-0.3, 0.3, 20), rng.uniform(-0.3, 0.3, 20), rng.uniform(0.8, 2.0, 20)], 1)
    uv = pts[:, :2] / pts[:, 2:] @ K[:2, :2].T + K[:2, 2]
    for (x, y, z), (u, v) in zip(pts, uv):
        ndc = world_to_camera_view(scene, cam, Vector((x, -y, -z)))
        assert ndc.x * width == pytest.approx(u, abs=1e-3) and (1 - ndc.y) * height == pytest.approx(v, abs=1e-3)
