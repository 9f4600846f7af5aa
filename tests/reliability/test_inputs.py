"""Corrupt, truncated and NaN inputs, for each file the engine reads: every one is a FateError
whose message names the file (never a raw SafetensorError, BadZipFile or an all-NaN avatar).

Each case copies the tiny dataset or avatar, damages one file and calls the engine's reader of
it (the job would call the same reader before its first step). One case runs through the CLI to
show the error arrives as an ``error`` event with exit code 1.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from reliability_kit import run_engine

from engine.errors import (
    AvatarError,
    ConfigError,
    DatasetError,
    FateError,
    HeadModelError,
    MapsError,
)


# ---------------------------------------------------------------------- damage
def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garbage(path: Path) -> None:
    path.write_bytes(b"\x00not what you think\xff" * 7)


def npz_with_nan(path: Path, key: str) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    a = arrays[key].astype(np.float32).copy()
    a.reshape(-1)[0] = np.nan
    arrays[key] = a
    np.savez(path, **arrays)


def json_edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


# ---------------------------------------------------------------------- readers
def read_head(root: Path):
    from engine.model.head_model import load_head_model
    return load_head_model(root / "demo_head.npz")


def read_dataset(root: Path):
    """What training reads of a dataset before step 1: the sequence and every training frame."""
    from engine.data import load_sequence

    seq = load_sequence(root)
    for i in range(len(seq)):
        seq.load_image(i)
    return seq


def read_avatar(root: Path, force: bool = False):
    from engine.avatar_folder import load_avatar
    return load_avatar(root, force=force)


def read_checkpoint(root: Path):
    """What ``train --resume`` reads: the checkpoint, into the state of the avatar's own config."""
    import dataclasses

    from engine.jobs.config import from_dict
    from engine.model.resolve import resolve_head_model
    from engine.train.checkpoint import load_checkpoint
    from engine.train.config import TrainConfig
    from engine.train.trainer import Trainer

    cfg = from_dict(TrainConfig, json.loads((root / "avatar.json").read_text())["config"])
    trainer = Trainer(dataclasses.replace(cfg, output=str(root)), resolve_head_model(cfg.head_model), None, None)
    return load_checkpoint(trainer.folder, trainer.state, "cpu")


def read_maps(root: Path):
    from engine.maps import load_maps_into

    loaded = read_avatar(root)
    return load_maps_into(loaded.avatar.gaussians, root / "maps", loaded.avatar.head)


def read_bake_checkpoint(root: Path):
    from engine.bake.guards import load_bake_checkpoint
    return load_bake_checkpoint(root / "maps_checkpoint.safetensors", "cpu")


# (case id, which copy, file, damage, reader, error, text in the message)
def _exr(name, fn):
    def damage(path: Path) -> None:
        from engine.io.images import read_exr, write_exr
        arr, _ = read_exr(path)
        write_exr(path, fn(np.array(arr)).astype(np.float32))
    return damage


def _nan_first(a):
    a.reshape(-1)[0] = np.nan
    return a


