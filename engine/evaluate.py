"""Rendering an avatar's frames (its own tracking or another sequence = cross-reenactment) and
evaluating them against ground truth (PSNR, SSIM, LPIPS when weights are supplied)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from engine.avatar_io import LoadedAvatar, load_avatar, write_json
from engine.cameras import Camera
from engine.data import load_sequence
from engine.errors import ConfigError
from engine.train import resize_sequence

log = logging.getLogger(__name__)


@dataclass
class RenderConfig:
    """A render job."""

    avatar: str = ""
    """avatar folder"""
    out: str = ""
    """folder for the rendered PNGs (default: <avatar>/renders/<split>)"""
    split: str = "test"
    """"train", "test" or "all" frames of the avatar's own tracking"""
    driver: str = ""
    """another tracked dataset whose FLAME expression/pose (and cameras) drive the avatar: cross-reenactment"""
    from_maps: bool = False
    """re-splat the Gaussians from the baked (possibly edited) maps in <avatar>/maps"""
    device: str = "auto"
    """auto, cuda or cpu"""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """background colour"""


@dataclass
class EvalConfig:
    """An evaluation job: metrics of rendered frames against the dataset's images → metrics.json."""

    avatar: str = ""
    """avatar folder"""
    dataset: str = ""
    """dataset with the ground truth (default: the one the avatar was trained on)"""
    split: str = "test"
    """which frames"""
    from_maps: bool = False
    """evaluate the baked avatar (maps) instead of the trained Gaussians"""
    lpips_vgg: str = ""
    """VGG16 weights for LPIPS (torchvision state_dict); empty = no LPIPS"""
    lpips_lin: str = ""
    """LPIPS linear-layer weights (lpips package's vgg.pth); empty = no LPIPS"""
    device: str = "auto"
    """auto, cuda or cpu"""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """background colour (also used to composite the ground truth)"""
    out: str = ""
    """metrics file (default: <avatar>/metrics_<split>.json)"""


def _device(name: str) -> torch.device:
    from engine.train import resolve_device
    return resolve_device(name)


def _apply_maps(loaded: LoadedAvatar) -> None:
    """Replaces the avatar's Gaussian attributes by those re-splatted from its maps (issue 3)."""
    from engine.maps import load_maps_into  # noqa: PLC0415 (optional until baking exists)

    avatar_dir = Path(loaded.meta.get("_path", ""))
    load_maps_into(loaded.avatar.gaussians, avatar_dir / "maps", loaded.avatar.head)


def iter_frames(loaded: LoadedAvatar, split: str, driver: str = "", device: torch.device | str = "cpu"
                ) -> Iterator[tuple[int, str, torch.Tensor, torch.Tensor, torch.Tensor, Camera]]:
    """Frames to render: (index, name, expr [E], pose [J·3], translation [3], camera).

    From the avatar's own ``tracking.npz`` (``split`` = train/test/all) or, with ``driver``, from
    another dataset's FLAME parameters and cameras (cross-reenactment; expressions beyond the
    avatar's expression dimension are dropped, missing ones are zero).
    """
    n_expr = loaded.avatar.blendshapes.delta_exprdirs.shape[-1]
    if driver:
        seq = load_sequence(Path(driver))
        idx = seq.indices(split) if split != "all" else list(range(len(seq)))
        for i in idx:
            e = torch.zeros(n_expr)
            k = min(n_expr, seq.expr.shape[1])
            e[:k] = seq.expr[i, :k]
            yield i, seq.frame_names[i], e.to(device), seq.pose[i].to(device), seq.translation[i].to(device), \
                seq.camera(i).to(device)
        return
    tr = loaded.tracking
    want = {"train": 0, "test": 1}.get(split)
    if split not in ("train", "test", "all"):
        raise ConfigError(f"split must be train, test or all, found {split!r}")
    for i in range(tr["expr"].shape[0]):
        if want is not None and int(tr["split"][i]) != want:
            continue
        cam = Camera(torch.as_tensor(tr["viewmat"][i]), torch.as_tensor(tr["K"][i]),
                     int(tr["width"]), int(tr["height"]))
        yield (i, str(tr["frame_names"][i]), torch.as_tensor(tr["expr"][i]).to(device),
               torch.as_tensor(tr["pose"][i]).to(device), torch.as_tensor(tr["translation"][i]).to(device),
               cam.to(device))


@torch.no_grad()
def render_frames(loaded: LoadedAvatar, split: str, driver: str, background, device,
                  progress: Callable[[int, int], None] | None = None):
    """Yields (index, name, image [H, W, 3] float in [0, 1] on CPU) for each frame."""
    frames = list(iter_frames(loaded, split, driver, device))
    av = loaded.avatar
    shape = torch.as_tensor(loaded.tracking["shape"]).to(device)
    bg = torch.tensor(background, dtype=torch.float32, device=device)
    for k, (i, name, expr, pose, trans, cam) in enumerate(frames):
        out = av.render(shape, expr, pose, trans, cam, bg)
        if progress:
            progress(k + 1, len(frames))
        yield i, name, out.image.clamp(0, 1).cpu()


def run_render(cfg: RenderConfig, sink=None) -> dict:
    """Renders frames to PNG files; returns {"out": folder, "frames": count}."""
    from engine.image_io import write_png

    device = _device(cfg.device)
    loaded = load_avatar(Path(cfg.avatar), device)
    loaded.meta["_path"] = cfg.avatar
    if cfg.from_maps:
        _apply_maps(loaded)
    out = Path(cfg.out) if cfg.out else Path(cfg.avatar) / "renders" / (("reenact_" if cfg.driver else "") + cfg.split)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    prog = (lambda s, t: sink.progress("render", s, t)) if sink else None
    for _, name, img in render_frames(loaded, cfg.split, cfg.driver, cfg.background, device, prog):
        write_png(out / f"{name}.png", img.numpy())
        n += 1
    return {"out": str(out), "frames": n}


def run_eval(cfg: EvalConfig, sink=None) -> dict:
    """Computes PSNR/SSIM(/LPIPS) of the avatar's renders on a split and writes metrics JSON."""
    from engine.metrics import evaluate_images, make_lpips

    device = _device(cfg.device)
    loaded = load_avatar(Path(cfg.avatar), device)
    loaded.meta["_path"] = cfg.avatar
    if cfg.from_maps:
        _apply_maps(loaded)
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
            from engine.train import _resize
            gt = _resize(gt, img.shape[0], img.shape[1])
        preds.append(img)
        gts.append(gt.float())
    if not preds:
        raise ConfigError(f"{cfg.avatar}: no '{cfg.split}' frames to evaluate")
    metrics = evaluate_images(torch.stack(preds), torch.stack(gts), lpips=lpips)
    metrics.update({"split": cfg.split, "frames": len(preds), "from_maps": cfg.from_maps,
                    "num_gaussians": len(loaded.avatar.gaussians)})
    out = Path(cfg.out) if cfg.out else Path(cfg.avatar) / f"metrics_{cfg.split}{'_maps' if cfg.from_maps else ''}.json"
    write_json(out, metrics)
    metrics["file"] = str(out)
    return metrics
