"""A tiny synthetic avatar folder in the engine's formats, and a numpy FLAME forward to check against.

Nothing here imports bpy, torch or the engine: the head is a UV-sphere-like ellipsoid with ~300
vertices, 5 joints (root, neck, jaw, left_eye, right_eye), smooth random expression and pose
bases (a few mm per unit, large enough that a missing joint compensation shows), a UV seam
(more UVs than vertices, like FLAME), two mouth faces, 5 tracked frames and 8×8 EXR maps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

JOINT_NAMES = ["root", "neck", "jaw", "left_eye", "right_eye"]
PARENTS = np.array([-1, 0, 1, 1, 1], np.int32)


def _sphere(n_lat: int = 14, n_lon: int = 20):
    """Ellipsoid head (FLAME canonical: +Y up, +Z out of the face), m.

    Returns vertices [V, 3], faces [F, 3], uvs [T, 2] (seam duplicated), faces_uv [F, 3].
    """
    verts, uvs = [], []
    verts.append([0.0, 0.12, 0.0])  # top pole, vertex 0
    ring = lambda i, j: 1 + (i - 1) * n_lon + (j % n_lon)  # noqa: E731
    for i in range(1, n_lat):
        theta = np.pi * i / n_lat
        for j in range(n_lon):
            phi = 2 * np.pi * j / n_lon
            verts.append([0.08 * np.sin(theta) * np.sin(phi), 0.12 * np.cos(theta), 0.09 * np.sin(theta) * np.cos(phi)])
    verts.append([0.0, -0.12, 0.0])  # bottom pole
    bottom = len(verts) - 1
    # UVs: (n_lon + 1) columns per ring (seam duplicated) + one pole UV per column
    uv_ring = lambda i, j: (i - 1) * (n_lon + 1) + j  # noqa: E731
    for i in range(1, n_lat):
        for j in range(n_lon + 1):
            uvs.append([j / n_lon, 1.0 - i / n_lat])
    top_uv0 = len(uvs)
    uvs += [[(j + 0.5) / n_lon, 1.0] for j in range(n_lon)]
    bot_uv0 = len(uvs)
    uvs += [[(j + 0.5) / n_lon, 0.0] for j in range(n_lon)]
    faces, faces_uv = [], []
    for j in range(n_lon):
        faces.append([0, ring(1, j), ring(1, j + 1)])
        faces_uv.append([top_uv0 + j, uv_ring(1, j), uv_ring(1, j + 1)])
    for i in range(1, n_lat - 1):
        for j in range(n_lon):
            a, b, c, d = ring(i, j), ring(i + 1, j), ring(i + 1, j + 1), ring(i, j + 1)
            ua, ub, uc, ud = uv_ring(i, j), uv_ring(i + 1, j), uv_ring(i + 1, j + 1), uv_ring(i, j + 1)
            faces += [[a, b, c], [a, c, d]]
            faces_uv += [[ua, ub, uc], [ua, uc, ud]]
    for j in range(n_lon):
        faces.append([bottom, ring(n_lat - 1, j + 1), ring(n_lat - 1, j)])
        faces_uv.append([bot_uv0 + j, uv_ring(n_lat - 1, j + 1), uv_ring(n_lat - 1, j)])
    return (np.array(verts, np.float32), np.array(faces, np.int32), np.array(uvs, np.float32),
            np.array(faces_uv, np.int32))


def _smooth_field(rng, v: np.ndarray, n: int, amplitude: float) -> np.ndarray:
    """n smooth random displacement fields on the vertices, m. [V, 3, n]"""
    freq = rng.normal(0, 12.0, (n, 3, 3))
    phase = rng.uniform(0, 2 * np.pi, (n, 3))
    out = np.empty((len(v), 3, n), np.float64)
    for k in range(n):
        out[:, :, k] = np.sin(v @ freq[k].T + phase[k])
    return (amplitude * out).astype(np.float32)


def make_head(seed: int = 0, n_expr: int = 20) -> dict:
    """The synthetic head in the blender/head.npz layout (docs/FORMATS.md)."""
    rng = np.random.default_rng(seed)
    v, faces, uvs, faces_uv = _sphere()
    V = len(v)
    # Two mouth-closing faces appended after the mesh faces (like the engine's mouth faces).
    front = np.argsort(-v[:, 2])[:4]
    mouth = np.array([[front[0], front[1], front[2]], [front[0], front[2], front[3]]], np.int32)
    uv_of_vertex = np.zeros(V, np.int64)
    uv_of_vertex[faces.reshape(-1)] = faces_uv.reshape(-1)
    faces_all = np.concatenate([faces, mouth])
    faces_uv_all = np.concatenate([faces_uv, uv_of_vertex[mouth].astype(np.int32)])
    joints = np.array([[0.0, -0.09, -0.02], [0.0, -0.07, -0.01], [0.0, -0.03, 0.03],
                       [0.03, 0.03, 0.07], [-0.03, 0.03, 0.07]])
    J = len(joints)
    J_reg = np.zeros((J, V), np.float32)
    for j in range(J):
        near = np.argsort(np.linalg.norm(v - joints[j], axis=1))[:6]
        w = rng.uniform(0.5, 1.0, len(near))
        J_reg[j, near] = w / w.sum()
    d2 = ((v[:, None, :] - joints[None]) ** 2).sum(-1)
    logits = -d2 / 0.004
    logits[:, 3:] -= 4.0  # eyes influence fewer vertices
    w = np.exp(logits - logits.max(1, keepdims=True))
    lbs_weights = (w / w.sum(1, keepdims=True)).astype(np.float32)
    exprdirs = _smooth_field(rng, v, n_expr, 0.004)
    posedirs = _smooth_field(rng, v, (J - 1) * 9, 0.003).transpose(2, 0, 1).reshape((J - 1) * 9, V * 3)
    return {
        "name": np.array("synthetic test head (not FLAME)"),
        "v_template": v, "shape_offset": np.zeros_like(v),
        "faces": faces_all, "faces_uv": faces_uv_all, "num_mouth_faces": np.int32(len(mouth)), "uvs": uvs,
        "exprdirs": exprdirs, "posedirs": np.ascontiguousarray(posedirs, np.float32),
        "J_regressor": J_reg, "parents": PARENTS, "lbs_weights": lbs_weights,
        "joint_names": np.array(JOINT_NAMES),
    }


def make_tracking(head: dict, seed: int = 1, n_frames: int = 5) -> dict:
    """tracking.npz for a short sequence: expressions, poses, translations and OpenCV cameras."""
    rng = np.random.default_rng(seed)
    T, E, J = n_frames, head["exprdirs"].shape[2], len(head["parents"])
    expr = rng.uniform(-2.0, 2.0, (T, E)).astype(np.float32)
    pose = rng.normal(0, 0.25, (T, J * 3)).astype(np.float32)
    transl = rng.normal(0, 0.01, (T, 3)).astype(np.float32)
    viewmat = np.zeros((T, 4, 4), np.float32)
    for t in range(T):
        eye = np.array([0.1 * np.sin(t), 0.05 * np.cos(2 * t), 0.6 + 0.02 * t])
        z = -eye / np.linalg.norm(eye)
        x = np.cross(z, [0.0, -1.0, 0.0])
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        R = np.stack([x, y, z])
        viewmat[t, :3, :3] = R
        viewmat[t, :3, 3] = -R @ eye
        viewmat[t, 3, 3] = 1.0
    K = np.array([[520.0, 0.0, 131.5], [0.0, 520.0, 117.25], [0.0, 0.0, 1.0]], np.float32)
    return {"shape": np.zeros(10, np.float32), "expr": expr, "pose": pose, "translation": transl,
            "viewmat": viewmat, "K": np.broadcast_to(K, (T, 3, 3)).copy(), "width": np.int32(256),
            "height": np.int32(240), "frame_names": np.array([f"{t:05d}" for t in range(T)]),
            "split": np.zeros(T, np.int8)}


def write_exr(path: Path, array: np.ndarray, names: str) -> None:
    """Writes a float32 scanline EXR the way the engine does (1 channel = "Y"), via OpenEXR."""
    import OpenEXR

    channels = {n: np.ascontiguousarray(array[:, :, i].astype(np.float32)) for i, n in enumerate(names)}
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage,
              "fateChannelOrder": ",".join(names)}
    with OpenEXR.File(header, channels) as f:
        f.write(str(path))


MAP_LAYOUT = {"color": ("RGB", "sRGB"), "opacity": ("Y", "Non-Color"), "scale": ("RGB", "Non-Color"),
              "rotation": ("RGB", "Non-Color"), "offset": ("Y", "Non-Color")}


def make_maps(seed: int = 2, size: int = 8) -> dict[str, np.ndarray]:
    """Map arrays [H, W, C] (row 0 = top), colour in [0, 1], data maps with negative values."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (chans, _) in MAP_LAYOUT.items():
        lo, hi = (0.0, 1.0) if name == "color" else (-2.0, 2.0)
        out[name] = rng.uniform(lo, hi, (size, size + 4, len(chans))).astype(np.float32)
    return out


