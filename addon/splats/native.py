"""Native Gaussian splats (Blender ≥ 5.3): the avatar as a ``GAUSSIAN_SPLAT`` point cloud that
Cycles and EEVEE render with the rest of the scene.

What :func:`create_native_splats` makes for a head object ``<name>``:

- a point cloud ``<name>_splats`` (type ``GAUSSIAN_SPLAT``), child of the head with an identity
  local transform (its data are in the head's FLAME coordinates), one point per Gaussian with the
  bindings as attributes: ``fate_v0``/``fate_v1``/``fate_v2`` (INT, the bound triangle's vertex
  indices into the head mesh), ``fate_bary`` (FLOAT_VECTOR, barycentric weights) and ``fate_uv``
  (FLOAT_VECTOR, UV in x, y; OBJ convention, origin bottom-left);
- a Geometry Nodes modifier (node group :data:`GROUP_NAME`, shared by all avatars) that, every
  time the depsgraph evaluates it, reads the *evaluated* head mesh (shape keys, armature, pose
  correctives) through Object Info and the five map images through Image Texture nodes, and
  writes the renderer's attributes. Per splat, with ``p0, p1, p2`` the bound triangle's evaluated
  vertices (FATE §3.1 Eq. 2–4, the same maths as :func:`.geometry.place_gaussians`):

  - face frame ``e1 = normalize(p1 − p0)``, ``n = normalize((p1 − p0) × (p2 − p0))``,
    ``R_f = [e1 | n × e1 | n]`` (Axes to Rotation, Z = n, X = e1), face scale ``k`` = mean edge
    length;
  - ``position = Σ bᵢ pᵢ + offset · n``; ``rotation = R_f · R(axis-angle of the rotation map)``;
    ``scale = k · scale map`` (σ, m); ``radiance:base = ((rgb − 0.5) / C0, opacity)``
    (:mod:`.conventions`), stored as a colour attribute (Store Named Attribute has no
    4-component input for FLOAT4).

  Map lookups are bilinear with clamp to edge at the splat's UV, as :func:`.pixels.sample_maps`.
  Colour: Image Texture gives an image's buffer values: the stored (sRGB) values of a byte image,
  scene-linear values of a float image in a colour-managed space (Blender decodes those on load
  and painting writes linear values); with the group input ``Colour Is Linear`` the four texels
  around the UV are re-encoded with the sRGB transfer function before they are interpolated
  (:func:`.pixels.is_linear_buffer` decides, at creation and in :func:`refresh_native_splats`).
  ``scale`` also carries a 3D version of the engine's 0.3 px² screen-space low-pass filter for
  the scene camera (:func:`_low_pass`), kept current by a ``render_pre`` handler.

Painting a map image or keying shape keys and bones re-evaluates the modifier: the next Cycles
or EEVEE render (and the viewport) shows the change without Sync Maps. The head mesh itself is
made invisible to camera rays and shadows (it is the paint surface, not what renders).

Blender < 5.3 has no ``PointCloud.type``: :func:`native_splats_supported` says why and nothing is
created.
"""

from __future__ import annotations

import logging
import math

import bpy
import numpy as np

from ..errors import SplatError
from ..rig.bindings import PROP_ROLE, avatar_map_images, get_bindings, is_head_object
from .conventions import SH_C0
from .drawer import EPS2D
from .pixels import MAP_NAMES, is_linear_buffer

log = logging.getLogger(__name__)

__all__ = ["MIN_VERSION", "GROUP_NAME", "MODIFIER_NAME", "ROLE_SPLATS", "PROP_SPLATS",
           "native_splats_supported", "create_native_splats", "refresh_native_splats",
           "find_native_splats", "build_node_group", "low_pass_per_meter", "sync_low_pass",
           "register", "unregister"]

