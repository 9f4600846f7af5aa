"""What both demo stages share: a cleared scene, colour management and PNG output that keep the
encoded values, rendering a list of frames, and the stages' progress events."""

from __future__ import annotations

from pathlib import Path

import bpy

from ..jobs.events import emit

__all__ = ["JOB", "progress", "clear_scene", "colour_management", "png_rgba", "set_world",
           "render_frames"]

JOB = "demo-blender"
"""The job name in the stages' protocol events."""


def progress(stage: str, step: int, total: int, **extra) -> None:
    """One ``progress`` event for the engine's progress bar."""
    emit("progress", JOB, stage=stage, step=int(step), total=int(total), **extra)


def clear_scene() -> bpy.types.Scene:
    """Removes every object of the startup scene (keeps preferences and add-ons)."""
    scene = bpy.context.scene
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj, do_unlink=True)
    return scene


def colour_management(scene: bpy.types.Scene) -> None:
    """Standard view transform: output values = the encoded render values, no tone curve."""
    vs = scene.view_settings
    vs.view_transform = "Standard"
    vs.look = "None"
    vs.exposure = 0.0
    vs.gamma = 1.0
    scene.display_settings.display_device = "sRGB"
    scene.sequencer_colorspace_settings.name = "sRGB"


def png_rgba(scene: bpy.types.Scene) -> None:
    """8-bit RGBA PNG output."""
    st = scene.render.image_settings
    if hasattr(st, "media_type"):
        st.media_type = "IMAGE"
    st.file_format = "PNG"
    st.color_mode = "RGBA"
    st.color_depth = "8"
    st.compression = 15


def set_world(scene: bpy.types.Scene, linear_rgb: tuple[float, float, float]) -> None:
    """A uniform world of colour ``linear_rgb`` (scene linear), strength 1 (the splats' background)."""
    world = scene.world or bpy.data.worlds.new("FATE demo world")
    scene.world = world
    world.color = linear_rgb
    if world.node_tree is not None:
        for node in world.node_tree.nodes:
            if node.type == "BACKGROUND":
                node.inputs["Color"].default_value = (*linear_rgb, 1.0)
                node.inputs["Strength"].default_value = 1.0


def render_frames(scene: bpy.types.Scene, frames: list[int], names: list[str], out: Path,
                  stage: str, done: int, total: int) -> int:
    """Renders ``frames`` to ``out/<name>.png``, one progress event each.

    Args:
        frames: scene frame numbers; names: the file stems, one per frame.
        stage, done, total: the progress stage, steps done before, steps of the stage.
    Returns:
        steps done after these frames.
    """
    out.mkdir(parents=True, exist_ok=True)
    for f, n in zip(frames, names):
        scene.frame_set(f)
        scene.render.filepath = str(out / f"{n}.png")
        bpy.ops.render.render(write_still=True)
        done += 1
        progress(stage, done, total)
    return done
