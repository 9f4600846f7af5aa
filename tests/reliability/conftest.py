"""Fixtures of the fault-injection suite (docs/RELIABILITY.md): a tiny dataset, a tiny trained and
baked avatar, ``python -m engine`` jobs, small file systems. Helpers: ``reliability_kit``.

Everything is CPU-sized so the suite runs in a few minutes on a 2-core CI machine: 8 frames at
32², 32² UV sampling (~830 Gaussians), a handful of steps, maps at 16².
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from reliability_kit import EngineJob, bake_config, train_config


@pytest.fixture(scope="session")
def head_npz(tmp_path_factory) -> Path:
    """The procedural demo head saved as .npz (loads in ms; building it takes ~2 s)."""
    from engine.model.demo_head import build_demo_head

    path = tmp_path_factory.mktemp("head") / "demo_head.npz"
    build_demo_head().save_npz(path)
    return path


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, head_npz) -> Path:
    """8 synthetic frames at 32² (INSTA layout), the last 2 held out."""
    from engine.demo.config import SyntheticConfig
    from engine.demo.synthetic import write_synthetic_dataset
    from engine.model.head_model import load_head_model

    root = tmp_path_factory.mktemp("tiny_dataset")
    return write_synthetic_dataset(root, load_head_model(head_npz),
                                   SyntheticConfig(frames=8, resolution=32, gt_uv_resolution=64))


@pytest.fixture(scope="session")
def tiny_avatar(tmp_path_factory, tiny_dataset, head_npz) -> Path:
    """A trained (4 steps) and baked (2 steps) avatar. Copy it before changing anything."""
    from engine.bake.baker import bake
    from engine.train.trainer import train

    out = tmp_path_factory.mktemp("tiny_avatar") / "avatar"
    train(train_config(tiny_dataset, out, head_npz))
    bake(bake_config(out))
    return out


@pytest.fixture
def avatar_copy(tiny_avatar, tmp_path) -> Path:
    """A private copy of the tiny avatar."""
    dst = tmp_path / "avatar"
    shutil.copytree(tiny_avatar, dst)
    return dst


@pytest.fixture
def engine_job():
    """Starts :class:`EngineJob` s; kills whatever is still running at the end of the test."""
    jobs: list[EngineJob] = []

    def start(*args: str, code: str | None = None) -> EngineJob:
        job = EngineJob([str(a) for a in args], code)
        jobs.append(job)
        return job

    yield start
    for job in jobs:
        job.kill()


@pytest.fixture
def small_fs(tmp_path):
    """``small_fs(size_mib, read_only=False)`` → a folder on a tmpfs of that size (mounted here and
    unmounted after the test), or None where this machine cannot mount (not root, no
    CAP_SYS_ADMIN, not Linux) or ``FATE_TEST_NO_MOUNT`` is set: the test then simulates the fault
    instead."""
    mounted: list[Path] = []

    def make(size_mib: float, read_only: bool = False) -> Path | None:
        if os.environ.get("FATE_TEST_NO_MOUNT") or not sys.platform.startswith("linux") or os.geteuid() != 0 \
                or shutil.which("mount") is None:
            return None
        mnt = tmp_path / f"fs{len(mounted)}"
        mnt.mkdir()
        opts = f"size={int(size_mib * 1024)}k" + (",ro" if read_only else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], capture_output=True)
        if r.returncode != 0:
            return None
        mounted.append(mnt)
        return mnt

    yield make
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
