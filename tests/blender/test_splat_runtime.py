"""Splat runtime (numpy side of the splat engine): maps + bindings + evaluated mesh → Gaussians.

Checks the map sampling and face-frame maths against the engine's torch code, the Gaussians
against the engine's map re-splat for the same inputs, that Gaussians follow shape keys and
bones, and the camera conversion against Blender's own projection.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed")

from addon.errors import SplatError  # noqa: E402
from addon.rig import flame_math  # noqa: E402
from addon.splats import cameras as splat_cameras  # noqa: E402
from addon.splats import colour, geometry, pixels  # noqa: E402
from addon.splats import runtime as sr  # noqa: E402


def set_image_pixels(img, data: np.ndarray) -> None:
    """Overwrites an image's RGB(A) channels (data [H, W, C], bottom row first)."""
    w, h = img.size
    rgba = np.ones((h, w, 4), np.float32)
    rgba[..., :data.shape[-1]] = data
    img.pixels.foreach_set(rgba.reshape(-1))
    img.update()


def _engine(module: str):
    """Imports an engine module for comparison, skipping with the reason when it is missing."""
    pytest.importorskip("torch", reason="torch is not installed (engine comparisons need it)")
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:  # pragma: no cover - depends on the engine's progress
        pytest.skip(f"{module} is not importable yet: {exc}")


def _evaluated(obj):
    dg = bpy.context.evaluated_depsgraph_get()
    return obj.evaluated_get(dg), dg


def _mesh_verts(obj) -> np.ndarray:
    ev, _ = _evaluated(obj)
    verts, _ = sr.mesh_arrays(ev.data, faces=False)
    return verts


# ------------------------------------------------------------------------------ pure maths
def test_face_frames_match_engine():
    mesh_ops = _engine("engine.geometry.mesh_ops")
    import torch

    rng = np.random.default_rng(0)
    verts = rng.normal(size=(40, 3)).astype(np.float32)
    faces = np.stack([rng.permutation(40)[:3] for _ in range(60)]).astype(np.int32)
    R, k, n = geometry.face_frames(verts, faces)
    Rt, kt, nt = mesh_ops.face_frames(torch.from_numpy(verts),
                                      torch.from_numpy(faces.astype(np.int64)))
    # float32 on both sides; differences are rounding only.
    np.testing.assert_allclose(R, Rt.numpy(), atol=2e-5)
    np.testing.assert_allclose(k, kt.numpy(), rtol=1e-5)
    np.testing.assert_allclose(n, nt.numpy(), atol=2e-5)
    # Proper rotations.
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-4)


def test_axis_angle_to_matrix_matches_engine():
    rotations = _engine("engine.geometry.rotations")
    import torch

    rng = np.random.default_rng(1)
    aa = np.concatenate([rng.normal(size=(50, 3)), 1e-6 * rng.normal(size=(5, 3)),
                         np.zeros((1, 3))]).astype(np.float32)
    ref = rotations.axis_angle_to_matrix(torch.from_numpy(aa).double()).numpy()
    np.testing.assert_allclose(flame_math.axis_angle_to_matrix(aa), ref, atol=1e-6)  # float32 input


def test_sample_bilinear_texel_centres_edges_and_orientation():
    H, W = 4, 5
    img = np.arange(H * W, dtype=np.float32).reshape(H, W, 1)  # value = row_from_bottom * W + col
    r, c = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    uv = np.stack([(c.ravel() + 0.5) / W, (r.ravel() + 0.5) / H], -1)
    np.testing.assert_allclose(pixels.sample_bilinear(img, uv)[:, 0], img.ravel(), atol=1e-5)
    # Half-way between texels (0,0)-(0,1) and rows 0-1 → mean of the four.
    mid = pixels.sample_bilinear(img, np.array([[1.0 / W, 1.0 / H]]))[0, 0]
    assert mid == pytest.approx((0 + 1 + W + W + 1) / 4, abs=1e-5)
    # Clamp to edge outside [0, 1] and in the outer half texel.
    out = pixels.sample_bilinear(img, np.array([[-0.3, -0.2], [1.4, 1.3], [0.01, 0.99]]))[:, 0]
    np.testing.assert_allclose(out, [0.0, H * W - 1.0, (H - 1) * W], atol=1e-5)


def test_sample_bilinear_matches_engine_maps():
    maps = _engine("engine.maps")
    import torch

    rng = np.random.default_rng(2)
    img = rng.normal(size=(7, 9, 3)).astype(np.float32)  # bottom row first
    uv = rng.uniform(-0.1, 1.1, size=(300, 2)).astype(np.float32)
    top_first = torch.from_numpy(np.ascontiguousarray(img[::-1]))
    ref = maps.sample_map(top_first, torch.from_numpy(uv)).numpy()
    np.testing.assert_allclose(pixels.sample_bilinear(img, uv), ref, atol=1e-5)  # float32 lerp order


