"""Blender side of the main job (``engine/demo.py``): Cycles ground truth and the final Blender stage.

Run by the engine as subprocesses, each with a JSON config::

    python -m addon.demo cycles --config cycles.json
    python -m addon.demo final  --config final.json

Imports bpy, numpy and this add-on's modules only (never torch or the ``engine`` package).
Progress goes to stdout as ``FATE_PROGRESS {"stage": ..., "step": i, "total": n}`` lines; the
result of a stage is the last line, ``FATE_RESULT {json}``. Anything else Blender prints is
kept by the caller in a log file.

``cycles``: builds the demo subject (a folder in the avatar export layout: ``blender/head.npz``,
``tracking.npz``, plus ``albedo.png``) with :func:`addon.rig.importer.import_avatar` — the same rig,
shape keys, drivers and tracked camera as any imported avatar, so Blender's deformation is the
engine's FLAME forward — gives it a diffuse material with the albedo texture, soft
view-independent light (a bright uniform world and a large soft sun), and renders every tracked
frame with Cycles on the CPU into RGBA PNGs (transparent film, Standard view transform, so pixel
values are the albedo's encoded colours wherever the light is unoccluded).

``final``: in a Blender whose user folder has the built extension installed (the caller sets
``BLENDER_USER_RESOURCES``), enables it, runs its operators Import Avatar and Sync Maps, renders
with its "FATE Splats" engine (test frames before and after a scripted texture edit, and a 360°
turntable) and saves ``demo.blend``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import bpy
import numpy as np

PROGRESS_PREFIX = "FATE_PROGRESS "
RESULT_PREFIX = "FATE_RESULT "


def _say(prefix: str, data: dict) -> None:
    sys.stdout.write(prefix + json.dumps(data) + "\n")
    sys.stdout.flush()


def progress(stage: str, step: int, total: int, **extra) -> None:
    """One progress line for the engine's progress bar."""
    _say(PROGRESS_PREFIX, {"stage": stage, "step": int(step), "total": int(total), **extra})


def _clear_scene() -> bpy.types.Scene:
    """Removes every object of the startup scene (keeps preferences and add-ons)."""
    scene = bpy.context.scene
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj, do_unlink=True)
    return scene


def _colour_management(scene: bpy.types.Scene) -> None:
    """Standard view transform: output values = the encoded render values, no tone curve."""
    vs = scene.view_settings
    vs.view_transform = "Standard"
    vs.look = "None"
    vs.exposure = 0.0
    vs.gamma = 1.0
    scene.display_settings.display_device = "sRGB"
    scene.sequencer_colorspace_settings.name = "sRGB"


def _png_rgba(scene: bpy.types.Scene) -> None:
    st = scene.render.image_settings
    if hasattr(st, "media_type"):
        st.media_type = "IMAGE"
    st.file_format = "PNG"
    st.color_mode = "RGBA"
    st.color_depth = "8"
    st.compression = 15


# ---------------------------------------------------------------------- cycles
def _albedo_material(name: str, albedo_path: Path) -> bpy.types.Material:
    """Image texture (sRGB) → Diffuse BSDF: a matte, view-independent surface."""
    img = bpy.data.images.load(str(albedo_path), check_existing=True)
    img.colorspace_settings.name = "sRGB"
    mat = bpy.data.materials.new(name)
    if mat.node_tree is None:
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = img
    tex.interpolation = "Linear"
    tex.extension = "EXTEND"
    bsdf = nodes.new("ShaderNodeBsdfDiffuse")
    bsdf.inputs["Roughness"].default_value = 1.0
    out = nodes.new("ShaderNodeOutputMaterial")
    links.new(tex.outputs["Color"], bsdf.inputs["Color"])
    links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    return mat


def _soft_light(scene: bpy.types.Scene, rig: bpy.types.Object, world_strength: float,
                sun_strength: float, sun_angle_deg: float) -> None:
    """A uniform white world (ambient light, shaded only by occlusion) and a soft sun from above,
    in front and to the subject's right. The sun is a child of the rig, so the light stays fixed
    to the head (head turns are camera motion here) and the shading is view-independent."""
    world = bpy.data.worlds.new("FATE demo world")
    scene.world = world
    if world.node_tree is None:
        world.use_nodes = True
    bg = next(n for n in world.node_tree.nodes if n.type == "BACKGROUND")
    bg.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    bg.inputs["Strength"].default_value = world_strength
    if sun_strength > 0:
        sun_data = bpy.data.lights.new("FATE demo sun", "SUN")
        sun_data.energy = sun_strength
        sun_data.angle = math.radians(sun_angle_deg)
        sun = bpy.data.objects.new("FATE demo sun", sun_data)
        scene.collection.objects.link(sun)
        # Direction the light travels, FLAME frame: from upper front (+y, +z) subject's right (-x).
        d = np.array([0.45, -0.55, -0.7])
        d /= np.linalg.norm(d)
        from mathutils import Vector
        sun.parent = rig
        sun.rotation_mode = "QUATERNION"
        sun.rotation_quaternion = Vector(d.tolist()).to_track_quat("-Z", "Y")  # a sun shines along −Z


