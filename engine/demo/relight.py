"""The main job's relighting test (issue 18): a relightable avatar beside the static one.

Stages, after the main job's Blender stage (one progress bar each):

1. ``relight_cycles`` — Blender (``python -m addon.demo relight_cycles``) renders the demo
   subject's test frames again with Cycles under each held-out light rig of
   ``addon/demo/lights.py`` (a key light from the other side; a warm area key and a cool point
   fill): the ground truth of the test;
2. ``train_pbr`` — the same training as the main job's avatar with ``appearance = "pbr"``
   (HRAvatar's albedo, roughness, F0 under a learnt environment, ``engine/model/pbr.py``);
3. ``bake_pbr`` — its albedo / roughness / F0 / geometry maps and the environment;
4. ``relight_splats`` — Blender (``python -m addon.demo relight_splats``): Import Avatar of the
   relightable avatar, FATE Splats renders of the test frames under the training rig, each
   held-out rig (the same lights Cycles had) and the learnt environment's World; saves
   ``relight.blend``.

``metrics.json`` gains ``relight``: PSNR/SSIM against Cycles under each held-out rig for the
relightable avatar and for the static one (its Blender render, which cannot follow the light),
and under the training light for both — the relightable avatar's engine render with its learnt
environment (what training fitted), its FATE Splats render under the learnt World and under the
training rig rebuilt from Blender lights.

Frames. The tracker crops the video (one square crop for the clip, ``tracking/report.json``) and
masks each frame (the person, and the fitted head); the Cycles frames under the held-out lights
are cropped the same way (:func:`crop_like_dataset`) and composited on white with the test
frame's mask, so that they show what the training-light test frames show, lit otherwise.

Exposure. Frames under one light cannot tell a bright light on a dark face from the reverse; the
relightable avatar's albedo-scale gauge (``engine/train/pbr_losses.py``: the mean learnt
irradiance is 1) picks one, which the true room need not share. Lit by Blender lamps of the true
strengths, the avatar is off by that one factor — as an artist would, the test matches the lamps'
strength once: one scalar ``exposure`` (:func:`exposure_gain`, least squares in linear RGB) makes
the FATE Splats render under the rebuilt *training* rig match the training frames, and the same
factor multiplies every rig (:func:`expose`; the shading is linear in the lights). It uses only
training frames, never the held-out truth; ``pbr_blender_rig_raw`` is the render before it.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from engine.demo.config import DemoConfig
from engine.demo.report import (
    contact_sheet,
    image_metrics,
    load_rgb,
    render_test_frames,
)
from engine.demo.stages import StageClock, run_stage_process

log = logging.getLogger(__name__)

HELD_OUT = ("key_mirrored", "warm_cool")
"""The held-out light rigs (``addon.demo.lights.HELD_OUT``; the add-on owns their definition)."""
TRAIN_RIG = "train"
"""The rig the video was rendered under."""
LEARNT = "learnt"
"""The FATE Splats renders under the avatar's learnt-environment World."""
STAGES = ("relight_cycles", "train_pbr", "bake_pbr", "relight_splats")
"""The stages this module adds, in order."""


class RenamedStageSink:
    """Forwards a nested train or bake job's events with its own stage (``train``, ``bake``) renamed
    ``stage`` and any other of its stages as ``<stage>/<its stage>``: the pbr avatar's bars are its
    own, not the main avatar's."""

    def __init__(self, sink, stage: str):
        self.sink, self.stage = sink, stage

    def progress(self, stage: str, step: int, total: int, **metrics) -> None:
        if self.sink is not None:
            name = self.stage if stage in ("train", "bake") else f"{self.stage}/{stage}"
            self.sink.progress(name, step, total, **metrics)

    def log(self, message: str, level: str = "info") -> None:
        if self.sink is not None:
            self.sink.log(message, level)

    def preview(self, path, **info) -> None:
        if self.sink is not None and hasattr(self.sink, "preview"):
            self.sink.preview(path, **info)


