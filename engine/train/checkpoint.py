"""Resumable training checkpoints: model, Adam moments, densification statistics, RNG.

A checkpoint is ``checkpoints/last.safetensors`` (tensors) + ``checkpoints/last.json`` (step,
Gaussian count, generator state) in the avatar folder (docs/FORMATS.md). Tensor keys:
``param/<name>``, ``adam/<name>/{exp_avg,exp_avg_sq,step}``, ``gaussians.face_idx``,
``gaussians.bary`` and ``densifier/<key>`` for the strategy's state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from engine.avatar_folder import AvatarFolder
from engine.errors import AvatarError
from engine.io.atomic import write_json, write_safetensors
from engine.model.avatar import Avatar
from engine.train.densify.ops import reindex

CHECKPOINT_FORMAT = "fate-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
_ADAM_KEYS = ("exp_avg", "exp_avg_sq", "step")


@dataclass
class TrainState:
    """Everything a resumed run needs, as the training loop holds it.

    Attributes:
        step: optimisation steps done.
        avatar: the model being trained.
        optimizer: its Adam (moments follow densification).
        densify_state: the densification strategy's statistics (name → [N] tensor).
        generator: the CPU generator of densification draws.
    """

    step: int
    avatar: Avatar
    optimizer: torch.optim.Optimizer
    densify_state: dict[str, Tensor]
    generator: torch.Generator


def has_checkpoint(folder: AvatarFolder) -> bool:
    """Both checkpoint files exist."""
    return folder.path(folder.CHECKPOINT_TENSORS).exists() and folder.path(folder.CHECKPOINT_JSON).exists()


def _named_parameters(avatar: Avatar) -> dict[str, torch.nn.Parameter]:
    named = {f"gaussians.{n}": getattr(avatar.gaussians, n) for n in avatar.gaussians.parameter_names()}
    named.update({f"blendshapes.{n}": p for n, p in avatar.blendshapes.named_parameters()})
    named.update({f"tracking.{n}": p for n, p in avatar.tracking.named_parameters()})
    if avatar.appearance is not None:
        named.update({f"appearance.{n}": p for n, p in avatar.appearance.named_parameters()})
    return named


def save_checkpoint(folder: AvatarFolder, state: TrainState) -> Path:
    """Writes the resumable training state.

    Returns:
        the checkpoint's tensor file path.
    """
    tensors: dict[str, Tensor] = {}
    for name, p in _named_parameters(state.avatar).items():
        tensors[f"param/{name}"] = p.data
        adam = state.optimizer.state.get(p, {})
        for key in _ADAM_KEYS:
            if key in adam:
                v = adam[key]
                tensors[f"adam/{name}/{key}"] = v if torch.is_tensor(v) else torch.tensor(float(v))
    g = state.avatar.gaussians
    tensors["gaussians.face_idx"] = g.face_idx
    tensors["gaussians.bary"] = g.bary
    for k, v in state.densify_state.items():
        tensors[f"densifier/{k}"] = v
    tpath = folder.path(folder.CHECKPOINT_TENSORS)
    write_safetensors(tpath, tensors)
    write_json(folder.path(folder.CHECKPOINT_JSON), {
        "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_FORMAT_VERSION, "step": state.step,
        "num_gaussians": len(g), "rng": state.generator.get_state().tolist()})
    return tpath


def load_checkpoint(folder: AvatarFolder, state: TrainState, device: torch.device | str) -> int:
    """Restores a state written by :func:`save_checkpoint` into ``state`` (in place: the Gaussian
    set is resized, parameters, Adam moments, densification statistics and the generator are
    replaced); returns the step.

    Raises:
        AvatarError: missing or inconsistent checkpoint files (named).
    """
    from safetensors.torch import load_file

    tpath, jpath = folder.path(folder.CHECKPOINT_TENSORS), folder.path(folder.CHECKPOINT_JSON)
    try:
        meta = json.loads(jpath.read_text())
        tensors = load_file(str(tpath), device=str(device))
    except (OSError, ValueError) as exc:
        raise AvatarError(f"cannot read checkpoint {tpath}: {exc}") from exc
    g = state.avatar.gaussians
    n = int(meta["num_gaussians"])
    # resize the Gaussian set first (its parameters are replaced), then copy values
    src = torch.zeros(n, dtype=torch.long, device=device)
    reindex(g, state.optimizer, src, tensors["gaussians.face_idx"], tensors["gaussians.bary"],
            torch.ones(n, dtype=torch.bool, device=device))
    for name, p in _named_parameters(state.avatar).items():
        key = f"param/{name}"
        if key not in tensors or tensors[key].shape != p.shape:
            raise AvatarError(f"{tpath}: tensor {key} missing or of shape "
                              f"{tuple(tensors[key].shape) if key in tensors else None}, expected {tuple(p.shape)}")
        p.data.copy_(tensors[key])
        if f"adam/{name}/exp_avg" in tensors:
            state.optimizer.state[p] = {
                "step": tensors[f"adam/{name}/step"].cpu(),
                "exp_avg": tensors[f"adam/{name}/exp_avg"].clone(),
                "exp_avg_sq": tensors[f"adam/{name}/exp_avg_sq"].clone(),
            }
    state.densify_state.clear()
    state.densify_state.update({k.split("/", 1)[1]: v.clone() for k, v in tensors.items()
                                if k.startswith("densifier/")})
    state.generator.set_state(torch.tensor(meta["rng"], dtype=torch.uint8))
    state.step = int(meta["step"])
    return state.step
