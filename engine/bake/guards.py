"""Checks around the baking loop: the folder has room before step 1, a non-finite loss stops the
job (the previous maps and the last bake checkpoint stay), and the bake checkpoint is read with
errors that name the file. The loop (:mod:`engine.bake.baker`) calls these; no baking maths here.
"""

from __future__ import annotations

import math
from pathlib import Path

from torch import Tensor, nn

from engine.errors import DivergedError, MapsError
from engine.io.readers import check_finite_arrays, load_safetensors


def check_bake_step(stats: dict, step: int, checkpoint: Path) -> None:
    """Stops baking on a non-finite loss.

    Raises:
        DivergedError: naming the step and what is kept.
    """
    loss = stats.get("loss")
    if loss is not None and math.isfinite(loss):
        return
    kept = f"the last bake checkpoint {checkpoint} is kept" if checkpoint.exists() else "no bake checkpoint exists"
    raise DivergedError(f"baking diverged at step {step + 1} (loss {loss}); the previous maps are untouched and "
                        f"{kept}. Lower lr or check the avatar")


def check_state_finite(tensors: dict, step: int, checkpoint: Path) -> None:
    """Refuses to checkpoint a non-finite BakeNet state (the previous checkpoint stays).

    Raises:
        DivergedError: naming the tensor.
    """
    check_finite_arrays(tensors, f"BakeNet state at step {step} (not saved to {checkpoint})", DivergedError)


def load_bake_checkpoint(path: Path, device: str) -> dict:
    """The tensors of ``maps_checkpoint.safetensors``, checked to be readable and finite.

    Raises:
        MapsError: corrupt, truncated or non-finite, naming the file.
    """
    tensors = load_safetensors(path, MapsError, device, what="bake checkpoint")
    check_finite_arrays(tensors, str(path), MapsError)
    if "step" not in tensors:
        raise MapsError(f"{path}: not a bake checkpoint (no 'step' tensor)")
    return tensors


def estimate_bake_bytes(resolution: int, net: nn.Module, net_input: Tensor) -> int:
    """A generous estimate of what baking writes: the maps (EXR + previews) twice (staging and the
    backup of the previous set), BakeNet's weights and input, and a checkpoint (weights + two Adam
    moments)."""
    maps = resolution * resolution * 11 * 4 * 2
    weights = sum(p.numel() for p in net.parameters()) * 4
    return int(2 * maps + weights * 4 + 2 * net_input.numel() * 4) + (1 << 20)
