"""gsplat (CUDA) backend of :func:`engine.raster.rasterize`.

Calls ``gsplat.rasterization`` in its classic 3DGS mode with explicit covariances, one
camera, unpacked, ``render_mode="RGB+D"`` (alpha-weighted depth as a fourth channel, whose
background gsplat sets to 0). gsplat JIT-compiles its kernels on first use when no
prebuilt extension is installed; that can take minutes once per machine.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from engine.errors import FateError
from engine.geometry.cameras import Camera
from engine.raster.torch_ref import EPS2D

logger = logging.getLogger(__name__)


def rasterize_gsplat(means: Tensor, covars: Tensor, opacities: Tensor, colors: Tensor,
                     camera: Camera, background: Tensor | None = None, near: float = 0.01):
    """Renders 3D Gaussians with gsplat's CUDA rasteriser.

    Args:
        means: centres, world frame, meters. [N, 3] CUDA
        covars: covariances, world frame, m² (upper triangle read). [N, 3, 3] CUDA
        opacities: in [0, 1]. [N] CUDA
        colors: per-Gaussian colour. [N, 3] CUDA
        camera: OpenCV pinhole camera (moved to the Gaussians' device here).
        background: colour behind the splats. [3]; None = black.
        near: near plane, meters.
    Returns:
        :class:`engine.raster.RenderOutput` (float32; radii [N] int32 = max of gsplat's
        per-axis radii).
    Raises:
        FateError: the tensors are not on a CUDA device.
    """
    from gsplat import rasterization  # heavy import, CUDA only

    from engine.raster import RenderOutput  # local: the package imports this module

    if means.device.type != "cuda":
        raise FateError(f"rasterize (gsplat): the Gaussians must be CUDA tensors, found device "
                        f"{means.device}")
    device = means.device
    f32 = torch.float32
    viewmat = camera.viewmat.to(device=device, dtype=f32)
    K = camera.K.to(device=device, dtype=f32)
    backgrounds = None
    if background is not None:
        backgrounds = background.to(device=device, dtype=f32)[None]  # [1, 3]
    render, alphas, meta = rasterization(
        means.to(f32).contiguous(),
        None,  # quats: unused when covars are given
        None,  # scales: likewise
        opacities.to(f32).contiguous(),
        colors.to(f32).contiguous(),
        viewmat[None].contiguous(),
        K[None].contiguous(),
        int(camera.width),
        int(camera.height),
        near_plane=float(near),
        eps2d=EPS2D,
        packed=False,
        backgrounds=backgrounds,
        render_mode="RGB+D",
        rasterize_mode="classic",
        covars=covars.to(f32).contiguous(),
    )
    radii = meta["radii"][0]  # [N, 2] (gsplat >= 1.5) or [N] (older)
    if radii.dim() == 2:
        radii = radii.max(-1).values
    return RenderOutput(image=render[0, ..., :3], alpha=alphas[0], depth=render[0, ..., 3:4],
                        radii=radii.to(torch.int32), means2d=meta["means2d"][0])
