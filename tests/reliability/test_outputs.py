"""Read-only and full output folders: an error naming the folder *before step 1* (it was a raw
OSError after the last step), and a disk that fills up during a save replaces nothing.

Where this machine can mount a tmpfs (root on Linux) the read-only and full folders are real
(``mount -t tmpfs -o size=…[,ro]``); elsewhere the same faults are simulated by making the
system calls fail with EROFS / ENOSPC. Which one ran is in the test's output (``-s``).
"""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
from reliability_kit import files_digest, leftovers, run_engine, train_config

from engine.errors import OutputError
from engine.jobs.config import to_dict


def _train_cli(tmp_path, tiny_dataset, head_npz, out):
    cfg = tmp_path / "job.json"
    cfg.write_text(json.dumps(to_dict(train_config(tiny_dataset, out, head_npz, steps=4))))
    return run_engine("train", "--config", cfg)


def test_read_only_output_folder_is_refused_before_step_1(tmp_path, tiny_dataset, head_npz, small_fs, monkeypatch):
    mnt = small_fs(1, read_only=True)
    if mnt is not None:
        print("real read-only tmpfs")
        rc, events, stderr = _train_cli(tmp_path, tiny_dataset, head_npz, mnt / "avatar")
        assert rc == 1, stderr
        err = events[-1]
        assert err["type"] == "error" and err["error_type"] == "OutputError"
        assert str(mnt / "avatar") in err["message"] and "Read-only file system" in err["message"]
        assert not any(e["type"] == "progress" for e in events)
        return
    print("simulated EROFS")
    from engine.io import output
    from engine.train.trainer import train

    def refuse(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(output.tempfile, "mkstemp", refuse)
    with pytest.raises(OutputError, match="not writable.*Read-only file system"):
        train(train_config(tiny_dataset, tmp_path / "avatar", head_npz))


def test_full_output_folder_is_refused_before_step_1(tmp_path, tiny_dataset, head_npz, small_fs, monkeypatch):
    mnt = small_fs(2)
    if mnt is not None:
        print("real 2 MiB tmpfs")
        rc, events, stderr = _train_cli(tmp_path, tiny_dataset, head_npz, mnt / "avatar")
        assert rc == 1, stderr
        err = events[-1]
        assert err["type"] == "error" and err["error_type"] == "OutputError"
        assert f"output folder {mnt / 'avatar'} has" in err["message"]
        assert "MiB free; train needs about" in err["message"]
        assert not any(e["type"] == "progress" for e in events)
        assert leftovers(mnt) == []
        return
    print("simulated: disk_usage reports 1 MiB free")
    from engine.io import output
    from engine.train.trainer import train

    monkeypatch.setattr(output.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 20, 9 << 20, 1 << 20))
    with pytest.raises(OutputError, match="MiB free; train needs about"):
        train(train_config(tiny_dataset, tmp_path / "avatar", head_npz))


def test_disk_full_during_the_final_save_keeps_the_previous_avatar(tmp_path, tiny_dataset, head_npz, tiny_avatar,
                                                                  small_fs, monkeypatch):
    """Room for the previous avatar and little more; the pre-flight estimate is switched off so
    the save itself runs out of space. Real ENOSPC on a tmpfs where possible, else simulated."""
    from engine.io.output import ClaimedOutput
    from engine.train.trainer import train

    monkeypatch.setattr(ClaimedOutput, "require_space", lambda self, n: None)
    old_size = sum(p.stat().st_size for p in tiny_avatar.rglob("*") if p.is_file() and "checkpoints" not in p.parts)
    mnt = small_fs(old_size / 2**20 + 3)
    if mnt is None:
        print("simulated ENOSPC on the 3rd staged file")
        mnt = tmp_path
        from engine.io import publish as publish_mod
        real_path, calls = publish_mod.Publication.path, []

        def path(self, rel):
            calls.append(rel)
            if len(calls) == 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_path(self, rel)

        monkeypatch.setattr(publish_mod.Publication, "path", path)
    else:
        print(f"real {old_size / 2**20 + 3:.1f} MiB tmpfs")
    out = mnt / "avatar"
    shutil.copytree(tiny_avatar, out, ignore=shutil.ignore_patterns("checkpoints"))
    before = files_digest(out)
    with pytest.raises(OutputError, match=rf"cannot save into {out}: .*No space left on device.*nothing was replaced"):
        train(train_config(tiny_dataset, out, head_npz, steps=3, checkpoint_every=0, seed=3))
    assert {k: v for k, v in files_digest(out).items() if not k.startswith("checkpoints/")} == before
    assert leftovers(out) == []
    from engine.avatar_folder import load_avatar
    assert load_avatar(out).meta["config"]["seed"] == 0  # the previous avatar, whole


def test_disk_full_at_a_checkpoint_keeps_the_previous_checkpoint(tmp_path, tiny_dataset, head_npz, monkeypatch):
    """Simulated ENOSPC while the second checkpoint is staged: the error names the folder; the
    first checkpoint is still there and resumes."""
    from engine.train import checkpoint as ck
    from engine.train.trainer import train

    out = tmp_path / "avatar"
    real, calls = ck.write_safetensors, []

    def write(path, tensors, metadata=None):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, tensors, metadata)

    monkeypatch.setattr(ck, "write_safetensors", write)
    with pytest.raises(OutputError, match=rf"cannot save into {out}: No space left on device"):
        train(train_config(tiny_dataset, out, head_npz, steps=6, checkpoint_every=2))
    assert json.loads((out / "checkpoints" / "last.json").read_text())["step"] == 2
    assert leftovers(out) == []
    monkeypatch.undo()
    result = train(train_config(tiny_dataset, out, head_npz, steps=6, checkpoint_every=2, resume=True))
    assert result["avatar"] == str(out)
