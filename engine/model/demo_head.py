"""Procedural demo head in FLAME format: "FATE demo head (procedural, not FLAME)".

FLAME is licensed and never shipped, so the demo, the tests and the synthetic
sequences use this head instead. It is built from scratch here (no FLAME data) but
has FLAME's structure, so every code path runs unchanged:

- FLAME canonical frame: meters, +Y up, +Z out of the face, +X = the subject's left;
  the head is ~0.2 m from the crown to the chin, centred near the origin, on a
  neck stump whose bottom is an open boundary (like FLAME's neck);
- skin: a latitude/longitude grid (pole at the crown, seam at the back) deformed
  into a head with brow ridge, eye sockets, cheekbones, nose, lips and chin; the
  grid is denser over the face; it is exactly mirror-symmetric in x;
- two eye holes whose rims hug separate eyeball spheres (skinned 100 % to the eye
  joints), and a mouth slit whose inner-lip loop is a mesh boundary, closed by
  :func:`engine.model.mouth.mouth_closing_faces` like FLAME's, with their own UV island
  (:mod:`engine.model.mouth_uv`);
- 5 joints root / neck / jaw / left_eye / right_eye with FLAME's parents
  [-1, 0, 1, 1, 1], a vertex joint regressor, smooth skinning weights, pose
  correctives in smplx layout (zero except a jaw-opening corrective);
- :data:`DEMO_SHAPE_NAMES` identity and :data:`DEMO_EXPRESSION_NAMES` expression
  blendshapes: smooth, localised displacements of a few millimetres per unit
  coefficient (a coefficient of 1-2 reads clearly, like FLAME's);
- its own UV layout in [0, 1]^2: a cylindrical skin island (seam at the back of
  the head, face region given more texels) and one island per eyeball, no overlaps.

Deterministic for a given seed (the seed only adds a tiny, symmetric variation to
the head proportions so tests can tell two heads apart); builds in well under 1 s.
"""

from __future__ import annotations

import os

import numpy as np

from engine.model.demo_head_mesh import (
    AXES,
    CENTRE,
    CHIN_Y,
    EYE_HALF_H,
    EYE_HALF_W,
    EYE_R,
    EYE_X,
    EYE_Y,
    HEAD_ROWS,
    LID_GAP,
    MOUTH_HALF_W,
    MOUTH_Y,
    NECK_ROWS,
    UV_EYES,
    build_skin,
    bump,
    eyeball,
    gauss,
    smoothstep,
)
from engine.model.head_model import FLAME_JOINT_NAMES, HeadModel
from engine.model.mouth_uv import close_mouth

__all__ = [
    "DEMO_HEAD_NAME",
    "DEMO_EXPRESSION_NAMES",
    "DEMO_SHAPE_NAMES",
    "build_demo_head",
    "write_demo_head",
]

DEMO_HEAD_NAME = "FATE demo head (procedural, not FLAME)"

DEMO_SHAPE_NAMES = [
    "head_width",
    "head_height",
    "head_depth",
    "face_length",
    "nose_length",
    "nose_width",
    "chin_forward",
    "jaw_width",
    "cheek_fullness",
    "brow_ridge",
    "lip_fullness",
    "eye_spacing",
]
"""Identity components, in ``shapedirs`` order (≈ 3-8 mm per unit coefficient)."""

DEMO_EXPRESSION_NAMES = [
    "jaw_open",
    "smile",
    "frown",
    "brow_raise",
    "brow_furrow",
    "blink_left",
    "blink_right",
    "pucker",
    "cheek_puff",
    "sneer",
    "mouth_left",
    "mouth_right",
    "eyes_wide",
    "lips_press",
]
"""Expression components, in ``exprdirs`` order; "left" is the subject's left (+x).
``jaw_open`` parts the lips (lower lip and chin down); the jaw joint rotates the jaw."""

