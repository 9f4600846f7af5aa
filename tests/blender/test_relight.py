"""Relightable avatars in Blender (issue 18): the numpy shading against the engine and Cycles,
FATE Splats following the scene's lights, albedo paint, the learnt environment as a World, and
Import Avatar of a relightable avatar folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed")

from addon.splats import runtime as sr  # noqa: E402
from addon.splats import scene_lights, shading  # noqa: E402
from blender_support import set_image_pixels  # noqa: E402

MAP_RES = 16
"""Map size of the ``splat_scene`` fixture's avatar (tests/blender/conftest.py; checked below)."""


def _new_image(name: str, data: np.ndarray, colorspace: str) -> "bpy.types.Image":
    """A float image [H, W, C] (bottom row first) in ``colorspace``."""
    img = bpy.data.images.new(name, data.shape[1], data.shape[0], alpha=True, float_buffer=True)
    img.colorspace_settings.name = colorspace
    set_image_pixels(img, data)
    return img


# ---------------------------------------------------------------------- numpy twins of the engine
def test_lut_and_environment_equal_the_engines():
    """Same split-sum table (float32 rounding), same SH irradiance and prefiltered maps of one
    radiance map: the Blender side shades exactly as the engine trained."""
    torch = pytest.importorskip("torch", reason="torch is not installed (engine.model needs it)")
    from engine.model.brdf import brdf_lut
    from engine.model.environment import Environment as EngineEnvironment

    np.testing.assert_allclose(shading.brdf_lut(), brdf_lut().numpy(), rtol=0, atol=2e-6)
    rad = np.random.default_rng(0).uniform(0.0, 2.0, (16, 32, 3)).astype(np.float32)
    ours = shading.Environment.from_radiance(rad)
    theirs = EngineEnvironment.from_radiance(torch.from_numpy(rad))
    np.testing.assert_allclose(ours.sh, theirs.irradiance_sh().detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours.prefiltered, theirs.prefiltered().detach().numpy(), rtol=1e-4, atol=1e-5)
    d = np.random.default_rng(1).normal(size=(300, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    rough = np.random.default_rng(2).uniform(0, 1, 300).astype(np.float32)
    np.testing.assert_allclose(ours.specular(d.astype(np.float32), rough),
                               theirs.specular(torch.from_numpy(d).float(), torch.from_numpy(rough)).detach().numpy(),
                               rtol=1e-4, atol=1e-4)


def _cycles_plane(kind: str, **light) -> float:
    """Cycles: mean radiance of a white Lambertian plane (z = 0, facing +z) under one light."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 32
    scene.cycles.max_bounces = 0
    scene.cycles.seed = 1
    scene.render.resolution_x = scene.render.resolution_y = 8
    scene.view_settings.view_transform = "Standard"
    scene.world = bpy.data.worlds.new("black")
    scene.world.color = (0.0, 0.0, 0.0)
    if scene.world.node_tree is not None:
        next(n for n in scene.world.node_tree.nodes if n.type == "BACKGROUND").inputs["Strength"].default_value = 0.0
    bpy.ops.mesh.primitive_plane_add(size=0.2)
    mat = bpy.data.materials.new("white")
    if mat.node_tree is None:
        mat.use_nodes = True
    nt = mat.node_tree
    nt.nodes.clear()
    d = nt.nodes.new("ShaderNodeBsdfDiffuse")
    d.inputs["Color"].default_value = (1, 1, 1, 1)
    d.inputs["Roughness"].default_value = 0.0
    nt.links.new(d.outputs[0], nt.nodes.new("ShaderNodeOutputMaterial").inputs[0])
    bpy.context.active_object.data.materials.append(mat)
    cam_data = bpy.data.cameras.new("c")
    cam_data.type = "ORTHO"
    cam_data.ortho_scale = 0.02
    cam = bpy.data.objects.new("c", cam_data)
    scene.collection.objects.link(cam)
    cam.location = (0.0, 0.0, 1.0)
    scene.camera = cam
    data = bpy.data.lights.new("l", kind)
    for key, value in light.items():
        if key not in ("location", "rotation"):
            setattr(data, key, value)
    obj = bpy.data.objects.new("l", data)
    scene.collection.objects.link(obj)
    obj.location = light.get("location", (0.0, 0.0, 1.0))
    obj.rotation_euler = light.get("rotation", (0.0, 0.0, 0.0))
    scene.render.image_settings.file_format = "OPEN_EXR"
    path = Path(bpy.app.tempdir or "/tmp") / f"fate_plane_{kind}.exr"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    img = bpy.data.images.load(str(path), check_existing=False)
    px = np.array(img.pixels[:], np.float32).reshape(-1, 4)[:, :3].mean()
    bpy.data.images.remove(img)
    return float(px), list(scene_lights.lamps_of(bpy.context.evaluated_depsgraph_get()))


@pytest.mark.parametrize("kind, light", [
    ("SUN", {"energy": 2.0, "angle": 0.0, "rotation": (math.radians(40), 0.0, 0.0)}),
    ("POINT", {"energy": 3.0, "shadow_soft_size": 0.0, "location": (0.3, 0.0, 0.8)}),
    ("SPOT", {"energy": 3.0, "shadow_soft_size": 0.0, "spot_size": math.radians(90), "location": (0.0, 0.0, 0.7)}),
    ("AREA", {"energy": 1.0, "size": 0.02, "location": (0.0, 0.0, 0.9)}),
])
def test_lamp_units_are_cycles(kind, light):
    """Each lamp type lights a white Lambertian plane as Cycles does (the unit table of
    addon/splats/shading.py; Cycles at 32 samples on 8×8 px is within ~1 % of its mean, 3 % allowed)."""
    cycles, lamps = _cycles_plane(kind, **light)
    assert len(lamps) == 1
    E, _, _ = shading.lamp_irradiance(lamps[0], np.zeros((1, 3), np.float32), np.array([[0.0, 0.0, 1.0]], np.float32))
    assert abs(float(E[0, 0]) - cycles) < 0.03 * cycles, (float(E[0, 0]), cycles)


# ---------------------------------------------------------------------- a relightable splat scene
def _make_relightable(s, albedo: np.ndarray | None = None):
    """Turns the conftest splat scene into a relightable avatar: albedo (the colour map's values),
    roughness 0.9, F0 0.04 images, flat splats (the normal is the face normal)."""
    head = s.head
    names = dict(head["fate_maps"])
    R = int(bpy.data.images[names["color"]].size[0])  # MAP_RES, or the benchmark's map_res
    assert tuple(bpy.data.images[names["color"]].size) == (R, R)
    names["albedo"] = names.pop("color")
    names["roughness"] = _new_image(f"{head.name}_roughness", np.full((R, R, 1), 0.9, np.float32), "Non-Color").name
    names["f0"] = _new_image(f"{head.name}_f0", np.full((R, R, 1), 0.04, np.float32), "Non-Color").name
    scale = bpy.data.images[names["scale"]]
    set_image_pixels(scale, np.concatenate([np.full((R, R, 2), 0.4), np.full((R, R, 1), 0.05)], -1).astype(np.float32))
    rot = bpy.data.images[names["rotation"]]
    set_image_pixels(rot, np.zeros((R, R, 3), np.float32))
    if albedo is not None:
        set_image_pixels(bpy.data.images[names["albedo"]], albedo)
    head["fate_maps"] = names
    head["fate_appearance"] = "pbr"
    scene = bpy.context.scene
    scene.world.color = (0.0, 0.0, 0.0)
    for node in (scene.world.node_tree.nodes if scene.world.node_tree else ()):
        if node.type == "BACKGROUND":
            node.inputs["Color"].default_value = (0.02, 0.02, 0.02, 1.0)
    sr.tag_maps_changed(redraw=False)


def _sun(towards, energy: float = 3.0):
    data = bpy.data.lights.new("sun", "SUN")
    data.energy = energy
    obj = bpy.data.objects.new("sun", data)
    bpy.context.scene.collection.objects.link(obj)
    from mathutils import Vector

    obj.rotation_mode = "QUATERNION"
    obj.rotation_quaternion = (-Vector(towards)).to_track_quat("-Z", "Y")
    return obj


def _render(path: Path) -> np.ndarray:
    from test_render_engine import _render_exr

    return _render_exr(path)


def test_fate_splats_follow_the_scene_light(splat_scene, splat_engine, tmp_path):
    """A sun from the camera's left, then from its right (Blender world; the camera looks along
    +Y): each splat gets brighter under the sun its normal turns to (the colour difference has
    the sign of the normal's x for ≥ 95 % of the splats tilted by more than 0.05), F12 renders
    follow (they differ; with the sun off the dim world leaves the face darkest)."""
    from addon.splats.cameras import camera_from_object

    _make_relightable(splat_scene, albedo=np.full((MAP_RES, MAP_RES, 3), 0.8, np.float32))
    scene = bpy.context.scene
    scene.render.engine = "FATE_SPLAT"
    colours, images = [], []
    for k, towards in enumerate(((-1.0, -0.6, 0.2), (1.0, -0.6, 0.2))):
        sun = _sun(towards)
        dg = bpy.context.evaluated_depsgraph_get()
        g = sr.scene_gaussians(dg, resample=True)
        cam = camera_from_object(splat_scene.camera, dg, 96, 72, (1.0, 1.0))
        colours.append(scene_lights.shade_gaussians(g, scene_lights.scene_lighting(dg), cam).colors.mean(-1))
        images.append(_render(tmp_path / f"sun{k}.exr")[..., :3])
        bpy.data.objects.remove(sun)
    nx = g.material.normals[:, 0]
    tilted = np.abs(nx) > 0.05
    agree = np.sign(colours[1] - colours[0])[tilted] == np.sign(nx[tilted])
    assert tilted.sum() > 50 and agree.mean() >= 0.95, (int(tilted.sum()), float(agree.mean()))
    assert float(np.abs(images[1] - images[0]).mean()) > 0.005
    dark = _render(tmp_path / "none.exr")[..., :3]
    assert float(dark.mean()) < min(float(images[0].mean()), float(images[1].mean()))


def test_albedo_paint_changes_only_the_splats_bound_there(splat_scene):
    """Painting texels of the albedo image changes the shaded colour of exactly the splats whose
    bilinear footprint touches them (the splat runtime's colours under a fixed light)."""
    _make_relightable(splat_scene)
    s = splat_scene
    sun = _sun((0.3, -1.0, 0.4))
    from addon.splats.cameras import camera_from_object

    def colours():
        dg = bpy.context.evaluated_depsgraph_get()
        g = sr.scene_gaussians(dg, resample=True)
        cam = camera_from_object(s.camera, dg, 96, 72, (1.0, 1.0))
        return scene_lights.shade_gaussians(g, scene_lights.scene_lighting(dg), cam).colors

    before = colours()
    img = bpy.data.images[s.head["fate_maps"]["albedo"]]
    px = np.array(img.pixels[:], np.float32).reshape(MAP_RES, MAP_RES, 4)
    px[2:5, 9:13, :3] = (0.95, 0.05, 0.05)  # rows from the bottom 2–4, columns 9–12
    set_image_pixels(img, px)
    sr.tag_maps_changed(img.name, redraw=False)
    changed = np.abs(colours() - before).sum(-1) > 1e-5
    col, row = s.uv[:, 0] * MAP_RES - 0.5, s.uv[:, 1] * MAP_RES - 0.5
    touches = (col > 9 - 1) & (col < 12 + 1) & (row > 2 - 1) & (row < 4 + 1)
    bpy.data.objects.remove(sun)
    assert changed.any() and np.array_equal(changed, touches)


# ---------------------------------------------------------------------- the learnt environment World
def _write_env_exr(path: Path, radiance: np.ndarray) -> None:
    from synthetic_avatar import write_exr

    write_exr(path, radiance, "RGB")


def test_learnt_world_puts_the_room_around_the_still_camera(tmp_path):
    """The World of a learnt environment (room frame: camera right, forward, up) seen by the splat
    lighting: with a camera looking along +Y the radiance map comes back texel for texel; with the
    camera turned 90° about Z (looking along −X) the brightest texel moves to the world direction
    R_room · d (1e-5: bilinear lookups at texel centres)."""
    from addon.rig.environment import build_environment_world, room_rotation

    bpy.ops.wm.read_factory_settings(use_empty=True)
    rad = np.full((16, 32, 3), 0.1, np.float32)
    rad[5, 20] = (4.0, 2.0, 1.0)
    exr = tmp_path / "environment.exr"
    _write_env_exr(exr, rad)
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    bpy.context.scene.collection.objects.link(cam)
    cam.rotation_euler = (math.pi / 2, 0.0, 0.0)  # looks along +Y, up +Z: room = world
    bpy.context.view_layer.update()
    env = scene_lights.world_environment(build_environment_world("A", exr, cam))
    np.testing.assert_allclose(env.radiance, rad, rtol=0, atol=1e-5)

    cam.rotation_euler = (math.pi / 2, 0.0, math.pi / 2)  # looks along −X
    bpy.context.view_layer.update()
    env = scene_lights.world_environment(build_environment_world("B", exr, cam))
    d = shading.latlong_directions(16)[0]
    R = np.array(room_rotation(cam))
    bright = np.unravel_index(np.argmax(env.radiance[..., 0]), (16, 32))
    np.testing.assert_allclose(d[bright], R @ d[5, 20], atol=0.2)  # within a texel (11°)
    assert float(env.radiance[..., 0].max()) > 2.0


def test_import_relightable_avatar(tmp_path):
    """Import Avatar of a pbr folder: the head is marked, the albedo map is the material's base
    colour and the active paint node, the roughness map drives the roughness, the learnt
    environment is a World (not the scene's), and the unbaked Gaussians carry roughness and F0."""
    from addon.rig.bindings import PROP_APPEARANCE, PROP_ENVIRONMENT, get_trained_attributes
    from addon.rig.importer import import_avatar
    from synthetic_avatar import MAP_LAYOUT, make_plausible_maps, trained_attributes, write_avatar, write_exr

    bpy.ops.wm.read_factory_settings(use_empty=True)
    folder = tmp_path / "pbr_avatar"
    data = write_avatar(folder, with_maps=False, n_gaussians=40)
    trained = trained_attributes(40)
    trained.update(roughness=np.full(40, 0.8, np.float32), f0=np.full(40, 0.05, np.float32))
    np.savez(folder / "blender" / "gaussians.npz", **trained)
    (folder / "avatar.json").write_text(json.dumps({"format": "fate-avatar", "format_version": 1,
                                                    "appearance": "pbr"}))
    maps = make_plausible_maps(2)
    maps["albedo"] = maps.pop("color")
    maps["roughness"] = np.full(maps["opacity"].shape, 0.8, np.float32)
    maps["f0"] = np.full(maps["opacity"].shape, 0.05, np.float32)
    (folder / "maps").mkdir()
    layout = {**MAP_LAYOUT, "albedo": ("RGB", "sRGB"), "roughness": ("Y", "Non-Color"), "f0": ("Y", "Non-Color")}
    manifest = {"format": "fate-maps", "format_version": 1, "appearance": "pbr", "maps": {}}
    for name, arr in maps.items():
        write_exr(folder / "maps" / f"{name}.exr", arr, layout[name][0])
        manifest["maps"][name] = {"file": f"{name}.exr", "channels": len(layout[name][0]),
                                  "colorspace": layout[name][1]}
    (folder / "maps" / "maps.json").write_text(json.dumps(manifest))
    _write_env_exr(folder / "maps" / "environment.exr", np.full((16, 32, 3), 0.5, np.float32))
    scene = bpy.context.scene
    world_before = scene.world
    res = import_avatar(folder, scene, bpy.context)
    head = res.head
    assert head[PROP_APPEARANCE] == "pbr"
    world = head[PROP_ENVIRONMENT]
    assert isinstance(world, bpy.types.World) and scene.world == world_before and world.use_fake_user
    nodes = res.material.node_tree.nodes
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    assert bsdf.inputs["Base Color"].links[0].from_node.image == res.images["albedo"]
    assert nodes.active.image == res.images["albedo"]
    assert bsdf.inputs["Roughness"].links[0].from_node.image == res.images["roughness"]
    attrs = get_trained_attributes(head)
    np.testing.assert_allclose(attrs["roughness"], 0.8)
    np.testing.assert_allclose(attrs["f0"], 0.05)
    assert len(data["bindings"]["face_idx"]) == 40


# ---------------------------------------------------------------------- benchmark
@pytest.mark.skipif(not __import__("os").environ.get("FATE_BENCH"), reason="benchmark: set FATE_BENCH=1 to run")
def test_benchmark_shading_cost(build_scene, tmp_path):
    """F12 at 1920×1080 with 50k Gaussians, unlit (static) vs lit (relightable, a sun, a point
    light and an HDRI world): total, the numpy shading, and the viewport frame after the view
    moved (re-shade + upload + sort + draw). Fastest of 3 (a shared machine)."""
    import os
    import time

    from addon.splats import render_engine

    old = sr.get_bindings_for
    W, H = 1920, 1080
    lines = ["| Gaussians | appearance | F12 total | shading (numpy) | upload | sort | draw |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    try:
        for pbr in (False, True):
            s = build_scene(n_grid=50, per_face=10, resolution=(W, H), map_res=512)
            table = {s.head.name: (s.face_idx, s.bary, s.uv)}
            sr.get_bindings_for = lambda obj: table[obj.name]
            sr.clear_caches()
            if pbr:
                _make_relightable(s)
                _sun((0.5, -1.0, 0.5))
                pt = bpy.data.objects.new("pt", bpy.data.lights.new("pt", "POINT"))
                pt.data.energy = 20.0
                bpy.context.scene.collection.objects.link(pt)
                pt.location = (0.3, -0.5, 0.3)
                exr = tmp_path / "hdri.exr"
                _write_env_exr(exr, np.random.default_rng(0).uniform(0, 1, (256, 512, 3)).astype(np.float32))
                from addon.rig.environment import build_environment_world

                bpy.context.scene.world = build_environment_world("bench", exr, None)
            render_engine.register()
            scene = bpy.context.scene
            scene.render.engine = "FATE_SPLAT"
            scene.render.filepath = str(tmp_path / "bench.png")
            bpy.ops.render.render()
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                bpy.ops.render.render()
                runs.append({**render_engine.LAST_RENDER_STATS, "wall": time.perf_counter() - t0})
            m = {k: float(np.min([r[k] for r in runs])) for k in runs[0]}
            lines.append(f"| {int(m['n']):,} | {'relightable' if pbr else 'static'} | {m['total'] * 1e3:.0f} ms | "
                         f"{m.get('shade', 0) * 1e3:.0f} ms | {m['upload'] * 1e3:.0f} ms | {m['sort'] * 1e3:.0f} ms | "
                         f"{m['draw'] * 1e3:.0f} ms |")
            render_engine.unregister()
    finally:
        sr.get_bindings_for = old
        sr.clear_caches()
    text = "\n".join(lines)
    print(text)
    if os.environ.get("FATE_BENCH_OUT"):
        Path(os.environ["FATE_BENCH_OUT"]).write_text(text + "\n")
