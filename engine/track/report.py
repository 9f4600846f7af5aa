"""``tracking/overlay.mp4``: every tracked frame with the fitted mesh (thin wireframe of the
triangles facing the camera) and the detected landmarks (green dots) drawn over it, so a person
can judge the fit at a glance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.io.video import write_mp4
from engine.model.head_model import HeadModel
from engine.track.embedding import LandmarkEmbedding
from engine.track.fit import FitResult, fitted_vertices
from engine.track.mesh_render import project


@torch.no_grad()
def draw_overlay(image: np.ndarray, verts: np.ndarray, faces: np.ndarray, viewmat: np.ndarray, K: np.ndarray,
                 detected: np.ndarray | None) -> np.ndarray:
    """One overlay frame: RGB uint8 [H, W, 3] with the mesh (front faces' edges) and landmarks."""
    import cv2

    img = image.copy()
    uv, _ = project(verts, viewmat, K)
    tri = uv[faces]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    front = (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]) < 0
    polys = np.round(tri[front] * 4).astype(np.int32)
    layer = img.copy()
    cv2.polylines(layer, list(polys), True, (80, 160, 255), 1, cv2.LINE_AA, 2)
    img = cv2.addWeighted(layer, 0.45, img, 0.55, 0)
    if detected is not None:
        for x, y in detected[:, :2]:
            if np.isfinite(x):
                cv2.circle(img, (int(x * 4), int(y * 4)), 4, (40, 230, 40), -1, cv2.LINE_AA, 2)
    return img


def write_overlay(path: Path, head: HeadModel, fit: FitResult, principal: np.ndarray, images: np.ndarray,
                  detected: np.ndarray, emb: LandmarkEmbedding, fps: int) -> None:
    """Writes the overlay video of the kept frames (module doc)."""
    verts = fitted_vertices(head, fit)
    K = np.array([[fit.focal, 0, principal[0]], [0, fit.focal, principal[1]], [0, 0, 1.0]])
    faces = np.asarray(head.faces)
    frames = [draw_overlay(images[t], verts[t], faces, fit.viewmat, K, detected[t]) for t in range(len(images))]
    write_mp4(path, frames, fps=fps)
