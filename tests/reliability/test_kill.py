"""``kill -9`` at random moments: during training (checkpoints every step, so many kills land in a
checkpoint's publication) and during the final save. After each kill the next job finds a complete
state: a checkpoint pair that resumes, and an avatar folder that is the old complete avatar or the
new complete one, never a mix. (Every single step of a publication is crashed deterministically,
in-process, in test_publish.py; this is the same promise with real processes and real timing.)
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import time

import pytest
from reliability_kit import leftovers, train_config

from engine.jobs.config import to_dict

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="kill -9 semantics")


def _config_file(tmp_path, cfg, name="job.json"):
    path = tmp_path / name
    path.write_text(json.dumps(to_dict(cfg)))
    return path


def _avatar_state(folder):
    """(num_gaussians in avatar.json, bindings count, Gaussian count) of a recovered folder, or
    None when it holds no avatar yet."""
    import numpy as np

    from engine.avatar_folder import load_avatar

    if not (folder / "avatar.json").exists():
        return None
    loaded = load_avatar(folder)  # recovers an interrupted publication first, verifies sha256s
    bindings = np.load(folder / "blender" / "bindings.npz")["face_idx"]
    return loaded.meta["num_gaussians"], len(bindings), len(loaded.avatar.gaussians), loaded.meta["config"]["seed"]


def _as_the_next_job_finds_it(folder) -> None:
    """What the next job does first (claim the folder: take over the dead job's stale lock,
    recover an interrupted publication); then nothing may be left over."""
    from engine.io.output import claim_output

    with claim_output(folder, "next job"):
        pass
    assert leftovers(folder) == []


def test_training_killed_at_random_steps_resumes_to_the_end(engine_job, tmp_path, tiny_dataset, head_npz):
    out = tmp_path / "avatar"
    cfg = train_config(tiny_dataset, out, head_npz, steps=40, checkpoint_every=1, resume=True)
    path = _config_file(tmp_path, cfg)
    rng = random.Random(17)
    last_step = 0
    for _ in range(3):
        job = engine_job("train", "--config", path)
        target = last_step + rng.randint(2, 8)
        job.wait_for(lambda e: e["type"] == "progress" and e["step"] >= target)
        time.sleep(rng.uniform(0.0, 0.05))  # somewhere inside the next step's checkpoint
        job.kill()
        # the folder as the next job finds it: the checkpoint pair loads and is not ahead of the kill
        from engine.avatar_folder import AvatarFolder
        from engine.model.resolve import resolve_head_model
        from engine.train.checkpoint import load_checkpoint
        from engine.train.trainer import Trainer

        _as_the_next_job_finds_it(out)
        trainer = Trainer(cfg, resolve_head_model(str(head_npz)), None, None)
        step = load_checkpoint(AvatarFolder(out), trainer.state, "cpu")
        assert target - 1 <= step < 40  # progress k is sent before checkpoint k is written
        last_step = step
    job = engine_job("train", "--config", path)
    done = job.wait_for(lambda e: e["type"] in ("done", "error", "cancelled"), timeout=300)
    assert done["type"] == "done", done
    assert job.finish() == 0
    assert "resumed from step" in job.stderr
    state = _avatar_state(out)
    assert state[0] == state[1] == state[2]
    assert json.loads((out / "checkpoints" / "last.json").read_text())["step"] == 40


def test_killed_during_the_final_save_leaves_the_old_or_the_new_avatar(engine_job, tmp_path, tiny_dataset,
                                                                      head_npz):
    """An old avatar (seed 1, densified: more Gaussians) is in the folder; a new run (seed 2, no
    densification) is killed right after its last step, at several delays, i.e. while it publishes.
    Every time the folder loads as one whole avatar: the old one or the new one."""
    out = tmp_path / "avatar"
    from engine.train.trainer import train

    train(train_config(tiny_dataset, out, head_npz, seed=1, steps=4,
                       densify=dict(strategy="sampling", start=1, every=2, count=200, prune_every=0)))
    old = _avatar_state(out)
    steps = 3
    new_cfg = _config_file(tmp_path, train_config(tiny_dataset, out, head_npz, seed=2, steps=steps,
                                                  checkpoint_every=0), "new.json")
    seen = set()
    pristine = tmp_path / "pristine"
    shutil.copytree(out, pristine)
    for delay in (0.0, 0.05, 0.2, 0.5):
        shutil.rmtree(out)
        shutil.copytree(pristine, out)
        job = engine_job("train", "--config", new_cfg)
        job.wait_for(lambda e: e["type"] == "progress" and e["step"] == steps)
        time.sleep(delay)
        job.kill()
        _as_the_next_job_finds_it(out)
        state = _avatar_state(out)
        assert state is not None and state[0] == state[1] == state[2]
        assert state == old or state[3] == 2, state
        seen.add("old" if state == old else "new")
    assert old[0] != _new_count(tiny_dataset, head_npz, tmp_path)  # the two avatars are tellable apart
    print("outcomes:", seen)


def _new_count(tiny_dataset, head_npz, tmp_path):
    from engine.train.trainer import train

    ref = tmp_path / "ref"
    train(train_config(tiny_dataset, ref, head_npz, seed=2, steps=3, checkpoint_every=0))
    return _avatar_state(ref)[0]
