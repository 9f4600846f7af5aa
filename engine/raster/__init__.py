"""Gaussian rasterisation: one entry point, two backends with the same conventions.

- ``"gsplat"``: gsplat's CUDA kernels (classic 3DGS mode), for CUDA tensors.
- ``"torch"``: the differentiable pure-PyTorch reference in :mod:`engine.raster.torch_ref`
  (CPU, or any device), which mirrors gsplat's rules (see that module's docstring).

Conventions (both backends): OpenCV camera (x right, y down, z forward), ``viewmat``
world→camera, ``K`` in pixels, pixel centres at integer + 0.5; EWA projection with the
1.3×-FOV-clamped Jacobian, ``eps2d = 0.3`` px², opacity-aware 3σ box, alpha clamped to
0.999 and skipped below 1/255, front-to-back by camera z, a pixel ends before the
Gaussian that would bring its transmittance to ``<= 1e-4`` (3DGS, Kerbl et al. 2023 §4, §6).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from engine.errors import ConfigError, FateError
from engine.geometry.cameras import Camera

logger = logging.getLogger(__name__)

Backend = Literal["auto", "torch", "gsplat"]


@dataclass
class RenderOutput:
    """What a rasteriser returns for one camera.

    Attributes:
        image: colour composited over the background. [H, W, 3]
        alpha: accumulated opacity ``1 − T_final``. [H, W, 1]
        depth: alpha-weighted camera z ``Σ wᵢ zᵢ`` (OpenCV camera, meters); divide by
            ``alpha`` for the expected depth. [H, W, 1]
        radii: half-size of each splat's opacity-aware 3σ box (gsplat's rule, the larger of
            the x and y half-sizes), pixels; 0 = culled / not visible. [N] int32
        means2d: projected centres, pixels (origin at the top-left pixel corner), a non-leaf
            tensor of the autograd graph: ``retain_grad()`` on it gives the screen-space position
            gradient that densification uses (3DGS "viewspace points"). [N, 2]
    """

    image: Tensor
    alpha: Tensor
    depth: Tensor
    radii: Tensor
    means2d: Tensor | None = None


def covariance_from_rotation_scale(R: Tensor, scales: Tensor) -> Tensor:
    """3D covariances ``R S Sᵀ Rᵀ`` with ``S = diag(scales)`` (3DGS eq. 6).

    Args:
        R: rotations (local → world). [N, 3, 3]
        scales: standard deviations along the local axes, meters. [N, 3]
    Returns:
        covariances, world frame, m². [N, 3, 3] (symmetric PSD)
    """
    if R.shape[-2:] != (3, 3) or scales.shape[-1] != 3 or R.shape[:-2] != scales.shape[:-1]:
        raise FateError(f"covariance_from_rotation_scale: expected R [N, 3, 3] and scales "
                        f"[N, 3], found R {tuple(R.shape)} and scales {tuple(scales.shape)}")
    M = R * scales[..., None, :]  # columns scaled: R S
    return M @ M.transpose(-1, -2)


@functools.lru_cache(maxsize=1)
def _gsplat_usable() -> bool:
    """Whether gsplat is installed and its CUDA kernels can load (prebuilt, already built, or
    buildable here: :func:`engine.raster.gsplat_status.gsplat_status`), told without importing it."""
    from engine.raster.gsplat_status import gsplat_status

    return gsplat_status().usable


def available_backends() -> list[str]:
    """Backends usable in this process.

    Returns:
        ``["torch"]``, plus ``"gsplat"`` when CUDA is available and gsplat's kernels can load.
    """
    backends = ["torch"]
    if torch.cuda.is_available() and _gsplat_usable():
        backends.append("gsplat")
    return backends


def default_backend(device: torch.device | str) -> str:
    """The backend ``"auto"`` picks for tensors on ``device``.

    Args:
        device: where the Gaussians live.
    Returns:
        ``"gsplat"`` for CUDA devices when available, else ``"torch"``.
    """
    if torch.device(device).type == "cuda" and "gsplat" in available_backends():
        return "gsplat"
    return "torch"


def _check_inputs(means: Tensor, covars: Tensor, opacities: Tensor, colors: Tensor,
                  camera: Camera, background: Tensor | None) -> None:
    """Raises :class:`FateError` naming the argument whose shape is wrong."""
    if means.dim() != 2 or means.shape[-1] != 3:
        raise FateError(f"rasterize: means must be [N, 3], found {tuple(means.shape)}")
    n = means.shape[0]
    expected = {"covars": (covars, (n, 3, 3)), "opacities": (opacities, (n,)),
                "colors": (colors, (n, 3))}
    for name, (t, shape) in expected.items():
        if tuple(t.shape) != shape:
            raise FateError(f"rasterize: {name} must be {list(shape)} for N={n} Gaussians, "
                            f"found {list(t.shape)}")
    if background is not None and tuple(background.shape) != (3,):
        raise FateError(f"rasterize: background must be [3], found {list(background.shape)}")
    if tuple(camera.viewmat.shape) != (4, 4) or tuple(camera.K.shape) != (3, 3):
        raise FateError(f"rasterize: camera needs viewmat [4, 4] and K [3, 3], found "
                        f"{list(camera.viewmat.shape)} and {list(camera.K.shape)}")
    if int(camera.width) <= 0 or int(camera.height) <= 0:
        raise FateError(f"rasterize: camera size must be positive, found "
                        f"{camera.width}x{camera.height}")


def rasterize(means: Tensor, covars: Tensor, opacities: Tensor, colors: Tensor, camera: Camera,
              background: Tensor | None = None, backend: Backend = "auto",
              near: float = 0.01) -> RenderOutput:
    """Renders 3D Gaussians into one camera (differentiable w.r.t. all Gaussian inputs).

    Args:
        means: centres, world frame, meters. [N, 3]
        covars: covariances, world frame, m² (symmetric PSD; only the upper triangle is
            read, as gsplat does, so gradients land there). [N, 3, 3]
        opacities: in [0, 1]. [N]
        colors: per-Gaussian colour (sRGB values in [0, 1] by the project's convention). [N, 3]
        camera: OpenCV pinhole camera, see :class:`engine.geometry.cameras.Camera`.
        background: colour behind the splats. [3]; None = black.
        backend: ``"auto"`` (:func:`default_backend` of ``means.device``), ``"torch"`` or
            ``"gsplat"``.
        near: Gaussians with camera z < near are culled, meters.
    Returns:
        :class:`RenderOutput`.
    Raises:
        ConfigError: an unknown backend, or ``"gsplat"`` where it is not available.
        FateError: inputs of the wrong shape.
    """
    _check_inputs(means, covars, opacities, colors, camera, background)
    if backend == "auto":
        backend = default_backend(means.device)
    if backend == "torch":
        from engine.raster.torch_ref import rasterize_torch

        return rasterize_torch(means, covars, opacities, colors, camera, background, near=near)
    if backend == "gsplat":
        if "gsplat" not in available_backends():
            raise ConfigError("rasterize: backend 'gsplat' needs CUDA and the gsplat package; "
                              f"available here: {available_backends()}")
        from engine.raster.gsplat_backend import rasterize_gsplat

        return rasterize_gsplat(means, covars, opacities, colors, camera, background, near=near)
    raise ConfigError(f"rasterize: backend must be 'auto', 'torch' or 'gsplat', found {backend!r}")


__all__ = ["RenderOutput", "rasterize", "available_backends", "default_backend",
           "covariance_from_rotation_scale"]
