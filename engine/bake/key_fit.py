"""Fitting the map shape keys (:mod:`engine.map_keys`) at bake time (issue 19).

Two sources, both linearised over the training frames' driving vectors d_t:

- a HeadGaS avatar (:func:`headgas_keys`): per Gaussian, the MLP's change of colour and opacity
  from the neutral face, fitted per Gaussian and written into UV maps by the direct per-texel
  fit (:func:`engine.bake.direct_fit.direct_fit_maps`, low-passed like the ``init="direct"`` base);
- the expression-conditioned BakeNet (:func:`map_keys_from_maps`): per texel, the change of its
  colour and opacity maps from the neutral maps.

Keys whose largest |Δ| over the map stays below ``min_effect`` are dropped (FLAME's higher
expression components change little; each key costs R²·4 half floats on disk).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor

from engine.bake.direct_fit import direct_fit_maps, gaussian_blur
from engine.map_keys import KeyFit, KeySpec, MapKeys, split_features, split_specs
from engine.model.appearance_drivers import AppearanceDrivers

log = logging.getLogger(__name__)


def _frame(tracking: dict, i: int, device) -> tuple[Tensor, Tensor]:
    return (torch.as_tensor(tracking["expr"][i], dtype=torch.float32, device=device),
            torch.as_tensor(tracking["pose"][i], dtype=torch.float32, device=device))


def _fold(j: int, n: int, fit: KeyFit) -> int:
    """Cross-validation block of the j-th of n frames (contiguous blocks, in frame order)."""
    return j * max(fit.folds, 1) // max(n, 1)


def _prune(keys: MapKeys, min_effect: float) -> MapKeys:
    """``keys`` without those whose largest |Δ| (colour or opacity) is below ``min_effect``."""
    effect = torch.maximum(keys.color.abs().flatten(1).amax(1), keys.opacity.abs().flatten(1).amax(1))
    keep = [k for k in range(len(keys)) if float(effect[k]) >= min_effect]
    if len(keep) < len(keys):
        log.info("map shape keys: %d of %d below %.4g kept out", len(keys) - len(keep), len(keys), min_effect)
    idx = torch.as_tensor(keep, dtype=torch.long)
    return MapKeys([keys.specs[k] for k in keep], keys.color[idx], keys.opacity[idx], keys.source)


def _to_keys(specs: list[KeySpec], D: Tensor, R: int, source: str) -> MapKeys:
    """Fitted texel deltas [K, R·R·4] → MapKeys."""
    K = len(specs)
    m = D.reshape(K, R, R, 4).cpu()
    return MapKeys(specs, m[..., :3].contiguous(), m[..., 3:].contiguous(), source)


@torch.no_grad()
def headgas_keys(avatar, tracking: dict, frames: list[int], uv: Tensor, resolution: int, blur: float,
                 min_effect: float, ridge: float | None = None) -> tuple[MapKeys, dict]:
    """Map shape keys of a HeadGaS avatar's MLP over ``frames`` (module doc).

    Args:
        avatar: the avatar; ``avatar.appearance`` is its :class:`engine.model.headgas.HeadGaSAppearance`.
        tracking: its ``tracking.npz`` arrays (expr [T, E], pose [T, J·3]).
        frames: the frames to fit (the training split).
        uv: the Gaussians' UVs, OBJ convention. [N, 2]
        resolution: map size R.
        blur: σ of the low-pass applied to the per-texel fit, texels (0 = none).
        min_effect: keys with a smaller largest |Δ| are dropped.
        ridge: relative ridge weight of the fit (None: cross-validated, :class:`engine.map_keys.KeyFit`).
    Returns:
        the keys (colour in encoded units) and fit statistics (``explained`` per Gaussian
        values, before the per-texel fit).
    """
    model, g = avatar.appearance, avatar.gaussians
    base_c, base_o = g.colors(), g.opacities()
    fit = KeyFit(split_specs(model.drivers), len(g) * 4, device=base_c.device)
    for j, i in enumerate(frames):
        expr, pose = _frame(tracking, i, base_c.device)
        c, o = model(g, expr, pose)
        y = torch.cat([c - base_c, (o - base_o)[:, None]], dim=1)
        fit.add(split_features(model.drivers.values(expr, pose)), y.reshape(-1), _fold(j, len(frames), fit))
    specs, D, stats = fit.solve(ridge)
    K = len(specs)
    per_gaussian = D.reshape(K, len(g), 4).permute(1, 0, 2).reshape(len(g), K * 4)
    m = direct_fit_maps({"keys": per_gaussian}, uv.cpu(), resolution)["keys"]
    if blur > 0:
        m = gaussian_blur(m, blur)
    keys = _to_keys(specs, m.reshape(resolution * resolution, K, 4).permute(1, 0, 2).reshape(K, -1),
                    resolution, "headgas")
    return _prune(keys, min_effect), stats


@torch.no_grad()
def map_keys_from_maps(maps_at: Callable[[int | None], dict[str, Tensor]], drivers: AppearanceDrivers,
                       tracking: dict, frames: list[int], resolution: int, min_effect: float,
                       ridge: float | None = None) -> tuple[MapKeys, dict]:
    """Map shape keys of per-frame maps (the conditioned BakeNet) over ``frames``.

    Args:
        maps_at: frame index → activated maps (``color`` [R, R, 3], ``opacity`` [R, R, 1]);
            None → the neutral maps.
        drivers: the driving vector whose halves become the candidate keys.
        tracking: ``tracking.npz`` arrays; frames: the frames to fit; resolution: R.
        min_effect, ridge: see :func:`headgas_keys`.
    Returns:
        the keys and fit statistics.
    """
    def stacked(maps):
        return torch.cat([maps["color"], maps["opacity"].reshape(resolution, resolution, 1)], dim=-1)

    base = stacked(maps_at(None))
    fit = KeyFit(split_specs(drivers), resolution * resolution * 4, device=base.device)
    for j, i in enumerate(frames):
        expr, pose = _frame(tracking, i, base.device)
        fit.add(split_features(drivers.values(expr, pose)), (stacked(maps_at(i)) - base).reshape(-1),
                _fold(j, len(frames), fit))
    specs, D, stats = fit.solve(ridge)
    return _prune(_to_keys(specs, D, resolution, "dynamic_maps"), min_effect), stats