def make_plausible_maps(seed: int = 2, size: int = 8) -> dict[str, np.ndarray]:
    """Map arrays [H, W, C] (row 0 = top) a head could have: random colours, opacity 0.6-0.95,
    scale 0.25-0.5 of the face scale, small rotations, offsets within ±1 mm (renders look like a
    surface, unlike :func:`make_maps`' arbitrary values)."""
    rng = np.random.default_rng(seed)
    shape = (size, size + 4)
    return {"color": rng.uniform(0.05, 0.95, shape + (3,)).astype(np.float32),
            "opacity": rng.uniform(0.6, 0.95, shape + (1,)).astype(np.float32),
            "scale": rng.uniform(0.25, 0.5, shape + (3,)).astype(np.float32),
            "rotation": rng.uniform(-0.3, 0.3, shape + (3,)).astype(np.float32),
            "offset": rng.uniform(-0.001, 0.001, shape + (1,)).astype(np.float32)}


def write_maps(folder: Path, maps: dict[str, np.ndarray]) -> None:
    """maps/<name>.exr and maps/maps.json of ``maps`` (the engine's layout)."""
    (folder / "maps").mkdir(exist_ok=True)
    manifest = {"format": "fate-maps", "format_version": 1, "maps": {}}
    for name, arr in maps.items():
        chans, cs = MAP_LAYOUT[name]
        write_exr(folder / "maps" / f"{name}.exr", arr, chans)
        manifest["maps"][name] = {"file": f"{name}.exr", "channels": len(chans), "colorspace": cs}
    (folder / "maps" / "maps.json").write_text(json.dumps(manifest, indent=1))


