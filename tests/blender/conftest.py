"""Shared fixtures of the Blender tests (real bpy, background mode).

``splat_scene`` builds a small rigged test head for the splat engine: a bumpy triangulated
grid standing in for a face (FLAME frame: +Y up, +Z out of the face; the object carries the
head's R_x(+90°) so it faces −Y in Blender), a keyed shape key, a one-bone armature, UV-bound
Gaussians and the five attribute maps as images, plus a camera looking at it.
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
from dataclasses import dataclass

from blender_support import NO_ENGINE_PYTHON, REPO, engine_env, engine_python

import numpy as np
import pytest

# Keep in-process Blender tests away from the user's real Blender configuration: bpy reads this
# when it is first imported.
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="fate-blender-user-"))

try:
    import bpy
except ImportError:  # the fixtures skip; other tests in this folder decide for themselves
    bpy = None

_NO_BPY = "bpy (Blender as a Python module) is not installed"
MAP_RES = 16
"""Side of the test maps, texels."""


@dataclass
class SplatScene:
    """What :func:`build_splat_scene` made (all numpy arrays are the ground truth inputs)."""

    head: "bpy.types.Object"
    camera: "bpy.types.Object"
    armature: "bpy.types.Object"
    verts: np.ndarray      # rest vertices, mesh (FLAME) frame, m. [V, 3]
    faces: np.ndarray      # triangles, int32. [F, 3]
    face_idx: np.ndarray   # bindings, int32. [N]
    bary: np.ndarray       # [N, 3]
    uv: np.ndarray         # OBJ convention. [N, 2]
    maps: dict             # name → [R, R, C] bottom row first (Image.pixels order), encoded colour
    raise_offset: np.ndarray  # the "Raise" shape key's displacement, mesh frame, m. [3]


def _grid(n: int, size: float, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bumpy n×n grid of side ``size`` m: verts [V, 3], triangles [2n², 3] int32, UVs [V, 2]."""
    xs = np.linspace(-size / 2, size / 2, n + 1)
    gx, gy = np.meshgrid(xs, xs)
    z = 0.02 * np.cos(gx / size * math.pi) * np.cos(gy / size * math.pi)
    z += 0.002 * rng.standard_normal(z.shape)
    verts = np.stack([gx, gy, z], -1).reshape(-1, 3).astype(np.float32)
    uvs = np.stack([gx / size + 0.5, gy / size + 0.5], -1).reshape(-1, 2).astype(np.float32)
    faces = []
    for j in range(n):
        for i in range(n):
            a = j * (n + 1) + i
            b, c, d = a + 1, a + n + 1, a + n + 2
            faces += [[a, b, d], [a, d, c]]
    return verts, np.array(faces, np.int32), uvs


def _image(name: str, data: np.ndarray, float_buffer: bool, colorspace: str) -> "bpy.types.Image":
    res = data.shape[0]
    img = bpy.data.images.new(name, res, res, alpha=True, float_buffer=float_buffer)
    img.colorspace_settings.name = colorspace
    rgba = np.ones((res, res, 4), np.float32)
    rgba[..., :data.shape[-1]] = data
    img.pixels.foreach_set(rgba.reshape(-1))
    img.update()
    return img


