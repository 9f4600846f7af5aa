"""Builds a rigged, animated, paintable Blender head from an avatar folder (the "Import Avatar" step).

Pure functions taking explicit arguments; :class:`operators.avatar.FATE_OT_import_avatar` is a
thin wrapper. The files are parsed by :mod:`addon.files.avatar`; the rig maths (why the result
equals FLAME's LBS to float precision) is in :mod:`addon.rig.flame_math`.

What :func:`import_avatar` creates, in a new collection ``<name>``:

- ``<name>_rig`` (armature object, rotation R_x(+90°) so FLAME's +Y-up head stands up in
  Blender's +Z-up world; armature data in FLAME coordinates): per joint a deform bone
  ``<joint>`` (rest head at J0 = J_regressor · v_template, identity rest rotation, quaternion
  rotation mode) and a hidden mechanism bone ``MCH-<joint>`` between it and its parent whose
  driven location compensates for the joints moving with the expression.
- ``<name>`` (mesh, child of the rig with an identity local transform, so its vertex data are
  FLAME coordinates): faces = mesh + mouth faces (face attribute ``fate_mouth``), UVs
  ``UVMap``, shape keys ``Basis`` (v_template), ``Exp000``… (exprdirs incl. the learnt ΔE),
  ``Pose_<joint>_<r><c>`` (posedirs incl. ΔP, driven by the bone rotations), one vertex group
  per joint (LBS weights) and an Armature modifier (linear blend, no preserve volume).
- custom properties on the rig: ``fate_dJ_<joint>_<x|y|z>`` = ΔJ (m), driven by the Exp values.
- tracked sequence as keyframes on frames 1..T (Exp values, joint quaternions, root location =
  FLAME translation) and ``<name>_camera`` (child of the rig) replaying the training cameras.
- maps as images ``<name>_<map>`` and a material ``<name>_maps`` whose base colour is the colour
  map (the active paint slot), and ``<name>_bindings`` (see :mod:`addon.rig.bindings`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from . import animation, flame_math
from .animation import DriverVar
from ..files.avatar import AvatarData, HeadData, Tracking, read_avatar
from .bindings import PROP_AVATAR_DIR, PROP_MAP_PREFIX, PROP_ROLE, create_bindings_object
from .material import load_map_image

log = logging.getLogger(__name__)

__all__ = ["ImportResult", "import_avatar", "build_rig", "build_head_mesh", "add_shape_keys",
           "add_skinning", "add_corrective_drivers", "add_joint_offset_drivers", "animate_tracking",
           "build_camera", "build_material", "expression_key_name", "mch_bone_name", "joint_offset_prop"]

#: |weight| at or below which a term of ΔJ = Σ ψ_k D_k is dropped (m per unit; far below float32
#: resolution of the vertex positions).
JOINT_OFFSET_TOL = 1e-12
#: Blender's limit for shape key slider ranges.
SLIDER_LIMIT = 10.0


@dataclass
class ImportResult:
    """What :func:`import_avatar` created."""

    head: bpy.types.Object
    rig: bpy.types.Object
    collection: bpy.types.Collection
    camera: bpy.types.Object | None = None
    bindings: bpy.types.Object | None = None
    material: bpy.types.Material | None = None
    images: dict[str, bpy.types.Image] = field(default_factory=dict)
    num_frames: int = 0
    warnings: list[str] = field(default_factory=list)


def expression_key_name(k: int) -> str:
    """Shape-key name of expression coefficient ``k``: ``Exp000``, ``Exp001``, …"""
    return f"Exp{k:03d}"


def mch_bone_name(joint: str) -> str:
    """Name of the mechanism bone carrying a joint's expression compensation."""
    return f"MCH-{joint}"


def joint_offset_prop(joint: str, axis: int) -> str:
    """Rig custom property holding one component of a joint's ΔJ (m, FLAME axes): ``fate_dJ_<joint>_<x|y|z>``.

    Scalar properties rather than one array, so that each component is its own depsgraph node
    and a driver depends only on the components it reads.
    """
    return f"fate_dJ_{joint}_{'xyz'[axis]}"


def _ensure_object_mode(context) -> None:
    if context.mode != "OBJECT" and context.active_object is not None:
        bpy.ops.object.mode_set(mode="OBJECT")