def stage_cycles(cfg: dict) -> dict:
    """Renders the demo subject's tracked frames with Cycles (see the module doc).

    Config keys: subject (folder), out (folder for NNNNN.png), samples, threads (0 = all),
    world_strength, sun_strength, sun_angle_deg, denoise (bool), seed.
    """
    from ..rig.importer import import_avatar

    t0 = time.time()
    scene = _clear_scene()
    subject = Path(cfg["subject"])
    res = import_avatar(subject, scene, bpy.context, name="DemoSubject", with_maps=False)
    head, rig = res.head, res.rig
    mat = _albedo_material("DemoSubject_albedo", subject / "albedo.png")
    head.data.materials.clear()
    head.data.materials.append(mat)
    _soft_light(scene, rig, float(cfg.get("world_strength", 0.8)), float(cfg.get("sun_strength", 0.6)),
                float(cfg.get("sun_angle_deg", 40.0)))

    scene.render.engine = "CYCLES"
    cy = scene.cycles
    cy.device = "CPU"
    cy.samples = int(cfg["samples"])
    cy.use_adaptive_sampling = False
    cy.use_denoising = bool(cfg.get("denoise", False))
    cy.max_bounces = 2
    cy.diffuse_bounces = 1
    cy.glossy_bounces = 0
    cy.transmission_bounces = 0
    cy.volume_bounces = 0
    cy.transparent_max_bounces = 2
    cy.caustics_reflective = cy.caustics_refractive = False
    cy.seed = int(cfg.get("seed", 0))
    cy.use_animated_seed = True
    if int(cfg.get("threads", 0)) > 0:
        scene.render.threads_mode = "FIXED"
        scene.render.threads = int(cfg["threads"])
    scene.render.film_transparent = True
    scene.render.use_persistent_data = True
    _colour_management(scene)
    _png_rgba(scene)

    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    T = res.num_frames
    names = [f"{i:05d}" for i in range(T)]
    progress("cycles", 0, T)
    for i in range(T):
        scene.frame_set(i + 1)
        scene.render.filepath = str(out / f"{names[i]}.png")
        bpy.ops.render.render(write_still=True)
        progress("cycles", i + 1, T)
    return {"frames": T, "out": str(out), "seconds": round(time.time() - t0, 2),
            "warnings": res.warnings}


