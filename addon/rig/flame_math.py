"""FLAME ↔ Blender rig maths (numpy only, no bpy): rotations, cameras and driver expressions.

Blender side of the conventions in docs/ARCHITECTURE.md. Everything here is plain numpy so it is
testable without Blender; :mod:`addon.rig.importer` turns it into Blender data.

The rig that reproduces FLAME's linear blend skinning (LBS) exactly:

- Bones have identity rest rotations (they point along +Y of the armature, roll 0), so a bone's
  ``rotation_quaternion`` *is* FLAME's local joint rotation ``r_j`` and its location is expressed
  in the armature (= FLAME canonical) axes. Blender's pose matrix of bone ``j`` is
  ``P_parent · rest_offset_j · [r_j | loc_j]`` (translation applied after the rotation).
- FLAME regresses the joints from the *expressed* mesh, ``J = J_regressor · (v_template + Σ ψ_k E_k)``,
  while Blender's bone rests are fixed at ``J0 = J_regressor · v_template``. With
  ``ΔJ_j = Σ_k ψ_k D_jk`` (``D = J_regressor · exprdirs``, :func:`joint_expression_basis`) FLAME moves
  a vertex of joint ``j`` by ``R_j (v − J_j) + P_j`` and Blender by ``R_j (v − J0_j) + H_j``; they agree
  iff ``H_j = P_j − R_j ΔJ_j`` (``R_j``: global rotation, ``P_j``: FLAME's posed joint). By induction
  over the chain this holds when the bone's own translation is ``loc_j = (I − r_j) ΔJ_j`` (the root
  included, plus FLAME's global translation on the root). A bone cannot drive its own location
  from its own rotation (Blender reports a dependency cycle), so the offset lives on a
  mechanism bone ``MCH-<joint>`` between the parent and the joint bone (same head, identity
  rotation): ``P_parent · [I | J0_j − J0_p] · [I | loc_j] · [r_j | 0]`` equals the single-bone form.
- Pose correctives: FLAME's ``posedirs`` rows are ordered joint-major over joints 1..J−1, row-major
  over the 3×3 entries of ``(R_j − I)`` (smplx ``lbs``); each row becomes a shape key whose value is
  that entry, computed by a driver from the bone's quaternion (:func:`corrective_expression`).

Driver expressions stay inside Blender's *simple expression* subset (arithmetic on variables),
which Blender evaluates without enabling Python auto-run. Blender normalises quaternions before
building a rotation matrix, so every expression divides by ``w² + x² + y² + z²`` too.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DRIVER_EXPRESSION_MAX",
    "axis_angle_to_quaternion",
    "quaternion_to_matrix",
    "axis_angle_to_matrix",
    "make_quaternions_continuous",
    "joint_expression_basis",
    "corrective_key_names",
    "corrective_expression",
    "location_offset_expression",
    "weighted_sum_chunks",
    "matrix_to_quaternion",
    "still_camera_frame",
    "head_motion_for_still_camera",
    "opencv_w2c_to_blender_c2w",
    "blender_c2w_to_opencv_w2c",
    "blender_camera_intrinsics",
    "fit_preserving_intrinsics",
    "FLAME_TO_BLENDER_WORLD",
    "GL_CV_FLIP",
]

DRIVER_EXPRESSION_MAX = 255
"""Longest driver expression Blender stores (``ChannelDriver.expression`` is a 256-byte C string)."""

FLAME_TO_BLENDER_WORLD = np.array([[1.0, 0.0, 0.0, 0.0],
                                   [0.0, 0.0, -1.0, 0.0],
                                   [0.0, 1.0, 0.0, 0.0],
                                   [0.0, 0.0, 0.0, 1.0]])
"""R_x(+90°) [4, 4]: the fixed object rotation that stands FLAME's +Y-up frame up in Blender's
+Z-up world (FLAME +Y → Blender +Z, FLAME +Z (out of the face) → Blender −Y, i.e. the face looks
at Blender's front view)."""

GL_CV_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])
"""[4, 4] Flips y and z: OpenGL / Blender camera axes ↔ OpenCV camera axes (its own inverse)."""

