"""``python -m engine track``: a portrait video → an INSTA dataset that ``train`` reads unchanged.

Stages (one progress bar each): ``detect`` (face boxes on every frame, the clip's square crop),
``landmarks`` (crop, 478 MediaPipe landmarks, person mask per frame), ``focal`` (unless given),
``fit_rigid`` + ``fit`` (:mod:`engine.track.fit`), ``refine`` (photometric,
:mod:`engine.track.photometric`), ``write`` (images, masks, FLAME parameters, cameras,
``tracking/``). Everything is written into ``.<name>.partial`` next to the output and moved into
place at the end (an existing dataset is replaced only by a complete one). ``--resume`` reuses the
detections and the landmark fit cached there by an interrupted run with the same settings.

Bad input: an unreadable video or folder, a clip too short to split (fewer than 5 frames with a
face), no face in more than a fifth of the frames (frames without a face are dropped and counted
below that), several faces (the largest is tracked; the report says so).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from engine.device import resolve_device
from engine.errors import CancelledError, ConfigError, TrackError
from engine.io.atomic import write_json, write_npz
from engine.model.head_model import HeadModel
from engine.model.resolve import resolve_head_model
from engine.track.config import TrackConfig
from engine.track.crop import Crop, choose_crop
from engine.track.detect import FaceDetector, FaceMesh, PersonSegmenter
from engine.track.embedding import LandmarkEmbedding, head_hash
from engine.track.fit import FitResult, FitSettings, LandmarkFit, recentre, reproject, search_focal
from engine.track.masks import fitted_silhouettes, head_masks
from engine.track.video import VideoInfo, probe, read_frames

log = logging.getLogger(__name__)

MAX_MISSING_FRACTION = 0.2
"""A clip with no face in more than this fraction of its frames is rejected."""
MIN_FRAMES = 5
"""Fewest frames with a face (train and test frames)."""
DETECT_SIDE = 640
"""Face boxes are detected on frames shrunk to this longer side (pixels)."""
LANDMARK_SIDE = 384
"""Landmarks and person masks are found on the crop at least this large (pixels), then scaled to
the output resolution (small outputs would give MediaPipe faces of a few dozen pixels)."""


class _Clock:
    """Seconds per stage, progress events, cancel checks between stages."""

    def __init__(self, sink, cancel):
        self.sink, self.cancel, self.seconds = sink, cancel, {}
        self._t = time.time()

    def progress(self, stage: str, step: int, total: int) -> None:
        if self.sink is not None:
            self.sink.progress(stage, step, total)

    def check(self) -> None:
        if self.cancel is not None and self.cancel.requested:
            raise CancelledError("tracking cancelled; run again with --resume to reuse the finished stages")

    def lap(self, stage: str) -> None:
        now = time.time()
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + now - self._t, 2)
        self._t = now


def load_embedding(cfg: TrackConfig, head: HeadModel, albedo: np.ndarray | None = None) -> LandmarkEmbedding:
    """The embedding file given, else one computed for the head model (rendered with ``albedo``, a
    texture over the model's UVs, when given: the demo head's own)."""
    if cfg.embedding:
        emb = LandmarkEmbedding.load(cfg.embedding, len(head.faces))
        if emb.head_hash and emb.head_hash != head_hash(head.v_template, head.faces):
            log.warning("%s was computed for another head model (hash differs)", cfg.embedding)
        return emb
    from engine.track.embedding import compute_embedding

    return compute_embedding(head.v_template, head.faces, albedo, head.uvs if albedo is not None else None,
                             head.faces_uv if albedo is not None else None)


# ---------------------------------------------------------------------- stages
def detect_faces(info: VideoInfo, clock: _Clock) -> tuple[list[np.ndarray | None], int]:
    """The largest face's box per frame (frame pixels) and the most faces seen in one frame."""
    import cv2

    det = FaceDetector()
    boxes: list[np.ndarray | None] = []
    most = 0
    s = min(1.0, DETECT_SIDE / max(info.width, info.height))
    try:
        for k, frame in enumerate(read_frames(info)):
            small = frame if s == 1.0 else cv2.resize(frame, (round(frame.shape[1] * s), round(frame.shape[0] * s)),
                                                      interpolation=cv2.INTER_AREA)
            faces = det(small)
            most = max(most, len(faces))
            boxes.append(faces[0].box / s if faces else None)
            clock.progress("detect", k + 1, info.frames)
            if k % 20 == 0:
                clock.check()
    finally:
        det.close()
    return boxes, most