def build_rig(name: str, head: HeadData, collection: bpy.types.Collection, context) -> bpy.types.Object:
    """Creates the armature (see the module doc).

    Args:
        name: avatar name; the object is ``<name>_rig``.
        head: the head model.
        collection: collection to link into.
        context: ``bpy.context`` (edit mode is needed to create bones).
    Returns:
        the armature object, rotated R_x(+90°).
    """
    arm = bpy.data.armatures.new(f"{name}_rig")
    rig = bpy.data.objects.new(f"{name}_rig", arm)
    collection.objects.link(rig)
    rig.matrix_world = Matrix(flame_math.FLAME_TO_BLENDER_WORLD.tolist())
    rig.show_in_front = True
    J0 = head.rest_joints()
    extent = float(np.ptp(head.v_template, axis=0).max()) or 1.0
    length = 0.1 * extent

    _ensure_object_mode(context)
    view_layer = context.view_layer
    prev_active = view_layer.objects.active
    view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        ebones = arm.edit_bones
        deform = {}
        for j, joint in enumerate(head.joint_names):
            parent = deform[head.joint_names[head.parents[j]]] if head.parents[j] >= 0 else None
            mch = ebones.new(mch_bone_name(joint))
            bone = ebones.new(joint)
            for eb in (mch, bone):
                # Pointing along +Y with roll 0 gives the identity rest rotation.
                eb.head = tuple(J0[j])
                eb.tail = tuple(J0[j] + np.array([0.0, length, 0.0]))
                eb.roll = 0.0
                eb.use_connect = False
            mch.parent = parent
            mch.use_deform = False
            bone.parent = mch
            bone.use_deform = True
            deform[joint] = bone
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
        view_layer.objects.active = prev_active if prev_active is not None else rig

    for pb in rig.pose.bones:
        pb.rotation_mode = "QUATERNION"
    if hasattr(arm, "collections"):  # bone collections (Blender 4.0+)
        deform_coll = arm.collections.new("Joints")
        mch_coll = arm.collections.new("MCH")
        for b in arm.bones:
            (mch_coll if b.name.startswith("MCH-") else deform_coll).assign(b)
        mch_coll.is_visible = False
    for b in arm.bones:
        if b.name.startswith("MCH-"):
            b.hide = True
    rig[PROP_ROLE] = "rig"
    return rig


def build_head_mesh(name: str, head: HeadData, collection: bpy.types.Collection,
                    rig: bpy.types.Object | None = None) -> bpy.types.Object:
    """Creates the head mesh in FLAME coordinates with UVs, parented to ``rig``.

    Args:
        name: object and mesh name.
        head: the head model (faces = mesh + mouth faces, face order kept: bindings index it).
        collection: collection to link into.
        rig: parent (identity local transform); None leaves the object unparented and applies
            the R_x(+90°) to the object itself.
    """
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(head.v_template.astype(np.float64).tolist(), [], head.faces.tolist())
    if len(mesh.polygons) != len(head.faces):
        raise RuntimeError(f"mesh {name}: Blender made {len(mesh.polygons)} faces from {len(head.faces)}")
    uv = mesh.uv_layers.new(name="UVMap")
    uv.data.foreach_set("uv", np.ascontiguousarray(head.uvs[head.faces_uv], np.float32).reshape(-1))
    mouth = np.zeros(len(head.faces), bool)
    if head.num_mouth_faces:
        mouth[len(head.faces) - head.num_mouth_faces:] = True
    attr = mesh.attributes.new("fate_mouth", "BOOLEAN", "FACE")
    attr.data.foreach_set("value", mouth)
    if hasattr(mesh, "shade_smooth"):
        mesh.shade_smooth()
    else:  # pragma: no cover - Blender < 4.1
        mesh.polygons.foreach_set("use_smooth", np.ones(len(mesh.polygons), bool))
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    collection.objects.link(obj)
    if rig is not None:
        obj.parent = rig
    else:
        obj.matrix_world = Matrix(flame_math.FLAME_TO_BLENDER_WORLD.tolist())
    obj[PROP_ROLE] = "head"
    return obj


