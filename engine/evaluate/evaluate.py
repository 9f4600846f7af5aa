"""Evaluating an avatar: its renders of a split against the dataset's images → metrics JSON.

Ground truth is matched to each rendered frame by frame name (never by position), so ``--dataset``
may be another copy or a superset of the training dataset; a frame it lacks is an error.
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine.avatar_folder import AvatarFolder
from engine.data import load_sequence
from engine.data.frames import resize_sequence
from engine.data.sequence import resize_image
from engine.device import resolve_device
from engine.errors import ConfigError
from engine.evaluate.config import EvalConfig
from engine.evaluate.metrics import evaluate_images, make_lpips
from engine.evaluate.render import load_for_rendering, render_frames
from engine.io.atomic import write_json
from engine.io.output import claim_output
from engine.jobs.config import require


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


REFINED_KEY = "refine_test_tracking"
"""Key of the refined metrics in the metrics JSON (beside the plain ones, never instead)."""
REFINED_PROTOCOL = "test-frame pose+expression fitted to the image, avatar frozen (IMavatar/PointAvatar)"


def refined_metrics(loaded, cfg: EvalConfig, gts: list[torch.Tensor], device: torch.device, sink=None,
                    cancel=None) -> dict:
    """Metrics after fitting each evaluated frame's head pose, jaw, eyes and expression to its
    ground truth with the avatar frozen (:func:`engine.model.frame_fit.fit_frame`,
    ``cfg.refine_steps`` Adam steps): the held-out-frame protocol of IMavatar and PointAvatar. It
    also fits each frame's expression to its image, so it is the optimistic figure.

    Returns:
        {"protocol", "steps", "psnr", "ssim", ...} of :func:`evaluate_images`.
    """
    from engine.evaluate.render import iter_frames
    from engine.model.frame_fit import fit_frame

    av = loaded.avatar
    shape = torch.as_tensor(loaded.tracking["shape"]).to(device)
    bg = torch.tensor(cfg.background, dtype=torch.float32, device=device)
    preds = []
    frames = list(iter_frames(loaded, cfg.split, "", device))
    for k, ((_, _, expr, pose, trans, cam), gt) in enumerate(zip(frames, gts)):
        if cancel is not None:
            cancel.raise_if_requested()
        ff = fit_frame(av, shape, expr, pose, trans, cam, gt.to(device), bg, steps=cfg.refine_steps)
        with torch.no_grad():
            preds.append(av.render(shape, ff.expr, ff.pose, ff.translation, cam, bg).image.clamp(0, 1).cpu())
        if sink is not None:
            sink.progress("refine_test_tracking", k + 1, len(frames))
    out = evaluate_images(torch.stack(preds), torch.stack(gts))
    return {"protocol": REFINED_PROTOCOL, "steps": cfg.refine_steps, **out}


def run_eval(cfg: EvalConfig, sink=None, cancel=None) -> dict:
    """Computes PSNR/SSIM(/LPIPS) of the avatar's renders on a split and writes metrics JSON.

    Holds the lock of the metrics file's folder; ``cancel`` is checked after every frame (nothing
    is written then).

    Raises:
        DatasetError: a rendered frame's name is not in the dataset.
        CancelledError: on a cancel request.
    """
    folder = AvatarFolder(require(cfg, "avatar", "eval")).check_exists()
    out = Path(cfg.out) if cfg.out else folder.metrics_file(cfg.split, cfg.from_maps)
    with claim_output(out.parent, "eval", need_bytes=1 << 20):
        return _evaluate(cfg, out, sink, cancel)


def _evaluate(cfg: EvalConfig, out: Path, sink, cancel) -> dict:
    device = resolve_device(cfg.device)
    loaded = load_for_rendering(cfg.avatar, device, cfg.from_maps, cfg.texel_stride, cfg.force, cfg.map_keys)
    dataset = cfg.dataset or loaded.meta.get("dataset", "")
    if not dataset:
        raise ConfigError("eval needs --dataset (the avatar does not record its dataset)")
    seq = load_sequence(Path(dataset))
    gt_index = loaded.dataset_indices(seq)
    tr = loaded.tracking
    seq = resize_sequence(seq, max(int(tr["width"]), int(tr["height"])))
    lpips = make_lpips(Path(cfg.lpips_vgg), Path(cfg.lpips_lin)) if cfg.lpips_vgg and cfg.lpips_lin else None
    preds, gts = [], []
    prog = (lambda s, t: sink.progress("eval", s, t)) if sink else None
    for i, _, img in render_frames(loaded, cfg.split, "", cfg.background, device, prog):
        if cancel is not None:
            cancel.raise_if_requested()
        gt, _ = seq.load_image(gt_index[i], background=tuple(cfg.background))
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
    if cfg.refine_test_tracking:
        metrics[REFINED_KEY] = refined_metrics(loaded, cfg, gts, device, sink, cancel)
    write_json(out, metrics)
    metrics["file"] = str(out)
    return metrics
