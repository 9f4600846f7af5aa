"""The head mesh of an imported avatar: FLAME coordinates, UVs, mouth faces and shape keys.

Vertices = ``v_template`` (meters, FLAME canonical); faces = mesh + mouth faces in file order
(the bindings index them; the mouth faces have the face attribute ``fate_mouth``); UV layer
``UVMap``; shape keys ``Basis``, one per expression (exprdirs incl. the learnt ΔE; named by the
head's ``expression_names``, e.g. the demo head's ``jaw_open``, else ``Exp000``…) and
``Pose_<joint>_<r><c>`` (posedirs incl. ΔP, driven by the bone rotations, :mod:`.drivers`).
"""

from __future__ import annotations

import bpy
import numpy as np
from mathutils import Matrix

from ..files.avatar import HeadData
from . import flame_math
from .bindings import ATTR_MOUTH, PROP_ROLE, ROLE_HEAD

__all__ = ["SLIDER_LIMIT", "build_head_mesh", "add_shape_keys", "expression_key_name"]

#: Blender's limit for shape key slider ranges.
SLIDER_LIMIT = 10.0


def expression_key_name(head: HeadData, k: int) -> str:
    """Shape-key name of expression coefficient ``k`` (``head.expression_names[k]``)."""
    return head.expression_names[k]


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
    attr = mesh.attributes.new(ATTR_MOUTH, "BOOLEAN", "FACE")
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
    obj[PROP_ROLE] = ROLE_HEAD
    return obj


def add_shape_keys(obj: bpy.types.Object, head: HeadData, expression_range: float = 3.0) -> None:
    """Adds Basis, the expression keys and ``Pose_<joint>_<r><c>`` shape keys (all at value 0).

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
        add(expression_key_name(head, k), v + head.exprdirs[:, :, k], -rng, rng)
    # (R - I) entries lie in [-2, 2]; driven values are clamped to the slider range.
    for i, name in enumerate(flame_math.corrective_key_names(head.joint_names)):
        add(name, v + head.posedirs[i].reshape(V, 3), -2.0, 2.0)
    obj.data.shape_keys.name = f"{obj.name}_keys"
