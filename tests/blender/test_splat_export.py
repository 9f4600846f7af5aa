"""Our Gaussian conventions → 3DGS (addon/splats/conventions.py) and Export Splats (.ply): the file
read back with ``plyfile`` equals the splat runtime's Gaussians; on Blender ≥ 5.3 its own PLY
importer gives the same splats."""

from __future__ import annotations

import numpy as np
import pytest

from addon.files.ply import PROPERTIES, PlySplats, read_splat_ply, write_splat_ply
from addon.splats import conventions as C


def _random_rotations(n: int, rng) -> np.ndarray:
    q = rng.standard_normal((n, 4))
    return C.matrix_from_quaternion(q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float64)


# ------------------------------------------------------------------------------ no bpy needed
def test_dc_round_trip_and_the_displayed_value():
    rgb = np.array([[0.5, 0.0, 1.0]], np.float32)
    dc = C.dc_from_color(rgb)
    np.testing.assert_allclose(dc, [[0.0, -0.5 / 0.28209479, 0.5 / 0.28209479]], rtol=1e-6)
    np.testing.assert_allclose(C.color_from_dc(dc), rgb, atol=1e-7)
    base = C.radiance_base(rgb, np.array([0.25]))
    assert base.shape == (1, 4) and base[0, 3] == np.float32(0.25)


def test_logit_sigmoid_round_trip_is_finite_at_the_ends():
    p = np.array([0.0, 1e-3, 0.5, 0.999, 1.0])
    x = C.logit(p)
    assert np.isfinite(x).all()
    np.testing.assert_allclose(C.sigmoid(x)[1:4], p[1:4], rtol=1e-5)