# ------------------------------------------------------------- deformation fields
def _shape_fields(p: np.ndarray) -> np.ndarray:
    """Identity displacement fields at points p [N, 3] -> [N, 3, S] (meters per unit)."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    ax = np.abs(x)
    sx = np.sign(x)
    N = len(p)
    out = np.zeros((N, 3, len(DEMO_SHAPE_NAMES)))
    above_neck = smoothstep(-0.11, -0.08, y)
    front = smoothstep(0.0, 0.04, z)
    # head_width
    out[:, 0, 0] = 0.007 * x / AXES[0] * above_neck
    # head_height (cranium up)
    out[:, 1, 1] = 0.008 * np.clip((y - 0.02) / 0.095, 0.0, None)
    # head_depth (back of the skull)
    out[:, 2, 2] = -0.008 * np.clip(-(z - 0.02) / 0.1, 0.0, None) * above_neck
    # face_length (lower face down, in front)
    out[:, 1, 3] = -0.006 * smoothstep(0.01, -0.08, y) * front * above_neck
    # nose_length (tip forward and down)
    nose = bump(x, y, 0.0, -0.012, 0.008, 0.016) * front
    out[:, 2, 4] = 0.005 * nose
    out[:, 1, 4] = -0.0015 * nose
    # nose_width
    out[:, 0, 5] = 0.003 * sx * bump(ax, y, 0.010, -0.018, 0.007, 0.008) * front
    # chin_forward
    out[:, 2, 6] = 0.006 * bump(x, y, 0.0, CHIN_Y, 0.018, 0.013) * front
    # jaw_width
    out[:, 0, 7] = 0.006 * sx * smoothstep(0.02, 0.06, ax) * bump(0.0, y, 0.0, -0.06, 1.0, 0.025)
    # cheek_fullness (outwards and forward)
    ck = bump(ax, y, 0.045, -0.02, 0.016, 0.016) * front
    out[:, 0, 8] = 0.003 * sx * ck
    out[:, 2, 8] = 0.003 * ck
    # brow_ridge
    out[:, 2, 9] = 0.004 * gauss(y - 0.036, 0.008) * np.exp(-((x / 0.05) ** 4)) * front
    # lip_fullness
    lips = np.exp(-((x / 0.024) ** 4)) * gauss(y - MOUTH_Y, 0.008) * front
    out[:, 2, 10] = 0.003 * lips
    out[:, 1, 10] = 0.0012 * np.tanh((y - MOUTH_Y) / 0.003) * lips
    # eye_spacing (eye regions move apart, eyeballs with them)
    out[:, 0, 11] = 0.003 * sx * bump(ax, y, EYE_X, EYE_Y, 0.02, 0.016)
    return out


def _expression_fields(
    p: np.ndarray, is_upper: np.ndarray, is_lower: np.ndarray, jaw_w: np.ndarray, eye_c: np.ndarray
) -> np.ndarray:
    """Expression displacement fields of skin points p [N, 3] -> [N, 3, E] (meters per unit)."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    ax = np.abs(x)
    sx = np.sign(x)
    N = len(p)
    out = np.zeros((N, 3, len(DEMO_EXPRESSION_NAMES)))
    front = smoothstep(0.0, 0.04, z)
    below_mouth = np.where(is_lower, 1.0, np.where(is_upper, 0.0, smoothstep(MOUTH_Y + 0.002, MOUTH_Y - 0.004, y)))
    mouth_reg = bump(x, y, 0.0, MOUTH_Y, 0.026, 0.02) * front
    corners = bump(ax, y, MOUTH_HALF_W, MOUTH_Y, 0.009, 0.009) * front
    lip_band = np.exp(-((x / 0.026) ** 4)) * gauss(y - MOUTH_Y, 0.009) * front
    above_mouth = 1.0 - below_mouth

    # 0 jaw_open: lower lip and chin down (strongest at the lip), upper lip up a little
    e = 0
    low = below_mouth * jaw_w * np.exp(-((x / 0.035) ** 2)) * smoothstep(-0.11, -0.06, y)
    out[:, 1, e] = -0.007 * low
    out[:, 2, e] = -0.002 * low
    out[:, 1, e] += 0.0015 * above_mouth * lip_band
    # 1 smile: corners up, back and out; cheeks raise
    e = 1
    out[:, 1, e] = 0.0045 * corners + 0.002 * bump(ax, y, 0.035, -0.018, 0.012, 0.012) * front
    out[:, 0, e] = 0.003 * sx * corners
    out[:, 2, e] = -0.0025 * corners
    # 2 frown: corners down and slightly out, lower lip pushed up in the middle
    e = 2
    out[:, 1, e] = -0.0045 * corners + 0.0012 * bump(x, y, 0.0, MOUTH_Y - 0.012, 0.012, 0.008) * front
    out[:, 0, e] = 0.0012 * sx * corners
    # 3 brow_raise
    e = 3
    brow = gauss(y - 0.034, np.where(y > 0.034, 0.03, 0.009)) * np.exp(-((x / 0.05) ** 4))
    brow *= front * smoothstep(0.018, 0.026, y)
    out[:, 1, e] = 0.0065 * brow
    # 4 brow_furrow: inner brows down and together
    e = 4
    inner = bump(ax, y, 0.013, 0.032, 0.012, 0.008) * front * smoothstep(0.018, 0.026, y)
    out[:, 1, e] = -0.004 * inner
    out[:, 0, e] = -0.003 * sx * inner
    out[:, 2, e] = 0.0015 * inner
    # 5/6 blinks: lids close over the eyeball (upper 85 %, lower 15 %)
    for e, c in ((5, eye_c[0]), (6, eye_c[1])):
        dx, dy = x - c[0], y - c[1]
        rho = np.hypot(dx / EYE_HALF_W, dy / EYE_HALF_H)
        f = smoothstep(2.4, 1.0, rho) * (np.abs(dx) < 1.6 * EYE_HALF_W)
        yu = EYE_HALF_H * np.sqrt(np.clip(1.0 - (dx / EYE_HALF_W) ** 2, 0.0, None))
        disp = np.where(dy > 0, -1.7 * yu, 0.3 * yu) * f
        rl = EYE_R + LID_GAP

        def zs(yy: np.ndarray) -> np.ndarray:
            return np.sqrt(np.clip(rl**2 - dx**2 - yy**2, 0.0, None))

        bulge = 0.0018 * np.clip(1.0 - (dx / EYE_HALF_W) ** 2, 0.0, None) * f
        out[:, 1, e] = disp
        out[:, 2, e] = (zs(dy + disp) - zs(dy)) * f + bulge
    # 7 pucker: lips forward and towards the centre
    e = 7
    puck = np.exp(-((x / 0.03) ** 2)) * gauss(y - MOUTH_Y, 0.011) * front
    out[:, 2, e] = 0.007 * puck
    out[:, 0, e] = -0.3 * x * puck
    out[:, 1, e] = -0.25 * (y - MOUTH_Y) * puck
    # 8 cheek_puff: cheeks out (sideways and forward)
    e = 8
    ck = bump(ax, y, 0.042, -0.036, 0.016, 0.016) * front
    out[:, 0, e] = 0.007 * sx * ck
    out[:, 2, e] = 0.004 * ck
    # 9 sneer: upper lip and nose wings up at the sides
    e = 9
    sn = bump(ax, y, 0.012, -0.03, 0.010, 0.010) * front * (above_mouth + 0.2 * below_mouth)
    out[:, 1, e] = 0.0045 * sn
    out[:, 2, e] = 0.001 * sn
    # 10/11 mouth_left / mouth_right: the mouth slides sideways
    out[:, 0, 10] = 0.006 * mouth_reg
    out[:, 0, 11] = -0.006 * mouth_reg
    out[:, 2, 10] = out[:, 2, 11] = -0.001 * mouth_reg
    # 12 eyes_wide: upper lids up, lower lids down a little, both eyes
    e = 12
    for c in eye_c:
        dx, dy = x - c[0], y - c[1]
        rho = np.hypot(dx / EYE_HALF_W, dy / EYE_HALF_H)
        f = smoothstep(2.6, 1.0, rho) * (np.abs(dx) < 1.6 * EYE_HALF_W)
        prof = np.clip(1.0 - (dx / EYE_HALF_W) ** 2, 0.0, None)
        out[:, 1, e] += np.where(dy > 0, 0.0028, -0.0012) * prof * f
        out[:, 1, e] += 0.002 * bump(ax, y, EYE_X, 0.034, 0.018, 0.008) * front * (dy > 0)
    # 13 lips_press: lips together and rolled in
    e = 13
    press = lip_band * np.exp(-((y - MOUTH_Y) / 0.006) ** 2)
    out[:, 1, e] = np.where(above_mouth > 0.5, -0.0012, 0.0012) * press
    out[:, 2, e] = -0.003 * press
    return out


