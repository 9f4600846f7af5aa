"""The rest of the scene in FATE Splats: visible meshes with simple solid shading, depth-tested
against the splats.

Every object of the depsgraph that has surface geometry (mesh, curve, surface, metaball, text) and
is not a FATE head, and whose ray visibility includes the camera, is drawn as triangles:

- colour: per material slot, the Principled BSDF's Base Color — its image when an Image Texture
  node feeds it (looked up at the mesh's active UV map, Blender's own texture upload, so sRGB
  images come out scene linear), else its value; materials without nodes use ``diffuse_color``;
  no material: grey 0.8. Scene linear.
- shading: a headlight, ``colour · (AMBIENT + (1 − AMBIENT) · |n · v|)`` with n the corner
  normal and v the direction to the camera (no shadows, no other lights).

:func:`scene_meshes` reads the data (numpy, world frame); :class:`MeshLayer` draws it with the
drawer's OpenCV camera into a colour target, a camera-z target and a depth buffer that the splat
pass then tests against. Geometry is rebuilt per final-render frame and per viewport update.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import bpy
import gpu
import numpy as np
from mathutils import Matrix

from .runtime import is_avatar

log = logging.getLogger(__name__)

__all__ = ["AMBIENT", "MeshPart", "SceneMesh", "material_colour", "scene_meshes", "MeshLayer",
           "GLSL_PROJECT"]

AMBIENT = 0.3
"""Share of the base colour a surface keeps when it faces away from the headlight."""
_SURFACE_TYPES = {"MESH", "CURVE", "SURFACE", "META", "FONT"}
_GREY = (0.8, 0.8, 0.8, 1.0)

GLSL_PROJECT = """
/* OpenCV camera point (x right, y down, z forward, m) -> clip coordinates; shared by the mesh and
   splat passes so their depths compare. intr = (fx, fy, cx, cy) px; frame = (W, H, near, far). */
vec4 project_cv(vec3 p)
{
  float W = frame.x, H = frame.y, n = frame.z, f = frame.w;
  if (ortho > 0.5) {
    return vec4(2.0 * (intr.x * p.x + intr.z) / W - 1.0, 1.0 - 2.0 * (intr.y * p.y + intr.w) / H,
                2.0 * (p.z - n) / (f - n) - 1.0, 1.0);
  }
  return vec4(2.0 * (intr.x * p.x + intr.z * p.z) / W - p.z, p.z - 2.0 * (intr.y * p.y + intr.w * p.z) / H,
              (f + n) / (f - n) * p.z - 2.0 * f * n / (f - n), p.z);
}
"""


@dataclass
class MeshPart:
    """Triangles sharing one material: ``first`` … ``first + count`` (corners) of the mesh."""

    first: int
    count: int
    colour: tuple
    image: "bpy.types.Image | None" = None


@dataclass
class SceneMesh:
    """One object's triangles, flattened per corner.

    Attributes:
        name: object name.
        positions: Blender world frame, m. [3T, 3] float32
        normals: corner normals, world frame, unit. [3T, 3] float32
        uvs: active UV map, origin bottom-left (zeros without one). [3T, 2] float32
        parts: material groups, in corner order.
    """

    name: str
    positions: np.ndarray
    normals: np.ndarray
    uvs: np.ndarray
    parts: list = field(default_factory=list)


def material_colour(mat: "bpy.types.Material | None") -> tuple[tuple, "bpy.types.Image | None"]:
    """A material's base colour (scene linear RGBA) and the image feeding it, if any."""
    if mat is None:
        return _GREY, None
    tree = mat.node_tree  # Blender 5 materials always use nodes; 4.x: None without nodes
    if tree is not None:
        for node in tree.nodes:
            if node.type != "BSDF_PRINCIPLED":
                continue
            sock = node.inputs["Base Color"]
            if sock.is_linked:
                src = sock.links[0].from_node
                if src.type == "TEX_IMAGE" and src.image is not None:
                    return (1.0, 1.0, 1.0, 1.0), src.image
            return tuple(sock.default_value), None
    return tuple(mat.diffuse_color), None


