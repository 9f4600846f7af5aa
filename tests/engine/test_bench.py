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
    assert [r["steps"] for r in res["bake"]] == [3, 3, 503]  # init=noise adds its 500 warm-up steps
    assert res["train"][0]["steps"] == 20
    assert "### bake" in format_tables(res) and "| init=noise (FATE) |" in format_tables(res)