# ---------------------------------------------------------------------- final
def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB transfer function, decoding (IEC 61966-2-1)."""
    c = np.asarray(c, np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def logo_rgba(size: int) -> np.ndarray:
    """A small round badge (blue disc, white ring and five-pointed star), anti-aliased.

    Returns:
        encoded (sRGB) RGBA in [0, 1], row 0 = top. [size, size, 4] float32
    """
    n = int(size)
    c = (np.arange(n) + 0.5) / n * 2.0 - 1.0
    x, y = np.meshgrid(c, -c)  # y up
    r = np.hypot(x, y)
    aa = 2.0 / n

    def cover(d: np.ndarray) -> np.ndarray:  # signed distance (inside < 0) → coverage
        return np.clip(0.5 - d / aa, 0.0, 1.0)

    disc = cover(r - 0.98)
    ring = cover(np.abs(r - 0.84) - 0.06)
    # star: polar radius of a five-pointed star, point up
    ang = np.arctan2(x, y)
    k = np.abs(((ang / (2 * np.pi / 5)) % 1.0) - 0.5) * 2.0  # 1 at the points, 0 between
    star_r = 0.28 + 0.38 * k ** 1.6
    star = cover(r - star_r)
    rgb = np.empty((n, n, 3), np.float32)
    rgb[:] = (0.08, 0.25, 0.75)
    white = np.maximum(ring, star)[..., None]
    rgb = rgb * (1 - white) + white * np.array([1.0, 0.95, 0.35], np.float32)
    return np.concatenate([rgb, disc[..., None]], axis=-1).astype(np.float32)


def stamp_logo(img: bpy.types.Image, uv_box: tuple[float, float, float, float]) -> int:
    """Stamps :func:`logo_rgba` into ``img`` over a UV box, as a Texture Paint stamp would.

    Writes ``Image.pixels`` (bottom row first; a float sRGB image holds scene-linear values, so
    the logo is decoded first) and composites with the logo's alpha.

    Args:
        img: the colour map image.
        uv_box: (u0, v0, u1, v1), OBJ convention (origin bottom-left).
    Returns:
        number of texels changed.
    """
    w, h = img.size
    px = np.empty(w * h * 4, np.float32)
    img.pixels.foreach_get(px)
    px = px.reshape(h, w, 4)  # row 0 = bottom (v ≈ 0)
    u0, v0, u1, v1 = uv_box
    c0, c1 = int(round(u0 * w)), int(round(u1 * w))
    r0, r1 = int(round(v0 * h)), int(round(v1 * h))
    if c1 <= c0 or r1 <= r0:
        raise ValueError(f"logo UV box {uv_box} covers no texel of {img.name} ({w}x{h})")
    n = max(c1 - c0, r1 - r0)
    logo = logo_rgba(n)
    # nearest resample to the box (rows of the logo are top first; the image bottom first)
    ri = ((np.arange(r1 - r0) + 0.5) / (r1 - r0) * n).astype(int)[::-1]
    ci = ((np.arange(c1 - c0) + 0.5) / (c1 - c0) * n).astype(int)
    patch = logo[ri][:, ci]
    linear = img.colorspace_settings.name not in ("Non-Color", "Raw", "Linear Rec.709") and img.is_float
    rgb = srgb_to_linear(patch[..., :3]) if linear else patch[..., :3]
    a = patch[..., 3:4]
    region = px[r0:r1, c0:c1, :3]
    px[r0:r1, c0:c1, :3] = rgb * a + region * (1 - a)
    img.pixels.foreach_set(px.reshape(-1))
    img.update()
    return int((a[..., 0] > 0).sum())


def _enable_extension(ext_id: str) -> str:
    """Loads the saved preferences (the caller installed the extension into
    ``BLENDER_USER_RESOURCES``) and checks that the extension is enabled. Returns its module."""
    import addon_utils

    bpy.ops.wm.read_userpref()
    name = f"bl_ext.user_default.{ext_id}"
    loaded, enabled = addon_utils.check(name)
    if not enabled:
        addon_utils.enable(name, default_set=True)
        loaded, enabled = addon_utils.check(name)
    if not enabled:
        raise RuntimeError(f"the extension {name} is not installed/enabled in {bpy.utils.resource_path('USER')}")
    return name


def _world(scene: bpy.types.Scene, linear_rgb: tuple[float, float, float]) -> None:
    world = scene.world or bpy.data.worlds.new("FATE demo world")
    scene.world = world
    world.color = linear_rgb
    if world.node_tree is not None:
        for node in world.node_tree.nodes:
            if node.type == "BACKGROUND":
                node.inputs["Color"].default_value = (*linear_rgb, 1.0)
                node.inputs["Strength"].default_value = 1.0


def _render_frames(scene: bpy.types.Scene, frames: list[int], names: list[str], out: Path,
                   stage: str, done: int, total: int) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for f, n in zip(frames, names):
        scene.frame_set(f)
        scene.render.filepath = str(out / f"{n}.png")
        bpy.ops.render.render(write_still=True)
        done += 1
        progress(stage, done, total)
    return done


def _turntable_camera(scene: bpy.types.Scene, template: bpy.types.Object, head: bpy.types.Object,
                      frames: int, pitch_deg: float = 8.0) -> bpy.types.Object:
    """A camera orbiting the head once over frames 1..frames (keyed, linear), at the distance and
    lens of the tracked camera."""
    from mathutils import Vector

    corners = [head.matrix_world @ Vector(c) for c in head.bound_box]
    lo = Vector([min(c[i] for c in corners) for i in range(3)])
    hi = Vector([max(c[i] for c in corners) for i in range(3)])
    centre = (lo + hi) / 2
    cam_data = template.data.copy()
    cam_data.animation_data_clear()
    cam_data.name = "FATE demo turntable"
    cam = bpy.data.objects.new("FATE demo turntable", cam_data)
    scene.collection.objects.link(cam)
    scene.frame_set(1)
    dist = (template.matrix_world.translation - centre).length
    cam.rotation_mode = "QUATERNION"
    pitch = math.radians(pitch_deg)
    for f in range(1, frames + 1):
        a = 2 * math.pi * (f - 1) / frames
        # Blender world: +Z up; the head faces −Y (the rig's R_x(+90°) turns FLAME +Z into −Y).
        d = Vector((math.sin(a) * math.cos(pitch), -math.cos(a) * math.cos(pitch), math.sin(pitch)))
        cam.location = centre + dist * d
        cam.rotation_quaternion = (-d).to_track_quat("-Z", "Y")
        cam.keyframe_insert("location", frame=f)
        cam.keyframe_insert("rotation_quaternion", frame=f)
    if cam.animation_data and cam.animation_data.action:
        action = cam.animation_data.action
        curves = getattr(action, "fcurves", None)
        if curves is None:  # Blender 5.0 layered actions
            curves = [fc for layer in action.layers for strip in layer.strips
                      for bag in strip.channelbags for fc in bag.fcurves]
        for fc in curves:
            for kp in fc.keyframe_points:
                kp.interpolation = "LINEAR"
    return cam


def stage_final(cfg: dict) -> dict:
    """Extension → Import Avatar → renders → logo stamp → Sync Maps → renders → turntable → .blend.

    Config keys: extension_id, avatar (folder), renders (folder), blend (file), logo_uv_box,
    test_frames (0-based indices), turntable_frames, test_background, turntable_background
    (linear RGB).
    """
    t0 = time.time()
    ext = _enable_extension(cfg.get("extension_id", "fate_avatar"))
    scene = _clear_scene()
    test_idx = [int(i) for i in cfg["test_frames"]]
    n_tt = int(cfg["turntable_frames"])
    total = 3 + 2 * len(test_idx) + n_tt
    progress("blender", 0, total)

    # Import Avatar: the extension's operator, as the artist clicks it
    avatar = Path(cfg["avatar"]).resolve()
    if bpy.ops.fate.import_avatar(directory=str(avatar)) != {"FINISHED"}:
        raise RuntimeError(f"Import Avatar failed for {avatar}")
    head = bpy.context.view_layer.objects.active
    if head is None or head.get("fate_role") != "head":
        raise RuntimeError("Import Avatar did not leave the head object active")
    rig = head.parent
    tracked_cam = scene.camera
    scene.render.engine = "FATE_SPLAT"
    scene.render.film_transparent = False
    _colour_management(scene)
    _png_rgba(scene)
    scene.render.image_settings.color_mode = "RGB"
    _world(scene, tuple(cfg.get("test_background", (1.0, 1.0, 1.0))))
    done = 1
    progress("blender", done, total)

    renders = Path(cfg["renders"])
    names = [f"{i:05d}" for i in test_idx]
    frames = [i + 1 for i in test_idx]
    done = _render_frames(scene, frames, names, renders / "test_blender_baked", "blender", done, total)

    # the scripted edit: stamp a logo into the colour map, then Sync Maps (backup + save)
    color = next((img for img in bpy.data.images if img.get("fate_map") == "color"), None)
    if color is None:
        raise RuntimeError("the imported avatar has no colour map image")
    changed = stamp_logo(color, tuple(cfg["logo_uv_box"]))
    bpy.context.view_layer.objects.active = head
    if bpy.ops.fate.sync_maps() != {"FINISHED"}:
        raise RuntimeError("Sync Maps saved nothing after the logo stamp")
    done += 1
    progress("blender", done, total)
    done = _render_frames(scene, frames, names, renders / "test_blender_edited", "blender", done, total)

    # 360° turntable (the avatar keeps talking), then back to the tracked camera
    scene.render.film_transparent = False
    _world(scene, tuple(cfg.get("turntable_background", (0.3, 0.3, 0.3))))
    tt = _turntable_camera(scene, tracked_cam, head, n_tt)
    scene.camera = tt
    done = _render_frames(scene, list(range(1, n_tt + 1)), [f"{f:04d}" for f in range(n_tt)],
                          renders / "turntable", "blender", done, total)
    scene.camera = tracked_cam
    _world(scene, tuple(cfg.get("test_background", (1.0, 1.0, 1.0))))
    scene.frame_set(frames[0] if frames else 1)

    blend = Path(cfg["blend"]).resolve()
    blend.parent.mkdir(parents=True, exist_ok=True)
    bpy.context.preferences.filepaths.save_version = 0  # no demo.blend1 backups (not saved to userprefs)
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.file.make_paths_relative()
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    done += 1
    progress("blender", done, total)
    return {"extension": ext, "head": head.name, "rig": rig.name if rig else None,
            "logo_texels": changed, "color_map": bpy.path.abspath(color.filepath),
            "blend": str(blend), "seconds": round(time.time() - t0, 2)}


STAGES = {"cycles": stage_cycles, "final": stage_final}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m addon.demo", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--config", required=True, type=Path, help="stage config JSON")
    args = parser.parse_args(argv)
    cfg = json.loads(args.config.read_text(encoding="utf-8"))
    result = STAGES[args.stage](cfg)
    _say(RESULT_PREFIX, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