def _triangles(obj: bpy.types.Object, mesh: bpy.types.Mesh) -> SceneMesh | None:
    mesh.calc_loop_triangles()
    nt = len(mesh.loop_triangles)
    if nt == 0:
        return None
    loops = np.empty(nt * 3, np.int32)
    mesh.loop_triangles.foreach_get("loops", loops)
    mat_idx = np.empty(nt, np.int32)
    mesh.loop_triangles.foreach_get("material_index", mat_idx)
    corner_vert = np.empty(len(mesh.loops), np.int32)
    mesh.loops.foreach_get("vertex_index", corner_vert)
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)
    normals = np.empty(len(mesh.loops) * 3, np.float32)
    if hasattr(mesh, "corner_normals"):
        mesh.corner_normals.foreach_get("vector", normals)
    else:  # pragma: no cover - Blender < 4.1
        mesh.calc_normals_split()
        mesh.loops.foreach_get("normal", normals)
    normals = normals.reshape(-1, 3)
    uvs = np.zeros((len(mesh.loops), 2), np.float32)
    uv_layer = mesh.uv_layers.active
    if uv_layer is not None and len(uv_layer.data) == len(mesh.loops):
        uv_layer.data.foreach_get("uv", uvs.reshape(-1))
    order = np.argsort(mat_idx, kind="stable")
    corners = loops.reshape(nt, 3)[order].reshape(-1)
    M = np.array(obj.matrix_world, dtype=np.float64)
    A = M[:3, :3]
    pos = co[corner_vert[corners]] @ A.T.astype(np.float32) + M[:3, 3].astype(np.float32)
    nrm = normals[corners] @ np.linalg.inv(A).astype(np.float32)  # (A⁻¹)ᵀ n, as row vectors
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    out = SceneMesh(obj.name, np.ascontiguousarray(pos, np.float32), np.ascontiguousarray(nrm, np.float32),
                    np.ascontiguousarray(uvs[corners]))
    sorted_idx = mat_idx[order]
    slots = obj.material_slots
    for m in np.unique(sorted_idx):
        tris = np.flatnonzero(sorted_idx == m)
        mat = slots[int(m)].material if 0 <= int(m) < len(slots) else None
        colour, image = material_colour(mat)
        out.parts.append(MeshPart(int(tris[0]) * 3, len(tris) * 3, colour, image))
    return out


def scene_meshes(depsgraph: bpy.types.Depsgraph) -> list[SceneMesh]:
    """The visible surfaces of a depsgraph other than FATE heads (module doc), world frame."""
    out = []
    for ob in depsgraph.objects:
        if ob.type not in _SURFACE_TYPES or is_avatar(ob) or not getattr(ob, "visible_camera", True):
            continue
        try:
            mesh = ob.to_mesh()
        except RuntimeError:
            continue
        try:
            if mesh is not None:
                part = _triangles(ob, mesh)
                if part is not None:
                    out.append(part)
        finally:
            ob.to_mesh_clear()
    return out


# ------------------------------------------------------------------------------ GPU
_VERT_SRC = """
void main()
{
  vec3 p = (viewmat * vec4(pos, 1.0)).xyz;
  v_ncam = mat3(viewmat) * nor;
  v_pcam = p;
  v_uv = uv;
  gl_Position = project_cv(p);
}
"""

_FRAG_SRC = """
void main()
{
  vec3 base = colour.rgb;
  if (flags.y > 0.5) {
    base *= texture(image, v_uv).rgb;
  }
  float facing = abs(dot(normalize(v_ncam), normalize(v_pcam)));
  out_color = vec4(base * (AMBIENT + (1.0 - AMBIENT) * facing), 1.0);
  out_z = vec4(v_pcam.z, 0.0, 0.0, 1.0);
}
"""

_SHADER: dict = {}


