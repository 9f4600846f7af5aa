"""Training losses of FATE (§3.5, Eq. 12–15).

``L = L_L1 + λ1 L_vgg + λ2 L_lap + λ3 L_flame + λ4 L_scale`` (Eq. 15; the paper uses
λ1..λ4 = 0.1, 100, 100, 0.1). This module provides each term; the weighting lives in the
training config.

- :func:`l1_loss` — ``L_L1`` (Eq. 12), optionally masked.
- :class:`PerceptualLoss` — ``L_vgg`` (Eq. 12) from user-supplied VGG16 weights;
  :func:`make_perceptual_loss` falls back to :func:`dssim_loss` when none are given.
- :func:`scale_ratio_loss` — ``L_scale`` (Eq. 13, after PhysGaussian).
- :func:`uniform_laplacian` + :func:`laplacian_loss` — ``L_lap`` (Eq. 14) on the learnt
  vertex displacement.
- :func:`flame_loss` — ``L_flame`` (Eq. 14).

Images are encoded (sRGB) colours in [0, 1], either ``[H, W, 3]`` (the engine's image layout,
top row first) or ``[B, 3, H, W]``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.errors import ConfigError
from engine.image_ops import ssim, to_bchw
from engine.vgg import IMAGENET_MEAN, IMAGENET_STD, RELU_TAPS, load_vgg16_features

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- images


def l1_loss(pred: Tensor, gt: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean absolute error, ``L_L1`` of FATE Eq. 12.

    Args:
        pred: rendered image, any shape, e.g. [H, W, 3] or [B, 3, H, W].
        gt: ground truth, same shape as ``pred``.
        mask: optional weights broadcastable to ``pred`` (e.g. [H, W, 1]; 1 = counted). The
            result is then the mean over the masked elements (0 when the mask is empty).
    Returns:
        scalar tensor.
    """
    diff = (pred - gt).abs()
    if mask is None:
        return diff.mean()
    weights = mask.to(diff.dtype).expand_as(diff)
    return (diff * weights).sum() / weights.sum().clamp_min(1e-8)


def dssim_loss(pred: Tensor, gt: Tensor) -> Tensor:
    """Structural dissimilarity ``(1 − SSIM) / 2`` in [0, 1] (0 for identical images).

    Args:
        pred: image in [0, 1]. [H, W, 3] or [B, 3, H, W]
        gt: same shape as ``pred``.
    Returns:
        scalar tensor.
    """
    return (1.0 - ssim(pred, gt)) / 2.0


# --------------------------------------------------------------------------- Gaussians


def scale_ratio_loss(scales: Tensor, r: float) -> Tensor:
    """Penalises needle-like Gaussians, ``L_scale`` of FATE Eq. 13 (after PhysGaussian).

    ``L = 1/N Σ_i max(max(s_i) / min(s_i) − r, 0)``.

    Args:
        scales: activated (positive) per-axis Gaussian scales, meters. [N, 3]
        r: allowed ratio of the longest to the shortest axis (≥ 1).
    Returns:
        scalar tensor (0 for N = 0).
    """
    if scales.ndim != 2:
        raise ValueError(f"scale_ratio_loss: expected scales [N, 3], got {list(scales.shape)}")
    if scales.shape[0] == 0:
        return scales.sum() * 0.0
    s_max = scales.amax(dim=-1)
    s_min = scales.amin(dim=-1).clamp_min(torch.finfo(scales.dtype).tiny)
    return F.relu(s_max / s_min - r).mean()


# --------------------------------------------------------------------------- mesh


