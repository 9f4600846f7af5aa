"""The demo head's mesh (see :mod:`engine.model.demo_head`): the skin grid deformed into a head,
the eye holes and eyeballs, the mouth slit, and its UV islands. Meters, FLAME frame (+Y up, +Z out
of the face, +X the subject's left)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ----------------------------------------------------------------- dimensions (m)
_N_LON = 80  # skin columns (even: column N/2 is the front midline)
_ALPHA = 0.5  # column warp: front spacing = ALPHA x uniform (denser face)
AXES = np.array([0.074, 0.115, 0.092])  # ellipsoid semi-axes x, y, z
CENTRE = np.array([0.0, 0.0, -0.005])  # ellipsoid centre
_PHI_END = 0.8 * np.pi  # last head row (under the jaw); the neck continues below
NECK_ROWS = 6
_NECK_BOTTOM_Y = -0.165
_NECK_R = np.array([0.043, 0.048])  # neck ellipse radii x, z
_NECK_Z = -0.014

EYE_X, EYE_Y = 0.032, 0.018  # eye centres (±x)
EYE_HALF_W, EYE_HALF_H = 0.011, 0.0048  # eye opening (3D, approx.)
EYE_R = 0.0125  # eyeball radius
LID_GAP = 0.0006  # lid surface offset from the eyeball
_EYE_RINGS, _EYE_LON = 12, 16

MOUTH_Y = -0.045
MOUTH_HALF_W = 0.024
_LIP_GAP = 0.0008  # half the rest opening at the lip centre

CHIN_Y = -0.072

# UV layout islands (u0, v0, u1, v1), OBJ convention.
_UV_SKIN = (0.01, 0.24, 0.99, 0.99)
UV_EYES = ((0.01, 0.01, 0.22, 0.22), (0.24, 0.01, 0.45, 0.22))


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    """Hermite step from 0 at ``e0`` to 1 at ``e1`` (``e0 > e1`` gives a falling step)."""
    t = np.clip((np.asarray(x, dtype=np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def gauss(d: np.ndarray, s: float) -> np.ndarray:
    return np.exp(-((d / s) ** 2))


def bump(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
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
    band = smoothstep(0.95, 1.2, phi) * (1.0 - smoothstep(2.3, 2.5, phi))
    return 9.0 + 21.0 * band


def _row_table() -> tuple[np.ndarray, np.ndarray]:
    phi = np.linspace(0.0, _PHI_END, 4001)
    dens = _row_density(phi)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(phi))])
    n_rows = int(round(cum[-1]))
    return phi, cum * (n_rows / cum[-1])


_PHI_TABLE, _ROWPOS_TABLE = _row_table()
HEAD_ROWS = int(round(_ROWPOS_TABLE[-1]))  # ring rows 1.._HEAD_ROWS (row 0 = crown pole)


def _phi_of_row(r: np.ndarray) -> np.ndarray:
    return np.interp(r, _ROWPOS_TABLE, _PHI_TABLE)


def _row_of_phi(phi: np.ndarray) -> np.ndarray:
    return np.interp(phi, _PHI_TABLE, _ROWPOS_TABLE)


def _ellipsoid(theta: np.ndarray, phi: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Base skull: an ellipsoid narrowing at the jaw. [..., 3]"""
    taper_x = 1.0 - (0.10 + 0.12 * np.clip(np.cos(theta), 0.0, None)) * smoothstep(1.45, 2.45, phi)
    taper_z = 1.0 - 0.08 * smoothstep(1.9, 2.5, phi)
    a = AXES * scale
    # a broader crown than an ellipsoid's: sin(phi)^0.75 above the equator
    sp = np.sin(phi) ** np.where(phi < 0.5 * np.pi, 0.75, 1.0)
    x = a[0] * taper_x * sp * np.sin(theta)
    y = a[1] * np.cos(phi)
    z = a[2] * taper_z * sp * np.cos(theta)
    return np.stack([x, y, z], axis=-1) + CENTRE


