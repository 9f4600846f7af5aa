"""Sync Maps: painted maps go back to their files in the engine's layout, after a backup copy."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed")
OpenEXR = pytest.importorskip("OpenEXR", reason="OpenEXR (python) is needed to read the files back")

from addon.errors import MapsError  # noqa: E402
from addon.maps import sync as maps_sync  # noqa: E402
from addon.rig.bindings import avatar_map_images  # noqa: E402
from addon.rig.importer import import_avatar  # noqa: E402
from addon_package import registered, submodule  # noqa: E402,F401
from synthetic_avatar import write_avatar  # noqa: E402

STAMP = "20250102-030405"


def read_exr(path):
    """{channel name: [H, W] float32} and the header, as stored."""
    with OpenEXR.File(str(path), separate_channels=True) as f:
        return {k: np.array(v.pixels, copy=True) for k, v in f.channels().items()}, dict(f.header())


def srgb_encode(x):
    x = np.asarray(x, np.float64)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(np.maximum(x, 0), 1 / 2.4) - 0.055)


def paint(img, fn):
    w, h = img.size
    px = np.empty(w * h * 4, np.float32)
    img.pixels.foreach_get(px)
    px = fn(px.reshape(h, w, 4)).astype(np.float32)
    img.pixels.foreach_set(px.reshape(-1))
    img.update()
    return px  # bottom row first


@pytest.fixture
def avatar(tmp_path):
    folder = tmp_path / "subject"
    arrays = write_avatar(folder, n_expr=3, n_frames=2)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return folder, arrays, import_avatar(folder, bpy.context.scene)


def test_sync_keeps_layout_and_backs_up(avatar, monkeypatch):
    folder, arrays, result = avatar
    maps_dir = folder / "maps"
    before = {p.name: p.read_bytes() for p in maps_dir.glob("*.exr")}
    calls = []
    from addon.splats import runtime

    monkeypatch.setattr(runtime, "tag_maps_changed", lambda *a, **k: calls.append(1))

    opacity = paint(result.images["opacity"], lambda p: np.concatenate([p[..., :3] * 0.5 + 0.25, p[..., 3:]], -1))
    color = paint(result.images["color"], lambda p: np.concatenate([p[..., :3] ** 1.1, p[..., 3:]], -1))
    assert result.images["opacity"].is_dirty and not result.images["scale"].is_dirty

    report = maps_sync.sync_maps(avatar_map_images(result.head).values(), stamp=STAMP)
    assert sorted(p.name for p in report.saved) == ["color.exr", "opacity.exr"]
    assert sorted(report.skipped) == sorted(f"subject_{m}" for m in ("scale", "rotation", "offset"))
    for name in ("color", "opacity"):
        backup = maps_dir / f"{name}.{STAMP}.bak.exr"
        assert backup in report.backups and backup.read_bytes() == before[f"{name}.exr"]
    for name in ("scale", "rotation", "offset"):
        assert (maps_dir / f"{name}.exr").read_bytes() == before[f"{name}.exr"]
    assert calls, "the render engine was not told that the maps changed"

    # The 1-channel map stays a single float32 "Y" channel holding exactly the painted values.
    chans, header = read_exr(maps_dir / "opacity.exr")
    assert list(chans) == ["Y"] and chans["Y"].dtype == np.float32
    np.testing.assert_array_equal(chans["Y"], opacity[::-1, :, 0])
    assert header.get("fateChannelOrder") == "Y"
    # The engine's reader sees the layout it wrote (1 channel named Y).
    image_io = pytest.importorskip("engine.io.images")
    arr, names = image_io.read_exr(maps_dir / "opacity.exr")
    assert names == ["Y"] and arr.shape[-1] == 1

    # The colour map is written back as sRGB-encoded values of what was painted (linear in Blender).
    chans, _ = read_exr(maps_dir / "color.exr")
    rgb = chans["RGB"] if "RGB" in chans else np.stack([chans[c] for c in "RGB"], -1)
    # Blender's OCIO sRGB transform vs the analytic sRGB curve: observed < 2e-5
    np.testing.assert_allclose(rgb, srgb_encode(color[::-1, :, :3]), atol=1e-4)

    # Images are clean after the sync; a second sync writes nothing and makes no backups.
    again = maps_sync.sync_maps(avatar_map_images(result.head).values(), stamp="20250102-030406")
    assert again.saved == [] and again.backups == []


def test_no_overwrite_without_backup(avatar, monkeypatch):
    folder, _, result = avatar
    path = folder / "maps" / "offset.exr"
    original = path.read_bytes()
    paint(result.images["offset"], lambda p: p + 1.0)

    def refuse(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copy2", refuse)
    with pytest.raises(MapsError, match="nothing was overwritten"):
        maps_sync.sync_maps([result.images["offset"]], stamp=STAMP)
    assert path.read_bytes() == original
    assert not list(path.parent.glob("*.bak.exr"))


def test_backup_names_do_not_collide(tmp_path):
    f = tmp_path / "color.exr"
    f.write_bytes(b"x")
    first = maps_sync.backup_path(f, STAMP)
    first.write_bytes(b"y")
    assert first.name == f"color.{STAMP}.bak.exr"
    assert maps_sync.backup_path(f, STAMP).name == f"color.{STAMP}-1.bak.exr"


def test_import_and_sync_operators(registered, tmp_path):
    """The operators around the same functions: Import Avatar (undoable) and Sync Maps."""
    folder = tmp_path / "opavatar"
    write_avatar(folder, n_expr=3, n_frames=2)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    assert bpy.ops.fate.import_avatar(directory=str(folder)) == {"FINISHED"}
    head = bpy.context.view_layer.objects.active
    assert head.name == "opavatar" and head["fate_role"] == "head"
    assert bpy.ops.fate.sync_maps() == {"CANCELLED"}  # nothing painted yet ("No painted maps to save")
    img = bpy.data.images["opavatar_scale"]
    paint(img, lambda p: p * 2.0)
    assert bpy.ops.fate.sync_maps() == {"FINISHED"}
    assert list((folder / "maps").glob("scale.*.bak.exr"))
    with pytest.raises(RuntimeError, match="avatar folder not found"):
        bpy.ops.fate.import_avatar(directory=str(tmp_path / "missing"))
    assert submodule("addon.rig.bindings").find_head_object(head) == head