def crop_and_detect(info: VideoInfo, crop: Crop, clock: _Clock) -> dict:
    """Crops every frame; MediaPipe landmarks and the person mask of each crop.

    Returns:
        images [T, R, R, 3] uint8, person [T, R, R] uint8, lm [T, 478, 3] float32 (NaN where no
        face), found [T] bool, faces_seen (most faces in one crop).
    """
    import cv2

    mesh, seg = FaceMesh(video_mode=True), PersonSegmenter()
    R = crop.resolution
    big = Crop(crop.x0, crop.y0, crop.side, max(R, LANDMARK_SIDE))  # MediaPipe wants ~200 px faces
    to_r = R / big.resolution
    images, person, lms, found = [], [], [], []
    try:
        for k, frame in enumerate(read_frames(info)):
            img_big = big.apply(frame)
            lm = mesh(img_big)
            img = img_big if big.resolution == R else cv2.resize(img_big, (R, R), interpolation=cv2.INTER_AREA)
            images.append(img)
            p = seg(img_big)
            if big.resolution != R:
                p = cv2.resize(p, (R, R), interpolation=cv2.INTER_AREA)
            person.append((p * 255 + 0.5).astype(np.uint8))
            found.append(lm is not None)
            lms.append(lm * to_r if lm is not None else np.full((478, 3), np.nan, np.float32))
            clock.progress("landmarks", k + 1, info.frames)
            if k % 20 == 0:
                clock.check()
        faces_seen = mesh.faces_seen
    finally:
        mesh.close()
        seg.close()
    if not images:
        raise TrackError(f"{info.path}: no frames could be decoded")
    return {"images": np.stack(images), "person": np.stack(person), "lm": np.stack(lms),
            "found": np.array(found, bool), "faces_seen": faces_seen, "R": R}


def check_coverage(found: np.ndarray, where: Path) -> None:
    """Raises TrackError when too few frames have a face (module doc)."""
    n, k = len(found), int(found.sum())
    if n - k > MAX_MISSING_FRACTION * n:
        raise TrackError(f"{where}: no face in {n - k} of {n} frames (more than {MAX_MISSING_FRACTION:.0%}); "
                         "film the face the whole time, or cut the clip")
    if k < MIN_FRAMES:
        raise TrackError(f"{where}: only {k} frames with a face; at least {MIN_FRAMES} are needed to split "
                         "train and test frames")