def _face_relief(x: np.ndarray, y: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Forward (+z) relief of the face (brow, sockets, nose, lips, chin), meters."""
    front = smoothstep(0.25, 0.75, np.cos(theta))
    ax = np.abs(x)
    dz = np.zeros_like(x)
    # brow ridge
    dz += 0.0045 * gauss(y - 0.036, 0.007) * np.exp(-((x / 0.048) ** 4))
    # eye sockets and cheekbones
    dz -= 0.0045 * bump(ax, y, EYE_X, EYE_Y, 0.016, 0.011)
    dz += 0.0030 * bump(ax, y, 0.046, -0.006, 0.014, 0.012)
    # nose: a ridge growing from the bridge to the tip, alae at the base
    t = np.clip((0.016 - y) / 0.034, 0.0, 1.0)  # 0 at the bridge, 1 at the tip (y=-0.018)
    height = (0.004 + 0.013 * t**1.3) * np.where(y < -0.018, gauss(y + 0.018, 0.0055), 1.0)
    height *= smoothstep(0.024, 0.012, y)  # fade in at the bridge
    width = 0.0055 + 0.0035 * t
    dz += height * gauss(x, width)
    dz += 0.003 * bump(x, y, 0.0, -0.016, 0.007, 0.005)  # rounded tip
    dz += 0.0065 * bump(ax, y, 0.012, -0.021, 0.006, 0.006)
    # muzzle, lips and chin
    dz += 0.0045 * bump(x, y, 0.0, -0.042, 0.030, 0.020)
    lip_x = np.exp(-((x / 0.022) ** 4))
    dz += 0.0045 * gauss(y - (MOUTH_Y + 0.0042), 0.0038) * lip_x
    dz += 0.0040 * gauss(y - (MOUTH_Y - 0.0052), 0.0042) * lip_x
    dz -= 0.0025 * bump(x, y, 0.0, -0.058, 0.018, 0.004)  # crease under the lower lip
    dz += 0.0065 * bump(x, y, 0.0, CHIN_Y, 0.015, 0.010)
    return dz * front


@dataclass
class _Skin:
    """Intermediate skin grid (before compaction)."""

    pos: np.ndarray  # [N, 3]
    uv: np.ndarray  # [Nuv, 2]
    faces: np.ndarray  # [F, 3]
    faces_uv: np.ndarray  # [F, 3]
    row: np.ndarray  # [N] ring row of each vertex (-1 crown pole), neck rows > HEAD_ROWS
    is_lower_lip: np.ndarray  # [N] bool (slit duplicates)
    is_upper_lip: np.ndarray  # [N] bool (slit originals)
    eye_centres: np.ndarray  # [2, 3] left (+x), right (-x)


def _eye_param(sign: float, scale: np.ndarray) -> tuple[float, float, float, float]:
    """Eye-hole ellipse centre and half-axes in (theta, phi)."""
    a = AXES * scale
    phi_e = float(np.arccos((EYE_Y - CENTRE[1]) / a[1]))
    sin_p = np.sin(phi_e) ** (0.75 if phi_e < 0.5 * np.pi else 1.0)
    th_e = 0.0
    for _ in range(20):  # taper_x depends on theta: fixed-point solve x(theta) = EYE_X
        taper_x = 1.0 - (0.10 + 0.12 * max(np.cos(th_e), 0.0)) * float(smoothstep(1.45, 2.45, phi_e))
        th_e = float(np.arcsin(EYE_X / (a[0] * taper_x * sin_p)))
    w = EYE_HALF_W / (np.hypot(a[0] * taper_x * np.cos(th_e), a[2] * np.sin(th_e)) * sin_p)
    h = EYE_HALF_H / (a[1] * np.sin(phi_e))
    return sign * th_e, phi_e, float(w), float(h)


def build_skin(scale: np.ndarray) -> _Skin:
    n = _N_LON
    R = HEAD_ROWS + NECK_ROWS  # ring rows (row index 0 is the first ring under the pole)
    # ---- parameters of every grid vertex (rows 0..R-1 -> head rows 1..H then neck)
    theta = np.tile(_theta_of_col(np.arange(n))[None, :], (R, 1))
    head_r = np.arange(1, HEAD_ROWS + 1, dtype=np.float64)
    phi_rows = _phi_of_row(head_r)
    phi = np.zeros((R, n))
    phi[:HEAD_ROWS] = phi_rows[:, None]
    phi[HEAD_ROWS:] = _PHI_END

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
    last = pos[HEAD_ROWS - 1]
    th0 = theta[HEAD_ROWS - 1]
    for k in range(1, NECK_ROWS + 1):
        t = k / NECK_ROWS
        b = smoothstep(0.0, 0.6, t)
        ring = np.stack(
            [_NECK_R[0] * np.sin(th0), np.zeros(n), _NECK_Z + _NECK_R[1] * np.cos(th0)], axis=-1
        )
        p = (1.0 - b)[..., None] * last + b * ring
        p[:, 1] = (1.0 - t) * last[:, 1] + t * _NECK_BOTTOM_Y
        pos[HEAD_ROWS - 1 + k] = p

    # eyeball centres from the socket surface, then let the lids hug the eyeballs
    eye_centres = []
    for th_e, ph_e, w, h in eyes:
        p = _ellipsoid(np.array(th_e), np.array(ph_e), scale)
        p[2] += _face_relief(p[None, 0], p[None, 1], np.array([th_e]))[0]
        eye_centres.append(np.array([p[0], p[1], p[2] - EYE_R + 0.0015]))
    eye_centres = np.stack(eye_centres)
    for (th_e, ph_e, w, h), c in zip(eyes, eye_centres):
        rho = np.hypot((theta - th_e) / w, (phi - ph_e) / h)
        wgt = smoothstep(1.7, 1.0, rho) * used
        d2 = (pos[..., 0] - c[0]) ** 2 + (pos[..., 1] - c[1]) ** 2
        z_hug = c[2] + np.sqrt(np.clip((EYE_R + LID_GAP) ** 2 - d2, 0.0, None))
        pos[..., 2] = (1.0 - wgt) * pos[..., 2] + wgt * np.maximum(z_hug, pos[..., 2] - 0.004)
        # nowhere may the eyeball poke through the skin around the hole
        inside = (d2 < (EYE_R + LID_GAP) ** 2) & (rho < 3.0)
        pos[..., 2] = np.where(inside, np.maximum(pos[..., 2], z_hug), pos[..., 2])

    # ---- vertex ids: pole, grid, slit duplicates
    ids = np.full((R, n), -1, dtype=np.int64)
    ids[used] = 1 + np.arange(int(used.sum()))
    pole = 0
    n_grid = 1 + int(used.sum())
    verts = [np.array([[0.0, AXES[1] * scale[1] + CENTRE[1], CENTRE[2]]]), pos[used]]
    row_of = [np.array([-1]), np.nonzero(used)[0]]

    # mouth slit along the head row nearest the mouth height
    i_m = int(np.argmin(np.abs(phi_rows - np.arccos((MOUTH_Y - CENTRE[1]) / (AXES[1] * scale[1])))))
    x_row = pos[i_m, :, 0]
    k = int(np.argmin(np.abs(x_row[n // 2:] - MOUTH_HALF_W)))
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
        np.arange(R)[:, None] < HEAD_ROWS,
        _row_of_phi(phi),
        HEAD_ROWS + (np.arange(R)[:, None] - (HEAD_ROWS - 1)) * 1.0,
    )
    total_rows = HEAD_ROWS + NECK_ROWS
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


def eyeball(centre: np.ndarray, island: tuple[float, float, float, float], v_off: int, t_off: int):
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
    pts = np.concatenate([[[0.0, 1.0, 0.0]], ring, [[0.0, -1.0, 0.0]]]) * EYE_R + centre
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