def trained_attributes(n: int, seed: int = 4) -> dict[str, np.ndarray]:
    """blender/gaussians.npz arrays of n trained Gaussians (plausible values, see make_plausible_maps)."""
    rng = np.random.default_rng(seed)
    return {"color": rng.uniform(0.05, 0.95, (n, 3)).astype(np.float32),
            "opacity": rng.uniform(0.6, 0.95, n).astype(np.float32),
            "scale": rng.uniform(0.25, 0.5, (n, 3)).astype(np.float32),
            "rotation": rng.uniform(-0.3, 0.3, (n, 3)).astype(np.float32),
            "offset": rng.uniform(-0.001, 0.001, n).astype(np.float32)}


def write_avatar(folder: Path, *, seed: int = 0, n_expr: int = 20, n_frames: int = 5,
                 with_maps: bool = True, n_gaussians: int = 60, plausible: bool = False,
                 with_trained: bool = False) -> dict:
    """Writes avatar.json, tracking.npz, blender/{head,bindings}.npz and maps/ into ``folder``.

    Args:
        plausible: maps from :func:`make_plausible_maps` (renderable) instead of :func:`make_maps`.
        with_trained: also blender/gaussians.npz (:func:`trained_attributes`).
    Returns:
        dict with "head", "tracking", "maps", "bindings" (and "trained") arrays for the tests.
    """
    folder = Path(folder)
    (folder / "blender").mkdir(parents=True, exist_ok=True)
    head = make_head(seed, n_expr)
    tracking = make_tracking(head, seed + 1, n_frames)
    np.savez(folder / "blender" / "head.npz", **head)
    np.savez(folder / "tracking.npz", **tracking)
    rng = np.random.default_rng(seed + 3)
    face_idx = rng.integers(0, len(head["faces"]), n_gaussians).astype(np.int32)
    bary = rng.dirichlet([1.0, 1.0, 1.0], n_gaussians).astype(np.float32)
    uv = (bary[:, :, None] * head["uvs"][head["faces_uv"][face_idx]]).sum(1).astype(np.float32)
    bindings = {"face_idx": face_idx, "bary": bary, "uv": uv}
    np.savez(folder / "blender" / "bindings.npz", **bindings)
    (folder / "avatar.json").write_text(json.dumps({"format": "fate-avatar", "format_version": 1}))
    out = {"head": head, "tracking": tracking, "maps": {}, "bindings": bindings}
    if with_trained:
        out["trained"] = trained_attributes(n_gaussians, seed + 4)
        np.savez(folder / "blender" / "gaussians.npz", **out["trained"])
    if with_maps:
        out["maps"] = make_plausible_maps(seed + 2) if plausible else make_maps(seed + 2)
        write_maps(folder, out["maps"])
    return out


