"""Session fixtures shared by the engine acceptance tests: one synthetic ground-truth sequence of
the demo head and one avatar trained on it (CPU-sized), reused by the training, baking and
editing tests so CI pays for them once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The repository root holds the extension's __init__.py, so pytest puts the folder *above* it on
# sys.path first; a sibling folder named like one of our packages (a checkout called "addon")
# would then shadow ours. Put the repository root first.
_REPO = str(Path(__file__).resolve().parents[1])
if sys.path[0] != _REPO:
    sys.path.insert(0, _REPO)

# A CPU-sized schedule (FATE's own is 30k+ steps on a GPU): a faster colour learning rate and
# densification every 250 steps make 1000 steps enough for the 128² demo sequence. One torch
# thread: deterministic (multi-threaded scatter-adds reorder float sums, and runs drift apart),
# and the fastest setting on a shared 2-core machine.
QUICK_TRAIN = dict(steps=1000, uv_resolution=128, lr_color=1e-2, preview_every=0, checkpoint_every=500, threads=1,
                   seed=0)
QUICK_DENSIFY = dict(start=250, every=250, count=1000, prune_every=250, reset_every=0)


@pytest.fixture(scope="session")
def demo_head():
    from engine.model.demo_head import build_demo_head
    return build_demo_head()


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory, demo_head) -> Path:
    """100 frames at 128² of the dense ground-truth Gaussian head (last 20 % held out)."""
    from engine.demo.config import SyntheticConfig
    from engine.demo.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("demo_dataset")
    return write_synthetic_dataset(root, demo_head, SyntheticConfig(frames=100, resolution=128))


@pytest.fixture(scope="session")
def trained_avatar(tmp_path_factory, demo_dataset) -> Path:
    """The demo avatar trained with QUICK_TRAIN (a few minutes on 2 CPU cores)."""
    from engine.train.config import TrainConfig
    from engine.train.densify.config import DensifyConfig
    from engine.train.trainer import train

    out = tmp_path_factory.mktemp("avatar")
    cfg = TrainConfig(dataset=str(demo_dataset), output=str(out), device="cpu",
                      densify=DensifyConfig(**QUICK_DENSIFY), **QUICK_TRAIN)
    train(cfg)
    return out


@pytest.fixture(scope="session")
def trained_metrics(trained_avatar) -> dict:
    from engine.evaluate.config import EvalConfig
    from engine.evaluate.evaluate import run_eval
    return run_eval(EvalConfig(avatar=str(trained_avatar), split="test", device="cpu"))
