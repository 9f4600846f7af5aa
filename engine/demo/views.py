"""The main job's 360° ground truth (issue 16): Cycles renders all around the demo head, never
used for training, and the ``full_head`` report measured against them.

Two sets of views of the neutral head (zero expression and pose), on the orbit the bake's
pseudo views use (:func:`engine.bake.pseudo_views.orbit_rig`, built here from the subject):

- ``eval``: yaw 0–360° (``view_yaws`` steps) at pitch 0, plus ±``view_pitch_deg`` at 0/90/180/270°
  — only measured on;
- ``pseudo``: the bake's own pseudo views (:data:`engine.bake.pseudo_views.DEFAULT_VIEWS`, 45°
  off the eval yaws' grid) — what the oracle generator (:mod:`engine.demo.oracle`) returns, so
  the oracle-completed avatar is still measured on views it never saw.

``<views>/views.json`` lists every view (name, set, yaw, pitch, viewmat, K); the Cycles renders
are ``<views>/<name>.png`` (RGBA, straight alpha).

Metrics per view (renders and truth composited on white): masked PSNR inside the union of the
true and the rendered silhouettes (alpha >= 0.5), and coverage = the share of true head pixels
(alpha >= 0.5) that the avatar renders with alpha >= 0.9. Buckets by yaw: front (±30°), sides
(60–120° and 240–300°), back (150–210°).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch

from engine.bake.pseudo_views import DEFAULT_VIEWS, OrbitRig, orbit_rig, ring_viewmats

BUCKETS = {"front": ((0.0, 30.0), (330.0, 360.0)), "sides": ((60.0, 120.0), (240.0, 300.0)),
           "back": ((150.0, 210.0),)}
"""Yaw ranges in degrees (inclusive) of the report's buckets."""


def eval_views(yaws: int, pitch_deg: float) -> list[tuple[float, float]]:
    """(yaw, pitch) of the eval set: ``yaws`` steps over 360° at pitch 0, plus ±pitch at the
    four quarter yaws when ``pitch_deg`` > 0."""
    views = [(360.0 * k / yaws, 0.0) for k in range(yaws)]
    if pitch_deg > 0:
        views += [(y, s * pitch_deg) for y in (0.0, 90.0, 180.0, 270.0) for s in (1, -1)]
    return views


def bucket(yaw_deg: float) -> str | None:
    """The report bucket of a yaw (None outside every bucket)."""
    y = yaw_deg % 360.0
    for name, ranges in BUCKETS.items():
        if any(lo - 1e-6 <= y <= hi + 1e-6 for lo, hi in ranges):
            return name
    return None


def write_views_subject(folder: Path, subject: Path, yaws: int, pitch_deg: float) -> list[dict]:
    """The subject posed neutral, filmed from the eval and pseudo views: a subject folder
    (``blender/head.npz``, ``albedo.png``, ``tracking.npz`` with one frame per view) that the
    Cycles stage renders as it renders the sequence, and ``views.json``.

    Returns:
        the views: name, set ("eval" | "pseudo"), yaw, pitch (degrees), viewmat, K.
    """
    from engine.io.atomic import write_json, write_npz

    folder, subject = Path(folder), Path(subject)
    (folder / "blender").mkdir(parents=True, exist_ok=True)
    shutil.copy2(subject / "blender" / "head.npz", folder / "blender" / "head.npz")
    shutil.copy2(subject / "albedo.png", folder / "albedo.png")
    with np.load(subject / "tracking.npz", allow_pickle=False) as z:
        tr = {k: z[k] for k in z.files}
    with np.load(subject / "blender" / "head.npz", allow_pickle=False) as z:
        verts = z["v_template"]
    rig = orbit_rig(verts, tr["viewmat"], tr["translation"], tr["K"][0], int(tr["width"]), int(tr["height"]))
    sets = [("eval", v) for v in eval_views(yaws, pitch_deg)] + [("pseudo", v) for v in DEFAULT_VIEWS]
    mats = ring_viewmats(rig, [v for _, v in sets])
    views = [{"name": f"{kind}_{k:02d}", "set": kind, "yaw": float(y), "pitch": float(p),
              "viewmat": mats[k].tolist(), "K": [list(r) for r in rig.K]}
             for k, (kind, (y, p)) in enumerate(sets)]
    n = len(views)
    write_npz(folder / "tracking.npz", shape=tr["shape"], expr=np.zeros((n, tr["expr"].shape[1]), np.float32),
              pose=np.zeros((n, tr["pose"].shape[1]), np.float32), translation=np.zeros((n, 3), np.float32),
              viewmat=mats.astype(np.float32), K=np.repeat(np.asarray(rig.K, np.float32)[None], n, 0),
              width=tr["width"], height=tr["height"], frame_names=np.array([v["name"] for v in views], dtype=np.str_),
              split=np.zeros(n, np.int8))
    write_json(folder / "views.json", {"format": "fate-demo-views", "format_version": 1, "views": views,
                                       "rig": {"centre": list(rig.centre), "radius": rig.radius,
                                               "width": rig.width, "height": rig.height}})
    return views


