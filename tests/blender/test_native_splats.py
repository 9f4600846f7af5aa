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
import os
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

from blender_support import engine_render  # noqa: E402
from test_render_engine import _read_exr_rgba, _read_png_rgba  # noqa: E402
from test_render_engine import _set_pixels as set_image_pixels  # noqa: E402

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
    return _read_exr_rgba(path)


def _encoded(img: np.ndarray) -> np.ndarray:
    """Scene-linear RGB → the sRGB-encoded values the engine writes (Standard view)."""
    return np.clip(colour.linear_to_srgb(np.clip(img[..., :3], 0.0, 1.0)), 0.0, 1.0)


def _read_png(path: Path) -> np.ndarray:
    return _read_png_rgba(path)[..., :3]


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
def test_no_point_cloud_before_53(build_scene):
    s = build_scene()
    create_bindings_object(s.head.name, SimpleNamespace(face_idx=s.face_idx, bary=s.bary, uv=s.uv),
                           s.head, s.verts, s.faces, bpy.context.scene.collection)
    assert native.create_native_splats(s.head) is None
    assert not [o for o in bpy.data.objects if o.type == "POINTCLOUD"]
    assert s.head.visible_camera  # the head mesh is left as it was


def test_import_avatar_operator_creates_native_splats_where_supported(tmp_path):
    """Import Avatar (the operator, add-on registered): on 5.3 a GAUSSIAN_SPLAT point cloud bound
    to the head, which is hidden from camera rays; before 5.3 nothing of the kind."""
    from addon_package import load_root_package

    from synthetic_avatar import write_avatar

    write_avatar(tmp_path / "subject", n_gaussians=200)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    root = load_root_package()
    root.register()
    try:
        assert bpy.ops.fate.import_avatar(directory=str(tmp_path / "subject")) == {"FINISHED"}
        head = bpy.context.view_layer.objects.active
        clouds = [o for o in bpy.data.objects if o.type == "POINTCLOUD"]
        if SUPPORTED:
            assert len(clouds) == 1 and clouds[0].parent == head and clouds[0].data.type == "GAUSSIAN_SPLAT"
            assert len(clouds[0].data.points) == 200
            assert not head.visible_camera
        else:
            assert clouds == [] and head.visible_camera
    finally:
        root.unregister()


# ------------------------------------------------------------------------------ 5.3: attributes
@pytest.fixture
def native_scene(build_scene):
    """The conftest test head with a real bindings object and native splats."""
    s = build_scene()
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
def _import(avatar: Path):
    """Import Avatar (the importer, then the native splats, as the operator does) into a fresh
    file, a white world, Standard view, frame 1 of the tracked camera (64², the dataset's size)."""
    from addon.rig.importer import import_avatar
    from addon.ui import properties

    bpy.ops.wm.read_factory_settings(use_empty=True)
    properties.register()
    result = import_avatar(avatar, bpy.context.scene)
    obj = native.create_native_splats(result.head, result.collection)
    scene = bpy.context.scene
    _white_world(scene)
    scene.frame_set(1)
    return result, obj


@pytest.fixture
def imported(worker_avatar):
    result, obj = _import(worker_avatar)
    assert obj is not None
    yield result, obj
    from addon.ui import properties

    properties.unregister()


def _fate_render(path: Path, composite: str) -> np.ndarray:
    from addon.splats import render_engine

    render_engine.register()
    try:
        bpy.context.scene.fate.splat_composite = composite
        return _render(path, "FATE_SPLAT", 1)
    finally:
        render_engine.unregister()
        sr.clear_caches()


@needs_53
def test_cycles_and_eevee_agree_with_the_engine(worker_avatar, imported, tmp_path):
    """Same frame, same maps. What differs: (1) Cycles and EEVEE blend splats in scene linear,
    the engine (and FATE Splats "As Trained") in the sRGB-encoded training space — on this
    translucent avatar (median opacity 0.18) that alone limits the agreement to about 29 dB;
    (2) splat evaluation: the 3D Gaussian per ray / per sample (with our 3D version of the 0.3 px²
    low-pass filter) vs EWA rasterisation of the projected 2D Gaussian, and Monte Carlo noise —
    measured against FATE Splats blending in scene linear (35.6 dB for Cycles)."""
    ref = _read_png(engine_render(worker_avatar, tmp_path / "engine")[0])
    as_trained = _encoded(_fate_render(tmp_path / "fate.exr", "TRAINING"))
    linear = _encoded(_fate_render(tmp_path / "fate_linear.exr", "LINEAR"))
    cycles = _encoded(_render(tmp_path / "cycles.exr", "CYCLES", 64))
    eevee = _encoded(_render(tmp_path / "eevee.exr", "BLENDER_EEVEE", 16))
    assert cycles.shape == ref.shape
    p = {"fate": _psnr(as_trained, ref), "cycles/engine": _psnr(cycles, ref), "eevee/engine": _psnr(eevee, ref),
         "linear/engine": _psnr(linear, ref), "cycles/linear": _psnr(cycles, linear),
         "eevee/linear": _psnr(eevee, linear)}
    print("PSNR dB: " + ", ".join(f"{k} {v:.2f}" for k, v in p.items()))
    assert (ref < 0.9).any(axis=-1).mean() > 0.1  # the head covers part of the frame
    assert p["fate"] >= 35.0  # FATE Splats keeps the engine's parity
    # Measured (2 CPU cores): Cycles 35.6 / EEVEE 34 dB against the same blending; 28.0 / 27.2 dB
    # against the engine, the blending space costing ~1 dB less than FATE Splats in linear (29.0).
    assert p["cycles/linear"] >= 30.0 and p["eevee/linear"] >= 30.0, p
    assert p["cycles/engine"] >= 26.0 and p["eevee/engine"] >= 26.0, p


