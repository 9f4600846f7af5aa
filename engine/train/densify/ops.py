"""Edits of the Gaussian set that keep the optimiser in step: children, pruning, opacity reset.

Every edit rebuilds the per-Gaussian parameters of :class:`~engine.model.gaussians.UVGaussians`
and moves Adam's moments along (rows of new children start at zero), so densification never
resets the optimiser.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from engine.model.gaussians import UVGaussians, inverse_sigmoid, random_barycentric


def add_children(model: UVGaussians, optimizer: torch.optim.Optimizer, parents: Tensor,
                 generator: torch.Generator | None = None, scale_factor: Tensor | None = None,
                 child_scale: float = 1.0) -> None:
    """Appends one child per parent at a random barycentric point of the parent's face (Eq. 7–8),
    inheriting the parent's attributes. With ``scale_factor`` [P], parent and child scales are
    multiplied by it (3DGS split); ``child_scale`` multiplies the children's scales only (FATE's
    code shrinks sampled children by 0.75)."""
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
    if child_scale != 1.0:
        model.scale_log.data[n:] += math.log(child_scale)


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
    for name in model.parameter_names():
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


@torch.no_grad()
def prune(model: UVGaussians, optimizer: torch.optim.Optimizer, keep: Tensor) -> Tensor | None:
    """Removes the Gaussians where ``keep`` is False (never all of them).

    Args:
        keep: bool [N].
    Returns:
        the kept old indices, int64 [N'] (for the caller's per-Gaussian state), or None when
        nothing was removed.
    """
    removed = int((~keep).sum())
    if removed == 0 or int(keep.sum()) == 0:
        return None
    src = torch.nonzero(keep).squeeze(1)
    reindex(model, optimizer, src, model.face_idx[src], model.bary[src],
            fresh=torch.zeros_like(src, dtype=torch.bool))
    return src