MIN_VERSION = (5, 3, 0)
"""First Blender version with Gaussian-splat point clouds rendered by Cycles and EEVEE."""
GROUP_NAME = "FATE Native Splats"
"""The Geometry Nodes group (one per file, shared by every avatar)."""
GROUP_VERSION = 3
"""Bumped when the group's nodes change: an older group in a file is rebuilt."""
MODIFIER_NAME = "FATE Splats"
ROLE_SPLATS = "splats"
"""``fate_role`` of the point cloud object."""
PROP_SPLATS = "fate_native_splats"
"""Head property: the point cloud object."""
ATTR_V = ("fate_v0", "fate_v1", "fate_v2")
ATTR_BARY = "fate_bary"
ATTR_UV = "fate_uv"

_SOCKET_HEAD = "Head"
_SOCKET_LINEAR = "Colour Is Linear"
_SOCKET_LOWPASS = "Low-pass per Meter"
_IMAGE_SOCKETS = {"color": "Colour", "opacity": "Opacity", "scale": "Scale", "rotation": "Rotation",
                  "offset": "Offset"}


def native_splats_supported() -> tuple[bool, str]:
    """Whether this Blender renders Gaussian splats natively.

    Returns:
        (supported, reason): the reason says which version is needed when not supported.
    """
    version = tuple(bpy.app.version)
    if version < MIN_VERSION or "type" not in bpy.types.PointCloud.bl_rna.properties:
        return False, (f"Blender {bpy.app.version_string} has no native Gaussian splats (Blender "
                       f"{'.'.join(map(str, MIN_VERSION))} or newer renders them with Cycles and "
                       f"EEVEE); use FATE Splats, or Setup Composite for Cycles/EEVEE scenes")
    return True, ""


# ------------------------------------------------------------------------------ node group
class _Tree:
    """Small helper to add nodes and links to a node tree."""

    def __init__(self, tree: bpy.types.NodeTree) -> None:
        self.tree = tree
        self._x = 0

    def node(self, kind: str, **props) -> bpy.types.Node:
        n = self.tree.nodes.new(kind)
        n.location = (self._x, 0)
        self._x += 40
        for k, v in props.items():
            setattr(n, k, v)
        return n

    def link(self, out, inp) -> None:
        self.tree.links.new(out, inp)

    def feed(self, socket, x) -> None:
        """Links ``x`` into ``socket`` when it is a socket, else sets its default value."""
        if isinstance(x, bpy.types.NodeSocket):
            self.link(x, socket)
        elif x is not None:
            socket.default_value = x

    def vmath(self, op: str, a, b=None, scale=None):
        """Vector Math ``op`` of sockets/values ``a`` (and ``b``); returns its vector output
        (or the value output for LENGTH/DOT_PRODUCT/DISTANCE)."""
        n = self.node("ShaderNodeVectorMath", operation=op)
        self.feed(n.inputs[0], a)
        self.feed(n.inputs[1], b)
        if scale is not None:
            self.feed(n.inputs["Scale"], scale)
        return n.outputs["Value"] if op in ("LENGTH", "DOT_PRODUCT", "DISTANCE") else n.outputs["Vector"]

    def math(self, op: str, a, b=None):
        """Math ``op`` of sockets/values ``a`` (and ``b``); returns its output."""
        n = self.node("ShaderNodeMath", operation=op)
        self.feed(n.inputs[0], a)
        self.feed(n.inputs[1], b)
        return n.outputs[0]

    def named(self, name: str, data_type: str):
        n = self.node("GeometryNodeInputNamedAttribute", data_type=data_type)
        n.inputs["Name"].default_value = name
        return n.outputs["Attribute"]

    def store(self, geometry, name: str, data_type: str, value):
        n = self.node("GeometryNodeStoreNamedAttribute", data_type=data_type, domain="POINT")
        self.link(geometry, n.inputs["Geometry"])
        n.inputs["Name"].default_value = name
        self.link(value, n.inputs["Value"])
        return n.outputs["Geometry"]


