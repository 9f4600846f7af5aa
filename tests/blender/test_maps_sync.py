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


# ------------------------------------------------------------------------------ map safety (issue 14)
def _bytes(folder):
    return {p.name: p.read_bytes() for p in (folder / "maps").glob("*.exr") if ".bak" not in p.name
            and ".replaced" not in p.name}


def _pixels(img):
    px = np.empty(len(img.pixels), np.float32)
    img.pixels.foreach_get(px)
    return px


def test_restore_brings_back_the_previous_maps_bit_exactly(avatar):
    from addon.maps.restore import restore_previous_maps

    folder, _, result = avatar
    images = list(avatar_map_images(result.head).values())
    original = _bytes(folder)
    paint(result.images["opacity"], lambda p: p * 0.5)
    paint(result.images["color"], lambda p: np.concatenate([p[..., :3] ** 1.2, p[..., 3:]], -1))
    maps_sync.sync_maps(images, stamp="20250101-000001")
    first = _bytes(folder)
    first_pixels = _pixels(result.images["opacity"])
    paint(result.images["opacity"], lambda p: p + 0.25)
    maps_sync.sync_maps(images, stamp="20250101-000002")
    second = _bytes(folder)
    assert second["opacity.exr"] != first["opacity.exr"] and second["color.exr"] == first["color.exr"]

    report = restore_previous_maps(images, stamp="20250101-000003")
    assert report.stamp == "20250101-000002" and [p.name for p in report.restored] == ["opacity.exr"]
    assert _bytes(folder) == first  # bit-exact, file for file
    np.testing.assert_array_equal(_pixels(result.images["opacity"]), first_pixels)  # reloaded
    assert not result.images["opacity"].is_dirty
    assert report.replaced[0].read_bytes() == second["opacity.exr"]  # nothing lost: a copy of what it replaced

    report = restore_previous_maps(images, stamp="20250101-000004")  # one sync further back
    assert sorted(p.name for p in report.restored) == ["color.exr", "opacity.exr"]
    assert _bytes(folder) == original
    with pytest.raises(MapsError, match="no map backups"):
        restore_previous_maps(images)


def test_restore_refuses_unsynced_paint(avatar):
    from addon.maps.restore import restore_previous_maps

    folder, _, result = avatar
    images = list(avatar_map_images(result.head).values())
    paint(result.images["offset"], lambda p: p + 1.0)
    maps_sync.sync_maps(images, stamp=STAMP)
    synced = _bytes(folder)
    painted = paint(result.images["offset"], lambda p: p * 3.0)
    with pytest.raises(MapsError, match="unsynced paint.*nothing was restored"):
        restore_previous_maps(images)
    assert _bytes(folder) == synced
    np.testing.assert_array_equal(_pixels(result.images["offset"]), painted.reshape(-1))


def test_backups_are_bounded(avatar):
    folder, _, result = avatar
    img = result.images["scale"]
    for i in range(5):
        paint(img, lambda p: p + 0.1)
        report = maps_sync.sync_maps([img], stamp=f"20250101-00000{i}", keep=2)
    backups = sorted(p.name for p in (folder / "maps").glob("scale.*.bak.exr"))
    assert backups == ["scale.20250101-000003.bak.exr", "scale.20250101-000004.bak.exr"]
    assert [p.name for p in report.pruned] == ["scale.20250101-000002.bak.exr"]


def test_sync_refreshes_the_previews(tmp_path):
    from addon.files.png import write_png

    folder = tmp_path / "subject"
    write_avatar(folder, n_expr=3, n_frames=2)
    for name in ("color", "opacity"):  # the engine writes a preview beside each map
        write_png(folder / "maps" / f"{name}.png", np.zeros((8, 12, 3), np.uint8))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    result = import_avatar(folder, bpy.context.scene)
    color = paint(result.images["color"], lambda p: np.concatenate([p[..., :3] * 0.5, p[..., 3:]], -1))
    opacity = paint(result.images["opacity"], lambda p: p * 0.0 + 0.4)
    report = maps_sync.sync_maps(avatar_map_images(result.head).values(), stamp=STAMP)
    assert sorted(p.name for p in report.previews) == ["color.png", "opacity.png"]

    def load(name):
        img = bpy.data.images.load(str(folder / "maps" / name), check_existing=False)
        img.colorspace_settings.name = "Non-Color"  # the stored bytes / 255
        w, h = img.size
        px = np.empty(w * h * img.channels, np.float32)
        img.pixels.foreach_get(px)
        return px.reshape(h, w, img.channels)[::-1]  # top row first

    # The colour preview holds the encoded values of what was painted (scene linear in Blender);
    # a one-channel map's preview is grey. Within one 8-bit step (+ OCIO vs analytic sRGB).
    np.testing.assert_allclose(load("color.png")[..., :3], srgb_encode(color[::-1, :, :3]), atol=1.5 / 255)
    assert load("opacity.png").shape[-1] in (1, 4)
    np.testing.assert_allclose(load("opacity.png")[..., 0], opacity[::-1, :, 0], atol=0.5 / 255)


def test_second_import_keeps_unsynced_paint(avatar):
    folder, _, result = avatar
    n_images = len(bpy.data.images)
    painted = paint(result.images["color"], lambda p: np.concatenate([p[..., :3] * 0.2, p[..., 3:]], -1))
    with pytest.raises(MapsError, match="subject_color.*unsynced paint.*nothing was imported"):
        import_avatar(folder, bpy.context.scene)
    assert len(bpy.data.images) == n_images and "subject.001" not in bpy.data.objects
    np.testing.assert_array_equal(_pixels(result.images["color"]), painted.reshape(-1))
    assert result.images["color"].is_dirty

    maps_sync.sync_maps([result.images["color"]], stamp=STAMP)
    first = {m: img.name for m, img in result.images.items()}
    second = import_avatar(folder, bpy.context.scene)
    # The second avatar has its own images; the first keeps its own, names included.
    assert all(second.images[m] != img for m, img in result.images.items())
    assert {m: img.name for m, img in result.images.items()} == first
    assert avatar_map_images(result.head)["color"] == result.images["color"]
    # the file (sRGB-encoded by the save) read back vs the painted linear pixels: observed 4e-6
    np.testing.assert_allclose(_pixels(second.images["color"]), _pixels(result.images["color"]), atol=2e-5)


def test_cycles_background_render_keeps_unsynced_paint(avatar):
    """Cycles in background mode frees the images it loaded; the guard puts the paint back."""
    from addon.maps import guard

    _, _, result = avatar
    painted = paint(result.images["color"], lambda p: np.concatenate([p[..., :3] * 0.0 + 0.5, p[..., 3:]], -1))
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 1
    scene.render.resolution_x = scene.render.resolution_y = 16
    guard.register()
    try:
        bpy.ops.render.render()
    finally:
        guard.unregister()
    img = result.images["color"]
    assert img.is_dirty
    np.testing.assert_array_equal(_pixels(img), painted.reshape(-1))


def test_preview_ranges_are_the_engines():
    """The Blender side draws previews over the ranges the engine writes them with."""
    pytest.importorskip("torch", reason="torch is not installed (engine.maps needs it)")
    from addon.files.avatar import PREVIEW_RANGES
    from engine.maps import ALL_MAP_SPECS

    assert PREVIEW_RANGES == {name: spec.preview_range for name, spec in ALL_MAP_SPECS.items()}