def test_srgb_round_trip():
    x = np.linspace(0.0, 1.0, 101, dtype=np.float32)
    np.testing.assert_allclose(colour.linear_to_srgb(colour.srgb_to_linear(x)), x, atol=1e-6)
    assert colour.srgb_to_linear(np.float32(0.5)) == pytest.approx(0.21404, abs=1e-5)


# ------------------------------------------------------------------------------ images
def test_colour_map_reads_encoded_values():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    enc = np.round(np.linspace(0.0, 1.0, 4 * 4 * 3).reshape(4, 4, 3) * 255.0) / 255.0
    byte = bpy.data.images.new("c_byte", 4, 4, alpha=True, float_buffer=False)
    byte.colorspace_settings.name = "sRGB"
    set_image_pixels(byte, enc)
    # 8-bit sRGB image: Image.pixels are the encoded values.
    np.testing.assert_allclose(pixels.image_pixels(byte, encoded=True)[..., :3], enc, atol=1e-6)

    flt = bpy.data.images.new("c_float", 4, 4, alpha=True, float_buffer=True)
    flt.colorspace_settings.name = "sRGB"
    set_image_pixels(flt, colour.srgb_to_linear(enc))  # float buffers of sRGB images hold linear
    np.testing.assert_allclose(pixels.image_pixels(flt, encoded=True)[..., :3], enc, atol=1e-5)

    raw = bpy.data.images.new("c_raw", 4, 4, alpha=True, float_buffer=True)
    raw.colorspace_settings.name = "Non-Color"
    set_image_pixels(raw, enc)
    np.testing.assert_allclose(pixels.image_pixels(raw, encoded=True)[..., :3], enc, atol=1e-6)


# ------------------------------------------------------------------------------ Gaussians
def _engine_gaussians(s, verts: np.ndarray, matrix_world: np.ndarray):
    """The engine's re-splat (engine.maps.sample_maps + engine.model.gaussians.place_gaussians)."""
    maps = _engine("engine.maps")
    gaussians = _engine("engine.model.gaussians")
    rotations = _engine("engine.geometry.rotations")
    import torch

    top_first = {m: torch.from_numpy(np.ascontiguousarray(v[::-1])) for m, v in s.maps.items()}
    vals = maps.sample_maps(top_first, torch.from_numpy(s.uv))
    wg = gaussians.place_gaussians(
        torch.from_numpy(verts), torch.from_numpy(s.faces.astype(np.int64)),
        torch.from_numpy(s.face_idx.astype(np.int64)), torch.from_numpy(s.bary),
        vals["color"], vals["opacity"], vals["scale"],
        rotations.axis_angle_to_matrix(vals["rotation"]), vals["offset"])
    A = matrix_world[:3, :3]
    means = wg.means.numpy() @ A.T + matrix_world[:3, 3]
    covars = A[None] @ wg.covars.numpy() @ A.T[None]
    return means, covars, vals["color"].numpy(), vals["opacity"].numpy()


def test_runtime_matches_engine_resplat(splat_scene):
    s = splat_scene
    ev, dg = _evaluated(s.head)
    g = sr.scene_gaussians(dg)
    assert len(g) == len(s.face_idx)
    verts = _mesh_verts(s.head)
    np.testing.assert_allclose(verts, s.verts, atol=1e-6)  # frame 1: rest pose
    means, covars, colors, opac = _engine_gaussians(s, verts, np.array(ev.matrix_world))
    # float32 throughout; 1e-6 m ≈ rounding of 0.1 m coordinates.
    np.testing.assert_allclose(g.means, means, atol=1e-6)
    scale = np.abs(covars).max()
    np.testing.assert_allclose(g.covars, covars, atol=1e-5 * scale)
    np.testing.assert_allclose(g.colors, colors, atol=1e-5)
    np.testing.assert_allclose(g.opacities, opac, atol=1e-5)