def add_shape_keys(obj: bpy.types.Object, head: HeadData, expression_range: float = 3.0) -> None:
    """Adds Basis, ``Exp000``… and ``Pose_<joint>_<r><c>`` shape keys (all at value 0).

    Args:
        obj: the head mesh object (vertices = v_template).
        head: the head model.
        expression_range: slider range ±r of the expression keys (≤ 10, Blender's limit).
    """
    v = head.v_template.astype(np.float32)
    V = len(v)
    obj.shape_key_add(name="Basis", from_mix=False)
    rng = float(min(max(expression_range, 1.0), SLIDER_LIMIT))

    def add(name: str, co: np.ndarray, lo: float, hi: float) -> None:
        kb = obj.shape_key_add(name=name, from_mix=False)
        kb.data.foreach_set("co", np.ascontiguousarray(co, np.float32).reshape(-1))
        kb.slider_min, kb.slider_max = lo, hi
        kb.value = 0.0  # Blender 5.0 starts new keys at 1.0

    for k in range(head.num_expressions):
        add(expression_key_name(k), v + head.exprdirs[:, :, k], -rng, rng)
    # (R - I) entries lie in [-2, 2]; driven values are clamped to the slider range.
    for i, name in enumerate(flame_math.corrective_key_names(head.joint_names)):
        add(name, v + head.posedirs[i].reshape(V, 3), -2.0, 2.0)
    obj.data.shape_keys.name = f"{obj.name}_keys"


def add_skinning(obj: bpy.types.Object, rig: bpy.types.Object, head: HeadData) -> None:
    """LBS weights as vertex groups (one per joint) and an Armature modifier after the shape keys."""
    w = head.lbs_weights
    for j, joint in enumerate(head.joint_names):
        vg = obj.vertex_groups.new(name=joint)
        idx = np.nonzero(w[:, j] > 0)[0]
        # Group vertices with equal weights into one call (FLAME has many exact 1.0 weights).
        values, inverse = np.unique(w[idx, j], return_inverse=True)
        for u, value in enumerate(values):
            vg.add(idx[inverse == u].tolist(), float(value), "REPLACE")
    mod = obj.modifiers.new("Armature", "ARMATURE")
    mod.object = rig
    mod.use_vertex_groups = True
    mod.use_bone_envelopes = False
    mod.use_deform_preserve_volume = False


def _quat_vars(rig: bpy.types.Object, joint: str) -> list[DriverVar]:
    path = f'pose.bones["{joint}"].rotation_quaternion'
    return [DriverVar(n, rig, f"{path}[{i}]") for i, n in enumerate("wxyz")]


def add_corrective_drivers(obj: bpy.types.Object, rig: bpy.types.Object, head: HeadData) -> None:
    """Drives each ``Pose_<joint>_<r><c>`` key with (R − I)[r, c] of the joint bone's rotation."""
    key = obj.data.shape_keys
    names = flame_math.corrective_key_names(head.joint_names)
    i = 0
    for joint in head.joint_names[1:]:
        for r in range(3):
            for c in range(3):
                animation.add_driver(key, f'key_blocks["{names[i]}"].value', -1, _quat_vars(rig, joint),
                                     flame_math.corrective_expression(r, c))
                i += 1


def add_joint_offset_drivers(obj: bpy.types.Object, rig: bpy.types.Object, head: HeadData) -> list[str]:
    """Drives ΔJ (rig properties) from the Exp values and the MCH bones' locations from ΔJ.

    ΔJ_j = Σ_k ψ_k D_jk (:func:`addon.rig.flame_math.joint_expression_basis`) goes into the scalar
    properties ``fate_dJ_<joint>_<x|y|z>``; sums longer than a driver expression allows are split
    into partial sums ``fate_dJ_<joint>_<axis>_<p>`` added by a "Sum Values" driver.
    ``MCH-<joint>.location = (I − r_j) ΔJ_j``.

    Returns:
        the joints that got drivers (joints whose regressed position ignores the expression,
        such as FLAME's eyeballs, need none).
    """
    key = obj.data.shape_keys
    D = flame_math.joint_expression_basis(head.J_regressor, head.exprdirs)  # [J, 3, E]

    def evars(used):
        return [DriverVar(f"e{k}", key, f'key_blocks["{expression_key_name(k)}"].value') for k in used]

    driven = []
    for j, joint in enumerate(head.joint_names):
        if np.abs(D[j]).max(initial=0.0) <= JOINT_OFFSET_TOL:
            continue
        for a in range(3):
            prop = joint_offset_prop(joint, a)
            rig[prop] = 0.0
            chunks = flame_math.weighted_sum_chunks(D[j, a], tol=JOINT_OFFSET_TOL)
            if len(chunks) == 1:
                animation.add_driver(rig, f'["{prop}"]', -1, evars(chunks[0][1]), chunks[0][0])
            elif chunks:
                for p, (expr, used) in enumerate(chunks):
                    rig[f"{prop}_{p}"] = 0.0
                    animation.add_driver(rig, f'["{prop}_{p}"]', -1, evars(used), expr)
                animation.add_driver(rig, f'["{prop}"]', -1,
                                     [DriverVar(f"p{p}", rig, f'["{prop}_{p}"]') for p in range(len(chunks))],
                                     driver_type="SUM")
        pb_path = f'pose.bones["{mch_bone_name(joint)}"]'
        variables = _quat_vars(rig, joint) + [DriverVar(n, rig, f'["{joint_offset_prop(joint, i)}"]')
                                              for i, n in enumerate("abc")]
        for a in range(3):
            animation.add_driver(rig, f"{pb_path}.location", a, variables,
                                 flame_math.location_offset_expression(a))
        driven.append(joint)
    return driven


