"""Splat runtime: bindings + evaluated mesh + map images → world-space Gaussians (numpy).

This is the Blender-side twin of the engine's map re-splatting (``engine/maps.py`` +
``engine/gaussians.py: place_gaussians``, FATE §3.1 Eq. 2–4 and §3.3). It reads Blender data
(the evaluated mesh, the map images, the bindings) and caches what does not change per frame;
the maths is in :mod:`.geometry` (placement) and :mod:`.pixels` (map sampling), the drawing in
:mod:`.drawer`.

A head object is marked by ``obj["fate_avatar"] = True`` or ``obj["fate_role"] == "head"``
(:mod:`addon.rig.bindings`); its map images are found through ``obj["fate_maps"] = {map name:
image name}`` or, failing that, the image pointers ``obj["fate_map_<name>"]``; its bindings come
from :func:`addon.rig.bindings.get_bindings`.

Map samples are cached per head and re-read when :func:`tag_maps_changed` was called since
(Sync Maps, painting seen by the viewport) or when final renders ask for it.

Re-splat density (the head's ``fate.resplat`` / ``fate.texel_stride``, :func:`texel_stride`):
"as trained" places the avatar's own Gaussians (its bindings); "per texel" places one Gaussian at
every ``stride``-th covered texel of the colour map's size (:mod:`.texels`), so what Texture Paint
shows is what the render keeps. A head without maps renders its trained Gaussians' attributes
(``blender/gaussians.npz``, stored on the bindings object) until it is baked.

Map shape keys (issue 19): when the avatar folder's ``maps.json`` lists ``"dynamic"`` keys
(:mod:`addon.files.map_keys`), every frame the colour and opacity samples become
``clip(base + Σ_k w_k Δ_k, 0, 1)`` with ``w_k = max(sign_k · value, 0)`` of the head's own shape
key ``shape_keys[k]`` (the evaluated value: keyed, driven or set by hand; :func:`shape_key_values`)
— the same weights that deform the mesh. The painted maps stay the base; all weights zero
renders them exactly. ``Object.fate.map_keys`` turns the blend off per head.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import bpy
import numpy as np

from ..errors import MapsError, SplatError
from ..files.map_keys import MapKeysData, read_map_keys
from ..rig.bindings import (PROP_MAP_PREFIX, PROP_MAPS, avatar_map_images, get_avatar_dir, get_bindings,
                            get_trained_attributes, is_head_object, is_relightable)
from .geometry import MapSamples, SplatGaussians, blend_map_keys, map_key_weights, place_gaussians
from .pixels import required_maps, sample_bilinear, sample_maps
from .texels import TexelSplats, texel_splats

log = logging.getLogger(__name__)

__all__ = ["maps_generation", "tag_maps_changed", "get_bindings_for", "mesh_arrays", "corner_uvs",
           "texel_stride", "use_map_keys", "shape_key_values", "AvatarRuntime", "avatar_runtime", "clear_caches",
           "is_avatar", "scene_gaussians"]

BAKE_FIRST = "Bake first"
"""How a render error about missing maps starts (the sidebar shows the Bake button next to it)."""

# ------------------------------------------------------------------------------ map generation
_maps_generation = 0
"""Bumped by :func:`tag_maps_changed`; cached map samples older than this are re-read."""


def maps_generation() -> int:
    """Current map generation (see :func:`tag_maps_changed`)."""
    return _maps_generation


def tag_maps_changed(image_name: str | None = None, *, redraw: bool = True) -> None:
    """Call after the map images changed (Sync Maps, edits): the next draw re-reads their pixels.

    Args:
        image_name: the image that changed; None = all maps (e.g. after Sync Maps).
        redraw: also tag the 3D viewports for redraw (the viewport's own ``view_update``, which
            draws next anyway, and cache resets need not).
    """
    global _maps_generation
    _maps_generation += 1
    log.debug("maps changed (%s): generation %d", image_name or "all", _maps_generation)
    if redraw:
        _redraw_3d_views()


def _redraw_3d_views() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type == 'VIEW_3D':
                area.tag_redraw()


# ------------------------------------------------------------------------------ bindings and mesh
def _default_bindings(obj: bpy.types.Object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The head object's bindings via :func:`addon.rig.bindings.get_bindings`.

    Raises:
        SplatError: the object has no bindings.
    """
    try:
        return get_bindings(obj)
    except KeyError as exc:
        detail = exc.args[0] if exc.args else exc
        raise SplatError(f"object '{obj.name}': no Gaussian bindings ({detail})") from exc


