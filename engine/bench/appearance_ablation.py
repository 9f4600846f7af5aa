"""``bench --suite appearance``: static (FATE) vs expression-dependent appearance (issue 19).

Two trainings on the same dataset and schedule (one thread: deterministic) — FATE's static
colour/opacity and HeadGaS feature blending — and three bakes: the static avatar as FATE bakes
it, the static avatar with the expression-conditioned BakeNet (``dynamic_maps``), and the
HeadGaS avatar (its MLP linearised into map shape keys). Rows:

============================================ ====================================================
row                                          rendered from
============================================ ====================================================
static (FATE), trained                       the trained Gaussians
HeadGaS, trained                             the trained Gaussians + the MLP
static, baked maps                           the maps (FATE §3.3)
HeadGaS, baked + map shape keys              the maps + the keys fitted from the MLP
dynamic maps (conditioned BakeNet)           per-frame maps of the conditioned U-Net
dynamic maps, baked + map shape keys         the maps + the keys fitted from the U-Net
============================================ ====================================================

"map shape keys" rows are what Blender renders: the engine's twin of the Blender runtime's blend
(:class:`engine.map_keys.MapKeyAppearance`; tests/blender check the two agree). Columns: PSNR /
SSIM over the test frames, PSNR of the mouth crop (:func:`engine.bench.fate_ablation.mouth_crop_boxes`),
Gaussian count, bytes per Gaussian (the files each row renders from, on disk, over the Gaussian
count), render milliseconds per frame (the engine's CPU/GPU rasteriser, appearance included) and,
for the key rows, the share of the dynamic model's mouth-crop gain that the linear keys keep, each
gain over its own static counterpart (:func:`_gain_kept`: the keys over the static baked maps).

The default dataset is the synthetic demo-head sequence with the expression-dependent layers of
:mod:`engine.demo.expression_appearance` (wrinkles, mouth interior, lid creases).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

TRAINED_FILES = ("gaussians.safetensors", "appearance.safetensors")
"""What a trained avatar renders from (bytes per Gaussian)."""


def _dir_bytes(folder: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in Path(folder).glob(pattern) if p.is_file())


def _score(frames: list[tuple[int, torch.Tensor]], seq, boxes: dict, seconds: float) -> dict:
    """PSNR / SSIM of whole frames, mouth-crop PSNR and ms per frame of rendered test frames."""
    from engine.evaluate.metrics import evaluate_images, psnr

    gts = [seq.load_image(i, background=(1.0, 1.0, 1.0))[0].float() for i, _ in frames]
    m = evaluate_images(torch.stack([img for _, img in frames]), torch.stack(gts))
    mouth = [psnr(img[boxes[i][0]:boxes[i][1], boxes[i][2]:boxes[i][3]],
                  gt[boxes[i][0]:boxes[i][1], boxes[i][2]:boxes[i][3]]) for (i, img), gt in zip(frames, gts)]
    return {"psnr": round(m["psnr"], 2), "ssim": round(m["ssim"], 4), "mouth_psnr": round(float(np.mean(mouth)), 2),
            "ms_per_frame": round(1000.0 * seconds / max(len(frames), 1), 1)}


def _score_avatar(folder: Path, seq, boxes: dict, device: str, from_maps: bool, map_keys: bool = True) -> dict:
    from engine.evaluate.render import load_for_rendering, render_frames

    loaded = load_for_rendering(folder, torch.device(device), from_maps, map_keys=map_keys)
    t0 = time.time()
    frames = [(i, img) for i, _, img in render_frames(loaded, "test", "", (1.0, 1.0, 1.0), device)]
    row = _score(frames, seq, boxes, time.time() - t0)
    n = len(loaded.avatar.gaussians)
    if from_maps:
        nbytes = _dir_bytes(folder / "maps", "*.exr") + _dir_bytes(folder / "maps" / "dynamic", "*.npz") * map_keys
    else:
        nbytes = sum((folder / f).stat().st_size for f in TRAINED_FILES if (folder / f).exists())
    return {**row, "gaussians": n, "bytes_per_gaussian": int(round(nbytes / max(n, 1)))}


@torch.no_grad()
def _score_dynamic_maps(baker, seq, boxes: dict) -> dict:
    """The conditioned BakeNet's own per-frame maps on the test frames (not what ships to Blender)."""
    tr = baker.loaded.tracking
    test = [i for i in range(len(tr["split"])) if int(tr["split"][i]) == 1]
    t0 = time.time()
    frames = [(i, baker.render(baker.gaussian_attributes(baker.maps(i), i), i).image.clamp(0, 1).cpu()) for i in test]
    row = _score(frames, seq, boxes, time.time() - t0)
    n = len(baker.loaded.avatar.gaussians)
    net_bytes = sum(p.numel() * p.element_size() for p in baker.net.parameters())
    nbytes = _dir_bytes(baker.folder.maps_dir, "*.exr") + net_bytes
    return {**row, "gaussians": n, "bytes_per_gaussian": int(round(nbytes / max(n, 1)))}


