"""Setup Composite: the avatar (FATE Splats) in a Cycles or EEVEE scene through the Depth pass, for
Blender versions without native splats (< 5.3; it works in 5.3 too).

:func:`setup_composite` makes, for a scene ``S`` rendered by Cycles or EEVEE:

- a scene ``S FATE Splats`` (custom property ``fate_composite_of = S``) that links the same
  collections and objects, with the same camera, world, resolution, pixel aspect, frame range
  and frame rate, rendered by FATE Splats with a transparent film, the Depth pass on and the
  scene meshes off (Cycles draws those);
- in ``S``: the Depth pass on, and a compositor tree ``FATE Composite`` — Render Layers of ``S``
  and of the FATE scene into a **Z Combine** (alpha on), into the output. Rendering ``S``
  renders both scenes at the same frame and keeps, per pixel, the nearer one, blending the
  splats' alpha over what is behind them;
- each FATE head mesh of ``S`` made invisible to camera rays and shadows (Cycles/EEVEE would
  otherwise render the paint mesh; FATE Splats draws the splats regardless), and on 5.3 the
  heads' native splat objects hidden from renders (else Cycles would draw the avatar twice).

Limits (say them to the artist): one depth per pixel, so a translucent splat edge in front of a
mesh blends correctly but a mesh *between* two layers of splats does not; the splats neither
cast shadows on the Cycles scene nor receive its light.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import bpy

from ..errors import SplatError
from .native import find_native_splats
from .runtime import is_avatar

__all__ = ["PROP_COMPOSITE_OF", "TREE_NAME", "CompositeResult", "setup_composite"]

PROP_COMPOSITE_OF = "fate_composite_of"
"""Property of the FATE Splats scene: the name of the scene it composites into."""
TREE_NAME = "FATE Composite"
_COPIED_RENDER = ("resolution_x", "resolution_y", "resolution_percentage", "pixel_aspect_x",
                  "pixel_aspect_y", "fps", "fps_base")


@dataclass
class CompositeResult:
    """What :func:`setup_composite` made or changed."""

    splat_scene: bpy.types.Scene
    tree: bpy.types.NodeTree
    hidden_heads: list = field(default_factory=list)
    """Head meshes hidden from camera rays and native splat objects hidden from renders."""


def _splat_scene(scene: bpy.types.Scene) -> bpy.types.Scene:
    existing = next((s for s in bpy.data.scenes if s.get(PROP_COMPOSITE_OF) == scene.name), None)
    new = existing or bpy.data.scenes.new(f"{scene.name} FATE Splats")
    new[PROP_COMPOSITE_OF] = scene.name
    for child in scene.collection.children:
        if child.name not in new.collection.children:
            new.collection.children.link(child)
    for ob in scene.collection.objects:
        if ob.name not in new.collection.objects:
            new.collection.objects.link(ob)
    new.camera = scene.camera
    new.world = scene.world
    for attr in _COPIED_RENDER:
        setattr(new.render, attr, getattr(scene.render, attr))
    new.frame_start, new.frame_end, new.frame_step = scene.frame_start, scene.frame_end, scene.frame_step
    new.render.engine = "FATE_SPLAT"
    new.render.film_transparent = True
    new.view_layers[0].use_pass_z = True
    st = getattr(new, "fate", None)
    if st is not None:
        st.splat_draw_meshes = False
    return new


def _compositor_tree(scene: bpy.types.Scene) -> bpy.types.NodeTree:
    """The scene's compositor node tree, created and assigned (Blender 5: a node group set as
    ``compositing_node_group``, whose Group Output is the result; 4.x: ``scene.node_tree``)."""
    if hasattr(scene, "compositing_node_group"):
        tree = bpy.data.node_groups.get(TREE_NAME) or bpy.data.node_groups.new(TREE_NAME, "CompositorNodeTree")
        tree.nodes.clear()
        if not any(i.in_out == "OUTPUT" for i in tree.interface.items_tree if hasattr(i, "in_out")):
            tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        scene.compositing_node_group = tree
        return tree
    scene.use_nodes = True  # pragma: no cover - Blender < 5.0
    scene.node_tree.nodes.clear()
    return scene.node_tree


def setup_composite(scene: bpy.types.Scene) -> CompositeResult:
    """Sets up the Z Combine composite of FATE Splats into ``scene`` (module doc).

    Args:
        scene: a scene rendered by Cycles or EEVEE with at least one FATE head.
    Returns:
        the FATE Splats scene, the compositor tree and the heads hidden from camera rays.
    Raises:
        SplatError: the scene uses FATE Splats itself, or has no FATE head or no camera.
    """
    if scene.render.engine == "FATE_SPLAT":
        raise SplatError(f"scene '{scene.name}' renders with FATE Splats already; choose Cycles or "
                         f"EEVEE for the scene, then Setup Composite")
    if scene.get(PROP_COMPOSITE_OF):
        raise SplatError(f"scene '{scene.name}' is the FATE Splats half of a composite")
    heads = [ob for ob in scene.objects if ob.type == "MESH" and is_avatar(ob)]
    if not heads:
        raise SplatError(f"scene '{scene.name}' has no FATE head (import an avatar first)")
    if scene.camera is None:
        raise SplatError(f"scene '{scene.name}' has no active camera")
    splats = _splat_scene(scene)
    scene.view_layers[0].use_pass_z = True
    hidden = []
    for head in heads:
        if head.visible_camera or head.visible_shadow:
            head.visible_camera = False
            head.visible_shadow = False
            hidden.append(head)
        native = find_native_splats(head)
        if native is not None and not native.hide_render:
            native.hide_render = True
            hidden.append(native)

    tree = _compositor_tree(scene)
    nodes, links = tree.nodes, tree.links
    own = nodes.new("CompositorNodeRLayers")
    own.scene = scene
    own.location = (-400, 200)
    fate = nodes.new("CompositorNodeRLayers")
    fate.scene = splats
    fate.layer = splats.view_layers[0].name
    fate.location = (-400, -200)
    zc = nodes.new("CompositorNodeZcombine")
    for name in ("Use Alpha",):  # Blender 5: inputs; 4.x: a property
        if name in zc.inputs:
            zc.inputs[name].default_value = True
    if hasattr(zc, "use_alpha"):  # pragma: no cover - Blender < 5.0
        zc.use_alpha = True
    links.new(own.outputs["Image"], zc.inputs[0])
    links.new(own.outputs["Depth"], zc.inputs[1])
    links.new(fate.outputs["Image"], zc.inputs[2])
    links.new(fate.outputs["Depth"], zc.inputs[3])
    if hasattr(scene, "compositing_node_group"):
        out = nodes.new("NodeGroupOutput")
        links.new(zc.outputs[0], out.inputs[0])
    else:  # pragma: no cover - Blender < 5.0
        out = nodes.new("CompositorNodeComposite")
        links.new(zc.outputs[0], out.inputs["Image"])
    out.location = (300, 0)
    return CompositeResult(splats, tree, hidden)
