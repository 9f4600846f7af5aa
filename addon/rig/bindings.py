"""How an imported avatar is marked in Blender: the one place for its attribute and custom-property
names (docs/FORMATS.md, "Blender asset"), and the look-ups built on them.

Objects carry ``fate_role`` = ``"head"`` / ``"rig"`` / ``"camera"`` / ``"bindings"`` /
``"look_at"`` (the eyes' target, :mod:`addon.rig.presets`); scripts may
instead mark a head mesh with ``fate_avatar = True``. The head object holds

- ``fate_bindings``: the bindings object (below);
- ``fate_map_<name>`` (e.g. ``fate_map_color``): each map image, written by Import Avatar; or
  ``fate_maps = {map name: image name}``, an alternative for scripts that wins per map;
- ``fate_avatar_dir`` (also on the rig): the avatar folder; ``fate_head_model``: its head model;
- ``fate_expressions``: the expression shape keys' names, in coefficient order;
- ``fate_expression_presets``: the saved expression presets (:mod:`addon.rig.presets`).

Map images carry ``fate_map`` (the map name) and ``fate_channels``; the head mesh has the face
attribute ``fate_mouth`` (the mouth-closing faces).

The bindings live in a mesh object ``<name>_bindings``: one loose vertex per Gaussian at its rest
position (FLAME canonical, m; parented to the head so it lines up in the viewport, never
rendered) with point attributes

- ``fate_face_idx`` (INT): triangle index into the head mesh's polygons,
- ``fate_bary`` (FLOAT_VECTOR): barycentric coordinates in that triangle,
- ``fate_uv`` (FLOAT2): texture coordinates, OBJ convention (origin bottom-left);

and, when the avatar folder has ``blender/gaussians.npz`` (a trained avatar, baked or not), the
trained attributes the splat engine renders while there are no maps: ``fate_color``
(FLOAT_VECTOR, encoded sRGB), ``fate_opacity`` (FLOAT), ``fate_scale`` (FLOAT_VECTOR, multiples of
the face scale), ``fate_rotation`` (FLOAT_VECTOR, axis-angle in the face frame, rad),
``fate_offset`` (FLOAT, m along the face normal); a relightable avatar's (head property
``fate_appearance = "pbr"``) ``fate_color`` is its albedo and ``fate_roughness``, ``fate_f0``
(FLOAT) are added. Its head also points at the World of its learnt environment
(``fate_environment``).
"""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np

from ..errors import MapsError

__all__ = ["ATTR_FACE", "ATTR_BARY", "ATTR_UV", "ATTR_MOUTH", "PROP_ROLE", "ROLE_HEAD", "ROLE_RIG",
           "ROLE_CAMERA", "ROLE_BINDINGS", "ROLE_LOOK_AT", "PROP_AVATAR", "PROP_BINDINGS", "PROP_AVATAR_DIR",
           "PROP_HEAD_MODEL", "PROP_MAP_PREFIX", "PROP_MAPS", "IMAGE_PROP_MAP", "IMAGE_PROP_CHANNELS",
           "PROP_EXPRESSIONS", "PROP_PRESETS", "TRAINED_ATTRIBUTES", "PBR_TRAINED_ATTRIBUTES", "PROP_APPEARANCE",
           "PROP_ENVIRONMENT", "is_relightable",
           "create_bindings_object", "find_bindings_object", "get_bindings", "get_trained_attributes",
           "has_trained_attributes",
           "is_head_object", "find_head_object", "avatar_map_images", "all_map_images", "get_avatar_dir"]

ATTR_FACE = "fate_face_idx"
ATTR_BARY = "fate_bary"
ATTR_UV = "fate_uv"
ATTR_MOUTH = "fate_mouth"
"""Face attribute (BOOLEAN) of the head mesh: the mouth-closing faces."""
PROP_ROLE = "fate_role"
ROLE_HEAD, ROLE_RIG, ROLE_CAMERA, ROLE_BINDINGS = "head", "rig", "camera", "bindings"
ROLE_LOOK_AT = "look_at"
PROP_AVATAR = "fate_avatar"
"""Alternative head marker for scripts (``True``): the splat engine draws the object."""
PROP_BINDINGS = "fate_bindings"
PROP_AVATAR_DIR = "fate_avatar_dir"
PROP_HEAD_MODEL = "fate_head_model"
PROP_PERCEPTUAL = "fate_trained_with"
"""Head object property: the perceptual term the avatar was trained with ("vgg x0.1", "dssim x0.2 ...")."""
PROP_MAP_PREFIX = "fate_map_"
"""Head property per map holding its image: ``fate_map_color``, ..."""
PROP_MAPS = "fate_maps"
"""Alternative head property: map name → ``bpy.data.images`` name."""
IMAGE_PROP_MAP = "fate_map"
"""Image property: the map name ("color", "opacity", ...)."""
IMAGE_PROP_CHANNELS = "fate_channels"
"""Image property: the number of meaningful channels of the map file."""
PROP_EXPRESSIONS = "fate_expressions"
"""Head property: the expression shape keys' names, in coefficient order."""
PROP_PRESETS = "fate_expression_presets"
"""Head property: preset name → {"expressions": {key: value}, "bones": {joint: [w, x, y, z]}}."""
TRAINED_ATTRIBUTES = {"color": ("fate_color", "FLOAT_VECTOR", 3), "opacity": ("fate_opacity", "FLOAT", 1),
                      "scale": ("fate_scale", "FLOAT_VECTOR", 3),
                      "rotation": ("fate_rotation", "FLOAT_VECTOR", 3),
                      "offset": ("fate_offset", "FLOAT", 1)}
