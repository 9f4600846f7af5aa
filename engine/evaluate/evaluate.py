"""Evaluating an avatar: its renders of a split against the dataset's images → metrics JSON."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.data import load_sequence
from engine.data.frames import resize_sequence
from engine.data.sequence import resize_image
from engine.device import resolve_device
from engine.errors import ConfigError
from engine.evaluate.config import EvalConfig
from engine.evaluate.metrics import evaluate_images, make_lpips
from engine.evaluate.render import load_for_rendering, render_frames
from engine.io.atomic import write_json


PROTOCOL_TRACKED = "tracked"
"""Test frames rendered with their tracked FLAME parameters and cameras, nothing optimised on
them (the plain figure)."""


def protocol_description(loaded) -> dict:
    """What the numbers of a metrics file mean, stored beside them (FATE §4; issue 12).

    ``name``: :data:`PROTOCOL_TRACKED`, or the refined protocol's name when test-frame tracking
    was optimised; ``train_tracking_refined``: whether training optimised per-frame tracking
    (FATE's code does, supp. §7.1); ``perceptual``: the training's perceptual term; full-image
    metrics on the dataset's background; SSIM both on the valid region (``ssim``) and
    zero-padded like FATE's code (``ssim_fate``); LPIPS with the VGG network (FATE: AlexNet).
    """
    cfg = loaded.meta.get("config", {})
    return {"name": PROTOCOL_TRACKED, "train_tracking_refined": bool(cfg.get("refine_tracking", False)),
            "perceptual": loaded.meta.get("metrics", {}).get("perceptual", "unknown"),
            "region": "full image", "ssim": "valid region; ssim_fate: zero padding (FATE)",
            "lpips": "vgg (FATE: alex)"}


def run_eval(cfg: EvalConfig, sink=None) -> dict:
    """Computes PSNR/SSIM(/LPIPS) of the avatar's renders on a split and writes metrics JSON."""
    device = resolve_device(cfg.device)
    loaded = load_for_rendering(cfg.avatar, device, cfg.from_maps, cfg.texel_stride, cfg.map_keys)
    dataset = cfg.dataset or loaded.meta.get("dataset", "")
    if not dataset:
        raise ConfigError("eval needs --dataset (the avatar does not record its dataset)")
    seq = load_sequence(Path(dataset))
    tr = loaded.tracking
    seq = resize_sequence(seq, max(int(tr["width"]), int(tr["height"])))
    lpips = make_lpips(Path(cfg.lpips_vgg), Path(cfg.lpips_lin)) if cfg.lpips_vgg and cfg.lpips_lin else None
    preds, gts = [], []
    prog = (lambda s, t: sink.progress("eval", s, t)) if sink else None
    for i, _, img in render_frames(loaded, cfg.split, "", cfg.background, device, prog):
        gt, _ = seq.load_image(i, background=tuple(cfg.background))
        if gt.shape[:2] != img.shape[:2]:
            gt = resize_image(gt, img.shape[1], img.shape[0])
        preds.append(img)
        gts.append(gt.float())
    if not preds:
        raise ConfigError(f"{cfg.avatar}: no '{cfg.split}' frames to evaluate")
    metrics = evaluate_images(torch.stack(preds), torch.stack(gts), lpips=lpips)
    metrics.update({"split": cfg.split, "frames": len(preds), "from_maps": cfg.from_maps,
                    "map_keys": bool(cfg.from_maps and cfg.map_keys and loaded.avatar.appearance is not None),
                    "texel_stride": cfg.texel_stride, "num_gaussians": len(loaded.avatar.gaussians),
                    "protocol": protocol_description(loaded)})
    out = Path(cfg.out) if cfg.out else loaded.folder.metrics_file(cfg.split, cfg.from_maps)
    write_json(out, metrics)
    metrics["file"] = str(out)
    return metrics
