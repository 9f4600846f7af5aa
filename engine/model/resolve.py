"""Which head model a job means: ``"demo"`` (the procedural demo head, not FLAME) or a path."""

from __future__ import annotations

from pathlib import Path

from engine.model.head_model import HeadModel


def resolve_head_model(spec: str) -> HeadModel:
    """"demo" → the procedural demo head (not FLAME); anything else → ``load_head_model(path)``."""
    if spec == "demo":
        from engine.model.demo_head import build_demo_head
        return build_demo_head()
    from engine.model.head_model import load_head_model
    return load_head_model(Path(spec))
