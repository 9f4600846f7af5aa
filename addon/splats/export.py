"""Export Splats (.ply): the posed avatar as a standard 3DGS PLY (:mod:`addon.files.ply`), for the
current frame or a frame range as a numbered sequence.

Each file holds the head's Gaussians exactly as FATE Splats draws them at that frame (the splat
runtime: evaluated mesh, maps re-read), in the Blender world frame (+Z up, meters; Blender 5.3's
PLY importer with its default axes puts them back where they were), converted by
:mod:`.conventions`: ``f_dc = (rgb − 0.5) / C0`` of the training-space colour, ``logit`` opacity,
``log σ`` and the axes' quaternion from the eigendecomposition of each world covariance.
"""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np

from ..errors import SplatError
from ..files.ply import PlySplats, write_splat_ply
from . import runtime
from .conventions import dc_from_color, logit, scale_rotation_from_covariance
from .geometry import SplatGaussians

__all__ = ["MIN_SIGMA", "ply_splats", "frame_path", "export_splats"]

MIN_SIGMA = 1e-9
"""σ below this (m) is raised to it before the log (a flat Gaussian has σ = 0 on one axis)."""


def ply_splats(g: SplatGaussians) -> PlySplats:
    """World Gaussians (our conventions) → the 3DGS file conventions.

    Args:
        g: Gaussians in the Blender world frame, encoded colour, opacity in [0, 1].
    """
    sigma, quat = scale_rotation_from_covariance(g.covars)
    return PlySplats(positions=np.asarray(g.means, np.float32), f_dc=dc_from_color(g.colors),
                     opacity_logit=logit(g.opacities),
                     log_scale=np.log(np.maximum(sigma, MIN_SIGMA)).astype(np.float32), rotation=quat)


def frame_path(path: str | Path, frame: int, sequence: bool) -> Path:
    """``path`` for a single export; ``<stem>_<frame:04d>.ply`` for each frame of a sequence."""
    path = Path(path)
    if path.suffix.lower() != ".ply":
        path = path.with_suffix(".ply")
    return path.with_name(f"{path.stem}_{frame:04d}.ply") if sequence else path


def export_splats(head: bpy.types.Object, scene: bpy.types.Scene, path: str | Path,
                  frames: list[int] | None = None) -> list[Path]:
    """Writes the posed head's Gaussians to 3DGS PLY files.

    Args:
        head: a FATE head object.
        scene: the scene whose frames are evaluated (its current frame is restored).
        path: the .ply file (a sequence numbers it: ``<stem>_0001.ply`` …).
        frames: frames to export; None = the current frame, one file at ``path``.
    Returns:
        the files written, in frame order.
    Raises:
        SplatError: not a FATE head, no bindings/maps, or the folder does not exist.
    """
    if not runtime.is_avatar(head):
        raise SplatError(f"object '{head.name}' is not a FATE head (select the imported head)")
    sequence = frames is not None
    frames = list(frames) if sequence else [scene.frame_current]
    current = scene.frame_current
    written = []
    try:
        for frame in frames:
            if frame != scene.frame_current:
                scene.frame_set(frame)
            dg = bpy.context.evaluated_depsgraph_get()
            g = runtime.avatar_runtime(head).gaussians(head.evaluated_get(dg), resample=(frame == frames[0]))
            out = frame_path(path, frame, sequence)
            try:
                written.append(write_splat_ply(out, ply_splats(g)))
            except Exception as exc:  # FateAddonError (bad folder) or OSError
                raise SplatError(f"cannot write {out}: {exc}") from exc
    finally:
        if scene.frame_current != current:
            scene.frame_set(current)
    return written
