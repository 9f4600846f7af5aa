"""A set of files is published whole or not at all, whenever the process dies.

A crash leaves the disk as it was at that instant, so these tests record the folder before every
file-system step of a publication (each rename, unlink, rmdir) and then recover each recorded
state as the next job would: every one must be the old complete set or the new complete one,
never a mix — for a generic set, for a whole avatar save and for a checkpoint.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from reliability_kit import files_digest, leftovers

from engine.errors import AvatarError, OutputError
from engine.io.publish import COMMIT_DIR, STAGING_PREFIX, publish, recover


class CrashRecorder:
    """Copies ``root`` before every os.replace / os.unlink / os.rmdir / shutil.rmtree under it:
    the states a crash at that instant would leave."""

    def __init__(self, root: Path, store: Path, monkeypatch, ignore=()):
        self.root, self.store, self.states = Path(root), Path(store), []
        self.ignore = shutil.ignore_patterns(*ignore) if ignore else None
        for mod, name in ((os, "replace"), (os, "unlink"), (os, "rmdir"), (shutil, "rmtree")):
            real = getattr(mod, name)
            monkeypatch.setattr(mod, name, self._wrap(real))

    def _wrap(self, real):
        def op(path, *args, **kwargs):
            if str(path).startswith(str(self.root)) and not getattr(self, "_busy", False):
                self.snapshot()
            return real(path, *args, **kwargs)
        return op

    def snapshot(self) -> None:
        self._busy = True
        try:
            dst = self.store / f"{len(self.states):03d}"
            shutil.copytree(self.root, dst, symlinks=True, ignore=self.ignore)
            self.states.append(dst)
        finally:
            self._busy = False


def _write_set(pub, tag: str, names=("a.bin", "sub/b.bin", "manifest.json")) -> None:
    for n in names:
        pub.path(n).write_text(f"{tag}:{n}")


def test_a_crash_at_any_step_leaves_the_old_set_or_the_new_one(tmp_path, monkeypatch):
    root = tmp_path / "folder"
    with publish(root) as pub:
        _write_set(pub, "old")
    old = files_digest(root)
    rec = CrashRecorder(root, tmp_path / "states", monkeypatch)
    with publish(root) as pub:
        _write_set(pub, "new")
    monkeypatch.undo()
    new = files_digest(root)
    assert old != new and len(rec.states) >= 5  # the rename into .commit, 3 moves, clean-up
    outcomes = []
    for state in rec.states:
        recover(state)
        got = files_digest(state)
        assert got in (old, new), f"crash state {state.name} recovered to a mix: {got}"
        assert leftovers(state) == []
        outcomes.append("old" if got == old else "new")
    # the commit point is one rename: before it every state is old, after it every state is new
    assert outcomes == sorted(outcomes, key=lambda o: o == "new") and {"old", "new"} <= set(outcomes)


def test_an_avatar_save_killed_at_any_step_loads_as_the_old_or_the_new_avatar(
        avatar_copy, tiny_dataset, tmp_path, monkeypatch):
    """The issue's defect: a crash midway through save_avatar left 1,227 Gaussians against 827
    bindings that still rendered. Here the old avatar has N Gaussians, the new one N − 100 (and
    other colours); every crash state loads as one of the two, whole."""
    from engine.avatar_folder import AvatarFolder, load_avatar
    from engine.data import load_sequence
    from engine.jobs.config import from_dict
    from engine.train.config import TrainConfig

    folder = AvatarFolder(avatar_copy)
    loaded = load_avatar(avatar_copy)
    old_meta = loaded.meta
    g = loaded.avatar.gaussians
    keep = torch.arange(len(g) - 100)
    for name in g.PARAMETERS:
        getattr(g, name).data = getattr(g, name).data[keep] + (0.1 if name == "sh0" else 0.0)
    g.face_idx, g.bary = g.face_idx[keep], g.bary[keep]
    cfg = from_dict(TrainConfig, old_meta["config"])
    rec = CrashRecorder(avatar_copy, tmp_path / "states", monkeypatch, ignore=("maps", "checkpoints", "bakenet*"))
    folder.save(loaded.avatar, load_sequence(tiny_dataset), cfg)
    monkeypatch.undo()
    n_old, n_new = old_meta["num_gaussians"], old_meta["num_gaussians"] - 100
    print(f"{len(rec.states)} crash states")
    assert len(rec.states) >= 15  # 7 staged files, the commit rename, 7 moves, the clean-up
    seen = set()
    for state in rec.states:
        recover(state)
        re = load_avatar(state)
        n = len(re.avatar.gaussians)
        assert n in (n_old, n_new)
        bindings = np.load(state / "blender" / "bindings.npz")["face_idx"]
        assert len(bindings) == n  # the Blender export belongs to the same save
        assert re.meta["num_gaussians"] == n
        seen.add(n)
    assert seen == {n_old, n_new}


def test_a_checkpoint_killed_at_any_step_resumes_from_a_matching_pair(avatar_copy, tiny_dataset, head_npz,
                                                                     tmp_path, monkeypatch):
    """The issue's defect: last.safetensors and last.json were replaced one after the other, so a
    crash between them left a pair that could never be resumed."""
    from reliability_kit import train_config

    from engine.avatar_folder import AvatarFolder
    from engine.model.resolve import resolve_head_model
    from engine.train.checkpoint import load_checkpoint, save_checkpoint
    from engine.train.trainer import Trainer

    cfg = train_config(tiny_dataset, avatar_copy, head_npz)
    trainer = Trainer(cfg, resolve_head_model(str(head_npz)), None, None)
    trainer.step = 7
    rec = CrashRecorder(avatar_copy, tmp_path / "states", monkeypatch, ignore=("maps", "bakenet*"))
    save_checkpoint(trainer.folder, trainer.state)
    monkeypatch.undo()
    steps = set()
    for state in rec.states:
        recover(state)
        fresh = Trainer(train_config(tiny_dataset, state, head_npz), trainer.head, None, None)
        steps.add(load_checkpoint(AvatarFolder(state), fresh.state, "cpu"))
    assert steps == {4, 7}  # the tiny avatar's own checkpoint (its last step) or the new one


def test_a_mismatched_checkpoint_pair_is_refused(avatar_copy):
    from engine.avatar_folder import AvatarFolder
    from engine.io.readers import load_json

    ck = avatar_copy / "checkpoints"
    tensors = ck / "last.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF  # another state's tensors beside this last.json
    tensors.write_bytes(bytes(data))
    meta = load_json(ck / "last.json", AvatarError)
    assert meta["tensors_sha256"]
    from engine.train.checkpoint import load_checkpoint
    with pytest.raises(AvatarError, match="last.safetensors.*does not match its manifest"):
        load_checkpoint(AvatarFolder(avatar_copy), None, "cpu")  # refused before the state is touched


def test_a_failed_staging_replaces_nothing_and_leaves_nothing(tmp_path, monkeypatch):
    """Disk full while staging (a simulated ENOSPC on the second file): OutputError naming the
    folder, the old files untouched, no staging folder left."""
    root = tmp_path / "folder"
    with publish(root) as pub:
        _write_set(pub, "old")
    old = files_digest(root)
    with pytest.raises(OutputError, match=rf"{root}.*No space left on device.*nothing was replaced"):
        with publish(root) as pub:
            pub.path("a.bin").write_text("new")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert files_digest(root) == old and leftovers(root) == []


def test_recovery_keeps_live_stagings_and_removes_dead_ones(tmp_path):
    root = tmp_path / "folder"
    root.mkdir()
    dead = root / f"{STAGING_PREFIX}999999999-dead"
    live_other = root / f"{STAGING_PREFIX}1-live"  # pid 1 is always running
    for d in (dead, live_other):
        (d / "x").mkdir(parents=True)
    recover(root)
    assert not dead.exists() and live_other.exists()
    assert not (root / COMMIT_DIR).exists()