BindingsProvider = Callable[[bpy.types.Object], "tuple[np.ndarray, np.ndarray, np.ndarray]"]
get_bindings_for: BindingsProvider = _default_bindings
"""Returns (face_idx int32 [N], bary float32 [N, 3], uv float32 [N, 2]) of a head object."""



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


def corner_uvs(mesh: bpy.types.Mesh) -> np.ndarray:
    """UVs of every triangle corner of a triangulated mesh (its active UV layer).

    Returns:
        OBJ convention (origin bottom-left), polygon order. [F, 3, 2] float32
    Raises:
        SplatError: the mesh has no UV layer.
    """
    layer = mesh.uv_layers.active
    if layer is None:
        raise SplatError(f"mesh '{mesh.name}' has no UV map: per-texel density needs the head's UVs")
    uv = np.empty(len(mesh.loops) * 2, np.float32)
    layer.data.foreach_get("uv", uv)
    return uv.reshape(-1, 3, 2)


def texel_stride(obj: bpy.types.Object) -> int:
    """The head's re-splat density: 0 = as trained, k ≥ 1 = one Gaussian per k-th texel.

    Reads ``obj.fate`` (:class:`addon.ui.properties.FATE_PG_object`) when registered.
    """
    src = getattr(obj, "original", None) or obj
    settings = getattr(src, "fate", None)
    if settings is None or getattr(settings, "resplat", "TRAINED") != "TEXEL":
        return 0
    return max(1, int(settings.texel_stride))


def use_map_keys(obj: bpy.types.Object) -> bool:
    """Whether the head's map shape keys are blended (``obj.fate.map_keys``; True when unset)."""
    src = getattr(obj, "original", None) or obj
    settings = getattr(src, "fate", None)
    return bool(getattr(settings, "map_keys", True)) if settings is not None else True


def shape_key_values(obj: bpy.types.Object, names: list[str]) -> np.ndarray:
    """Current values of the named shape keys of a (preferably evaluated) head object.

    The evaluated mesh's Key holds the depsgraph's values (animation, NLA, drivers such as the
    ``Pose_*`` correctives); without one the original's are read. A name the head does not have
    counts 0 (logged once per name).

    Returns:
        [len(names)] float32
    """
    key = getattr(getattr(obj, "data", None), "shape_keys", None)
    if key is None:
        src = getattr(obj, "original", None) or obj
        key = getattr(src.data, "shape_keys", None)
    blocks = key.key_blocks if key is not None else {}
    out = np.zeros(len(names), np.float32)
    for i, n in enumerate(names):
        kb = blocks.get(n) if key is not None else None
        if kb is None:
            if n not in _MISSING_KEYS:
                _MISSING_KEYS.add(n)
                log.warning("map shape keys: object '%s' has no shape key '%s'; its key counts 0", obj.name, n)
            continue
        out[i] = kb.value
    return out


_MISSING_KEYS: set[str] = set()


