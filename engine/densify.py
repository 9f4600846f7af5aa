"""Densification, pruning and opacity reset of UV-bound Gaussians.

Two strategies share one interface:

- ``"sampling"`` — FATE §3.2, Eq. 6–8: every ``every`` steps, ``count`` parents are drawn by
  multinomial sampling with probability proportional to their accumulated position-gradient
  norm ‖∂L/∂μ‖; each child lands at a random barycentric point (Eq. 7–8) of its parent's face and
  inherits the parent's attributes. The Gaussian count grows by a fixed, controllable amount.
- ``"threshold"`` — 3DGS-style: Gaussians whose mean gradient norm exceeds ``grad_threshold``
  are cloned (small ones) or split into two with scales / 1.6 (large ones), children again at a
  random barycentric point of the same face (a UV-bound Gaussian cannot leave its face).

Both prune Gaussians with opacity < ``prune_opacity`` every ``prune_every`` steps, reset
opacities to ≤ ``reset_opacity`` every ``reset_every`` steps (supp. §7.2), and respect
``max_gaussians``. The optimiser's Adam moments follow every change (new rows start at zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from engine.gaussians import UVGaussians, inverse_sigmoid, random_barycentric


@dataclass
class DensifyConfig:
    """Hyper-parameters of densification (defaults: FATE supp. §7.2)."""

    strategy: Literal["sampling", "threshold", "none"] = "sampling"
    """"sampling" (FATE §3.2), "threshold" (3DGS) or "none"."""
    start: int = 500
    """first step at which densification may run"""
    stop: int = 10**9
    """no densification after this step"""
    every: int = 3000
    """densify every N steps"""
    count: int = 1000
    """sampling: Gaussians added per densification"""
    grad_threshold: float = 2e-3
    """threshold: mean ‖∂L/∂μ‖ (μ in meters) above which a Gaussian is cloned/split; on the 128²
    demo sequence about the 90th percentile early in training"""
    split_scale: float = 2.0
    """threshold: Gaussians whose largest scale multiplier exceeds this are split, others cloned"""
    prune_every: int = 2000
    """prune every N steps"""
    prune_opacity: float = 5e-3
    """prune Gaussians with opacity below this"""
    reset_every: int = 6000
    """reset opacities every N steps (0 = never)"""
    reset_opacity: float = 0.01
    """opacities are clamped to at most this at a reset"""
    max_gaussians: int = 100_000
    """budget: densification never exceeds it"""

    def __post_init__(self):
        if self.strategy not in ("sampling", "threshold", "none"):
            from engine.errors import ConfigError
            raise ConfigError(f"densify.strategy must be 'sampling', 'threshold' or 'none', found {self.strategy!r}")


class Densifier:
    """Accumulates position gradients and edits the Gaussian set on schedule.

    Usage per step: after ``loss.backward()``, call ``accumulate(means.grad, visible)``, then
    ``step(step_index, ...)`` after the optimiser step.
    """

    def __init__(self, config: DensifyConfig, num_gaussians: int, device: torch.device | str = "cpu"):
        self.config = config
        self.grad_accum = torch.zeros(num_gaussians, device=device)
        self.grad_count = torch.zeros(num_gaussians, device=device)

    def state_dict(self) -> dict[str, Tensor]:
        return {"grad_accum": self.grad_accum, "grad_count": self.grad_count}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.grad_accum = state["grad_accum"].clone()
        self.grad_count = state["grad_count"].clone()

    @torch.no_grad()
    def accumulate(self, means_grad: Tensor, visible: Tensor) -> None:
        """Adds ‖∂L/∂μ‖ of the visible Gaussians.

        Args:
            means_grad: gradient of the loss w.r.t. world means. [N, 3]
            visible: bool [N] (e.g. radii > 0).
        """
        norm = means_grad.norm(dim=-1)
        self.grad_accum += torch.where(visible, norm, torch.zeros_like(norm))
        self.grad_count += visible.float()

    def mean_grad(self) -> Tensor:
        """Average gradient norm since the last edit. [N]"""
        return self.grad_accum / self.grad_count.clamp_min(1.0)

    @torch.no_grad()
    def step(self, step: int, model: UVGaussians, optimizer: torch.optim.Optimizer,
             generator: torch.Generator | None = None) -> dict[str, int]:
        """Runs whatever the schedule asks for at ``step`` (1-based, after the optimiser step).

        Returns:
            counts: {"added": a, "pruned": p, "reset": 0/1}.
        """
        cfg = self.config
        out = {"added": 0, "pruned": 0, "reset": 0}
        if cfg.strategy == "none":
            return out
        if cfg.start <= step <= cfg.stop and step % cfg.every == 0:
            out["added"] = self.densify(model, optimizer, generator)
        if cfg.prune_every and step % cfg.prune_every == 0 and step >= cfg.start:
            out["pruned"] = self.prune(model, optimizer, model.opacities() >= cfg.prune_opacity)
        if cfg.reset_every and step % cfg.reset_every == 0 and step < cfg.stop:
            reset_opacity(model, optimizer, cfg.reset_opacity)
            out["reset"] = 1
        return out

    @torch.no_grad()
    def densify(self, model: UVGaussians, optimizer: torch.optim.Optimizer,
                generator: torch.Generator | None = None) -> int:
        """Adds Gaussians by the configured strategy; returns how many were added."""
        cfg = self.config
        room = cfg.max_gaussians - len(model)
        if room <= 0:
            return 0
        importance = self.mean_grad()
        if cfg.strategy == "sampling":
            parents = sample_parents(importance, min(cfg.count, room), generator)
            scale_factor = None
        else:
            parents, scale_factor = threshold_parents(importance, model, cfg, room)
        if parents.numel() == 0:
            return 0
        add_children(model, optimizer, parents, generator, scale_factor)
        self.grad_accum = torch.zeros(len(model), device=self.grad_accum.device)
        self.grad_count = torch.zeros(len(model), device=self.grad_accum.device)
        return int(parents.numel())

    @torch.no_grad()
    def prune(self, model: UVGaussians, optimizer: torch.optim.Optimizer, keep: Tensor) -> int:
        """Removes the Gaussians where ``keep`` is False; returns how many were removed."""
        removed = int((~keep).sum())
        if removed == 0 or int(keep.sum()) == 0:
            return 0
        src = torch.nonzero(keep).squeeze(1)
        reindex(model, optimizer, src, model.face_idx[src], model.bary[src], fresh=torch.zeros_like(src, dtype=torch.bool))
        self.grad_accum = self.grad_accum[src]
        self.grad_count = self.grad_count[src]
        return removed


def sample_parents(importance: Tensor, count: int, generator: torch.Generator | None = None) -> Tensor:
    """Multinomial draw of parents with p_k = I_k / Σ I_i (FATE Eq. 6), with replacement.

    Args:
        importance: non-negative importance per Gaussian. [N]
        count: number of parents to draw.
    Returns:
        parent indices, int64. [count] (empty when all importances are zero)
    """
    total = importance.sum()
    if count <= 0 or not torch.isfinite(total) or total <= 0:
        return torch.empty(0, dtype=torch.long, device=importance.device)
    probs = (importance / total).float().cpu()
    idx = torch.multinomial(probs, count, replacement=True, generator=generator)
    return idx.to(importance.device)


def threshold_parents(importance: Tensor, model: UVGaussians, cfg: DensifyConfig,
                      room: int) -> tuple[Tensor, Tensor]:
    """3DGS densification: parents above the gradient threshold, highest first.

    Returns:
        parents: int64 [P]
        scale_factor: per-parent factor applied to parent and child scales (1/1.6 when split, 1 when cloned). [P]
    """
    idx = torch.nonzero(importance > cfg.grad_threshold).squeeze(1)
    idx = idx[torch.argsort(importance[idx], descending=True)][:room]
    large = model.scale_multipliers()[idx].amax(dim=1) > cfg.split_scale
    factor = torch.where(large, torch.full_like(large, 1 / 1.6, dtype=torch.float32),
                         torch.ones_like(large, dtype=torch.float32))
    return idx, factor


def add_children(model: UVGaussians, optimizer: torch.optim.Optimizer, parents: Tensor,
                 generator: torch.Generator | None = None, scale_factor: Tensor | None = None) -> None:
    """Appends one child per parent at a random barycentric point of the parent's face (Eq. 7–8),
    inheriting the parent's attributes. With ``scale_factor``, parent and child scales are multiplied
    by it (3DGS split)."""
    n = len(model)
    bary_new = random_barycentric(parents.numel(), generator).to(model.bary.device)
    src = torch.cat([torch.arange(n, device=parents.device), parents])
    fresh = torch.cat([torch.zeros(n, dtype=torch.bool, device=parents.device),
                       torch.ones(parents.numel(), dtype=torch.bool, device=parents.device)])
    reindex(model, optimizer, src, model.face_idx[src], torch.cat([model.bary, bary_new]), fresh)
    if scale_factor is not None:
        log_f = torch.log(scale_factor)[:, None].to(model.scale_log.device)
        model.scale_log.data[parents] += log_f
        model.scale_log.data[n:] += log_f


def reset_opacity(model: UVGaussians, optimizer: torch.optim.Optimizer, value: float) -> None:
    """Clamps opacities to at most ``value`` and zeroes their Adam moments (3DGS reset)."""
    model.opacity_logit.data = torch.minimum(model.opacity_logit.data,
                                             inverse_sigmoid(torch.tensor(value)).to(model.opacity_logit.device))
    state = optimizer.state.get(model.opacity_logit)
    if state:
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key].zero_()


def reindex(model: UVGaussians, optimizer: torch.optim.Optimizer, src: Tensor, face_idx: Tensor,
            bary: Tensor, fresh: Tensor) -> None:
    """Rebuilds every per-Gaussian parameter as ``old[src]`` and moves the optimiser state along.

    Args:
        src: for each new Gaussian, the old Gaussian it copies, int64. [N']
        face_idx: new bindings, int64. [N']; bary: [N', 3]
        fresh: bool [N']: rows whose Adam moments start at zero (new children).
    """
    model.face_idx = face_idx.clone()
    model.bary = bary.clone()
    for name in UVGaussians.PARAMETERS:
        old = getattr(model, name)
        new = torch.nn.Parameter(old.data[src].clone())
        _move_optimizer_state(optimizer, old, new, src, fresh)
        setattr(model, name, new)


def _move_optimizer_state(optimizer: torch.optim.Optimizer, old: torch.nn.Parameter,
                          new: torch.nn.Parameter, src: Tensor, fresh: Tensor) -> None:
    for group in optimizer.param_groups:
        for i, p in enumerate(group["params"]):
            if p is old:
                group["params"][i] = new
    state = optimizer.state.pop(old, None)
    if state is None:
        return
    for key, value in list(state.items()):
        if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == old.shape[0]:
            moved = value[src].clone()
            moved[fresh] = 0
            state[key] = moved
    optimizer.state[new] = state