# Quaternion (w, x, y, z) → the matrix M with R − I = 2 M / (w² + x² + y² + z²), as expression
# strings in the variables w, x, y, z (Blender's quat_to_mat3 after normalisation).
_M_TERMS = (
    ("-(y*y+z*z)", "(x*y-w*z)", "(x*z+w*y)"),
    ("(x*y+w*z)", "-(x*x+z*z)", "(y*z-w*x)"),
    ("(x*z-w*y)", "(y*z+w*x)", "-(x*x+y*y)"),
)
_NORM = "(w*w+x*x+y*y+z*z)"


def axis_angle_to_quaternion(aa: np.ndarray) -> np.ndarray:
    """Axis-angle (Rodrigues) vectors → unit quaternions.

    Args:
        aa: rotation vectors, direction = axis, norm = angle in rad. [..., 3]
    Returns:
        quaternions (w, x, y, z), float64. [..., 4]
    """
    aa = np.asarray(aa, dtype=np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    half = 0.5 * angle
    # sin(θ/2)/θ → 1/2 as θ → 0 (second-order series below 1e-8 rad)
    small = angle < 1e-8
    scale = np.where(small, 0.5 - angle * angle / 48.0, np.sin(half) / np.where(small, 1.0, angle))
    return np.concatenate([np.cos(half), aa * scale], axis=-1)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Quaternions (normalised first, as Blender does) → rotation matrices.

    Args:
        q: quaternions (w, x, y, z), any non-zero norm. [..., 4]
    Returns:
        rotation matrices acting on column vectors, float64. [..., 3, 3]
    """
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    """Axis-angle (Rodrigues) vectors → rotation matrices; the one copy on the Blender side.

    Args:
        aa: rotation vectors, direction = axis, norm = angle in rad. [..., 3]
    Returns:
        rotation matrices acting on column vectors, float64. [..., 3, 3]
    """
    return quaternion_to_matrix(axis_angle_to_quaternion(aa))


def make_quaternions_continuous(q: np.ndarray) -> np.ndarray:
    """Flips signs along a sequence so consecutive quaternions lie in the same hemisphere.

    Keyframes are interpolated per component; ``q`` and ``−q`` are the same rotation, and
    choosing the sign with a positive dot product keeps the interpolation on the short arc.

    Args:
        q: quaternions over time (w, x, y, z). [T, 4]
    Returns:
        the same rotations with continuous signs, float64. [T, 4]
    """
    q = np.array(q, dtype=np.float64, copy=True)
    for t in range(1, len(q)):
        if np.dot(q[t], q[t - 1]) < 0:
            q[t] = -q[t]
    return q


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Rotation matrices → unit quaternions (Shepperd's method: the largest of w, x, y, z first).

    Args:
        R: rotation matrices acting on column vectors (orthonormalised first by SVD, so
            float32 round-off in e.g. a ``viewmat`` does not leak into the quaternion). [..., 3, 3]
    Returns:
        quaternions (w, x, y, z) with w ≥ 0, float64. [..., 4]
    """
    R = np.asarray(R, dtype=np.float64)
    U, _, Vt = np.linalg.svd(R)
    d = np.sign(np.linalg.det(U @ Vt))
    R = U @ (Vt * np.concatenate([np.ones(d.shape + (2,)), d[..., None]], -1)[..., :, None])
    m = R.reshape(-1, 3, 3)
    q = np.empty((len(m), 4))
    tr = np.trace(m, axis1=1, axis2=2)
    diag = np.stack([tr, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], 1)
    k = np.argmax(diag, 1)
    for i, (mi, ki) in enumerate(zip(m, k)):
        if ki == 0:
            s = 2.0 * np.sqrt(1.0 + tr[i])
            q[i] = (0.25 * s, (mi[2, 1] - mi[1, 2]) / s, (mi[0, 2] - mi[2, 0]) / s, (mi[1, 0] - mi[0, 1]) / s)
        elif ki == 1:
            s = 2.0 * np.sqrt(1.0 + mi[0, 0] - mi[1, 1] - mi[2, 2])
            q[i] = ((mi[2, 1] - mi[1, 2]) / s, 0.25 * s, (mi[0, 1] + mi[1, 0]) / s, (mi[0, 2] + mi[2, 0]) / s)
        elif ki == 2:
            s = 2.0 * np.sqrt(1.0 - mi[0, 0] + mi[1, 1] - mi[2, 2])
            q[i] = ((mi[0, 2] - mi[2, 0]) / s, (mi[0, 1] + mi[1, 0]) / s, 0.25 * s, (mi[1, 2] + mi[2, 1]) / s)
        else:
            s = 2.0 * np.sqrt(1.0 - mi[0, 0] - mi[1, 1] + mi[2, 2])
            q[i] = ((mi[1, 0] - mi[0, 1]) / s, (mi[0, 2] + mi[2, 0]) / s, (mi[1, 2] + mi[2, 1]) / s, 0.25 * s)
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    return q.reshape(R.shape[:-2] + (4,))


def still_camera_frame(viewmats: np.ndarray) -> int:
    """The tracked frame whose camera becomes the still camera of an imported avatar.

    The frame whose camera rotation is nearest (Frobenius norm) to the chordal mean of all the
    tracked rotations: for an INSTA-style orbit around the head, the most central view; for a
    fixed camera (head motion already in the FLAME pose), any frame (all equal), the first.

    Args:
        viewmats: world→camera, OpenCV axes. [T, 4, 4]
    Returns:
        the frame index (0-based).
    """
    R = np.asarray(viewmats, dtype=np.float64)[:, :3, :3]
    U, _, Vt = np.linalg.svd(R.mean(axis=0))
    mean = U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))]) @ Vt
    dist = np.linalg.norm(R - mean, axis=(1, 2))
    return int(np.argmin(np.round(dist, 9)))  # ties (a fixed camera) → the first frame


