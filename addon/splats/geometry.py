"""Gaussians on a mesh, numpy only: face frames and the placement of map values on the mesh.

This is the Blender-side twin of ``engine/mesh_ops.py: face_frames`` and
``engine/gaussians.py: place_gaussians`` (FATE §3.1 Eq. 2–4). For every Gaussian bound to face
``f`` of the head mesh with barycentric ``b``:

- face frame of the *evaluated* mesh, in mesh (FLAME) coordinates: ``e1 = normalize(v1 − v0)``,
  ``n = normalize((v1 − v0) × (v2 − v0))``, ``e2 = n × e1``, ``R_f = [e1 | e2 | n]``,
  ``k_f`` = mean edge length;
- centre ``μ = Σ bᵢ vᵢ + offset · n``, rotation ``R = R_f · rotmat(axis_angle)``, standard
  deviations ``k_f · scale``, covariance ``Σ = R diag(σ²) Rᵀ``;
- then the head object's ``matrix_world`` ``M``: ``μ_w = M μ``, ``Σ_w = A Σ Aᵀ`` with ``A`` the
  3×3 part of ``M``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..rig.flame_math import axis_angle_to_matrix

__all__ = ["SplatGaussians", "SplatMaterial", "MapSamples", "face_frames", "place_gaussians", "shortest_axes",
           "map_key_weights", "blend_map_keys"]

_EPS = 1e-12


@dataclass
class SplatMaterial:
    """What lights a relightable avatar's splats (``addon/splats/shading.py``).

    Attributes:
        normals: unit normals (shortest axes), Blender world frame. [N, 3] float32
        roughness: [N] float32; f0: [N] float32
        lit: which splats are shaded (False: a static avatar's, drawn with their colour). [N] bool
    """

    normals: np.ndarray
    roughness: np.ndarray
    f0: np.ndarray
    lit: np.ndarray

    @classmethod
    def unlit(cls, n: int) -> "SplatMaterial":
        """``n`` splats that keep their colour."""
        return cls(np.zeros((n, 3), np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32),
                   np.zeros(n, bool))


@dataclass
class SplatGaussians:
    """World-space Gaussians ready to draw.

    Attributes:
        means: centres, Blender world frame, meters. [N, 3] float32
        covars: covariances, Blender world frame, m². [N, 3, 3] float32
        colors: encoded (sRGB) colours in [0, 1] (a relightable avatar's: its albedo until shaded). [N, 3] float32
        opacities: in [0, 1]. [N] float32
        material: relightable avatars' normals, roughness and F0 (None: nothing to light).
    """

    means: np.ndarray
    covars: np.ndarray
    colors: np.ndarray
    opacities: np.ndarray
    material: SplatMaterial | None = None

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
        material = None
        if any(p.material is not None for p in parts):
            mats = [p.material or SplatMaterial.unlit(len(p)) for p in parts]
            material = SplatMaterial(*(np.concatenate([getattr(m, a) for m in mats])
                                       for a in ("normals", "roughness", "f0", "lit")))
        return cls(*(np.concatenate([getattr(p, a) for p in parts])
                     for a in ("means", "covars", "colors", "opacities")), material=material)


@dataclass
class MapSamples:
    """Activated attribute values at each Gaussian's UV (the maps' contract, FORMATS.md).

    Attributes:
        color: encoded (sRGB) colour in [0, 1]. [N, 3]
        opacity: [N] in [0, 1]
        scale: multiples of the face scale k_f. [N, 3]
        rotation: axis-angle in the face frame, radians. [N, 3]
        offset: meters along the unit face normal. [N]
        roughness: relightable avatars: roughness o. [N] (None: a static avatar)
        f0: relightable avatars: Fresnel base reflectance. [N] (None: a static avatar)
    """

    color: np.ndarray
    opacity: np.ndarray
    scale: np.ndarray
    rotation: np.ndarray
    offset: np.ndarray
    roughness: np.ndarray | None = None
    f0: np.ndarray | None = None


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


def place_gaussians(verts: np.ndarray, faces: np.ndarray, face_idx: np.ndarray, bary: np.ndarray,
                    samples: MapSamples, matrix_world: np.ndarray | None = None) -> SplatGaussians:
    """Map values + posed mesh → world Gaussians (FATE Eq. 2–4; engine.model.gaussians.place_gaussians).

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
    local = axis_angle_to_matrix(samples.rotation).astype(np.float32)
    rot = R_f @ local
    sig = samples.scale * k_f[:, None]
    rs = rot * sig[:, None, :]
    covars = rs @ rs.transpose(0, 2, 1)
    normals = shortest_axes(rot, sig, local) if samples.roughness is not None else None
    if matrix_world is not None:
        M = np.asarray(matrix_world, dtype=np.float64)
        A = M[:3, :3].astype(np.float32)
        means = means @ A.T + M[:3, 3].astype(np.float32)
        covars = A[None] @ covars @ A.T[None]
        if normals is not None:
            normals = normals @ A.T
            normals /= np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), _EPS)
    material = None if normals is None else SplatMaterial(
        np.ascontiguousarray(normals, np.float32), np.ascontiguousarray(samples.roughness, np.float32),
        np.ascontiguousarray(samples.f0, np.float32), np.ones(len(means), bool))
    return SplatGaussians(np.ascontiguousarray(means, dtype=np.float32),
                          np.ascontiguousarray(covars, dtype=np.float32),
                          np.ascontiguousarray(samples.color, dtype=np.float32),
                          np.ascontiguousarray(samples.opacity, dtype=np.float32), material)