def _linear_to_srgb(t: _Tree, c):
    """The sRGB transfer function (IEC 61966-2-1) per component, as :func:`.colour.linear_to_srgb`:
    ``12.92 x`` for ``x <= 0.0031308``, else ``1.055 x^(1/2.4) − 0.055``."""
    c = t.vmath("MAXIMUM", c, (0.0, 0.0, 0.0))
    lo = t.vmath("SCALE", c, scale=12.92)
    powed = t.vmath("POWER", t.vmath("MAXIMUM", c, (0.0031308,) * 3), (1.0 / 2.4,) * 3)
    hi = t.vmath("SUBTRACT", t.vmath("SCALE", powed, scale=1.055), (0.055,) * 3)
    # step = 1 where x > threshold (sign(x − t) is −1, 0 or 1; at x = t both branches agree)
    step = t.vmath("SCALE", t.vmath("ADD", t.vmath("SIGN", t.vmath("SUBTRACT", c, (0.0031308,) * 3)),
                                    (1.0, 1.0, 1.0)), scale=0.5)
    return t.vmath("ADD", lo, t.vmath("MULTIPLY", step, t.vmath("SUBTRACT", hi, lo)))


def _encoded_bilinear(t: _Tree, image, uv, is_linear):
    """Bilinear, clamp-to-edge lookup of the *encoded* colour, as :func:`.pixels.sample_bilinear`
    on :func:`.pixels.image_pixels` (``encoded=True``): the four texels around ``uv`` are read
    (Closest), re-encoded when the buffer is linear, then interpolated. (Interpolating Blender's
    linear buffer first would brighten edges between texels: the sRGB curve is concave.)

    Texel (row r from the bottom, column c) is centred at ((c + 0.5) / W, (r + 0.5) / H).
    """
    info = t.node("GeometryNodeImageInfo")
    t.link(image, info.inputs["Image"])
    size = t.node("ShaderNodeCombineXYZ")
    t.link(info.outputs["Width"], size.inputs["X"])
    t.link(info.outputs["Height"], size.inputs["Y"])
    size.inputs["Z"].default_value = 1.0
    x = t.vmath("SUBTRACT", t.vmath("MULTIPLY", uv, size.outputs["Vector"]), (0.5, 0.5, 0.0))
    x0 = t.vmath("FLOOR", x)
    frac = t.node("ShaderNodeSeparateXYZ")
    t.link(t.vmath("SUBTRACT", x, x0), frac.inputs["Vector"])
    texels = []
    for dx, dy in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)):
        centre = t.vmath("DIVIDE", t.vmath("ADD", x0, (dx + 0.5, dy + 0.5, 0.0)), size.outputs["Vector"])
        tex = t.node("GeometryNodeImageTexture", interpolation="Closest", extension="EXTEND")
        t.link(image, tex.inputs["Image"])
        t.link(centre, tex.inputs["Vector"])
        sw = t.node("GeometryNodeSwitch", input_type="VECTOR")
        t.link(is_linear, sw.inputs["Switch"])
        t.link(tex.outputs["Color"], sw.inputs["False"])
        t.link(_linear_to_srgb(t, tex.outputs["Color"]), sw.inputs["True"])
        texels.append(sw.outputs["Output"])

    def lerp(a, b, f):
        mix = t.node("ShaderNodeMix", data_type="VECTOR", factor_mode="UNIFORM")
        t.link(f, mix.inputs["Factor"])
        t.link(a, mix.inputs[4])  # A_Vector
        t.link(b, mix.inputs[5])  # B_Vector
        return mix.outputs[1]  # Result_Vector

    bottom = lerp(texels[0], texels[1], frac.outputs["X"])
    top = lerp(texels[2], texels[3], frac.outputs["X"])
    return lerp(bottom, top, frac.outputs["Y"])