# --------------------------------------------------------------------------- reference FLAME


def rodrigues(aa: np.ndarray) -> np.ndarray:
    """Axis-angle [..., 3] → rotation matrices [..., 3, 3] (float64), as smplx's batch_rodrigues."""
    aa = np.asarray(aa, np.float64)
    theta = np.linalg.norm(aa + 1e-8, axis=-1, keepdims=True)
    k = aa / theta
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    Kx = np.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    s, c = np.sin(theta)[..., None], np.cos(theta)[..., None]
    return np.eye(3) + s * Kx + (1 - c) * (Kx @ Kx)


def flame_forward(head: dict, expr: np.ndarray, pose: np.ndarray, transl: np.ndarray | None = None,
                  *, joints_from_template: bool = False) -> np.ndarray:
    """FLAME LBS as smplx.lbs does it (joints regressed from the expressed mesh), float64.

    Args:
        head: blender/head.npz arrays.
        expr: expression coefficients. [E]
        pose: axis-angle per joint, root first, rad. [J*3]
        transl: global translation, m. [3]
        joints_from_template: regress the joints from the un-expressed template instead (what a
            rig with fixed bone rests does without compensation) — for sensitivity checks.
    Returns:
        posed vertices, FLAME canonical, m. [V, 3]
    """
    v = head["v_template"].astype(np.float64) + head["exprdirs"].astype(np.float64) @ np.asarray(expr, np.float64)
    J = head["J_regressor"].astype(np.float64) @ (head["v_template"].astype(np.float64) if joints_from_template else v)
    R = rodrigues(np.asarray(pose, np.float64).reshape(-1, 3))
    feat = (R[1:] - np.eye(3)).reshape(-1)
    v_posed = v + (feat @ head["posedirs"].astype(np.float64)).reshape(-1, 3)
    parents = head["parents"]
    G = np.zeros((len(parents), 4, 4))
    for j, p in enumerate(parents):
        local = np.eye(4)
        local[:3, :3] = R[j]
        local[:3, 3] = J[j] - (J[p] if p >= 0 else 0.0)
        G[j] = local if p < 0 else G[p] @ local
    A = G.copy()
    A[:, :3, 3] -= np.einsum("jab,jb->ja", G[:, :3, :3], J)
    T = np.einsum("vj,jab->vab", head["lbs_weights"].astype(np.float64), A)
    out = np.einsum("vab,vb->va", T[:, :3, :3], v_posed) + T[:, :3, 3]
    if transl is not None:
        out = out + np.asarray(transl, np.float64)
    return out
