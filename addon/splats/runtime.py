"""Splat runtime: bindings + evaluated mesh + map images → world-space Gaussians (numpy).

This is the Blender-side twin of the engine's map re-splatting (``engine/maps.py`` +
``engine/gaussians.py: place_gaussians``, FATE §3.1 Eq. 2–4 and §3.3). It imports bpy and
numpy only (never torch, never the ``engine`` package) and does no drawing: the GPU part
lives in :mod:`.drawer`.

For every Gaussian bound to face ``f`` of the head mesh with barycentric ``b`` and UV ``uv``:

- map values at ``uv`` (bilinear, clamp to edge, texel (row r from the bottom, column c) centred
  at uv ``((c + 0.5) / W, (r + 0.5) / H)``; Blender's ``Image.pixels`` is bottom row first):
  colour (encoded sRGB, [0, 1]), opacity ([0, 1]), scale (3 multipliers of the face scale),
  rotation (axis-angle in the face frame, radians), offset (meters along the face normal);
- face frame of the *evaluated* mesh (shape keys, bones, modifiers applied), in mesh (FLAME)
  coordinates: ``e1 = normalize(v1 − v0)``, ``n = normalize((v1 − v0) × (v2 − v0))``,
  ``e2 = n × e1``, ``R_f = [e1 | e2 | n]``, ``k_f`` = mean edge length (engine/mesh_ops.py);
- centre ``μ = Σ bᵢ vᵢ + offset · n``, rotation ``R = R_f · rotmat(axis_angle)``, standard
  deviations ``k_f · scale``, covariance ``Σ = R diag(σ²) Rᵀ``;
- then the head object's ``matrix_world`` ``M``: ``μ_w = M μ``, ``Σ_w = A Σ Aᵀ`` with ``A`` the
  3×3 part of ``M``.

Colour map: the values that matter are the *encoded* (sRGB) values the engine trained on.
A byte image's ``Image.pixels`` already gives them (Blender stores byte buffers encoded and
``pixels`` returns byte / 255 without colour management). A float image's buffer is scene
linear when its colour space is not a data / linear space (Blender converts e.g. an ``sRGB``
EXR to linear on load, and painting writes linear values): those pixels are re-encoded with
the sRGB transfer function. A float colour image tagged ``Non-Color`` (or a linear space) is
read as stored. Scalar maps (opacity, offset) are read from the red channel.

A head object is marked by ``obj["fate_avatar"] = True`` or ``obj["fate_role"] == "head"``
(:mod:`addon.rig.bindings`); its map images are found through ``obj["fate_maps"] = {map name: image
name}`` or, failing that, the image pointers ``obj["fate_map_<name>"]``; its bindings come from
:func:`addon.rig.bindings.get_bindings`.

Cameras are converted to the engine's OpenCV convention (x right, y down, z forward,
``viewmat`` world→camera, intrinsics in pixels, pixel centres at integer + 0.5) by
:func:`camera_from_object` (scene cameras) and :func:`camera_from_view` (3D viewport).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Mapping

import bpy
import numpy as np

from ..errors import FateAddonError

log = logging.getLogger(__name__)

MAP_NAMES = ("color", "opacity", "scale", "rotation", "offset")
"""The attribute maps a head object references in ``obj["fate_maps"]``."""
MAP_CHANNELS = {"color": 3, "opacity": 1, "scale": 3, "rotation": 3, "offset": 1}
"""Channels read from each map's image (scalar maps use the red channel)."""
AVATAR_KEY = "fate_avatar"
"""Object custom property marking a head object the splat engine draws."""
ROLE_KEY, ROLE_HEAD = "fate_role", "head"
"""Alternative marker written by the avatar import (:mod:`addon.rig.bindings`)."""
MAPS_KEY = "fate_maps"
"""Object custom property: map name → ``bpy.data.images`` name."""
MAP_PROP_PREFIX = "fate_map_"
"""Alternative: one custom property per map holding the image (``fate_map_color``, ...)."""

_GL_CV_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])
"""Flips y and z: OpenGL / Blender camera axes ↔ OpenCV camera axes (its own inverse)."""
_EPS = 1e-12


class SplatError(FateAddonError):
    """A head object's bindings, maps or mesh cannot be turned into Gaussians.

    The message names the object / image / property and says what was expected and found.
    """


