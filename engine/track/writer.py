"""Writing the tracked dataset: the INSTA layout (:func:`engine.data.insta.write_insta`) and
``tracking/`` (``landmarks.npz``, ``report.json``, ``overlay.mp4``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from engine.data.insta import write_insta
from engine.data.sequence import Sequence
from engine.io.atomic import write_json, write_npz
from engine.model.head_model import HeadModel
from engine.track.config import TrackConfig
from engine.track.embedding import LandmarkEmbedding, head_hash
from engine.track.fit import FitResult

TRACKING_DIR = "tracking"


def intrinsics(fit: FitResult, principal: np.ndarray) -> np.ndarray:
    """K [3, 3] of the written images (pixels)."""
    return np.array([[fit.focal, 0.0, principal[0]], [0.0, fit.focal, principal[1]], [0.0, 0.0, 1.0]])


def tracked_sequence(root: Path, fit: FitResult, principal: np.ndarray, frames: np.ndarray, resolution: int,
                     test_fraction: float) -> Sequence:
    """The fit as a :class:`Sequence` (frame names = the video's frame numbers; the last
    ``test_fraction`` of the frames is the test split)."""
    T = len(frames)
    names = [f"{int(k):05d}" for k in frames]
    n_test = max(1, int(round(T * test_fraction)))
    K = intrinsics(fit, principal)
    return Sequence(
        root=root, frame_names=names, shape=torch.as_tensor(fit.shape), expr=torch.as_tensor(fit.expr),
        pose=torch.as_tensor(fit.pose), translation=torch.as_tensor(fit.translation),
        viewmats=torch.as_tensor(np.repeat(fit.viewmat[None], T, 0), dtype=torch.float32),
        Ks=torch.as_tensor(np.repeat(K[None], T, 0), dtype=torch.float32), width=resolution, height=resolution,
        image_paths=[root / "images" / f"{n}.png" for n in names],
        mask_paths=[root / "alpha" / f"{n}.png" for n in names],
        split=["train"] * (T - n_test) + ["test"] * n_test)


def write_dataset(root: Path, cfg: TrackConfig, head: HeadModel, emb: LandmarkEmbedding, fit: FitResult,
                  principal: np.ndarray, images: np.ndarray, masks: np.ndarray, frames: np.ndarray, info, det: dict,
                  clock, outliers: list[int]) -> Sequence:
    """Writes the INSTA files and ``tracking/`` into ``root`` (the partial folder).

    Args:
        images: [T, R, R, 3] uint8 crops of the kept frames; masks: [T, R, R] uint8.
        frames: [T] the kept frames' numbers in the video; det: the detection stage's arrays.
    """
    seq = tracked_sequence(root, fit, principal, frames, cfg.resolution, cfg.test_fraction)
    clock.progress("write", 0, 3)
    write_insta(root, seq, list(images), list(masks))
    clock.progress("write", 1, 3)
    tr = root / TRACKING_DIR
    found = np.asarray(det["found"], bool)
    write_npz(tr / "landmarks.npz", landmarks=np.asarray(det["lm"])[:, :, :2].astype(np.float32),
              depth=np.asarray(det["lm"])[:, :, 2].astype(np.float32), detected=found,
              frame=np.arange(len(found), dtype=np.int64), mediapipe_index=emb.mediapipe_index,
              fitted=fit.landmarks_px.astype(np.float32), fitted_frame=np.asarray(frames, np.int64))
    if cfg.overlay:
        from engine.track.report import write_overlay

        write_overlay(tr / "overlay.mp4", head, fit, principal, images, np.asarray(det["lm"])[frames], emb,
                      max(1, int(round(info.fps))))
    clock.progress("write", 2, 3)
    res = fit.residual_px
    crop = [int(x) for x in det["crop"]]
    report = {
        "format": "fate-tracking-report", "format_version": 1,
        "video": str(info.path), "kind": info.kind, "video_size": [info.width, info.height],
        "fps": info.fps, "source_fps": info.source_fps, "variable_frame_rate": bool(info.variable_frame_rate),
        "frames_decoded": int(len(found)), "frames": int(len(frames)),
        "frames_without_face": int((~found).sum()),
        "frames_without_face_list": [int(i) for i in np.flatnonzero(~found)],
        "several_faces": int(det["faces_most"]) > 1, "faces_most": int(det["faces_most"]),
        "note": ("several faces were seen; the largest one was tracked" if int(det["faces_most"]) > 1 else ""),
        "train_frames": len(seq.indices("train")), "test_frames": len(seq.indices("test")),
        "landmark_error_px": {"mean": round(float(res.mean()), 3),
                              "p95": round(float(np.percentile(res, 95)), 3),
                              "per_frame_mean": [round(float(x), 3) for x in res.mean(1)]},
        "outlier_frames": [int(frames[i]) for i in outliers],
        "focal_px": round(float(fit.focal), 3),
        "focal_px_video": round(float(fit.focal) * crop[2] / cfg.resolution, 3),
        "crop": {"x0": crop[0], "y0": crop[1], "side": crop[2], "resolution": cfg.resolution},
        "head_model": head.name, "head_model_hash": head_hash(head.v_template, head.faces),
        "embedding": {"landmarks": len(emb), "method": emb.method, "file": cfg.embedding},
        "settings": asdict(cfg), "seconds": dict(clock.seconds),
    }
    write_json(tr / "report.json", report)
    clock.progress("write", 3, 3)
    return seq
