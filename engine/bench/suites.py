"""Benchmarks: ``python -m engine bench --suite ...`` prints markdown tables for docs/benchmarks.md.

Suites:
- ``raster``: rasteriser forward+backward iterations/s at 128² and 256² (the CPU reference, and
  gsplat when CUDA is present).
- ``densify``: sampling (FATE §3.2) vs threshold (3DGS) densification at equal iterations on the
  synthetic demo sequence: held-out PSNR and final Gaussian count.
- ``train``: training iterations/s, wall time, peak GPU memory and held-out PSNR for a schedule.
- ``bake``: neural baking of the ``train`` suite's avatar (trained first if missing) with
  ``init=direct``, ``init=direct`` appearance-only and ``init=noise``: bake time, held-out PSNR
  before/after (the cost of baking) and colour-map total variation vs the direct per-texel fit.
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
    if any(s in ("densify", "train", "bake") for s in suites) or ("fate" in suites and not cfg.dataset):
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