def collect_renders(views_dir: Path, renders: Path) -> None:
    """Renames the Cycles stage's ``NNNNN.png`` (frame order) to ``<name>.png`` in ``views_dir``."""
    views = json.loads((Path(views_dir) / "views.json").read_text())["views"]
    for k, v in enumerate(views):
        shutil.move(str(Path(renders) / f"{k:05d}.png"), str(Path(views_dir) / f"{v['name']}.png"))


def read_views(views_dir: Path, kind: str | None = None) -> list[dict]:
    """views.json's entries (of one set when ``kind`` is given)."""
    views = json.loads((Path(views_dir) / "views.json").read_text())["views"]
    return [v for v in views if kind is None or v["set"] == kind]


def read_views_rig(views_dir: Path) -> dict | None:
    """views.json's orbit around the true head (centre, radius in meters, image size), or None
    (older files)."""
    return json.loads((Path(views_dir) / "views.json").read_text()).get("rig")


# ---------------------------------------------------------------------- rendering and metrics
@torch.no_grad()
def render_views(avatar_dir: Path, views: list[dict], device: torch.device, from_maps: bool,
                 maps_dir: Path | None = None, rig: dict | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The avatar at neutral expression and pose from each view, over white.

    Args:
        rig: the views' orbit around the true head (:func:`read_views_rig`). Given, each view is
            placed around the *avatar's* neutral head instead — the same (yaw, pitch), radius,
            intrinsics and image size, centred on the bounding-box centre of the avatar's head
            model at its tracked shape (:func:`engine.bake.pseudo_views.orbit_rig`'s centre): a
            tracked avatar lives in its tracker's frame, not the subject's, and the raw view
            cameras would measure that registration instead of the head. None: the views'
            own cameras (exact parameters: the same).
    Returns:
        per view (rgb [H, W, 3], alpha [H, W]) float32.
    """
    from engine.avatar_folder import load_avatar
    from engine.geometry.cameras import Camera
    from engine.maps import load_maps_into

    loaded = load_avatar(Path(avatar_dir), device)
    av = loaded.avatar
    if from_maps:
        load_maps_into(av.gaussians, Path(maps_dir or Path(avatar_dir) / "maps"), av.head)
    tr = loaded.tracking
    shape = torch.as_tensor(tr["shape"], device=device)
    expr = torch.zeros(av.blendshapes.delta_exprdirs.shape[-1], device=device)
    pose = torch.zeros(av.head.num_joints * 3, device=device)
    white = torch.ones(3, device=device)
    width, height = int(tr["width"]), int(tr["height"])
    mats = [np.asarray(v["viewmat"], np.float64) for v in views]
    if rig is not None:
        verts, _ = av.flame(shape[None], expr[None], pose[None])
        v0 = verts[0].cpu().numpy()
        own = OrbitRig(tuple(float(c) for c in 0.5 * (v0.min(0) + v0.max(0))), float(rig["radius"]),
                       tuple(tuple(r) for r in views[0]["K"]), int(rig["width"]), int(rig["height"]))
        mats = list(ring_viewmats(own, [(v["yaw"], v["pitch"]) for v in views]))
        width, height = own.width, own.height
    out = []
    for v, m in zip(views, mats):
        cam = Camera(torch.tensor(m, dtype=torch.float32, device=device),
                     torch.tensor(v["K"], dtype=torch.float32, device=device), width, height)
        r = av.render(shape, expr, pose, torch.zeros(3, device=device), cam, white)
        out.append((r.image.clamp(0, 1).cpu().numpy().astype(np.float32), r.alpha[..., 0].clamp(0, 1).cpu().numpy()))
    return out


def view_metrics(rgb: np.ndarray, alpha: np.ndarray, true_rgba: np.ndarray) -> dict:
    """Masked PSNR (dB) and coverage of one render against the true RGBA (module doc)."""
    a_t = true_rgba[..., 3]
    truth = true_rgba[..., :3] * a_t[..., None] + (1 - a_t[..., None])
    union = (a_t >= 0.5) | (alpha >= 0.5)
    head = a_t >= 0.5
    mse = float(np.square(rgb - truth)[union].mean()) if union.any() else 0.0
    return {"psnr": round(-10 * math.log10(max(mse, 1e-12)), 3),
            "coverage": round(float((alpha[head] >= 0.9).mean()) if head.any() else 1.0, 4)}


def full_head_report(avatars: dict[str, tuple[Path, bool, Path | None]], views_dir: Path, device: torch.device,
                     renders: Path | None = None) -> dict:
    """``metrics.json``'s ``full_head``: per avatar, per bucket mean masked PSNR, mean and lowest
    coverage, and the per-view numbers.

    Args:
        avatars: label → (avatar folder, from its maps?, maps folder or None for <avatar>/maps).
        views_dir: the views stage's folder (views.json + Cycles PNGs).
        device: where to render.
        renders: where to write ``views_<label>/<name>.png`` (None = nowhere).
    """
    from engine.io.images import read_image, write_png

    views, rig = read_views(views_dir, "eval"), read_views_rig(views_dir)
    truths = [read_image(Path(views_dir) / f"{v['name']}.png") for v in views]
    report: dict = {"views": [{"name": v["name"], "yaw": v["yaw"], "pitch": v["pitch"]} for v in views],
                    "buckets": {k: [list(r) for r in rs] for k, rs in BUCKETS.items()},
                    "true_head_alpha": 0.5, "covered_alpha": 0.9,
                    "cameras": "around each avatar's own head" if rig is not None else "the views' own"}
    for label, (folder, from_maps, maps_dir) in avatars.items():
        rendered = render_views(folder, views, device, from_maps, maps_dir, rig)
        per_view = [view_metrics(rgb, a, t) for (rgb, a), t in zip(rendered, truths)]
        if renders is not None:
            for v, (rgb, _) in zip(views, rendered):
                write_png(Path(renders) / f"views_{label}" / f"{v['name']}.png", rgb)
        entry: dict = {"per_view": per_view}
        for name in BUCKETS:
            sel = [m for v, m in zip(views, per_view) if bucket(v["yaw"]) == name]
            if sel:
                entry[name] = {"psnr": round(float(np.mean([m["psnr"] for m in sel])), 3),
                               "coverage": round(float(np.mean([m["coverage"] for m in sel])), 4),
                               "coverage_min": round(float(min(m["coverage"] for m in sel)), 4)}
        entry["coverage_min"] = round(float(min(m["coverage"] for m in per_view)), 4)
        report[label] = entry
    return report


# ---------------------------------------------------------------------- the main job's stages
def run_views_stage(cfg, subject: Path, work: Path, logs: Path, python: str, clock, sink=None, cancel=None) -> Path:
    """The ``views`` stage: Cycles renders the neutral subject from every eval and pseudo view
    (same scene, light and samples as the ``cycles`` stage). Returns the views folder."""
    from engine.demo.stages import run_stage_process
    from engine.io.atomic import write_json

    vsub, views_dir = Path(work) / "views_subject", Path(work) / "views"
    views = write_views_subject(vsub, subject, cfg.view_yaws, float(cfg.view_pitch_deg))
    clock.start("views", len(views))
    views_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(vsub / "views.json", views_dir / "views.json")
    write_json(Path(work) / "views.json", {"subject": str(vsub), "out": str(Path(work) / "views_cycles"),
                                           "samples": cfg.samples, "seed": cfg.seed, "stage": "views",
                                           "camera": "TRACKED"})
    run_stage_process([python, "-m", "addon.demo", "cycles", "--config", str(Path(work) / "views.json")],
                      "views", Path(logs) / "views.log", sink, cancel)
    collect_renders(views_dir, Path(work) / "views_cycles")
    clock.end(len(views))
    return views_dir


def run_full_head_stage(bake_cfg, avatar: Path, work: Path, renders: Path, views_dir: Path, device, clock,
                        sink=None, cancel=None) -> dict:
    """The ``full_head`` stage: the oracle-completed avatar (the bake's full-head stage redone on a
    copy with :mod:`engine.demo.oracle`), then :func:`full_head_report` for the trained avatar,
    the baked one before completion (``seen``), the completed and the oracle-completed ones.
    Returns the report."""
    import dataclasses

    from engine.avatar_folder import AvatarFolder
    from engine.bake.baker import bake
    from engine.bake.pseudo_views import read_seen_maps
    from engine.maps import write_maps

    clock.start("full_head", 2 * bake_cfg.full_head_steps + 4)
    oracle = Path(work) / "avatar_oracle"
    if oracle.exists():
        shutil.rmtree(oracle)
    shutil.copytree(avatar, oracle, ignore=shutil.ignore_patterns("renders", "checkpoints", "previews"))
    bake(dataclasses.replace(bake_cfg, avatar=str(oracle), full_head_only=True,
                             completion_generator="engine.demo.oracle:generate", completion_options=str(views_dir)),
         sink, cancel)
    seen = Path(work) / "maps_seen"  # the bake before completion, for the front's cost of completing
    write_maps(seen, read_seen_maps(AvatarFolder(avatar).path(AvatarFolder.MAPS_SEEN)))
    report = full_head_report({"trained": (avatar, False, None), "seen": (avatar, True, seen),
                               "completed": (avatar, True, None), "oracle": (oracle, True, None)},
                              views_dir, device, renders)
    clock.end(2 * bake_cfg.full_head_steps + 4)
    return report


def back_view_row(views_dir: Path, renders: Path) -> list[np.ndarray]:
    """Contact-sheet row of the back view (yaw 180°, pitch 0): truth (Cycles, over white),
    trained, completed, oracle-completed."""
    from engine.io.images import read_image

    v = min(read_views(views_dir, "eval"), key=lambda v: abs(v["yaw"] - 180.0) + abs(v["pitch"]))
    t = read_image(Path(views_dir) / f"{v['name']}.png")
    truth = t[..., :3] * t[..., 3:4] + (1 - t[..., 3:4])
    return [truth.astype(np.float32)] + [read_image(Path(renders) / f"views_{k}" / f"{v['name']}.png")[..., :3]
                                         for k in ("trained", "completed", "oracle")]
