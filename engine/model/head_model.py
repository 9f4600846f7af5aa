"""FLAME-format head models: loading, saving, and the differentiable FLAME layer.

A :class:`HeadModel` holds the arrays of a FLAME-style linear blend-skinned head in
the FLAME canonical frame (meters, right-handed, +Y up, +Z out of the face): the
template, shape / expression bases, pose correctives, joint regressor, kinematic
tree, skinning weights, one UV layout (OBJ convention, origin bottom-left) and the
mouth-closing faces FATE adds between the lips (see :mod:`engine.model.mouth`), with their own
UV island (:mod:`engine.model.mouth_uv`).

:func:`load_head_model` reads what users bring (FLAME 2020 ``generic_model.pkl``,
FLAME 2023 pickles, ``.npz`` files with the pickle's keys, or a folder with one of
those plus ``head_template_mesh.obj``); pickles go through the restricted unpickler
of :mod:`engine.io.flame_pickle`. :meth:`HeadModel.save_npz` writes our own ``.npz``
(pickle key names and layouts, no pickled objects; docs/FORMATS.md).

:class:`FlameLayer` evaluates the model with ``smplx.lbs.lbs``; learnt corrections
to the expression basis, pose correctives and template (FATE Eq. 5) are added to
the bases before skinning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from engine.errors import HeadModelError
from engine.io.atomic import write_npz
from engine.io.flame_pickle import load_flame_pickle
from engine.io.obj import read_obj
from engine.model.mouth import mouth_closing_faces
from engine.model.mouth_uv import close_mouth

logger = logging.getLogger(__name__)

__all__ = [
    "FLAME_JOINT_NAMES",
    "FLAME_SHAPE_COMPONENTS",
    "HEAD_MODEL_FORMAT",
    "HeadModel",
    "FlameLayer",
    "load_head_model",
    "model_info",
]

FLAME_JOINT_NAMES = ["root", "neck", "jaw", "left_eye", "right_eye"]
"""Joint order of FLAME's kinematic tree (``kintree_table``)."""

FLAME_SHAPE_COMPONENTS = 300
"""FLAME pickles stack 300 shape then the expression components in ``shapedirs``."""

HEAD_MODEL_FORMAT = "fate-head-model"
HEAD_MODEL_FORMAT_VERSION = 1

_UV_TEMPLATE_NAME = "head_template_mesh.obj"

# Floating-point and integer fields in the order used by sha256() and save_npz().
_FLOAT_FIELDS = ("v_template", "shapedirs", "exprdirs", "posedirs", "J_regressor", "lbs_weights", "uvs")
_INT_FIELDS = ("faces", "parents", "faces_uv", "mouth_faces", "mouth_faces_uv")