# ------------------------------------------------------------------------ builder
def build_demo_head(seed: int = 0) -> HeadModel:
    """Builds the procedural demo head.

    Args:
        seed: varies the head proportions by at most ±2 % (symmetrically);
            the same seed always gives the same arrays. Seed 0 is the reference head.
    Returns:
        A :class:`~engine.head_model.HeadModel` named :data:`DEMO_HEAD_NAME` with
        ~4.8k vertices, :data:`DEMO_SHAPE_NAMES` shape and :data:`DEMO_EXPRESSION_NAMES`
        expression components, 5 FLAME-like joints and the mouth faces.
    """
    rng = np.random.default_rng(seed)
    scale = np.ones(3) if seed == 0 else 1.0 + 0.02 * (2.0 * rng.random(3) - 1.0)
    skin = build_skin(scale)
    Vs = len(skin.pos)

    # eyeballs: left (+x) then right (-x)
    parts_v, parts_uv, parts_f, parts_ft = [skin.pos], [skin.uv], [skin.faces], [skin.faces_uv]
    v_off, t_off = Vs, len(skin.uv)
    eye_ranges = []
    for c, island in zip(skin.eye_centres, UV_EYES):
        pv, puv, pf, pft = eyeball(c, island, v_off, t_off)
        parts_v.append(pv)
        parts_uv.append(puv)
        parts_f.append(pf)
        parts_ft.append(pft)
        eye_ranges.append(np.arange(v_off, v_off + len(pv)))
        v_off += len(pv)
        t_off += len(puv)
    verts = np.concatenate(parts_v)
    uvs = np.concatenate(parts_uv)
    faces = np.concatenate(parts_f)
    faces_uv = np.concatenate(parts_ft)
    V = len(verts)
    J = len(FLAME_JOINT_NAMES)
    x, y, z = verts[:, 0], verts[:, 1], verts[:, 2]
    is_eye = np.zeros(V, dtype=bool)
    for r in eye_ranges:
        is_eye[r] = True
    skin_idx = np.arange(Vs)
    neck_row0 = HEAD_ROWS - 1  # last head ring (row index in the ring grid)

    # ---- skinning weights
    theta = np.arctan2(x, z - CENTRE[2])
    lateral = smoothstep(1.5, 0.9, np.abs(theta))
    x_c = MOUTH_HALF_W
    sharp = np.where(skin.is_lower_lip, 1.0, np.where(skin.is_upper_lip, 0.0, (y[:Vs] < MOUTH_Y - 1e-4) * 1.0))
    y_t = MOUTH_Y + 0.022 * smoothstep(0.5, 1.3, np.abs(theta[:Vs]))
    smooth = smoothstep(y_t + 0.006, y_t - 0.014, y[:Vs])
    s = smoothstep(1.4 * x_c, 0.7 * x_c, np.abs(x[:Vs]))
    vertical = s * sharp + (1.0 - s) * smooth
    neck_t = np.clip((skin.row - neck_row0) / NECK_ROWS, 0.0, 1.0)
    w_root = smoothstep(0.3, 1.0, neck_t)
    w_jaw = lateral[:Vs] * vertical * smoothstep(0.5, 0.0, neck_t) * (1.0 - w_root)
    W = np.zeros((V, J))
    W[:Vs, 0] = w_root
    W[:Vs, 2] = w_jaw
    W[:Vs, 1] = 1.0 - w_root - w_jaw
    W[eye_ranges[0], 3] = 1.0
    W[eye_ranges[1], 4] = 1.0

    # ---- joint regressor
    Jreg = np.zeros((J, V))
    bottom = skin_idx[skin.row == HEAD_ROWS + NECK_ROWS - 1]
    Jreg[0, bottom] = 1.0 / len(bottom)
    top_neck = skin_idx[skin.row == neck_row0 + 1]
    Jreg[1, top_neck] = 1.0 / len(top_neck)
    hinge = np.array([MOUTH_Y + 0.028, -0.028])  # (y, z) of the jaw hinge
    side = skin_idx[(x[:Vs] > 0.03) & ~skin.is_lower_lip & ~skin.is_upper_lip]
    d = np.hypot(y[side] - hinge[0], z[side] - hinge[1])
    near = side[np.argsort(d, kind="stable")[:4]]
    wts = gauss(np.hypot(y[near] - hinge[0], z[near] - hinge[1]), 0.01)
    for vi, wi in zip(near, wts):
        mirror = int(np.argmin(np.sum((verts[:Vs] - verts[vi] * np.array([-1.0, 1.0, 1.0])) ** 2, axis=1)))
        Jreg[2, vi] += wi
        Jreg[2, mirror] += wi
    Jreg[2] /= Jreg[2].sum()
    Jreg[3, eye_ranges[0]] = 1.0 / len(eye_ranges[0])
    Jreg[4, eye_ranges[1]] = 1.0 / len(eye_ranges[1])

    # ---- bases
    shapedirs = np.zeros((V, 3, len(DEMO_SHAPE_NAMES)))
    shapedirs[:Vs] = _shape_fields(verts[:Vs])
    for r, c in zip(eye_ranges, skin.eye_centres):
        shapedirs[r] = _shape_fields(c[None])  # eyeballs move rigidly
    exprdirs = np.zeros((V, 3, len(DEMO_EXPRESSION_NAMES)))
    exprdirs[:Vs] = _expression_fields(verts[:Vs], skin.is_upper_lip, skin.is_lower_lip, w_jaw, skin.eye_centres)

    # pose correctives [(J-1)*9, V*3]: row 9 + 7 is (R_jaw - I)[2, 1] = sin(angle) for a
    # rotation about +x (jaw opening); the cheeks by the mouth corners drop and sink.
    posedirs = np.zeros(((J - 1) * 9, V, 3))
    cheek = bump(np.abs(x), y, x_c + 0.004, MOUTH_Y - 0.004, 0.012, 0.012) * (~is_eye)
    posedirs[9 + 7, :, 1] = -0.006 * cheek
    posedirs[9 + 7, :, 2] = -0.004 * cheek
    posedirs = posedirs.reshape((J - 1) * 9, V * 3)

    uvs, mouth_faces, mouth_faces_uv = close_mouth(uvs, faces, faces_uv, verts)
    return HeadModel(
        name=DEMO_HEAD_NAME,
        v_template=verts,
        faces=faces,
        shapedirs=shapedirs,
        exprdirs=exprdirs,
        posedirs=posedirs,
        J_regressor=Jreg,
        parents=np.array([-1, 0, 1, 1, 1]),
        lbs_weights=W,
        joint_names=list(FLAME_JOINT_NAMES),
        uvs=uvs,
        faces_uv=faces_uv,
        mouth_faces=mouth_faces,
        mouth_faces_uv=mouth_faces_uv,
    )


def write_demo_head(path: str | os.PathLike, seed: int = 0) -> HeadModel:
    """Builds the demo head and writes it as a head-model ``.npz`` (atomic).

    Args:
        path: destination, e.g. ``demo_head.npz``.
        seed: see :func:`build_demo_head`.
    Returns:
        The model that was written.
    """
    model = build_demo_head(seed)
    model.save_npz(path)
    return model