# ------------------------------------------------------------------------------ data types
@dataclass
class SplatGaussians:
    """World-space Gaussians ready to draw.

    Attributes:
        means: centres, Blender world frame, meters. [N, 3] float32
        covars: covariances, Blender world frame, m². [N, 3, 3] float32
        colors: encoded (sRGB) colours in [0, 1]. [N, 3] float32
        opacities: in [0, 1]. [N] float32
    """

    means: np.ndarray
    covars: np.ndarray
    colors: np.ndarray
    opacities: np.ndarray

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @classmethod
    def empty(cls) -> "SplatGaussians":
        """No Gaussians."""
        return cls(np.zeros((0, 3), np.float32), np.zeros((0, 3, 3), np.float32),
                   np.zeros((0, 3), np.float32), np.zeros((0,), np.float32))

    @classmethod
    def concatenate(cls, parts: list["SplatGaussians"]) -> "SplatGaussians":
        """Joins several sets (e.g. several avatars) into one, in order."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate([getattr(p, a) for p in parts])
                     for a in ("means", "covars", "colors", "opacities")))


@dataclass
class MapSamples:
    """Activated attribute values at each Gaussian's UV (the maps' contract, FORMATS.md).

    Attributes:
        color: encoded (sRGB) colour in [0, 1]. [N, 3]
        opacity: [N] in [0, 1]
        scale: multiples of the face scale k_f. [N, 3]
        rotation: axis-angle in the face frame, radians. [N, 3]
        offset: meters along the unit face normal. [N]
    """

    color: np.ndarray
    opacity: np.ndarray
    scale: np.ndarray
    rotation: np.ndarray
    offset: np.ndarray


@dataclass
class DrawCamera:
    """A camera in the engine's OpenCV convention, as the splat drawer consumes it.

    Attributes:
        viewmat: world→camera, OpenCV axes (x right, y down, z forward), meters. [4, 4] float64
        fx, fy: focal lengths, pixels (orthographic: pixels per meter).
        cx, cy: principal point, pixels from the top-left image corner.
        width, height: image size, pixels.
        near, far: camera-z range kept, meters (Gaussian centres outside are culled).
        ortho: orthographic projection (``px = fx·x + cx``) instead of pinhole (``fx·x/z + cx``).
    """

    viewmat: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    near: float = 0.01
    far: float = 1e10
    ortho: bool = False

    @property
    def K(self) -> np.ndarray:
        """Intrinsics, pixels. [3, 3] float64"""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def key(self) -> tuple:
        """Hashable identity (the drawer re-sorts only when this changes)."""
        return (self.viewmat.astype(np.float64).tobytes(), self.fx, self.fy, self.cx, self.cy,
                self.width, self.height, self.near, self.far, self.ortho)


# ------------------------------------------------------------------------------ colour
def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB transfer function, encoded → linear (IEC 61966-2-1). [...] float32"""
    x = np.asarray(x, dtype=np.float32)
    return np.where(x <= 0.04045, x / 12.92, ((np.maximum(x, 0.04045) + 0.055) / 1.055) ** 2.4
                    ).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """sRGB transfer function, linear → encoded (IEC 61966-2-1). [...] float32"""
    x = np.asarray(x, dtype=np.float32)
    return np.where(x <= 0.0031308, x * 12.92,
                    1.055 * np.maximum(x, 0.0031308) ** (1.0 / 2.4) - 0.055).astype(np.float32)


