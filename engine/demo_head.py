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
  :func:`engine.mouth.mouth_closing_faces` like FLAME's;
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
from dataclasses import dataclass

import numpy as np

from engine.head_model import FLAME_JOINT_NAMES, HeadModel
from engine.mouth import mouth_closing_faces

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

# ----------------------------------------------------------------- dimensions (m)
_N_LON = 80  # skin columns (even: column N/2 is the front midline)
_ALPHA = 0.5  # column warp: front spacing = ALPHA x uniform (denser face)
_A = np.array([0.074, 0.115, 0.092])  # ellipsoid semi-axes x, y, z
_C = np.array([0.0, 0.0, -0.005])  # ellipsoid centre
_PHI_END = 0.8 * np.pi  # last head row (under the jaw); the neck continues below
_NECK_ROWS = 6
_NECK_BOTTOM_Y = -0.165
_NECK_R = np.array([0.043, 0.048])  # neck ellipse radii x, z
_NECK_Z = -0.014

_EYE_X, _EYE_Y = 0.032, 0.018  # eye centres (±x)
_EYE_HALF_W, _EYE_HALF_H = 0.011, 0.0048  # eye opening (3D, approx.)
_EYE_R = 0.0125  # eyeball radius
_LID_GAP = 0.0006  # lid surface offset from the eyeball
_EYE_RINGS, _EYE_LON = 12, 16

_MOUTH_Y = -0.045
_MOUTH_HALF_W = 0.024
_LIP_GAP = 0.0008  # half the rest opening at the lip centre

_CHIN_Y = -0.072

# UV layout islands (u0, v0, u1, v1), OBJ convention.
_UV_SKIN = (0.01, 0.24, 0.99, 0.99)
_UV_EYES = ((0.01, 0.01, 0.22, 0.22), (0.24, 0.01, 0.45, 0.22))


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    """Hermite step from 0 at ``e0`` to 1 at ``e1`` (``e0 > e1`` gives a falling step)."""
    t = np.clip((np.asarray(x, dtype=np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _gauss(d: np.ndarray, s: float) -> np.ndarray:
    return np.exp(-((d / s) ** 2))


def _bump(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-(((x - cx) / sx) ** 2) - ((y - cy) / sy) ** 2)


# --------------------------------------------------------------- parameterisation
def _theta_of_col(c: np.ndarray) -> np.ndarray:
    """Longitude (rad, 0 = front, ±π = back seam) of a continuous column index in [0, N]."""
    s = 2.0 * np.asarray(c, dtype=np.float64) / _N_LON - 1.0
    return np.pi * (_ALPHA * s + (1.0 - _ALPHA) * s**3)


_COL_TABLE = np.linspace(0.0, _N_LON, 8001)
_THETA_TABLE = _theta_of_col(_COL_TABLE)


def _col_of_theta(theta: np.ndarray) -> np.ndarray:
    return np.interp(theta, _THETA_TABLE, _COL_TABLE)


def _row_density(phi: np.ndarray) -> np.ndarray:
    """Head rows per radian of latitude: denser from the brows to under the chin."""
    band = _smoothstep(0.95, 1.2, phi) * (1.0 - _smoothstep(2.3, 2.5, phi))
    return 9.0 + 21.0 * band


def _row_table() -> tuple[np.ndarray, np.ndarray]:
    phi = np.linspace(0.0, _PHI_END, 4001)
    dens = _row_density(phi)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(phi))])
    n_rows = int(round(cum[-1]))
    return phi, cum * (n_rows / cum[-1])


_PHI_TABLE, _ROWPOS_TABLE = _row_table()
_HEAD_ROWS = int(round(_ROWPOS_TABLE[-1]))  # ring rows 1.._HEAD_ROWS (row 0 = crown pole)


def _phi_of_row(r: np.ndarray) -> np.ndarray:
    return np.interp(r, _ROWPOS_TABLE, _PHI_TABLE)


def _row_of_phi(phi: np.ndarray) -> np.ndarray:
    return np.interp(phi, _PHI_TABLE, _ROWPOS_TABLE)