def settings_hash(cfg: TrackConfig, info: VideoInfo) -> str:
    """What a cached stage depends on (the input file and the settings that change its result)."""
    keys = {k: v for k, v in asdict(cfg).items() if k not in ("output", "resume", "device", "threads", "overlay")}
    st = info.path.stat()
    return hashlib.sha256(json.dumps([keys, str(info.path.resolve()), st.st_size, st.st_mtime_ns],
                                     sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------- the job
def run_track(cfg: TrackConfig, sink=None, cancel=None, albedo_for=None) -> dict:
    """Tracks ``cfg.video`` and writes the dataset ``cfg.output`` (module doc).

    Returns:
        {"dataset", "fps", "frames", "frames_without_face", "landmark_error_px", "seconds"}.
    Args:
        albedo_for: optional ``head -> texture | None`` used to render the template when the
            embedding is computed (the jobs layer passes the demo head's own albedo).
    Raises:
        TrackError: bad input (module doc); ConfigError: missing --video/--output;
        CancelledError: on a cancel request (the partial folder is kept for --resume).
    """
    if not cfg.video or not cfg.output:
        raise ConfigError("track needs --video PATH and --output DATASET")
    if cfg.resolution % 2:
        raise ConfigError(f"resolution must be even (video encoders need it), found {cfg.resolution}")
    t_start = time.time()
    device = resolve_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.output).resolve()
    partial = out.parent / f".{out.name}.partial"
    info = probe(cfg.video, cfg.fps, cfg.max_frames)
    key = settings_hash(cfg, info)
    work = partial / "work"
    if partial.exists() and not (cfg.resume and _cached_key(work) == key):
        shutil.rmtree(partial)
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / "key.json", {"key": key})
    clock = _Clock(sink, cancel)
    head = resolve_head_model(cfg.head_model)

    det = _cached(work / "detections.npz")
    if det is None:
        boxes, most = detect_faces(info, clock)
        crop = choose_crop(boxes, cfg.crop_scale, cfg.resolution)
        clock.lap("detect")
        det = crop_and_detect(info, crop, clock)
        det.update(crop=np.array([crop.x0, crop.y0, crop.side]), faces_most=most,
                   box_found=np.array([b is not None for b in boxes]))
        write_npz(work / "detections.npz", **{k: np.asarray(v) for k, v in det.items()})
        clock.lap("landmarks")
    crop = Crop(*(int(x) for x in det["crop"]), int(cfg.resolution))
    found = np.asarray(det["found"], bool)
    check_coverage(found, info.path)
    keep = np.flatnonzero(found)
    lm = np.asarray(det["lm"])[keep]

    emb = load_embedding(cfg, head, albedo_for(head) if albedo_for else None)
    clock.lap("embedding")
    fit = _cached_fit(work / "fit.npz")
    if fit is None:
        K0 = crop.intrinsics(cfg.focal or info_focal_guess(info), info.width, info.height)
        principal = K0[:2, 2]
        settings = FitSettings(rigid_steps=cfg.rigid_steps, fit_steps=cfg.fit_steps, num_shape=cfg.num_shape,
                               num_expr=cfg.num_expr, smooth=cfg.smooth, focal_fixed=cfg.focal > 0)
        focal = K0[0, 0]
        if not cfg.focal:
            clock.progress("focal", 0, 1)
            focal, scores = search_focal(head, emb, lm[..., :2], lm, keep, principal, cfg.resolution, settings,
                                         device)
            log.info("focal search (px of the %d² images): %s → %.1f", cfg.resolution, scores, focal)
            clock.progress("focal", 1, 1)
            clock.lap("focal")
        lf = LandmarkFit(head, emb, lm[..., :2], lm, keep, focal, principal, settings, device)
        fit = lf.run(clock.progress, cancel)
        root = (np.asarray(head.J_regressor) @ head.v_template)[0]
        fit = recentre(fit, root)
        _save_fit(work / "fit.npz", fit, principal, lf.outlier_frames)
        clock.lap("fit")
    principal = np.asarray(_load(work / "fit.npz")["principal"])
    outliers = [int(i) for i in np.asarray(_load(work / "fit.npz")["outliers"]).tolist()]

    images = np.asarray(det["images"])[keep]
    person = np.asarray(det["person"])[keep]
    person = np.maximum(person, fitted_silhouettes(head, fit, principal, *person.shape[1:]))
    masks = head_masks(person, fit.landmarks_px, emb.mediapipe_index)
    if cfg.refine:
        from engine.track.photometric import refine_photometric

        fit = refine_photometric(cfg, head, fit, principal, images, masks, keep, work, clock, device)
        fit = reproject(head, emb, fit, principal, lm[..., :2])
        clock.lap("refine")

    from engine.track.writer import write_dataset

    write_dataset(partial, cfg, head, emb, fit, principal, images, masks, keep, info, det, clock, outliers)
    clock.lap("write")
    shutil.rmtree(work)
    _publish(partial, out)
    report = json.loads((out / "tracking" / "report.json").read_text())
    report["seconds"]["total"] = round(time.time() - t_start, 2)
    write_json(out / "tracking" / "report.json", report)
    return {"dataset": str(out), "fps": info.fps, "frames": report["frames"], "frames_without_face": report["frames_without_face"],
            "landmark_error_px": report["landmark_error_px"]["mean"], "seconds": report["seconds"]["total"]}


def info_focal_guess(info: VideoInfo) -> float:
    """A starting focal length (frame pixels): the frame's longer side (a ~53° field of view)."""
    return float(max(info.width, info.height))


def _publish(partial: Path, out: Path) -> None:
    """Moves the finished partial folder to ``out`` (an existing one is replaced only now)."""
    old = out.parent / f".{out.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        os.replace(out, old)
    os.replace(partial, out)
    if old.exists():
        shutil.rmtree(old)


def _cached_key(work: Path) -> str | None:
    try:
        return json.loads((work / "key.json").read_text())["key"]
    except (OSError, ValueError, KeyError):
        return None


def _load(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _cached(path: Path) -> dict | None:
    return _load(path) if path.is_file() else None


def _save_fit(path: Path, fit: FitResult, principal: np.ndarray, outliers: list[int]) -> None:
    write_npz(path, shape=fit.shape, expr=fit.expr, pose=fit.pose, translation=fit.translation,
              focal=np.float64(fit.focal), viewmat=fit.viewmat, residual_px=fit.residual_px,
              landmarks_px=fit.landmarks_px, principal=np.asarray(principal), outliers=np.asarray(outliers, np.int64))


def _cached_fit(path: Path) -> FitResult | None:
    if not path.is_file():
        return None
    z = _load(path)
    return FitResult(z["shape"], z["expr"], z["pose"], z["translation"], float(z["focal"]), z["viewmat"],
                     z["residual_px"], z["landmarks_px"])
