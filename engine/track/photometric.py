"""Photometric refinement of the landmark fit: analysis by synthesis against a coarse avatar.

Landmarks alone leave degree-level, frame-to-frame errors in head pose and jaw (MediaPipe's
per-frame noise and its pose-dependent reading of a face), which cost several dB of PSNR in the
avatar trained on them (issue 13's measurements). So, as metrical-tracker and VHAP do with their
photometric terms, the tracker alternates, ``refine_rounds`` times:

1. a coarse avatar fit: the engine's own trainer (:class:`engine.train.trainer.Trainer`, FATE's
   Gaussians on the head model) on the training frames at ``refine_resolution``, with the current
   parameters, ``refine_avatar_steps`` steps;
2. a refinement of every frame (test frames included, as trackers do): its head rotation,
   translation, jaw, eyes and expression fitted to its image with that avatar frozen
   (:func:`engine.model.frame_fit.fit_frame`, ``refine_frame_steps`` Adam steps per frame).

Shape, focal length and camera stay as the landmark fit left them.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from engine.data.insta import write_insta
from engine.model.frame_fit import fit_frame
from engine.model.head_model import HeadModel
from engine.track.config import TrackConfig
from engine.track.fit import FitResult

log = logging.getLogger(__name__)


def _downscale(images: np.ndarray, side: int) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA) for im in images])


def _train_config(cfg: TrackConfig, dataset: Path, avatar: Path, round_: int):
    from engine.train.config import TrainConfig
    from engine.train.densify.config import DensifyConfig

    return TrainConfig(dataset=str(dataset), output=str(avatar), head_model=cfg.head_model,
                       steps=cfg.refine_avatar_steps, uv_resolution=cfg.refine_uv_resolution, device=cfg.device,
                       threads=cfg.threads, lr_color=0.01, learn_blendshapes=False,
                       densify=DensifyConfig(strategy="none"), checkpoint_every=10**9, preview_every=0,
                       seed=cfg.seed + round_)


def refine_photometric(cfg: TrackConfig, head: HeadModel, fit: FitResult, principal: np.ndarray,
                       images: np.ndarray, masks: np.ndarray, frames: np.ndarray, work: Path, clock,
                       device: torch.device) -> FitResult:
    """The refined fit (module doc). ``images`` [T, R, R, 3] uint8, ``masks`` [T, R, R] uint8."""
    from engine.track.writer import tracked_sequence
    from engine.train.trainer import Trainer

    R = cfg.resolution
    side = min(cfg.refine_resolution, R)
    s = side / R
    small_img, small_mask = _downscale(images, side), _downscale(masks, side)
    bg = torch.ones(3, device=device)
    gts = torch.as_tensor(small_img, dtype=torch.float32) / 255.0
    a = torch.as_tensor(small_mask, dtype=torch.float32)[..., None] / 255.0
    gts = (gts * a + (1 - a)).to(device)  # composited over white, as the trainer does
    expr, pose, trans = fit.expr.copy(), fit.pose.copy(), fit.translation.copy()
    T = len(frames)
    for round_ in range(cfg.refine_rounds):
        start = (expr.copy(), pose.copy(), trans.copy())
        cur = replace(fit, expr=expr, pose=pose, translation=trans, focal=fit.focal * s)
        ds = work / f"refine{round_}" / "dataset"
        seq = tracked_sequence(ds, cur, np.asarray(principal) * s, frames, side, cfg.test_fraction)
        write_insta(ds, seq, list(small_img), list(small_mask))
        trainer = Trainer(_train_config(cfg, ds, work / f"refine{round_}" / "avatar", round_), head, None,
                          clock.cancel)
        _train(trainer, clock, round_)
        av = trainer.avatar
        shape = torch.as_tensor(fit.shape, device=device)
        for t in range(T):
            cam = seq.camera(t).to(device)
            ff = fit_frame(av, shape, torch.as_tensor(expr[t], device=device), torch.as_tensor(pose[t], device=device),
                           torch.as_tensor(trans[t], device=device), cam, gts[t], bg, steps=cfg.refine_frame_steps)
            expr[t], pose[t], trans[t] = ff.expr.cpu().numpy(), ff.pose.cpu().numpy(), ff.translation.cpu().numpy()
            clock.progress("refine_frames", round_ * T + t + 1, cfg.refine_rounds * T)
            if t % 10 == 0:
                clock.check()
        expr, pose, trans = (smooth_offsets(a, b, frames) for a, b in
                             ((expr, start[0]), (pose, start[1]), (trans, start[2])))
    return replace(fit, expr=expr.astype(np.float32), pose=pose.astype(np.float32),
                   translation=trans.astype(np.float32))


def smooth_offsets(refined: np.ndarray, start: np.ndarray, frames: np.ndarray, passes: int = 2) -> np.ndarray:
    """``start + smooth(refined - start)``: the per-frame photometric corrections [T, D] low-passed
    over time ([1, 2, 1] / 4, ``passes`` times, within runs of consecutive frames), so that the
    refinement removes the landmark fit's slow errors without adding frame-to-frame jitter."""
    d = (refined - start).astype(np.float64)
    runs = np.split(np.arange(len(frames)), np.flatnonzero(np.diff(frames) > 1) + 1)
    for _ in range(passes):
        out = d.copy()
        for r in runs:
            if len(r) >= 3:
                out[r[1:-1]] = 0.25 * d[r[:-2]] + 0.5 * d[r[1:-1]] + 0.25 * d[r[2:]]
        d = out
    return (start + d).astype(np.float32)


def _train(trainer, clock, round_: int) -> None:
    """Runs the trainer's steps with progress under ``refine_avatar`` (no avatar folder is kept)."""
    from engine.data.frames import FrameSchedule

    cfg = trainer.cfg
    schedule = FrameSchedule(trainer.train_idx, cfg.seed)
    while trainer.step < cfg.steps:
        trainer.train_step(schedule(trainer.step))
        trainer.step += 1
        clock.progress("refine_avatar", trainer.step, cfg.steps)
        if trainer.step % 50 == 0:
            clock.check()
