"""The demo subject's expression-dependent appearance (issue 19): wrinkles, mouth interior and
eyelid creases that come and go with the expression, so there is something for HeadGaS, the
conditioned BakeNet and the map shape keys to learn, and a ground truth to check them against.

The appearance is the albedo (:mod:`engine.demo.texture`) with :data:`LAYERS` composited over it,
in order, each an RGBA field on the canonical surface whose alpha is scaled by a factor
``f = clamp(gain · value, 0, 1)`` of one of the head's shape keys (or 1 for a constant layer)::

    C ← (1 − f·α) C + f·α · rgb

========================= ================ ==== ===================================================
layer                     shape key        gain what
========================= ================ ==== ===================================================
``mouth_interior``        (always)         1    the mouth-closing faces: dark cavity, teeth nearly
                                                meeting (a narrow opening)
``mouth_open``            ``Pose_jaw_21``  5    the same faces as the jaw opens: the teeth keep
                                                their size, so in the stretched mouth they are thin
                                                bands at the lips and the cavity and tongue show
``brow_wrinkles``         ``brow_raise``   1    horizontal forehead lines
``smile_lines``           ``smile``        1    nasolabial folds and crow's feet
``lid_crease_left/right`` ``blink_left/…`` 1    the upper lid's crease and shade as the lid closes
========================= ================ ==== ===================================================

``Pose_jaw_21`` is the jaw's pose corrective key, (R_jaw − I)[2, 1] = sin θ for a jaw opening
by θ about +x. The synthetic sequences (:mod:`engine.demo.synthetic`, ``dynamic_appearance``)
composite per splat in encoded (sRGB) colour; the Cycles subject
(``addon/demo/appearance.py``) mixes the same layers as textures in its material, with factors
driven by the same shape keys (Cycles mixes scene-linear values, so the two differ slightly in
the blend, not in the layers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.model.head_model import HeadModel


@dataclass(frozen=True)
class AppearanceLayer:
    """One layer: its name, the shape key whose value scales it (None = always on) and the gain."""

    name: str
    shape_key: str | None
    gain: float


LAYERS: tuple[AppearanceLayer, ...] = (
    AppearanceLayer("mouth_interior", None, 1.0),
    AppearanceLayer("mouth_open", "Pose_jaw_21", 5.0),
    AppearanceLayer("brow_wrinkles", "brow_raise", 1.0),
    AppearanceLayer("smile_lines", "smile", 1.0),
    AppearanceLayer("lid_crease_left", "blink_left", 1.0),
    AppearanceLayer("lid_crease_right", "blink_right", 1.0),
)

_TEETH = np.array([0.93, 0.9, 0.82])
_CAVITY = np.array([0.22, 0.05, 0.06])
_TONGUE = np.array([0.72, 0.32, 0.33])
_CREASE = np.array([0.42, 0.27, 0.23])
_LID_SHADE = np.array([0.66, 0.42, 0.4])


def _segment_distance(px: np.ndarray, py: np.ndarray, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    """Distance (m) of points (px, py) to the 2D segment a–b."""
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(px - ax - t * dx, py - ay - t * dy)


def _mouth_texture(s: np.ndarray, t: np.ndarray, teeth_height: float) -> np.ndarray:
    """Mouth interior at island coordinates s (along the lips) and t (0 lower lip, 1 upper lip):
    upper and lower teeth ``teeth_height`` (fraction of the opening) at the lips, with gaps between
    the teeth, dark cavity between them and at the corners, a tongue low in a wide opening. [N, 3]"""
    col = np.tile(_CAVITY, (len(s), 1))
    tongue = np.exp(-((t - 0.32) / 0.12) ** 2) * np.exp(-((s - 0.5) / 0.22) ** 2) * (teeth_height < 0.3)
    col = col * (1 - tongue[:, None]) + tongue[:, None] * _TONGUE
    teeth = ((t > 1.0 - teeth_height) | (t < teeth_height)) & (np.abs(s - 0.5) < 0.36)
    gaps = np.abs(np.cos(np.pi * 11.0 * s)) > 0.12
    col[teeth & gaps] = _TEETH
    return col


def layer_rgba(points: np.ndarray, normals: np.ndarray, uv: np.ndarray, is_mouth: np.ndarray,
               head: HeadModel) -> dict[str, np.ndarray]:
    """Every layer's colour and alpha at canonical surface points.

    Args:
        points: canonical surface points, meters, FLAME frame. [N, 3]
        normals: unit normals there. [N, 3]
        uv: their UV coordinates, OBJ convention. [N, 2]
        is_mouth: bool, the point lies on a mouth-closing face. [N]
        head: the demo head (its eyes, mouth and the mouth faces' UV island place the features).
    Returns:
        layer name → encoded (sRGB) colour + alpha in [0, 1]. [N, 4] float32
    """
    from engine.demo.texture import landmarks

    x, y = points[:, 0], points[:, 1]
    front = np.clip((normals[:, 2] - 0.2) / 0.4, 0.0, 1.0)
    out: dict[str, np.ndarray] = {}

    def rgba(rgb, alpha) -> np.ndarray:
        rgb = np.broadcast_to(np.asarray(rgb, np.float64), (len(points), 3))
        return np.concatenate([rgb, np.clip(alpha, 0.0, 1.0)[:, None]], axis=1).astype(np.float32)

    # mouth: island coordinates from the mouth faces' UV box
    box = head.uvs[np.unique(head.mouth_faces_uv)] if len(head.mouth_faces_uv) else np.zeros((1, 2))
    (u0, v0), (u1, v1) = box.min(0), box.max(0)
    s = np.clip((uv[:, 0] - u0) / max(u1 - u0, 1e-9), 0, 1)
    t = np.clip((uv[:, 1] - v0) / max(v1 - v0, 1e-9), 0, 1)
    m = is_mouth.astype(np.float64)
    out["mouth_interior"] = rgba(_mouth_texture(s, t, 0.42), m)
    out["mouth_open"] = rgba(_mouth_texture(s, t, 0.16), m)
    skin = 1.0 - m

    # forehead lines, above the brows
    band = np.clip((y - 0.044) / 0.004, 0, 1) * np.clip((0.078 - y) / 0.006, 0, 1)
    band *= np.exp(-(x / 0.042) ** 4) * front * skin
    lines = np.clip(np.cos(2 * np.pi * (y - 0.044) / 0.0058), 0.0, 1.0) ** 6
    wave = 1.0 + 0.15 * np.sin(x * 140.0)
    out["brow_wrinkles"] = rgba(_CREASE, 0.75 * band * np.clip(lines * wave, 0, 1))

    # nasolabial folds and crow's feet, both sides
    alpha = np.zeros(len(points))
    for sx in (1.0, -1.0):
        d = _segment_distance(x, y, (sx * 0.017, -0.017), (sx * 0.031, -0.052))
        alpha = np.maximum(alpha, 0.8 * np.exp(-0.5 * (d / 0.0011) ** 2))
        for ang in (-0.45, 0.0, 0.45):
            end = (sx * (0.046 + 0.009 * np.cos(ang)), 0.019 + 0.009 * np.sin(ang))
            d = _segment_distance(x, y, (sx * 0.045, 0.019), end)
            alpha = np.maximum(alpha, 0.7 * np.exp(-0.5 * (d / 0.0005) ** 2))
    out["smile_lines"] = rgba(_CREASE, alpha * front * skin)

    # upper-lid crease and shade
    lm = landmarks(head)
    for name, eye in (("lid_crease_left", lm["left_eye"]), ("lid_crease_right", lm["right_eye"])):
        dx, dy = x - eye[0], y - eye[1]
        rho = np.hypot(dx / 0.011, dy / 0.0048)
        upper = np.clip(dy / 0.001, 0, 1) * (np.abs(dx) < 0.016)
        shade = np.clip((2.3 - rho) / 0.3, 0, 1) * np.clip((rho - 0.9) / 0.2, 0, 1)
        crease = np.exp(-0.5 * ((rho - 1.85) / 0.09) ** 2)
        a = np.maximum(0.35 * shade, 0.85 * crease) * upper * skin
        w = (0.85 * crease >= 0.35 * shade)[:, None]
        out[name] = rgba(np.where(w, _CREASE, _LID_SHADE), a)
    return out


def shape_key_values(head: HeadModel, expr: np.ndarray, pose: np.ndarray) -> dict[str, float]:
    """The head's shape-key values of a frame that layers read (docs/FORMATS.md names): each
    expression key's coefficient and the jaw's ``Pose_jaw_<r><c>`` = (R_jaw − I)[r, c]."""
    import torch

    from engine.model.appearance_drivers import make_drivers

    drivers = make_drivers(head, head.num_expr, use_jaw=True)
    d = drivers.values(torch.as_tensor(np.asarray(expr), dtype=torch.float64),
                       torch.as_tensor(np.asarray(pose), dtype=torch.float64)).numpy()
    return {n: float(v) for n, v in zip(drivers.names, d)}


def layer_factors(values: dict[str, float]) -> dict[str, float]:
    """f = clamp(gain · value, 0, 1) of every layer (1 for constant layers; 0 when the head has no
    such shape key)."""
    out = {}
    for layer in LAYERS:
        v = 1.0 if layer.shape_key is None else values.get(layer.shape_key, 0.0) * layer.gain
        out[layer.name] = float(np.clip(v, 0.0, 1.0))
    return out


def composite(base: np.ndarray, layers: dict[str, np.ndarray], factors: dict[str, float]) -> np.ndarray:
    """The layers over ``base`` in :data:`LAYERS` order (module doc).

    Args:
        base: encoded colours. [N, 3]
        layers: :func:`layer_rgba`. name → [N, 4]
        factors: :func:`layer_factors`.
    Returns:
        encoded colours in [0, 1]. [N, 3] float32
    """
    col = np.asarray(base, np.float64).copy()
    for layer in LAYERS:
        a = factors.get(layer.name, 0.0) * layers[layer.name][:, 3:4]
        col = col * (1.0 - a) + a * layers[layer.name][:, :3]
    return np.clip(col, 0.0, 1.0).astype(np.float32)


def layer_textures(head: HeadModel, resolution: int) -> dict[str, np.ndarray]:
    """The layers as RGBA textures over the head's UV layout (what the Cycles subject mixes).

    Texels outside every UV triangle take the colour of the nearest covered texel with alpha 0, so
    bilinear lookups at island borders never mix in a foreign colour.

    Returns:
        layer name → straight-alpha RGBA, row 0 = top (v≈1). [R, R, 4] float32
    """
    from scipy.ndimage import distance_transform_edt

    pts, nrm, uv, is_mouth, texel = surface_texels(head, resolution)
    R = int(resolution)
    filled = np.zeros((R, R), bool)
    filled[texel[:, 0], texel[:, 1]] = True
    near = distance_transform_edt(~filled, return_indices=True)[1] if not filled.all() else None
    out = {}
    for name, vals in layer_rgba(pts, nrm, uv, is_mouth, head).items():
        img = np.zeros((R, R, 4), np.float32)
        img[texel[:, 0], texel[:, 1]] = vals
        if near is not None:
            rgb = img[near[0], near[1], :3]
            img[..., :3] = np.where(filled[..., None], img[..., :3], rgb)
        out[name] = img
    return out


def surface_texels(head: HeadModel, resolution: int):
    """Canonical surface samples at the covered texel centres of a ``resolution``² map.

    Returns:
        points [M, 3] (m), unit normals [M, 3], uv [M, 2] (OBJ), is_mouth bool [M], texel
        (row, col) int [M, 2].
    """
    import torch

    from engine.geometry.mesh_ops import barycentric_points, vertex_normals
    from engine.geometry.uv import sample_uv_texels

    s = sample_uv_texels(head.uvs, head.faces_uv_all, int(resolution))
    faces = torch.as_tensor(head.faces_all, dtype=torch.long)
    verts = torch.as_tensor(head.v_template, dtype=torch.float64)
    fi = torch.as_tensor(s.face_idx, dtype=torch.long)
    bary = torch.as_tensor(s.bary, dtype=torch.float64)
    pts = barycentric_points(verts, faces, fi, bary).numpy()
    nrm = torch.nn.functional.normalize(barycentric_points(vertex_normals(verts, faces), faces, fi, bary), dim=-1)
    return pts, nrm.numpy(), np.asarray(s.uv), np.asarray(s.face_idx) >= len(head.faces), np.asarray(s.texel)


LAYERS_JSON = "appearance.json"
"""The subject's layer list (what ``addon/demo/appearance.py`` reads)."""


def write_layer_textures(folder, head: HeadModel, resolution: int) -> dict:
    """Writes the subject's layers for Blender: ``appearance/<layer>.png`` (8-bit straight-alpha
    RGBA, sRGB colour, :func:`layer_textures`) and ``appearance.json``::

        {"format": "fate-demo-appearance", "format_version": 1, "blend": "...",
         "layers": [{"name", "file", "shape_key" (null = always on), "gain"}, ...]}

    in :data:`LAYERS` order (the order they are composited).

    Returns:
        the content of appearance.json.
    """
    from pathlib import Path

    from engine.io.atomic import write_json
    from engine.io.images import write_png

    folder = Path(folder)
    textures = layer_textures(head, resolution)
    layers = []
    for layer in LAYERS:
        write_png(folder / "appearance" / f"{layer.name}.png", textures[layer.name])
        layers.append({"name": layer.name, "file": f"appearance/{layer.name}.png", "shape_key": layer.shape_key,
                       "gain": layer.gain})
    info = {"format": "fate-demo-appearance", "format_version": 1,
            "blend": "colour = mix(colour, layer.rgb, layer.alpha * clamp(gain * shape_key_value, 0, 1)), in order",
            "layers": layers}
    write_json(folder / LAYERS_JSON, info)
    return info
