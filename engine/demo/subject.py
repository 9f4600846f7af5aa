"""The main job's subject: the demo head's texture, its talking sequence and the files Blender
renders it from (``blender/head.npz``, ``tracking.npz``, ``albedo.png``, ``subject.json``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.avatar_folder import write_blender_head
from engine.demo.config import DemoConfig
from engine.demo.expression_appearance import write_layer_textures
from engine.demo.motion import orbit_cameras, talking_motion
from engine.demo.texture import albedo_texture, landmarks
from engine.model.head_model import HeadModel


def write_neutral_blender_head(path: Path, head: HeadModel) -> None:
    """``blender/head.npz`` (docs/FORMATS.md) of an untrained head: zero shape, no learnt deltas
    (:func:`engine.avatar_folder.write_blender_head` with the model's own bases)."""
    write_blender_head(path, head, head.v_template, np.zeros_like(head.v_template), head.exprdirs, head.posedirs)


def write_subject(folder: Path, cfg: DemoConfig, head: HeadModel | None = None) -> dict:
    """Writes the demo subject for Blender into ``folder``.

    Files: ``blender/head.npz`` (:func:`write_neutral_blender_head`), ``tracking.npz`` (the sequence:
    shape, expr, pose, translation, viewmat (OpenCV w2c), K, width, height, frame_names, split;
    docs/FORMATS.md), ``albedo.png`` (sRGB texture, :func:`albedo_texture`) and
    ``subject.json`` (sizes and the logo's UV box); with ``cfg.dynamic_appearance`` also the
    expression-dependent layers (``appearance/*.png`` + ``appearance.json``,
    :func:`engine.demo.expression_appearance.write_layer_textures`).

    Returns:
        the content of subject.json.
    """
    from engine.io.atomic import write_json, write_npz
    from engine.io.images import write_png
    from engine.model.demo_head import build_demo_head

    folder = Path(folder)
    head = head or build_demo_head()
    T, R = cfg.frames, cfg.resolution
    motion = talking_motion(head, T, cfg.seed)
    views, K = orbit_cameras(head, motion["yaw"], motion["pitch"], R)
    n_test = max(1, int(round(T * 0.2)))
    split = np.array([0] * (T - n_test) + [1] * n_test, np.int8)
    write_neutral_blender_head(folder / "blender" / "head.npz", head)
    write_npz(folder / "tracking.npz", shape=np.zeros(head.num_shape, np.float32), expr=motion["expr"],
              pose=motion["pose"], translation=np.zeros((T, 3), np.float32),
              viewmat=views.astype(np.float32), K=np.repeat(K[None], T, 0).astype(np.float32),
              width=np.int32(R), height=np.int32(R),
              frame_names=np.array([f"{i:05d}" for i in range(T)], dtype=np.str_), split=split)
    write_png(folder / "albedo.png", albedo_texture(head, cfg.texture_resolution, cfg.seed))
    if cfg.dynamic_appearance:
        write_layer_textures(folder, head, cfg.texture_resolution)
    info = {"format": "fate-demo-subject", "format_version": 1, "frames": T, "resolution": R,
            "test_frames": int(n_test), "head": head.name, "logo_uv_box": list(logo_uv_box(head)),
            "head_centre": [float(c) for c in 0.5 * (head.v_template.min(0) + head.v_template.max(0))]}
    write_json(folder / "subject.json", info)
    return info


def logo_uv_box(head: HeadModel, size_m: float = 0.03) -> tuple[float, float, float, float]:
    """UV box (u0, v0, u1, v1; OBJ convention) of a square ~``size_m`` wide on the left cheek
    (the subject's left, +x: the side the test frames see), where the scripted edit stamps its logo."""

    lm = landmarks(head)
    target = np.array([lm["left_eye"][0] * 1.1, 0.4 * lm["left_eye"][1] + 0.6 * lm["mouth"][1], 0.0])
    v = head.v_template
    near = np.hypot(v[:, 0] - target[0], v[:, 1] - target[1])
    skin = np.arange(len(v))[near < max(2.0 * near.min(), 0.004)]
    vi = skin[np.argmax(v[skin, 2])]  # the front-most vertex near that (x, y)
    # UV of that vertex and the local UV → 3D Jacobian of a face using it (meters per UV unit)
    fi, ci = np.nonzero(head.faces == vi)
    uv0 = head.uvs[head.faces_uv[fi[0], ci[0]]].astype(np.float64)
    p3 = v[head.faces[fi[0]]].astype(np.float64)
    p2 = head.uvs[head.faces_uv[fi[0]]].astype(np.float64)
    jac = np.stack([p3[1] - p3[0], p3[2] - p3[0]], 1) @ np.linalg.inv(np.stack([p2[1] - p2[0], p2[2] - p2[0]], 1))
    half_u = 0.5 * size_m / max(np.linalg.norm(jac[:, 0]), 1e-9)
    half_v = 0.5 * size_m / max(np.linalg.norm(jac[:, 1]), 1e-9)
    box = (uv0[0] - half_u, uv0[1] - half_v, uv0[0] + half_u, uv0[1] + half_v)
    return tuple(float(np.clip(b, 0.0, 1.0)) for b in box)  # type: ignore[return-value]