@dataclass
class HeadModel:
    """A FLAME-format head model (numpy; float32 and int64 arrays).

    Frame: FLAME canonical (meters, right-handed, +Y up, +Z out of the face).

    Attributes:
        name: human-readable model name (e.g. "FLAME 2020 (generic_model.pkl)").
        v_template: rest template. [V, 3]
        faces: mesh triangles (without the mouth faces). [F, 3] int64
        shapedirs: identity (shape) basis, meters per unit coefficient. [V, 3, S]
        exprdirs: expression basis, meters per unit coefficient. [V, 3, E]
        posedirs: pose correctives in smplx layout: rows are the entries of
            (R_j - I) for joints 1..J-1, row-major 3x3 each. [(J-1)*9, V*3]
        J_regressor: joint regressor (dense). [J, V]
        parents: parent joint of each joint, parents[0] == -1, parents[j] < j. [J] int64
        lbs_weights: skinning weights, rows sum to 1. [V, J]
        joint_names: J names (FLAME: root, neck, jaw, left_eye, right_eye).
        uvs: texture coordinates, OBJ convention (origin bottom-left, v up). [T, 2]
        faces_uv: uv index of each face corner. [F, 3] int64
        mouth_faces: mouth-closing triangles between the lips (FATE/FlashAvatar). [M, 3] int64
        mouth_faces_uv: their uv indices. [M, 3] int64
    """

    name: str
    v_template: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    exprdirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    parents: np.ndarray
    lbs_weights: np.ndarray
    joint_names: list[str]
    uvs: np.ndarray
    faces_uv: np.ndarray
    mouth_faces: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))
    mouth_faces_uv: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))

    def __post_init__(self) -> None:
        for k in _FLOAT_FIELDS:
            setattr(self, k, np.ascontiguousarray(getattr(self, k), dtype=np.float32))
        for k in _INT_FIELDS:
            setattr(self, k, np.ascontiguousarray(getattr(self, k), dtype=np.int64))
        self.faces = self.faces.reshape(-1, 3)
        self.faces_uv = self.faces_uv.reshape(-1, 3)
        self.mouth_faces = self.mouth_faces.reshape(-1, 3)
        self.mouth_faces_uv = self.mouth_faces_uv.reshape(-1, 3)
        self.name = str(self.name)
        self.joint_names = [str(n) for n in self.joint_names]
        self.validate()

    # ----------------------------------------------------------------- checks
    def validate(self) -> None:
        """Checks shapes, index ranges and that every float array is finite.

        Raises:
            HeadModelError: naming the field, the expected and the found shape (or the count of
                NaN/Inf values).
        """
        n = self.name
        for k in _FLOAT_FIELDS:
            bad_values = int((~np.isfinite(getattr(self, k))).sum())
            if bad_values:
                raise HeadModelError(f"head model {n!r}: {k} has {bad_values} NaN/Inf value(s)")

        def bad(what: str, expected: str, found: Any) -> HeadModelError:
            return HeadModelError(f"head model {n!r}: {what}: expected {expected}, found {found}")

        V = self.v_template.shape[0] if self.v_template.ndim == 2 else -1
        if self.v_template.ndim != 2 or self.v_template.shape[1] != 3:
            raise bad("v_template", "[V, 3]", self.v_template.shape)
        J = len(self.parents)
        for k, arr in (("shapedirs", self.shapedirs), ("exprdirs", self.exprdirs)):
            if arr.ndim != 3 or arr.shape[:2] != (V, 3):
                raise bad(k, f"[{V}, 3, K]", arr.shape)
        if self.posedirs.shape != ((J - 1) * 9, V * 3):
            raise bad("posedirs", f"[{(J - 1) * 9}, {V * 3}]", self.posedirs.shape)
        if self.J_regressor.shape != (J, V):
            raise bad("J_regressor", f"[{J}, {V}]", self.J_regressor.shape)
        if self.lbs_weights.shape != (V, J):
            raise bad("lbs_weights", f"[{V}, {J}]", self.lbs_weights.shape)
        if J < 1 or self.parents[0] != -1 or np.any(self.parents[1:] < 0) or np.any(
            self.parents[1:] >= np.arange(1, J)
        ):
            raise bad("parents", "parents[0] == -1 and 0 <= parents[j] < j", self.parents.tolist())
        if len(self.joint_names) != J:
            raise bad("joint_names", f"{J} names", len(self.joint_names))
        T = self.uvs.shape[0]
        if self.uvs.ndim != 2 or self.uvs.shape[1] != 2:
            raise bad("uvs", "[T, 2]", self.uvs.shape)
        if self.faces_uv.shape != self.faces.shape:
            raise bad("faces_uv", f"{self.faces.shape} like faces", self.faces_uv.shape)
        if self.mouth_faces_uv.shape != self.mouth_faces.shape:
            raise bad("mouth_faces_uv", f"{self.mouth_faces.shape} like mouth_faces", self.mouth_faces_uv.shape)
        for k, arr, hi in (
            ("faces", self.faces, V),
            ("mouth_faces", self.mouth_faces, V),
            ("faces_uv", self.faces_uv, T),
            ("mouth_faces_uv", self.mouth_faces_uv, T),
        ):
            if arr.size and (arr.min() < 0 or arr.max() >= hi):
                raise bad(k, f"indices in [0, {hi})", f"range {arr.min()}..{arr.max()}")

    # ------------------------------------------------------------ properties
    @property
    def faces_all(self) -> np.ndarray:
        """Mesh faces then mouth faces. [F+M, 3] int64"""
        return np.concatenate([self.faces, self.mouth_faces], axis=0)

    @property
    def faces_uv_all(self) -> np.ndarray:
        """UV indices of :attr:`faces_all`. [F+M, 3] int64"""
        return np.concatenate([self.faces_uv, self.mouth_faces_uv], axis=0)

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_shape(self) -> int:
        return int(self.shapedirs.shape[2])

    @property
    def num_expr(self) -> int:
        return int(self.exprdirs.shape[2])

    @property
    def num_joints(self) -> int:
        return int(self.parents.shape[0])

    # -------------------------------------------------------------- identity
    def sha256(self) -> str:
        """Content hash over the name, joint names and every array (dtype, shape, bytes)."""
        h = hashlib.sha256()
        h.update(self.name.encode("utf-8") + b"\0")
        h.update("\n".join(self.joint_names).encode("utf-8") + b"\0")
        for k in _FLOAT_FIELDS + _INT_FIELDS:
            arr = np.ascontiguousarray(getattr(self, k))
            h.update(f"{k}:{arr.dtype.str}:{arr.shape}".encode("ascii"))
            h.update(arr.tobytes())
        return h.hexdigest()

    # ------------------------------------------------------------------- I/O
    def to_npz_dict(self) -> dict[str, np.ndarray]:
        """The arrays written by :meth:`save_npz` (FLAME pickle key names and layouts).

        ``posedirs`` is stored as in the pickle, [V, 3, (J-1)*9]; ``kintree_table``
        [2, J] int64 with -1 for the root's parent; names as unicode arrays.
        """
        V, J = self.num_vertices, self.num_joints
        return {
            "format": np.array(HEAD_MODEL_FORMAT),
            "format_version": np.array(HEAD_MODEL_FORMAT_VERSION, dtype=np.int64),
            "name": np.array(self.name),
            "joint_names": np.array(self.joint_names, dtype=np.str_),
            "v_template": self.v_template,
            "f": self.faces,
            "shapedirs": self.shapedirs,
            "exprdirs": self.exprdirs,
            "posedirs": np.ascontiguousarray(self.posedirs.T.reshape(V, 3, (J - 1) * 9)),
            "J_regressor": self.J_regressor,
            "kintree_table": np.stack([self.parents, np.arange(J, dtype=np.int64)]),
            "weights": self.lbs_weights,
            "vt": self.uvs,
            "ft": self.faces_uv,
            "mouth_faces": self.mouth_faces,
            "mouth_faces_uv": self.mouth_faces_uv,
        }

    def save_npz(self, path: str | os.PathLike) -> None:
        """Writes the model as an uncompressed ``.npz`` atomically (no pickled objects).

        ``np.load(path, allow_pickle=False)`` reads it; :func:`load_head_model` round-trips it.

        Args:
            path: destination file (conventionally ``*.npz``).
        """
        write_npz(path, **self.to_npz_dict())