def run_relight(cfg: DemoConfig, *, py: str, out: Path, test_idx: list[int], names: list[str], train_config,
                bake_config, final_cfg: dict, st: StageClock, sink=None, cancel=None, env: dict | None = None) -> dict:
    """Runs the relighting stages (module doc) and returns the ``relight`` metrics.

    Args:
        cfg: the resolved main-job config.
        py: the Python with bpy for the Blender stages.
        out: the job's output folder (``subject``, ``work``, ``renders``, ``logs`` inside).
        test_idx: the test frames (0-based); names: their file stems.
        train_config: the main avatar's ``TrainConfig`` (trained again with ``appearance = "pbr"``,
            the same schedule, into ``avatar_pbr``).
        bake_config: a function ``avatar folder → BakeConfig`` (the main job's).
        final_cfg: the Blender stage's config (extension id, background).
        st: the job's stage clock.
        env: environment of the Blender stages (``BLENDER_USER_RESOURCES``).
    Returns:
        the ``relight`` entry of metrics.json (:func:`relight_metrics`).
    """
    from engine.bake.baker import bake
    from engine.io.atomic import write_json
    from engine.train.trainer import train

    work, logs, renders = out / "work", out / "logs", out / "renders"
    avatar = out / "avatar_pbr"

    st.start("relight_cycles", len(HELD_OUT) * len(test_idx))
    rc = {"subject": str(out / "subject"), "out": str(work / "relight_cycles"), "samples": cfg.samples,
          "seed": cfg.seed, "test_frames": test_idx}
    write_json(work / "relight_cycles.json", rc)
    run_stage_process([py, "-m", "addon.demo", "relight_cycles", "--config", str(work / "relight_cycles.json")],
                      "relight_cycles", logs / "relight_cycles.log", sink, cancel)
    st.end()

    st.start("train_pbr", train_config.steps)
    train(replace(train_config, appearance="pbr", output=str(avatar)), RenamedStageSink(sink, "train_pbr"), cancel)
    st.end()
    bc = bake_config(avatar)
    st.start("bake_pbr", bc.steps)
    bake(bc, RenamedStageSink(sink, "bake_pbr"), cancel)
    st.end()

    st.start("relight_splats", (len(HELD_OUT) + 2) * len(test_idx))
    rs = {"extension_id": final_cfg["extension_id"], "avatar": str(avatar), "out": str(renders / "relight_blender"),
          "test_frames": test_idx, "blend": str(out / "relight.blend")}
    write_json(work / "relight_splats.json", rs)
    run_stage_process([py, "-m", "addon.demo", "relight_splats", "--config", str(work / "relight_splats.json")],
                      "relight_splats", logs / "relight_splats.log", sink, cancel, env=env)
    st.end()
    return relight_metrics(out, avatar, names)


def _load_folder(folder: Path, names: list[str]) -> list[np.ndarray]:
    return [load_rgb(folder / f"{n}.png") for n in names]


def _load_rgba(folder: Path, names: list[str]) -> list[np.ndarray]:
    from engine.io.images import read_image

    return [read_image(folder / f"{n}.png").astype(np.float32) for n in names]


def _lin(srgb: np.ndarray) -> np.ndarray:
    import torch

    from engine.model.pbr import srgb_to_linear

    return srgb_to_linear(torch.from_numpy(np.ascontiguousarray(srgb))).numpy()


def exposure_gain(renders: list[np.ndarray], truths: list[np.ndarray]) -> float:
    """The one exposure of the Blender lights that matches the training frames (module doc,
    "Exposure"): the least-squares scalar ``g`` with ``g·render ≈ truth`` in linear RGB over the
    pixels the render covers (alpha > 0.99).

    Args:
        renders: RGBA renders under the training rig, sRGB, straight alpha [H, W, 4].
        truths: the training frames on white [H, W, 3].
    """
    num = den = 0.0
    for r, t in zip(renders, truths):
        m = r[..., 3] > 0.99
        a, b = _lin(r[..., :3])[m], _lin(t)[m]
        num, den = num + float((a * b).sum()), den + float((a * a).sum())
    return num / den if den > 0 else 1.0


def expose(rgba: np.ndarray, gain: float) -> np.ndarray:
    """An RGBA render [H, W, 4] as if every light were ``gain`` times stronger (the shading is
    linear in the lights), composited on white. [H, W, 3] float32"""
    import torch

    from engine.model.pbr import linear_to_srgb

    rgb = linear_to_srgb(torch.from_numpy(_lin(rgba[..., :3]) * gain).clamp(0, 1)).numpy()
    a = rgba[..., 3:4]
    return (rgb * a + (1 - a)).astype(np.float32)