def _train(dataset: Path, out: Path, steps: int, device: str, appearance: str) -> float:
    from engine.jobs.config import from_dict, to_dict
    from engine.train.config import TrainConfig
    from engine.train.trainer import train

    every = max(steps // 4, 1)
    data = to_dict(TrainConfig(dataset=str(dataset), output=str(out), steps=steps, uv_resolution=128, lr_color=1e-2,
                               device=device, preview_every=0, checkpoint_every=0, threads=1, seed=0,
                               appearance=appearance))
    data["densify"].update(start=every, every=every, count=1000, prune_every=every, reset_every=0)
    t0 = time.time()
    train(from_dict(TrainConfig, data))
    return time.time() - t0


def _bake_config(avatar: Path, cfg, device: str, **extra):
    from engine.bake.bakenet import unet_depth
    from engine.bake.config import BakeConfig

    R = cfg.bake_resolution
    return BakeConfig(avatar=str(avatar), resolution=R, steps=cfg.bake_steps, base_channels=cfg.bake_channels,
                      depth=unet_depth(R), device=device, checkpoint_every=0, threads=1, full_head=False,
                      **extra)  # the appearance alone, as the fate suite measures the bake


def _copy(src: Path, dst: Path) -> Path:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("maps", "bakenet*", "checkpoints"))
    return dst


def _gain_kept(keys: dict, keys_static: dict, dynamic: dict, dynamic_static: dict) -> float | None:
    """Share (%) of the dynamic model's mouth-crop gain that the linear keys keep, each gain over
    its own static counterpart: ``(keys − keys_static) / (dynamic − dynamic_static)``. The keys
    are baked maps, so their counterpart is the static avatar's baked maps (the bake's own cost
    is the same for both and cancels); the dynamic model's is the static model at the same stage."""
    gain = dynamic["mouth_psnr"] - dynamic_static["mouth_psnr"]
    kept = keys["mouth_psnr"] - keys_static["mouth_psnr"]
    return round(100.0 * kept / gain, 1) if abs(gain) > 1e-6 else None


def run_appearance_ablation(dataset: Path, work: Path, cfg, device: str = "cpu") -> list[dict]:
    """The rows of the module doc (uses ``cfg.steps``, ``bake_steps``, ``bake_resolution``,
    ``bake_channels`` of a :class:`engine.bench.config.BenchConfig`)."""
    from engine.avatar_folder import load_avatar
    from engine.bake.baker import Baker, bake
    from engine.bench.fate_ablation import mouth_crop_boxes
    from engine.data import load_sequence
    from engine.data.frames import resize_sequence

    static, headgas = work / "appearance_static", work / "appearance_headgas"
    seconds = {"static": _train(dataset, static, cfg.steps, device, "static"),
               "headgas": _train(dataset, headgas, cfg.steps, device, "headgas")}
    loaded = load_avatar(static, device)
    tr = loaded.tracking
    seq = resize_sequence(load_sequence(dataset), max(int(tr["width"]), int(tr["height"])))
    boxes = mouth_crop_boxes(loaded, device)

    rows: dict[str, dict] = {}
    rows["static (FATE), trained"] = _score_avatar(static, seq, boxes, device, from_maps=False)
    rows["HeadGaS, trained"] = _score_avatar(headgas, seq, boxes, device, from_maps=False)
    baked_static = _copy(static, work / "appearance_static_baked")
    bake(_bake_config(baked_static, cfg, device))
    rows["static, baked maps"] = _score_avatar(baked_static, seq, boxes, device, from_maps=True)
    baked_hg = _copy(headgas, work / "appearance_headgas_baked")
    bake(_bake_config(baked_hg, cfg, device))
    rows["HeadGaS, baked + map shape keys"] = _score_avatar(baked_hg, seq, boxes, device, from_maps=True)
    dyn = _copy(static, work / "appearance_dynamic_baked")
    baker = Baker(_bake_config(dyn, cfg, device, dynamic_maps=True))
    baker.run()
    rows["dynamic maps (conditioned BakeNet)"] = _score_dynamic_maps(baker, seq, boxes)
    rows["dynamic maps, baked + map shape keys"] = _score_avatar(dyn, seq, boxes, device, from_maps=True)

    rows["HeadGaS, baked + map shape keys"]["gain_kept_pct"] = _gain_kept(
        rows["HeadGaS, baked + map shape keys"], rows["static, baked maps"], rows["HeadGaS, trained"],
        rows["static (FATE), trained"])
    rows["dynamic maps, baked + map shape keys"]["gain_kept_pct"] = _gain_kept(
        rows["dynamic maps, baked + map shape keys"], rows["static, baked maps"],
        rows["dynamic maps (conditioned BakeNet)"], rows["static, baked maps"])
    for name, folder in (("HeadGaS, baked + map shape keys", baked_hg), ("dynamic maps, baked + map shape keys", dyn)):
        dynamic = json.loads((folder / "maps" / "maps.json").read_text()).get("dynamic", {})
        rows[name]["keys"] = len(dynamic.get("keys", []))
        rows[name]["fit_explained"] = dynamic.get("fit", {}).get("explained")
    rows["static (FATE), trained"]["train_s"] = round(seconds["static"], 1)
    rows["HeadGaS, trained"]["train_s"] = round(seconds["headgas"], 1)
    cols = ("psnr", "ssim", "mouth_psnr", "gaussians", "bytes_per_gaussian", "ms_per_frame", "gain_kept_pct", "keys",
            "fit_explained", "train_s")
    return [{"variant": name, "steps": cfg.steps, **{c: r.get(c, "") for c in cols}} for name, r in rows.items()]


def appearance_dataset(work: Path, frames: int, resolution: int) -> Path:
    """The synthetic demo-head sequence with expression-dependent appearance (written once)."""
    from engine.demo.config import SyntheticConfig
    from engine.demo.synthetic import write_synthetic_dataset
    from engine.model.resolve import resolve_head_model

    root = work / f"synthetic_dynamic_{resolution}"
    if not (root / "transforms_train.json").exists():
        write_synthetic_dataset(root, resolve_head_model("demo"),
                                SyntheticConfig(frames=frames, resolution=resolution, dynamic_appearance=True))
    return root