def uniform_laplacian(
    faces: Tensor | np.ndarray,
    num_vertices: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Uniform (umbrella) graph Laplacian of a triangle mesh, ``L = I − D⁻¹A``.

    ``(L x)_i = x_i − mean_{j ∈ N(i)} x_j`` over the one-ring neighbours ``N(i)`` (edges of
    ``faces``, each undirected edge counted once). Rows of isolated vertices are zero, so
    unused vertices are not penalised.

    Args:
        faces: triangle vertex indices. [F, 3] int
        num_vertices: V, the number of vertices (≥ max index + 1).
        dtype: value dtype of the result.
        device: device of the result (default: that of ``faces`` if a tensor, else CPU).
    Returns:
        sparse COO tensor, coalesced. [V, V]
    """
    if device is None:
        device = faces.device if isinstance(faces, Tensor) else "cpu"
    if isinstance(faces, Tensor):
        f = faces.detach().cpu().long()
    else:
        f = torch.as_tensor(np.asarray(faces), dtype=torch.long)
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"uniform_laplacian: expected faces [F, 3], got {list(f.shape)}")
    if f.numel() and (int(f.min()) < 0 or int(f.max()) >= num_vertices):
        raise ValueError(
            f"uniform_laplacian: face indices span {int(f.min())}..{int(f.max())}, "
            f"expected 0..{num_vertices - 1}"
        )
    edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], dim=0)
    edges = torch.cat([edges, edges.flip(1)], dim=0)  # both directions
    edges = torch.unique(edges, dim=0)  # each directed edge once
    edges = edges[edges[:, 0] != edges[:, 1]]  # degenerate faces
    rows, cols = edges[:, 0], edges[:, 1]
    degree = torch.bincount(rows, minlength=num_vertices).to(torch.float64)
    off_vals = -1.0 / degree[rows]
    has_nbrs = torch.nonzero(degree > 0).squeeze(1)
    idx = torch.cat([torch.stack([rows, cols]), torch.stack([has_nbrs, has_nbrs])], dim=1)
    vals = torch.cat([off_vals, torch.ones(has_nbrs.shape[0], dtype=torch.float64)])
    lap = torch.sparse_coo_tensor(idx, vals.to(dtype), (num_vertices, num_vertices), check_invariants=True)
    return lap.coalesce().to(device)


def laplacian_loss(x: Tensor, L: Tensor) -> Tensor:
    """Laplacian smoothing term ``L_lap`` of FATE Eq. 14: mean squared norm of ``L x``.

    Applied to the learnt vertex displacement (current vertices minus the FLAME vertices
    without learnt blendshapes), so that the FLAME surface itself is not flattened.

    Args:
        x: per-vertex vectors, e.g. displacements in meters. [V, 3] or [B, V, 3]
        L: Laplacian, sparse or dense, e.g. from :func:`uniform_laplacian`. [V, V]
    Returns:
        scalar tensor: ``mean_{b, i} ||(L x_b)_i||²``.
    """
    if x.ndim not in (2, 3) or x.shape[-2] != L.shape[0]:
        raise ValueError(f"laplacian_loss: x {list(x.shape)} does not match L {list(L.shape)}")
    batched = x if x.ndim == 3 else x.unsqueeze(0)
    b, v, d = batched.shape
    flat = batched.permute(1, 0, 2).reshape(v, b * d)  # [V, B·3]
    lx = torch.sparse.mm(L, flat) if L.is_sparse else L @ flat
    return lx.reshape(v, b, d).square().sum(dim=-1).mean()


def flame_loss(verts: Tensor, verts_ref: Tensor) -> Tensor:
    """FLAME prior ``L_flame`` of FATE Eq. 14: mean squared L2 distance per vertex.

    ``mean_i ||v_i − v_ref,i||²`` (summed over x, y, z, averaged over vertices and batch).
    FATE's reference code averages over the coordinates as well, i.e. its value is this one
    divided by 3; scale λ3 accordingly when matching its numbers.

    Args:
        verts: current posed vertices (with learnt ΔE, ΔP, Δv), meters. [V, 3] or [B, V, 3]
        verts_ref: the FLAME vertices in the same pose/expression without the learnt
            blendshapes, meters. same shape as ``verts``
    Returns:
        scalar tensor, m².
    """
    if verts.shape != verts_ref.shape:
        raise ValueError(f"flame_loss: verts {list(verts.shape)} vs verts_ref {list(verts_ref.shape)}")
    return (verts - verts_ref).square().sum(dim=-1).mean()


# --------------------------------------------------------------------------- perceptual


_PERCEPTUAL_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


class PerceptualLoss(nn.Module):
    """VGG16 feature loss ``L_vgg`` of FATE Eq. 12 from user-supplied weights.

    Both images are normalised with the ImageNet mean/std, optionally resized, and passed
    through VGG16 ``features``; the loss is the sum over ``relu1_2``, ``relu2_2``,
    ``relu3_3`` and ``relu4_3`` of the mean absolute feature difference. The network is
    frozen; gradients flow to ``pred`` only.

    Args:
        weights_path: torchvision ``vgg16`` state dict (``.pth``, loaded with
            ``weights_only=True``) or a ``.safetensors`` file with the same keys.
        resize: if set, both images are bilinearly resized to ``resize``×``resize`` px first
            (FATE uses 224); ``None`` keeps the input size.
    Raises:
        ConfigError: missing/unreadable file, or missing/misshaped keys.
    """

    def __init__(self, weights_path: Path | str, resize: int | None = 224) -> None:
        super().__init__()
        self.net = load_vgg16_features(weights_path, last_layer=RELU_TAPS["relu4_3"])
        self.taps = [RELU_TAPS[name] for name in _PERCEPTUAL_TAPS]
        self.resize = resize
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "PerceptualLoss":
        """Keeps the network in eval mode whatever the caller asks (it is frozen)."""
        super().train(mode)
        self.net.eval()
        return self

    def _prepare(self, image: Tensor) -> Tensor:
        x = to_bchw(image).to(self.mean.dtype)
        if x.shape[1] != 3:
            raise ValueError(f"PerceptualLoss: expected 3 colour channels, got shape {list(image.shape)}")
        x = (x - self.mean) / self.std
        if self.resize is not None and x.shape[-2:] != (self.resize, self.resize):
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        return x

    def forward(self, pred: Tensor, gt: Tensor) -> Tensor:
        """Perceptual distance.

        Args:
            pred: rendered image in [0, 1]. [H, W, 3] or [B, 3, H, W]
            gt: ground truth, same shape.
        Returns:
            scalar tensor (0 for identical images).
        """
        if pred.shape != gt.shape:
            raise ValueError(f"PerceptualLoss: pred {list(pred.shape)} vs gt {list(gt.shape)}")
        if self.mean.device != pred.device:  # follow the images (e.g. built on CPU, used on CUDA)
            self.to(pred.device)
        x = self._prepare(pred)
        with torch.no_grad():
            y_feats = self.net(self._prepare(gt), self.taps)
        x_feats = self.net(x, self.taps)
        loss = x.new_zeros(())
        for fx, fy in zip(x_feats, y_feats):
            loss = loss + (fx - fy).abs().mean()
        return loss


_warned_no_vgg = False


def make_perceptual_loss(
    weights_path: Path | str | None,
    device: torch.device | str = "cpu",
) -> tuple[Callable[[Tensor, Tensor], Tensor], str]:
    """The perceptual term of Eq. 12: VGG16 when weights are supplied, D-SSIM otherwise.

    Args:
        weights_path: VGG16 weights (see :class:`PerceptualLoss`), or ``None``.
        device: where the VGG network lives.
    Returns:
        ``(loss_fn(pred, gt) -> scalar, name)`` with name ``"vgg"`` or ``"dssim"``.
    Raises:
        ConfigError: a path was given but the file is missing or malformed (the message names
            the path). A missing file is never silently replaced by D-SSIM.
    """
    global _warned_no_vgg
    if weights_path is None or str(weights_path) == "":
        if not _warned_no_vgg:
            logger.info("VGG16 weights not supplied: using D-SSIM as the perceptual term")
            _warned_no_vgg = True
        return dssim_loss, "dssim"
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"VGG16 weights file not found: {path} (set it to a file or leave it empty)")
    return PerceptualLoss(path).to(device), "vgg"
