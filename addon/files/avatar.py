"""Reads the parts of an avatar folder that Blender needs (numpy + stdlib, no bpy).

The ``io`` half of the importer (see docs/FORMATS.md, "Avatar folder"): files are parsed and
checked here into plain arrays; :mod:`addon.rig.importer` builds Blender data from them. Every
problem is an :class:`~addon.errors.AvatarError` that names the file, the key and the expected
versus found shape.

The engine publishes an avatar's files together and writes ``avatar.json`` last, with the sha256
of every other file (docs/RELIABILITY.md). So a file that does not match ``avatar.json`` means a
save is in progress or was interrupted (or the file was replaced by hand), and a ``.commit``
folder means the engine is moving a save into place: both are refused here, never imported as a
mix of two avatars. Formats newer than this add-on reads are refused too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AvatarError, MapsError

log = logging.getLogger(__name__)

__all__ = ["HeadData", "Bindings", "TrainedGaussians", "Tracking", "MapEntry", "AvatarData",
           "read_head", "read_bindings", "read_trained_gaussians", "read_tracking",
           "read_maps_manifest", "read_manifest", "verify_file", "read_avatar", "read_appearance",
           "default_expression_names", "PREVIEW_RANGES", "APPEARANCES", "read_perceptual_term"]

HEAD_FILE = Path("blender") / "head.npz"
BINDINGS_FILE = Path("blender") / "bindings.npz"
GAUSSIANS_FILE = Path("blender") / "gaussians.npz"
ENVIRONMENT_FILE = Path("blender") / "environment.exr"
BAKED_ENVIRONMENT_FILE = Path("maps") / "environment.exr"
TRACKING_FILE = Path("tracking.npz")
AVATAR_JSON = Path("avatar.json")
MAPS_DIR = Path("maps")
MAPS_MANIFEST = MAPS_DIR / "maps.json"
AVATAR_JSON = Path("avatar.json")
COMMIT_DIR = Path(".commit")
"""Present while the engine moves a save into place (or after a save was interrupted)."""
AVATAR_FORMAT_VERSION = 1
MAPS_FORMAT_VERSION = 1
"""Newest avatar.json / maps.json format_version this add-on reads."""

#: Colour space of a map when maps.json does not say (DESIGN: colour is sRGB, the rest data).
DEFAULT_COLORSPACE = {"color": "sRGB", "albedo": "sRGB"}

PREVIEW_RANGES = {"color": (0.0, 1.0), "opacity": (0.0, 1.0), "scale": (0.0, 1.5),
                  "rotation": (-np.pi, np.pi), "offset": (-0.01, 0.01),
                  "albedo": (0.0, 1.0), "roughness": (0.0, 1.0), "f0": (0.0, 0.2), "visibility": (0.0, 1.0)}
"""Value range each map's 8-bit ``.png`` preview spans (the engine's ``engine.maps.ALL_MAP_SPECS``
``preview_range``: attribute, relightable and auxiliary maps; a test keeps the two equal)."""
APPEARANCES = ("static", "headgas", "pbr")
"""``avatar.json`` ``appearance``: a colour per Gaussian, expression-dependent colour (HeadGaS; in
Blender its map shape keys, ``maps/dynamic/``), or relightable (albedo, roughness, F0)."""

#: Longest shape-key name Blender keeps (``MAX_NAME`` − 1 bytes).
_MAX_KEY_NAME = 63


def default_expression_names(count: int) -> list[str]:
    """Shape-key names of expression coefficients without names: ``Exp000``, ``Exp001``, …"""
    return [f"Exp{k:03d}" for k in range(count)]


@dataclass
class HeadData:
    """blender/head.npz: the subject's head with the learnt deltas folded in (FLAME canonical, m).

    Attributes:
        name: head model name (e.g. "FLAME 2020" or the demo head's name).
        v_template: rest vertices, subject shape applied. [V, 3] float32
        faces: triangles, mesh faces then mouth faces. [F+M, 3] int32
        faces_uv: UV indices per triangle corner. [F+M, 3] int32
        uvs: texture coordinates, OBJ convention (origin bottom-left). [T, 2] float32
        exprdirs: expression basis incl. learnt ΔE, m per unit. [V, 3, E] float32
        posedirs: pose correctives incl. learnt ΔP (smplx layout). [(J-1)*9, V*3] float32
        J_regressor: joint regressor. [J, V] float32
        parents: parent joint index, -1 for the root. [J] int32
        lbs_weights: skinning weights. [V, J] float32
        joint_names: joint names, root first. [J]
        num_mouth_faces: M, the trailing faces that close the mouth.
        expression_names: shape-key name of each expression coefficient. [E] (the file's
            ``expression_names``, else ``Exp000``, ``Exp001``, …)
    """

    name: str
    v_template: np.ndarray
    faces: np.ndarray
    faces_uv: np.ndarray
    uvs: np.ndarray
    exprdirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    parents: np.ndarray
    lbs_weights: np.ndarray
    joint_names: list[str]
    num_mouth_faces: int = 0
    expression_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.expression_names:
            self.expression_names = default_expression_names(self.num_expressions)

    @property
    def num_vertices(self) -> int:
        """V, the number of vertices."""
        return int(self.v_template.shape[0])

    @property
    def num_expressions(self) -> int:
        """E, the number of expression coefficients (shape keys ``Exp*``)."""
        return int(self.exprdirs.shape[2])

    @property
    def num_joints(self) -> int:
        """J, the number of joints (root first)."""
        return int(self.J_regressor.shape[0])

    def rest_joints(self) -> np.ndarray:
        """Rest joints J0 = J_regressor · v_template, m, FLAME canonical. [J, 3] float64"""
        return self.J_regressor.astype(np.float64) @ self.v_template.astype(np.float64)


@dataclass
class Bindings:
    """blender/bindings.npz: where each Gaussian sits on the mesh.

    Attributes:
        face_idx: triangle index into ``HeadData.faces``. [N] int32
        bary: barycentric coordinates in that triangle. [N, 3] float32
        uv: texture coordinates, OBJ convention. [N, 2] float32
    """

    face_idx: np.ndarray
    bary: np.ndarray
    uv: np.ndarray


@dataclass
class TrainedGaussians:
    """blender/gaussians.npz: the trained Gaussians' activated attributes, one row per binding.

    What the splat engine renders for an avatar that has no maps yet (not baked). Same units as
    the maps (docs/FORMATS.md).

    Attributes:
        color: encoded (sRGB) colour in [0, 1]. [N, 3] float32
        opacity: in [0, 1]. [N] float32
        scale: multiples of the face scale k_f. [N, 3] float32
        rotation: axis-angle in the face frame, rad. [N, 3] float32
        offset: meters along the unit face normal. [N] float32
        roughness: relightable avatars: roughness o. [N] float32 (None: static)
        f0: relightable avatars: Fresnel base reflectance. [N] float32 (None: static)

    A relightable avatar's ``color`` is its albedo (encoded like a colour).
    """

    color: np.ndarray
    opacity: np.ndarray
    scale: np.ndarray
    rotation: np.ndarray
    offset: np.ndarray
    roughness: np.ndarray | None = None
    f0: np.ndarray | None = None


@dataclass
class Tracking:
    """tracking.npz: the per-frame FLAME parameters and cameras of the training video.

    Attributes:
        expr: expression coefficients. [T, E'] float32
        pose: axis-angle per joint, root first, rad. [T, J*3] float32
        translation: global translation added after LBS, m (zeros if absent). [T, 3] float32
        viewmat: world→camera, OpenCV axes, m. [T, 4, 4] float32
        K: intrinsics, px. [T, 3, 3] float32
        width: image width, px.
        height: image height, px.
        frame_names: source frame names. [T]
        split: 0 = train, 1 = test. [T] int8
    """

    expr: np.ndarray
    pose: np.ndarray
    translation: np.ndarray
    viewmat: np.ndarray
    K: np.ndarray
    width: int
    height: int
    frame_names: list[str] = field(default_factory=list)
    split: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        """T, the number of tracked frames."""
        return int(self.expr.shape[0])


@dataclass
class MapEntry:
    """One baked UV map listed in maps/maps.json.

    Attributes:
        name: attribute name ("color", "opacity", "scale", "rotation", "offset", ...).
        path: the map file (EXR, or PNG for 8-bit maps).
        channels: number of meaningful channels (Blender always loads RGBA).
        colorspace: Blender colour space name ("sRGB" for colour, "Non-Color" for data).
    """

    name: str
    path: Path
    channels: int
    colorspace: str


@dataclass
class AvatarData:
    """Everything :func:`read_avatar` found in an avatar folder."""

    folder: Path
    head: HeadData
    bindings: Bindings | None
    tracking: Tracking | None
    maps: list[MapEntry]
    warnings: list[str]
    gaussians: TrainedGaussians | None = None
    appearance: str = "static"
    """``avatar.json`` ``appearance`` (:data:`APPEARANCES`)."""
    environment: Path | None = None
    """A relightable avatar's learnt environment (lat-long radiance EXR in the room frame of the
    still camera): ``maps/environment.exr`` once baked, else ``blender/environment.exr``."""
    perceptual: str = ""
    """The perceptual term the avatar was trained with (``avatar.json`` ``metrics.perceptual``), e.g.
    "vgg x0.1" (FATE's) or "dssim x0.2 (no VGG weights; FATE: vgg x0.1)"; "" when not recorded."""


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise AvatarError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise AvatarError(f"{path}: cannot read .npz ({type(exc).__name__}: {exc}); the file is corrupt or "
                          "truncated") from exc


def _require(data: dict, path: Path, key: str, ndim: int, dtype_kind: str = "f") -> np.ndarray:
    if key not in data:
        raise AvatarError(f"{path}: missing key '{key}' (found keys {sorted(data)})")
    arr = np.asarray(data[key])
    if arr.ndim != ndim:
        raise AvatarError(f"{path}: '{key}' must have {ndim} dimensions, found shape {arr.shape}")
    if dtype_kind == "f" and arr.dtype.kind not in "fiu":
        raise AvatarError(f"{path}: '{key}' must be numeric, found dtype {arr.dtype}")
    if dtype_kind == "i" and arr.dtype.kind not in "iu":
        raise AvatarError(f"{path}: '{key}' must be integer, found dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise AvatarError(f"{path}: '{key}' contains NaN or Inf")
    return arr


def _expect_shape(path: Path, key: str, arr: np.ndarray, shape: tuple) -> None:
    if arr.shape != shape:
        raise AvatarError(f"{path}: '{key}' must have shape {list(shape)}, found {list(arr.shape)}")


def read_head(path: Path) -> HeadData:
    """Reads and checks blender/head.npz (docs/FORMATS.md).

    Raises:
        AvatarError: missing file or key, or shapes that do not fit together.
    """
    path = Path(path)
    d = _load_npz(path)
    v = _require(d, path, "v_template", 2).astype(np.float32)
    if v.shape[1] != 3:
        raise AvatarError(f"{path}: 'v_template' must be [V, 3], found {list(v.shape)}")
    V = v.shape[0]
    faces = _require(d, path, "faces", 2, "i").astype(np.int32)
    faces_uv = _require(d, path, "faces_uv", 2, "i").astype(np.int32)
    uvs = _require(d, path, "uvs", 2).astype(np.float32)
    exprdirs = _require(d, path, "exprdirs", 3).astype(np.float32)
    posedirs = _require(d, path, "posedirs", 2).astype(np.float32)
    J_reg = _require(d, path, "J_regressor", 2).astype(np.float32)
    parents = _require(d, path, "parents", 1, "i").astype(np.int32)
    weights = _require(d, path, "lbs_weights", 2).astype(np.float32)
    J = J_reg.shape[0]
    if faces.shape[1] != 3 or faces.min(initial=0) < 0 or faces.max(initial=0) >= V:
        raise AvatarError(f"{path}: 'faces' must be [F, 3] indices in [0, {V}), "
                          f"found shape {list(faces.shape)}, range [{faces.min()}, {faces.max()}]")
    _expect_shape(path, "faces_uv", faces_uv, faces.shape)
    if uvs.shape[1] != 2:
        raise AvatarError(f"{path}: 'uvs' must be [T, 2], found {list(uvs.shape)}")
    if faces_uv.min(initial=0) < 0 or faces_uv.max(initial=0) >= len(uvs):
        raise AvatarError(f"{path}: 'faces_uv' indices must be in [0, {len(uvs)}), "
                          f"found [{faces_uv.min()}, {faces_uv.max()}]")
    if exprdirs.shape[:2] != (V, 3):
        raise AvatarError(f"{path}: 'exprdirs' must be [{V}, 3, E], found {list(exprdirs.shape)}")
    _expect_shape(path, "J_regressor", J_reg, (J, V))
    _expect_shape(path, "posedirs", posedirs, ((J - 1) * 9, V * 3))
    _expect_shape(path, "parents", parents, (J,))
    _expect_shape(path, "lbs_weights", weights, (V, J))
    if parents[0] != -1 or any(not (0 <= p < j) for j, p in enumerate(parents[1:], start=1)):
        raise AvatarError(f"{path}: 'parents' must start with -1 and list each joint after its "
                          f"parent, found {parents.tolist()}")
    if "joint_names" in d:
        names = [str(n) for n in np.asarray(d["joint_names"]).tolist()]
        if len(names) != J or len(set(names)) != J:
            raise AvatarError(f"{path}: 'joint_names' must be {J} unique names, found {names}")
    else:
        names = (["root", "neck", "jaw", "left_eye", "right_eye"] if J == 5
                 else ["root"] + [f"joint{j}" for j in range(1, J)])
    name = str(np.asarray(d["name"]).item()) if "name" in d else "head"
    n_mouth = int(np.asarray(d.get("num_mouth_faces", 0)).item())
    expr_names = _expression_names(d, path, exprdirs.shape[2], names)
    return HeadData(name=name, v_template=v, faces=faces, faces_uv=faces_uv, uvs=uvs,
                    exprdirs=exprdirs, posedirs=posedirs, J_regressor=J_reg, parents=parents,
                    lbs_weights=weights, joint_names=names, num_mouth_faces=n_mouth,
                    expression_names=expr_names)


def _expression_names(d: dict, path: Path, count: int, joint_names: list[str]) -> list[str]:
    """The optional ``expression_names`` [E] of head.npz, checked; ``Exp000``… when absent.

    Raises:
        AvatarError: wrong count, duplicates, or a name Blender cannot use as a shape key
            (empty, over 63 bytes, a quote or backslash, or clashing with ``Basis`` / the
            ``Pose_<joint>_<r><c>`` corrective keys).
    """
    if "expression_names" not in d:
        return default_expression_names(count)
    names = [str(n) for n in np.asarray(d["expression_names"]).reshape(-1).tolist()]
    if len(names) != count:
        raise AvatarError(f"{path}: 'expression_names' must have one name per expression "
                          f"coefficient ({count}), found {len(names)}")
    reserved = {"Basis"} | {f"Pose_{j}_{r}{c}" for j in joint_names[1:] for r in range(3) for c in range(3)}
    for n in names:
        if (not n.strip() or len(n.encode("utf-8")) > _MAX_KEY_NAME or '"' in n or "\\" in n
                or n in reserved):
            raise AvatarError(f"{path}: 'expression_names' has {n!r}, which cannot name a shape key "
                              f"(1-{_MAX_KEY_NAME} bytes, no quote or backslash, not 'Basis' or a "
                              f"'Pose_' corrective)")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise AvatarError(f"{path}: 'expression_names' must be unique, found duplicates {dup}")
    return names


def read_bindings(path: Path, num_faces: int) -> Bindings:
    """Reads and checks blender/bindings.npz against a mesh of ``num_faces`` triangles.

    Raises:
        AvatarError: missing file/key, wrong shapes, or face indices out of range.
    """
    path = Path(path)
    d = _load_npz(path)
    face_idx = _require(d, path, "face_idx", 1, "i").astype(np.int32)
    bary = _require(d, path, "bary", 2).astype(np.float32)
    n = len(face_idx)
    _expect_shape(path, "bary", bary, (n, 3))
    if n and (face_idx.min() < 0 or face_idx.max() >= num_faces):
        raise AvatarError(f"{path}: 'face_idx' must be in [0, {num_faces}) (the head's faces), "
                          f"found [{face_idx.min()}, {face_idx.max()}]")
    if "uv" in d:
        uv = _require(d, path, "uv", 2).astype(np.float32)
        _expect_shape(path, "uv", uv, (n, 2))
    else:
        uv = np.zeros((n, 2), np.float32)
    return Bindings(face_idx=face_idx, bary=bary, uv=uv)


def read_trained_gaussians(path: Path, num_gaussians: int) -> TrainedGaussians:
    """Reads and checks blender/gaussians.npz against ``num_gaussians`` bindings.

    Raises:
        AvatarError: missing file/key, wrong shapes, or values out of their range.
    """
    path = Path(path)
    d = _load_npz(path)
    n = int(num_gaussians)
    out = {}
    for key, cols in (("color", 3), ("opacity", 0), ("scale", 3), ("rotation", 3), ("offset", 0)):
        arr = _require(d, path, key, 2 if cols else 1).astype(np.float32)
        _expect_shape(path, key, arr, (n, cols) if cols else (n,))
        out[key] = arr
    if "roughness" in d or "f0" in d:  # a relightable avatar's
        for key in ("roughness", "f0"):
            out[key] = _require(d, path, key, 1).astype(np.float32)
            _expect_shape(path, key, out[key], (n,))
    for key in ("color", "opacity"):
        if out[key].size and (out[key].min() < 0.0 or out[key].max() > 1.0):
            raise AvatarError(f"{path}: '{key}' must lie in [0, 1], found "
                              f"[{out[key].min():.4g}, {out[key].max():.4g}]")
    return TrainedGaussians(**out)


def read_tracking(path: Path, num_joints: int) -> Tracking:
    """Reads and checks tracking.npz (per-frame FLAME parameters and OpenCV cameras).

    Raises:
        AvatarError: missing file/key or inconsistent frame counts.
    """
    path = Path(path)
    d = _load_npz(path)
    expr = _require(d, path, "expr", 2).astype(np.float32)
    T = expr.shape[0]
    pose = _require(d, path, "pose", 2).astype(np.float32)
    _expect_shape(path, "pose", pose, (T, num_joints * 3))
    viewmat = _require(d, path, "viewmat", 3).astype(np.float32)
    _expect_shape(path, "viewmat", viewmat, (T, 4, 4))
    # K is per frame [T, 3, 3]; a single [3, 3] is accepted and repeated.
    K = _require(d, path, "K", 3 if np.ndim(d.get("K", 0)) == 3 else 2).astype(np.float32)
    if K.ndim == 2:
        K = np.broadcast_to(K, (T, 3, 3)).copy()
    _expect_shape(path, "K", K, (T, 3, 3))
    if "translation" in d:
        transl = _require(d, path, "translation", 2).astype(np.float32)
        _expect_shape(path, "translation", transl, (T, 3))
    else:
        transl = np.zeros((T, 3), np.float32)
    for key in ("width", "height"):
        if key not in d:
            raise AvatarError(f"{path}: missing key '{key}'")
    width, height = int(np.asarray(d["width"]).item()), int(np.asarray(d["height"]).item())
    if width < 1 or height < 1:
        raise AvatarError(f"{path}: image size must be positive, found {width}x{height}")
    names = [str(n) for n in np.asarray(d["frame_names"]).tolist()] if "frame_names" in d else []
    split = np.asarray(d["split"]).astype(np.int8) if "split" in d else None
    return Tracking(expr=expr, pose=pose, translation=transl, viewmat=viewmat, K=K, width=width,
                    height=height, frame_names=names, split=split)


def read_maps_manifest(folder: Path) -> list[MapEntry]:
    """Reads maps/maps.json: ``{"maps": {name: {"file", "channels", "colorspace"}}}``.

    Args:
        folder: the avatar folder.
    Returns:
        the maps whose files exist, in manifest order.
    Raises:
        MapsError: maps.json unreadable, malformed, or a listed file missing.
    """
    manifest = Path(folder) / MAPS_MANIFEST
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise MapsError(f"{manifest}: not found (bake the avatar first)") from exc
    except (OSError, ValueError) as exc:
        raise MapsError(f"{manifest}: cannot read JSON ({exc})") from exc
    version = data.get("format_version", 1) if isinstance(data, dict) else 1
    if not isinstance(version, int) or version > MAPS_FORMAT_VERSION:
        raise MapsError(f"{manifest}: format_version {version!r} is newer than this add-on reads "
                        f"({MAPS_FORMAT_VERSION}); update the add-on")
    maps = data.get("maps") if isinstance(data, dict) else None
    if not isinstance(maps, dict) or not maps:
        raise MapsError(f"{manifest}: expected a non-empty object under \"maps\", found {type(maps).__name__}")
    entries = []
    for name, info in maps.items():
        if not isinstance(info, dict) or "file" not in info:
            raise MapsError(f"{manifest}: maps.{name} must be an object with a \"file\", found {info!r}")
        path = manifest.parent / str(info["file"])
        if not path.is_file():
            raise MapsError(f"{manifest}: maps.{name}: file {path} not found")
        ch = info.get("channels", 4)
        channels = len(ch) if isinstance(ch, (list, tuple)) else int(ch)
        colorspace = str(info.get("colorspace") or DEFAULT_COLORSPACE.get(name, "Non-Color"))
        entries.append(MapEntry(name=str(name), path=path, channels=channels, colorspace=colorspace))
    return entries


def read_manifest(folder: Path) -> dict[str, str]:
    """The sha256 per file that avatar.json records (``{}`` for avatars without avatar.json or
    written before it recorded them).

    Raises:
        AvatarError: a save is in progress or was interrupted (``.commit``), avatar.json is
            unreadable, or its format_version is newer than this add-on reads.
    """
    folder = Path(folder)
    if (folder / COMMIT_DIR).is_dir():
        raise AvatarError(f"{folder}: an engine job is saving this avatar, or a save was interrupted "
                          f"({COMMIT_DIR.as_posix()}/ is present); wait for the job to finish — or run any "
                          "engine job on the folder, which completes the save — then import again")
    path = folder / AVATAR_JSON
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AvatarError(f"{path}: cannot read JSON ({exc})") from exc
    version = meta.get("format_version", 1) if isinstance(meta, dict) else None
    if not isinstance(version, int) or version > AVATAR_FORMAT_VERSION:
        raise AvatarError(f"{path}: format_version {version!r} is newer than this add-on reads "
                          f"({AVATAR_FORMAT_VERSION}); update the add-on")
    files = meta.get("files")
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}


def verify_file(folder: Path, rel: Path, manifest: dict[str, str]) -> None:
    """Checks one file's sha256 against avatar.json (nothing to check when it records none).

    Raises:
        AvatarError: the file differs from what the engine saved.
    """
    expected = manifest.get(rel.as_posix())
    if not expected:
        return
    h = hashlib.sha256()
    with open(Path(folder) / rel, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != expected:
        raise AvatarError(f"{Path(folder) / rel}: does not match avatar.json (sha256 {h.hexdigest()[:12]}…, "
                          f"expected {expected[:12]}…): an engine job is saving this avatar, a save was "
                          "interrupted, or the file was replaced; wait for the job (or re-train) and import again")


def read_avatar(folder: Path, *, with_tracking: bool = True, with_maps: bool = True) -> AvatarData:
    """Reads an avatar folder for import.

    blender/head.npz is required; bindings, tracking and maps are optional: when absent or
    unreadable they are skipped with a warning in :attr:`AvatarData.warnings`. The trained
    Gaussians' attributes (blender/gaussians.npz) are read when present with the bindings.

    Args:
        folder: the avatar folder written by the engine.
        with_tracking: read tracking.npz.
        with_maps: read maps/maps.json.
    Raises:
        AvatarError: the folder or blender/head.npz is missing or malformed, or a file does not
            match avatar.json (a save in progress or interrupted: :func:`read_manifest`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AvatarError(f"{folder}: avatar folder not found")
    manifest = read_manifest(folder)
    if not (folder / HEAD_FILE).is_file():
        raise AvatarError(f"{folder}: no {HEAD_FILE.as_posix()} — is this an avatar folder written by "
                          "'Train'? (expected avatar.json, tracking.npz and blender/ inside)")
    verify_file(folder, HEAD_FILE, manifest)
    head = read_head(folder / HEAD_FILE)
    warnings: list[str] = []
    bindings = None
    gaussians = None
    if (folder / BINDINGS_FILE).is_file():
        verify_file(folder, BINDINGS_FILE, manifest)
        bindings = read_bindings(folder / BINDINGS_FILE, len(head.faces))
        if (folder / GAUSSIANS_FILE).is_file():
            verify_file(folder, GAUSSIANS_FILE, manifest)
            gaussians = read_trained_gaussians(folder / GAUSSIANS_FILE, len(bindings.face_idx))
    else:
        warnings.append(f"no {BINDINGS_FILE.as_posix()}: the avatar has no Gaussians to render")
    tracking = None
    if with_tracking:
        if (folder / TRACKING_FILE).is_file():
            verify_file(folder, TRACKING_FILE, manifest)
            tracking = read_tracking(folder / TRACKING_FILE, head.num_joints)
        else:
            warnings.append(f"no {TRACKING_FILE.as_posix()}: imported without the tracked sequence")
    maps: list[MapEntry] = []
    if with_maps:
        try:
            maps = read_maps_manifest(folder)
        except MapsError as exc:
            warnings.append(f"imported without maps: {exc}")
    appearance = read_appearance(folder)
    environment = None
    if appearance == "pbr":
        for candidate in (BAKED_ENVIRONMENT_FILE, ENVIRONMENT_FILE):
            if (folder / candidate).is_file() and (candidate == ENVIRONMENT_FILE or maps):
                verify_file(folder, candidate, manifest)  # blender/environment.exr is in avatar.json
                environment = folder / candidate
                break
        if environment is None:
            warnings.append(f"no {ENVIRONMENT_FILE.as_posix()}: imported without the learnt environment")
    return AvatarData(folder=folder, head=head, bindings=bindings, tracking=tracking, maps=maps,
                      warnings=warnings, gaussians=gaussians, appearance=appearance, environment=environment,
                      perceptual=read_perceptual_term(folder))


def read_appearance(folder: Path) -> str:
    """``avatar.json`` ``appearance`` ("static" when absent: avatars trained before it existed).

    Raises:
        AvatarError: a value other than :data:`APPEARANCES`.
    """
    try:
        meta = json.loads((Path(folder) / AVATAR_JSON).read_text())
    except (OSError, ValueError):
        return "static"
    value = meta.get("appearance", "static") if isinstance(meta, dict) else "static"
    if value not in APPEARANCES:
        raise AvatarError(f"{Path(folder) / AVATAR_JSON}: appearance must be one of {list(APPEARANCES)}, "
                          f"found {value!r}")
    return value


def read_perceptual_term(folder: Path) -> str:
    """``metrics.perceptual`` of ``avatar.json`` ("" when the file or the key is missing: an avatar
    trained before it was recorded, or a folder written by other tools)."""
    try:
        meta = json.loads((Path(folder) / AVATAR_JSON).read_text())
    except (OSError, ValueError):
        return ""
    term = meta.get("metrics", {}).get("perceptual", "") if isinstance(meta, dict) else ""
    return term if isinstance(term, str) else ""