def _mesh_shader() -> gpu.types.GPUShader:
    sh = _SHADER.get("mesh")
    if sh is None:
        info = gpu.types.GPUShaderCreateInfo()
        info.push_constant("MAT4", "viewmat")
        info.push_constant("VEC4", "intr")
        info.push_constant("VEC4", "frame")
        info.push_constant("VEC4", "colour")
        info.push_constant("VEC4", "flags")  # x: orthographic, y: use the image (128 bytes in all)
        info.define("ortho", "flags.x")
        info.sampler(0, "FLOAT_2D", "image")
        info.define("AMBIENT", repr(float(AMBIENT)))
        info.vertex_in(0, "VEC3", "pos")
        info.vertex_in(1, "VEC3", "nor")
        info.vertex_in(2, "VEC2", "uv")
        iface = gpu.types.GPUStageInterfaceInfo("fate_mesh_iface")
        iface.smooth("VEC3", "v_ncam")
        iface.smooth("VEC3", "v_pcam")
        iface.smooth("VEC2", "v_uv")
        info.vertex_out(iface)
        info.fragment_out(0, "VEC4", "out_color")
        info.fragment_out(1, "VEC4", "out_z")
        info.vertex_source(GLSL_PROJECT + _VERT_SRC)
        info.fragment_source(_FRAG_SRC)
        sh = _SHADER["mesh"] = gpu.shader.create_from_info(info)
    return sh


def free_shaders() -> None:
    """Drops the cached shader (unregister)."""
    _SHADER.clear()


class MeshLayer:
    """GPU batches of :class:`SceneMesh` objects; draws into a colour, camera-z and depth target."""

    def __init__(self, meshes: list[SceneMesh]) -> None:
        self.meshes = meshes
        self._batches = []
        self._blank = gpu.types.GPUTexture((1, 1), format="RGBA16F")  # bound when no image
        fmt = gpu.types.GPUVertFormat()
        fmt.attr_add(id="pos", comp_type="F32", len=3, fetch_mode="FLOAT")
        fmt.attr_add(id="nor", comp_type="F32", len=3, fetch_mode="FLOAT")
        fmt.attr_add(id="uv", comp_type="F32", len=2, fetch_mode="FLOAT")
        for m in meshes:
            for part in m.parts:
                sl = slice(part.first, part.first + part.count)
                vbo = gpu.types.GPUVertBuf(fmt, part.count)
                vbo.attr_fill("pos", np.ascontiguousarray(m.positions[sl]))
                vbo.attr_fill("nor", np.ascontiguousarray(m.normals[sl]))
                vbo.attr_fill("uv", np.ascontiguousarray(m.uvs[sl]))
                tex = None
                if part.image is not None:
                    try:
                        tex = gpu.texture.from_image(part.image)
                    except Exception:  # noqa: BLE001 - an unreadable image draws its base colour
                        log.warning("FATE Splats: image %s could not be uploaded", part.image.name)
                self._batches.append((gpu.types.GPUBatch(type="TRIS", buf=vbo), part.colour, tex))

    def __len__(self) -> int:
        return len(self._batches)

    def draw(self, cam) -> None:
        """Draws every batch with depth test and write (the bound framebuffer has a depth slot)."""
        if not self._batches:
            return
        sh = _mesh_shader()
        gpu.state.depth_test_set("LESS")
        gpu.state.depth_mask_set(True)
        gpu.state.face_culling_set("NONE")
        gpu.state.blend_set("NONE")
        sh.bind()
        sh.uniform_float("viewmat", Matrix(cam.viewmat.tolist()))
        sh.uniform_float("intr", (cam.fx, cam.fy, cam.cx, cam.cy))
        sh.uniform_float("frame", (float(cam.width), float(cam.height), cam.near, cam.far))
        for batch, colour, tex in self._batches:
            sh.uniform_float("colour", tuple(colour[:4]))
            sh.uniform_float("flags", (1.0 if cam.ortho else 0.0, 1.0 if tex is not None else 0.0, 0.0, 0.0))
            sh.uniform_sampler("image", tex if tex is not None else self._blank)
            batch.draw(sh)
        gpu.state.depth_mask_set(False)
        gpu.state.depth_test_set("NONE")