def animate_tracking(obj: bpy.types.Object, rig: bpy.types.Object, head: HeadData, tracking: Tracking,
                     warnings: list[str]) -> None:
    """Keys the tracked sequence on frames 1..T: Exp values, joint quaternions, root location."""
    T = tracking.num_frames
    frames = np.arange(1, T + 1, dtype=np.float32)
    key = obj.data.shape_keys
    E = min(head.num_expressions, tracking.expr.shape[1])
    if tracking.expr.shape[1] > head.num_expressions:
        warnings.append(f"tracking has {tracking.expr.shape[1]} expression coefficients, the head "
                        f"{head.num_expressions}: the extra ones were ignored")
    key_action = f"{obj.name}_tracked_expressions"
    for k in range(E):
        animation.key_channels(key, f'key_blocks["{expression_key_name(k)}"].value', frames,
                               tracking.expr[:, k], action_name=key_action)
    rig_action = f"{rig.name}_tracked_pose"
    for j, joint in enumerate(head.joint_names):
        q = flame_math.make_quaternions_continuous(
            flame_math.axis_angle_to_quaternion(tracking.pose[:, 3 * j:3 * j + 3]))
        animation.key_channels(rig, f'pose.bones["{joint}"].rotation_quaternion', frames, q,
                               group=joint, action_name=rig_action)
    root = head.joint_names[0]
    # The root bone's rest frame is the armature's, so its location is FLAME's translation.
    animation.key_channels(rig, f'pose.bones["{root}"].location', frames, tracking.translation,
                           group=root, action_name=rig_action)


def build_camera(name: str, tracking: Tracking, rig: bpy.types.Object, collection: bpy.types.Collection,
                 scene: bpy.types.Scene) -> bpy.types.Object:
    """A camera (child of the rig) replaying the tracked cameras on frames 1..T.

    Sets the scene's resolution, pixel aspect, frame range and active camera.
    """
    T = tracking.num_frames
    frames = np.arange(1, T + 1, dtype=np.float32)
    cam_data = bpy.data.cameras.new(f"{name}_camera")
    cam = bpy.data.objects.new(f"{name}_camera", cam_data)
    collection.objects.link(cam)
    cam.parent = rig
    cam.rotation_mode = "QUATERNION"
    cam_data.clip_start = 0.01
    cam_data.clip_end = 100.0
    params = [flame_math.blender_camera_intrinsics(tracking.K[t], tracking.width, tracking.height)
              for t in range(T)]
    p0 = params[0]
    cam_data.sensor_fit = p0["sensor_fit"]
    cam_data.sensor_width = p0["sensor_width"]
    for attr in ("lens", "shift_x", "shift_y"):
        values = np.array([p[attr] for p in params])
        setattr(cam_data, attr, float(values[0]))
        if np.ptp(values) > 1e-7 * max(1.0, np.abs(values).max()):
            animation.key_channels(cam_data, attr, frames, values, action_name=f"{name}_camera_intrinsics")
    c2w = flame_math.opencv_w2c_to_blender_c2w(tracking.viewmat)  # [T, 4, 4], FLAME frame
    quats = np.array([Matrix(m[:3, :3].tolist()).to_quaternion()[:] for m in c2w])
    quats = flame_math.make_quaternions_continuous(quats)
    action = f"{name}_camera_tracked"
    animation.key_channels(cam, "location", frames, c2w[:, :3, 3], action_name=action)
    animation.key_channels(cam, "rotation_quaternion", frames, quats, action_name=action)
    render = scene.render
    render.resolution_x, render.resolution_y = p0["resolution_x"], p0["resolution_y"]
    render.resolution_percentage = 100
    render.pixel_aspect_x, render.pixel_aspect_y = p0["pixel_aspect_x"], p0["pixel_aspect_y"]
    scene.frame_start, scene.frame_end = 1, T
    scene.camera = cam
    cam[PROP_ROLE] = "camera"
    return cam