def build_splat_scene(n_grid: int = 6, per_face: int = 10, seed: int = 0,
                      resolution: tuple[int, int] = (96, 72), name: str = "TestHead",
                      map_res: int = MAP_RES) -> SplatScene:
    """Resets Blender and builds the test avatar scene (see the module docstring).

    Maps: colour = random encoded colours (8-bit sRGB image), opacity U(0.55, 0.95), scale
    U(0.25, 0.55)·k_f, rotation |aa| < 0.8 rad, offset U(−2, 2) mm (float Non-Color images).
    Animation: "Raise" (+15 mm along FLAME +Y, i.e. Blender +Z) keyed 0 at frame 1 → 1 at
    frame 3; the bone "neck" is keyed at rest on frames 1 and 3 and turned 20° about Blender Z
    at frame 5. ``n_grid``² · 2 triangles carry ``per_face`` Gaussians each; maps are
    ``map_res``² texels.
    """
    rng = np.random.default_rng(seed)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    verts, faces, vuv = _grid(n_grid, 0.2, rng)

    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts.tolist(), [], faces.tolist())
    mesh.update()
    uv_layer = mesh.uv_layers.new(name="UVMap")
    loop_v = np.empty(len(mesh.loops), np.int32)
    mesh.loops.foreach_get("vertex_index", loop_v)
    uv_layer.data.foreach_set("uv", vuv[loop_v].reshape(-1))
    head = bpy.data.objects.new(name, mesh)
    scene.collection.objects.link(head)
    head.rotation_euler = (math.pi / 2, 0.0, 0.0)
    head.location = (0.01, 0.0, 0.02)

    # Shape key (5.0: a new key starts at value 1.0, so set 0.0 explicitly).
    head.shape_key_add(name="Basis")
    key = head.shape_key_add(name="Raise")
    raise_offset = np.array([0.0, 0.015, 0.0], np.float32)
    key.data.foreach_set("co", (verts + raise_offset).reshape(-1))
    key.value = 0.0
    key.keyframe_insert("value", frame=1)
    key.value = 1.0
    key.keyframe_insert("value", frame=3)

    # One-bone rig.
    arm_data = bpy.data.armatures.new(f"{name}_rig")
    arm = bpy.data.objects.new(f"{name}_rig", arm_data)
    scene.collection.objects.link(arm)
    bpy.context.view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode='EDIT')
    bone = arm_data.edit_bones.new("neck")
    bone.head = (0.0, 0.0, -0.1)
    bone.tail = (0.0, 0.0, 0.0)
    bpy.ops.object.mode_set(mode='OBJECT')
    vg = head.vertex_groups.new(name="neck")
    vg.add(list(range(len(verts))), 1.0, 'REPLACE')
    mod = head.modifiers.new("Armature", 'ARMATURE')
    mod.object = arm
    pb = arm.pose.bones["neck"]
    pb.rotation_mode = 'XYZ'
    for frame, angle in ((1, 0.0), (3, 0.0), (5, math.radians(20.0))):
        pb.rotation_euler = (0.0, angle, 0.0)  # bone Y axis = Blender +Z (bone points up)
        pb.keyframe_insert("rotation_euler", frame=frame)

    # Bindings: per_face Gaussians per triangle, random barycentrics.
    nf = len(faces)
    face_idx = np.repeat(np.arange(nf, dtype=np.int32), per_face)
    w = rng.uniform(0.05, 1.0, (len(face_idx), 3))
    bary = (w / w.sum(1, keepdims=True)).astype(np.float32)
    # UV of each Gaussian from the face corners' UVs.
    uv = (bary[:, :, None] * vuv[faces[face_idx]]).sum(1).astype(np.float32)

    R = map_res
    maps = {
        "color": rng.uniform(0.05, 0.95, (R, R, 3)).astype(np.float32),
        "opacity": rng.uniform(0.55, 0.95, (R, R, 1)).astype(np.float32),
        "scale": rng.uniform(0.25, 0.55, (R, R, 3)).astype(np.float32),
        "rotation": rng.uniform(-0.45, 0.45, (R, R, 3)).astype(np.float32),
        "offset": rng.uniform(-0.002, 0.002, (R, R, 1)).astype(np.float32),
    }
    # 8-bit colour image: keep the values it can store exactly.
    maps["color"] = np.round(maps["color"] * 255.0) / 255.0
    images = {"color": _image(f"{name}_color", maps["color"], False, "sRGB")}
    for m in ("opacity", "scale", "rotation", "offset"):
        images[m] = _image(f"{name}_{m}", maps[m], True, "Non-Color")
    head["fate_avatar"] = True
    head["fate_maps"] = {m: img.name for m, img in images.items()}

    cam_data = bpy.data.cameras.new("Camera")
    cam_data.lens = 50.0
    cam_data.sensor_fit = 'HORIZONTAL'
    cam_data.sensor_width = 36.0
    cam_data.clip_start = 0.01
    cam_data.clip_end = 100.0
    camera = bpy.data.objects.new("Camera", cam_data)
    scene.collection.objects.link(camera)
    camera.location = (0.0, -0.55, 0.02)
    camera.rotation_euler = (math.pi / 2, 0.0, 0.0)
    scene.camera = camera

    world = bpy.data.worlds.new("World")
    scene.world = world
    world.color = (0.05, 0.1, 0.2)
    if world.node_tree is not None:
        for node in world.node_tree.nodes:
            if node.type == 'BACKGROUND':
                node.inputs["Color"].default_value = (0.05, 0.1, 0.2, 1.0)
                node.inputs["Strength"].default_value = 1.0

    rd = scene.render
    rd.resolution_x, rd.resolution_y = resolution
    rd.resolution_percentage = 100
    rd.film_transparent = False
    scene.view_settings.view_transform = 'Standard'
    scene.view_settings.look = 'None'
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    scene.frame_start, scene.frame_end = 1, 3
    scene.frame_set(1)
    return SplatScene(head, camera, arm, verts, faces, face_idx, bary, uv, maps, raise_offset)


