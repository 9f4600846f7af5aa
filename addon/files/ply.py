"""3DGS PLY files (numpy + stdlib): the layout of the 3DGS reference code, read by SuperSplat,
KIRI 3DGS Render, gsplat's viewers and Blender 5.3's PLY importer.

One ``vertex`` element, binary little-endian float32 properties, in this order::

    x y z  nx ny nz  f_dc_0 f_dc_1 f_dc_2  f_rest_0 … f_rest_44  opacity
    scale_0 scale_1 scale_2  rot_0 rot_1 rot_2 rot_3

- ``x y z``: centre, in the frame the caller chose (we write Blender world, +Z up, meters);
- ``nx ny nz``: zeros (unused by 3DGS readers);
- ``f_dc_*``: SH degree-0 coefficients; ``f_rest_*``: the 45 higher-band coefficients of degree
  3, channel-major (all R, then G, then B) — zeros for our view-independent colours;
- ``opacity``: logit of the opacity; ``scale_*``: log σ per axis; ``rot_*``: quaternion w, x, y, z
  (readers normalise it).

The conversion from our conventions is :mod:`addon.splats.conventions`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FateAddonError

__all__ = ["SH_REST", "PlySplats", "write_splat_ply", "read_splat_ply", "PROPERTIES"]

SH_REST = 45
"""Number of ``f_rest_*`` properties (SH degree 3, 15 coefficients × RGB)."""
PROPERTIES = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
              + [f"f_rest_{i}" for i in range(SH_REST)]
              + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
"""The vertex properties in file order (all float32)."""


@dataclass
class PlySplats:
    """Gaussians in the 3DGS file conventions.

    Attributes:
        positions: centres, meters. [N, 3] float32
        f_dc: SH degree-0 coefficients. [N, 3] float32
        opacity_logit: logit of the opacity. [N] float32
        log_scale: log σ per axis (σ in meters). [N, 3] float32
        rotation: quaternion w, x, y, z. [N, 4] float32
        f_rest: higher SH bands, file order; None = zeros. [N, 45] float32
    """

    positions: np.ndarray
    f_dc: np.ndarray
    opacity_logit: np.ndarray
    log_scale: np.ndarray
    rotation: np.ndarray
    f_rest: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    def table(self) -> np.ndarray:
        """All properties as one array in file order. [N, 62] float32

        Raises:
            FateAddonError: an array has the wrong shape or holds NaN/inf.
        """
        n = len(self)
        parts = {"positions": (self.positions, 3), "f_dc": (self.f_dc, 3),
                 "opacity_logit": (np.reshape(self.opacity_logit, (-1, 1)), 1),
                 "log_scale": (self.log_scale, 3), "rotation": (self.rotation, 4)}
        for name, (arr, k) in parts.items():
            if np.shape(arr) != (n, k):
                raise FateAddonError(f"PLY splats: {name} must be [{n}, {k}], found {np.shape(arr)}")
            if not np.isfinite(arr).all():
                raise FateAddonError(f"PLY splats: {name} holds NaN or infinite values")
        rest = np.zeros((n, SH_REST), np.float32) if self.f_rest is None else self.f_rest
        if np.shape(rest) != (n, SH_REST):
            raise FateAddonError(f"PLY splats: f_rest must be [{n}, {SH_REST}], found {np.shape(rest)}")
        return np.concatenate([self.positions, np.zeros((n, 3)), self.f_dc, rest,
                               parts["opacity_logit"][0], self.log_scale, self.rotation],
                              axis=1).astype("<f4")


def _header(n: int) -> bytes:
    lines = ["ply", "format binary_little_endian 1.0", "comment FATE for Blender: 3DGS Gaussian splats",
             f"element vertex {n}"] + [f"property float {p}" for p in PROPERTIES] + ["end_header"]
    return ("\n".join(lines) + "\n").encode("ascii")


def write_splat_ply(path: str | Path, splats: PlySplats) -> Path:
    """Writes a 3DGS PLY file atomically (temporary file in the same folder, then rename).

    Args:
        path: the .ply file to write (its folder must exist).
        splats: the Gaussians, file conventions.
    Returns:
        the path written.
    Raises:
        FateAddonError: bad arrays, or the folder does not exist.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FateAddonError(f"cannot write {path}: folder {path.parent} does not exist")
    data = np.ascontiguousarray(splats.table())
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_header(len(splats)))
            f.write(data.tobytes())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_splat_ply(path: str | Path) -> PlySplats:
    """Reads a file written by :func:`write_splat_ply` (binary little-endian, float32 properties
    in :data:`PROPERTIES` order; other 3DGS files may order or type properties differently).

    Raises:
        FateAddonError: not such a file.
    """
    path = Path(path)
    raw = path.read_bytes()
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply\n") or end < 0:
        raise FateAddonError(f"{path}: not a PLY file")
    header = raw[:end].decode("ascii", "replace").splitlines()
    props = [line.split()[-1] for line in header if line.startswith("property")]
    count = [int(line.split()[-1]) for line in header if line.startswith("element vertex")]
    if props != PROPERTIES or not count or "format binary_little_endian 1.0" not in header:
        raise FateAddonError(f"{path}: not a FATE 3DGS PLY (binary little-endian, {len(PROPERTIES)} "
                             f"float properties expected, found {len(props)})")
    n = count[0]
    body = np.frombuffer(raw, dtype="<f4", count=n * len(PROPERTIES), offset=end + len(b"end_header\n"))
    t = body.reshape(n, len(PROPERTIES)).astype(np.float32)
    return PlySplats(t[:, 0:3], t[:, 6:9], t[:, 54], t[:, 55:58], t[:, 58:62], t[:, 9:54])
