"""The strategy for a config (``densify.strategy``)."""

from __future__ import annotations

from engine.train.densify.base import Strategy
from engine.train.densify.config import DensifyConfig
from engine.train.densify.sampling import SamplingStrategy
from engine.train.densify.temporal import TemporalStrategy
from engine.train.densify.threshold import ThresholdStrategy

STRATEGIES: dict[str, type[Strategy]] = {
    "sampling": SamplingStrategy,
    "threshold": ThresholdStrategy,
    "temporal": TemporalStrategy,
    "none": Strategy,
}
"""``densify.strategy`` value → strategy class."""


def make_strategy(config: DensifyConfig) -> Strategy:
    """The strategy named by ``config.strategy`` (validated by DensifyConfig)."""
    return STRATEGIES[config.strategy](config)
