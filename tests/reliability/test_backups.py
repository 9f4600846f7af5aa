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