def _footprint(attrs: dict, which: np.ndarray, obj, margin_px: float = 2.0) -> np.ndarray:
    """Pixels (top row first) within 3.33 σ_max + margin of the chosen splats' centres."""
    scene = bpy.context.scene
    dg = bpy.context.evaluated_depsgraph_get()
    W, H = splat_cameras.render_size(scene.render)
    cam = splat_cameras.camera_from_object(scene.camera.evaluated_get(dg), dg, W, H)
    M = np.array(obj.matrix_world)
    world = attrs["position"][which] @ M[:3, :3].T + M[:3, 3]
    p = world @ cam.viewmat[:3, :3].T + cam.viewmat[:3, 3]
    r = 3.33 * attrs["scale"][which].max(1) * cam.fx / p[:, 2] + margin_px
    u = cam.fx * p[:, 0] / p[:, 2] + cam.cx
    v = cam.fy * p[:, 1] / p[:, 2] + cam.cy
    ys, xs = np.mgrid[:H, :W] + 0.5
    mask = np.zeros((H, W), bool)
    for x0, y0, rr in zip(u, v, r):
        mask |= (xs - x0) ** 2 + (ys - y0) ** 2 <= rr ** 2
    return mask


@needs_53
def test_shape_key_moves_the_splats_where_the_face_moves(imported, tmp_path):
    result, obj = imported
    head = result.head
    before_attrs = _evaluated_splats(obj)
    before = _render(tmp_path / "before.exr", "CYCLES", 16)
    keys = head.data.shape_keys.key_blocks
    # The most local expression key that still moves some vertex 2 mm (the demo head's eye and
    # jaw keys move ~10 % of the mesh; the learnt ΔE spreads the others), pushed to +2.
    basis = np.array([v.co for v in keys[0].data])
    # expression keys: every key but the basis and the pose correctives (named after the head
    # model's expression components, or Exp000… when it has no names)
    moves = {k.name: np.linalg.norm(np.array([v.co for v in k.data]) - basis, axis=1)
             for k in keys[1:] if not k.name.startswith("Pose_")}
    name = min((n for n, d in moves.items() if d.max() > 2e-3), key=lambda n: (moves[n] > 1e-7).mean())
    keys[name].value = 2.0
    keys[name].keyframe_insert("value", frame=1)  # the tracking keys every Exp value: key over it
    after_attrs = _evaluated_splats(obj)
    after = _render(tmp_path / "after.exr", "CYCLES", 16)
    moved = np.linalg.norm(after_attrs["position"] - before_attrs["position"], axis=1) > 1e-6
    assert 0 < moved.sum() < 0.9 * len(moved)
    mask = _footprint(before_attrs, moved, obj) | _footprint(after_attrs, moved, obj)
    diff = np.abs(after - before)[..., :3].max(-1)
    assert mask.mean() < 0.9
    # Same seed, same rays: pixels no moved splat covers are unchanged (up to the float order of
    # the BVH's hits); where they move the image changes.
    assert diff[~mask].max() < 1e-3, diff[~mask].max()
    assert diff[mask].max() > 0.05


