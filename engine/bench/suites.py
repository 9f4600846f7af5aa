"""Benchmarks: ``python -m engine bench --suite ...`` prints markdown tables for docs/benchmarks.md.

Suites:
- ``raster``: rasteriser forward+backward iterations/s at 128² and 256² (the CPU reference, and
  gsplat when CUDA is present).
- ``densify``: sampling (FATE §3.2) vs threshold (3DGS) densification at equal iterations on the
  synthetic demo sequence: held-out PSNR and final Gaussian count.
- ``train``: training iterations/s, wall time, peak GPU memory and held-out PSNR for a schedule.
- ``track``: the tracker (issue 13) on the synthetic demo sequence's frames (errors against its
  exact parameters, landmark-only and with the photometric refinement) and the speed target: a
  400-frame 640x480 clip (a public-domain portrait moved by similarity transforms) tracked at 512².
- ``bake``: neural baking of the ``train`` suite's avatar (trained first if missing) with
  ``init=direct``, ``init=direct`` appearance-only and ``init=noise``: bake time, held-out PSNR
  before/after (the cost of baking) and colour-map total variation vs the direct per-texel fit.
- ``binding``: hard vs soft binding × sampling vs temporal densification (STAvatar, issue 20;
  ``engine.bench.binding_ablation``).
- ``appearance``: static (FATE) vs HeadGaS vs the expression-conditioned BakeNet and their map
  shape keys as Blender blends them (:mod:`engine.bench.appearance_ablation`).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from engine.bench.config import BenchConfig

log = logging.getLogger(__name__)


def bench_raster(n: int, resolutions=(128, 256), iters: int = 10, device: str = "cpu") -> list[dict]:
    """Forward+backward it/s of each available rasteriser for n Gaussians at each resolution."""
    from engine.raster import available_backends
    from engine.raster.torch_ref import benchmark

    rows = []
    for backend in available_backends():
        if backend == "gsplat" and device != "cuda":
            continue
        for res in resolutions:
            if backend == "torch":
                its = benchmark(n, res, iters)
            else:
                its = _bench_gsplat(n, res, iters)
            rows.append({"backend": backend, "gaussians": n, "resolution": res, "it_per_s": round(its, 2)})
    return rows


def _bench_gsplat(n: int, res: int, iters: int) -> float:
    from engine.raster.torch_ref import benchmark
    return benchmark(n, res, iters, device="cuda", backend="gsplat")


def _train_eval(dataset: Path, out: Path, steps: int, strategy: str, device: str) -> dict:
    from engine.evaluate.config import EvalConfig
    from engine.evaluate.evaluate import run_eval
    from engine.train.config import TrainConfig
    from engine.train.densify.config import DensifyConfig
    from engine.train.trainer import train

    every = max(steps // 5, 1)
    cfg = TrainConfig(dataset=str(dataset), output=str(out), steps=steps, uv_resolution=96,
                      device=device, preview_every=0, checkpoint_every=0,
                      densify=DensifyConfig(strategy=strategy, start=every, every=every, count=800,
                                            prune_every=every, reset_every=0))
    t0 = time.time()
    res = train(cfg)
    seconds = time.time() - t0
    m = run_eval(EvalConfig(avatar=str(out), split="test", device=device))
    return {"strategy": strategy, "steps": steps, "psnr_test": round(m["psnr"], 2),
            "ssim_test": round(m["ssim"], 4), "gaussians": res["num_gaussians"],
            "seconds": round(seconds, 1), "it_per_s": round(steps / seconds, 2)}


def bench_bake(avatar: Path, work: Path, cfg: BenchConfig, device: str) -> list[dict]:
    """Bakes copies of a trained avatar three ways (init=direct, appearance only, init=noise).

    Args:
        avatar: trained avatar folder (not modified; copies go to ``work/baked_*``).
        work: scratch folder.
        cfg: bake_steps, bake_resolution, bake_channels are used.
        device: "cpu" or "cuda".
    Returns:
        one row per bake: steps (warm-up included), resolution, seconds (bake only), held-out
        PSNR in dB of the trained and the baked avatar, their difference ``cost_db`` (negative =
        a gain), and the colour-map total variation of the bake and of the direct per-texel fit
        (:func:`engine.maps.total_variation`, FATE Fig. 4).
    """
    import shutil

    from engine.avatar_folder import load_avatar
    from engine.bake.bakenet import unet_depth
    from engine.bake.baker import bake
    from engine.bake.config import BakeConfig
    from engine.bake.direct_fit import direct_fit_maps
    from engine.evaluate.config import EvalConfig
    from engine.evaluate.evaluate import run_eval
    from engine.geometry.uv import island_mask
    from engine.maps import gaussian_uvs, load_maps, total_variation

    trained = run_eval(EvalConfig(avatar=str(avatar), split="test", device=device))["psnr"]
    av = load_avatar(avatar).avatar
    uv = gaussian_uvs(av.gaussians.face_idx, av.gaussians.bary, av.head.uvs, av.head.faces_uv_all)
    R = cfg.bake_resolution
    mask = island_mask(av.head.uvs, av.head.faces_uv_all, R)
    tv_direct = total_variation(direct_fit_maps({"color": av.gaussians.colors().detach()}, uv, R)["color"], mask)
    rows = []
    variants = (("init=direct", "baked_direct", {}),
                ("init=direct, appearance only", "baked_appearance", {"appearance_only": True}),
                ("init=noise (FATE)", "baked_noise", {"init": "noise"}))
    for name, folder, extra in variants:
        d = work / folder
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(avatar, d, ignore=shutil.ignore_patterns("maps", "bakenet*", "checkpoints"))
        bcfg = BakeConfig(avatar=str(d), resolution=R, steps=cfg.bake_steps, base_channels=cfg.bake_channels,
                          depth=unet_depth(R), device=device, checkpoint_every=0, **extra)
        t0 = time.time()
        bake(bcfg)
        seconds = time.time() - t0
        baked = run_eval(EvalConfig(avatar=str(d), split="test", device=device, from_maps=True))["psnr"]
        maps, _ = load_maps(d / "maps", names=("color",))
        rows.append({"bake": name, "steps": bcfg.warmup + bcfg.steps, "resolution": R, "seconds": round(seconds, 1),
                     "psnr_trained": round(trained, 2), "psnr_baked": round(baked, 2),
                     "cost_db": round(trained - baked, 2), "tv_color": round(total_variation(maps["color"], mask), 4),
                     "tv_direct_fit": round(tv_direct, 4)})
    return rows


def _frames_folder(dataset: Path, folder: Path) -> Path:
    """The dataset's images composited over white, as a folder of frames (the tracker's input)."""
    from engine.data import load_sequence
    from engine.io.images import write_png

    seq = load_sequence(dataset)
    for i in range(len(seq)):
        write_png(folder / f"{seq.frame_names[i]}.png", seq.load_image(i, (1.0, 1.0, 1.0))[0].numpy())
    return folder


def _portrait_clip(folder: Path, frames: int, size=(640, 480)) -> Path:
    """``frames`` frames of matplotlib's Grace Hopper portrait (public domain) under slow similarity
    transforms (±8° roll, 0.8–1.0 scale, a little drift)."""
    import math

    import cv2
    import imageio.v3 as iio
    import matplotlib

    src = iio.imread(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    folder.mkdir(parents=True, exist_ok=True)
    W, H = size
    for i in range(frames):
        t = i / max(frames - 1, 1)
        M = cv2.getRotationMatrix2D((256.0, 250.0), 8 * math.sin(2 * math.pi * 2 * t), 0.8 + 0.2 * t)
        M[:, 2] += [W / 2 - 256 + 30 * math.sin(2 * math.pi * t), H / 2 - 250]
        iio.imwrite(folder / f"{i:05d}.jpg", cv2.warpAffine(src, M, (W, H), borderValue=(90, 110, 120)))
    return folder


def bench_track(dataset: Path, work: Path, cfg: BenchConfig) -> list[dict]:
    """Tracker rows: accuracy on the synthetic demo frames (landmarks only / refined) and the
    400-frame speed run."""
    from engine.data import load_sequence
    from engine.model.resolve import resolve_head_model
    from engine.track.accuracy import tracking_errors
    from engine.track.config import TrackConfig
    from engine.track.pipeline import run_track

    frames = _frames_folder(dataset, work / "track_frames")
    truth = load_sequence(dataset)
    head = resolve_head_model("demo")
    rows = []
    for refine in (False, True):
        out = work / f"tracked_{'refined' if refine else 'landmarks'}"
        t0 = time.time()
        run_track(TrackConfig(video=str(frames), output=str(out), resolution=256, refine=refine, overlay=False,
                              device=cfg.device, threads=1))
        err = tracking_errors(truth, load_sequence(out), head)
        err.pop("rotation_deg_per_frame")
        rep = json.loads((out / "tracking" / "report.json").read_text())
        rows.append({"run": f"synthetic demo {cfg.frames} frames → 256², {'refined' if refine else 'landmarks'}",
                     **err, "landmark_px": rep["landmark_error_px"]["mean"], "seconds": round(time.time() - t0, 1)})
    clip = _portrait_clip(work / "track_clip", 400)
    t0 = time.time()
    run_track(TrackConfig(video=str(clip), output=str(work / "tracked_clip"), resolution=512, device=cfg.device,
                          threads=1))
    rep = json.loads((work / "tracked_clip" / "tracking" / "report.json").read_text())
    rows.append({"run": "400 frames 640x480 → 512² (speed target ≤ 300 s)", "landmark_px": rep["landmark_error_px"]["mean"],
                 "seconds": round(time.time() - t0, 1), "stages": rep["seconds"]})
    return rows


def run_bench(cfg: BenchConfig, sink=None) -> dict:
    """Runs the requested suites and prints markdown tables on stderr (and JSON to ``out``)."""
    from engine.demo.config import SyntheticConfig
    from engine.demo.synthetic import write_synthetic_dataset
    from engine.device import resolve_device
    from engine.model.resolve import resolve_head_model

    device = str(resolve_device(cfg.device))
    work = Path(cfg.workdir) if cfg.workdir else Path(tempfile.mkdtemp(prefix="fate-bench-"))
    results: dict = {"device": device,
                     "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "CPU",
                     "torch": torch.__version__}
    suites = [s.strip() for s in cfg.suite.split(",") if s.strip()]
    dataset = None
    if any(s in ("densify", "train", "bake", "track") for s in suites) or (
            any(s in ("fate", "binding") for s in suites) and not cfg.dataset):
        dataset = work / f"synthetic_{cfg.resolution}"
        if not (dataset / "transforms_train.json").exists():
            write_synthetic_dataset(dataset, resolve_head_model("demo"),
                                    SyntheticConfig(frames=cfg.frames, resolution=cfg.resolution))
    if "raster" in suites:
        results["raster"] = bench_raster(cfg.gaussians, device=device)
    if "densify" in suites:
        results["densify"] = [_train_eval(dataset, work / f"avatar_{s}", cfg.steps, s, device)
                              for s in ("sampling", "threshold")]
    if "train" in suites:
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        row = _train_eval(dataset, work / "avatar_train", cfg.steps, "sampling", device)
        if device == "cuda":
            row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        results["train"] = [row]
    if "track" in suites:
        results["track"] = bench_track(dataset, work, cfg)
    if "bake" in suites:
        avatar = work / "avatar_train"
        if not (avatar / "avatar.json").exists():
            _train_eval(dataset, avatar, cfg.steps, "sampling", device)
        results["bake"] = bench_bake(avatar, work, cfg, device)
    if "render" in suites:
        from engine.bench.gpu import bench_render_fps
        results["render"] = bench_render_fps(device=device, sizes=((cfg.resolution, cfg.resolution), (1920, 1080)))
    if "fate" in suites:
        from engine.bench.fate_ablation import run_fate_ablation
        results["fate"] = run_fate_ablation(Path(cfg.dataset) if cfg.dataset else dataset, work, cfg.steps, device)
    if "binding" in suites:
        from engine.bench.binding_ablation import run_binding_ablation, step_costs
        data = Path(cfg.dataset) if cfg.dataset else dataset
        results["binding"] = run_binding_ablation(data, work, cfg.steps, device)
        results["binding_step_cost"] = step_costs(data, work, cost_steps=min(20, cfg.steps), device=device)
    if "appearance" in suites:
        from engine.bench.appearance_ablation import appearance_dataset, run_appearance_ablation
        ds = Path(cfg.dataset) if cfg.dataset else appearance_dataset(work, cfg.frames, cfg.resolution)
        results["appearance"] = run_appearance_ablation(ds, work, cfg, device)
    text = format_tables(results)
    import sys
    print(text, file=sys.stderr)
    if cfg.out:
        Path(cfg.out).write_text(json.dumps(results, indent=2))
    return results


def format_tables(results: dict) -> str:
    """Markdown tables of each suite's rows."""
    parts = [f"device: {results['device_name']} ({results['device']}), torch {results['torch']}"]
    for key, rows in results.items():
        if not isinstance(rows, list) or not rows:
            continue
        cols = list(rows[0].keys())
        parts.append(f"\n### {key}\n")
        parts.append("| " + " | ".join(cols) + " |")
        parts.append("|" + "---|" * len(cols))
        for r in rows:
            parts.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return "\n".join(parts)
