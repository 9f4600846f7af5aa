"""``python -m addon.demo cycles``: the demo subject rendered with Cycles (the ground truth the
main job trains on; see :mod:`addon.demo`)."""

from __future__ import annotations

import time
from pathlib import Path

import bpy

from ..rig.importer import import_avatar
from .appearance import add_expression_layers
from .lights import LIGHTINGS, apply_lighting
from .scene import clear_scene, colour_management, png_rgba, progress

__all__ = ["stage_cycles", "build_subject_scene", "configure_cycles", "head_centre"]


def _albedo_material(name: str, albedo_path: Path) -> bpy.types.Material:
    """Image texture (sRGB) → Diffuse BSDF with roughness 0 (Lambertian, the diffuse term of the
    relightable avatar's BRDF): a matte, view-independent surface."""
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
    bsdf.inputs["Roughness"].default_value = 0.0
    out = nodes.new("ShaderNodeOutputMaterial")
    links.new(tex.outputs["Color"], bsdf.inputs["Color"])
    links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    return mat


def head_centre(head: bpy.types.Object):
    """Centre of the head's rest bounding box, Blender world, m (a ``mathutils.Vector``)."""
    from mathutils import Vector

    corners = [head.matrix_world @ Vector(c) for c in head.bound_box]
    return sum(corners, Vector()) / len(corners)


def build_subject_scene(cfg: dict):
    """The demo subject in a cleared scene, ready for Cycles: the rig and camera of
    :func:`addon.rig.importer.import_avatar` (config key ``camera``: "STILL", the default — the
    head's motion on the root bone, the camera still — or "TRACKED"), the albedo material with
    its expression layers, the render settings of :func:`configure_cycles`.

    Returns:
        (scene, import result, head centre in the Blender world, the expression layers added).
    """
    scene = clear_scene()
    subject = Path(cfg["subject"])
    res = import_avatar(subject, scene, bpy.context, name="DemoSubject", with_maps=False,
                        camera=str(cfg.get("camera", "STILL")))
    mat = _albedo_material("DemoSubject_albedo", subject / "albedo.png")
    res.head.data.materials.clear()
    res.head.data.materials.append(mat)
    layers = add_expression_layers(mat, subject, res.head)
    configure_cycles(scene, cfg)
    return scene, res, head_centre(res.head), layers


def configure_cycles(scene: bpy.types.Scene, cfg: dict) -> None:
    """Cycles on the CPU: ``samples``, one diffuse bounce, no glossy, a fixed animated seed,
    transparent film, Standard view transform, RGBA PNG (config keys samples, seed, threads,
    denoise)."""
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


def stage_cycles(cfg: dict) -> dict:
    """Renders the demo subject's tracked frames with Cycles (see the module doc).

    Lit by the ``lighting`` rig of :mod:`.lights` (default "train", the video's light), whose
    lights ride with the camera: with the still camera (the default) they stay fixed in the world
    while the head turns on its rig, as in a real room; with the tracked camera (the 360° views)
    each view is lit as that head turn would be in the same room.

    Config keys: subject (folder), out (folder for NNNNN.png), samples, threads (0 = all),
    denoise (bool), seed, camera ("STILL" or "TRACKED"), lighting, stage (the progress events'
    stage name, default "cycles").
    """
    t0 = time.time()
    scene, res, centre, layers = build_subject_scene(cfg)
    apply_lighting(scene, LIGHTINGS[str(cfg.get("lighting", "train"))], res.camera, centre)

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
