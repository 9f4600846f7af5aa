"""The paintable maps: map files as Blender images, and the material whose base colour is the
colour map (the Texture Paint target).

Blender reads EXR/PNG with its own loaders; images always reference the files next to the
avatar (never only packed), so painting can be saved back (:mod:`addon.maps.sync`).

What Blender does with our maps (checked with bpy 5.0):

- ``Image.pixels`` is bottom row first (files are top row first); Blender flips on load and
  save, so UV lookups need no flip.
- Every image is RGBA in Blender: a 1-channel (``Y``) EXR loads as grey (R = G = B = value,
  A = 1); a 3-channel EXR gets A = 1.
- The colour map is tagged sRGB so painting shows true colours; Blender converts a float sRGB
  image to scene-linear on load, so ``Image.pixels`` of the colour map holds *linear* values
  (apply the sRGB transfer function to get the map's values back) and ``Image.save()`` encodes
  them back to sRGB (round trip within 2e-5).
- Data maps are ``Non-Color``: ``Image.pixels`` holds the file's floats unchanged.
- ``use_half_precision = False`` keeps float maps at 32 bits on the GPU too.
"""

from __future__ import annotations

import logging
from pathlib import Path

import bpy

from ..files.avatar import MapEntry
from .bindings import IMAGE_PROP_CHANNELS, IMAGE_PROP_MAP

log = logging.getLogger(__name__)

__all__ = ["load_map_image", "is_data_colorspace", "build_material"]

_DATA_COLORSPACES = {"Non-Color", "Raw", "Linear", "Linear Rec.709", "Linear CIE-XYZ E", "Generic Data"}


def is_data_colorspace(name: str) -> bool:
    """Whether a colour space name means data (no colour transform on load/save)."""
    return name in _DATA_COLORSPACES or name.lower().startswith("non-color")


def _set_colorspace(img: bpy.types.Image, name: str) -> str:
    try:
        img.colorspace_settings.name = name
    except TypeError:  # not a colour space of this Blender's OCIO config
        fallback = "sRGB" if not is_data_colorspace(name) else "Non-Color"
        log.warning("image %s: colour space %r unknown to this Blender, using %r", img.name, name, fallback)
        img.colorspace_settings.name = fallback
    return img.colorspace_settings.name


def load_map_image(entry: MapEntry, image_name: str) -> bpy.types.Image:
    """Loads one baked map as an image datablock that references its file.

    Args:
        entry: the map (file, channels, colour space) from maps.json.
        image_name: datablock name to give the image.
    Returns:
        a new image (never one already in the file: another avatar's image of the same file keeps
        its pixels and name), with custom properties ``fate_map`` (map name) and ``fate_channels``.
    """
    img = bpy.data.images.load(str(Path(entry.path).resolve()), check_existing=False)
    img.name = image_name
    _set_colorspace(img, entry.colorspace)
    img.use_half_precision = False  # keep 32-bit floats (DESIGN: Blender facts)
    if is_data_colorspace(img.colorspace_settings.name):
        img.alpha_mode = "CHANNEL_PACKED"  # the 4th channel is data, never premultiplied
    img[IMAGE_PROP_MAP] = entry.name
    img[IMAGE_PROP_CHANNELS] = int(entry.channels)
    return img


def build_material(name: str, images: dict[str, bpy.types.Image]) -> bpy.types.Material:
    """A material whose base colour is the colour map (a relightable avatar's: the albedo map, and
    its roughness map drives the roughness); every map gets an image node.

    The colour (albedo) map's node is the active node, i.e. the Texture Paint target.
    """
    mat = bpy.data.materials.new(f"{name}_maps")
    if mat.node_tree is None:  # Blender < 5.0 creates materials without nodes
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = next((n for n in nodes if n.type == "BSDF_PRINCIPLED"), None)
    if bsdf is None:
        bsdf = nodes.new("ShaderNodeBsdfPrincipled")
        out = next((n for n in nodes if n.type == "OUTPUT_MATERIAL"), None) or nodes.new("ShaderNodeOutputMaterial")
        links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    bsdf.inputs["Roughness"].default_value = 0.8
    colour = "albedo" if "albedo" in images else "color"  # a relightable avatar paints its albedo
    order = sorted(images, key=lambda n: (n != colour, n))
    active = None
    for i, map_name in enumerate(order):
        node = nodes.new("ShaderNodeTexImage")
        node.name = node.label = f"FATE {map_name}"
        node.image = images[map_name]
        node.interpolation = "Linear"
        node.location = (bsdf.location.x - 400, bsdf.location.y - 300 * i)
        if map_name == colour:
            links.new(node.outputs["Color"], bsdf.inputs["Base Color"])
            active = node
        elif map_name == "roughness":
            links.new(node.outputs["Color"], bsdf.inputs["Roughness"])
    if active is not None:
        nodes.active = active
    return mat
