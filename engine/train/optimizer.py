"""The optimiser of a training run: Adam with FATE's per-attribute learning rates (supp. §7.2)."""

from __future__ import annotations

import torch

from engine.model.avatar import Avatar
from engine.train.config import TrainConfig


def make_optimizer(av: Avatar, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam with FATE's per-attribute learning rates (supp. §7.2; Δ at FATE's code's 1e-4).

    Groups: sh0, opacity_logit, scale_log, rotation, offset_raw; blendshapes (ΔE, ΔP) and
    delta_vertices (Δ) when learnt; soft_binding (the STAvatar network) with soft binding; the HeadGaS
    features and MLP (appearance "headgas"); roughness, F0 and the environment for a relightable
    avatar (appearance "pbr", :func:`pbr_parameter_groups`); tracking when refined.
    """
    g = av.gaussians
    groups = [
        {"params": [g.sh0], "lr": cfg.lr_color, "name": "sh0"},
        {"params": [g.opacity_logit], "lr": cfg.lr_opacity, "name": "opacity_logit"},
        {"params": [g.scale_log], "lr": cfg.lr_scale, "name": "scale_log"},
        {"params": [g.rotation], "lr": cfg.lr_rotation, "name": "rotation"},
        {"params": [g.offset_raw], "lr": cfg.lr_offset, "name": "offset_raw"},
    ]
    if cfg.learn_blendshapes:
        bs = av.blendshapes
        groups.append({"params": [bs.delta_exprdirs, bs.delta_posedirs], "lr": cfg.lr_blendshapes,
                       "name": "blendshapes"})
        groups.append({"params": [bs.delta_vertices], "lr": cfg.lr_delta_vertices, "name": "delta_vertices"})
    if av.soft_binding is not None:
        groups.append({"params": list(av.soft_binding.net.parameters()), "lr": cfg.lr_soft_binding,
                       "name": "soft_binding"})
    if cfg.appearance == "headgas":
        from engine.model.headgas import BASIS, BIAS

        groups.append({"params": [getattr(g, BASIS), getattr(g, BIAS)], "lr": cfg.headgas.lr_features,
                       "name": "headgas_features"})
        groups.append({"params": list(av.appearance.mlp.parameters()), "lr": cfg.headgas.lr_mlp,
                       "name": "headgas_mlp"})
    if av.shading is not None:
        groups += pbr_parameter_groups(av, cfg)
    if cfg.refine_tracking:
        groups.append({"params": list(av.tracking.parameters()), "lr": cfg.lr_tracking, "name": "tracking"})
    return torch.optim.Adam(groups, eps=1e-15, foreach=True)


def pbr_parameter_groups(av: Avatar, cfg: TrainConfig) -> list[dict]:
    """The relightable appearance's groups (HRAvatar's code's learning rates, constant): roughness,
    F0 and the environment map. The albedo is the colour parameter ``sh0`` (``lr_color``)."""
    g = av.gaussians
    return [{"params": [g.roughness_raw], "lr": cfg.lr_roughness, "name": "roughness_raw"},
            {"params": [g.f0_raw], "lr": cfg.lr_f0, "name": "f0_raw"},
            {"params": list(av.shading.parameters()), "lr": cfg.lr_environment, "name": "environment"}]