@needs_53
def test_painted_colour_shows_in_the_next_cycles_render(imported, tmp_path):
    result, obj = imported
    img = avatar_map_images(result.head)["color"]
    before_attrs = _evaluated_splats(obj)
    before = _render(tmp_path / "before.exr", "CYCLES", 16)
    w, h = img.size
    px = np.empty(w * h * 4, np.float32)
    img.pixels.foreach_get(px)
    px = px.reshape(h, w, 4)
    px[:, : w // 2, :3] = (0.0, 0.0, 1.0)  # paint the left half of the colour map blue (no Sync Maps)
    img.pixels.foreach_set(px.ravel())
    img.update()
    after_attrs = _evaluated_splats(obj)
    after = _render(tmp_path / "after.exr", "CYCLES", 16)
    changed = np.abs(after_attrs["radiance"] - before_attrs["radiance"]).max(1) > 1e-4
    assert 0 < changed.sum() < len(changed)
    np.testing.assert_allclose(conventions.color_from_dc(after_attrs["radiance"][changed, :3]),
                               np.broadcast_to([0.0, 0.0, 1.0], (changed.sum(), 3)), atol=1e-3)
    mask = _footprint(after_attrs, changed, obj)
    diff = after - before
    assert diff[~mask][:, :3].max() < 1e-3
    # Blue appears: in the changed splats' pixels blue rises and red falls.
    assert (diff[mask][:, 2] - diff[mask][:, 0]).max() > 0.2


@needs_53
@pytest.mark.parametrize("engine,samples", [("CYCLES", 16), ("BLENDER_EEVEE", 1)])
def test_a_cube_in_front_occludes_the_head(imported, tmp_path, engine, samples):
    from mathutils import Vector

    result, obj = imported
    scene = bpy.context.scene
    before = _render(tmp_path / "before.exr", engine, samples)
    cam = scene.camera
    head_centre = sum((result.head.matrix_world @ Vector(c) for c in result.head.bound_box), Vector()) / 8
    eye = cam.matrix_world.translation
    at = eye.lerp(head_centre, 0.5)
    d = (at - eye).length
    W, H = splat_cameras.render_size(scene.render)
    dg = bpy.context.evaluated_depsgraph_get()
    dc = splat_cameras.camera_from_object(cam.evaluated_get(dg), dg, W, H)
    size = 16.0 * d / dc.fx  # 16 px across
    bpy.ops.mesh.primitive_cube_add(size=size, location=at, rotation=cam.matrix_world.to_euler())
    cube = bpy.context.active_object
    mat = bpy.data.materials.new("red light")
    nodes = mat.node_tree.nodes
    nodes.clear()
    emit = nodes.new("ShaderNodeEmission")
    emit.inputs["Color"].default_value = (1.0, 0.0, 0.0, 1.0)
    mat.node_tree.links.new(emit.outputs[0], nodes.new("ShaderNodeOutputMaterial").inputs["Surface"])
    cube.data.materials.append(mat)
    after = _render(tmp_path / "after.exr", engine, samples)
    p = dc.viewmat[:3, :3] @ np.array(at) + dc.viewmat[:3, 3]
    u, v = int(dc.fx * p[0] / p[2] + dc.cx), int(dc.fy * p[1] / p[2] + dc.cy)
    inner = (slice(v - 5, v + 5), slice(u - 5, u + 5))
    assert np.abs(before[inner][..., :3] - 1.0).max() > 0.2  # the head was there (not white)
    np.testing.assert_allclose(after[inner][..., :3].reshape(-1, 3),
                               np.broadcast_to([1.0, 0.0, 0.0], (100, 3)), atol=0.02)


# ------------------------------------------------------------------------------ benchmark
@needs_53
@pytest.mark.skipif(not os.environ.get("FATE_BENCH_AVATAR"),
                    reason="benchmark: set FATE_BENCH_AVATAR=<baked avatar folder> to run")
def test_benchmark_cycles_eevee_fate_per_frame(tmp_path):
    """Seconds per frame of the avatar at 512² and 1920×1080 from its tracked camera: Cycles
    (CPU, FATE_BENCH_CYCLES samples, default 32, no denoising), EEVEE (FATE_BENCH_EEVEE samples,
    default 4; software GL here) and FATE Splats; one run after a warm-up render (shader
    compilation, BVH). Prints a markdown table (FATE_BENCH_OUT=path.md writes it)."""
    import time

    result, obj = _import(Path(os.environ["FATE_BENCH_AVATAR"]))
    from addon.splats import render_engine

    render_engine.register()
    scene = bpy.context.scene
    scene.frame_set(scene.frame_start)
    cyc_spp = int(os.environ.get("FATE_BENCH_CYCLES", "32"))
    eevee_spp = int(os.environ.get("FATE_BENCH_EEVEE", "4"))
    aspect = scene.render.resolution_y / scene.render.resolution_x
    rows = [f"| size | Cycles ({cyc_spp} samples) | EEVEE ({eevee_spp} samples) | FATE Splats |",
            "|---|---:|---:|---:|"]
    try:
        for w, h in ((512, int(round(512 * aspect))), (1920, 1080)):
            scene.render.resolution_x, scene.render.resolution_y = w, h
            times = {}
            for engine, spp in (("CYCLES", cyc_spp), ("BLENDER_EEVEE", eevee_spp), ("FATE_SPLAT", 1)):
                runs = []
                for i in range(2):  # warm-up, then the measured run
                    t0 = time.perf_counter()
                    _render(tmp_path / f"{engine}_{w}.exr", engine, spp)
                    runs.append(time.perf_counter() - t0)
                times[engine] = min(runs[1:])
            rows.append(f"| {w}×{h} | {times['CYCLES']:.1f} s | {times['BLENDER_EEVEE']:.1f} s | "
                        f"{times['FATE_SPLAT']:.2f} s |")
    finally:
        render_engine.unregister()
    text = "\n".join(rows) + f"\n\n{len(obj.data.points):,} splats."
    print(text)
    if os.environ.get("FATE_BENCH_OUT"):
        Path(os.environ["FATE_BENCH_OUT"]).write_text(text + "\n")
