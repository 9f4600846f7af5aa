"""``python -m addon.demo cycles``: the demo subject rendered with Cycles (the ground truth the
main job trains on; see :mod:`addon.demo`)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import bpy
import numpy as np

from ..rig.importer import import_avatar
from .appearance import add_expression_layers
from .scene import clear_scene, colour_management, png_rgba, progress

__all__ = ["stage_cycles"]


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
    world_strength, sun_strength, sun_angle_deg, denoise (bool), seed, stage (the progress
    events' stage name, default "cycles").
    """
    t0 = time.time()
    scene = clear_scene()
    subject = Path(cfg["subject"])
    # the tracked camera: the sun is fixed to the rig, so head turns must stay camera motion here
    res = import_avatar(subject, scene, bpy.context, name="DemoSubject", with_maps=False, camera="TRACKED")
    head, rig = res.head, res.rig
    mat = _albedo_material("DemoSubject_albedo", subject / "albedo.png")
    head.data.materials.clear()
    head.data.materials.append(mat)
    layers = add_expression_layers(mat, subject, head)
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
    colour_management(scene)
    png_rgba(scene)

    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    T = res.num_frames
    names = [f"{i:05d}" for i in range(T)]
    stage = str(cfg.get("stage", "cycles"))
    progress(stage, 0, T)
    for i in range(T):
        scene.frame_set(i + 1)
        scene.render.filepath = str(out / f"{names[i]}.png")
        bpy.ops.render.render(write_still=True)
        progress(stage, i + 1, T)
    return {"frames": T, "out": str(out), "seconds": round(time.time() - t0, 2),
            "warnings": res.warnings, "appearance_layers": layers}
