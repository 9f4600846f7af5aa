"""Job configs: JSON/CLI round trips, unknown keys and choice fields (engine.jobs.config)."""

from __future__ import annotations

import argparse

import pytest

from engine.bake.config import BakeConfig
from engine.errors import ConfigError
from engine.jobs.config import add_arguments, apply_arguments, from_dict, to_dict


def _parse(cls, argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser, cls)
    return parser.parse_args(argv)


def test_choice_field_rejects_values_outside_its_literal():
    assert from_dict(BakeConfig, {"init": "noise"}).init == "noise"
    with pytest.raises(ConfigError, match=r"init must be one of \['direct', 'noise'\], found 'random'"):
        from_dict(BakeConfig, {"init": "random"}, "bake.json")


def test_cli_flags_apply_and_choices_are_enforced(capsys):
    cfg = apply_arguments(BakeConfig(), _parse(BakeConfig, ["--init", "noise", "--resolution", "256",
                                                            "--appearance_only", "true"]))
    assert (cfg.init, cfg.resolution, cfg.appearance_only) == ("noise", 256, True)
    # -1 sentinels resolved for init="noise" (FATE's recipe), after the flags are applied
    assert (cfg.rotation_weight, cfg.scale_weight, cfg.final_lr) == (0.1, 0.1, cfg.lr)
    with pytest.raises(SystemExit):
        _parse(BakeConfig, ["--init", "random"])
    assert "invalid choice: 'random'" in capsys.readouterr().err


def test_json_round_trip_keeps_every_field():
    cfg = BakeConfig(resolution=128, depth=3, background=(0.0, 0.5, 1.0), init="noise")
    assert from_dict(BakeConfig, to_dict(cfg)) == cfg


def test_flags_accept_dashes_as_well_as_underscores():
    from engine.evaluate.config import RenderConfig

    args = _parse(RenderConfig, ["--from-maps", "true"])
    assert apply_arguments(RenderConfig(), args).from_maps is True
    assert apply_arguments(RenderConfig(), _parse(RenderConfig, ["--from_maps", "true"])).from_maps is True
