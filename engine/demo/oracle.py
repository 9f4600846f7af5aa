"""The oracle completion generator (issue 16): the demo's true Cycles renders of the requested
views — the honest ceiling of FATE §3.4's pipeline, not a claim about any generative model.

Use: ``--completion_generator engine.demo.oracle:generate --completion_options <views folder>``
where the folder is the main job's views stage (``views.json`` + ``<name>.png``,
:mod:`engine.demo.views`). Every requested camera must be one the folder has a render of (the
main job renders the bake's pseudo views for this).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.errors import CompletionError

TOLERANCE_DEG = 1e-3
"""Largest difference of a requested view's yaw or pitch from a rendered one (degrees). Views are
matched by their place on the orbit, not by camera matrix: the bake places its orbit around the
avatar's (tracked) head, the views stage around the true head, and the two differ by the
tracking error — which the oracle's score then honestly includes."""


def generate(views) -> np.ndarray:
    """True RGBA renders [V, H, W, 4] float32 of ``views`` (an ``engine.bake.pseudo_views.PseudoViews``).

    Raises:
        CompletionError: no views folder in ``views.options``, or a view without a true render.
    """
    from engine.io.images import read_image

    folder = Path(views.options) if views.options else None
    if folder is None or not (folder / "views.json").is_file():
        raise CompletionError(f"engine.demo.oracle:generate needs --completion_options <views folder with views.json>, "
                              f"found {views.options!r}")
    stored = json.loads((folder / "views.json").read_text())["views"]
    if any(v.get("set") == "pseudo" for v in stored):  # rendered at the bake's pseudo-view cameras
        stored = [v for v in stored if v.get("set") == "pseudo"]
    angles = np.array([[v["yaw"], v["pitch"]] for v in stored], np.float64)
    out = []
    for k in range(len(views.viewmats)):
        want = np.array([float(views.yaw_deg[k]), float(views.pitch_deg[k])])
        err = np.abs((angles - want[None] + 180.0) % 360.0 - 180.0).max(axis=1)
        j = int(np.argmin(err))
        if err[j] > TOLERANCE_DEG:
            raise CompletionError(f"engine.demo.oracle:generate: {folder} has no true render of view {k} "
                                  f"(yaw {want[0]:g}°, pitch {want[1]:g}°; closest differs by {err[j]:.3g}°)")
        rgba = read_image(folder / f"{stored[j]['name']}.png").astype(np.float32)
        out.append(rgba if rgba.shape[-1] == 4 else np.concatenate([rgba, np.ones_like(rgba[..., :1])], -1))
    return np.stack(out)


def generate_synthetic(views) -> np.ndarray:
    """The oracle of engine-only tests: the engine's dense ground-truth demo head
    (:func:`engine.demo.synthetic.render_neutral_views`, UV resolution ``views.options`` or 384)
    at the requested views — the truth of sequences written by ``engine.demo.synthetic``.
    Returns RGBA [V, H, W, 4] float32."""
    from engine.demo.synthetic import render_neutral_views
    from engine.model.demo_head import build_demo_head

    V, H, W = views.alpha.shape
    res = int(views.options) if str(views.options).strip().isdigit() else 384
    return render_neutral_views(build_demo_head(), views.viewmats, views.K, W, H, gt_uv_resolution=res)