def _ellipsoid(theta: np.ndarray, phi: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Base skull: an ellipsoid narrowing at the jaw. [..., 3]"""
    taper_x = 1.0 - (0.10 + 0.12 * np.clip(np.cos(theta), 0.0, None)) * _smoothstep(1.45, 2.45, phi)
    taper_z = 1.0 - 0.08 * _smoothstep(1.9, 2.5, phi)
    a = _A * scale
    # a broader crown than an ellipsoid's: sin(phi)^0.75 above the equator
    sp = np.sin(phi) ** np.where(phi < 0.5 * np.pi, 0.75, 1.0)
    x = a[0] * taper_x * sp * np.sin(theta)
    y = a[1] * np.cos(phi)
    z = a[2] * taper_z * sp * np.cos(theta)
    return np.stack([x, y, z], axis=-1) + _C


def _face_relief(x: np.ndarray, y: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Forward (+z) relief of the face (brow, sockets, nose, lips, chin), meters."""
    front = _smoothstep(0.25, 0.75, np.cos(theta))
    ax = np.abs(x)
    dz = np.zeros_like(x)
    # brow ridge
    dz += 0.0045 * _gauss(y - 0.036, 0.007) * np.exp(-((x / 0.048) ** 4))
    # eye sockets and cheekbones
    dz -= 0.0045 * _bump(ax, y, _EYE_X, _EYE_Y, 0.016, 0.011)
    dz += 0.0030 * _bump(ax, y, 0.046, -0.006, 0.014, 0.012)
    # nose: a ridge growing from the bridge to the tip, alae at the base
    t = np.clip((0.016 - y) / 0.034, 0.0, 1.0)  # 0 at the bridge, 1 at the tip (y=-0.018)
    height = (0.004 + 0.013 * t**1.3) * np.where(y < -0.018, _gauss(y + 0.018, 0.0055), 1.0)
    height *= _smoothstep(0.024, 0.012, y)  # fade in at the bridge
    width = 0.0055 + 0.0035 * t
    dz += height * _gauss(x, width)
    dz += 0.003 * _bump(x, y, 0.0, -0.016, 0.007, 0.005)  # rounded tip
    dz += 0.0065 * _bump(ax, y, 0.012, -0.021, 0.006, 0.006)
    # muzzle, lips and chin
    dz += 0.0045 * _bump(x, y, 0.0, -0.042, 0.030, 0.020)
    lip_x = np.exp(-((x / 0.022) ** 4))
    dz += 0.0045 * _gauss(y - (_MOUTH_Y + 0.0042), 0.0038) * lip_x
    dz += 0.0040 * _gauss(y - (_MOUTH_Y - 0.0052), 0.0042) * lip_x
    dz -= 0.0025 * _bump(x, y, 0.0, -0.058, 0.018, 0.004)  # crease under the lower lip
    dz += 0.0065 * _bump(x, y, 0.0, _CHIN_Y, 0.015, 0.010)
    return dz * front


@dataclass
class _Skin:
    """Intermediate skin grid (before compaction)."""

    pos: np.ndarray  # [N, 3]
    uv: np.ndarray  # [Nuv, 2]
    faces: np.ndarray  # [F, 3]
    faces_uv: np.ndarray  # [F, 3]
    row: np.ndarray  # [N] ring row of each vertex (-1 crown pole), neck rows > _HEAD_ROWS
    is_lower_lip: np.ndarray  # [N] bool (slit duplicates)
    is_upper_lip: np.ndarray  # [N] bool (slit originals)
    eye_centres: np.ndarray  # [2, 3] left (+x), right (-x)


def _eye_param(sign: float, scale: np.ndarray) -> tuple[float, float, float, float]:
    """Eye-hole ellipse centre and half-axes in (theta, phi)."""
    a = _A * scale
    phi_e = float(np.arccos((_EYE_Y - _C[1]) / a[1]))
    sin_p = np.sin(phi_e) ** (0.75 if phi_e < 0.5 * np.pi else 1.0)
    th_e = 0.0
    for _ in range(20):  # taper_x depends on theta: fixed-point solve x(theta) = _EYE_X
        taper_x = 1.0 - (0.10 + 0.12 * max(np.cos(th_e), 0.0)) * float(_smoothstep(1.45, 2.45, phi_e))
        th_e = float(np.arcsin(_EYE_X / (a[0] * taper_x * sin_p)))
    w = _EYE_HALF_W / (np.hypot(a[0] * taper_x * np.cos(th_e), a[2] * np.sin(th_e)) * sin_p)
    h = _EYE_HALF_H / (a[1] * np.sin(phi_e))
    return sign * th_e, phi_e, float(w), float(h)


def _build_skin(scale: np.ndarray) -> _Skin:
    n = _N_LON
    R = _HEAD_ROWS + _NECK_ROWS  # ring rows (row index 0 is the first ring under the pole)
    # ---- parameters of every grid vertex (rows 0..R-1 -> head rows 1..H then neck)
    theta = np.tile(_theta_of_col(np.arange(n))[None, :], (R, 1))
    head_r = np.arange(1, _HEAD_ROWS + 1, dtype=np.float64)
    phi_rows = _phi_of_row(head_r)
    phi = np.zeros((R, n))
    phi[:_HEAD_ROWS] = phi_rows[:, None]
    phi[_HEAD_ROWS:] = _PHI_END

    # ---- eye holes: drop cells whose centre is inside the ellipse, snap rims onto it
    eyes = [_eye_param(+1.0, scale), _eye_param(-1.0, scale)]
    cell_keep = np.ones((R - 1, n), dtype=bool)
    th_cell = _theta_of_col(np.arange(n) + 0.5)
    for th_e, ph_e, w, h in eyes:
        ph_cell = 0.5 * (phi[:-1, 0] + phi[1:, 0])
        inside = ((th_cell[None, :] - th_e) / w) ** 2 + ((ph_cell[:, None] - ph_e) / h) ** 2 < 1.0
        cell_keep &= ~inside
    # two triangles per cell, corners as (row, col); diagonal b-c right of the midline and
    # a-d left of it, so the mesh is mirror-symmetric in x
    ci, cj = np.meshgrid(np.arange(R - 1), np.arange(n), indexing="ij")
    cjn = (cj + 1) % n
    A_, B_, C_, D_ = (ci, cj), (ci + 1, cj), (ci, cjn), (ci + 1, cjn)
    right = cj >= n // 2

    def pick(p_r, p_l):
        return tuple(np.where(right, pr, pl) for pr, pl in zip(p_r, p_l))

    tri_rc = [  # each: 3 corners x (row array, col array)
        (A_, B_, pick(C_, D_)),
        (pick(C_, A_), pick(B_, D_), pick(D_, C_)),
    ]
    tri_keep = [cell_keep.copy(), cell_keep.copy()]
    touched = np.zeros((R, n), dtype=bool)  # corner of a removed cell
    for corner in (A_, B_, C_, D_):
        np.logical_or.at(touched, (corner[0][~cell_keep], corner[1][~cell_keep]), True)

    def usage() -> np.ndarray:
        u = np.zeros((R, n), dtype=bool)
        for tri, keep in zip(tri_rc, tri_keep):
            for corner in tri:
                u[corner[0][keep], corner[1][keep]] = True
        return u

    used = usage()
    rim = used & touched
    # a kept triangle with all three corners on the rim would become a sliver: drop it
    for tri, keep in zip(tri_rc, tri_keep):
        keep &= ~(rim[tri[0]] & rim[tri[1]] & rim[tri[2]])
    used = usage()
    rim = used & touched
    for th_e, ph_e, w, h in eyes:
        ex, ey = (theta - th_e) / w, (phi - ph_e) / h
        rho = np.hypot(ex, ey)
        sel = rim & (rho < 3.0)
        theta[sel] = th_e + w * ex[sel] / rho[sel]
        phi[sel] = ph_e + h * ey[sel] / rho[sel]
    # relax the vertices around each hole (rims fixed) so triangles stay well shaped
    free = np.zeros((R, n), dtype=bool)
    for th_e, ph_e, w, h in eyes:
        free |= np.hypot((theta - th_e) / w, (phi - ph_e) / h) < 2.2
    free &= used & ~rim
    free[0] = free[-1] = False
    for _ in range(12):
        nb_t = np.zeros((R, n))
        nb_p = np.zeros((R, n))
        cnt = np.zeros((R, n))
        for sh_i, sh_j in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            ok = np.roll(used, (sh_i, sh_j), axis=(0, 1))
            nb_t += np.where(ok, np.roll(theta, (sh_i, sh_j), axis=(0, 1)), 0.0)
            nb_p += np.where(ok, np.roll(phi, (sh_i, sh_j), axis=(0, 1)), 0.0)
            cnt += ok
        upd = free & (cnt > 0)
        theta[upd] = 0.5 * theta[upd] + 0.5 * nb_t[upd] / cnt[upd]
        phi[upd] = 0.5 * phi[upd] + 0.5 * nb_p[upd] / cnt[upd]

    # ---- 3D positions
    pos = _ellipsoid(theta, phi, scale)
    x0, y0 = pos[..., 0], pos[..., 1]
    pos[..., 2] += _face_relief(x0, y0, theta)
    # neck rings: from the last head ring to an ellipse, going down
    last = pos[_HEAD_ROWS - 1]
    th0 = theta[_HEAD_ROWS - 1]
    for k in range(1, _NECK_ROWS + 1):
        t = k / _NECK_ROWS
        b = _smoothstep(0.0, 0.6, t)
        ring = np.stack(
            [_NECK_R[0] * np.sin(th0), np.zeros(n), _NECK_Z + _NECK_R[1] * np.cos(th0)], axis=-1
        )
        p = (1.0 - b)[..., None] * last + b * ring
        p[:, 1] = (1.0 - t) * last[:, 1] + t * _NECK_BOTTOM_Y
        pos[_HEAD_ROWS - 1 + k] = p

    # eyeball centres from the socket surface, then let the lids hug the eyeballs
    eye_centres = []
    for th_e, ph_e, w, h in eyes:
        p = _ellipsoid(np.array(th_e), np.array(ph_e), scale)
        p[2] += _face_relief(p[None, 0], p[None, 1], np.array([th_e]))[0]
        eye_centres.append(np.array([p[0], p[1], p[2] - _EYE_R + 0.0015]))
    eye_centres = np.stack(eye_centres)
    for (th_e, ph_e, w, h), c in zip(eyes, eye_centres):
        rho = np.hypot((theta - th_e) / w, (phi - ph_e) / h)
        wgt = _smoothstep(1.7, 1.0, rho) * used
        d2 = (pos[..., 0] - c[0]) ** 2 + (pos[..., 1] - c[1]) ** 2
        z_hug = c[2] + np.sqrt(np.clip((_EYE_R + _LID_GAP) ** 2 - d2, 0.0, None))
        pos[..., 2] = (1.0 - wgt) * pos[..., 2] + wgt * np.maximum(z_hug, pos[..., 2] - 0.004)
        # nowhere may the eyeball poke through the skin around the hole
        inside = (d2 < (_EYE_R + _LID_GAP) ** 2) & (rho < 3.0)
        pos[..., 2] = np.where(inside, np.maximum(pos[..., 2], z_hug), pos[..., 2])

    # ---- vertex ids: pole, grid, slit duplicates
    ids = np.full((R, n), -1, dtype=np.int64)
    ids[used] = 1 + np.arange(int(used.sum()))
    pole = 0
    n_grid = 1 + int(used.sum())
    verts = [np.array([[0.0, _A[1] * scale[1] + _C[1], _C[2]]]), pos[used]]
    row_of = [np.array([-1]), np.nonzero(used)[0]]

    # mouth slit along the head row nearest the mouth height
    i_m = int(np.argmin(np.abs(phi_rows - np.arccos((_MOUTH_Y - _C[1]) / (_A[1] * scale[1])))))
    x_row = pos[i_m, :, 0]
    k = int(np.argmin(np.abs(x_row[n // 2:] - _MOUTH_HALF_W)))
    c0, c1 = n // 2 - k, n // 2 + k
    slit_cols = np.arange(c0 + 1, c1)
    dup_ids = n_grid + np.arange(len(slit_cols))
    lip_prof = 1.0 - (x_row[slit_cols] / x_row[c1]) ** 2
    up = pos[i_m, slit_cols].copy()
    lo = up.copy()
    up[:, 1] += _LIP_GAP * lip_prof
    lo[:, 1] -= _LIP_GAP * lip_prof
    up[:, 2] -= 0.0008 * lip_prof
    lo[:, 2] -= 0.0008 * lip_prof
    verts[1][ids[i_m, slit_cols] - 1] = up
    verts.append(lo)
    row_of.append(np.full(len(slit_cols), i_m))
    V_skin = n_grid + len(slit_cols)
    is_lower = np.zeros(V_skin, dtype=bool)
    is_lower[dup_ids] = True
    is_upper = np.zeros(V_skin, dtype=bool)
    is_upper[ids[i_m, slit_cols]] = True

    # ---- UVs: grid (with a seam column), crown fan, slit duplicates
    u0, v0, u1, v1 = _UV_SKIN
    col_c = _col_of_theta(theta)
    col_c = np.where(np.arange(n)[None, :] == 0, 0.0, col_c)  # back seam column stays at u0
    rowpos = np.where(
        np.arange(R)[:, None] < _HEAD_ROWS,
        _row_of_phi(phi),
        _HEAD_ROWS + (np.arange(R)[:, None] - (_HEAD_ROWS - 1)) * 1.0,
    )
    total_rows = _HEAD_ROWS + _NECK_ROWS
    uv_v = v1 - (v1 - v0) * rowpos / total_rows
    uv_grid = np.zeros((R, n + 1, 2))
    uv_grid[:, :n, 0] = u0 + (u1 - u0) * col_c / n
    uv_grid[:, n, 0] = u1
    uv_grid[:, :n, 1] = uv_v
    uv_grid[:, n, 1] = uv_v[:, 0]
    row_h = (v1 - v0) / total_rows
    uv_lip = 0.35 * row_h * lip_prof
    uv_grid[i_m, slit_cols, 1] += uv_lip
    uv_ids = np.arange(R * (n + 1)).reshape(R, n + 1)
    uv_fan = np.stack([u0 + (u1 - u0) * (np.arange(n) + 0.5) / n, np.full(n, v1)], axis=-1)
    fan_ids = R * (n + 1) + np.arange(n)
    uv_dup = uv_grid[i_m, slit_cols].copy()
    uv_dup[:, 1] -= 2.0 * uv_lip
    dup_uv_ids = R * (n + 1) + n + np.arange(len(slit_cols))
    uvs = np.concatenate([uv_grid.reshape(-1, 2), uv_fan, uv_dup])

    # ---- faces
    faces: list[np.ndarray] = []
    faces_uv: list[np.ndarray] = []
    j = np.arange(n)
    jn = (j + 1) % n
    faces.append(np.stack([np.full(n, pole), ids[0, j], ids[0, jn]], axis=-1))
    faces_uv.append(np.stack([fan_ids, uv_ids[0, j], uv_ids[0, j + 1]], axis=-1))
    dup_of = np.full(n, -1, dtype=np.int64)
    dup_of[slit_cols] = dup_ids
    dupuv_of = np.full(n, -1, dtype=np.int64)
    dupuv_of[slit_cols] = dup_uv_ids
    for tri, keep in zip(tri_rc, tri_keep):
        vi = np.stack([ids[r[keep], c[keep]] for r, c in tri], axis=-1)
        ti = []
        for r, c in tri:
            rr, cc = r[keep], c[keep]
            # uv column: the cell's right corners use column j + 1 (n at the seam)
            cell_j = cj[keep]
            ti.append(uv_ids[rr, np.where(cc == (cell_j + 1) % n, cell_j + 1, cell_j)])
        ti = np.stack(ti, axis=-1)
        # cells just under the slit take the lower-lip duplicates on their top edge
        for k3, (r, c) in enumerate(tri):
            rr, cc = r[keep], c[keep]
            sel = (rr == i_m) & (ci[keep] == i_m) & (dup_of[cc] >= 0)
            vi[sel, k3] = dup_of[cc[sel]]
            ti[sel, k3] = dupuv_of[cc[sel]]
        faces.append(vi)
        faces_uv.append(ti)
    F = np.concatenate(faces)
    FT = np.concatenate(faces_uv)
    assert F.min() >= 0, "skin face references a dropped vertex"

    # compact UVs (drop those of removed cells)
    used_uv = np.unique(FT)
    remap = np.full(len(uvs), -1, dtype=np.int64)
    remap[used_uv] = np.arange(len(used_uv))
    return _Skin(
        pos=np.concatenate(verts),
        uv=uvs[used_uv],
        faces=F,
        faces_uv=remap[FT],
        row=np.concatenate(row_of),
        is_lower_lip=is_lower,
        is_upper_lip=is_upper,
        eye_centres=eye_centres,
    )


def _eyeball(centre: np.ndarray, island: tuple[float, float, float, float], v_off: int, t_off: int):
    """A UV-sphere eyeball (pole up, seam at the back, front at the island centre)."""
    K, L = _EYE_RINGS, _EYE_LON
    lat = np.pi * np.arange(1, K) / K  # K-1 rings
    lon = -np.pi + 2.0 * np.pi * np.arange(L) / L
    ring = np.stack(
        [
            np.sin(lat)[:, None] * np.sin(lon)[None, :],
            np.cos(lat)[:, None] * np.ones(L)[None, :],
            np.sin(lat)[:, None] * np.cos(lon)[None, :],
        ],
        axis=-1,
    ).reshape(-1, 3)
    pts = np.concatenate([[[0.0, 1.0, 0.0]], ring, [[0.0, -1.0, 0.0]]]) * _EYE_R + centre
    top, bot = 0, 1 + (K - 1) * L
    rid = 1 + np.arange((K - 1) * L).reshape(K - 1, L)
    u0, v0, u1, v1 = island
    uv_ring = np.stack(
        np.meshgrid(u0 + (u1 - u0) * np.arange(L + 1) / L, v1 - (v1 - v0) * np.arange(1, K) / K),
        axis=-1,
    ).reshape(-1, 2)
    uid = np.arange((K - 1) * (L + 1)).reshape(K - 1, L + 1)
    ucen = u0 + (u1 - u0) * (np.arange(L) + 0.5) / L
    uv_top = np.stack([ucen, np.full(L, v1)], -1)
    uv_bot = np.stack([ucen, np.full(L, v0)], -1)
    top_ids = (K - 1) * (L + 1) + np.arange(L)
    bot_ids = top_ids + L
    uvs = np.concatenate([uv_ring, uv_top, uv_bot])

    j = np.arange(L)
    jn = (j + 1) % L
    faces = [np.stack([np.full(L, top), rid[0, j], rid[0, jn]], -1)]
    fuv = [np.stack([top_ids, uid[0, j], uid[0, j + 1]], -1)]
    for i in range(K - 2):
        a, b, c, d = rid[i, j], rid[i + 1, j], rid[i, jn], rid[i + 1, jn]
        ta, tb, tc, td = uid[i, j], uid[i + 1, j], uid[i, j + 1], uid[i + 1, j + 1]
        faces += [np.stack([a, b, c], -1), np.stack([c, b, d], -1)]
        fuv += [np.stack([ta, tb, tc], -1), np.stack([tc, tb, td], -1)]
    faces.append(np.stack([rid[-1, j], np.full(L, bot), rid[-1, jn]], -1))
    fuv.append(np.stack([uid[-1, j], bot_ids, uid[-1, j + 1]], -1))
    return pts, uvs, np.concatenate(faces) + v_off, np.concatenate(fuv) + t_off


# ------------------------------------------------------------- deformation fields
def _shape_fields(p: np.ndarray) -> np.ndarray:
    """Identity displacement fields at points p [N, 3] -> [N, 3, S] (meters per unit)."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    ax = np.abs(x)
    sx = np.sign(x)
    N = len(p)
    out = np.zeros((N, 3, len(DEMO_SHAPE_NAMES)))
    above_neck = _smoothstep(-0.11, -0.08, y)
    front = _smoothstep(0.0, 0.04, z)
    # head_width
    out[:, 0, 0] = 0.007 * x / _A[0] * above_neck
    # head_height (cranium up)
    out[:, 1, 1] = 0.008 * np.clip((y - 0.02) / 0.095, 0.0, None)
    # head_depth (back of the skull)
    out[:, 2, 2] = -0.008 * np.clip(-(z - 0.02) / 0.1, 0.0, None) * above_neck
    # face_length (lower face down, in front)
    out[:, 1, 3] = -0.006 * _smoothstep(0.01, -0.08, y) * front * above_neck
    # nose_length (tip forward and down)
    nose = _bump(x, y, 0.0, -0.012, 0.008, 0.016) * front
    out[:, 2, 4] = 0.005 * nose
    out[:, 1, 4] = -0.0015 * nose
    # nose_width
    out[:, 0, 5] = 0.003 * sx * _bump(ax, y, 0.010, -0.018, 0.007, 0.008) * front
    # chin_forward
    out[:, 2, 6] = 0.006 * _bump(x, y, 0.0, _CHIN_Y, 0.018, 0.013) * front
    # jaw_width
    out[:, 0, 7] = 0.006 * sx * _smoothstep(0.02, 0.06, ax) * _bump(0.0, y, 0.0, -0.06, 1.0, 0.025)
    # cheek_fullness (outwards and forward)
    ck = _bump(ax, y, 0.045, -0.02, 0.016, 0.016) * front
    out[:, 0, 8] = 0.003 * sx * ck
    out[:, 2, 8] = 0.003 * ck
    # brow_ridge
    out[:, 2, 9] = 0.004 * _gauss(y - 0.036, 0.008) * np.exp(-((x / 0.05) ** 4)) * front
    # lip_fullness
    lips = np.exp(-((x / 0.024) ** 4)) * _gauss(y - _MOUTH_Y, 0.008) * front
    out[:, 2, 10] = 0.003 * lips
    out[:, 1, 10] = 0.0012 * np.tanh((y - _MOUTH_Y) / 0.003) * lips
    # eye_spacing (eye regions move apart, eyeballs with them)
    out[:, 0, 11] = 0.003 * sx * _bump(ax, y, _EYE_X, _EYE_Y, 0.02, 0.016)
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
    front = _smoothstep(0.0, 0.04, z)
    below_mouth = np.where(is_lower, 1.0, np.where(is_upper, 0.0, _smoothstep(_MOUTH_Y + 0.002, _MOUTH_Y - 0.004, y)))
    mouth_reg = _bump(x, y, 0.0, _MOUTH_Y, 0.026, 0.02) * front
    corners = _bump(ax, y, _MOUTH_HALF_W, _MOUTH_Y, 0.009, 0.009) * front
    lip_band = np.exp(-((x / 0.026) ** 4)) * _gauss(y - _MOUTH_Y, 0.009) * front
    above_mouth = 1.0 - below_mouth

    # 0 jaw_open: lower lip and chin down (strongest at the lip), upper lip up a little
    e = 0
    low = below_mouth * jaw_w * np.exp(-((x / 0.035) ** 2)) * _smoothstep(-0.11, -0.06, y)
    out[:, 1, e] = -0.007 * low
    out[:, 2, e] = -0.002 * low
    out[:, 1, e] += 0.0015 * above_mouth * lip_band
    # 1 smile: corners up, back and out; cheeks raise
    e = 1
    out[:, 1, e] = 0.0045 * corners + 0.002 * _bump(ax, y, 0.035, -0.018, 0.012, 0.012) * front
    out[:, 0, e] = 0.003 * sx * corners
    out[:, 2, e] = -0.0025 * corners
    # 2 frown: corners down and slightly out, lower lip pushed up in the middle
    e = 2
    out[:, 1, e] = -0.0045 * corners + 0.0012 * _bump(x, y, 0.0, _MOUTH_Y - 0.012, 0.012, 0.008) * front
    out[:, 0, e] = 0.0012 * sx * corners
    # 3 brow_raise
    e = 3
    brow = _gauss(y - 0.034, np.where(y > 0.034, 0.03, 0.009)) * np.exp(-((x / 0.05) ** 4))
    brow *= front * _smoothstep(0.018, 0.026, y)
    out[:, 1, e] = 0.0065 * brow
    # 4 brow_furrow: inner brows down and together
    e = 4
    inner = _bump(ax, y, 0.013, 0.032, 0.012, 0.008) * front * _smoothstep(0.018, 0.026, y)
    out[:, 1, e] = -0.004 * inner
    out[:, 0, e] = -0.003 * sx * inner
    out[:, 2, e] = 0.0015 * inner
    # 5/6 blinks: lids close over the eyeball (upper 85 %, lower 15 %)
    for e, c in ((5, eye_c[0]), (6, eye_c[1])):
        dx, dy = x - c[0], y - c[1]
        rho = np.hypot(dx / _EYE_HALF_W, dy / _EYE_HALF_H)
        f = _smoothstep(2.4, 1.0, rho) * (np.abs(dx) < 1.6 * _EYE_HALF_W)
        yu = _EYE_HALF_H * np.sqrt(np.clip(1.0 - (dx / _EYE_HALF_W) ** 2, 0.0, None))
        disp = np.where(dy > 0, -1.7 * yu, 0.3 * yu) * f
        rl = _EYE_R + _LID_GAP

        def zs(yy: np.ndarray) -> np.ndarray:
            return np.sqrt(np.clip(rl**2 - dx**2 - yy**2, 0.0, None))

        bulge = 0.0018 * np.clip(1.0 - (dx / _EYE_HALF_W) ** 2, 0.0, None) * f
        out[:, 1, e] = disp
        out[:, 2, e] = (zs(dy + disp) - zs(dy)) * f + bulge
    # 7 pucker: lips forward and towards the centre
    e = 7
    puck = np.exp(-((x / 0.03) ** 2)) * _gauss(y - _MOUTH_Y, 0.011) * front
    out[:, 2, e] = 0.007 * puck
    out[:, 0, e] = -0.3 * x * puck
    out[:, 1, e] = -0.25 * (y - _MOUTH_Y) * puck
    # 8 cheek_puff: cheeks out (sideways and forward)
    e = 8
    ck = _bump(ax, y, 0.042, -0.036, 0.016, 0.016) * front
    out[:, 0, e] = 0.007 * sx * ck
    out[:, 2, e] = 0.004 * ck
    # 9 sneer: upper lip and nose wings up at the sides
    e = 9
    sn = _bump(ax, y, 0.012, -0.03, 0.010, 0.010) * front * (above_mouth + 0.2 * below_mouth)
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
        rho = np.hypot(dx / _EYE_HALF_W, dy / _EYE_HALF_H)
        f = _smoothstep(2.6, 1.0, rho) * (np.abs(dx) < 1.6 * _EYE_HALF_W)
        prof = np.clip(1.0 - (dx / _EYE_HALF_W) ** 2, 0.0, None)
        out[:, 1, e] += np.where(dy > 0, 0.0028, -0.0012) * prof * f
        out[:, 1, e] += 0.002 * _bump(ax, y, _EYE_X, 0.034, 0.018, 0.008) * front * (dy > 0)
    # 13 lips_press: lips together and rolled in
    e = 13
    press = lip_band * np.exp(-((y - _MOUTH_Y) / 0.006) ** 2)
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
    skin = _build_skin(scale)
    Vs = len(skin.pos)

    # eyeballs: left (+x) then right (-x)
    parts_v, parts_uv, parts_f, parts_ft = [skin.pos], [skin.uv], [skin.faces], [skin.faces_uv]
    v_off, t_off = Vs, len(skin.uv)
    eye_ranges = []
    for c, island in zip(skin.eye_centres, _UV_EYES):
        pv, puv, pf, pft = _eyeball(c, island, v_off, t_off)
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
    neck_row0 = _HEAD_ROWS - 1  # last head ring (row index in the ring grid)

    # ---- skinning weights
    theta = np.arctan2(x, z - _C[2])
    lateral = _smoothstep(1.5, 0.9, np.abs(theta))
    x_c = _MOUTH_HALF_W
    sharp = np.where(skin.is_lower_lip, 1.0, np.where(skin.is_upper_lip, 0.0, (y[:Vs] < _MOUTH_Y - 1e-4) * 1.0))
    y_t = _MOUTH_Y + 0.022 * _smoothstep(0.5, 1.3, np.abs(theta[:Vs]))
    smooth = _smoothstep(y_t + 0.006, y_t - 0.014, y[:Vs])
    s = _smoothstep(1.4 * x_c, 0.7 * x_c, np.abs(x[:Vs]))
    vertical = s * sharp + (1.0 - s) * smooth
    neck_t = np.clip((skin.row - neck_row0) / _NECK_ROWS, 0.0, 1.0)
    w_root = _smoothstep(0.3, 1.0, neck_t)
    w_jaw = lateral[:Vs] * vertical * _smoothstep(0.5, 0.0, neck_t) * (1.0 - w_root)
    W = np.zeros((V, J))
    W[:Vs, 0] = w_root
    W[:Vs, 2] = w_jaw
    W[:Vs, 1] = 1.0 - w_root - w_jaw
    W[eye_ranges[0], 3] = 1.0
    W[eye_ranges[1], 4] = 1.0

    # ---- joint regressor
    Jreg = np.zeros((J, V))
    bottom = skin_idx[skin.row == _HEAD_ROWS + _NECK_ROWS - 1]
    Jreg[0, bottom] = 1.0 / len(bottom)
    top_neck = skin_idx[skin.row == neck_row0 + 1]
    Jreg[1, top_neck] = 1.0 / len(top_neck)
    hinge = np.array([_MOUTH_Y + 0.028, -0.028])  # (y, z) of the jaw hinge
    side = skin_idx[(x[:Vs] > 0.03) & ~skin.is_lower_lip & ~skin.is_upper_lip]
    d = np.hypot(y[side] - hinge[0], z[side] - hinge[1])
    near = side[np.argsort(d, kind="stable")[:4]]
    wts = _gauss(np.hypot(y[near] - hinge[0], z[near] - hinge[1]), 0.01)
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
    cheek = _bump(np.abs(x), y, x_c + 0.004, _MOUTH_Y - 0.004, 0.012, 0.012) * (~is_eye)
    posedirs[9 + 7, :, 1] = -0.006 * cheek
    posedirs[9 + 7, :, 2] = -0.004 * cheek
    posedirs = posedirs.reshape((J - 1) * 9, V * 3)

    mouth_faces, mouth_faces_uv = mouth_closing_faces(faces, faces_uv, verts)
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
        mouth_faces_uv=mouth_faces_uv if mouth_faces_uv is not None else np.zeros((0, 3)),
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
