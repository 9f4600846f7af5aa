"""``bench --suite fate``: this project's round-1 training settings against FATE's code's (issue 12).

Trains one avatar per variant on the same dataset and schedule (one thread: deterministic) and
reports held-out PSNR / SSIM, PSNR on a crop around the mouth, the Gaussian count and the wall
time. The variants start from the engine's defaults (FATE's code: Laplacian 1e5, r = 9, Δ at
lr 1e-4, summed screen-space gradient, children ×0.75, opacity reset never) and change one
thing each, plus the round-1 settings all together.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

VARIANTS: dict[str, dict] = {
    "FATE code (engine defaults)": {},
    "round 1: Laplacian 100, FLAME 100, r 5, Δ lr 1e-5, world-mean gradient, children x1":
        {"lambda_lap": 100.0, "scale_ratio": 5.0, "lr_delta_vertices": 1e-5,
         "densify": {"gradient": "world", "child_scale": 1.0}},
    "- world-mean gradient, children x1": {"densify": {"gradient": "world", "child_scale": 1.0}},
    "- Laplacian 100 (paper text)": {"lambda_lap": 100.0},
    "- FLAME term 0 (FATE code)": {"lambda_flame": 0.0},
    "- normal offset bound 1e-6 m (FATE code's effective bound)": {"shell": 1e-6},
}
"""Variant name → TrainConfig overrides (``densify`` overrides nest)."""


def mouth_crop_psnr(avatar_dir: Path, dataset: Path, device: str = "cpu", crop_fraction: float = 0.25) -> float:
    """Mean PSNR (dB) over the test frames of a square crop centred on the mouth.

    The centre is the projection of the mean of the posed mouth-face vertices (tracked
    parameters, learnt blendshapes); the crop is ``crop_fraction`` of the image height.
    """
    from engine.avatar_folder import load_avatar
    from engine.data import load_sequence
    from engine.data.frames import resize_sequence
    from engine.evaluate.metrics import psnr
    from engine.evaluate.render import render_frames

    loaded = load_avatar(avatar_dir, device)
    tr = loaded.tracking
    seq = resize_sequence(load_sequence(dataset), max(int(tr["width"]), int(tr["height"])))
    boxes = mouth_crop_boxes(loaded, device, crop_fraction)
    scores = []
    for i, _, img in render_frames(loaded, "test", "", (1.0, 1.0, 1.0), device):
        gt, _ = seq.load_image(i, background=(1.0, 1.0, 1.0))
        y0, y1, x0, x1 = boxes[i]
        scores.append(psnr(img[y0:y1, x0:x1], gt[y0:y1, x0:x1]))
    return float(np.mean(scores))


def mouth_crop_boxes(loaded, device: str = "cpu", crop_fraction: float = 0.25) -> dict[int, tuple[int, int, int, int]]:
    """Test frame index → mouth crop (y0, y1, x0, x1) in pixels (see :func:`mouth_crop_psnr`)."""
    from engine.evaluate.render import iter_frames

    av, tr = loaded.avatar, loaded.tracking
    mouth_vertices = np.unique(av.head.mouth_faces)
    shape = torch.as_tensor(tr["shape"]).to(device)
    H, W = int(tr["height"]), int(tr["width"])
    half = max(4, int(round(crop_fraction * H / 2)))
    boxes = {}
    for i, _, e, p, t, cam in iter_frames(loaded, "test", "", device):
        with torch.no_grad():
            verts, _ = av.posed_vertices(shape[None], e[None], p[None], t[None])
        centre = verts[0, mouth_vertices].mean(0)
        x = cam.viewmat[:3, :3] @ centre + cam.viewmat[:3, 3]
        uv = (cam.K @ (x / x[2]))[:2]
        cx, cy = int(uv[0]), int(uv[1])
        boxes[i] = (max(0, cy - half), min(H, cy + half), max(0, cx - half), min(W, cx + half))
    return boxes


def run_fate_ablation(dataset: Path, work: Path, steps: int, device: str = "cpu",
                      variants: dict[str, dict] | None = None) -> list[dict]:
    """One row per variant (module doc): psnr/ssim on the test split, mouth-crop PSNR, Gaussians,
    seconds. The schedule densifies four times (every steps/4, 1000 children) and prunes."""
    from engine.evaluate.config import EvalConfig
    from engine.evaluate.evaluate import run_eval
    from engine.jobs.config import from_dict, to_dict
    from engine.train.config import TrainConfig
    from engine.train.trainer import train

    rows = []
    every = max(steps // 4, 1)
    base = to_dict(TrainConfig(dataset=str(dataset), steps=steps, uv_resolution=128, lr_color=1e-2, device=device,
                               preview_every=0, checkpoint_every=0, threads=1, seed=0))
    base["densify"].update(start=every, every=every, count=1000, prune_every=every, reset_every=0)
    for k, (name, over) in enumerate((variants or VARIANTS).items()):
        data = {**base, **{key: v for key, v in over.items() if key != "densify"}}
        data["densify"] = {**base["densify"], **over.get("densify", {})}
        data["output"] = str(work / f"fate_variant_{k}")
        cfg = from_dict(TrainConfig, data)
        t0 = time.time()
        res = train(cfg)
        seconds = time.time() - t0
        m = run_eval(EvalConfig(avatar=cfg.output, split="test", device=device))
        rows.append({"variant": name, "psnr": round(m["psnr"], 2), "ssim": round(m["ssim"], 4),
                     "mouth_psnr": round(mouth_crop_psnr(Path(cfg.output), dataset, device), 2),
                     "gaussians": res["num_gaussians"], "seconds": round(seconds, 1)})
    return rows
