"""The demo subject's expression-dependent appearance in its Cycles material (issue 19).

``subject/appearance.json`` (written by ``engine/demo/expression_appearance.py``) lists RGBA
layer textures and the shape key that scales each one. Over the albedo, in order, each layer is
mixed in with the factor ``alpha · clamp(gain · value, 0, 1)``, where ``value`` is the head's
shape key read by a driver (a "Sum Values" driver: no Python expression, so it evaluates in
background renders), e.g. ``brow_raise`` for the forehead wrinkles and the jaw corrective
``Pose_jaw_21`` (= sin of the jaw opening) for the open mouth: the material changes with exactly
the shape-key values that deform the mesh.
"""

from __future__ import annotations

import json
from pathlib import Path

import bpy

from ..rig.animation import DriverVar, add_driver

__all__ = ["LAYERS_JSON", "add_expression_layers"]

LAYERS_JSON = "appearance.json"


def _layer_factor(tree: bpy.types.NodeTree, key: bpy.types.Key | None, layer: dict, alpha) -> bpy.types.NodeSocket:
    """``alpha · clamp(gain · value(shape_key), 0, 1)`` as nodes (alpha alone for constant layers)."""
    if layer.get("shape_key") is None:
        return alpha
    value = tree.nodes.new("ShaderNodeValue")
    value.label = f"{layer['shape_key']} (driven)"
    value.outputs[0].default_value = 0.0
    name = layer["shape_key"]
    if key is not None and name in key.key_blocks:
        add_driver(tree, f'nodes["{value.name}"].outputs[0].default_value', -1,
                   [DriverVar("v", key, f'key_blocks["{name}"].value')], driver_type="SUM")
    gain = tree.nodes.new("ShaderNodeMath")
    gain.operation = "MULTIPLY"
    gain.use_clamp = True
    tree.links.new(value.outputs[0], gain.inputs[0])
    gain.inputs[1].default_value = float(layer.get("gain", 1.0))
    factor = tree.nodes.new("ShaderNodeMath")
    factor.operation = "MULTIPLY"
    tree.links.new(gain.outputs[0], factor.inputs[0])
    tree.links.new(alpha, factor.inputs[1])
    return factor.outputs[0]


def add_expression_layers(material: bpy.types.Material, subject: Path, head: bpy.types.Object) -> list[str]:
    """Mixes the subject's layers (module doc) between the albedo texture and the BSDF of
    ``material`` (made by ``addon/demo/cycles.py``: Image Texture → Diffuse BSDF).

    Args:
        material: the subject's material.
        subject: the subject folder (``appearance.json`` and the layer PNGs).
        head: the head mesh object whose shape keys drive the layers.
    Returns:
        the names of the layers added ([] when the subject has no ``appearance.json``).
    """
    path = Path(subject) / LAYERS_JSON
    if not path.is_file():
        return []
    info = json.loads(path.read_text(encoding="utf-8"))
    tree = material.node_tree
    bsdf = next(n for n in tree.nodes if n.type == "BSDF_DIFFUSE")
    colour = bsdf.inputs["Color"].links[0].from_socket
    key = head.data.shape_keys
    added = []
    for layer in info["layers"]:
        img = bpy.data.images.load(str(Path(subject) / layer["file"]), check_existing=True)
        img.colorspace_settings.name = "sRGB"
        img.alpha_mode = "STRAIGHT"
        tex = tree.nodes.new("ShaderNodeTexImage")
        tex.image, tex.interpolation, tex.extension = img, "Linear", "EXTEND"
        tex.label = layer["name"]
        mix = tree.nodes.new("ShaderNodeMix")
        mix.data_type = "RGBA"
        mix.blend_type = "MIX"
        tree.links.new(_layer_factor(tree, key, layer, tex.outputs["Alpha"]), mix.inputs["Factor"])
        tree.links.new(colour, mix.inputs[6])  # A (colour)
        tree.links.new(tex.outputs["Color"], mix.inputs[7])  # B (colour)
        colour = mix.outputs[2]  # Result (colour)
        added.append(layer["name"])
    tree.links.new(colour, bsdf.inputs["Color"])
    return added
