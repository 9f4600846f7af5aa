"""Temporal adaptive density control (STAvatar §3.3, Fig. 3c and Fig. 4), on FATE's sampling.

Transiently visible regions (mouth interior, eyelids) have a low *average* positional gradient:
most frames do not show them. STAvatar therefore

1. clusters the training frames by their FLAME parameters — K clusters of expression and jaw
   pose (:func:`cluster_frames`, k-means++ then Lloyd, deterministic for a seed), and gathers
   the densification statistics per cluster;
2. uses a *fused perceptual error* as clone criterion: the per-pixel map
   E = (1 − λ)·|I − I_gt| + λ·(1 − SSIM(I, I_gt)) / 2 (:func:`fused_error_map`, channel mean,
   SSIM with a same-padded 11×11 Gaussian window) projected onto each Gaussian's 2D footprint
   (:func:`footprint_error`: the mean of E over the axis-aligned box of half-width σ = radius / 3
   around the projected centre, via an integral image; occlusion is not modelled — a hidden
   Gaussian takes the error of the surface in front of it).

Per Gaussian i and cluster k the state holds the sums of the screen gradient ‖∂L/∂μ₂ᴅ‖ and of the
footprint error over the steps of cluster k's frames in which i was drawn, and their count. The
importance is ``G_i / mean(G) + error_weight · E_i / mean(E)`` with G_i, E_i the largest
per-cluster mean over the clusters (so one cluster that needs detail is enough), and children are
drawn from it like FATE's sampling (Eq. 6–8, ``count`` per densification, scale ×``child_scale``),
so the Gaussian budget is that of the sampling strategy.

State keys (all tensors, saved in checkpoints as ``densifier/<key>``): ``grad_accum`` and
``grad_count`` [N] (the base strategy's), ``cluster_grad``, ``cluster_error`` and
``cluster_count`` [N, K], and ``frame_cluster`` [T] int64 (each frame's cluster; not per
Gaussian).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from engine.errors import ConfigError
from engine.image_ops import ssim
from engine.train.densify.base import STATE_KEYS
from engine.train.densify.sampling import SamplingStrategy

CLUSTER_KEYS = ("cluster_grad", "cluster_error", "cluster_count")
"""Per-Gaussian, per-cluster statistics [N, K]."""

FRAME_KEY = "frame_cluster"
"""Cluster of every frame of the sequence, int64 [T]."""

KMEANS_ITERATIONS = 100
"""Lloyd iterations at most (k-means stops earlier when the labels no longer change)."""


# ---------------------------------------------------------------------- clustering
def flame_features(expr: Tensor, pose: Tensor, jaw: int | None) -> np.ndarray:
    """Clustering features of frames: the expression coefficients and the jaw pose, each block
    centred and scaled to unit total variance so that neither dominates by its dimension.

    Args:
        expr: [T, E]; pose: [T, J·3] axis-angle.
        jaw: the jaw joint's index, or None (expression only).
    Returns:
        float64 [T, E (+3)].
    """
    blocks = [expr.detach().cpu().double().numpy()]
    if jaw is not None:
        blocks.append(pose[:, 3 * jaw:3 * jaw + 3].detach().cpu().double().numpy())
    out = []
    for b in blocks:
        b = b - b.mean(axis=0)
        out.append(b / max(float(np.sqrt(b.var(axis=0).sum())), 1e-12))
    return np.concatenate(out, axis=1)


def cluster_frames(features: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k-means (k-means++ initialisation, then Lloyd) of frame features.

    Args:
        features: one row per frame. [T, D]
        k: clusters wanted (at most T are made).
        seed: the initialisation's seed (same seed → same labels).
    Returns:
        labels int64 [T] in [0, k'), centroids [k', D] with k' = min(k, T).
    Raises:
        ConfigError: no frames or k < 1.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0 or k < 1:
        raise ConfigError(f"temporal densification: cannot cluster {x.shape} frame features into {k} clusters")
    k = min(int(k), len(x))
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d2 = np.min(((x[:, None] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
        total = d2.sum()
        centres.append(x[rng.choice(len(x), p=d2 / total)] if total > 0 else x[rng.integers(len(x))])
    c = np.asarray(centres)
    labels = np.full(len(x), -1, dtype=np.int64)
    for _ in range(KMEANS_ITERATIONS):
        d2 = ((x[:, None] - c[None]) ** 2).sum(-1)
        new = np.argmin(d2, axis=1)
        for j in range(k):  # an empty cluster takes the frame farthest from its centre
            if not np.any(new == j):
                far = int(np.argmax(d2[np.arange(len(x)), new]))
                new[far] = j
        if np.array_equal(new, labels):
            break
        labels = new
        c = np.stack([x[labels == j].mean(axis=0) for j in range(k)])
    return labels, c


# ---------------------------------------------------------------------- fused perceptual error
def fused_error_map(image: Tensor, gt: Tensor, dssim_weight: float = 0.2) -> Tensor:
    """Per-pixel fused perceptual error (1 − λ)·L1 + λ·D-SSIM (STAvatar Fig. 3c), ≥ 0.

    Args:
        image: render, in [0, 1]. [H, W, 3]
        gt: ground truth, same shape.
        dssim_weight: λ.
    Returns:
        error map, channel mean. [H, W] (0 everywhere for image == gt)
    """
    l1 = (image - gt).abs().mean(-1)
    if dssim_weight == 0:
        return l1
    s = ssim(image, gt, padding="same", reduction="none")[0].mean(0)
    return ((1.0 - dssim_weight) * l1 + dssim_weight * (1.0 - s) / 2.0).clamp_min(0.0)


def footprint_error(error: Tensor, means2d: Tensor, radii: Tensor) -> Tensor:
    """Mean of an error map over each Gaussian's 2D footprint: the pixel box of half-width
    σ = radius / 3 (at least half a pixel) around its projected centre.

    Args:
        error: [H, W]
        means2d: projected centres, pixels, origin at the top-left pixel corner. [N, 2]
        radii: 3σ screen radii, pixels (0 = not drawn). [N] (or [N, 2]: the larger is used)
    Returns:
        [N] (0 for undrawn Gaussians and boxes outside the image).
    """
    H, W = error.shape
    if radii.dim() == 2:
        radii = radii.amax(-1)
    S = torch.zeros(H + 1, W + 1, dtype=torch.float64, device=error.device)
    S[1:, 1:] = error.double().cumsum(0).cumsum(1)
    half = (radii.double() / 3.0).clamp_min(0.5)
    xy = means2d.detach().double()
    x0 = torch.floor(xy[:, 0] - half).clamp(0, W).long()
    x1 = (torch.floor(xy[:, 0] + half) + 1).clamp(0, W).long()
    y0 = torch.floor(xy[:, 1] - half).clamp(0, H).long()
    y1 = (torch.floor(xy[:, 1] + half) + 1).clamp(0, H).long()
    area = ((x1 - x0) * (y1 - y0)).double()
    total = S[y1, x1] - S[y0, x1] - S[y1, x0] + S[y0, x0]
    ok = (radii > 0) & (area > 0)
    return torch.where(ok, total / area.clamp_min(1.0), torch.zeros_like(total)).float()


# ---------------------------------------------------------------------- the strategy
class TemporalStrategy(SamplingStrategy):
    """STAvatar's temporal ADC (module doc): per-cluster gradient and fused-error statistics,
    FATE's sampling of ``count`` children from them."""

    per_gaussian_keys = STATE_KEYS + CLUSTER_KEYS

    @property
    def num_clusters(self) -> int:
        return int(self.config.clusters)

    def initialize_state(self, num_gaussians: int, device: torch.device | str = "cpu") -> dict[str, Tensor]:
        state = super().initialize_state(num_gaussians, device)
        state.update({k: torch.zeros(num_gaussians, self.num_clusters, device=device) for k in CLUSTER_KEYS})
        return state

    def bind_sequence(self, state: dict[str, Tensor], seq: Any, frames: list[int], head: Any,
                      seed: int = 0) -> None:
        """Clusters the training frames by expression and jaw pose and labels every frame of the
        sequence with its nearest cluster (``state["frame_cluster"]``)."""
        jaw = head.joint_names.index("jaw") if "jaw" in head.joint_names else None
        feats = flame_features(seq.expr, seq.pose, jaw)
        _, centres = cluster_frames(feats[list(frames)], self.num_clusters, seed)
        labels = np.argmin(((feats[:, None] - centres[None]) ** 2).sum(-1), axis=1)
        state[FRAME_KEY] = torch.as_tensor(labels, dtype=torch.long, device=state["grad_accum"].device)

    def cluster_of(self, state: dict[str, Tensor], frame: int) -> int:
        """The cluster of a frame (0 when the sequence was never bound)."""
        labels = state.get(FRAME_KEY)
        return 0 if labels is None else int(labels[int(frame)])

    @torch.no_grad()
    def step_post_backward(self, state: dict[str, Tensor], info: dict[str, Any]) -> None:
        """The base statistics, plus this frame's cluster's screen-gradient and footprint-error
        sums of the drawn Gaussians.

        Raises:
            ConfigError: ``info`` lacks ``frame``, ``image`` or ``gt``.
        """
        super().step_post_backward(state, info)
        missing = [k for k in ("frame", "image", "gt") if info.get(k) is None]
        if missing:
            raise ConfigError(f"densify.strategy 'temporal' needs {missing} in the step's info")
        radii = info["radii"].amax(-1) if info["radii"].dim() == 2 else info["radii"]
        visible = (radii > 0).float()
        k = self.cluster_of(state, info["frame"])
        tracked = self._tracked(info)
        if tracked is not None and tracked.grad is not None:
            state["cluster_grad"][:, k] += tracked.grad.norm(dim=-1) * visible
        err = footprint_error(fused_error_map(info["image"].detach(), info["gt"], self.config.error_dssim),
                              info["means2d"], radii)
        state["cluster_error"][:, k] += err * visible
        state["cluster_count"][:, k] += visible

    def importance(self, state: dict[str, Tensor]) -> Tensor:
        """``G / mean(G) + error_weight · E / mean(E)`` (module doc). [N]"""
        count = state["cluster_count"].clamp_min(1.0)
        grad = (state["cluster_grad"] / count).amax(dim=1)
        err = (state["cluster_error"] / count).amax(dim=1)
        return _unit_mean(grad) + self.config.error_weight * _unit_mean(err)


def _unit_mean(x: Tensor) -> Tensor:
    """x divided by its mean over the positive entries (all zeros stay zeros)."""
    pos = x > 0
    if not bool(pos.any()):
        return torch.zeros_like(x)
    return x / x[pos].mean()
