"""NaN and nonsense no longer pass silently: a non-finite loss stops training with a clear error and
keeps the last good checkpoint; a NaN head model, NaN background or cameras that see none of the
head are refused before step 1 (they trained to an all-NaN avatar, or on white frames, with
exit 0)."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from reliability_kit import leftovers, train_config

from engine.errors import ConfigError, DatasetError, DivergedError, HeadModelError


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, tiny_dataset, head_npz,
                                                                            monkeypatch):
    """A planted fault: the scale-ratio term turns NaN at the 4th step."""
    from engine.train import losses
    from engine.train.trainer import train

    real, calls = losses.scale_ratio_loss, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        value = real(*args, **kwargs)
        return value * float("nan") if len(calls) == 4 else value

    monkeypatch.setattr(losses, "scale_ratio_loss", poisoned)
    out = tmp_path / "avatar"
    with pytest.raises(DivergedError) as exc:
        train(train_config(tiny_dataset, out, head_npz, steps=10, checkpoint_every=2))
    msg = str(exc.value)
    assert "diverged at step 4" in msg and "loss is nan" in msg and str(out / "checkpoints" / "last.safetensors") in msg
    assert json.loads((out / "checkpoints" / "last.json").read_text())["step"] == 2
    assert not (out / "avatar.json").exists() and leftovers(out) == []
    monkeypatch.undo()  # the kept checkpoint resumes to a finite avatar
    train(train_config(tiny_dataset, out, head_npz, steps=6, checkpoint_every=2, resume=True))
    from engine.avatar_folder import load_avatar
    assert torch.isfinite(load_avatar(out).avatar.gaussians.sh0).all()


def test_a_nan_avatar_is_never_published(avatar_copy, tiny_dataset):
    from engine.avatar_folder import AvatarFolder, load_avatar
    from engine.data import load_sequence
    from engine.jobs.config import from_dict
    from engine.train.config import TrainConfig

    loaded = load_avatar(avatar_copy)
    loaded.avatar.gaussians.opacity_logit.data[5] = float("nan")
    before = (avatar_copy / "gaussians.safetensors").read_bytes()
    with pytest.raises(DivergedError, match="opacity"):
        AvatarFolder(avatar_copy).save(loaded.avatar, load_sequence(tiny_dataset),
                                       from_dict(TrainConfig, loaded.meta["config"]))
    assert (avatar_copy / "gaussians.safetensors").read_bytes() == before and leftovers(avatar_copy) == []


def test_a_nan_head_model_is_refused_before_training(tmp_path, tiny_dataset, head_npz):
    from engine.train.trainer import train

    bad = tmp_path / "head.npz"
    with np.load(head_npz) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["v_template"][10, 1] = np.nan
    np.savez(bad, **arrays)
    with pytest.raises(HeadModelError, match=rf"{bad}: .*v_template has 1 NaN"):
        train(train_config(tiny_dataset, tmp_path / "avatar", bad))
    assert not (tmp_path / "avatar" / "checkpoints").exists()


def test_a_nan_background_is_a_config_error():
    from engine.train.config import TrainConfig

    with pytest.raises(ConfigError, match="background must be in"):
        TrainConfig(background=(1.0, float("nan"), 1.0))


def test_cameras_that_see_none_of_the_head_are_refused(tmp_path, tiny_dataset, head_npz):
    """Two frames' cameras are moved 100 m to the side: they would train on pure background."""
    from engine.train.trainer import train

    ds = tmp_path / "dataset"
    shutil.copytree(tiny_dataset, ds)
    tj = ds / "transforms_train.json"
    data = json.loads(tj.read_text())
    for k in (1, 3):
        data["frames"][k]["transform_matrix"][0][3] += 100.0
    tj.write_text(json.dumps(data))
    names = [data["frames"][k]["file_path"].split("/")[-1][:-4] for k in (1, 3)]
    with pytest.raises(DatasetError, match=re.escape(f"camera of 2 of 8 frames sees none of the head (first: {names}")):
        train(train_config(ds, tmp_path / "avatar", head_npz))
    assert not (tmp_path / "avatar" / "checkpoints").exists()