# ------------------------------------------------------------------------------ runtime
def _required_map_images(obj: bpy.types.Object, allow_none: bool = False) -> dict[str, bpy.types.Image]:
    """The head's images of all the maps the runtime needs (:data:`.pixels.MAP_NAMES`).

    Args:
        obj: the head object (original or evaluated).
        allow_none: return {} when the head references no map at all (it may render its trained
            Gaussians instead).
    Returns:
        map name → image, for all of :data:`.pixels.MAP_NAMES` (a relightable head's:
        :data:`.pixels.PBR_MAP_NAMES`).
    Raises:
        SplatError: a map or its image is missing (see :func:`addon.rig.bindings.avatar_map_images`).
    """
    src = getattr(obj, "original", None) or obj
    try:
        images = avatar_map_images(src)
    except MapsError as exc:
        raise SplatError(str(exc)) from exc
    if allow_none and not images:
        return {}
    names = required_maps(is_relightable(src))
    for m in names:
        if m not in images:
            raise SplatError(f"{BAKE_FIRST}: object '{src.name}' has no '{m}' map (and no trained "
                             f"Gaussians to show): bake the avatar (FATE sidebar > 3. Bake) and "
                             f"import it again, or point '{PROP_MAP_PREFIX}{m}' / '{PROP_MAPS}' at "
                             f"the map images of {list(names)}")
    return {m: images[m] for m in names}


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
    texels: dict = field(default_factory=dict)
    """(map width, height, stride) → :class:`.texels.TexelSplats` of the head's rest mesh."""
    texel_samples: MapSamples | None = None
    texel_key: tuple = ()
    keys: MapKeysData | None = None
    """The avatar folder's map shape keys (None: none, or not read yet)."""
    keys_stamp: tuple | None = None
    """(maps.json path, mtime) the keys were read at."""
    key_deltas: dict = field(default_factory=dict)
    """(where, map size, count) → the keys' deltas at those UVs: colour [K, N, 3], opacity [K, N]."""

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
        images = _required_map_images(obj, allow_none=True)
        names = {m: img.name for m, img in images.items()}
        if (resample or self.samples is None or self.generation != _maps_generation
                or names != self.image_names):
            self.samples = sample_maps(images, self.uv) if images else self._trained_samples(obj)
            self.generation = _maps_generation
            self.image_names = names
        return self.samples

    def _trained_samples(self, obj: bpy.types.Object) -> MapSamples:
        """The trained Gaussians' own attributes (an avatar that is not baked yet).

        Raises:
            SplatError: the head has neither maps nor trained attributes ("Bake first").
        """
        trained = get_trained_attributes(obj)
        if trained is None or len(trained["opacity"]) != len(self.face_idx):
            _required_map_images(obj)  # raises the "Bake first" error
        names = ("color", "opacity", "scale", "rotation", "offset")
        if is_relightable(obj):
            names += ("roughness", "f0")
        missing = [m for m in names if m not in trained]
        if missing:
            raise SplatError(f"object '{self.name}': relightable, but its trained Gaussians lack {missing}")
        return MapSamples(**{m: np.ascontiguousarray(trained[m], np.float32) for m in names})

    def map_keys(self, obj: bpy.types.Object) -> MapKeysData | None:
        """The head's map shape keys from its avatar folder, re-read when ``maps.json`` changes
        (a new bake); None when there are none or the head's ``map_keys`` setting is off.

        Raises:
            SplatError: the key files are unreadable (:func:`addon.files.map_keys.read_map_keys`).
        """
        if not use_map_keys(obj):
            return None
        folder = get_avatar_dir(getattr(obj, "original", None) or obj)
        manifest = folder / "maps" / "maps.json" if folder is not None else None
        stamp = (str(manifest), manifest.stat().st_mtime_ns) if manifest is not None and manifest.is_file() else None
        if stamp != self.keys_stamp:
            try:
                self.keys = read_map_keys(folder) if stamp is not None else None
            except MapsError as exc:
                raise SplatError(str(exc)) from exc
            self.keys_stamp, self.key_deltas = stamp, {}
        return self.keys

    def expression_samples(self, obj_eval: bpy.types.Object, samples: MapSamples, where: str,
                           uv: np.ndarray) -> MapSamples:
        """``samples`` under the head's current shape-key values (module doc, map shape keys).

        Args:
            obj_eval: the evaluated head object.
            samples: the maps' values at ``uv``.
            where: names the UV set for the delta cache ("trained" or a texel key).
            uv: the UVs of ``samples``, OBJ convention. [N, 2]
        """
        keys = self.map_keys(obj_eval)
        if keys is None or not len(keys):
            return samples
        cache = (where, keys.color.shape[1:3], len(uv))
        deltas = self.key_deltas.get(cache)
        if deltas is None:
            K, H, W = keys.color.shape[:3]
            img = np.concatenate([keys.color, keys.opacity[..., None]], axis=-1).transpose(1, 2, 0, 3)
            vals = sample_bilinear(img.reshape(H, W, K * 4), uv).reshape(len(uv), K, 4).transpose(1, 0, 2)
            deltas = (np.ascontiguousarray(vals[..., :3]), np.ascontiguousarray(vals[..., 3]))
            self.key_deltas[cache] = deltas
        weights = map_key_weights(shape_key_values(obj_eval, keys.shape_keys), keys.signs)
        return blend_map_keys(samples, weights, *deltas)

    def texel_gaussians(self, obj_eval: bpy.types.Object, verts: np.ndarray, faces: np.ndarray,
                        stride: int, resample: bool = False) -> SplatGaussians:
        """Per-texel Gaussians (:mod:`.texels`) on the evaluated mesh, from the head's maps.

        Args:
            obj_eval: the evaluated head object.
            verts, faces: its evaluated vertices [V, 3] and triangles [F, 3] (mesh frame).
            stride: one Gaussian per ``stride``-th texel of the colour map.
            resample: re-read the map images even if the cache is current.
        Raises:
            SplatError: the head has no maps ("Bake first").
        """
        images = _required_map_images(obj_eval)
        W, H = (int(x) for x in images.get("color", images.get("albedo")).size)
        src = getattr(obj_eval, "original", None) or obj_eval
        ts: TexelSplats | None = self.texels.get((W, H, stride))
        if ts is None:
            rest, rest_faces = mesh_arrays(src.data)
            ts = texel_splats(rest, rest_faces, corner_uvs(src.data), W, H, stride)
            self.texels = {(W, H, stride): ts}
        key = (W, H, stride, _maps_generation, tuple(sorted((m, i.name) for m, i in images.items())))
        if resample or self.texel_samples is None or key != self.texel_key:
            s = sample_maps(images, ts.uv)
            self.texel_samples = MapSamples(color=s.color, opacity=s.opacity, scale=ts.scale,
                                            rotation=ts.rotation, offset=s.offset, roughness=s.roughness, f0=s.f0)
            self.texel_key = key
        samples = self.expression_samples(obj_eval, self.texel_samples, f"texel {W}x{H}/{stride}", ts.uv)
        M = np.array(obj_eval.matrix_world, dtype=np.float64)
        return place_gaussians(verts, faces, ts.face_idx, ts.bary, samples, M)

    def gaussians(self, obj_eval: bpy.types.Object, resample: bool = False) -> SplatGaussians:
        """World Gaussians on the evaluated mesh of the head object.

        Args:
            obj_eval: the evaluated head object (``obj.evaluated_get(depsgraph)``).
            resample: re-read the map images even if the cache is current.
        Raises:
            SplatError: the evaluated mesh does not have the faces the bindings refer to.
        """
        verts, faces = mesh_arrays(obj_eval.data)
        stride = texel_stride(obj_eval)
        if stride:
            return self.texel_gaussians(obj_eval, verts, faces, stride, resample=resample)
        if len(self.face_idx) and int(self.face_idx.max()) >= faces.shape[0]:
            raise SplatError(f"object '{self.name}': bindings refer to face "
                             f"{int(self.face_idx.max())}, the evaluated mesh has "
                             f"{faces.shape[0]} faces (did a modifier change the topology?)")
        samples = self.map_samples(obj_eval, resample=resample)
        if self.image_names:  # from the maps (the keys are deltas of the maps, not of trained Gaussians)
            samples = self.expression_samples(obj_eval, samples, "trained", self.uv)
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
    tag_maps_changed(redraw=False)


def is_avatar(obj: bpy.types.Object) -> bool:
    """Whether the splat engine draws this object."""
    return obj.type == 'MESH' and is_head_object(obj)


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
