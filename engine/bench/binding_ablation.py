"""``bench --suite binding``: STAvatar's soft binding and temporal densification (issue 20) against
FATE's defaults — hard vs soft binding × sampling vs temporal densification at equal steps.

Each variant trains one avatar on the same dataset and schedule (one thread, seed 0; FATE-code
defaults otherwise; densification four times, ``count`` = 1000 children each, so every variant
ends with about the same number of Gaussians) and is evaluated on the test frames: PSNR / SSIM of
the full image, PSNR of a crop around the mouth and of one around both eyes, the Gaussian count,
and the training seconds per step (wall time of the run / steps). Soft-bound avatars are
evaluated live (the network on each test frame) and as their static bake (the mean offset over
the training frames folded into hard Gaussians: what baking and Blender get, see
``engine.model.soft_binding``). A second table times the training step of each variant
interleaved in one process (median of ``cost_steps`` steps each), which is less exposed to a
busy machine than the wall times of runs made one after the other.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

VARIANTS: dict[str, tuple[str, str]] = {
    "hard + sampling (FATE defaults)": ("hard", "sampling"),
    "hard + temporal": ("hard", "temporal"),
    "soft + sampling": ("soft", "sampling"),
    "soft + temporal (STAvatar)": ("soft", "temporal"),
}
"""Variant name → (binding, densify strategy)."""

CROP_FRACTION = 0.25
"""Side of the mouth crop (and height of the eye crop) as a fraction of the image height."""


def region_vertices(head) -> dict[str, np.ndarray]:
    """Vertex sets whose posed mean centres each crop: ``mouth`` (the mouth-closing faces'
    vertices, as ``fate_ablation.mouth_crop_psnr``), ``left_eye`` / ``right_eye`` (vertices
    skinned mostly to the eye joints: the eyeballs). Missing eye joints give no eye entries."""
    out = {"mouth": np.unique(head.mouth_faces)}
    for name in ("left_eye", "right_eye"):
        if name in head.joint_names:
            ids = np.nonzero(head.lbs_weights[:, head.joint_names.index(name)] > 0.5)[0]
            if len(ids):
                out[name] = ids
    return out


def _project(cam, point: torch.Tensor) -> tuple[float, float]:
    x = cam.viewmat[:3, :3] @ point + cam.viewmat[:3, 3]
    uv = (cam.K @ (x / x[2]))[:2]
    return float(uv[0]), float(uv[1])


def crop_boxes(centres: dict[str, tuple[float, float]], height: int, width: int,
               fraction: float = CROP_FRACTION) -> dict[str, tuple[int, int, int, int]]:
    """Pixel boxes (y0, y1, x0, x1) of the crops: ``mouth`` a square of side ``fraction`` · H
    around the mouth centre; ``eyes`` the box through both eye centres widened by half that side
    on every edge (so it is ``fraction`` · H tall)."""
    half = max(4, int(round(fraction * height / 2)))

    def box(xs, ys):
        return (max(0, int(min(ys)) - half), min(height, int(max(ys)) + half),
                max(0, int(min(xs)) - half), min(width, int(max(xs)) + half))

    out = {}
    if "mouth" in centres:
        out["mouth"] = box([centres["mouth"][0]], [centres["mouth"][1]])
    eyes = [centres[k] for k in ("left_eye", "right_eye") if k in centres]
    if eyes:
        out["eyes"] = box([e[0] for e in eyes], [e[1] for e in eyes])
    return out


@torch.no_grad()
def evaluate_regions(loaded, dataset: Path, device: str = "cpu") -> dict[str, float]:
    """Test-split metrics of a loaded avatar (live soft binding if it has one): ``psnr``,
    ``ssim`` (full image, ``engine.evaluate.metrics.evaluate_images``), ``mouth_psnr`` and
    ``eye_psnr`` (mean over frames of the crop PSNR, dB)."""
    from engine.data import load_sequence
    from engine.data.frames import resize_sequence
    from engine.evaluate.metrics import evaluate_images, psnr
    from engine.evaluate.render import iter_frames, render_frames

    av, tr = loaded.avatar, loaded.tracking
    seq = resize_sequence(load_sequence(dataset), max(int(tr["width"]), int(tr["height"])))
    regions = region_vertices(av.head)
    shape = torch.as_tensor(tr["shape"]).to(device)
    frames = {i: (e, p, t, cam) for i, _, e, p, t, cam in iter_frames(loaded, "test", "", device)}
    preds, gts, crops = [], [], {"mouth": [], "eyes": []}
    for i, _, img in render_frames(loaded, "test", "", (1.0, 1.0, 1.0), device):
        e, p, t, cam = frames[i]
        verts, _ = av.posed_vertices(shape[None], e[None], p[None], t[None])
        centres = {k: _project(cam, verts[0, ids].mean(0)) for k, ids in regions.items()}
        gt, _ = seq.load_image(i, background=(1.0, 1.0, 1.0))
        for name, (y0, y1, x0, x1) in crop_boxes(centres, img.shape[0], img.shape[1]).items():
            crops[name].append(psnr(img[y0:y1, x0:x1], gt[y0:y1, x0:x1]))
        preds.append(img)
        gts.append(gt.float())
    m = evaluate_images(torch.stack(preds), torch.stack(gts))
    return {"psnr": float(m["psnr"]), "ssim": float(m["ssim"]),
            "mouth_psnr": float(np.mean(crops["mouth"])) if crops["mouth"] else float("nan"),
            "eye_psnr": float(np.mean(crops["eyes"])) if crops["eyes"] else float("nan")}


def _config(dataset: Path, output: Path, steps: int, binding: str, strategy: str, device: str):
    from engine.jobs.config import from_dict, to_dict
    from engine.train.config import TrainConfig

    every = max(steps // 4, 1)
    data = to_dict(TrainConfig(dataset=str(dataset), output=str(output), steps=steps, uv_resolution=128,
                               lr_color=1e-2, device=device, preview_every=0, checkpoint_every=0, threads=1,
                               seed=0, binding=binding))
    data["densify"].update(strategy=strategy, start=every, every=every, count=1000, prune_every=every,
                           reset_every=0)
    return from_dict(TrainConfig, data)


def run_binding_ablation(dataset: Path, work: Path, steps: int, device: str = "cpu",
                         variants: dict[str, tuple[str, str]] | None = None) -> list[dict]:
    """One row per variant (module doc). ``psnr_static`` / ``mouth_static`` / ``eye_static``: the
    same metrics of the static bake (the avatar folder's Gaussians) of soft-bound rows ("—" for
    hard binding, where it is the avatar itself)."""
    from engine.avatar_folder import load_avatar
    from engine.train.trainer import train

    rows = []
    for k, (name, (binding, strategy)) in enumerate((variants or VARIANTS).items()):
        cfg = _config(dataset, work / f"binding_variant_{k}", steps, binding, strategy, device)
        t0 = time.time()
        res = train(cfg)
        seconds = time.time() - t0
        live = evaluate_regions(load_avatar(cfg.output, device, soft_binding=binding == "soft"), dataset, device)
        row = {"variant": name, "psnr": round(live["psnr"], 2), "ssim": round(live["ssim"], 4),
               "mouth_psnr": round(live["mouth_psnr"], 2), "eye_psnr": round(live["eye_psnr"], 2),
               "gaussians": res["num_gaussians"], "s_per_step": round(seconds / steps, 3)}
        row.update(psnr_static="—", mouth_static="—", eye_static="—")
        if binding == "soft":
            static = evaluate_regions(load_avatar(cfg.output, device), dataset, device)
            row.update(psnr_static=round(static["psnr"], 2), mouth_static=round(static["mouth_psnr"], 2),
                       eye_static=round(static["eye_psnr"], 2))
        rows.append(row)
    return rows


def step_costs(dataset: Path, work: Path, cost_steps: int = 20, device: str = "cpu",
               variants: dict[str, tuple[str, str]] | None = None) -> list[dict]:
    """Median seconds of one training step of each variant, the variants' steps interleaved in
    one process on the same frames (no densification edits within the window), and the ratio to
    the first variant."""
    from engine.data.frames import FrameSchedule
    from engine.model.resolve import resolve_head_model
    from engine.train.trainer import Trainer

    head = resolve_head_model("demo")
    variants = variants or VARIANTS
    trainers = {name: Trainer(_config(dataset, work / f"cost_{k}", 10**6, b, s, device), head)
                for k, (name, (b, s)) in enumerate(variants.items())}
    schedule = FrameSchedule(next(iter(trainers.values())).train_idx, 0)
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for step in range(cost_steps + 2):  # two warm-up steps
        for name, t in trainers.items():
            t0 = time.perf_counter()
            t.train_step(schedule(step))
            t.step += 1
            if step >= 2:
                times[name].append(time.perf_counter() - t0)
    medians = {name: float(np.median(v)) for name, v in times.items()}
    first = next(iter(medians.values()))
    return [{"variant": name, "gaussians": len(trainers[name].avatar.gaussians), "s_per_step": round(m, 4),
             "ratio": round(m / first, 2)} for name, m in medians.items()]
