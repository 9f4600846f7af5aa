"""Re-baking keeps the previous maps (an artist's painted colour map included) in
``maps/backups/<time>/``, at most ``keep_backups`` sets, like Sync Maps keeps a copy before it
overwrites a map in Blender. (Re-baking overwrote an edited colour map with no backup.)"""

from __future__ import annotations

import numpy as np
from reliability_kit import bake_config, files_digest


def test_rebake_backs_up_the_previous_maps_including_an_artists_edit(avatar_copy):
    from engine.bake.baker import bake
    from engine.io.images import read_exr, write_exr

    maps = avatar_copy / "maps"
    color, _ = read_exr(maps / "color.exr")
    painted = np.array(color)
    painted[2:6, 2:6] = [1.0, 0.0, 0.0]  # an artist's red square, synced from Blender
    write_exr(maps / "color.exr", painted)
    (maps / "color.20250101-120000.bak.exr").write_bytes(b"Sync Maps' own backup")  # left alone
    before = files_digest(maps, skip=())
    bake(bake_config(avatar_copy, seed=4))
    sets = sorted((maps / "backups").iterdir())
    assert len(sets) == 1
    backup = files_digest(sets[0])
    assert backup == {k: v for k, v in before.items() if ".bak." not in k}  # the whole previous set
    np.testing.assert_array_equal(read_exr(sets[0] / "color.exr")[0], painted)
    assert not np.array_equal(read_exr(maps / "color.exr")[0], painted)  # the new bake is in place
    assert (maps / "color.20250101-120000.bak.exr").read_bytes() == b"Sync Maps' own backup"


def test_backups_are_bounded(avatar_copy):
    from engine.maps import backup_maps, prune_backups

    maps = avatar_copy / "maps"
    for stamp in ("20250101-000001", "20250101-000002", "20250101-000003"):
        backup_maps(maps, stamp)
    assert [d.name for d in prune_backups(maps, keep=2)] == ["20250101-000001"]
    assert sorted(d.name for d in (maps / "backups").iterdir()) == ["20250101-000002", "20250101-000003"]
    from engine.bake.baker import bake
    bake(bake_config(avatar_copy, keep_backups=2))
    assert len(list((maps / "backups").iterdir())) == 2  # the oldest went, the newest is the last bake's input


def test_map_shape_keys_are_published_and_backed_up_with_their_maps(tmp_path):
    """The map shape keys (``maps/dynamic/*.npz``) belong to the maps they were fitted on: they are
    published in the same change as the maps, kept in the backup of the previous set, and a bad
    key file (NaN) stops the whole change before anything is written."""
    import json

    import pytest
    import torch

    from engine.errors import MapsError
    from engine.maps import MAP_SPECS, load_maps, write_maps

    R = 8
    maps_dir = tmp_path / "maps"
    base = {n: torch.full((R, R, s.channels), 0.25) for n, s in MAP_SPECS.items()}
    keys = {"dynamic/color.npz": {"deltas": np.full((2, R, R, 3), 0.1, np.float16),
                                  "shape_keys": np.array(["exp_0", "exp_1"]), "signs": np.ones(2, np.int8)}}
    write_maps(maps_dir, base, extra={"dynamic": {"maps": {"color": {"file": "dynamic/color.npz"}}}},
               npz_files=keys)
    with np.load(maps_dir / "dynamic" / "color.npz") as z:
        np.testing.assert_array_equal(z["deltas"], keys["dynamic/color.npz"]["deltas"])
    assert json.loads((maps_dir / "maps.json").read_text())["dynamic"]["maps"]["color"]["file"] == "dynamic/color.npz"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind

    second = {"dynamic/color.npz": {**keys["dynamic/color.npz"], "deltas": np.full((2, R, R, 3), 0.2, np.float16)}}
    write_maps(maps_dir, {n: m + 0.1 for n, m in base.items()}, npz_files=second)
    (backup,) = (maps_dir / "backups").iterdir()
    with np.load(backup / "dynamic" / "color.npz") as z:  # the first set's keys, with the first set's maps
        assert float(z["deltas"].max()) == pytest.approx(0.1, abs=1e-3)
    with np.load(maps_dir / "dynamic" / "color.npz") as z:
        assert float(z["deltas"].max()) == pytest.approx(0.2, abs=1e-3)

    before = (maps_dir / "maps.json").read_bytes()
    bad = {"dynamic/color.npz": {**keys["dynamic/color.npz"], "deltas": np.full((2, R, R, 3), np.nan, np.float16)}}
    with pytest.raises(MapsError, match="color.npz"):
        write_maps(maps_dir, base, npz_files=bad)
    assert (maps_dir / "maps.json").read_bytes() == before
    loaded, _ = load_maps(maps_dir)
    assert float(loaded["color"].min()) == pytest.approx(0.35, abs=1e-3)  # the second set, untouched
