"""``python -m addon.demo final``: the built extension in Blender — Import Avatar, FATE Splats
renders before and after a scripted texture edit and Sync Maps, a turntable, ``demo.blend``
(see :mod:`addon.demo`)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import bpy

from ..rig.bindings import PROP_ROLE, ROLE_HEAD, avatar_map_images
from .logo import stamp_logo
from .scene import clear_scene, colour_management, png_rgba, progress, render_frames, set_world

__all__ = ["stage_final"]


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
    scene = clear_scene()
    test_idx = [int(i) for i in cfg["test_frames"]]
    n_tt = int(cfg["turntable_frames"])
    total = 3 + 2 * len(test_idx) + n_tt
    progress("blender", 0, total)

    # Import Avatar: the extension's operator, as the artist clicks it
    avatar = Path(cfg["avatar"]).resolve()
    if bpy.ops.fate.import_avatar(directory=str(avatar)) != {"FINISHED"}:
        raise RuntimeError(f"Import Avatar failed for {avatar}")
    head = bpy.context.view_layer.objects.active
    if head is None or head.get(PROP_ROLE) != ROLE_HEAD:
        raise RuntimeError("Import Avatar did not leave the head object active")
    rig = head.parent
    tracked_cam = scene.camera
    scene.render.engine = "FATE_SPLAT"
    scene.render.film_transparent = False
    colour_management(scene)
    png_rgba(scene)
    scene.render.image_settings.color_mode = "RGB"
    set_world(scene, tuple(cfg.get("test_background", (1.0, 1.0, 1.0))))
    done = 1
    progress("blender", done, total)

    renders = Path(cfg["renders"])
    names = [f"{i:05d}" for i in test_idx]
    frames = [i + 1 for i in test_idx]
    done = render_frames(scene, frames, names, renders / "test_blender_baked", "blender", done, total)

    # the scripted edit: stamp a logo into the colour map, then Sync Maps (backup + save)
    color = avatar_map_images(head).get("color")
    if color is None:
        raise RuntimeError("the imported avatar has no colour map image")
    changed = stamp_logo(color, tuple(cfg["logo_uv_box"]))
    bpy.context.view_layer.objects.active = head
    if bpy.ops.fate.sync_maps() != {"FINISHED"}:
        raise RuntimeError("Sync Maps saved nothing after the logo stamp")
    done += 1
    progress("blender", done, total)
    done = render_frames(scene, frames, names, renders / "test_blender_edited", "blender", done, total)

    # 360° turntable (the avatar keeps talking), then back to the tracked camera
    scene.render.film_transparent = False
    set_world(scene, tuple(cfg.get("turntable_background", (0.3, 0.3, 0.3))))
    tt = _turntable_camera(scene, tracked_cam, head, n_tt)
    scene.camera = tt
    done = render_frames(scene, list(range(1, n_tt + 1)), [f"{f:04d}" for f in range(n_tt)],
                          renders / "turntable", "blender", done, total)
    scene.camera = tracked_cam
    set_world(scene, tuple(cfg.get("test_background", (1.0, 1.0, 1.0))))
    scene.frame_set(frames[0] if frames else 1)

    blend = Path(cfg["blend"]).resolve()
    blend.parent.mkdir(parents=True, exist_ok=True)
    bpy.context.preferences.filepaths.save_version = 0  # no demo.blend1 backups (not saved to userprefs)
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.file.make_paths_relative()  # images; the render output path is not among them:
    scene.render.filepath = bpy.path.relpath(str(renders / "blender_"))  # "//…", relative to the .blend
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    done += 1
    progress("blender", done, total)
    return {"extension": ext, "head": head.name, "rig": rig.name if rig else None,
            "logo_texels": changed, "color_map": bpy.path.abspath(color.filepath),
            "blend": str(blend), "seconds": round(time.time() - t0, 2)}