# ---------------------------------------------------------------------- loading
def _first(d: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if k in d:
            return d[k]
    return None


def _dense(x: Any) -> np.ndarray:
    if sp.issparse(x):
        return np.asarray(x.toarray())
    return np.asarray(x)


def _str_of(x: Any) -> str:
    arr = np.asarray(x)
    return str(arr.item() if arr.ndim == 0 else arr.ravel()[0])


def _find_in_folder(folder: Path) -> Path:
    """The model file inside a user's FLAME folder (pickle preferred over npz)."""
    cands = [folder / "generic_model.pkl"]
    cands += sorted(folder.glob("flame2023*.pkl"))
    cands += sorted(p for p in folder.glob("*.pkl") if p not in cands)
    cands += sorted(folder.glob("*.npz"))
    for c in cands:
        if c.is_file():
            return c
    raise HeadModelError(
        f"{folder}: no head model found: expected generic_model.pkl (FLAME 2020), "
        f"flame2023*.pkl or a .npz file in the folder"
    )


def _template_mouth_faces(obj_faces: np.ndarray, obj_faces_uv: np.ndarray,
                          model_faces: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The mouth faces a UV template adds after the model's own faces (FATE's
    ``head_template_mouth_close.obj``: FLAME's 9,976 faces, then the mouth's, with an island of
    their own), or None when the template's faces are not the model's plus extra ones.

    Returns:
        (mouth_faces [M, 3] int64, mouth_faces_uv [M, 3] int64).
    """
    F = len(model_faces)
    if len(obj_faces) <= F or not np.array_equal(obj_faces[:F], model_faces):
        return None
    return obj_faces[F:].astype(np.int64), obj_faces_uv[F:].astype(np.int64)


def _from_arrays(d: dict[str, Any], source: Path, obj_path: Path | None) -> HeadModel:
    """Builds a HeadModel from a dict with FLAME pickle keys (or our own npz keys)."""

    def need(*keys: str) -> Any:
        val = _first(d, *keys)
        if val is None:
            raise HeadModelError(f"{source}: missing key {' / '.join(repr(k) for k in keys)}")
        return val

    v_template = _dense(need("v_template")).astype(np.float32)
    if v_template.ndim != 2 or v_template.shape[1] != 3:
        raise HeadModelError(f"{source}: v_template: expected [V, 3], found {v_template.shape}")
    V = v_template.shape[0]
    faces = _dense(need("f", "faces")).astype(np.int64)

    shapedirs = _dense(need("shapedirs")).astype(np.float32)
    if shapedirs.ndim == 2:
        shapedirs = shapedirs[:, :, None] if shapedirs.shape == (V, 3) else shapedirs
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (V, 3):
        raise HeadModelError(f"{source}: shapedirs: expected [{V}, 3, K], found {shapedirs.shape}")
    exprdirs = _first(d, "exprdirs")
    if exprdirs is not None:
        exprdirs = _dense(exprdirs).astype(np.float32)
    else:
        K = shapedirs.shape[2]
        if K > FLAME_SHAPE_COMPONENTS:
            exprdirs = shapedirs[:, :, FLAME_SHAPE_COMPONENTS:]
            shapedirs = shapedirs[:, :, :FLAME_SHAPE_COMPONENTS]
        else:
            logger.warning("%s: shapedirs has %d components (<= %d): no expression basis",
                           source, K, FLAME_SHAPE_COMPONENTS)
            exprdirs = np.zeros((V, 3, 0), np.float32)

    kintree = _first(d, "kintree_table")
    if kintree is not None:
        kintree = _dense(kintree)
        if kintree.ndim != 2 or kintree.shape[0] != 2:
            raise HeadModelError(f"{source}: kintree_table: expected [2, J], found {kintree.shape}")
        order = kintree[1].astype(np.int64)
        if not np.array_equal(order, np.arange(kintree.shape[1])):
            raise HeadModelError(f"{source}: kintree_table row 1: expected 0..J-1, found {order.tolist()}")
        parents = kintree[0].astype(np.int64)
        parents[0] = -1  # FLAME stores the root's parent as uint32 max
    else:
        parents = _dense(need("parents")).astype(np.int64)
    J = len(parents)

    posedirs = _dense(need("posedirs")).astype(np.float32)
    P = (J - 1) * 9
    if posedirs.ndim == 3 and posedirs.shape[:2] == (V, 3):
        posedirs = posedirs.reshape(V * 3, -1).T  # like smplx.FLAME: [V,3,P] -> [P, V*3]
    if posedirs.shape != (P, V * 3):
        raise HeadModelError(
            f"{source}: posedirs: expected [{V}, 3, {P}] (pickle) or [{P}, {V * 3}] (smplx), "
            f"found {posedirs.shape}"
        )
    J_regressor = _dense(need("J_regressor")).astype(np.float32)
    lbs_weights = _dense(need("weights", "lbs_weights")).astype(np.float32)

    names = _first(d, "joint_names")
    if names is not None:
        joint_names = [str(n) for n in np.asarray(names).ravel()]
    elif J == len(FLAME_JOINT_NAMES):
        joint_names = list(FLAME_JOINT_NAMES)
    else:
        joint_names = [f"joint_{j}" for j in range(J)]
    name = _first(d, "name")
    name = _str_of(name) if name is not None else f"FLAME ({source.name})"

    # UV layout: an explicit .obj wins, then the file's own uvs, then the template beside it.
    uvs = _first(d, "vt", "uvs")
    faces_uv = _first(d, "ft", "faces_uv")
    if obj_path is None and (uvs is None or faces_uv is None):
        beside = source.parent / _UV_TEMPLATE_NAME
        if beside.is_file():
            obj_path = beside
    if obj_path is not None:
        obj = read_obj(obj_path)
        if obj.vertices.shape[0] != V:
            raise HeadModelError(
                f"{obj_path}: UV template has {obj.vertices.shape[0]} vertices, "
                f"the model {source} has {V}: they are not the same topology"
            )
        if len(obj.faces_uv) == 0 or obj.faces_uv.min() < 0:
            raise HeadModelError(f"{obj_path}: every face corner needs a 'vt' index (v/vt)")
        uvs, faces_uv = obj.uvs, obj.faces_uv
        template_mouth = _template_mouth_faces(obj.faces, obj.faces_uv, faces)
        if template_mouth is not None:
            logger.info("%s: the template brings %d mouth faces of its own (with their UVs); using them",
                        obj_path, len(template_mouth[0]))
            d = {**d, "mouth_faces": template_mouth[0], "mouth_faces_uv": template_mouth[1]}
            faces_uv = obj.faces_uv[: len(faces)]
        elif obj.faces.shape != faces.shape or not np.array_equal(obj.faces, faces):
            logger.warning("%s: faces differ from %s; using the .obj faces (they carry the UVs)",
                           obj_path, source)
            faces = obj.faces
    if uvs is None or faces_uv is None:
        raise HeadModelError(
            f"{source}: no UV layout: the file has no 'vt'/'ft' and no {_UV_TEMPLATE_NAME} "
            f"was given or found beside it (FLAME texture space)"
        )
    uvs = _dense(uvs).astype(np.float32)
    faces_uv = _dense(faces_uv).astype(np.int64)

    mouth = _first(d, "mouth_faces")
    if mouth is not None:
        mouth_faces = _dense(mouth).astype(np.int64).reshape(-1, 3)
        muv = _first(d, "mouth_faces_uv")
        if muv is None:
            _, muv = mouth_closing_faces(faces, faces_uv, v_template)
            if muv is None or muv.shape != mouth_faces.shape:
                raise HeadModelError(f"{source}: mouth_faces given without mouth_faces_uv")
        mouth_faces_uv = _dense(muv).astype(np.int64).reshape(-1, 3)
    else:
        uvs, mouth_faces, mouth_faces_uv = close_mouth(uvs, faces, faces_uv, v_template)

    return HeadModel(
        name=name,
        v_template=v_template,
        faces=faces,
        shapedirs=shapedirs,
        exprdirs=exprdirs,
        posedirs=posedirs,
        J_regressor=J_regressor,
        parents=parents,
        lbs_weights=lbs_weights,
        joint_names=joint_names,
        uvs=uvs,
        faces_uv=faces_uv,
        mouth_faces=mouth_faces,
        mouth_faces_uv=mouth_faces_uv,
    )


def load_head_model(path: str | os.PathLike, obj_path: str | os.PathLike | None = None) -> HeadModel:
    """Loads a FLAME-format head model.

    Args:
        path: one of
            - a ``.pkl`` (FLAME 2020 ``generic_model.pkl``: ``shapedirs`` [V, 3, 400] =
              300 shape + 100 expression; FLAME 2023 pickles likewise, with as many
              components as present: the first 300 are shape, the rest expression),
              read with the restricted unpickler;
            - an ``.npz`` with the pickle's keys (``v_template``, ``f``, ``shapedirs``,
              ``posedirs``, ``J_regressor``, ``weights``, ``kintree_table``) and optional
              ``exprdirs``, ``vt``/``uvs``, ``ft``/``faces_uv``, ``joint_names``, ``name``,
              ``mouth_faces``/``mouth_faces_uv`` (what :meth:`HeadModel.save_npz` writes);
            - a folder holding one of those (``generic_model.pkl``, ``flame2023*.pkl``,
              other ``*.pkl``, then ``*.npz``, in that order of preference) and usually
              ``head_template_mesh.obj``.
        obj_path: FLAME texture-space ``.obj`` giving the UV layout; when None, the
            file's own UVs, else ``head_template_mesh.obj`` beside the model.
    Returns:
        The model; mouth faces are computed with :func:`engine.model.mouth.mouth_closing_faces`
        when the file has none.
    Raises:
        HeadModelError: missing file or key, wrong shapes, an unsafe pickle, no UV
            layout, or a UV template whose vertex count differs from the model's.
    """
    path = Path(path)
    if path.is_dir():
        if obj_path is None and (path / _UV_TEMPLATE_NAME).is_file():
            obj_path = path / _UV_TEMPLATE_NAME
        path = _find_in_folder(path)
    if not path.is_file():
        raise HeadModelError(f"head model not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        d: dict[str, Any] = load_flame_pickle(path)
    elif suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except ValueError as exc:
            raise HeadModelError(f"{path}: cannot read .npz without pickle ({exc}): the file is corrupt, "
                                 "truncated, or holds pickled objects (refused)") from exc
        except (OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise HeadModelError(f"{path}: cannot read .npz ({type(exc).__name__}: {exc}); the file is corrupt "
                                 "or truncated") from exc
        fmt = d.get("format")
        if fmt is not None and _str_of(fmt) != HEAD_MODEL_FORMAT:
            raise HeadModelError(f"{path}: format {_str_of(fmt)!r}, expected {HEAD_MODEL_FORMAT!r}")
        ver = d.get("format_version")
        if ver is not None and int(np.asarray(ver)) > HEAD_MODEL_FORMAT_VERSION:
            raise HeadModelError(
                f"{path}: format_version {int(np.asarray(ver))} is newer than this engine's "
                f"{HEAD_MODEL_FORMAT_VERSION}"
            )
    else:
        raise HeadModelError(f"{path}: unknown head model file type {suffix!r}, expected .pkl or .npz")
    try:
        model = _from_arrays(d, path, Path(obj_path) if obj_path is not None else None)
    except HeadModelError as exc:
        if str(path) in str(exc):
            raise
        raise HeadModelError(f"{path}: {exc}") from exc
    logger.info("loaded head model %r from %s: %d vertices, %d faces (+%d mouth), S=%d, E=%d",
                model.name, path, model.num_vertices, len(model.faces), len(model.mouth_faces),
                model.num_shape, model.num_expr)
    return model


def flame_version(model: HeadModel) -> str | None:
    """"2020", "2023" or None (not a FLAME model, or the version cannot be told).

    Told from the name the loader gives (the file name: ``generic_model.pkl`` is FLAME 2020,
    ``flame2023*.pkl`` is 2023), the only place the two versions differ for a reader: both have
    5,023 vertices, 300 shape and 100 expression components, but not the same bases.
    """
    name = model.name.lower()
    if "2023" in name:
        return "2023"
    if "2020" in name or "generic_model" in name:
        return "2020"
    return None


def model_info(model_or_path: HeadModel | str | os.PathLike) -> dict[str, Any]:
    """A JSON-ready summary of a head model (``python -m engine model-info PATH``).

    Args:
        model_or_path: a :class:`HeadModel` or anything :func:`load_head_model` accepts.
    Returns:
        dict with name, vertices, faces, mouth_faces, uvs, shape_dim, expr_dim,
        pose_dim (J*3, axis-angle), joint_names, sha256.
    """
    m = model_or_path if isinstance(model_or_path, HeadModel) else load_head_model(model_or_path)
    return {
        "name": m.name,
        "vertices": m.num_vertices,
        "faces": int(len(m.faces)),
        "mouth_faces": int(len(m.mouth_faces)),
        "uvs": int(len(m.uvs)),
        "shape_dim": m.num_shape,
        "expr_dim": m.num_expr,
        "pose_dim": m.num_joints * 3,
        "joint_names": list(m.joint_names),
        "flame_version": flame_version(m),
        "sha256": m.sha256(),
    }