def head_motion_for_still_camera(root_pose: np.ndarray, translation: np.ndarray, root_joint: np.ndarray,
                                 viewmats: np.ndarray, still: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Moves the tracked camera motion onto the head: the root bone's rotation and location for a
    still camera that sees, every frame, exactly what the tracked camera saw.

    FLAME's root joint acts on a vertex ``x`` (after the rest of the chain) as
    ``x ↦ R₀ (x − J) + J + t`` (``J``: the root joint regressed from the expressed mesh, ``t``:
    the global translation). With the head transform ``H_t = C⁻¹ · V_t`` (``V_t``: frame ``t``'s
    world→camera, ``C``: the still camera's), ``C · H_t · FLAME_t = V_t · FLAME_t``, and
    ``H_t ∘ FLAME_t`` is again a root transform: rotation ``R₀' = R_H R₀`` and translation
    ``t' = R_H (J + t) + h − J``. On the rig (root bone location = FLAME translation, the MCH
    bone compensating ``ΔJ``, module doc) these are the root's ``rotation_quaternion`` and
    ``location``. Exact for the tracked expressions; a changed expression moves ``J`` by its
    ``ΔJ`` (millimetres) around the same head transform.

    Args:
        root_pose: FLAME root axis-angle per frame, rad. [T, 3]
        translation: FLAME global translation per frame, m. [T, 3]
        root_joint: the root joint regressed from each frame's expressed mesh, m, FLAME
            canonical. [T, 3]
        viewmats: tracked world→camera, OpenCV axes, m. [T, 4, 4]
        still: the still camera's world→camera. [4, 4]
    Returns:
        root quaternions (w, x, y, z), continuous in sign [T, 4] float64; root locations, m,
        FLAME (armature) axes [T, 3] float64.
    """
    H = np.linalg.inv(np.asarray(still, np.float64)) @ np.asarray(viewmats, np.float64)  # [T, 4, 4]
    RH, h = H[:, :3, :3], H[:, :3, 3]
    R = RH @ axis_angle_to_matrix(root_pose)
    J = np.asarray(root_joint, np.float64)
    t = np.asarray(translation, np.float64)
    loc = np.einsum("tij,tj->ti", RH, J + t) + h - J
    return make_quaternions_continuous(matrix_to_quaternion(R)), loc


def joint_expression_basis(J_regressor: np.ndarray, exprdirs: np.ndarray) -> np.ndarray:
    """How the regressed joints move per unit of each expression coefficient.

    Args:
        J_regressor: joint regressor. [J, V]
        exprdirs: expression basis (FLAME + learnt ΔE), meters per unit, FLAME canonical. [V, 3, E]
    Returns:
        D with ΔJ_j = Σ_k ψ_k D[j, :, k], meters per unit, float64. [J, 3, E]
    """
    return np.einsum("jv,vce->jce", np.asarray(J_regressor, np.float64), np.asarray(exprdirs, np.float64))


def corrective_key_names(joint_names: list[str]) -> list[str]:
    """Shape-key names of the pose correctives, in FLAME ``posedirs`` row order.

    Rows are joint-major over joints 1..J−1, then row-major over the 3×3 entries of (R − I):
    ``Pose_<joint>_<row><col>``.

    Args:
        joint_names: names of all J joints, root first.
    Returns:
        (J−1)·9 names.
    """
    return [f"Pose_{name}_{r}{c}" for name in joint_names[1:] for r in range(3) for c in range(3)]


def corrective_expression(row: int, col: int) -> str:
    """Driver expression for the entry (R − I)[row, col] of a bone's local rotation.

    Variables: ``w, x, y, z`` = the bone's ``rotation_quaternion`` components (any norm).
    """
    return f"2*{_M_TERMS[row][col]}/{_NORM}"


def location_offset_expression(axis: int) -> str:
    """Driver expression for component ``axis`` of ``loc = (I − R) ΔJ`` (see the module doc).

    Variables: ``w, x, y, z`` = the joint bone's ``rotation_quaternion``; ``a, b, c`` = ΔJ
    (meters, armature = FLAME axes).
    """
    m = _M_TERMS[axis]
    return f"-2*({m[0]}*a+{m[1]}*b+{m[2]}*c)/{_NORM}"


def weighted_sum_chunks(weights: np.ndarray, *, var_prefix: str = "e", tol: float = 0.0,
                        max_len: int = DRIVER_EXPRESSION_MAX) -> list[tuple[str, list[int]]]:
    """Splits Σ_k w_k·e_k into driver expressions that each fit Blender's expression length.

    Args:
        weights: one weight per variable. [E]
        var_prefix: variable name prefix; variable ``k`` is named ``f"{var_prefix}{k}"``.
        tol: weights with ``|w| <= tol`` are left out.
        max_len: longest expression allowed.
    Returns:
        a list of (expression, variable indices used by it); empty when every weight is ≤ tol.
    """
    chunks: list[tuple[str, list[int]]] = []
    expr, used = "", []
    for k, w in enumerate(np.asarray(weights, dtype=np.float64)):
        if abs(w) <= tol:
            continue
        term = f"{float(w):.9g}*{var_prefix}{k}"
        candidate = term if not expr else f"{expr}+{term}"
        if len(candidate) > max_len:
            chunks.append((expr, used))
            expr, used = term, [k]
        else:
            expr, used = candidate, used + [k]
    if expr:
        chunks.append((expr, used))
    return chunks


def opencv_w2c_to_blender_c2w(w2c: np.ndarray) -> np.ndarray:
    """Engine ``viewmat`` → a Blender camera's matrix in the same (FLAME) world frame.

    Mirrors ``engine.geometry.cameras.opencv_w2c_to_blender_c2w`` (the engine is not imported here).
    The result is relative to the head's frame: parent the camera to the rig object (which
    carries :data:`FLAME_TO_BLENDER_WORLD`) or premultiply by it.

    Args:
        w2c: world→camera, OpenCV axes (x right, y down, z forward), meters. [..., 4, 4]
    Returns:
        camera→world, camera looking down its local −Z with +Y up, float64. [..., 4, 4]
    """
    return np.linalg.inv(np.asarray(w2c, dtype=np.float64)) @ GL_CV_FLIP


def blender_c2w_to_opencv_w2c(c2w: np.ndarray) -> np.ndarray:
    """A Blender camera's ``matrix_world`` (looks down −Z, +Y up) → OpenCV ``viewmat``.

    The inverse of :func:`opencv_w2c_to_blender_c2w` (and of ``engine.geometry.cameras.
    opencv_w2c_to_blender_c2w``). Scale in ``c2w`` is removed (Blender ignores camera scale for
    the view).

    Args:
        c2w: camera→world. [4, 4]
    Returns:
        world→camera, OpenCV axes (x right, y down, z forward). [4, 4] float64
    """
    c2w = np.asarray(c2w, dtype=np.float64).copy()
    c2w[:3, :3] /= np.linalg.norm(c2w[:3, :3], axis=0, keepdims=True)
    return GL_CV_FLIP @ np.linalg.inv(c2w)


def blender_camera_intrinsics(K: np.ndarray, width: int, height: int,
                              sensor_width: float = 36.0) -> dict:
    """OpenCV pinhole intrinsics → Blender camera and render settings.

    Uses ``sensor_fit = 'HORIZONTAL'``: the sensor width spans the image width, so
    ``fx = lens · width / sensor_width``; Blender measures shifts in units of the image width
    and a non-square pixel (fx ≠ fy) becomes the render's pixel aspect. Pixel centres are at
    integer + 0.5 in both conventions, so no half-pixel correction is needed.

    Args:
        K: intrinsics in pixels, principal point from the top-left image corner. [3, 3]
        width: image width, px.
        height: image height, px.
        sensor_width: sensor width to use, mm (any value works; 36 is Blender's default).
    Returns:
        dict with ``lens`` (mm), ``sensor_width`` (mm), ``sensor_fit``, ``shift_x``, ``shift_y``,
        ``pixel_aspect_x``, ``pixel_aspect_y``, ``resolution_x``, ``resolution_y``.
    """
    K = np.asarray(K, dtype=np.float64)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    ycor = fx / fy  # height of a pixel in units of its width (Blender: aspy / aspx)
    if ycor >= 1.0:
        aspect_x, aspect_y = 1.0, ycor
    else:
        aspect_x, aspect_y = 1.0 / ycor, 1.0
    return {
        "lens": float(fx * sensor_width / width),
        "sensor_width": float(sensor_width),
        "sensor_fit": "HORIZONTAL",
        "shift_x": float((0.5 * width - cx) / width),
        "shift_y": float((cy - 0.5 * height) * ycor / width),
        "pixel_aspect_x": float(aspect_x),
        "pixel_aspect_y": float(aspect_y),
        "resolution_x": int(width),
        "resolution_y": int(height),
    }


def fit_preserving_intrinsics(K: np.ndarray, width: int, height: int, sensor_width: float = 36.0) -> dict:
    """A Blender camera that keeps a whole tracked frame in view at any output aspect ratio.

    The horizontal fit of :func:`blender_camera_intrinsics` keeps the frame's horizontal field
    of view; an output wider than the frame then crops it at the top and bottom. The vertical
    fit with ``sensor_height = lens · height / fy`` keeps its vertical field of view instead.
    Choosing ``VERTICAL`` when the output is wider than the frame and ``HORIZONTAL`` otherwise
    keeps all of it (both fits agree at the frame's own aspect). Blender measures shifts in
    units of the fitted dimension, so each fit has its own shifts.

    Args:
        K: intrinsics, px, principal point from the top-left corner. [3, 3]
        width, height: the tracked frame's size, px.
        sensor_width: sensor width, mm.
    Returns:
        dict with ``lens``, ``sensor_width``, ``sensor_height`` (mm), ``aspect`` (the frame's
        aspect ``(W / fx) / (H / fy)``: compare with ``(res_x · aspect_x) / (res_y · aspect_y)``),
        ``shift_x_h``, ``shift_y_h`` (horizontal fit), ``shift_x_v``, ``shift_y_v`` (vertical).
    """
    K = np.asarray(K, dtype=np.float64)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    lens = fx * sensor_width / width
    return {
        "lens": float(lens),
        "sensor_width": float(sensor_width),
        "sensor_height": float(lens * height / fy),
        "aspect": float((width / fx) / (height / fy)),
        "shift_x_h": float((0.5 * width - cx) / width),
        "shift_y_h": float((cy - 0.5 * height) * fx / (fy * width)),
        "shift_x_v": float((0.5 * width - cx) * fy / (fx * height)),
        "shift_y_v": float((cy - 0.5 * height) / height),
    }