"""Map name → (point attribute of the bindings object, type, components) of the trained values."""
PBR_TRAINED_ATTRIBUTES = {"roughness": ("fate_roughness", "FLOAT", 1), "f0": ("fate_f0", "FLOAT", 1)}
"""A relightable avatar's further trained values (its ``fate_color`` is the albedo)."""
PROP_APPEARANCE = "fate_appearance"
"""Head property: "pbr" for a relightable avatar (albedo, roughness, F0 maps; lit by the scene's
lights in FATE Splats); absent or "static" otherwise."""
PROP_ENVIRONMENT = "fate_environment"
"""Head property: the World holding the avatar's learnt environment (the video's light)."""


def is_relightable(obj: bpy.types.Object) -> bool:
    """Whether the avatar of ``obj`` (its head, rig, bindings or camera) is relightable ("pbr")."""
    head = find_head_object(obj) or obj
    return head is not None and _original(head).get(PROP_APPEARANCE) == "pbr"


def create_bindings_object(name: str, bindings, head_obj: bpy.types.Object, v_template: np.ndarray,
                           faces: np.ndarray, collection: bpy.types.Collection,
                           trained=None) -> bpy.types.Object:
    """Creates ``<name>_bindings`` (see the module doc) and links it from ``head_obj``.

    Args:
        name: avatar name.
        bindings: :class:`addon.files.avatar.Bindings` (face_idx [N] int32, bary [N, 3], uv [N, 2]).
        head_obj: the head mesh object.
        v_template: rest vertices, FLAME canonical, m. [V, 3]
        faces: the head's triangles (mesh + mouth). [F+M, 3] int32
        collection: collection to link the object into.
        trained: :class:`addon.files.avatar.TrainedGaussians` (N rows) or None.
    Returns:
        the bindings object.
    """
    n = len(bindings.face_idx)
    pos = (bindings.bary[:, :, None] * v_template[faces[bindings.face_idx]]).sum(axis=1)
    mesh = bpy.data.meshes.new(f"{name}_bindings")
    mesh.vertices.add(n)
    mesh.vertices.foreach_set("co", np.ascontiguousarray(pos, np.float32).reshape(-1))
    for attr, kind, arr, field in ((ATTR_FACE, "INT", bindings.face_idx.astype(np.int32), "value"),
                                   (ATTR_BARY, "FLOAT_VECTOR", bindings.bary, "vector"),
                                   (ATTR_UV, "FLOAT2", bindings.uv, "vector")):
        a = mesh.attributes.new(attr, kind, "POINT")
        a.data.foreach_set(field, np.ascontiguousarray(arr).reshape(-1))
    attributes = dict(TRAINED_ATTRIBUTES) if trained is not None else {}
    if trained is not None and getattr(trained, "roughness", None) is not None:
        attributes.update(PBR_TRAINED_ATTRIBUTES)
    for m, (attr, kind, _) in attributes.items():
        a = mesh.attributes.new(attr, kind, "POINT")
        a.data.foreach_set("vector" if kind == "FLOAT_VECTOR" else "value",
                           np.ascontiguousarray(getattr(trained, m), np.float32).reshape(-1))
    mesh.update()
    obj = bpy.data.objects.new(f"{name}_bindings", mesh)
    collection.objects.link(obj)
    obj.parent = head_obj
    obj.hide_render = True
    obj.hide_select = True
    obj[PROP_ROLE] = ROLE_BINDINGS
    head_obj[PROP_BINDINGS] = obj
    return obj


def _original(obj):
    return getattr(obj, "original", None) or obj


def find_bindings_object(obj: bpy.types.Object) -> bpy.types.Object | None:
    """The bindings object of a head (or the object itself if it holds the attributes)."""
    obj = _original(obj)
    if obj is None:
        return None
    if obj.type == "MESH" and ATTR_FACE in obj.data.attributes:
        return obj
    ref = obj.get(PROP_BINDINGS)
    if isinstance(ref, bpy.types.Object):
        return ref
    for child in obj.children:
        if child.type == "MESH" and ATTR_FACE in child.data.attributes:
            return child
    return None


