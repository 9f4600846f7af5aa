"""Map shape keys in Blender (issue 19): the FATE Splats runtime blends ``maps/dynamic`` into the
colour and opacity maps by the head's own shape-key values every frame; zero weights render the
base maps exactly, a painted edit of the base is kept under every expression, and the blend equals
the engine's (``engine.map_keys.MapKeyAppearance``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed")

from addon.files.map_keys import read_map_keys  # noqa: E402
from addon.splats import colour  # noqa: E402
from addon.splats import runtime as sr  # noqa: E402
from addon.splats.pixels import sample_bilinear  # noqa: E402
from blender_support import set_image_pixels  # noqa: E402
from renders import render_exr  # noqa: E402

KEY = "Smile"
"""The test head's extra shape key: no displacement, so renders at any value share the geometry."""


def write_keys(folder: Path, deltas_color: np.ndarray, deltas_opacity: np.ndarray, names: list[str],
               signs: list[int]) -> None:
    """maps/dynamic/{color,opacity}.npz (float16, top row first) and a maps.json listing them,
    as engine/map_keys.py writes them."""
    (folder / "maps" / "dynamic").mkdir(parents=True, exist_ok=True)
    entry = {"format": "fate-map-keys", "format_version": 1, "source": "test",
             "keys": [f"{n}{'+' if s > 0 else '-'}" for n, s in zip(names, signs)], "maps": {}}
    for m, arr in (("color", deltas_color), ("opacity", deltas_opacity)):
        np.savez(folder / "maps" / "dynamic" / f"{m}.npz", deltas=arr.astype(np.float16),
                 shape_keys=np.array(names), signs=np.array(signs, np.int8))
        entry["maps"][m] = {"file": f"dynamic/{m}.npz", "channels": arr.shape[-1]}
    (folder / "maps" / "maps.json").write_text(json.dumps({"format": "fate-maps", "maps": {}, "dynamic": entry}))


@pytest.fixture
def keyed_scene(splat_scene, tmp_path):
    """The splat scene with a zero-displacement shape key ``Smile`` driving two map shape keys
    (its positive and negative half) from an avatar folder."""
    s = splat_scene
    kb = s.head.shape_key_add(name=KEY, from_mix=False)
    kb.value = 0.0
    kb.slider_min = -2.0
    rng = np.random.default_rng(7)
    R = s.maps["color"].shape[0]
    dc = np.stack([np.broadcast_to(np.array([0.25, 0.0, -0.15], np.float32), (R, R, 3)),
                   rng.uniform(-0.2, 0.2, (R, R, 3)).astype(np.float32)])
    do = np.zeros((2, R, R, 1), np.float32)
    write_keys(tmp_path, dc, do, [KEY, KEY], [1, -1])
    s.head["fate_avatar_dir"] = str(tmp_path)
    sr.clear_caches()
    return s, tmp_path


def _colors(head) -> np.ndarray:
    dg = bpy.context.evaluated_depsgraph_get()
    return sr.scene_gaussians(dg).colors.copy()


def test_keys_file_reads_bottom_row_first(keyed_scene):
    _, folder = keyed_scene
    keys = read_map_keys(folder)
    with np.load(folder / "maps" / "dynamic" / "color.npz") as z:
        top_first = z["deltas"].astype(np.float32)
    assert keys.shape_keys == [KEY, KEY] and keys.signs.tolist() == [1, -1]
    np.testing.assert_array_equal(keys.color[1], top_first[1][::-1])
    R = top_first.shape[1]
    assert keys.opacity.shape == (2, R, R)


def test_zero_weights_give_the_base_maps_exactly(keyed_scene):
    s, folder = keyed_scene
    with_keys = _colors(s.head)
    del s.head["fate_avatar_dir"]
    sr.clear_caches()
    without = _colors(s.head)
    np.testing.assert_array_equal(with_keys, without)
    s.head["fate_avatar_dir"] = str(folder)
    s.head.data.shape_keys.key_blocks[KEY].value = 0.5
    assert np.abs(_colors(s.head) - without).max() > 0.05  # a non-zero weight does change them


def test_blend_follows_the_shape_key_and_equals_the_engine(keyed_scene):
    """Per sign half, ``clip(base + w Δ, 0, 1)``; the same numbers as engine.map_keys."""
    torch = pytest.importorskip("torch", reason="torch is not installed (engine comparison)")
    from engine.map_keys import MapKeyAppearance, load_map_keys
    from engine.model.appearance_drivers import AppearanceDrivers

    s, folder = keyed_scene
    base = _colors(s.head)
    keys = read_map_keys(folder)
    drivers = AppearanceDrivers(1, -1, (KEY,))
    engine_keys = load_map_keys(folder / "maps", json.loads((folder / "maps" / "maps.json").read_text()))
    blend = MapKeyAppearance(engine_keys, drivers, torch.from_numpy(s.uv))
    for value, k in ((0.7, 0), (-1.3, 1)):
        s.head.data.shape_keys.key_blocks[KEY].value = value
        ours = _colors(s.head)
        delta = sample_bilinear(keys.color[k], s.uv)
        np.testing.assert_allclose(ours, np.clip(base + abs(value) * delta, 0, 1), atol=1e-6)
        theirs, _ = blend.blend(torch.from_numpy(base), torch.ones(len(base)), torch.tensor([value]), torch.zeros(15))
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-6)


def test_a_painted_edit_survives_a_change_of_expression_in_the_render(keyed_scene, splat_engine, tmp_path):
    """Renders (FATE Splats, F12) before and after painting a block of the colour map, at Smile 0
    and 1: the edit's difference is the same under both expressions, and the expression's
    difference is the same with and without the edit (the base is the painted map)."""
    s, _ = keyed_scene
    scene = bpy.context.scene
    scene.render.engine = "FATE_SPLAT"
    names = s.head["fate_maps"]
    R = s.maps["color"].shape[0]
    grey = np.full((R, R, 3), 0.4, np.float32)
    painted = grey.copy()
    painted[5:11, 5:11] = (0.15, 0.65, 0.3)  # the artist's edit, in the middle of the grid
    set_image_pixels(bpy.data.images[names["opacity"]], np.full((R, R, 1), 0.95, np.float32))
    renders = {}
    for label, col in (("orig", grey), ("painted", painted)):
        set_image_pixels(bpy.data.images[names["color"]], col)
        sr.tag_maps_changed()
        for value in (0.0, 1.0):
            s.head.data.shape_keys.key_blocks[KEY].value = value
            img = render_exr(tmp_path / f"{label}_{value}.exr")
            renders[label, value] = colour.linear_to_srgb(img[..., :3])
    edit0 = renders["painted", 0.0] - renders["orig", 0.0]
    edit1 = renders["painted", 1.0] - renders["orig", 1.0]
    region = np.abs(edit0).sum(-1) > 0.15  # where the edit shows
    assert region.sum() > 50, region.sum()
    # the edit under the expression = the edit at rest (encoded compositing is linear; drawer
    # precision and the sRGB round trip: observed ≤ 0.004)
    assert np.median(np.abs(edit1 - edit0)[region]) < 0.01
    expr_orig = renders["orig", 1.0] - renders["orig", 0.0]
    expr_painted = renders["painted", 1.0] - renders["painted", 0.0]
    assert np.median(expr_orig[region][:, 0]) > 0.15  # the expression does change the colour (+0.25 R)
    assert np.median(np.abs(expr_painted - expr_orig)[region]) < 0.01