@pytest.fixture
def splat_scene(monkeypatch):
    """A fresh test avatar scene; the splat runtime reads its bindings from the fixture.

    The bindings are served by patching ``addon.splats.runtime.get_bindings_for`` (the add-on's
    own storage is exercised separately), and the runtime caches are cleared before and after.
    """
    if bpy is None:
        pytest.skip(_NO_BPY)
    from addon.splats import runtime as splat_runtime

    s = build_splat_scene()
    table = {s.head.name: (s.face_idx, s.bary, s.uv)}

    def provider(obj):
        return table[obj.name]

    monkeypatch.setattr(splat_runtime, "get_bindings_for", provider)
    splat_runtime.clear_caches()
    yield s
    splat_runtime.clear_caches()


@pytest.fixture
def splat_engine():
    """The FATE Splats render engine registered for the test (unregistered afterwards)."""
    if bpy is None:
        pytest.skip(_NO_BPY)
    from addon.splats import render_engine

    render_engine.register()
    yield render_engine
    render_engine.unregister()


@pytest.fixture
def build_scene():
    """:func:`build_splat_scene` itself, for tests that bind the scene their own way."""
    if bpy is None:
        pytest.skip(_NO_BPY)
    return build_splat_scene


@pytest.fixture(scope="session")
def worker_avatar(tmp_path_factory):
    """A small trained and baked avatar made by the real engine through the worker client (the
    Worker Python is :func:`engine_python`): the demo head (not FLAME) synthesised at 64², 8
    frames, trained 150 steps at UV 48², baked to 64² maps. Shared by the tests that compare
    Blender's renders with the engine's. About 40 s on 2 CPU cores."""
    python = engine_python()
    if python is None:
        pytest.skip(NO_ENGINE_PYTHON)
    from addon.jobs import config as job_config
    from addon.jobs.worker import WorkerClient

    root = tmp_path_factory.mktemp("worker_avatar")
    dataset, avatar = root / "dataset", root / "avatar"
    subprocess.run([python, "-m", "engine", "synth", str(dataset), "--frames", "8", "--resolution", "64",
                    "--gt_uv_resolution", "64", "--events", "none"], env=engine_env(), check=True,
                   timeout=300, capture_output=True)
    client = WorkerClient(python, REPO)
    cfg = job_config.train_config(dataset, avatar, job_config.resolve_head_model(""), device="cpu", steps=400,
                                  extra={"uv_resolution": 48, "checkpoint_every": 0, "preview_every": 0,
                                         "lr_color": 1e-2, "threads": 1})
    train = client.start("train", cfg, avatar)
    assert train.wait(600) == "done", train.error
    bake = client.start("bake", job_config.bake_config(avatar, device="cpu", extra={
        "resolution": 64, "steps": 20, "warmup_steps": 5, "base_channels": 8, "depth": 2}), avatar)
    assert bake.wait(600) == "done", bake.error
    return avatar