def test_runtime_matches_engine_gaussians_from_maps(splat_scene):
    maps = _engine("engine.maps")
    if not hasattr(maps, "gaussians_from_maps"):
        pytest.skip("engine.maps.gaussians_from_maps does not exist yet (the engine's map "
                    "re-splat entry point); test_runtime_matches_engine_resplat covers the same "
                    "maths through engine.maps.sample_maps + engine.model.gaussians.place_gaussians")
    import inspect

    import torch

    s = splat_scene
    ev, dg = _evaluated(s.head)
    g = sr.scene_gaussians(dg)
    top_first = {m: torch.from_numpy(np.ascontiguousarray(v[::-1])) for m, v in s.maps.items()}
    kwargs = dict(maps=top_first, verts=torch.from_numpy(s.verts),
                  faces=torch.from_numpy(s.faces.astype(np.int64)),
                  face_idx=torch.from_numpy(s.face_idx.astype(np.int64)),
                  bary=torch.from_numpy(s.bary), uv=torch.from_numpy(s.uv))
    params = inspect.signature(maps.gaussians_from_maps).parameters
    wg = maps.gaussians_from_maps(**{k: v for k, v in kwargs.items() if k in params})
    M = np.array(ev.matrix_world)
    A = M[:3, :3]
    np.testing.assert_allclose(g.means, wg.means.numpy() @ A.T + M[:3, 3], atol=1e-6)
    cov = A[None] @ wg.covars.numpy() @ A.T[None]
    np.testing.assert_allclose(g.covars, cov, atol=1e-5 * np.abs(cov).max())
    np.testing.assert_allclose(g.colors, wg.colors.numpy(), atol=1e-5)
    np.testing.assert_allclose(g.opacities, wg.opacities.numpy(), atol=1e-5)


def test_gaussians_follow_shape_keys_and_bones(splat_scene):
    s = splat_scene
    scene = bpy.context.scene
    scene.frame_set(1)
    g1 = sr.scene_gaussians(bpy.context.evaluated_depsgraph_get())
    scene.frame_set(3)
    ev, dg = _evaluated(s.head)
    g3 = sr.scene_gaussians(dg)
    A = np.array(ev.matrix_world)[:3, :3]
    # "Raise" translates every vertex: frames are unchanged, centres move by A @ offset.
    shift = np.broadcast_to(A @ s.raise_offset, g1.means.shape)
    np.testing.assert_allclose(g3.means - g1.means, shift, atol=2e-6)  # float32 rounding
    np.testing.assert_allclose(g3.covars, g1.covars, atol=1e-6 * np.abs(g1.covars).max())

    scene.frame_set(5)
    g5 = sr.scene_gaussians(bpy.context.evaluated_depsgraph_get())
    # The bone turns 20° about Blender Z around its head (0, 0, -0.1), armature at the origin.
    c, si = math.cos(math.radians(20.0)), math.sin(math.radians(20.0))
    Rz = np.array([[c, -si, 0.0], [si, c, 0.0], [0.0, 0.0, 1.0]])
    pivot = np.array([0.0, 0.0, -0.1])
    expected = (g3.means - pivot) @ Rz.T + pivot
    np.testing.assert_allclose(g5.means, expected, atol=2e-6)
    np.testing.assert_allclose(g5.covars, Rz[None] @ g3.covars @ Rz.T[None],
                               atol=1e-5 * np.abs(g3.covars).max())
    assert np.abs(g5.means - g3.means).max() > 0.01  # it really moved (> 1 cm)


def test_map_samples_cache_and_tag_maps_changed(splat_scene):
    s = splat_scene
    dg = bpy.context.evaluated_depsgraph_get()
    before = sr.scene_gaussians(dg).colors.copy()
    img = bpy.data.images[s.head["fate_maps"]["color"]]
    set_image_pixels(img, np.zeros((*img.size, 3), np.float32))
    # Cached until told (the viewport path); final renders pass resample=True.
    np.testing.assert_array_equal(sr.scene_gaussians(dg).colors, before)
    np.testing.assert_allclose(sr.scene_gaussians(dg, resample=True).colors, 0.0, atol=1e-6)
    set_image_pixels(img, np.ones((*img.size, 3), np.float32))
    sr.tag_maps_changed(img.name)
    np.testing.assert_allclose(sr.scene_gaussians(dg).colors, 1.0, atol=1e-6)


def test_errors_name_the_problem(splat_scene):
    s = splat_scene
    dg = bpy.context.evaluated_depsgraph_get()
    maps = dict(s.head["fate_maps"].to_dict())
    del maps["rotation"]
    s.head["fate_maps"] = maps
    sr.clear_caches()
    with pytest.raises(SplatError, match="rotation"):
        sr.scene_gaussians(dg)
    s.head["fate_maps"]["rotation"] = "no such image"
    with pytest.raises(SplatError, match="no such image"):
        sr.scene_gaussians(dg)


