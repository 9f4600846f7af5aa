"""Resumable training checkpoints: model, Adam moments, densification statistics, RNG.

A checkpoint is ``checkpoints/last.safetensors`` (tensors) + ``checkpoints/last.json`` (step,
Gaussian count, generator state, the tensors' sha256) in the avatar folder (docs/FORMATS.md). Tensor
keys: ``param/<name>``, ``adam/<name>/{exp_avg,exp_avg_sq,step}``, ``gaussians.face_idx``,
``gaussians.bary`` and ``densifier/<key>`` for the strategy's state.

The pair is published as one change (:mod:`engine.io.publish`), so a crash never leaves a new
tensor file beside an old ``last.json``; the loader also checks the recorded sha256. A state with
NaN/Inf values is never written (:class:`~engine.errors.DivergedError`): the last good checkpoint
stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from engine.avatar_folder import AvatarFolder
from engine.errors import AvatarError, DivergedError
from engine.io.atomic import write_json, write_safetensors
from engine.io.publish import publish, settle
from engine.io.readers import check_finite_arrays, load_manifest, load_safetensors
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
    if avatar.soft_binding is not None:
        named.update({f"soft_binding.{n}": p for n, p in avatar.soft_binding.net.named_parameters()})
    if isinstance(avatar.appearance, torch.nn.Module):
        named.update({f"appearance.{n}": p for n, p in avatar.appearance.named_parameters()})
    if avatar.shading is not None:
        named.update({f"shading.{n}": p for n, p in avatar.shading.named_parameters()})
    return named


def save_checkpoint(folder: AvatarFolder, state: TrainState) -> Path:
    """Publishes the resumable training state (both files as one change).

    Returns:
        the checkpoint's tensor file path.
    Raises:
        DivergedError: a parameter or Adam moment holds NaN/Inf (nothing is written; the
            previous checkpoint stays).
        OutputError: the folder cannot be written (the previous checkpoint stays).
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
    check_finite_arrays(tensors, f"training state at step {state.step} (not saved; the last good checkpoint "
                        f"{tpath} is kept)", DivergedError)
    with publish(folder.root) as pub:
        write_safetensors(pub.path(folder.CHECKPOINT_TENSORS), tensors)
        write_json(pub.path(folder.CHECKPOINT_JSON), {
            "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_FORMAT_VERSION, "step": state.step,
            "num_gaussians": len(g), "rng": state.generator.get_state().tolist(),
            "tensors_sha256": pub.sha256(folder.CHECKPOINT_TENSORS)})
    return tpath


def load_checkpoint(folder: AvatarFolder, state: TrainState, device: torch.device | str) -> int:
    """Restores a state written by :func:`save_checkpoint` into ``state`` (in place: the Gaussian
    set is resized, parameters, Adam moments, densification statistics and the generator are
    replaced); returns the step.

    Raises:
        AvatarError: missing, corrupt, truncated, mismatched (the pair's sha256), newer-format or
            non-finite checkpoint files (named).
    """
    settle(folder.root)
    tpath, jpath = folder.path(folder.CHECKPOINT_TENSORS), folder.path(folder.CHECKPOINT_JSON)
    meta = load_manifest(jpath, AvatarError, CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION, "checkpoint")
    try:
        n, step, rng = int(meta["num_gaussians"]), int(meta["step"]), meta["rng"]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise AvatarError(f"{jpath}: not a checkpoint written by this engine ({type(exc).__name__}: {exc})") from exc
    tensors = load_safetensors(tpath, AvatarError, str(device), meta.get("tensors_sha256"), "checkpoint")
    check_finite_arrays(tensors, str(tpath), AvatarError)
    for key in ("gaussians.face_idx", "gaussians.bary"):
        if key not in tensors or tensors[key].shape[0] != n:
            raise AvatarError(f"{tpath}: tensor {key} missing or not of {n} rows (last.json's num_gaussians)")
    g = state.avatar.gaussians
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
    try:
        state.generator.set_state(torch.tensor(rng, dtype=torch.uint8))
    except (RuntimeError, TypeError, ValueError) as exc:
        raise AvatarError(f"{jpath}: invalid generator state ({exc})") from exc
    state.step = step
    return state.step