def _low_pass(t: _Tree, sigma, centre, per_meter):
    """3DGS's screen-space low-pass filter as a 3D one: ``σ' = sqrt(σ² + s²)`` per axis with
    ``s = per_meter · z`` and z the splat's depth along the active camera's view axis.

    The engine (and FATE Splats) add ``EPS2D = 0.3 px²`` to every projected 2D covariance (3DGS;
    gsplat ``eps2d``), which the avatar was trained with; Cycles and EEVEE evaluate the 3D
    Gaussian itself, so sub-pixel splats would render as fine dots. ``Σ + s² I`` keeps Σ's axes and
    adds ``s²`` to each variance; projected, it adds ``s² (f/z)² = 0.3 px²`` near the optical axis
    when ``per_meter = sqrt(0.3) / f`` (f in pixels, :func:`low_pass_per_meter`).
    """
    cam = t.node("GeometryNodeObjectInfo", transform_space="RELATIVE")
    t.link(t.node("GeometryNodeInputActiveCamera").outputs["Active Camera"], cam.inputs["Object"])
    axis = t.node("FunctionNodeRotateVector")
    axis.inputs["Vector"].default_value = (0.0, 0.0, -1.0)  # Blender cameras look down −Z
    t.link(cam.outputs["Rotation"], axis.inputs["Rotation"])
    z = t.vmath("DOT_PRODUCT", t.vmath("SUBTRACT", centre, cam.outputs["Location"]), axis.outputs["Vector"])
    s = t.math("MULTIPLY", t.math("MAXIMUM", z, 0.0), per_meter)
    s2 = t.math("MULTIPLY", s, s)
    var = t.vmath("ADD", t.vmath("MULTIPLY", sigma, sigma), t.vmath("SCALE", (1.0, 1.0, 1.0), scale=s2))
    return t.vmath("POWER", var, (0.5, 0.5, 0.5))


def low_pass_per_meter(scene: bpy.types.Scene) -> float:
    """``sqrt(EPS2D) / f`` for the scene camera at the render size (f: focal length, pixels), the
    :func:`_low_pass` filter width per meter of depth; 0 without a perspective camera."""
    from .cameras import camera_from_object, render_size

    cam = scene.camera
    if cam is None or cam.type != "CAMERA" or cam.data.type != "PERSP":
        return 0.0
    width, height = render_size(scene.render)
    dg = bpy.context.evaluated_depsgraph_get()
    try:
        dc = camera_from_object(cam.evaluated_get(dg), dg, width, height,
                                (scene.render.pixel_aspect_x, scene.render.pixel_aspect_y))
    except SplatError:
        return 0.0
    return float(math.sqrt(EPS2D) / max(dc.fx, 1e-9))


def sync_low_pass(scene: bpy.types.Scene) -> int:
    """Sets every native splat modifier's low-pass input from the scene camera and resolution
    (a ``render_pre`` handler and :func:`refresh_native_splats` call it); writes only changed
    values, so an unchanged scene is not re-evaluated. Returns how many modifiers changed."""
    value = low_pass_per_meter(scene)
    changed = 0
    for obj in scene.objects:
        mod = obj.modifiers.get(MODIFIER_NAME) if obj.get(PROP_ROLE) == ROLE_SPLATS else None
        if mod is None or mod.node_group is None:
            continue
        for item in mod.node_group.interface.items_tree:
            if getattr(item, "in_out", None) == "INPUT" and item.name == _SOCKET_LOWPASS:
                if abs(_get_modifier_input(mod, item.identifier) - value) > 1e-12:
                    _set_modifier_input(mod, item.identifier, value)
                    changed += 1
    return changed