def test_quaternions_round_trip_every_branch():
    rng = np.random.default_rng(0)
    R = _random_rotations(500, rng)
    # Near-180° turns about each axis exercise Shepperd's x / y / z branches.
    R = np.concatenate([R, np.diag([1.0, -1, -1])[None], np.diag([-1.0, 1, -1])[None],
                        np.diag([-1.0, -1, 1])[None]])
    q = C.quaternion_from_matrix(R)
    assert np.all(q[:, 0] >= 0.0)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(C.matrix_from_quaternion(q), R, atol=2e-6)  # float32 output
    # w, x, y, z: a +90° turn about +Z.
    Rz = np.array([[[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]])
    np.testing.assert_allclose(C.quaternion_from_matrix(Rz), [[np.sqrt(0.5), 0, 0, np.sqrt(0.5)]], atol=1e-7)


def test_covariance_split_reconstructs_it():
    rng = np.random.default_rng(1)
    R = _random_rotations(200, rng)
    sigma = rng.uniform(1e-4, 1e-2, (200, 3))
    cov = (R * sigma[:, None, :] ** 2) @ R.transpose(0, 2, 1)
    s, q = C.scale_rotation_from_covariance(cov)
    np.testing.assert_allclose(np.sort(s, 1), np.sort(sigma, 1), rtol=1e-4)
    # |Σ| ≤ 1e-4 m²; float32 quaternions: ~1e-11 absolute.
    np.testing.assert_allclose(C.covariance_from_scale_rotation(s, q), cov, atol=1e-10)


def test_ply_file_layout_round_trip(tmp_path):
    plyfile = pytest.importorskip("plyfile", reason="plyfile is not installed")
    rng = np.random.default_rng(2)
    n = 7
    s = PlySplats(rng.standard_normal((n, 3)).astype(np.float32), rng.standard_normal((n, 3)).astype(np.float32),
                  rng.standard_normal(n).astype(np.float32), rng.standard_normal((n, 3)).astype(np.float32),
                  rng.standard_normal((n, 4)).astype(np.float32))
    path = write_splat_ply(tmp_path / "s.ply", s)
    v = plyfile.PlyData.read(str(path))["vertex"]
    assert [p.name for p in v.properties] == PROPERTIES and len(PROPERTIES) == 62
    assert all(p.val_dtype in ("f4", "float32", "<f4") for p in v.properties)
    np.testing.assert_array_equal(np.stack([v["x"], v["y"], v["z"]], 1), s.positions)
    np.testing.assert_array_equal(np.stack([v[f"rot_{i}"] for i in range(4)], 1), s.rotation)
    np.testing.assert_array_equal(v["opacity"], s.opacity_logit)
    np.testing.assert_array_equal(v["f_rest_44"], 0.0)
    back = read_splat_ply(path)
    np.testing.assert_array_equal(back.log_scale, s.log_scale)
    np.testing.assert_array_equal(back.f_dc, s.f_dc)
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed


# ------------------------------------------------------------------------------ Blender
bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed")

from addon.splats import export, native  # noqa: E402
from addon.splats import runtime as sr  # noqa: E402


def test_export_current_frame_and_sequence_equal_the_runtime(splat_scene, tmp_path):
    plyfile = pytest.importorskip("plyfile", reason="plyfile is not installed")
    scene = bpy.context.scene
    head = splat_scene.head
    scene.frame_set(2)
    [single] = export.export_splats(head, scene, tmp_path / "head.ply")
    assert single == tmp_path / "head.ply"
    files = export.export_splats(head, scene, tmp_path / "anim.ply", frames=[1, 3])
    assert [f.name for f in files] == ["anim_0001.ply", "anim_0003.ply"]
    assert scene.frame_current == 2  # restored
    for path, frame in ((single, 2), (files[0], 1), (files[1], 3)):
        scene.frame_set(frame)
        g = sr.scene_gaussians(bpy.context.evaluated_depsgraph_get(), resample=True)
        v = plyfile.PlyData.read(str(path))["vertex"]
        np.testing.assert_allclose(np.stack([v["x"], v["y"], v["z"]], 1), g.means, atol=1e-7)
        rgb = C.color_from_dc(np.stack([v[f"f_dc_{i}"] for i in range(3)], 1))
        np.testing.assert_allclose(rgb, g.colors, atol=1e-6)
        np.testing.assert_allclose(C.sigmoid(v["opacity"]), g.opacities, atol=1e-6)
        sigma = np.exp(np.stack([v[f"scale_{i}"] for i in range(3)], 1))
        q = np.stack([v[f"rot_{i}"] for i in range(4)], 1)
        # |Σ| ~ 4e-4 m²: float32 σ and quaternion give ~1e-10.
        np.testing.assert_allclose(C.covariance_from_scale_rotation(sigma, q), g.covars, atol=1e-9)
    a, b = (read_splat_ply(f).positions for f in files)
    np.testing.assert_allclose(b - a, np.broadcast_to([0.0, 0.0, 0.015], a.shape), atol=1e-6)  # "Raise"


def test_export_refuses_a_non_head_and_a_missing_folder(splat_scene, tmp_path):
    from addon.errors import SplatError

    with pytest.raises(SplatError, match="not a FATE head"):
        export.export_splats(splat_scene.camera, bpy.context.scene, tmp_path / "x.ply")
    with pytest.raises(SplatError, match="does not exist"):
        export.export_splats(splat_scene.head, bpy.context.scene, tmp_path / "nope" / "x.ply")


@pytest.mark.skipif(not native.native_splats_supported()[0], reason="needs Blender >= 5.3's PLY splat import")
def test_blender_53_ply_import_reads_the_same_splats(splat_scene, tmp_path):
    scene = bpy.context.scene
    [path] = export.export_splats(splat_scene.head, scene, tmp_path / "head.ply")
    g = sr.scene_gaussians(bpy.context.evaluated_depsgraph_get(), resample=True)
    bpy.ops.wm.ply_import(filepath=str(path))
    obj = bpy.context.active_object
    pc = obj.data
    assert obj.type == "POINTCLOUD" and pc.type == "GAUSSIAN_SPLAT" and len(pc.points) == len(g)
    np.testing.assert_allclose(np.array(obj.matrix_world), np.eye(4))

    def get(name, field, k):
        buf = np.empty(len(pc.points) * k, np.float32)
        pc.attributes[name].data.foreach_get(field, buf)
        return buf.reshape(-1, k)

    np.testing.assert_allclose(get("position", "vector", 3), g.means, atol=1e-7)
    base = get("radiance:base", "vector", 4)
    np.testing.assert_allclose(C.color_from_dc(base[:, :3]), g.colors, atol=1e-6)
    np.testing.assert_allclose(base[:, 3], g.opacities, atol=1e-6)
    cov = C.covariance_from_scale_rotation(get("scale", "vector", 3), get("rotation", "value", 4))
    np.testing.assert_allclose(cov, g.covars, atol=1e-9)