def map_key_weights(values: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Weights of the map shape keys: ``w_k = max(sign_k · value_k, 0)`` (engine/map_keys.py).

    Args:
        values: the value of each key's driving shape key. [K]
        signs: +1 / −1 per key. [K]
    Returns:
        [K] float32
    """
    return np.maximum(np.asarray(signs, np.float32) * np.asarray(values, np.float32), 0.0)


def blend_map_keys(samples: MapSamples, weights: np.ndarray, d_color: np.ndarray,
                   d_opacity: np.ndarray) -> MapSamples:
    """Map samples under an expression: ``clip(base + Σ_k w_k Δ_k, 0, 1)`` for colour and opacity
    (the engine's ``engine.map_keys.MapKeyAppearance.blend``; issue 19).

    The base is the (painted) maps' samples, so an edit of the colour map shows under every
    expression; with all weights zero ``samples`` itself is returned (the base, exactly).

    Args:
        samples: the maps' values at the Gaussians' UVs.
        weights: :func:`map_key_weights`. [K]
        d_color: colour deltas at the Gaussians' UVs, encoded units. [K, N, 3]
        d_opacity: opacity deltas there. [K, N]
    Returns:
        MapSamples (scale, rotation, offset, roughness and F0 shared with ``samples``; a
        relightable head's colour is its albedo, so the keys change the albedo).
    """
    w = np.asarray(weights, np.float32)
    if not np.any(w != 0.0):
        return samples
    color = np.clip(samples.color + np.tensordot(w, d_color, axes=1), 0.0, 1.0).astype(np.float32)
    opacity = np.clip(samples.opacity + w @ d_opacity, 0.0, 1.0).astype(np.float32)
    return MapSamples(color=color, opacity=opacity, scale=samples.scale, rotation=samples.rotation,
                      offset=samples.offset, roughness=samples.roughness, f0=samples.f0)


def shortest_axes(rot: np.ndarray, sig: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Each Gaussian's shading normal: its shortest axis, on the side of its face's normal
    (``engine.model.pbr.gaussian_normals``).

    Args:
        rot: rotations (columns = axes), mesh frame. [N, 3, 3]
        sig: standard deviations along them. [N, 3]
        local: the rotations in the face frame (row 2 = face-normal components). [N, 3, 3]
    Returns:
        unit normals, mesh frame. [N, 3] float32
    """
    k = np.argmin(sig, axis=-1)
    idx = np.arange(len(k))
    axis = rot[idx, :, k]
    side = np.where(local[idx, 2, k] < 0, -1.0, 1.0).astype(np.float32)
    return (axis * side[:, None]).astype(np.float32)