def build_node_group() -> bpy.types.NodeTree:
    """The Geometry Nodes group that places the splats on the evaluated head (module doc).

    Returns the existing group when it is current (``fate_version`` == :data:`GROUP_VERSION`),
    else (re)builds it in place so modifiers keep pointing at it.
    """
    group = bpy.data.node_groups.get(GROUP_NAME)
    if group is not None and group.get("fate_version") == GROUP_VERSION:
        return group
    if group is None:
        group = bpy.data.node_groups.new(GROUP_NAME, "GeometryNodeTree")
    group.nodes.clear()
    group.interface.clear()
    iface = group.interface
    iface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    iface.new_socket(_SOCKET_HEAD, in_out="INPUT", socket_type="NodeSocketObject")
    for m in MAP_NAMES:
        iface.new_socket(_IMAGE_SOCKETS[m], in_out="INPUT", socket_type="NodeSocketImage")
    iface.new_socket(_SOCKET_LINEAR, in_out="INPUT", socket_type="NodeSocketBool")
    iface.new_socket(_SOCKET_LOWPASS, in_out="INPUT", socket_type="NodeSocketFloat")
    iface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    t = _Tree(group)
    gin = t.node("NodeGroupInput")
    gout = t.node("NodeGroupOutput")

    info = t.node("GeometryNodeObjectInfo", transform_space="ORIGINAL")
    t.link(gin.outputs[_SOCKET_HEAD], info.inputs["Object"])
    head_geo = info.outputs["Geometry"]
    position = t.node("GeometryNodeInputPosition").outputs["Position"]
    p = []
    for name in ATTR_V:
        s = t.node("GeometryNodeSampleIndex", data_type="FLOAT_VECTOR", domain="POINT")
        t.link(head_geo, s.inputs["Geometry"])
        t.link(position, s.inputs["Value"])
        t.link(t.named(name, "INT"), s.inputs["Index"])
        p.append(s.outputs["Value"])
    a = t.vmath("SUBTRACT", p[1], p[0])
    b = t.vmath("SUBTRACT", p[2], p[0])
    c = t.vmath("SUBTRACT", p[2], p[1])
    normal = t.vmath("NORMALIZE", t.vmath("CROSS_PRODUCT", a, b))
    k = t.math("DIVIDE", t.math("ADD", t.math("ADD", t.vmath("LENGTH", a), t.vmath("LENGTH", b)),
                                t.vmath("LENGTH", c)), 3.0)

    bary = t.node("ShaderNodeSeparateXYZ")
    t.link(t.named(ATTR_BARY, "FLOAT_VECTOR"), bary.inputs["Vector"])
    centre = t.vmath("ADD", t.vmath("ADD", t.vmath("SCALE", p[0], scale=bary.outputs["X"]),
                                    t.vmath("SCALE", p[1], scale=bary.outputs["Y"])),
                     t.vmath("SCALE", p[2], scale=bary.outputs["Z"]))

    uv = t.named(ATTR_UV, "FLOAT_VECTOR")
    maps = {}
    for m in MAP_NAMES:
        if m == "color":
            maps[m] = _encoded_bilinear(t, gin.outputs[_IMAGE_SOCKETS[m]], uv, gin.outputs[_SOCKET_LINEAR])
            continue
        tex = t.node("GeometryNodeImageTexture", interpolation="Linear", extension="EXTEND")
        t.link(gin.outputs[_IMAGE_SOCKETS[m]], tex.inputs["Image"])
        t.link(uv, tex.inputs["Vector"])
        maps[m] = tex.outputs["Color"]

    def red(col):
        sep = t.node("ShaderNodeSeparateXYZ")
        t.link(col, sep.inputs["Vector"])
        return sep.outputs["X"]

    offset = red(maps["offset"])
    centre = t.vmath("ADD", centre, t.vmath("SCALE", normal, scale=offset))

    frame = t.node("FunctionNodeAxesToRotation", primary_axis="Z", secondary_axis="X")
    t.link(normal, frame.inputs["Primary Axis"])
    t.link(a, frame.inputs["Secondary Axis"])
    aa = maps["rotation"]
    local = t.node("FunctionNodeAxisAngleToRotation")
    t.link(t.vmath("NORMALIZE", aa), local.inputs["Axis"])
    t.link(t.vmath("LENGTH", aa), local.inputs["Angle"])
    rot = t.node("FunctionNodeRotateRotation", rotation_space="GLOBAL")  # R_f · R_local
    t.link(local.outputs["Rotation"], rot.inputs["Rotation"])
    t.link(frame.outputs["Rotation"], rot.inputs["Rotate By"])

    sigma = _low_pass(t, t.vmath("SCALE", maps["scale"], scale=k), centre, gin.outputs[_SOCKET_LOWPASS])

    dc = t.vmath("SCALE", t.vmath("SUBTRACT", maps["color"], (0.5, 0.5, 0.5)), scale=1.0 / SH_C0)
    dc_xyz = t.node("ShaderNodeSeparateXYZ")
    t.link(dc, dc_xyz.inputs["Vector"])
    base = t.node("FunctionNodeCombineColor", mode="RGB")
    for i, ch in enumerate(("Red", "Green", "Blue")):
        t.link(dc_xyz.outputs[i], base.inputs[ch])
    t.link(red(maps["opacity"]), base.inputs["Alpha"])

    setpos = t.node("GeometryNodeSetPosition")
    t.link(gin.outputs["Geometry"], setpos.inputs["Geometry"])
    t.link(centre, setpos.inputs["Position"])
    geo = setpos.outputs["Geometry"]
    geo = t.store(geo, "rotation", "QUATERNION", rot.outputs["Rotation"])
    geo = t.store(geo, "scale", "FLOAT_VECTOR", sigma)
    geo = t.store(geo, "radiance:base", "FLOAT_COLOR", base.outputs["Color"])
    t.link(geo, gout.inputs["Geometry"])
    group["fate_version"] = GROUP_VERSION
    return group


