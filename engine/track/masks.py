"""Foreground masks limited to the head, the hair and the neck.

MediaPipe's selfie segmentation gives the whole person (head, hair, neck, shoulders, clothes).
FATE's avatar is bound to FLAME, which ends at the neck, so the mask keeps what the avatar can
explain: every person pixel above a cut line across the neck, and nothing below it. The cut runs
perpendicular to the face's vertical axis (eye midpoint → chin, from the fitted landmarks) at
``neck`` face-heights below the chin, with a soft edge of a few pixels; hair above and beside the
head is kept (the Gaussians' shell covers some of it), shoulders and clothes are removed.

The segmenter misses parts of faces it is unsure of (harsh light, make-up, an open mouth, a
synthetic face: holes over the eyes and mouth, a grey skull). Wherever the fitted head mesh
covers the image (its silhouette, mouth closed, eroded by a pixel so tracking error at the outline
cannot add background) the pixel is head whatever the segmenter says (:func:`fitted_silhouettes`);
outside it the segmenter decides (hair, ears beyond the mesh).
"""

from __future__ import annotations

import numpy as np


def head_masks(person: np.ndarray, landmarks_px: np.ndarray, mediapipe_index: np.ndarray,
               neck: float = 0.55, soft_px: float = 3.0) -> np.ndarray:
    """Head/hair/neck masks.

    Args:
        person: [T, H, W] uint8 person probability (×255).
        landmarks_px: [T, L, 2] fitted landmark projections (pixels) of the embedded landmarks.
        mediapipe_index: [L] their MediaPipe numbers (33/263 eye corners and 152 chin are used).
        neck: distance of the cut below the chin, in eye-to-chin heights.
        soft_px: width of the cut's soft edge, pixels.
    Returns:
        [T, H, W] uint8 masks (255 = head).
    """
    idx = {int(m): k for k, m in enumerate(mediapipe_index)}
    T, H, W = person.shape
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32) + 0.5
    out = np.zeros_like(person)
    for t in range(T):
        lm = landmarks_px[t]
        eyes = 0.5 * (lm[idx[33]] + lm[idx[263]]) if 33 in idx and 263 in idx else lm.mean(0)
        chin = lm[idx[152]] if 152 in idx else lm[:, :].max(0)
        axis = chin - eyes
        height = max(float(np.linalg.norm(axis)), 1.0)
        down = axis / height
        cut = chin + neck * height * down
        along = (xx - cut[0]) * down[0] + (yy - cut[1]) * down[1]  # > 0 below the cut
        keep = np.clip(0.5 - along / (2 * soft_px), 0.0, 1.0)
        out[t] = (person[t].astype(np.float32) * keep + 0.5).astype(np.uint8)
    return out


def fitted_silhouettes(head, fit, principal: np.ndarray, height: int, width: int,
                       erode_px: int = 1) -> np.ndarray:
    """Where the fitted head mesh (mouth-closing faces included) covers each frame.

    Args:
        head: the :class:`engine.model.head_model.HeadModel` that was fitted.
        fit: its :class:`engine.track.fit.FitResult` (T frames; world = the head's frame).
        principal: [2] principal point, pixels of the images ``fit.landmarks_px`` are in.
        height, width: image size of those images, pixels.
        erode_px: pixels taken off the outline (OpenCV erosion with a 3×3 cross, this many times).
    Returns:
        [T, H, W] uint8 (255 = covered by the mesh).
    """
    import cv2

    from engine.track.fit import fitted_vertices
    from engine.track.mesh_render import rasterize_mesh

    verts = fitted_vertices(head, fit)
    K = np.array([[fit.focal, 0, principal[0]], [0, fit.focal, principal[1]], [0, 0, 1.0]])
    faces = np.asarray(head.faces_all)
    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    out = np.zeros((len(verts), height, width), np.uint8)
    for t, v in enumerate(verts):
        sil = rasterize_mesh(v, faces, fit.viewmat, K, width, height).mask.astype(np.uint8) * 255
        out[t] = cv2.erode(sil, kernel, iterations=erode_px) if erode_px > 0 else sil
    return out
