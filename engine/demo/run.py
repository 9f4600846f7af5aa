"""The product's main job (issue 6): a Cycles-rendered demo subject → avatar → Blender.

``python -m engine demo --out out/demo`` runs, with one progress bar per stage:

1. ``subject``  — the procedural demo head (:mod:`engine.model.demo_head`, not FLAME) in the avatar
   export format (``blender/head.npz`` with no learnt deltas), a detailed albedo texture over its
   UV layout (:func:`demo_albedo`) and a talking sequence (expressions, jaw, blinks, head turns
   up to ±30° yaw / ±15° pitch as an orbiting camera, as INSTA has it) in ``tracking.npz``;
2. ``cycles``   — Blender (``python -m addon.demo cycles``) builds the rigged, textured head
   with the add-on's own rig builder, keys the sequence (the head's motion on the rig, a still
   camera) and renders every frame with **Cycles** on the CPU (transparent film, Standard view
   transform) under the video's light rig (``addon/demo/lights.py``), which stays fixed in the
   world while the head turns;
3. ``dataset``  — the renders and the exact parameters in the INSTA layout (``dataset_exact/``, last
   fifth = test); then, as a phone would film it, the Cycles frames become ``work/subject.mp4``
   (``video``) and ``python -m engine track`` recovers the parameters from it (``track``, issue 13)
   into ``dataset/``, which training uses (``--track false``: the exact parameters instead);
4. ``train``    — :func:`engine.train.trainer.train`;
5. ``bake``     — :func:`engine.bake.baker.bake` with ``init="direct"`` (converges within the CPU budget);
6. ``eval``     — PSNR/SSIM of the trained and the baked avatar on the test frames;
7. ``extension``— ``build.py`` builds the Blender extension and installs it into a private
   Blender user folder;
8. ``blender``  — Blender (``python -m addon.demo final``) enables the extension, runs
   Import Avatar, renders the test frames with the "FATE Splats" engine, stamps a logo into the
   colour map (as an artist would in Texture Paint), runs Sync Maps, renders the test frames again
   and a 360° turntable, and saves ``demo.blend``;
8b. ``relight_*`` — the relighting test (``--relight true``, :mod:`engine.demo.relight`): Cycles
   renders the test frames under held-out lights, a relightable (``pbr``) avatar is trained and
   baked the same way and FATE Splats renders it under the same Blender lights;
9. ``report``   — the engine re-splats the edited maps for the same frames (the Blender render must
   agree to >= 35 dB), writes ``metrics.json``, ``contact_sheet.png`` and ``turntable.mp4``.

The Blender stages run in their own interpreter (``bpy`` and ``torch`` never share a process);
they speak the worker protocol (:mod:`engine.demo.stages`) and the rest of their output goes to
``<out>/logs/<stage>.log``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from engine.demo.config import PRESETS, DemoConfig
from engine.demo.dataset import write_dataset
from engine.demo.relight import run_relight
from engine.demo.relight import summary as relight_summary
from engine.demo.report import (
    contact_sheet,
    cpu_name,
    image_metrics,
    load_rgb,
    render_test_frames,
)
from engine.demo.stages import REPO, StageClock, blender_python, run_stage_process
from engine.demo.subject import write_subject
from engine.demo.views import back_view_row, run_full_head_stage, run_views_stage
from engine.errors import ConfigError
from engine.io.video import check_video_writer, write_mp4

log = logging.getLogger(__name__)


EXTENSION_ID = "fate_avatar"
"""Extension id of blender_manifest.toml."""


# ---------------------------------------------------------------------- the job
OUTPUT_DIRS = ("subject", "dataset", "dataset_exact", "avatar", "avatar_pbr", "renders", "logs", "work")
"""Folders the job writes inside ``out`` (removed at the start of a run, with OUTPUT_FILES)."""
OUTPUT_FILES = ("metrics.json", "contact_sheet.png", "turntable.mp4", "demo.blend", "demo.blend1",
                "relight_sheet.png", "relight.blend", "relight.blend1")


def resolve_config(cfg: DemoConfig) -> DemoConfig:
    """``cfg`` with the preset applied to every field left at 0.

    Raises:
        ConfigError: unknown preset or a non-positive size.
    """
    preset = cfg.preset
    if preset == "auto":
        preset = "cuda" if (cfg.device != "cpu" and torch.cuda.is_available()) else "cpu"
    if preset not in PRESETS:
        raise ConfigError(f"demo preset must be one of auto, {', '.join(PRESETS)}; found {cfg.preset!r}")
    values = asdict(cfg)
    for key, default in PRESETS[preset].items():
        if not values[key]:
            values[key] = default
    values["preset"] = preset
    out = DemoConfig(**values)
    if out.frames < 5:
        raise ConfigError(f"demo frames must be >= 5 (train and test frames), found {out.frames}")
    if out.resolution < 16:
        raise ConfigError(f"demo resolution must be >= 16 px, found {out.resolution}")
    return out


def clear_outputs(out: Path) -> None:
    """Removes what a previous run left in ``out`` (only the job's own files and folders), so
    stale frames or map backups never mix into this run's outputs."""
    import shutil

    for name in OUTPUT_DIRS:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for name in OUTPUT_FILES:
        if (out / name).is_file():
            (out / name).unlink()


def _train_config(cfg: DemoConfig, dataset: Path, avatar: Path):
    from engine.train.config import TrainConfig
    from engine.train.densify.config import DensifyConfig

    steps = cfg.steps
    third = max(steps // 3, 1)  # densify (and prune) at 1/3 and 2/3 of the schedule
    dens = DensifyConfig(strategy="sampling", start=third, every=third, stop=2 * third, count=cfg.densify_count,
                         prune_every=third, reset_every=0)
    return TrainConfig(dataset=str(dataset), output=str(avatar), head_model="demo", steps=steps,
                       uv_resolution=cfg.uv_resolution, device=cfg.device, lr_color=0.01, appearance=cfg.appearance,
                       densify=dens, checkpoint_every=max(steps // 2, 1), preview_every=0, seed=cfg.seed,
                       threads=cfg.threads)


def _bake_config(cfg: DemoConfig, avatar: Path):
    from engine.bake.bakenet import unet_depth
    from engine.bake.config import BakeConfig

    return BakeConfig(avatar=str(avatar), resolution=cfg.bake_resolution, steps=cfg.bake_steps,
                      init="direct", base_channels=cfg.bake_channels,
                      depth=unet_depth(cfg.bake_resolution), device=cfg.device, full_head_steps=cfg.full_head_steps,
                      checkpoint_every=0, seed=cfg.seed, threads=cfg.threads)


def camera_focal(subject: Path) -> float:
    """The focal length (pixels of the video) of the camera that filmed the subject.

    The main job gives it to the tracker (``--focal``), as a user gives their phone's: with the
    focal unknown, the tracker's focal search reads the stylised demo head ~35 % short, which turns
    into tens of millimetres of depth error (docs/benchmarks.md)."""
    with np.load(Path(subject) / "tracking.npz", allow_pickle=False) as z:
        return float(z["K"][0][0, 0])


def _track_config(cfg: DemoConfig, video: Path, dataset: Path, focal: float):
    from engine.demo.config import TRACK_PRESETS
    from engine.track.config import TrackConfig

    return TrackConfig(video=str(video), output=str(dataset), head_model="demo", resolution=cfg.resolution,
                       focal=focal,
                       test_fraction=0.2, device=cfg.device, threads=cfg.threads, seed=cfg.seed,
                       **TRACK_PRESETS[cfg.preset])


class SubStageSink:
    """Forwards a nested job's progress as ``<stage>/<its stage>`` (one bar each) and nothing else."""

    def __init__(self, sink, stage: str):
        self.sink, self.stage = sink, stage

    def progress(self, stage: str, step: int, total: int, **metrics) -> None:
        if self.sink is not None:
            self.sink.progress(f"{self.stage}/{stage}", step, total, **metrics)

    def log(self, message: str, level: str = "info") -> None:
        if self.sink is not None:
            self.sink.log(message, level)


def write_subject_video(renders: Path, path: Path, fps: int = 25) -> Path:
    """The Cycles frames over a white background as an H.264 .mp4 (the phone video of the subject)."""
    frames = [(np.clip(load_rgb(p), 0, 1) * 255 + 0.5).astype(np.uint8) for p in sorted(Path(renders).glob("*.png"))]
    write_mp4(path, frames, fps=fps)
    return path


def demo_albedo(head):
    """The demo head's albedo (the landmark embedding renders the template with it)."""
    from engine.demo.texture import albedo_texture

    return albedo_texture(head, 512)


def tracking_metrics(exact: Path, tracked: Path) -> dict:
    """The tracker's errors against the exact parameters (engine.track.accuracy) and its report's
    landmark error (pixels of the tracked images)."""
    from engine.data import load_sequence
    from engine.model.demo_head import build_demo_head
    from engine.track.accuracy import tracking_errors

    err = tracking_errors(load_sequence(exact), load_sequence(tracked), build_demo_head())
    rep = json.loads((tracked / "tracking" / "report.json").read_text())
    return {**err, "landmark_error_px": rep["landmark_error_px"]["mean"],
            "landmark_error_px_p95": rep["landmark_error_px"]["p95"], "focal_px": rep["focal_px"],
            "frames_without_face": rep["frames_without_face"], "seconds": rep["seconds"]}


def refined_test_metrics(avatar: Path, dataset: Path, device, steps: int) -> dict:
    """Test PSNR/SSIM with --refine_test_tracking (the optimistic figure, beside the plain one)."""
    from engine.evaluate.config import EvalConfig
    from engine.evaluate.evaluate import REFINED_KEY, run_eval

    m = run_eval(EvalConfig(avatar=str(avatar), dataset=str(dataset), refine_test_tracking=True,
                            refine_steps=steps, device=str(device.type), out=str(avatar / "metrics_test_refined.json")))
    r = m[REFINED_KEY]
    return {"psnr": round(float(r["psnr"]), 3), "ssim": round(float(r["ssim"]), 4), "protocol": r["protocol"],
            "steps": steps}


def run_demo(cfg: DemoConfig, sink=None, cancel=None) -> dict:
    """Runs the main job (module doc) and writes ``cfg.out``.

    Returns:
        a summary: output folder, the headline metrics (dB) and the minutes it took.
    Raises:
        DemoError: a stage failed (the message names the stage and its log);
        CancelledError: on a cancel request (between stages, or killing a Blender stage).
        OutputError / FolderLockedError: ``out`` is not writable, too full, or in use.
    """
    from engine.io.output import claim_output

    cfg = resolve_config(cfg)
    check_video_writer()
    out = Path(cfg.out).resolve()
    # one demo per folder; ~15 images per frame (Cycles, dataset, renders) plus the avatar's files
    with claim_output(out, "demo", need_bytes=(256 << 20) + cfg.frames * cfg.resolution ** 2 * 4 * 15):
        return _run_demo(cfg, out, sink, cancel)


def _run_demo(cfg: DemoConfig, out: Path, sink, cancel) -> dict:
    from engine.bake.baker import bake
    from engine.device import resolve_device
    from engine.track.pipeline import run_track
    from engine.train.trainer import train

    device = resolve_device(cfg.device)
    clear_outputs(out)
    work, logs, renders = out / "work", out / "logs", out / "renders"
    subject, dataset, avatar = out / "subject", out / "dataset", out / "avatar"
    exact = out / "dataset_exact"
    py = blender_python(cfg)
    st = StageClock(sink, cancel)
    t_start = time.time()
    from engine.io.atomic import write_json

    # 1. subject ---------------------------------------------------------------------------
    st.start("subject")
    info = write_subject(subject, cfg)
    st.end(1)

    # 2. Cycles ----------------------------------------------------------------------------
    st.start("cycles", cfg.frames)
    cycles_cfg = {"subject": str(subject), "out": str(work / "cycles"), "samples": cfg.samples,
                  "seed": cfg.seed}
    write_json(work / "cycles.json", cycles_cfg)
    cyc = run_stage_process([py, "-m", "addon.demo", "cycles", "--config", str(work / "cycles.json")],
                            "cycles", logs / "cycles.log", sink, cancel)
    st.end()
    views_dir = run_views_stage(cfg, subject, work, logs, py, st, sink, cancel)  # 360° ground truth (issue 16)

    # 3. dataset: the video through the tracker (or the exact parameters) ------------------
    st.start("dataset")
    write_dataset(exact, subject, work / "cycles")
    st.end(1)
    tracking = None
    if cfg.track:
        st.start("video", 1)
        video = write_subject_video(work / "cycles", work / "subject.mp4")
        st.end(1)
        st.start("track")
        track_cfg = _track_config(cfg, video, dataset, camera_focal(subject))
        run_track(track_cfg, SubStageSink(sink, "track"), cancel, albedo_for=demo_albedo)
        st.end(1)
        tracking = tracking_metrics(exact, dataset)
    else:
        import shutil

        shutil.copytree(exact, dataset)

    # 4-5. train + bake --------------------------------------------------------------------
    st.start("train", cfg.steps)
    train(_train_config(cfg, dataset, avatar), sink, cancel)
    st.end()
    st.start("bake", cfg.bake_steps)
    bake(_bake_config(cfg, avatar), sink, cancel)
    st.end()
    full_head = run_full_head_stage(_bake_config(cfg, avatar), avatar, work, renders, views_dir, device, st, sink,
                                    cancel)

    # 6. eval ------------------------------------------------------------------------------
    st.start("eval", 3)
    from engine.data import load_sequence
    from engine.io.images import write_png

    seq = load_sequence(dataset)
    names, trained = render_test_frames(avatar, device, from_maps=False)
    sink and sink.progress("eval", 1, 3)
    _, baked = render_test_frames(avatar, device, from_maps=True)
    sink and sink.progress("eval", 2, 3)
    index = {n: i for i, n in enumerate(seq.frame_names)}
    gts = [seq.load_image(index[n], background=(1.0, 1.0, 1.0))[0].numpy().astype(np.float32) for n in names]
    for folder, imgs in (("test_engine_trained", trained), ("test_engine_baked", baked)):
        for n, img in zip(names, imgs):
            write_png(renders / folder / f"{n}.png", img)
    m_trained, m_baked = image_metrics(trained, gts), image_metrics(baked, gts)
    m_refined = refined_test_metrics(avatar, dataset, device, cfg.refine_test_steps)
    st.end(3)

    # 7. extension -------------------------------------------------------------------------
    st.start("extension", 1)
    user = work / "blender_user"
    run_stage_process([py, str(REPO / "build.py"), "--output-dir", str(work / "dist"), "--install", str(user)],
                      "extension", logs / "extension.log", None, cancel, timeout_s=600)
    st.end(1)

    # 8. Blender ---------------------------------------------------------------------------
    st.start("blender", 3 + 2 * len(names) + cfg.turntable_frames)
    test_idx = [index[n] for n in names]
    final_cfg = {"extension_id": EXTENSION_ID, "avatar": str(avatar), "renders": str(renders),
                 "blend": str(out / "demo.blend"), "logo_uv_box": info["logo_uv_box"], "test_frames": test_idx,
                 "turntable_frames": cfg.turntable_frames}
    write_json(work / "final.json", final_cfg)
    fin = run_stage_process([py, "-m", "addon.demo", "final", "--config", str(work / "final.json")],
                            "blender", logs / "blender.log", sink, cancel, env={"BLENDER_USER_RESOURCES": str(user)})
    st.end()

    # 8b. the relighting test (issue 18: engine/demo/relight.py) -------------------------
    relight = None
    if cfg.relight:
        relight = run_relight(cfg, py=py, out=out, test_idx=test_idx, names=names,
                              train_config=_train_config(cfg, dataset, out / "avatar_pbr"),
                              bake_config=lambda a: _bake_config(cfg, a), final_cfg=final_cfg, st=st, sink=sink,
                              cancel=cancel, env={"BLENDER_USER_RESOURCES": str(user)})

    # 9. report ----------------------------------------------------------------------------
    st.start("report", 3)
    _, edited_engine = render_test_frames(avatar, device, from_maps=True)
    for n, img in zip(names, edited_engine):
        write_png(renders / "test_engine_edited" / f"{n}.png", img)
    bl_baked = [load_rgb(renders / "test_blender_baked" / f"{n}.png") for n in names]
    bl_edited = [load_rgb(renders / "test_blender_edited" / f"{n}.png") for n in names]
    m_blender = image_metrics(bl_baked, gts)
    parity_baked = image_metrics(bl_baked, baked)
    parity_edited = image_metrics(bl_edited, edited_engine)
    sink and sink.progress("report", 1, 3)
    k = max(1, min(cfg.sheet_frames, len(names)))
    pick = np.linspace(0, len(names) - 1, k).round().astype(int)
    contact_sheet([[gts[i], trained[i], baked[i], bl_edited[i]] for i in pick] + [back_view_row(views_dir, renders)],
                  ["ground truth (Cycles)", "avatar", "baked", "edited (Blender)"], out / "contact_sheet.png",
                  row_labels=[""] * len(pick) + ["back view (yaw 180): truth | trained | completed | oracle"])
    tt = sorted((renders / "turntable").glob("*.png"))
    write_mp4(out / "turntable.mp4", [(np.clip(load_rgb(p), 0, 1) * 255 + 0.5).astype(np.uint8) for p in tt])
    sink and sink.progress("report", 2, 3)
    st.end(3)

    from engine.raster import default_backend
    n_gauss = json.loads((avatar / "avatar.json").read_text())["num_gaussians"]
    metrics = {
        "format": "fate-demo-metrics", "format_version": 1,
        "preset": cfg.preset, "config": asdict(cfg),
        "device": str(device), "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else cpu_name(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "rasterizer": default_backend(device),
        "frames": cfg.frames, "test_frames": len(names), "resolution": cfg.resolution,
        "num_gaussians": int(n_gauss),
        "test": {"trained": m_trained, "baked": m_baked, "blender": m_blender, "trained_refined": m_refined},
        "tracking": tracking,
        "blender_vs_engine": {"baked": parity_baked, "edited": parity_edited},
        "edit": {"logo_uv_box": info["logo_uv_box"], "texels": fin.get("logo_texels")},
        "seconds": {**st.seconds, "total": round(time.time() - t_start, 1)},
        "cycles": {"samples": cfg.samples, "seconds": cyc.get("seconds")},
        "outputs": {"contact_sheet": "contact_sheet.png", "turntable": "turntable.mp4", "blend": "demo.blend",
                    "renders": "renders/", "avatar": "avatar/", "dataset": "dataset/",
                    "dataset_exact": "dataset_exact/", "video": "work/subject.mp4" if cfg.track else None},
        "contact_sheet_columns": ["ground truth (Cycles)", "avatar", "baked", "edited (Blender)"],
        "contact_sheet_frames": [names[i] for i in pick],
        "contact_sheet_back_row": ["ground truth (Cycles)", "trained", "completed", "oracle-completed"],
        "full_head": full_head,
        **({"relight": relight} if relight is not None else {}),
    }
    write_json(out / "metrics.json", metrics)
    return {"out": str(out), "psnr_trained": m_trained["psnr"], "psnr_trained_refined": m_refined["psnr"], "psnr_baked": m_baked["psnr"],
            "psnr_blender": m_blender["psnr"], "psnr_blender_vs_engine": parity_edited["psnr"],
            **(relight_summary(relight) if relight is not None else {}),
            "minutes": round((time.time() - t_start) / 60, 2)}