def test_topology_change_is_reported(splat_scene):
    s = splat_scene
    s.head.modifiers.new("Subdivision", 'SUBSURF')
    with pytest.raises(SplatError, match="topology"):
        sr.scene_gaussians(bpy.context.evaluated_depsgraph_get())


def test_addon_binding_storage(splat_scene, monkeypatch):
    """The add-on's own storage (addon.rig.bindings: bindings object + fate_map_<name> images)."""
    bindings = pytest.importorskip("addon.rig.bindings", reason="addon/rig/bindings.py is not there yet")
    if not hasattr(bindings, "create_bindings_object"):
        pytest.skip("addon.rig.bindings.create_bindings_object is not available")
    from types import SimpleNamespace

    s = splat_scene
    dg = bpy.context.evaluated_depsgraph_get()
    expected = sr.scene_gaussians(dg)
    monkeypatch.setattr(sr, "get_bindings_for", sr._default_bindings)
    sr.clear_caches()
    head = s.head
    bindings.create_bindings_object("T", SimpleNamespace(face_idx=s.face_idx, bary=s.bary, uv=s.uv),
                                    head, s.verts, s.faces, bpy.context.scene.collection)
    images = {m: bpy.data.images[n] for m, n in head["fate_maps"].items()}
    del head["fate_maps"], head["fate_avatar"]
    head["fate_role"] = "head"
    for m, img in images.items():
        head[f"fate_map_{m}"] = img
    g = sr.scene_gaussians(bpy.context.evaluated_depsgraph_get())
    np.testing.assert_allclose(g.means, expected.means, atol=1e-7)
    np.testing.assert_allclose(g.colors, expected.colors, atol=1e-7)


# ------------------------------------------------------------------------------ cameras
@pytest.mark.parametrize("kind", ["persp", "persp_shift_vertical_fit", "ortho"])
def test_camera_conversion_matches_blender_projection(splat_scene, kind):
    from bpy_extras.object_utils import world_to_camera_view

    scene = bpy.context.scene
    cam = splat_scene.camera
    scene.render.resolution_x, scene.render.resolution_y = 80, 60
    if kind == "persp_shift_vertical_fit":
        cam.data.shift_x, cam.data.shift_y = 0.1, -0.05
        cam.data.sensor_fit = 'VERTICAL'
        cam.data.sensor_height = 20.0
        scene.render.resolution_x, scene.render.resolution_y = 60, 90
    if kind == "ortho":
        cam.data.type = 'ORTHO'
        cam.data.ortho_scale = 0.3
    cam.rotation_euler = (math.radians(80.0), math.radians(5.0), math.radians(10.0))
    dg = bpy.context.evaluated_depsgraph_get()
    W, H = splat_cameras.render_size(scene.render)
    dc = splat_cameras.camera_from_object(cam.evaluated_get(dg), dg, W, H)

    rng = np.random.default_rng(3)
    pts = rng.uniform(-0.1, 0.1, (20, 3)) + np.array([0.0, 0.0, 0.02])
    from mathutils import Vector

    ref = np.array([world_to_camera_view(scene, cam, Vector(p))[:] for p in pts])
    p_cam = pts @ dc.viewmat[:3, :3].T + dc.viewmat[:3, 3]
    if dc.ortho:
        px = np.stack([dc.fx * p_cam[:, 0] + dc.cx, dc.fy * p_cam[:, 1] + dc.cy], -1)
    else:
        px = p_cam[:, :2] / p_cam[:, 2:] @ np.diag([dc.fx, dc.fy]) + np.array([dc.cx, dc.cy])
    # Blender: normalised, origin bottom-left; ours: pixels from the top-left.
    np.testing.assert_allclose(px[:, 0], ref[:, 0] * W, atol=1e-3)  # px; float32 matrices
    np.testing.assert_allclose(px[:, 1], (1.0 - ref[:, 1]) * H, atol=1e-3)
    np.testing.assert_allclose(p_cam[:, 2], ref[:, 2], atol=1e-5)  # depth along the view axis


def test_camera_conversion_is_engine_convention(splat_scene):
    cameras = _engine("engine.geometry.cameras")
    cam = splat_scene.camera
    dg = bpy.context.evaluated_depsgraph_get()
    dc = splat_cameras.camera_from_object(cam.evaluated_get(dg), dg, 96, 72)
    c2w = np.array(cam.matrix_world)
    np.testing.assert_allclose(dc.viewmat, cameras.opengl_c2w_to_opencv_w2c(c2w), atol=1e-6)
    # Inverse conversion of the engine gives the Blender camera back.
    np.testing.assert_allclose(cameras.opencv_w2c_to_blender_c2w(dc.viewmat), c2w, atol=1e-6)
