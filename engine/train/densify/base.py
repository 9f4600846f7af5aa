"""The densification strategy interface (gsplat's pattern: the caller owns the state).

A strategy is built from a :class:`~engine.train.densify.config.DensifyConfig`. The training loop
keeps the per-Gaussian statistics in a plain dict from :meth:`Strategy.initialize_state` (it is
saved in checkpoints as it is) and calls three hooks per step::

    strategy.step_pre_backward(state, info)         # before loss.backward()
    strategy.step_post_backward(state, info)        # after backward, before optimizer.step()
    counts = strategy.step_post_update(state, step, model, optimizer, generator)  # after step()

``info`` holds the step's world-space Gaussian means ``means`` [N, 3] (meters), their projected
centres ``means2d`` [N, 2] (pixels; may be None) and screen radii ``radii`` [N] (pixels, 0 = not
drawn); the training loop adds the frame index ``frame``, the rendered ``image`` and the ground
truth ``gt`` ([H, W, 3] in [0, 1]) for strategies that look at the images (temporal). A strategy accumulates the norm of ∂L/∂μ (``gradient_source = "world"``) or of ∂L/∂μ₂ᴅ
(``"screen"``). Every strategy prunes transparent Gaussians and resets
opacities on the same schedule (supp. §7.2); a subclass decides which Gaussians get a child
(:meth:`Strategy.select_parents`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from engine.errors import ConfigError
from engine.model.gaussians import UVGaussians
from engine.train.densify.config import DensifyConfig
from engine.train.densify.ops import add_children, prune, reset_opacity

STATE_KEYS = ("grad_accum", "grad_count")
"""Keys of the state dict every strategy keeps (all [N] float32)."""


class Strategy:
    """Base strategy: gradient statistics, the prune / reset schedule, and no densification.

    Args:
        config: the hyper-parameters (``config.strategy`` names the subclass).
    """

    per_gaussian_keys: tuple[str, ...] = STATE_KEYS
    """State keys with one row per Gaussian (pruning keeps their rows in step)."""

    def __init__(self, config: DensifyConfig):
        self.config = config

    @property
    def gradient_source(self) -> str:
        """Which position gradient the statistics hold: "world" (∂L/∂μ, meters) or "screen"."""
        return "world"

    # ------------------------------------------------------------------ state
    def initialize_state(self, num_gaussians: int, device: torch.device | str = "cpu") -> dict[str, Tensor]:
        """Fresh statistics for ``num_gaussians`` Gaussians: ``grad_accum`` (Σ‖∂L/∂μ‖ over the
        steps a Gaussian was drawn) and ``grad_count`` (how many such steps), both [N]."""
        return {k: torch.zeros(num_gaussians, device=device) for k in STATE_KEYS}

    def bind_sequence(self, state: dict[str, Tensor], seq: Any, frames: list[int], head: Any,
                      seed: int = 0) -> None:
        """Called once by the training loop with the tracked sequence (``Sequence``), its training
        frame indices, the ``HeadModel`` and the job's seed; a strategy that needs per-frame data (temporal
        clustering) stores it in ``state`` as tensors. The base strategy needs none."""

    def check_sanity(self, model: UVGaussians, optimizer: torch.optim.Optimizer, state: dict[str, Tensor]) -> None:
        """Raises ConfigError early if the optimiser lacks a Gaussian parameter or the state does
        not match the model (a missing key, or a length other than N)."""
        params = {id(p) for g in optimizer.param_groups for p in g["params"]}
        for name in model.parameter_names():
            if id(getattr(model, name)) not in params:
                raise ConfigError(f"densification: the optimiser does not hold the Gaussian parameter {name!r}")
        for key in STATE_KEYS:
            if key not in state or state[key].shape[0] != len(model):
                raise ConfigError(f"densification state: {key!r} missing or not of length {len(model)}")

    @staticmethod
    def mean_grad(state: dict[str, Tensor]) -> Tensor:
        """Average ‖∂L/∂μ‖ since the last edit, per Gaussian. [N]"""
        return state["grad_accum"] / state["grad_count"].clamp_min(1.0)

    # ------------------------------------------------------------------ hooks
    def _tracked(self, info: dict[str, Any]) -> Tensor | None:
        """The (non-leaf) tensor whose gradient the statistics accumulate."""
        if self.gradient_source == "screen":
            if info.get("means2d") is None:
                raise ConfigError("densify.gradient 'screen' needs the rasteriser's projected centres "
                                  "(means2d), which this rasteriser did not return")
            return info["means2d"]
        return info["means"]

    def step_pre_backward(self, state: dict[str, Tensor], info: dict[str, Any]) -> None:
        """Asks autograd to keep the gradient of the tracked positions (they are not leaves)."""
        tracked = self._tracked(info)
        if tracked is not None and tracked.requires_grad:
            tracked.retain_grad()

    @torch.no_grad()
    def step_post_backward(self, state: dict[str, Tensor], info: dict[str, Any]) -> None:
        """Adds the gradient norm (‖∂L/∂μ‖, meters, or ‖∂L/∂μ₂ᴅ‖, pixels) of the Gaussians drawn
        this step (``radii > 0``) and counts the step."""
        tracked = self._tracked(info)
        grad = None if tracked is None else tracked.grad
        if grad is None:
            return
        visible = info["radii"] > 0
        norm = grad.norm(dim=-1)
        state["grad_accum"] += torch.where(visible, norm, torch.zeros_like(norm))
        state["grad_count"] += visible.float()

    @torch.no_grad()
    def step_post_update(self, state: dict[str, Tensor], step: int, model: UVGaussians,
                         optimizer: torch.optim.Optimizer, generator: torch.Generator | None = None) -> dict[str, int]:
        """Runs what the schedule asks for at ``step`` (1-based, after the optimiser step):
        densify every ``every`` steps in [start, stop], prune every ``prune_every`` steps from
        ``start`` on, reset opacities every ``reset_every`` steps before ``stop``.

        Returns:
            counts: {"added": a, "pruned": p, "reset": 0/1}.
        """
        cfg = self.config
        out = {"added": 0, "pruned": 0, "reset": 0}
        if cfg.strategy == "none":
            return out
        if cfg.start <= step <= cfg.stop and step % cfg.every == 0:
            out["added"] = self.densify(state, model, optimizer, generator)
        if cfg.prune_every and step % cfg.prune_every == 0 and step >= cfg.start:
            out["pruned"] = self.prune(state, model, optimizer, model.opacities() >= cfg.prune_opacity)
        if cfg.reset_every and step % cfg.reset_every == 0 and step < cfg.stop:
            reset_opacity(model, optimizer, cfg.reset_opacity)
            out["reset"] = 1
        return out

    # ------------------------------------------------------------------ edits
    child_scale: float = 1.0
    """Scale multiplier of every new child (on top of a split's ``scale_factor``)."""

    def select_parents(self, state: dict[str, Tensor], model: UVGaussians, room: int,
                       generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
        """Which Gaussians get a child (at most ``room``), and an optional per-parent scale factor
        applied to parent and child. The base strategy adds none."""
        return torch.empty(0, dtype=torch.long, device=model.face_idx.device), None

    @torch.no_grad()
    def densify(self, state: dict[str, Tensor], model: UVGaussians, optimizer: torch.optim.Optimizer,
                generator: torch.Generator | None = None) -> int:
        """Adds the children :meth:`select_parents` asks for, within ``max_gaussians``; resets the
        statistics. Returns how many were added."""
        room = self.config.max_gaussians - len(model)
        if room <= 0:
            return 0
        parents, scale_factor = self.select_parents(state, model, room, generator)
        if parents.numel() == 0:
            return 0
        add_children(model, optimizer, parents, generator, scale_factor, child_scale=self.child_scale)
        state.update(self.initialize_state(len(model), state["grad_accum"].device))
        return int(parents.numel())

    @torch.no_grad()
    def prune(self, state: dict[str, Tensor], model: UVGaussians, optimizer: torch.optim.Optimizer,
              keep: Tensor) -> int:
        """Removes the Gaussians where ``keep`` (bool [N]) is False; returns how many."""
        src = prune(model, optimizer, keep)
        if src is None:
            return 0
        for key in self.per_gaussian_keys:
            state[key] = state[key][src]
        return int((~keep).sum())