# ------------------------------------------------------------------------------ objects
def find_native_splats(head: bpy.types.Object) -> bpy.types.Object | None:
    """The native splat object of a head, or None."""
    src = getattr(head, "original", None) or head
    ref = src.get(PROP_SPLATS)
    if isinstance(ref, bpy.types.Object) and ref.name in bpy.data.objects:
        return ref
    for child in src.children:
        if child.get(PROP_ROLE) == ROLE_SPLATS:
            return child
    return None


def _point_cloud(name: str, head: bpy.types.Object) -> bpy.types.PointCloud:
    """A point cloud with one point per Gaussian of ``head`` and the bindings as attributes."""
    try:
        face_idx, bary, uv = get_bindings(head)
    except KeyError as exc:
        raise SplatError(f"object '{head.name}': no Gaussian bindings for native splats ({exc})") from exc
    mesh = head.data
    tris = np.empty(len(mesh.polygons) * 3, np.int32)
    if len(mesh.loops) != tris.size:
        raise SplatError(f"mesh '{mesh.name}': native splats need a triangle mesh")
    mesh.polygons.foreach_get("vertices", tris)
    tris = tris.reshape(-1, 3)
    if len(face_idx) and int(face_idx.max()) >= len(tris):
        raise SplatError(f"object '{head.name}': bindings refer to face {int(face_idx.max())}, the "
                         f"mesh has {len(tris)}")
    corners = tris[face_idx]  # [N, 3]
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    rest = (bary[:, :, None] * co.reshape(-1, 3)[corners]).sum(1)

    pc = bpy.data.pointclouds.new(name)
    pc.resize(len(face_idx))
    pc.attributes["position"].data.foreach_set("vector", np.ascontiguousarray(rest, np.float32).ravel())
    for i, attr in enumerate(ATTR_V):
        a = pc.attributes.new(attr, "INT", "POINT")
        a.data.foreach_set("value", np.ascontiguousarray(corners[:, i], np.int32))
    a = pc.attributes.new(ATTR_BARY, "FLOAT_VECTOR", "POINT")
    a.data.foreach_set("vector", np.ascontiguousarray(bary, np.float32).ravel())
    uv3 = np.zeros((len(uv), 3), np.float32)
    uv3[:, :2] = uv
    pc.attributes.new(ATTR_UV, "FLOAT_VECTOR", "POINT").data.foreach_set("vector", uv3.ravel())
    pc.type = "GAUSSIAN_SPLAT"
    return pc


def _set_modifier_input(mod: bpy.types.NodesModifier, identifier: str, value) -> None:
    """Sets a Geometry Nodes modifier input (5.3: ``mod.properties.inputs.<id>.value``; older
    versions kept them as ID properties, ``mod[id]``)."""
    props = getattr(mod, "properties", None)
    if props is not None and hasattr(props, "inputs"):
        getattr(props.inputs, identifier).value = value
    else:
        mod[identifier] = value