CASES = [
    # head model (.npz)
    ("head-truncated", "head", "demo_head.npz", truncate, read_head, HeadModelError, "demo_head.npz"),
    ("head-garbage", "head", "demo_head.npz", garbage, read_head, HeadModelError, "demo_head.npz"),
    ("head-nan-template", "head", "demo_head.npz", lambda p: npz_with_nan(p, "v_template"), read_head,
     HeadModelError, "v_template has 1 NaN"),
    ("head-nan-exprdirs", "head", "demo_head.npz", lambda p: npz_with_nan(p, "exprdirs"), read_head,
     HeadModelError, "exprdirs has 1 NaN"),
    # dataset (INSTA layout)
    ("transforms-truncated", "dataset", "transforms_train.json", truncate, read_dataset, DatasetError,
     "transforms_train.json"),
    ("transforms-nan-matrix", "dataset", "transforms_train.json",
     lambda p: json_edit(p, lambda d: d["frames"][0]["transform_matrix"][0].__setitem__(3, float("nan"))),
     read_dataset, DatasetError, "NaN"),
    ("transforms-nan-focal", "dataset", "transforms_train.json",
     lambda p: json_edit(p, lambda d: d.update(fl_x=float("nan"))), read_dataset, DatasetError, "fl_x"),
    ("transforms-newer-format", "dataset", "transforms_train.json",
     lambda p: json_edit(p, lambda d: d.update(format_version=99)), read_dataset, DatasetError, "format_version 99"),
    ("flame-exp-garbage", "dataset", "flame/exp/00000.txt", lambda p: p.write_text("1.0 zwei 3.0"), read_dataset,
     DatasetError, "00000.txt"),
    ("flame-exp-nan", "dataset", "flame/exp/00000.txt", lambda p: p.write_text("nan\n" * 3), read_dataset,
     DatasetError, "00000.txt"),
    ("flame-jaw-truncated", "dataset", "flame/jaw/00001.txt", truncate, read_dataset, DatasetError, "00001.txt"),
    ("image-truncated", "dataset", "images/00002.png", truncate, read_dataset, DatasetError, "00002.png"),
    ("image-garbage", "dataset", "images/00002.png", garbage, read_dataset, DatasetError, "00002.png"),
    ("mask-truncated", "dataset", "alpha/00003.png", truncate, read_dataset, DatasetError, "00003.png"),
    # avatar folder
    ("avatar-json-truncated", "avatar", "avatar.json", truncate, read_avatar, AvatarError, "avatar.json"),
    ("avatar-json-newer-format", "avatar", "avatar.json", lambda p: json_edit(p, lambda d: d.update(format_version=2)),
     read_avatar, AvatarError, "format_version 2 is newer"),
    ("gaussians-truncated", "avatar", "gaussians.safetensors", truncate, lambda r: read_avatar(r, force=True),
     AvatarError, "gaussians.safetensors"),
    ("gaussians-garbage", "avatar", "gaussians.safetensors", garbage, lambda r: read_avatar(r, force=True),
     AvatarError, "gaussians.safetensors"),
    ("gaussians-changed", "avatar", "gaussians.safetensors", truncate, read_avatar, AvatarError,
     "gaussians.safetensors: Gaussians does not match its manifest"),
    ("blendshapes-truncated", "avatar", "blendshapes.safetensors", truncate, lambda r: read_avatar(r, force=True),
     AvatarError, "blendshapes.safetensors"),
    ("head-model-truncated", "avatar", "head_model.npz", truncate, lambda r: read_avatar(r, force=True),
     AvatarError, "head_model.npz"),
    ("tracking-truncated", "avatar", "tracking.npz", truncate, lambda r: read_avatar(r, force=True), AvatarError,
     "tracking.npz"),
    ("tracking-nan", "avatar", "tracking.npz", lambda p: npz_with_nan(p, "viewmat"),
     lambda r: read_avatar(r, force=True), AvatarError, "'viewmat' has 1 NaN"),
    # checkpoint
    ("checkpoint-json-truncated", "avatar", "checkpoints/last.json", truncate, read_checkpoint, AvatarError,
     "last.json"),
    ("checkpoint-json-newer-format", "avatar", "checkpoints/last.json",
     lambda p: json_edit(p, lambda d: d.update(format_version=2)), read_checkpoint, AvatarError, "format_version 2"),
    ("checkpoint-tensors-truncated", "avatar", "checkpoints/last.safetensors", truncate, read_checkpoint, AvatarError,
     "last.safetensors"),
    # maps
    ("maps-json-truncated", "avatar", "maps/maps.json", truncate, read_maps, MapsError, "maps.json"),
    ("maps-json-newer-format", "avatar", "maps/maps.json", lambda p: json_edit(p, lambda d: d.update(format_version=2)),
     read_maps, MapsError, "format_version 2 is newer"),
    ("color-exr-truncated", "avatar", "maps/color.exr", truncate, read_maps, MapsError, "color.exr"),
    ("scale-exr-nan", "avatar", "maps/scale.exr", _exr("scale", _nan_first), read_maps, MapsError, "scale.exr"),
    ("scale-exr-negative", "avatar", "maps/scale.exr", _exr("scale", lambda a: -a), read_maps, MapsError,
     "scale map must be > 0"),
    ("offset-exr-one-meter", "avatar", "maps/offset.exr", _exr("offset", lambda a: a * 0 + 1.0), read_maps, MapsError,
     "offset map must be within"),
    ("opacity-exr-two", "avatar", "maps/opacity.exr", _exr("opacity", lambda a: a * 0 + 2.0), read_maps, MapsError,
     "opacity map must be in"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_damaged_input_is_a_clear_error_naming_the_file(case, tmp_path, tiny_dataset, tiny_avatar, head_npz):
    name, which, rel, damage, reader, error, text = case
    src = {"dataset": tiny_dataset, "avatar": tiny_avatar, "head": head_npz.parent}[which]
    root = tmp_path / which
    shutil.copytree(src, root)
    reader(root)  # the undamaged copy reads fine
    damage(root / rel)
    with pytest.raises(error) as exc:
        reader(root)
    assert text in str(exc.value), str(exc.value)
    assert isinstance(exc.value, FateError)


def test_nan_in_a_bake_checkpoint_is_refused(avatar_copy):
    import torch
    from safetensors.torch import save_file

    path = avatar_copy / "maps_checkpoint.safetensors"
    save_file({"step": torch.tensor(3), "net/w": torch.tensor([1.0, float("nan")])}, str(path))
    with pytest.raises(MapsError, match="maps_checkpoint.safetensors.*'net/w' has 1 NaN"):
        read_bake_checkpoint(avatar_copy)
    truncate(path)
    with pytest.raises(MapsError, match="maps_checkpoint.safetensors.*corrupt or truncated"):
        read_bake_checkpoint(avatar_copy)


def test_truncated_vgg_weights_are_a_config_error(tmp_path):
    import torch
    from safetensors.torch import save_file

    from engine.vgg import load_vgg16_state_dict

    path = tmp_path / "vgg.safetensors"
    save_file({"features.0.weight": torch.full((64, 3, 3, 3), float("nan")), "features.0.bias": torch.zeros(64)},
              str(path))
    with pytest.raises(ConfigError, match="vgg.safetensors.*NaN"):
        load_vgg16_state_dict(path, last_layer=0)
    truncate(path)
    with pytest.raises(ConfigError, match="vgg.safetensors"):
        load_vgg16_state_dict(path, last_layer=0)


def test_a_truncated_avatar_file_is_an_error_event_on_the_command_line(avatar_copy):
    """The add-on's view: ``error`` event with the message naming the file, exit code 1, no
    traceback (it was a raw SafetensorError before)."""
    truncate(avatar_copy / "gaussians.safetensors")
    rc, events, stderr = run_engine("render", "--avatar", avatar_copy, "--device", "cpu")
    assert rc == 1, stderr
    last = events[-1]
    assert last["type"] == "error" and last["error_type"] == "AvatarError" and last["traceback"] == ""
    assert "gaussians.safetensors" in last["message"]
    assert not (avatar_copy / "renders").exists() or not any((avatar_copy / "renders").rglob("*.png"))
