"""The artist's operators on an imported avatar (issue 14), registered as the add-on: Import Avatar's
options (its redo panel), presets, neutral, look-at, Sync Maps with bounded backups and Restore
Previous Maps."""

from __future__ import annotations

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed")

from addon_package import registered  # noqa: E402,F401
from synthetic_avatar import write_avatar  # noqa: E402


def test_artist_operators(registered, tmp_path):
    folder = tmp_path / "subject"
    write_avatar(folder, n_expr=4, n_frames=3)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = 320, 180
    assert bpy.ops.fate.import_avatar(directory=str(folder), camera="TRACKED", set_resolution=False,
                                      set_frame_range=False, set_active_camera=False) == {"FINISHED"}
    props = {p.identifier for p in bpy.ops.fate.import_avatar.get_rna_type().properties}
    assert {"camera", "set_resolution", "set_frame_range", "set_active_camera"} <= props  # redo panel
    assert (scene.render.resolution_x, scene.render.resolution_y) == (320, 180) and scene.camera is None
    head = bpy.context.view_layer.objects.active
    assert head.fate.resplat == "TRAINED"

    scene.frame_set(2)
    assert bpy.ops.fate.preset_save(name="open") == {"FINISHED"}
    assert bpy.ops.fate.expression_neutral() == {"FINISHED"}
    key = head.data.shape_keys.key_blocks
    assert all(abs(key[n].value) < 1e-6 for n in head["fate_expressions"])
    assert bpy.ops.fate.preset_apply(name="open") == {"FINISHED"}
    assert bpy.ops.fate.look_at_add() == {"FINISHED"}
    assert "subject_look_at" in bpy.data.objects
    with pytest.raises(RuntimeError, match="no preset 'shut'"):
        bpy.ops.fate.preset_apply(name="shut")

    img = bpy.data.images["subject_scale"]
    original = (folder / "maps" / "scale.exr").read_bytes()
    w, h = img.size
    px = np.empty(w * h * 4, np.float32)
    img.pixels.foreach_get(px)
    img.pixels.foreach_set(px * 2.0)
    img.update()
    assert bpy.ops.fate.sync_maps() == {"FINISHED"}
    assert (folder / "maps" / "scale.exr").read_bytes() != original
    assert bpy.ops.fate.restore_maps("EXEC_DEFAULT") == {"FINISHED"}
    assert (folder / "maps" / "scale.exr").read_bytes() == original
    assert list((folder / "maps").glob("scale.*.replaced.exr"))  # the synced file, kept