# ------------------------------------------------------------------------------ geometry
def face_frames(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotation, scale and unit normal of every face (numpy twin of engine/mesh_ops.py).

    Args:
        verts: vertex positions, mesh (FLAME) frame, meters. [V, 3]
        faces: vertex indices, int. [F, 3]
    Returns:
        R: face frames, columns (e1, e2, n), face → mesh coordinates. [F, 3, 3] float32
        k: face scale = mean edge length, meters. [F] float32
        n: unit face normals (right-hand rule). [F, 3] float32
    """
    v = np.asarray(verts, dtype=np.float32)
    tri = v[np.asarray(faces)]  # [F, 3, 3]
    a = tri[:, 1] - tri[:, 0]
    b = tri[:, 2] - tri[:, 0]
    c = tri[:, 2] - tri[:, 1]
    la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
    e1 = a / (la[:, None] + _EPS)
    n = np.cross(a, b)
    n = n / (np.linalg.norm(n, axis=-1, keepdims=True) + _EPS)
    e2 = np.cross(n, e1)
    R = np.stack([e1, e2, n], axis=-1)
    k = (la + lb + lc) / 3.0
    return R.astype(np.float32), k.astype(np.float32), n.astype(np.float32)


def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """Rodrigues' formula: rotation vectors → rotation matrices.

    ``R = I + A [w]× + B [w]×²`` with ``A = sin θ / θ``, ``B = (1 − cos θ) / θ²`` (series near 0).

    Args:
        axis_angle: angle · unit axis, radians. [N, 3]
    Returns:
        [N, 3, 3] float32
    """
    w = np.asarray(axis_angle, dtype=np.float64)
    t2 = (w * w).sum(-1)
    small = t2 < 1e-8
    t = np.sqrt(np.where(small, 1.0, t2))
    half = 0.5 * t
    a = np.where(small, 1.0 - t2 / 6.0, np.sin(t) / t)
    b = np.where(small, 0.5 - t2 / 24.0, 0.5 * (np.sin(half) / half) ** 2)
    x, y, z = w[:, 0], w[:, 1], w[:, 2]
    zero = np.zeros_like(x)
    K = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(-1, 3, 3)
    R = np.eye(3)[None] + a[:, None, None] * K + b[:, None, None] * (K @ K)
    return R.astype(np.float32)


def place_gaussians(verts: np.ndarray, faces: np.ndarray, face_idx: np.ndarray, bary: np.ndarray,
                    samples: MapSamples, matrix_world: np.ndarray | None = None) -> SplatGaussians:
    """Map values + posed mesh → world Gaussians (FATE Eq. 2–4; engine.gaussians.place_gaussians).

    Args:
        verts: evaluated vertices, mesh (FLAME) frame, meters. [V, 3]
        faces: evaluated faces (mesh + mouth faces, the bindings' face order), int. [F, 3]
        face_idx: bound face of each Gaussian, int32. [N]
        bary: barycentric coordinates, rows sum to 1. [N, 3]
        samples: map values at the Gaussians' UVs.
        matrix_world: object → Blender world. [4, 4]; None = identity.
    Returns:
        SplatGaussians in the Blender world frame.
    """
    verts = np.asarray(verts, dtype=np.float32)
    faces = np.asarray(faces)
    face_idx = np.asarray(face_idx)
    R_f, k_f, n_f = face_frames(verts, faces)
    R_f, k_f, n_f = R_f[face_idx], k_f[face_idx], n_f[face_idx]
    tri = verts[faces[face_idx]]  # [N, 3, 3]
    means = (np.asarray(bary, np.float32)[..., None] * tri).sum(1) + samples.offset[:, None] * n_f
    rot = R_f @ axis_angle_to_matrix(samples.rotation)
    sig = samples.scale * k_f[:, None]
    rs = rot * sig[:, None, :]
    covars = rs @ rs.transpose(0, 2, 1)
    if matrix_world is not None:
        M = np.asarray(matrix_world, dtype=np.float64)
        A = M[:3, :3].astype(np.float32)
        means = means @ A.T + M[:3, 3].astype(np.float32)
        covars = A[None] @ covars @ A.T[None]
    return SplatGaussians(np.ascontiguousarray(means, dtype=np.float32),
                          np.ascontiguousarray(covars, dtype=np.float32),
                          np.ascontiguousarray(samples.color, dtype=np.float32),
                          np.ascontiguousarray(samples.opacity, dtype=np.float32))


# ------------------------------------------------------------------------------ images
def sample_bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear, clamp-to-edge lookup of a bottom-row-first image at UV coordinates.

    Texel (row r from the bottom, column c) is centred at uv ((c + 0.5) / W, (r + 0.5) / H),
    so a UV at a texel centre returns that texel exactly.

    Args:
        image: [H, W, C] with row 0 = bottom (Blender ``Image.pixels`` order).
        uv: OBJ convention (origin bottom-left, v up). [N, 2]
    Returns:
        [N, C] float32
    """
    H, W = image.shape[:2]
    uv = np.asarray(uv, dtype=np.float64)
    x = uv[:, 0] * W - 0.5
    y = uv[:, 1] * H - 0.5
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = (x - x0)[:, None]
    fy = (y - y0)[:, None]
    x0i = x0.astype(np.int64)
    y0i = y0.astype(np.int64)
    c0 = np.clip(x0i, 0, W - 1)
    c1 = np.clip(x0i + 1, 0, W - 1)
    r0 = np.clip(y0i, 0, H - 1)
    r1 = np.clip(y0i + 1, 0, H - 1)
    img = image.astype(np.float64, copy=False)
    top = img[r0, c0] * (1.0 - fx) + img[r0, c1] * fx
    bot = img[r1, c0] * (1.0 - fx) + img[r1, c1] * fx
    return (top * (1.0 - fy) + bot * fy).astype(np.float32)


def _is_linear_buffer(image: bpy.types.Image) -> bool:
    """Whether ``image.pixels`` holds scene-linear values of a colour-managed (encoded) image."""
    if not image.is_float:
        return False
    cs = image.colorspace_settings
    if getattr(cs, "is_data", False):
        return False
    name = cs.name
    linear_or_data = name in ("Non-Color", "Raw", "Working Space") or name.startswith("Linear")
    return not linear_or_data


def image_pixels(image: bpy.types.Image, encoded: bool = False) -> np.ndarray:
    """All pixels of a Blender image as an array, bottom row first.

    Args:
        image: the image (byte or float buffer).
        encoded: the image holds colour: return sRGB-encoded values (see the module docstring:
            float buffers of colour-managed images are linear and get re-encoded; alpha is
            left as is).
    Returns:
        [H, W, 4] float32, row 0 = bottom.
    Raises:
        SplatError: the image has no pixel data (missing file, zero size).
    """
    w, h = int(image.size[0]), int(image.size[1])
    ch = int(image.channels)
    if w <= 0 or h <= 0 or ch <= 0:
        raise SplatError(f"image '{image.name}' ({image.filepath or 'generated'}) has no pixels "
                         f"(size {w}x{h}, {ch} channels): is its file missing?")
    buf = np.empty(w * h * ch, dtype=np.float32)
    image.pixels.foreach_get(buf)
    px = buf.reshape(h, w, ch)
    if ch < 4:
        out = np.ones((h, w, 4), np.float32)
        if ch == 1:
            out[..., :3] = px[..., :1]
        else:
            out[..., :ch] = px
        px = out
    if encoded and _is_linear_buffer(image):
        px = px.copy()
        px[..., :3] = linear_to_srgb(px[..., :3])
    return px


def map_images(obj: bpy.types.Object) -> dict[str, bpy.types.Image]:
    """The map images a head object references.

    Looks at ``obj["fate_maps"]`` (map name → image name) first, then at the image pointers
    ``obj["fate_map_<name>"]``.

    Args:
        obj: the head object (original or evaluated).
    Returns:
        map name → image, for all of :data:`MAP_NAMES`.
    Raises:
        SplatError: a map or its image is missing.
    """
    src = getattr(obj, "original", None) or obj
    names = src.get(MAPS_KEY)
    out = {}
    for m in MAP_NAMES:
        img = None
        if names is not None and names.get(m) is not None:
            img = bpy.data.images.get(str(names.get(m)))
            if img is None:
                raise SplatError(f"object '{src.name}': '{MAPS_KEY}[\"{m}\"]' names image "
                                 f"'{names.get(m)}', which is not in bpy.data.images")
        else:
            ref = src.get(MAP_PROP_PREFIX + m)
            if isinstance(ref, bpy.types.Image):
                img = ref
        if img is None:
            raise SplatError(f"object '{src.name}' has no '{m}' map: expected '{MAPS_KEY}' (map "
                             f"name → image name for {list(MAP_NAMES)}) or an image in "
                             f"'{MAP_PROP_PREFIX}{m}'; run Sync Maps / re-import the avatar")
        out[m] = img
    return out


def sample_maps(images: Mapping[str, bpy.types.Image], uv: np.ndarray) -> MapSamples:
    """Reads the current pixels of the map images and samples them at each Gaussian's UV.

    Args:
        images: map name → image, for all of :data:`MAP_NAMES`.
        uv: Gaussian UVs, OBJ convention. [N, 2]
    Returns:
        MapSamples with N entries.
    """
    vals = {}
    for m in MAP_NAMES:
        px = image_pixels(images[m], encoded=(m == "color"))
        s = sample_bilinear(px[..., :MAP_CHANNELS[m]], uv)
        vals[m] = s[:, 0] if MAP_CHANNELS[m] == 1 else s
    return MapSamples(**vals)


# ------------------------------------------------------------------------------ meshes
def mesh_arrays(mesh: bpy.types.Mesh, faces: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Vertex positions and triangle indices of a (possibly evaluated) mesh.

    Args:
        mesh: the mesh; every polygon must be a triangle (the head mesh is).
        faces: also read the faces (skip when the topology is cached).
    Returns:
        verts [V, 3] float32 (mesh frame, meters), faces [F, 3] int32 (polygon order) or None.
    Raises:
        SplatError: a polygon is not a triangle.
    """
    nv = len(mesh.vertices)
    verts = np.empty(nv * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", verts)
    if not faces:
        return verts.reshape(nv, 3), None
    nf = len(mesh.polygons)
    if len(mesh.loops) != 3 * nf:
        raise SplatError(f"mesh '{mesh.name}': expected triangles only ({nf} polygons → "
                         f"{3 * nf} corners), found {len(mesh.loops)} corners (did a modifier "
                         f"change the topology?)")
    tris = np.empty(nf * 3, dtype=np.int32)
    mesh.polygons.foreach_get("vertices", tris)
    return verts.reshape(nv, 3), tris.reshape(nf, 3)


def _default_bindings(obj: bpy.types.Object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The head object's bindings via :func:`addon.rig.bindings.get_bindings`.

    Raises:
        SplatError: the object has no bindings.
    """
    from ..rig.bindings import get_bindings

    try:
        return get_bindings(obj)
    except KeyError as exc:
        detail = exc.args[0] if exc.args else exc
        raise SplatError(f"object '{obj.name}': no Gaussian bindings ({detail})") from exc


BindingsProvider = Callable[[bpy.types.Object], "tuple[np.ndarray, np.ndarray, np.ndarray]"]
get_bindings_for: BindingsProvider = _default_bindings
"""Returns (face_idx int32 [N], bary float32 [N, 3], uv float32 [N, 2]) of a head object."""


# ------------------------------------------------------------------------------ runtime
_maps_generation = 0
"""Bumped by :func:`tag_maps_changed`; cached map samples older than this are re-read."""


def maps_generation() -> int:
    """Current map generation (see :func:`tag_maps_changed`)."""
    return _maps_generation


def tag_maps_changed(image_name: str | None = None) -> None:
    """Marks map samples stale so the next draw re-reads the images' current pixels.

    Args:
        image_name: the image that changed; None = all maps (e.g. after Sync Maps).
    """
    global _maps_generation
    _maps_generation += 1
    log.debug("maps changed (%s): generation %d", image_name or "all", _maps_generation)


@dataclass
class AvatarRuntime:
    """Per head object cache: bindings, faces, and map values at the Gaussians' UVs.

    Attributes:
        name: the original object's name.
        face_idx: int32 [N]; bary: [N, 3]; uv: [N, 2] (OBJ convention)
        samples: map values at ``uv`` (None until first sampled).
        generation: :func:`maps_generation` when ``samples`` were read.
        image_names: names of the images ``samples`` were read from (map name → image name).
    """

    name: str
    face_idx: np.ndarray
    bary: np.ndarray
    uv: np.ndarray
    samples: MapSamples | None = None
    generation: int = -1
    image_names: dict = field(default_factory=dict)

    @classmethod
    def from_object(cls, obj: bpy.types.Object) -> "AvatarRuntime":
        """Loads the bindings of a head object.

        Raises:
            SplatError: the bindings have inconsistent shapes.
        """
        src = getattr(obj, "original", None) or obj
        face_idx, bary, uv = get_bindings_for(src)
        face_idx = np.ascontiguousarray(face_idx, dtype=np.int32)
        bary = np.ascontiguousarray(bary, dtype=np.float32)
        uv = np.ascontiguousarray(uv, dtype=np.float32)
        n = face_idx.shape[0]
        if face_idx.ndim != 1 or bary.shape != (n, 3) or uv.shape != (n, 2):
            raise SplatError(f"object '{src.name}': bindings must be face_idx [N], bary [N, 3], "
                             f"uv [N, 2]; found {face_idx.shape}, {bary.shape}, {uv.shape}")
        return cls(src.name, face_idx, bary, uv)

    def map_samples(self, obj: bpy.types.Object, resample: bool = False) -> MapSamples:
        """Map values at the Gaussians' UVs, re-read when stale.

        Args:
            obj: the head object (original or evaluated).
            resample: re-read the images even if the cache is current (final renders do).
        """
        images = map_images(obj)
        names = {m: img.name for m, img in images.items()}
        if (resample or self.samples is None or self.generation != _maps_generation
                or names != self.image_names):
            self.samples = sample_maps(images, self.uv)
            self.generation = _maps_generation
            self.image_names = names
        return self.samples

    def gaussians(self, obj_eval: bpy.types.Object, resample: bool = False) -> SplatGaussians:
        """World Gaussians on the evaluated mesh of the head object.

        Args:
            obj_eval: the evaluated head object (``obj.evaluated_get(depsgraph)``).
            resample: re-read the map images even if the cache is current.
        Raises:
            SplatError: the evaluated mesh does not have the faces the bindings refer to.
        """
        verts, faces = mesh_arrays(obj_eval.data)
        if len(self.face_idx) and int(self.face_idx.max()) >= faces.shape[0]:
            raise SplatError(f"object '{self.name}': bindings refer to face "
                             f"{int(self.face_idx.max())}, the evaluated mesh has "
                             f"{faces.shape[0]} faces (did a modifier change the topology?)")
        samples = self.map_samples(obj_eval, resample=resample)
        M = np.array(obj_eval.matrix_world, dtype=np.float64)
        return place_gaussians(verts, faces, self.face_idx, self.bary, samples, M)


_RUNTIMES: dict[str, AvatarRuntime] = {}


def avatar_runtime(obj: bpy.types.Object) -> AvatarRuntime:
    """The cached runtime of a head object (created on first use)."""
    src = getattr(obj, "original", None) or obj
    rt = _RUNTIMES.get(src.name)
    if rt is None:
        rt = AvatarRuntime.from_object(src)
        _RUNTIMES[src.name] = rt
    return rt


def clear_caches() -> None:
    """Forgets all cached bindings and map samples (e.g. after re-importing an avatar)."""
    _RUNTIMES.clear()
    tag_maps_changed()


def is_avatar(obj: bpy.types.Object) -> bool:
    """Whether the splat engine draws this object."""
    src = getattr(obj, "original", None) or obj
    return obj.type == 'MESH' and (bool(src.get(AVATAR_KEY, False))
                                   or src.get(ROLE_KEY) == ROLE_HEAD)


def scene_gaussians(depsgraph: bpy.types.Depsgraph, resample: bool = False) -> SplatGaussians:
    """Gaussians of every visible head object of a depsgraph, concatenated.

    Args:
        depsgraph: an evaluated depsgraph (viewport or render); its visibility rules apply.
        resample: re-read all map images.
    Returns:
        SplatGaussians in the Blender world frame.
    """
    parts = []
    for ob in depsgraph.objects:
        if is_avatar(ob):
            parts.append(avatar_runtime(ob).gaussians(ob, resample=resample))
    return SplatGaussians.concatenate(parts)


# ------------------------------------------------------------------------------ cameras
def intrinsics_from_projection(P: np.ndarray, width: int, height: int
                               ) -> tuple[float, float, float, float, bool, float, float]:
    """OpenGL projection matrix → OpenCV intrinsics and clip range.

    Derivation (camera looks down −z_gl; ``x_cv = x_gl``, ``y_cv = −y_gl``, ``z_cv = −z_gl``):
    perspective ``px = (ndc_x + 1) W/2`` gives ``fx = P00 W/2``, ``cx = (1 − P02) W/2``,
    ``fy = P11 H/2``, ``cy = (1 + P12) H/2`` (rows counted from the top); orthographic
    ``fx = P00 W/2``, ``cx = (1 + P03) W/2``, ``fy = P11 H/2``, ``cy = (1 − P13) H/2``.

    Args:
        P: projection (window) matrix, OpenGL convention. [4, 4]
        width, height: image size, pixels.
    Returns:
        (fx, fy, cx, cy, ortho, near, far); near/far are camera-z distances, meters.
    """
    P = np.asarray(P, dtype=np.float64)
    ortho = abs(P[3, 3] - 1.0) < 1e-9 and abs(P[3, 2]) < 1e-9
    fx = P[0, 0] * width / 2.0
    fy = P[1, 1] * height / 2.0
    if ortho:
        cx = (1.0 + P[0, 3]) * width / 2.0
        cy = (1.0 - P[1, 3]) * height / 2.0
        near = (P[2, 3] + 1.0) / P[2, 2]
        far = (P[2, 3] - 1.0) / P[2, 2]
    else:
        cx = (1.0 - P[0, 2]) * width / 2.0
        cy = (1.0 + P[1, 2]) * height / 2.0
        near = P[2, 3] / (P[2, 2] - 1.0)
        far = P[2, 3] / (P[2, 2] + 1.0)
    return float(fx), float(fy), float(cx), float(cy), bool(ortho), float(near), float(far)


def blender_c2w_to_opencv_w2c(c2w: np.ndarray) -> np.ndarray:
    """A Blender camera's ``matrix_world`` (looks down −Z, +Y up) → OpenCV ``viewmat``.

    Mirrors ``engine.cameras.opencv_w2c_to_blender_c2w`` (its inverse). Scale in ``c2w`` is
    removed (Blender ignores camera scale for the view).

    Args:
        c2w: camera→world. [4, 4]
    Returns:
        world→camera, OpenCV axes. [4, 4] float64
    """
    c2w = np.asarray(c2w, dtype=np.float64).copy()
    c2w[:3, :3] /= np.linalg.norm(c2w[:3, :3], axis=0, keepdims=True)
    return _GL_CV_FLIP @ np.linalg.inv(c2w)


def render_size(render: bpy.types.RenderSettings) -> tuple[int, int]:
    """Output size in pixels (resolution × percentage)."""
    s = render.resolution_percentage / 100.0
    return max(1, int(render.resolution_x * s)), max(1, int(render.resolution_y * s))


def camera_from_object(cam_obj: bpy.types.Object, depsgraph: bpy.types.Depsgraph,
                       width: int, height: int, pixel_aspect: tuple[float, float] = (1.0, 1.0)
                       ) -> DrawCamera:
    """A scene camera (lens, sensor fit, shift, clip range, pixel aspect) → :class:`DrawCamera`.

    Args:
        cam_obj: the (evaluated) camera object.
        depsgraph: the depsgraph it was evaluated in.
        width, height: output size, pixels.
        pixel_aspect: (render.pixel_aspect_x, render.pixel_aspect_y).
    Raises:
        SplatError: a panoramic camera (the drawer projects pinhole or orthographic only).
    """
    if cam_obj.type != 'CAMERA':
        raise SplatError(f"object '{cam_obj.name}' is a {cam_obj.type}, expected a CAMERA")
    if cam_obj.data.type == 'PANO':
        raise SplatError(f"camera '{cam_obj.name}': panoramic cameras are not supported by the "
                         f"splat engine (use perspective or orthographic)")
    P = np.array(cam_obj.calc_matrix_camera(depsgraph, x=width, y=height,
                                            scale_x=pixel_aspect[0], scale_y=pixel_aspect[1]))
    fx, fy, cx, cy, ortho, _, _ = intrinsics_from_projection(P, width, height)
    viewmat = blender_c2w_to_opencv_w2c(np.array(cam_obj.matrix_world))
    return DrawCamera(viewmat, fx, fy, cx, cy, int(width), int(height),
                      near=float(cam_obj.data.clip_start), far=float(cam_obj.data.clip_end),
                      ortho=ortho)


def camera_from_view(region_data: bpy.types.RegionView3D, width: int, height: int) -> DrawCamera:
    """The 3D viewport's view (``RegionView3D``) → :class:`DrawCamera` of the region's size.

    Args:
        region_data: ``context.region_data``.
        width, height: region size, pixels.
    """
    P = np.array(region_data.window_matrix)
    fx, fy, cx, cy, ortho, near, far = intrinsics_from_projection(P, width, height)
    viewmat = _GL_CV_FLIP @ np.array(region_data.view_matrix, dtype=np.float64)
    return DrawCamera(viewmat, fx, fy, cx, cy, int(width), int(height), near=near, far=far,
                      ortho=ortho)


def world_background(scene: bpy.types.Scene) -> np.ndarray:
    """The world colour behind the splats, scene linear. [3] float32 (black without a world).

    Uses the world's Background node colour when its node tree has one, else ``world.color``.
    """
    world = scene.world
    if world is None:
        return np.zeros(3, np.float32)
    tree = getattr(world, "node_tree", None)
    if tree is not None:
        for node in tree.nodes:
            if node.type == 'BACKGROUND':
                col = node.inputs["Color"].default_value
                strength = node.inputs["Strength"].default_value
                return np.array(col[:3], np.float32) * np.float32(strength)
    return np.array(world.color[:3], np.float32)
