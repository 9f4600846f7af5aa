"""Minimal Wavefront ``.obj`` reader and writer for textured triangle meshes.

Only what FLAME's texture-space template (``head_template_mesh.obj``) and our own
writers need: ``v`` (positions), ``vt`` (texture coordinates) and ``f`` with
``v``, ``v/vt``, ``v//vn`` or ``v/vt/vn`` corners. Polygons are fan-triangulated,
negative (relative) indices are resolved, everything else (``vn``, ``o``, ``g``,
``usemtl``, ``mtllib``, ``s``, comments) is skipped. UVs keep the OBJ convention:
origin bottom-left, u right, v up.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import HeadModelError
from engine.io.atomic import write_text

logger = logging.getLogger(__name__)


@dataclass
class ObjMesh:
    """A triangle mesh with one UV layout.

    Attributes:
        vertices: positions, in the file's units (meters for FLAME). [V, 3] float32
        uvs: texture coordinates, OBJ convention (origin bottom-left, v up). [T, 2] float32
        faces: vertex indices of each triangle, 0-based. [F, 3] int64
        faces_uv: uv indices of each triangle corner, 0-based; -1 where the file
            gives no ``vt`` for a corner. [F, 3] int64
    """

    vertices: np.ndarray
    uvs: np.ndarray
    faces: np.ndarray
    faces_uv: np.ndarray


def _resolve_index(token: str, count: int, path: Path, line_no: int) -> int:
    """Converts a 1-based (or negative, relative) OBJ index to a 0-based one."""
    try:
        idx = int(token)
    except ValueError:
        raise HeadModelError(
            f"{path}:{line_no}: face index {token!r} is not an integer"
        ) from None
    if idx > 0:
        return idx - 1
    if idx < 0:
        return count + idx
    raise HeadModelError(f"{path}:{line_no}: face index 0 is not valid in OBJ (1-based)")


def read_obj(path: str | os.PathLike) -> ObjMesh:
    """Reads a textured triangle mesh from an ``.obj`` file.

    Args:
        path: the ``.obj`` file.
    Returns:
        The mesh; polygons with more than three corners are fan-triangulated
        (corner 0, i, i+1) in file order.
    Raises:
        HeadModelError: the file is missing, has a malformed line, or a face index
            points outside the ``v``/``vt`` lists.
    """
    path = Path(path)
    if not path.is_file():
        raise HeadModelError(f"OBJ file not found: {path}")
    verts: list[list[float]] = []
    uvs: list[list[float]] = []
    faces: list[tuple[int, int, int]] = []
    faces_uv: list[tuple[int, int, int]] = []
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        for line_no, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            tag = parts[0]
            try:
                if tag == "v":
                    verts.append([float(parts[1]), float(parts[2]), float(parts[3])])
                elif tag == "vt":
                    uvs.append([float(parts[1]), float(parts[2])])
                elif tag == "f":
                    if len(parts) < 4:
                        raise HeadModelError(
                            f"{path}:{line_no}: face with {len(parts) - 1} corners, expected >= 3"
                        )
                    vi: list[int] = []
                    ti: list[int] = []
                    for corner in parts[1:]:
                        fields = corner.split("/")
                        vi.append(_resolve_index(fields[0], len(verts), path, line_no))
                        if len(fields) > 1 and fields[1] != "":
                            ti.append(_resolve_index(fields[1], len(uvs), path, line_no))
                        else:
                            ti.append(-1)
                    for k in range(1, len(vi) - 1):
                        faces.append((vi[0], vi[k], vi[k + 1]))
                        faces_uv.append((ti[0], ti[k], ti[k + 1]))
            except (IndexError, ValueError) as exc:
                raise HeadModelError(f"{path}:{line_no}: malformed {tag!r} line: {exc}") from None

    v = np.asarray(verts, dtype=np.float32).reshape(-1, 3)
    t = np.asarray(uvs, dtype=np.float32).reshape(-1, 2)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    ft = np.asarray(faces_uv, dtype=np.int64).reshape(-1, 3)
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise HeadModelError(
            f"{path}: face vertex index out of range [0, {len(v)}): found {f.min()}..{f.max()}"
        )
    if ft.size and ft.max() >= len(t):
        raise HeadModelError(
            f"{path}: face uv index out of range [0, {len(t)}): found max {ft.max()}"
        )
    logger.debug("read %s: %d v, %d vt, %d triangles", path, len(v), len(t), len(f))
    return ObjMesh(vertices=v, uvs=t, faces=f, faces_uv=ft)


def write_obj(path: str | os.PathLike, mesh: ObjMesh) -> None:
    """Writes a textured triangle mesh to ``path`` atomically (temp file + ``os.replace``).

    Corners write ``v/vt`` when ``faces_uv`` is given and non-negative, else ``v``.
    Positions and UVs are written with 6 decimals (micrometre precision in meters).

    Args:
        path: destination ``.obj``.
        mesh: the mesh; ``uvs``/``faces_uv`` may be empty.
    """
    path = Path(path)
    v = np.asarray(mesh.vertices, dtype=np.float64).reshape(-1, 3)
    t = np.asarray(mesh.uvs, dtype=np.float64).reshape(-1, 2)
    f = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
    ft = np.asarray(mesh.faces_uv, dtype=np.int64).reshape(-1, 3) if mesh.faces_uv is not None else None
    use_uv = ft is not None and len(ft) == len(f) and len(t) > 0 and (len(ft) == 0 or ft.min() >= 0)

    lines = ["# written by FATE for Blender (engine/obj_io.py)"]
    lines += [f"v {a:.6f} {b:.6f} {c:.6f}" for a, b, c in v]
    if use_uv:
        lines += [f"vt {a:.6f} {b:.6f}" for a, b in t]
        fv = f + 1
        fu = ft + 1
        lines += [
            f"f {a}/{ta} {b}/{tb} {c}/{tc}"
            for (a, b, c), (ta, tb, tc) in zip(fv.tolist(), fu.tolist())
        ]
    else:
        lines += [f"f {a} {b} {c}" for a, b, c in (f + 1).tolist()]
    text = "\n".join(lines) + "\n"

    write_text(path, text)