def _get_modifier_input(mod: bpy.types.NodesModifier, identifier: str):
    props = getattr(mod, "properties", None)
    if props is not None and hasattr(props, "inputs"):
        return getattr(props.inputs, identifier).value
    return mod[identifier]


def refresh_native_splats(head: bpy.types.Object) -> bpy.types.Object:
    """Points the splats' modifier at the head's current map images (and their colour handling).

    Call after replacing a map image or changing the colour map's colour space.

    Raises:
        SplatError: the head has no native splats, or a map image is missing.
    """
    obj = find_native_splats(head)
    if obj is None:
        raise SplatError(f"object '{head.name}' has no native splats")
    mod = obj.modifiers.get(MODIFIER_NAME)
    if mod is None:
        mod = obj.modifiers.new(MODIFIER_NAME, "NODES")
    mod.node_group = build_node_group()
    images = avatar_map_images(head)
    if "color" not in images and "albedo" in images:
        # a relightable avatar: Blender's splat radiance is emitted, not lit, so native splats show
        # its albedo unlit (FATE Splats lights it with the scene's lights)
        images = {**images, "color": images["albedo"]}
    missing = [m for m in MAP_NAMES if m not in images]
    if missing:
        raise SplatError(f"object '{head.name}': no {', '.join(missing)} map image(s) for native splats "
                         f"(bake the avatar, then import it again)")
    values = {_SOCKET_HEAD: head, _SOCKET_LINEAR: bool(is_linear_buffer(images["color"])),
              **{label: images[m] for m, label in _IMAGE_SOCKETS.items()}}
    for item in mod.node_group.interface.items_tree:
        if getattr(item, "in_out", None) == "INPUT" and item.name in values:
            _set_modifier_input(mod, item.identifier, values[item.name])
    scene = bpy.context.scene
    if obj.name in scene.objects:
        sync_low_pass(scene)
    obj.update_tag()
    return obj


def create_native_splats(head: bpy.types.Object, collection: bpy.types.Collection | None = None
                         ) -> bpy.types.Object | None:
    """Creates ``<head>_splats`` (module doc) for an imported head; None on Blender < 5.3.

    Args:
        head: the head mesh object (with bindings and map images).
        collection: where to link the new object (default: the head's first collection).
    Returns:
        the point cloud object, or None where native splats are not supported.
    Raises:
        SplatError: the head has no bindings or maps, or its mesh is not triangulated.
    """
    supported, reason = native_splats_supported()
    if not supported:
        log.info("native splats skipped: %s", reason)
        return None
    if not is_head_object(head):
        raise SplatError(f"object '{head.name}' is not a FATE head")
    old = find_native_splats(head)
    if old is not None:
        return refresh_native_splats(head)
    pc = _point_cloud(f"{head.name}_splats", head)
    obj = bpy.data.objects.new(pc.name, pc)
    (collection or (head.users_collection[0] if head.users_collection else
                    bpy.context.scene.collection)).objects.link(obj)
    obj.parent = head
    obj.hide_select = True
    obj[PROP_ROLE] = ROLE_SPLATS
    head[PROP_SPLATS] = obj
    # The head mesh is the paint surface; the splats are what Cycles and EEVEE render.
    head.visible_camera = False
    head.visible_shadow = False
    refresh_native_splats(head)
    return obj


@bpy.app.handlers.persistent
def _render_pre(scene, *_args) -> None:
    try:
        sync_low_pass(scene)
    except Exception:  # noqa: BLE001 - a handler must never break a render
        log.exception("native splats: low-pass update failed")


def register() -> None:
    """Adds the ``render_pre`` handler that keeps the low-pass filter on the render camera."""
    if _render_pre not in bpy.app.handlers.render_pre:
        bpy.app.handlers.render_pre.append(_render_pre)


def unregister() -> None:
    """Removes the handler."""
    if _render_pre in bpy.app.handlers.render_pre:
        bpy.app.handlers.render_pre.remove(_render_pre)