def get_bindings(obj: bpy.types.Object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Gaussian bindings of an imported avatar.

    Args:
        obj: the head object (original or evaluated), its rig's child, or the bindings object.
    Returns:
        face_idx: triangle index into the head mesh's polygons. [N] int32
        bary: barycentric coordinates. [N, 3] float32
        uv: texture coordinates, OBJ convention (origin bottom-left). [N, 2] float32
    Raises:
        KeyError: ``obj`` has no bindings (not an imported FATE avatar).
    """
    b = find_bindings_object(obj)
    if b is None:
        raise KeyError(f"object {getattr(obj, 'name', obj)!r} has no FATE bindings "
                       f"(expected a '{PROP_BINDINGS}' property; import the avatar with FATE)")
    mesh = b.data
    n = len(mesh.vertices)
    face_idx = np.empty(n, np.int32)
    bary = np.empty(n * 3, np.float32)
    uv = np.empty(n * 2, np.float32)
    mesh.attributes[ATTR_FACE].data.foreach_get("value", face_idx)
    mesh.attributes[ATTR_BARY].data.foreach_get("vector", bary)
    mesh.attributes[ATTR_UV].data.foreach_get("vector", uv)
    return face_idx, bary.reshape(n, 3), uv.reshape(n, 2)


def has_trained_attributes(obj: bpy.types.Object) -> bool:
    """Whether the avatar's bindings object holds the trained Gaussians' attributes (cheap)."""
    b = find_bindings_object(obj)
    return b is not None and all(attr in b.data.attributes for attr, _, _ in TRAINED_ATTRIBUTES.values())


def get_trained_attributes(obj: bpy.types.Object) -> dict[str, np.ndarray] | None:
    """The trained Gaussians' attributes stored on an avatar's bindings object, or None.

    Args:
        obj: the head object (original or evaluated), or the bindings object.
    Returns:
        map name → values (color [N, 3], opacity [N], scale [N, 3], rotation [N, 3], offset [N],
        and for a relightable avatar roughness [N], f0 [N]; float32; units as the maps), or None
        when the bindings object lacks any of the five.
    """
    if not has_trained_attributes(obj):
        return None
    b = find_bindings_object(obj)
    attrs = b.data.attributes
    n = len(b.data.vertices)
    out = {}
    wanted = dict(TRAINED_ATTRIBUTES)
    if all(attr in attrs for attr, _, _ in PBR_TRAINED_ATTRIBUTES.values()):
        wanted.update(PBR_TRAINED_ATTRIBUTES)
    for m, (attr, kind, comps) in wanted.items():
        buf = np.empty(n * comps, np.float32)
        attrs[attr].data.foreach_get("vector" if kind == "FLOAT_VECTOR" else "value", buf)
        out[m] = buf.reshape(n, comps) if comps > 1 else buf
    return out


def avatar_map_images(obj: bpy.types.Object) -> dict[str, bpy.types.Image]:
    """The map images of an avatar, by map name ("color", "opacity", ...).

    Reads the head's image pointers ``fate_map_<name>`` and, for the maps it names, its
    ``fate_maps`` (map name → image name), which wins.

    Args:
        obj: the head object (original or evaluated), its rig, its bindings or its camera.
    Returns:
        map name → image; maps the head does not reference are absent.
    Raises:
        MapsError: ``fate_maps`` names an image that is not in ``bpy.data.images``.
    """
    head = _original(find_head_object(obj) or obj)
    images = {key[len(PROP_MAP_PREFIX):]: value for key, value in head.items()
              if key.startswith(PROP_MAP_PREFIX) and isinstance(value, bpy.types.Image)}
    names = head.get(PROP_MAPS)
    for m, image_name in (names.items() if names is not None else ()):
        img = bpy.data.images.get(str(image_name))
        if img is None:
            raise MapsError(f"object '{head.name}': '{PROP_MAPS}[\"{m}\"]' names image "
                            f"'{image_name}', which is not in bpy.data.images")
        images[m] = img
    return images


def all_map_images() -> list[bpy.types.Image]:
    """Every FATE map image of the open file (images with the ``fate_map`` property)."""
    return [img for img in bpy.data.images if IMAGE_PROP_MAP in img]


def get_avatar_dir(obj: bpy.types.Object) -> Path | None:
    """The avatar folder an object was imported from, or None."""
    obj = _original(find_head_object(obj) or obj)
    value = obj.get(PROP_AVATAR_DIR) if obj is not None else None
    return Path(value) if value else None


def is_head_object(obj: bpy.types.Object | None) -> bool:
    """Whether ``obj`` (original or evaluated) is marked as a FATE head (``fate_role == "head"``
    or ``fate_avatar``)."""
    src = _original(obj) if obj is not None else None
    return src is not None and (src.get(PROP_ROLE) == ROLE_HEAD or bool(src.get(PROP_AVATAR, False)))


def find_head_object(obj: bpy.types.Object | None) -> bpy.types.Object | None:
    """The FATE head for a head, its rig, its bindings or its camera; None otherwise."""
    obj = _original(obj) if obj is not None else None
    if obj is None:
        return None
    if is_head_object(obj):
        return obj
    for candidate in (obj.parent, *obj.children, *(obj.parent.children if obj.parent else ())):
        if candidate is not None and is_head_object(candidate):
            return candidate
    return None
