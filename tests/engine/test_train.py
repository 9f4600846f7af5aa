"""Training acceptance (issue 2): quality on held-out frames, the avatar folder, the Blender
export, resume and cancel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.model.resolve import resolve_head_model
from engine.train.config import TrainConfig
from engine.train.densify.config import DensifyConfig
from engine.train.trainer import Trainer, train


def test_heldout_psnr_at_least_28db(trained_metrics):
    # Acceptance floor of issue 2 (CPU-sized run, 128², last 20 % of frames held out).
    assert trained_metrics["frames"] == 20
    assert trained_metrics["psnr"] >= 28.0, trained_metrics
    assert trained_metrics["ssim"] >= 0.93, trained_metrics


def test_avatar_folder_contents(trained_avatar):
    meta = json.loads((trained_avatar / "avatar.json").read_text())
    assert meta["format"] == "fate-avatar" and meta["format_version"] == 1
    assert meta["head_model"]["name"].startswith("FATE demo head")
    assert meta["config"]["steps"] == 1000 and meta["metrics"]["steps"] == 1000
    for name in ("gaussians.safetensors", "blendshapes.safetensors", "head_model.npz",
                 "tracking.npz", "blender/head.npz", "blender/bindings.npz", "checkpoints/last.safetensors"):
        assert (trained_avatar / name).exists(), name
    # sampling densification added Gaussians: 4 rounds of 1000 minus opacity pruning
    n0 = meta["metrics"]["num_gaussians"]
    assert n0 > 10_000


def test_blender_export_matches_engine_deformation(trained_avatar):
    """blender/head.npz (learnt deltas folded in) reproduces the engine's vertices through plain
    numpy linear blendshapes at zero pose."""
    from engine.avatar_folder import load_avatar

    loaded = load_avatar(trained_avatar)
    av = loaded.avatar
    with np.load(trained_avatar / "blender" / "head.npz", allow_pickle=False) as z:
        v_template, exprdirs = z["v_template"], z["exprdirs"]
        n_faces = len(z["faces"])
    assert n_faces == len(av.head.faces_all)
    rng = np.random.default_rng(0)
    expr = rng.normal(size=exprdirs.shape[-1]).astype(np.float32)
    shape = torch.as_tensor(loaded.tracking["shape"])[None]
    verts, _ = av.posed_vertices(shape, torch.as_tensor(expr)[None], torch.zeros(1, av.head.num_joints * 3), None)
    numpy_verts = v_template + exprdirs @ expr
    np.testing.assert_allclose(numpy_verts, verts[0].detach().numpy(), atol=1e-6)  # float32 sums


def test_blender_export_has_the_trained_gaussians_and_the_expression_names(trained_avatar):
    """blender/gaussians.npz = the Gaussians' activated attributes (what Blender renders before a
    bake); blender/head.npz names the demo head's expressions."""
    from engine.avatar_folder import load_avatar
    from engine.model.demo_head import DEMO_EXPRESSION_NAMES

    g = load_avatar(trained_avatar).avatar.gaussians
    with np.load(trained_avatar / "blender" / "gaussians.npz", allow_pickle=False) as z:
        saved = {k: z[k] for k in z.files}
    assert set(saved) == {"color", "opacity", "scale", "rotation", "offset"}
    for name, value in g.activated().items():
        np.testing.assert_array_equal(saved[name], value.detach().numpy().astype(np.float32))
    with np.load(trained_avatar / "blender" / "head.npz", allow_pickle=False) as z:
        names = z["expression_names"].tolist()
        assert names == DEMO_EXPRESSION_NAMES[:z["exprdirs"].shape[2]]


def _tiny_cfg(dataset, out, steps, **kw):
    return TrainConfig(dataset=str(dataset), output=str(out), steps=steps, uv_resolution=32,
                       preview_every=0, checkpoint_every=5, device="cpu",
                       densify=DensifyConfig(start=4, every=4, count=50, prune_every=4, reset_every=8), **kw)


def test_resume_continues_from_checkpoint(tmp_path, demo_dataset):
    train(_tiny_cfg(demo_dataset, tmp_path, 10))
    ck = json.loads((tmp_path / "checkpoints" / "last.json").read_text())
    assert ck["step"] == 10
    cfg = _tiny_cfg(demo_dataset, tmp_path, 15, resume=True)
    tr = Trainer(cfg, resolve_head_model("demo"))
    from engine.avatar_folder import AvatarFolder
    from engine.train.checkpoint import load_checkpoint
    assert load_checkpoint(AvatarFolder(tmp_path), tr.state, tr.device) == 10
    assert len(tr.avatar.gaussians) == ck["num_gaussians"]
    tr.step = 10
    tr.run()
    meta = json.loads((tmp_path / "avatar.json").read_text())
    assert meta["metrics"]["steps"] == 15


def test_resumed_training_matches_an_uninterrupted_run(tmp_path, demo_dataset):
    """Frames, densification and optimiser state all continue exactly: 6 + 6 steps == 12 steps."""
    from safetensors.torch import load_file

    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(_tiny_cfg(demo_dataset, whole, 12, threads=1))
    train(_tiny_cfg(demo_dataset, parts, 6, threads=1))
    train(_tiny_cfg(demo_dataset, parts, 12, threads=1, resume=True))
    a = load_file(str(whole / "gaussians.safetensors"))
    b = load_file(str(parts / "gaussians.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=1e-5, msg=key)


def test_frame_schedule_is_a_permutation_per_epoch_and_depends_only_on_the_step():
    from engine.data.frames import FrameSchedule

    frames = [3, 5, 7, 11, 13]
    s = FrameSchedule(frames, seed=0)
    seq = [s(k) for k in range(15)]
    for e in range(3):
        assert sorted(seq[5 * e:5 * e + 5]) == frames
    assert seq[:5] != seq[5:10]  # a new permutation each epoch
    assert [FrameSchedule(frames, seed=0)(k) for k in (12, 7, 3)] == [seq[12], seq[7], seq[3]]


def test_cancel_writes_checkpoint_and_raises(tmp_path, demo_dataset):
    from engine.errors import CancelledError

    class Token:
        checkpoint = None

        def __init__(self):
            self.calls = 0

        @property
        def requested(self):
            self.calls += 1
            return self.calls > 3

    token = Token()
    with pytest.raises(CancelledError) as exc:
        train(_tiny_cfg(demo_dataset, tmp_path, 50), cancel=token)
    assert token.checkpoint and exc.value.checkpoint == token.checkpoint
    assert json.loads((tmp_path / "checkpoints" / "last.json").read_text())["step"] == 3


def test_unknown_config_key_is_rejected(tmp_path):
    from engine.errors import ConfigError
    from engine.jobs.config import load_json

    p = tmp_path / "job.json"
    p.write_text(json.dumps({"steps": 5, "learning_rate": 1}))
    with pytest.raises(ConfigError, match="learning_rate"):
        load_json(TrainConfig, p)


def test_cli_model_info_demo(capsys):
    from engine.__main__ import main

    assert main(["model-info", "demo"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"].startswith("FATE demo head") and "not FLAME" in info["name"]
    assert info["expr_dim"] >= 10 and info["joint_names"] == ["root", "neck", "jaw", "left_eye", "right_eye"]
    assert info["mouth_faces"] > 0 and info["uvs"] > 0
