"""Provenance is checked: a head model or maps that do not belong to the avatar are refused (an
explicit ``force`` lets experts through), and ``eval --dataset`` matches ground truth by frame
name. (A swapped head model rendered 13.7 dB off with exit 0; eval matched by index and reported
wrong metrics for another split.) Newer format versions: test_inputs.py."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from reliability_kit import run_engine, train_config

from engine.errors import AvatarError, DatasetError


def _other_head(src, dst):
    """The same head model with its template moved by 2 mm: another model, same shapes."""
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["v_template"] = arrays["v_template"] + np.float32(0.002)
    np.savez(dst, **arrays)


def test_a_swapped_head_model_is_refused_unless_forced(avatar_copy):
    _other_head(avatar_copy / "head_model.npz", avatar_copy / "head_model.npz")
    rc, events, stderr = run_engine("render", "--avatar", avatar_copy, "--device", "cpu")
    assert rc == 1, stderr
    assert events[-1]["error_type"] == "AvatarError"
    assert "head_model.npz: head model does not match its manifest" in events[-1]["message"]
    rc, events, stderr = run_engine("render", "--avatar", avatar_copy, "--device", "cpu", "--force", "true")
    assert rc == 0, stderr
    assert events[-1]["type"] == "done" and events[-1]["frames"] == 2
    assert "is not the head model this avatar was trained with" in stderr and "force" in stderr


def test_an_older_avatar_without_file_hashes_still_checks_its_head_model(avatar_copy):
    from engine.avatar_folder import load_avatar

    meta = json.loads((avatar_copy / "avatar.json").read_text())
    del meta["files"]  # as written before avatar.json recorded every file's sha256
    (avatar_copy / "avatar.json").write_text(json.dumps(meta))
    load_avatar(avatar_copy)
    _other_head(avatar_copy / "head_model.npz", avatar_copy / "head_model.npz")
    with pytest.raises(AvatarError, match="is not the head model this avatar was trained with"):
        load_avatar(avatar_copy)
    assert len(load_avatar(avatar_copy, force=True).avatar.gaussians) == meta["num_gaussians"]


def test_maps_baked_from_another_state_of_the_avatar_are_refused_unless_forced(avatar_copy, tiny_dataset, head_npz):
    """Re-trained after baking: the maps no longer belong to the Gaussians."""
    from engine.train.trainer import train

    train(train_config(tiny_dataset, avatar_copy, head_npz, seed=9))
    rc, events, _ = run_engine("render", "--avatar", avatar_copy, "--from_maps", "true", "--device", "cpu")
    assert rc == 1 and events[-1]["error_type"] == "MapsError"
    assert "maps were baked from other Gaussians" in events[-1]["message"]
    rc, events, stderr = run_engine("render", "--avatar", avatar_copy, "--from_maps", "true", "--device", "cpu",
                                    "--force", "true")
    assert rc == 0, stderr


def _reordered_dataset(src, dst):
    """The same frames with 00002 moved from the train to the test split: every frame keeps its
    name, but frames 2..5 change position in the sequence."""
    shutil.copytree(src, dst)
    train_json, test_json = dst / "transforms_train.json", dst / "transforms_test.json"
    tr, te = json.loads(train_json.read_text()), json.loads(test_json.read_text())
    moved = [f for f in tr["frames"] if f["file_path"].endswith("00002.png")]
    tr["frames"] = [f for f in tr["frames"] if f not in moved]
    te["frames"] = moved + te["frames"]
    train_json.write_text(json.dumps(tr))
    test_json.write_text(json.dumps(te))


def test_eval_matches_ground_truth_by_frame_name(tiny_avatar, tiny_dataset, tmp_path):
    from engine.data import load_sequence
    from engine.evaluate.config import EvalConfig
    from engine.evaluate.evaluate import run_eval

    ds2 = tmp_path / "reordered"
    _reordered_dataset(tiny_dataset, ds2)
    a, b = load_sequence(tiny_dataset), load_sequence(ds2)
    assert set(a.frame_names) == set(b.frame_names) and a.frame_names != b.frame_names
    # matching by position would pair different images (what the old eval did)
    assert float((a.load_image(2)[0] - b.load_image(2)[0]).abs().max()) > 0.05
    own = run_eval(EvalConfig(avatar=str(tiny_avatar), split="all", device="cpu", out=str(tmp_path / "a.json")))
    other = run_eval(EvalConfig(avatar=str(tiny_avatar), dataset=str(ds2), split="all", device="cpu",
                                out=str(tmp_path / "b.json")))
    assert other["psnr"] == pytest.approx(own["psnr"], abs=1e-6)  # the same pairs of images
    assert other["ssim"] == pytest.approx(own["ssim"], abs=1e-6)


def test_eval_on_a_dataset_without_the_avatars_frames_is_refused(tiny_avatar, tiny_dataset, tmp_path):
    from engine.evaluate.config import EvalConfig
    from engine.evaluate.evaluate import run_eval

    ds2 = tmp_path / "fewer"
    shutil.copytree(tiny_dataset, ds2)
    test_json = ds2 / "transforms_test.json"
    te = json.loads(test_json.read_text())
    te["frames"] = te["frames"][:1]
    test_json.write_text(json.dumps(te))
    with pytest.raises(DatasetError, match=r"1 of the avatar's 8 frames are not in this dataset \(first: \['00007'\]"):
        run_eval(EvalConfig(avatar=str(tiny_avatar), dataset=str(ds2), split="test", device="cpu",
                            out=str(tmp_path / "m.json")))