def dataset_crop(dataset: Path):
    """The tracker's clip-wide crop of the video frames (``tracking/report.json``), or None when
    the dataset's images are the frames themselves (``--track false``).

    Raises:
        DemoError: the report is unreadable or has no valid ``crop`` (naming the file).
    """
    import json

    from engine.errors import DemoError
    from engine.track.crop import Crop

    report = Path(dataset) / "tracking" / "report.json"
    if not report.is_file():
        return None
    try:
        c = json.loads(report.read_text())["crop"]
        crop = Crop(int(c["x0"]), int(c["y0"]), int(c["side"]), int(c["resolution"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DemoError(f"{report}: no readable crop ({type(exc).__name__}: {exc}); the relighting test "
                        "needs the tracker's crop to compare the held-out frames") from exc
    if crop.side < 1 or crop.resolution < 1:
        raise DemoError(f"{report}: crop side and resolution must be >= 1, found {crop.side}, {crop.resolution}")
    return crop


def crop_like_dataset(img: np.ndarray, crop) -> np.ndarray:
    """A video frame composited on white [H, W, 3] float → the dataset's image of it: the
    tracker's crop (:meth:`engine.track.crop.Crop.apply`, padding white like the composited
    background); unchanged when ``crop`` is None. [R, R, 3] float32"""
    if crop is None:
        return img
    return crop.apply(np.ascontiguousarray(img, np.float32), fill=1.0)


def relight_metrics(out: Path, avatar: Path, names: list[str]) -> dict:
    """PSNR/SSIM of the relighting test (module doc) and ``relight_sheet.png``.

    Returns:
        {"held_out": {rig: {"pbr": m, "static": m, "gain_db": pbr − static}}, "training_light":
        {"pbr_engine": m, "pbr_blender_learnt": m, "pbr_blender_rig": m, "static": m,
        "loss_db": static − pbr_engine}, "lights": [...], "frames": n} with m = image_metrics.
    """
    import torch

    from engine.data import load_sequence

    renders = out / "renders"
    seq = load_sequence(out / "dataset")
    crop = dataset_crop(out / "dataset")  # the Cycles frames → the tracked images' frame
    index = {n: i for i, n in enumerate(seq.frame_names)}
    loaded = [seq.load_image(index[n], background=(1.0, 1.0, 1.0)) for n in names]
    gts = [img.numpy().astype(np.float32) for img, _ in loaded]
    masks = [m.numpy().astype(np.float32) for _, m in loaded]  # the tracker's person/head masks
    static = _load_folder(renders / "test_blender_baked", names)
    blender = renders / "relight_blender"
    _, pbr_engine = render_test_frames(avatar, torch.device("cpu"), from_maps=True)
    from engine.io.images import write_png

    for n, img in zip(names, pbr_engine):
        write_png(renders / "test_engine_pbr" / f"{n}.png", img)
    gain = exposure_gain(_load_rgba(blender / TRAIN_RIG, names), gts)
    held = {}
    sheet_rows = []
    for rig in HELD_OUT:
        truth = [crop_like_dataset(t, crop) * a + (1 - a)  # what the dataset keeps of the frame
                 for t, a in zip(_load_folder(out / "work" / "relight_cycles" / rig, names), masks)]
        pbr = [expose(r, gain) for r in _load_rgba(blender / rig, names)]
        m_pbr, m_static = image_metrics(pbr, truth), image_metrics(static, truth)
        held[rig] = {"pbr": m_pbr, "static": m_static, "gain_db": round(m_pbr["psnr"] - m_static["psnr"], 3)}
        k = len(names) // 2
        sheet_rows.append([truth[k], pbr[k], static[k]])
    m_engine = image_metrics(pbr_engine, gts)
    m_static = image_metrics(static, gts)
    training = {"pbr_engine": m_engine, "pbr_blender_learnt": image_metrics(_load_folder(blender / LEARNT, names), gts),
                "pbr_blender_rig_raw": image_metrics(_load_folder(blender / TRAIN_RIG, names), gts),
                "pbr_blender_rig": image_metrics([expose(r, gain) for r in _load_rgba(blender / TRAIN_RIG, names)], gts),
                "static": m_static, "loss_db": round(m_static["psnr"] - m_engine["psnr"], 3)}
    contact_sheet(sheet_rows, ["Cycles (held-out light)", "relightable (FATE Splats)", "static"],
                  out / "relight_sheet.png")
    return {"lights": list(HELD_OUT), "frames": len(names), "held_out": held, "training_light": training,
            "exposure": round(gain, 4),
            "sheet": "relight_sheet.png", "blend": "relight.blend",
            "note": "static = the main avatar's Blender render (it cannot follow a light); pbr_engine = the "
                    "relightable avatar's baked maps under its learnt environment (engine)"}


def summary(relight: dict) -> dict:
    """The headline numbers (dB) for the job's summary."""
    return {f"relight_gain_{rig}": v["gain_db"] for rig, v in relight["held_out"].items()} | {
        "relight_training_loss": relight["training_light"]["loss_db"]}
