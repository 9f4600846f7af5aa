"""The main job's report: engine renders of the test frames, image metrics and the contact sheet."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import torch


def cpu_name() -> str:
    """The CPU model (Linux /proc/cpuinfo), else platform.processor(), else "CPU"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


# ---------------------------------------------------------------------- evaluation helpers
@torch.no_grad()
def render_test_frames(avatar_dir: Path, device: torch.device, from_maps: bool,
                       background=(1.0, 1.0, 1.0)) -> tuple[list[str], list[np.ndarray]]:
    """Engine renders of the avatar's test frames (trained Gaussians, or re-splatted from its maps
    and blended by its map shape keys).

    Returns:
        frame names [n] and images [H, W, 3] float32 in [0, 1].
    """
    from engine.evaluate.render import load_for_rendering, render_frames

    loaded = load_for_rendering(Path(avatar_dir), device, from_maps)  # with the map shape keys, as Blender
    names, images = [], []
    for _, name, img in render_frames(loaded, "test", "", background, device):
        names.append(name)
        images.append(img.numpy().astype(np.float32))
    return names, images


def image_metrics(preds: list[np.ndarray], gts: list[np.ndarray]) -> dict:
    """Mean PSNR (dB) and SSIM over image pairs, plus the per-frame PSNR list."""
    from engine.evaluate.metrics import evaluate_images, psnr

    m = evaluate_images([torch.as_tensor(p) for p in preds], [torch.as_tensor(g) for g in gts])
    return {"psnr": round(float(m["psnr"]), 3), "ssim": round(float(m["ssim"]), 4),
            "psnr_per_frame": [round(float(psnr(torch.as_tensor(p), torch.as_tensor(g))), 2)
                               for p, g in zip(preds, gts)]}


def load_rgb(path: Path, background=(1.0, 1.0, 1.0)) -> np.ndarray:
    from engine.io.images import read_image

    img = read_image(path)
    if img.shape[-1] == 4:
        a = img[..., 3:4]
        img = img[..., :3] * a + np.asarray(background, np.float32) * (1 - a)
    return img[..., :3].astype(np.float32)


def contact_sheet(rows: list[list[np.ndarray]], labels: list[str], path: Path, pad: int = 4,
                  row_labels: list[str] | None = None) -> np.ndarray:
    """A grid of [H, W, 3] images, one row per frame, under a header with the column ``labels``
    (``row_labels``: optional text drawn at the bottom left of each row).

    Returns:
        the sheet, float32 in [0, 1]. [H', W', 3]
    """
    from PIL import Image, ImageDraw, ImageFont

    from engine.io.images import write_png

    h, w = rows[0][0].shape[:2]
    R, C = len(rows), len(rows[0])
    header = 18
    sheet = np.ones((header + R * (h + pad) + pad, C * (w + pad) + pad, 3), np.float32)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            y, x = header + pad + r * (h + pad), pad + c * (w + pad)
            sheet[y:y + h, x:x + w] = np.clip(img[..., :3], 0, 1)
    pil = Image.fromarray((sheet * 255 + 0.5).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default()
    for c, label in enumerate(labels):
        x = pad + c * (w + pad)
        draw.text((x + 2, 3), label, fill=(0, 0, 0), font=font)
    for r, label in enumerate(row_labels or []):
        if label:
            draw.text((pad + 2, header + pad + r * (h + pad) + h - 12), label, fill=(0, 0, 0), font=font)
    out = np.asarray(pil).astype(np.float32) / 255.0
    write_png(path, out)
    return out
