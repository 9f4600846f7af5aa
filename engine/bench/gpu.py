"""``bench --suite render``: forward-only render speed (frames/s) of each rasteriser, at the sizes
issue 21 reports (512² and 1920×1080, 50k Gaussians), with peak GPU memory."""

from __future__ import annotations

import time

import torch

RENDER_SIZES = ((512, 512), (1920, 1080))
"""(width, height) of the render-speed rows."""


def _scene(n: int, width: int, height: int, device: str):
    """Random Gaussians filling a (width × height) view (the raster bench's scene, rescaled)."""
    from engine.geometry.cameras import Camera
    from engine.raster import covariance_from_rotation_scale
    from engine.raster.torch_ref import _quat_to_rotmat, make_benchmark_scene

    means, quats, log_scales, opacities, colors, cam = make_benchmark_scene(n, max(width, height), device=device)
    f = float(max(width, height))
    K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]], device=device)
    cam = Camera(viewmat=torch.eye(4, device=device), K=K, width=width, height=height)
    covars = covariance_from_rotation_scale(_quat_to_rotmat(quats), torch.exp(log_scales))
    return means, covars, opacities, colors, cam


@torch.no_grad()
def bench_render_fps(n: int = 50_000, device: str = "cuda", iters: int = 50,
                     sizes: tuple[tuple[int, int], ...] = RENDER_SIZES) -> list[dict]:
    """Frames per second of ``rasterize`` (forward only, synchronised) per backend and size.

    Args:
        n: Gaussians.
        device: "cuda" (gsplat and the PyTorch reference) or "cpu" (reference only, 2 frames).
        iters: timed frames after 3 warm-up frames (CPU: 2).
    Returns:
        rows: backend, gaussians, width, height, fps, ms_per_frame, peak_mem_gb (CUDA).
    """
    from engine.raster import available_backends, rasterize

    rows = []
    for backend in available_backends():
        if backend == "gsplat" and device != "cuda":
            continue
        for width, height in sizes:
            means, covars, opacities, colors, cam = _scene(n, width, height, device)
            k = iters if device == "cuda" else 2
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            for _ in range(3 if device == "cuda" else 1):
                rasterize(means, covars, opacities, colors, cam, backend=backend)
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(k):
                rasterize(means, covars, opacities, colors, cam, backend=backend)
            if device == "cuda":
                torch.cuda.synchronize()
            dt = (time.perf_counter() - t0) / k
            row = {"backend": backend, "gaussians": n, "width": width, "height": height,
                   "fps": round(1.0 / dt, 1), "ms_per_frame": round(1e3 * dt, 2)}
            if device == "cuda":
                row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
            rows.append(row)
    return rows
