"""What Blender reads stays valid: Import Avatar's reader (``addon.files.avatar``, numpy + stdlib)
refuses a save in progress or interrupted, a file that does not match avatar.json, a newer format
and a corrupt ``.npz`` — with an AvatarError naming the file, never a mix of two avatars."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from reliability_kit import REPO

if str(REPO) not in sys.path[:1]:  # this checkout's add-on, not a folder named addon beside it
    sys.path.insert(0, str(REPO))

from addon.errors import AvatarError, MapsError  # noqa: E402
from addon.files.avatar import read_avatar  # noqa: E402


def test_the_engines_avatar_reads(avatar_copy):
    data = read_avatar(avatar_copy)
    assert data.bindings is not None and data.tracking is not None and len(data.maps) == 6  # + visibility
    assert data.warnings == []


def test_a_save_in_progress_is_refused(avatar_copy):
    (avatar_copy / ".commit").mkdir()
    with pytest.raises(AvatarError, match=r"saving this avatar, or a save was interrupted \(\.commit/"):
        read_avatar(avatar_copy)


def test_a_file_from_another_save_is_refused(avatar_copy, tiny_avatar, tmp_path, tiny_dataset, head_npz):
    """bindings.npz of another training run beside this run's head.npz: the mix the issue found."""
    from reliability_kit import train_config

    from engine.train.trainer import train

    other = tmp_path / "other"
    train(train_config(tiny_dataset, other, head_npz, seed=3,
                       densify=dict(strategy="sampling", start=1, every=1, count=50, prune_every=0)))
    shutil.copy2(other / "blender" / "bindings.npz", avatar_copy / "blender" / "bindings.npz")
    with pytest.raises(AvatarError, match=r"bindings.npz: does not match avatar.json"):
        read_avatar(avatar_copy)


def test_newer_formats_are_refused(avatar_copy):
    meta = json.loads((avatar_copy / "avatar.json").read_text())
    (avatar_copy / "avatar.json").write_text(json.dumps({**meta, "format_version": 2}))
    with pytest.raises(AvatarError, match="format_version 2 is newer than this add-on reads"):
        read_avatar(avatar_copy)
    (avatar_copy / "avatar.json").write_text(json.dumps(meta))
    maps = json.loads((avatar_copy / "maps" / "maps.json").read_text())
    (avatar_copy / "maps" / "maps.json").write_text(json.dumps({**maps, "format_version": 2}))
    data = read_avatar(avatar_copy)  # maps are optional for the importer: skipped with a warning
    assert data.maps == [] and "format_version 2 is newer" in data.warnings[0]
    from addon.files.avatar import read_maps_manifest
    with pytest.raises(MapsError):
        read_maps_manifest(avatar_copy)


def test_a_truncated_npz_is_an_avatar_error(avatar_copy):
    """It was a raw zipfile.BadZipFile."""
    meta = json.loads((avatar_copy / "avatar.json").read_text())
    del meta["files"]  # no hashes: the reader itself must catch it
    (avatar_copy / "avatar.json").write_text(json.dumps(meta))
    path = avatar_copy / "tracking.npz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(AvatarError, match=r"tracking.npz: cannot read .npz \(BadZipFile"):
        read_avatar(avatar_copy)