def build_material(name: str, images: dict[str, bpy.types.Image]) -> bpy.types.Material:
    """A material whose base colour is the colour map; every map gets an image node.

    The colour map's node is the active node, i.e. the Texture Paint target.
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
    order = sorted(images, key=lambda n: (n != "color", n))
    active = None
    for i, map_name in enumerate(order):
        node = nodes.new("ShaderNodeTexImage")
        node.name = node.label = f"FATE {map_name}"
        node.image = images[map_name]
        node.interpolation = "Linear"
        node.location = (bsdf.location.x - 400, bsdf.location.y - 300 * i)
        if map_name == "color":
            links.new(node.outputs["Color"], bsdf.inputs["Base Color"])
            active = node
    if active is not None:
        nodes.active = active
    return mat


def import_avatar(folder: str | Path, scene: bpy.types.Scene, context=None, *, name: str | None = None,
                  with_tracking: bool = True, with_maps: bool = True,
                  expression_range: float = 3.0) -> ImportResult:
    """Imports an avatar folder into ``scene`` (see the module doc for what is created).

    Args:
        folder: avatar folder (blender/head.npz required; tracking.npz, blender/bindings.npz and
            maps/ are imported when present, otherwise skipped with a warning).
        scene: scene to add the new collection to (must be ``context.scene``).
        context: ``bpy.context`` (default: the global one).
        name: avatar name (default: the folder name).
        with_tracking: import the tracked sequence and camera.
        with_maps: import the baked maps and material.
        expression_range: minimum ± slider range of the expression keys (widened to fit the
            tracked values, up to Blender's limit of 10).
    Returns:
        an :class:`ImportResult` (warnings say what was skipped).
    Raises:
        AvatarError: the folder or blender/head.npz is missing or malformed.
    """
    context = context or bpy.context
    data: AvatarData = read_avatar(Path(folder), with_tracking=with_tracking, with_maps=with_maps)
    head = data.head
    name = name or data.folder.resolve().name
    warnings = list(data.warnings)

    collection = bpy.data.collections.new(name)
    scene.collection.children.link(collection)
    rig = build_rig(name, head, collection, context)
    obj = build_head_mesh(name, head, collection, rig)
    if data.tracking is not None:
        peak = float(np.abs(data.tracking.expr).max(initial=0.0))
        if peak > SLIDER_LIMIT:
            warnings.append(f"tracked expression values reach {peak:.2f}; Blender's shape key "
                            f"sliders stop at ±{SLIDER_LIMIT:g}")
        expression_range = max(expression_range, math.ceil(peak))
    add_shape_keys(obj, head, expression_range)
    add_skinning(obj, rig, head)
    add_corrective_drivers(obj, rig, head)
    add_joint_offset_drivers(obj, rig, head)
    result = ImportResult(head=obj, rig=rig, collection=collection, warnings=warnings)

    if data.tracking is not None:
        animate_tracking(obj, rig, head, data.tracking, warnings)
        result.camera = build_camera(name, data.tracking, rig, collection, scene)
        result.num_frames = data.tracking.num_frames

    for entry in data.maps:
        img = load_map_image(entry, f"{name}_{entry.name}")
        result.images[entry.name] = img
        obj[PROP_MAP_PREFIX + entry.name] = img
    if result.images:
        if "color" not in result.images:
            warnings.append("maps.json lists no 'color' map: the material has no base colour")
        result.material = build_material(name, result.images)
        obj.data.materials.append(result.material)

    if data.bindings is not None:
        result.bindings = create_bindings_object(name, data.bindings, obj, head.v_template, head.faces,
                                                 collection)
    for o in (obj, rig):
        o[PROP_AVATAR_DIR] = str(data.folder.resolve())
    obj["fate_head_model"] = head.name
    if data.tracking is not None:
        scene.frame_set(scene.frame_start)
    for w in warnings:
        log.warning("import %s: %s", name, w)
    return result
