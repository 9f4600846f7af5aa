"""Properties of the add-on: ``Scene.fate`` (:class:`FATE_PG_scene`, read as ``context.scene.fate``)
and ``Object.fate`` (:class:`FATE_PG_object`, the splat engine's settings of a head).

Job fields are written only by :mod:`addon.jobs.runtime` on the main thread (timer callbacks).
"""

from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)

JOB_STATES = (
    ("IDLE", "Idle", "No job has run yet"),
    ("RUNNING", "Running", "A worker job is running"),
    ("CANCELLING", "Cancelling", "Waiting for the worker to checkpoint and stop"),
    ("DONE", "Done", "The last job finished"),
    ("ERROR", "Error", "The last job failed"),
    ("CANCELLED", "Cancelled", "The last job was cancelled (resume continues it)"),
)


class FATE_PG_scene(bpy.types.PropertyGroup):
    """Per-scene FATE settings and the state of the current worker job."""

    video_path: StringProperty(name="Video", subtype="FILE_PATH",
                               description="Portrait video (or a folder of frames) to track into a dataset")
    dataset_dir: StringProperty(name="Dataset", subtype="DIR_PATH",
                                description="Tracked video folder (INSTA or IMavatar layout)")
    avatar_dir: StringProperty(name="Avatar", subtype="DIR_PATH",
                               description="Avatar folder: written by Train, read by Bake and Import")
    steps: IntProperty(name="Steps", default=30000, min=1, soft_max=200000,
                       description="Training steps (one frame per step)")
    resume: BoolProperty(name="Resume", default=True,
                         description="Continue from the last checkpoint in the avatar folder if there is one")
    bake_resolution: EnumProperty(
        name="Map Size", default="512",
        items=(("256", "256", "256×256 maps (fast, CPU)"), ("512", "512", "512×512 maps (FATE's size)"),
               ("1024", "1024", "1024×1024 maps (more texture detail to paint, slower)")),
        description="Resolution of the baked UV maps")
    bake_steps: IntProperty(name="Bake Steps", default=2000, min=0, soft_max=20000,
                            description="BakeNet image-objective steps (one frame per step)")
    bake_appearance_only: BoolProperty(
        name="Appearance Only", default=False,
        description="Bake colour and opacity only; keep the trained geometry (scale, rotation, offset maps "
                    "are a direct fit)")
    bake_full_head: BoolProperty(
        name="Full Head", default=True,
        description="Complete what the video never saw (the back of the head, FATE §3.4): fill the maps from the "
                    "seen parts and fine-tune on novel views; the visibility map shows what was invented")
    bake_completion_generator: StringProperty(
        name="Generator",
        description="Optional generative completion as module:function (e.g. your SphereHead wrapper, importable "
                    "by the engine's Python); empty = the built-in completion")
    bake_completion_options: StringProperty(
        name="Generator Options", description="Text handed to the generator (e.g. its checkpoint folder)")
    import_tracking: BoolProperty(name="Tracked Animation", default=True,
                                  description="Import the training video's expressions, poses and camera")
    import_camera: EnumProperty(
        name="Camera", default="STILL",
        items=(("STILL", "Still", "A still camera; the head carries the tracked motion (turns in the world)"),
               ("TRACKED", "Tracked", "The camera replays the training video's views (to check against the "
                                      "footage); the head turns only relative to it")),
        description="How Import Avatar sets up the tracked head motion and the camera")
    preset_name: StringProperty(name="Preset", default="Preset",
                                description="Name to save the current expression and pose under")
    splat_composite: EnumProperty(
        name="Blend", default="TRAINING",
        items=(("TRAINING", "As Trained (sRGB)",
                "Blend the splats in the sRGB-encoded space the avatar was trained in, like the engine: with "
                "the Standard view transform the render reproduces the training images"),
               ("LINEAR", "Scene Linear",
                "Blend in scene linear, as Cycles and EEVEE blend Blender 5.3's native splats")),
        description="FATE Splats: the colour space splats are blended in")
    splat_draw_meshes: BoolProperty(
        name="Draw Scene Meshes", default=True,
        description="FATE Splats: also draw the other visible meshes (solid shading: base colour or image "
                    "texture), depth-tested against the splats")

    job_kind: StringProperty(name="Job", description="Verb of the current/last job")
    job_state: EnumProperty(name="State", items=JOB_STATES, default="IDLE")
    job_stage: StringProperty(name="Stage")
    progress: FloatProperty(name="Progress", min=0.0, max=1.0, subtype="FACTOR",
                            description="Progress of the current stage")
    job_step: IntProperty(name="Step")
    job_total: IntProperty(name="Total")
    job_loss: FloatProperty(name="Loss", precision=5)
    job_psnr: FloatProperty(name="PSNR", unit="NONE", description="Training PSNR, dB")
    job_eta_s: FloatProperty(name="ETA", subtype="TIME_ABSOLUTE", unit="TIME_ABSOLUTE",
                             description="Estimated seconds left in this stage")
    job_message: StringProperty(name="Message", description="Latest message from the worker")
    job_error: StringProperty(name="Error", description="Error of the last job")
    job_log: StringProperty(name="Log", subtype="FILE_PATH", description="Log file of the current/last job")
    job_checkpoint: StringProperty(name="Checkpoint", subtype="FILE_PATH")


class FATE_PG_object(bpy.types.PropertyGroup):
    """Per-head settings of the FATE Splats engine (read by ``addon.splats.runtime.texel_stride``)."""

    resplat: EnumProperty(
        name="Density", default="TRAINED",
        items=(("TRAINED", "As Trained", "The avatar's own Gaussians: its trained look; paint finer than "
                                         "their spacing is averaged away"),
               ("TEXEL", "Per Texel", "One Gaussian per covered texel of the maps (or every k-th), sized "
                                      "to the texel: what Texture Paint shows is what renders")),
        description="Where the splat engine places Gaussians when it re-splats the maps")
    texel_stride: IntProperty(name="Every k-th Texel", default=1, min=1, soft_max=8, max=64,
                              description="Per Texel density: one Gaussian per k-th texel in u and v "
                                          "(1 = every texel; k² times fewer Gaussians)")
    map_keys: BoolProperty(name="Expression Maps", default=True,
                           description="Blend the avatar's map shape keys (maps/dynamic: wrinkles, mouth "
                                       "interior...) into the colour and opacity maps by the head's shape-key "
                                       "values every frame; the painted maps stay the base")


CLASSES = (FATE_PG_scene, FATE_PG_object)


def register() -> None:
    """Registers the property groups, ``Scene.fate`` and ``Object.fate``."""
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.fate = PointerProperty(type=FATE_PG_scene)
    bpy.types.Object.fate = PointerProperty(type=FATE_PG_object)


def unregister() -> None:
    """Deletes ``Object.fate`` and ``Scene.fate`` and unregisters their classes."""
    for owner in (bpy.types.Object, bpy.types.Scene):
        if hasattr(owner, "fate"):
            del owner.fate
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
