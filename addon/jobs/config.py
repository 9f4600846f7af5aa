"""Job configurations the add-on sends to the engine, and the checks done before starting one.

Standard library only. The keys are the engine's config fields (``engine/train.py: TrainConfig``
— JSON loading there rejects unknown keys); keep the two in step.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from ..errors import SetupError

__all__ = ["DEMO_HEAD", "resolve_head_model", "check_dataset_dir", "check_avatar_dir",
           "train_config", "bake_config", "FLAME_DOWNLOAD_URL"]

DEMO_HEAD = "demo"
"""``head_model`` value of the engine's procedural demo head (not FLAME), always available."""
FLAME_DOWNLOAD_URL = "https://flame.is.tue.mpg.de"
_MODEL_PATTERNS = ("generic_model.pkl", "flame2023*.pkl", "FLAME*.pkl", "*.npz")


def resolve_head_model(flame_dir: str) -> str:
    """The engine's ``head_model`` for the FLAME folder set in the preferences.

    Args:
        flame_dir: folder with the FLAME model (``generic_model.pkl``, ``flame2023*.pkl`` or an
            ``.npz``) and ``head_template_mesh.obj``; empty = the demo head.
    Returns:
        ``"demo"`` or the folder path.
    Raises:
        SetupError: the folder is missing, or holds no model or no texture-space .obj; the
            message says what to put where.
    """
    if not flame_dir or not flame_dir.strip():
        return DEMO_HEAD
    folder = Path(os.path.expanduser(flame_dir.strip()))
    if not folder.is_dir():
        raise SetupError(f"FLAME folder '{folder}' does not exist. Download FLAME 2020 or 2023 from "
                         f"{FLAME_DOWNLOAD_URL} (free registration), unpack it and pick that folder in "
                         "Preferences > Add-ons > FATE Avatar > FLAME folder — or clear the field to use "
                         "the demo head.")
    models = [p for pat in _MODEL_PATTERNS for p in glob.glob(str(folder / pat))]
    if not models:
        raise SetupError(f"FLAME folder '{folder}' has no model: expected generic_model.pkl (FLAME 2020), "
                         f"flame2023*.pkl or a FLAME .npz. Download it from {FLAME_DOWNLOAD_URL} and put it "
                         "there, or clear the field to use the demo head.")
    if not (folder / "head_template_mesh.obj").is_file():
        raise SetupError(f"FLAME folder '{folder}' has no head_template_mesh.obj (FLAME texture space, "
                         f"from the FLAME texture-space download at {FLAME_DOWNLOAD_URL}): put it next to "
                         "the model.")
    return str(folder)


def check_dataset_dir(dataset_dir: str) -> Path:
    """Checks that a folder looks like a tracked dataset (INSTA or IMavatar layout).

    Raises:
        SetupError: not set, missing, or neither transforms_train.json nor flame_params.json inside.
    """
    if not dataset_dir:
        raise SetupError("Set the dataset folder first (FATE sidebar > 1. Dataset): a tracked video in "
                         "the INSTA layout (transforms_train.json, images/, flame/) or IMavatar layout "
                         "(flame_params.json).")
    folder = Path(os.path.expanduser(dataset_dir))
    if not folder.is_dir():
        raise SetupError(f"Dataset folder '{folder}' does not exist.")
    if not ((folder / "transforms_train.json").is_file() or (folder / "flame_params.json").is_file()
            or any(folder.glob("*/flame_params.json"))):
        raise SetupError(f"Dataset folder '{folder}' has neither transforms_train.json (INSTA layout) nor "
                         "flame_params.json (IMavatar layout); see docs/FORMATS.md.")
    return folder


def check_avatar_dir(avatar_dir: str, *, must_exist: bool) -> Path:
    """Checks the avatar (output) folder.

    Args:
        avatar_dir: the folder.
        must_exist: it must hold a trained avatar (avatar.json) — for bake and import.
    Raises:
        SetupError: not set, or (``must_exist``) no avatar.json inside.
    """
    if not avatar_dir:
        raise SetupError("Set the avatar folder first (FATE sidebar > 1. Dataset > Avatar folder).")
    folder = Path(os.path.expanduser(avatar_dir))
    if must_exist and not (folder / "avatar.json").is_file():
        raise SetupError(f"'{folder}' holds no trained avatar (no avatar.json): train one first.")
    return folder


def train_config(dataset: str | Path, output: str | Path, head_model: str, *, device: str = "auto",
                 steps: int | None = None, resume: bool = False, extra: dict | None = None) -> dict:
    """The ``train`` job configuration (engine ``TrainConfig`` keys).

    Args:
        dataset: tracked dataset folder.
        output: avatar folder to write.
        head_model: ``"demo"`` or a FLAME folder (:func:`resolve_head_model`).
        device: "auto", "cuda" or "cpu".
        steps: optimisation steps (None = the engine's default).
        resume: continue from ``output/checkpoints/last.*``.
        extra: more TrainConfig fields, passed through.
    """
    cfg = {"dataset": str(dataset), "output": str(output), "head_model": head_model,
           "device": device.lower(), "resume": bool(resume)}
    if steps:
        cfg["steps"] = int(steps)
    cfg.update(extra or {})
    return cfg


def bake_config(avatar: str | Path, *, device: str = "auto", resume: bool = False,
                resolution: int | None = None, steps: int | None = None, appearance_only: bool = False,
                extra: dict | None = None) -> dict:
    """The ``bake`` job configuration (engine ``BakeConfig`` keys).

    Args:
        avatar: trained avatar folder; the maps go to ``avatar/maps``.
        device: "auto", "cuda" or "cpu".
        resume: continue from ``avatar/maps_checkpoint.safetensors``.
        resolution: map size in texels (None = the engine's default, 512).
        steps: BakeNet image-objective steps (None = the engine's default).
        appearance_only: bake colour + opacity only (FATE supp. §9).
        extra: more BakeConfig fields, passed through.
    """
    cfg = {"avatar": str(avatar), "device": device.lower(), "resume": bool(resume),
           "appearance_only": bool(appearance_only)}
    if resolution:
        cfg["resolution"] = int(resolution)
    if steps is not None:
        cfg["steps"] = int(steps)
    cfg.update(extra or {})
    return cfg
