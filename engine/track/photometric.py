"""Photometric refinement of the landmark fit (placeholder until the analysis-by-synthesis stage lands)."""

from __future__ import annotations


def refine_photometric(cfg, head, fit, principal, images, masks, frames, work, clock, device):
    """Returns ``fit`` unchanged (see module doc)."""
    return fit
