"""``python -m addon.demo relight_cycles | relight_splats``: the relighting test of the main job.

``relight_cycles``: the demo subject's test frames rendered again with Cycles under each held-out
light rig of :mod:`.lights` (the ground truth the relit avatar is compared with).

``relight_splats``: in a Blender with the built extension installed, Import Avatar of the
relightable (``pbr``) avatar, then FATE Splats renders of the test frames under each light rig
(the training one and the held-out ones, the same lights as Cycles had) and under the avatar's
learnt environment (the World Import Avatar made: the video's look).
"""

from __future__ import annotations

import time
from pathlib import Path

import bpy

from ..rig.bindings import PROP_ENVIRONMENT
from .cycles import build_subject_scene
from .lights import HELD_OUT, LIGHTINGS, apply_lighting
from .scene import progress, render_frames

__all__ = ["stage_relight_cycles", "stage_relight_splats"]


def stage_relight_cycles(cfg: dict) -> dict:
    """Cycles renders of the test frames under every held-out light.

    Config keys: subject, out (folder; one sub-folder per light, ``NNNNN.png``), test_frames
    (0-based indices), samples, seed, threads.
    """
    t0 = time.time()
    scene, res, centre, _ = build_subject_scene(cfg)
    test_idx = [int(i) for i in cfg["test_frames"]]
    total = len(HELD_OUT) * len(test_idx)
    progress("relight_cycles", 0, total)
    done = 0
    for name in HELD_OUT:
        apply_lighting(scene, LIGHTINGS[name], res.camera, centre)
        done = render_frames(scene, [i + 1 for i in test_idx], [f"{i:05d}" for i in test_idx],
                             Path(cfg["out"]) / name, "relight_cycles", done, total)
    return {"lights": list(HELD_OUT), "frames": len(test_idx), "seconds": round(time.time() - t0, 2)}


def stage_relight_splats(cfg: dict) -> dict:
    """FATE Splats renders of the relightable avatar's test frames under each light rig and under
    its learnt environment.

    Config keys: extension_id, avatar (folder), out (folder; one sub-folder per light and
    ``learnt``), test_frames (0-based indices), blend (optional: save the scene there, under the
    learnt World).
    """
    from .final import _enable_extension
    from .scene import clear_scene, colour_management, png_rgba

    t0 = time.time()
    ext = _enable_extension(cfg.get("extension_id", "fate_avatar"))
    scene = clear_scene()
    avatar = Path(cfg["avatar"]).resolve()
    if bpy.ops.fate.import_avatar(directory=str(avatar)) != {"FINISHED"}:
        raise RuntimeError(f"Import Avatar failed for {avatar}")
    head = bpy.context.view_layer.objects.active
    learnt_world = head.get(PROP_ENVIRONMENT) if head is not None else None
    if not isinstance(learnt_world, bpy.types.World):
        raise RuntimeError("Import Avatar made no learnt-environment World for the relightable avatar")
    from .cycles import head_centre

    centre = head_centre(head)
    scene.render.engine = "FATE_SPLAT"
    scene.render.film_transparent = True
    colour_management(scene)
    png_rgba(scene)
    test_idx = [int(i) for i in cfg["test_frames"]]
    frames, names = [i + 1 for i in test_idx], [f"{i:05d}" for i in test_idx]
    rigs = ("train",) + tuple(HELD_OUT)
    total = (len(rigs) + 1) * len(test_idx)
    progress("relight_splats", 0, total)
    done = 0
    out = Path(cfg["out"])
    for name in rigs:
        apply_lighting(scene, LIGHTINGS[name], scene.camera, centre)
        done = render_frames(scene, frames, names, out / name, "relight_splats", done, total)
    from .lights import clear_lighting

    clear_lighting(scene)
    scene.world = learnt_world
    done = render_frames(scene, frames, names, out / "learnt", "relight_splats", done, total)
    blend = cfg.get("blend")
    if blend:  # the relightable avatar under its learnt World, for the artist to open
        scene.frame_set(frames[0] if frames else 1)
        bpy.context.preferences.filepaths.save_version = 0
        bpy.ops.wm.save_as_mainfile(filepath=str(Path(blend).resolve()))
        bpy.ops.file.make_paths_relative()
        bpy.ops.wm.save_as_mainfile(filepath=str(Path(blend).resolve()))
    return {"extension": ext, "lights": list(rigs) + ["learnt"], "frames": len(test_idx),
            "seconds": round(time.time() - t0, 2)}
