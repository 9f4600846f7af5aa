"""`python -m engine bench` suites at toy sizes: they run and report what docs/benchmarks.md shows."""

from __future__ import annotations

import json

from engine.bench.config import BenchConfig
from engine.bench.suites import format_tables, run_bench


def test_train_and_bake_suites_report_their_rows(tmp_path):
    cfg = BenchConfig(suite="train,bake", steps=20, frames=6, resolution=32, bake_steps=3, bake_resolution=32,
                      bake_channels=8, device="cpu", workdir=str(tmp_path), out=str(tmp_path / "bench.json"))
    res = run_bench(cfg)
    assert json.loads((tmp_path / "bench.json").read_text())["bake"] == res["bake"]
    assert [r["bake"] for r in res["bake"]] == ["init=direct", "init=direct, appearance only", "init=noise (FATE)"]
    for row in res["bake"]:
        assert row["psnr_baked"] > 10 and abs(row["cost_db"] - (row["psnr_trained"] - row["psnr_baked"])) < 0.011
        assert 0 < row["tv_color"] and 0 < row["tv_direct_fit"]
    assert [r["steps"] for r in res["bake"]] == [3, 3, 3]  # FATE's bake (init=noise) has no warm-up
    assert res["train"][0]["steps"] == 20
    assert "### bake" in format_tables(res) and "| init=noise (FATE) |" in format_tables(res)


def test_binding_crops_centre_on_the_mouth_and_span_both_eyes():
    from engine.bench.binding_ablation import crop_boxes

    boxes = crop_boxes({"mouth": (64.0, 90.0), "left_eye": (50.0, 50.0), "right_eye": (78.0, 52.0)}, 128, 128)
    assert boxes["mouth"] == (74, 106, 48, 80)  # 0.25 · 128 = 32 px square around (64, 90)
    assert boxes["eyes"] == (34, 68, 34, 94)  # both centres, 16 px margin on every side
    assert crop_boxes({"mouth": (2.0, 125.0)}, 128, 128) == {"mouth": (109, 128, 0, 18)}  # clipped


def test_binding_suite_reports_every_variant(tmp_path):
    res = run_bench(BenchConfig(suite="binding", steps=4, frames=6, resolution=32, device="cpu",
                                workdir=str(tmp_path)))
    rows = {r["variant"]: r for r in res["binding"]}
    assert list(rows) == ["hard + sampling (FATE defaults)", "hard + temporal", "soft + sampling",
                          "soft + temporal (STAvatar)"]
    for name, r in rows.items():
        assert r["psnr"] > 10 and r["mouth_psnr"] > 5 and r["eye_psnr"] > 5 and r["s_per_step"] > 0
        assert isinstance(r["psnr_static"], float) == name.startswith("soft")
    cost = res["binding_step_cost"]
    assert [r["variant"] for r in cost] == list(rows) and cost[0]["ratio"] == 1.0
    assert "### binding" in format_tables(res)


def test_gain_kept_compares_each_gain_with_its_own_static_counterpart():
    """The appearance suite's "gain kept" (issue 19): the keys' mouth-crop gain over the static
    *baked* maps against the dynamic model's gain over the static *trained* avatar (the bench's
    2026-12-02 run: 1.94 of 1.92 dB kept); None when the dynamic model gains nothing."""
    from engine.bench.appearance_ablation import _gain_kept

    row = lambda db: {"mouth_psnr": db}  # noqa: E731
    assert _gain_kept(row(30.46), row(28.52), row(33.16), row(31.24)) == 101.0
    assert _gain_kept(row(29.0), row(28.0), row(33.0), row(31.0)) == 50.0
    assert _gain_kept(row(29.0), row(28.0), row(31.0), row(31.0)) is None
