"""The tracker (issue 13): video reading, the landmark embedding, the batched fit, the dataset it
writes and its error paths. Small clips and few fit steps; accuracy targets are in
``python -m engine bench --suite track``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mediapipe")
cv2 = pytest.importorskip("cv2")

from engine.errors import TrackError  # noqa: E402


FAST = dict(threads=1, rigid_steps=80, fit_steps=120, refine=False, overlay=False)


def _portrait() -> np.ndarray:
    """Grace Hopper (US Navy photograph, public domain), shipped by matplotlib (a mediapipe dependency)."""
    import matplotlib
    import imageio.v3 as iio

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not shipped by this matplotlib")
    return np.asarray(iio.imread(path))[..., :3]


def _similarity_clip(folder: Path, size=(320, 240), frames: int = 10) -> list[tuple[float, float]]:
    """The portrait moved by known 2D similarity transforms; returns (angle deg, scale) per frame."""
    import imageio.v3 as iio

    src = _portrait()
    folder.mkdir(parents=True, exist_ok=True)
    W, H = size
    truth = []
    for i in range(frames):
        ang = 10.0 * math.sin(2 * math.pi * i / frames)
        sc = 0.40 + 0.10 * i / (frames - 1)
        M = cv2.getRotationMatrix2D((256.0, 250.0), ang, sc)
        M[:, 2] += [W / 2 - 256.0 + 6 * math.cos(i), H / 2 - 250.0]
        iio.imwrite(folder / f"frame_{i:03d}.png", cv2.warpAffine(src, M, (W, H), borderValue=(90, 110, 120)))
        truth.append((ang, sc))
    return truth


@pytest.fixture(scope="module")
def demo_embedding(tmp_path_factory) -> Path:
    from engine.jobs.cli import main

    path = tmp_path_factory.mktemp("emb") / "demo.npz"
    assert main(["landmarks", "--output", str(path)]) == 0
    return path


def _track(video: Path, out: Path, embedding: Path, **kw) -> dict:
    from engine.track.config import TrackConfig
    from engine.track.pipeline import run_track

    cfg = TrackConfig(video=str(video), output=str(out), embedding=str(embedding), **{**FAST, **kw})
    return run_track(cfg)


# ---------------------------------------------------------------------- the real photograph
@pytest.fixture(scope="module")
def portrait_track(tmp_path_factory, demo_embedding):
    root = tmp_path_factory.mktemp("portrait")
    truth = _similarity_clip(root / "frames")
    # the clip jumps by up to 6° a frame (independent photos, not a 25 fps video): almost no smoothing
    result = _track(root / "frames", root / "dataset", demo_embedding, resolution=192, focal=600.0, smooth=0.01)
    return truth, root / "dataset", result


def test_portrait_clip_has_a_face_on_every_frame_and_writes_a_trainable_dataset(portrait_track):
    from engine.data import load_sequence

    truth, ds, result = portrait_track
    assert result["frames"] == len(truth) and result["frames_without_face"] == 0
    seq = load_sequence(ds)
    assert len(seq) == len(truth) and seq.width == seq.height == 192
    assert len(seq.indices("test")) == 2  # the last fifth
    img, mask = seq.load_image(0)
    assert 0.05 < float(mask.mean()) < 0.9  # a head, not everything / nothing
    rep = json.loads((ds / "tracking" / "report.json").read_text())
    assert rep["frames"] == len(truth) and rep["landmark_error_px"]["mean"] < 4.0
    z = np.load(ds / "tracking" / "landmarks.npz")
    assert z["landmarks"].shape == (len(truth), 478, 2) and z["detected"].all()


def test_portrait_clip_recovers_in_plane_rotation_and_scale(portrait_track):
    """A photo rotated by θ in the image plane is a head rolled by θ about the camera axis; scaled by
    s it is s times closer (fixed focal): the tracked roll and 1/depth follow the known transform."""
    from engine.data import load_sequence
    from engine.geometry.rotations import axis_angle_to_matrix

    truth, ds, _ = portrait_track
    seq = load_sequence(ds)
    order = np.argsort([int(n) for n in seq.frame_names])
    R = axis_angle_to_matrix(seq.pose[order, :3].double()).numpy()
    cam = seq.viewmats[0, :3, :3].double().numpy()
    Rc = cam @ R  # head in camera axes
    rel = Rc @ Rc[0].T
    roll = np.degrees(np.arctan2(rel[:, 1, 0], rel[:, 0, 0]))  # about the camera's z (image plane)
    ang = np.array([t[0] for t in truth])
    # image y is down, so a counter-clockwise image rotation (cv2, +θ) is a -θ roll in camera axes
    np.testing.assert_allclose(-roll, ang - ang[0], atol=1.5)  # MediaPipe noise on a 192² crop: ~0.5°
    depth = (seq.translation[order].double().numpy() @ cam.T + seq.viewmats[0, :3, 3].double().numpy())[:, 2]
    scale = np.array([t[1] for t in truth])
    ratio = (depth[0] / depth) / (scale / scale[0])
    np.testing.assert_allclose(ratio, 1.0, atol=0.04)  # 4 %: shape and depth share the scale


# ---------------------------------------------------------------------- the demo head
def test_tracked_demo_head_stays_close_to_the_exact_parameters(tmp_path, demo_dataset, demo_embedding):
    """The synthetic demo sequence (camera orbit ±25° yaw, talking) rendered to frames, tracked, and
    compared with its exact parameters relative to the camera (engine.track.accuracy)."""
    from engine.data import load_sequence
    from engine.io.images import write_png
    from engine.model.demo_head import build_demo_head
    from engine.track.accuracy import tracking_errors

    seq = load_sequence(demo_dataset)
    frames = tmp_path / "frames"
    for i in range(0, len(seq), 2):
        write_png(frames / f"{seq.frame_names[i]}.png", seq.load_image(i, (1.0, 1.0, 1.0))[0].numpy())
    # the camera's focal length is given (as the main job does): unknown, the focal search reads the
    # stylised head ~35 % short (docs/benchmarks.md)
    _track(frames, tmp_path / "ds", demo_embedding, resolution=256, fit_steps=200, focal=float(seq.Ks[0, 0, 0]))
    tracked = load_sequence(tmp_path / "ds")
    names = sorted(p.stem for p in frames.iterdir())
    pairs = [(seq.frame_names.index(n), tracked.frame_names.index(f"{k:05d}")) for k, n in enumerate(names)]
    err = tracking_errors(seq, tracked, build_demo_head(), pairs)
    assert err["frames"] == len(names)
    # measured 3.7° (aligned; 8.9° before removing the clip's constant tilt) and 33 mm on these
    # 128² splat renders: above the 2° target (docs/benchmarks.md); 5° fails a tracker that
    # under-reads the turns (2D-only fit: ~10°) or loses the head
    assert err["rotation_deg_aligned"] < 5.0, err
    assert err["translation_mm"] < 60.0 and err["jaw_deg"] < 8.0, err
    # the masks have no holes where the fitted head is: MediaPipe's segmenter alone leaves the
    # stylised face's eyes and mouth out and the skull grey (measured ~0.05 of the image instead of
    # ~0.25 on the 128² test preset), which trains a see-through avatar
    covered = _fitted_head_coverage(tracked, build_demo_head())
    assert covered > 0.99, covered


def _fitted_head_coverage(seq, head) -> float:
    """Share of the pixels inside the tracked head mesh's silhouette above the chin (the masks cut
    the neck on purpose), eroded 2 px, whose written mask is >= 0.5, over every frame."""
    from engine.io.images import read_image
    from engine.model.flame_layer import FlameLayer
    from engine.track.mesh_render import rasterize_mesh

    layer = FlameLayer(head)
    faces = np.asarray(head.faces_all)
    faces = faces[(np.asarray(head.v_template)[faces][..., 1] > -0.06).all(1)]  # face and skull, not chin and neck
    inside = good = 0
    for i in range(len(seq)):
        v, _ = layer(seq.shape[None], seq.expr[i][None], seq.pose[i][None])
        v = (v[0] + seq.translation[i]).numpy()
        sil = rasterize_mesh(v, faces, seq.viewmats[i].numpy(), seq.Ks[i].numpy(),
                             seq.width, seq.height).mask.astype(np.uint8)
        sil = cv2.erode(sil, np.ones((5, 5), np.uint8)) > 0
        alpha = read_image(seq.mask_paths[i])[..., 0]
        inside += int(sil.sum())
        good += int((alpha[sil] >= 0.5).sum())
    return good / max(inside, 1)


# ---------------------------------------------------------------------- the embedding
def test_landmark_embedding_file_round_trips_and_is_checked(tmp_path, demo_embedding):
    from engine.model.demo_head import build_demo_head
    from engine.track.embedding import LandmarkEmbedding

    head = build_demo_head()
    emb = LandmarkEmbedding.load(demo_embedding, len(head.faces))
    assert len(emb) > 400 and emb.barycentric.shape == (len(emb), 3)
    np.testing.assert_allclose(emb.barycentric.sum(1), 1.0, atol=1e-5)
    with pytest.raises(TrackError, match="face_index outside"):
        LandmarkEmbedding.load(demo_embedding, 10)
    bad = tmp_path / "bad.npz"
    np.savez(bad, mediapipe_index=np.arange(3), face_index=np.arange(3))
    with pytest.raises(TrackError, match="barycentric"):
        LandmarkEmbedding.load(bad)


def test_demo_embedding_puts_eyes_mouth_and_nose_where_the_builder_put_them(demo_embedding):
    """The demo head's construction knows its features (engine.model.demo_head_mesh): eye centres at
    (±32, 18) mm with half-width 11 mm, mouth at y = -45 mm with half-width 24 mm."""
    from engine.model.demo_head import build_demo_head
    from engine.model.demo_head_mesh import EYE_HALF_W, EYE_X, EYE_Y, MOUTH_HALF_W, MOUTH_Y
    from engine.track.embedding import LandmarkEmbedding
    from engine.track.landmarks_meta import NAMED

    head = build_demo_head()
    emb = LandmarkEmbedding.load(demo_embedding, len(head.faces))
    pts = dict(zip(emb.mediapipe_index.tolist(), emb.points(head.v_template, head.faces)))
    p = {k: pts[v] * 1000 for k, v in NAMED.items() if v in pts}
    tol = 6.0  # mm: MediaPipe's reading of a stylised head
    assert abs(p["left_eye_outer"][0] - 1000 * (EYE_X + EYE_HALF_W)) < tol
    assert abs(p["left_eye_inner"][0] - 1000 * (EYE_X - EYE_HALF_W)) < tol
    assert abs(p["right_eye_outer"][0] + 1000 * (EYE_X + EYE_HALF_W)) < tol
    assert abs(p["left_eye_outer"][1] - 1000 * EYE_Y) < tol
    assert abs(p["mouth_left"][0] - 1000 * MOUTH_HALF_W) < tol and abs(p["mouth_right"][0] + 1000 * MOUTH_HALF_W) < tol
    assert abs(p["mouth_left"][1] - 1000 * MOUTH_Y) < tol
    assert abs(p["nose_tip"][0]) < 2.0 and p["nose_tip"][2] > max(p["mouth_left"][2], p["left_eye_outer"][2])


def test_embedding_on_the_real_flame_template_finds_eye_corners_mouth_corners_and_nose_tip(flame_template_path):
    """FLAME template (../shared/flame): the nose tip within 4 mm of the template's most forward
    midline vertex; each eye's corners on either side of its eyeball (FLAME's two eyeball meshes),
    10–20 mm from its centre at its height (±6 mm); mouth corners mirror-symmetric (±4 mm) and
    25–45 mm below the nose tip."""
    from engine.io.obj import read_obj
    from engine.track.embedding import compute_embedding
    from engine.track.landmarks_meta import NAMED

    mesh = read_obj(flame_template_path)
    v = mesh.vertices.astype(np.float64)
    v = v - [0.0, np.median(v[:, 1]), 0.0]
    emb = compute_embedding(v, mesh.faces)
    pts = dict(zip(emb.mediapipe_index.tolist(), emb.points(v, mesh.faces) * 1000))
    p = {k: pts[i] for k, i in NAMED.items() if i in pts}
    mid = np.abs(v[:, 0]) < 0.003
    nose = v[mid][np.argmax(v[mid][:, 2])] * 1000
    assert np.linalg.norm(p["nose_tip"] - nose) < 4.0
    eyes = {"left": v[3931:4477].mean(0) * 1000, "right": v[4477:5023].mean(0) * 1000}
    if eyes["left"][0] < 0:
        eyes = {"left": eyes["right"], "right": eyes["left"]}
    for side in ("left", "right"):
        c = eyes[side]
        inner, outer = p[f"{side}_eye_inner"], p[f"{side}_eye_outer"]
        assert abs(inner[0]) < abs(c[0]) < abs(outer[0])
        for q in (inner, outer):
            assert 10.0 < abs(q[0] - c[0]) < 20.0 and abs(q[1] - c[1]) < 6.0
    ml, mr = p["mouth_left"], p["mouth_right"]
    assert abs(ml[0] + mr[0]) < 4.0 and abs(ml[1] - mr[1]) < 4.0
    assert 25.0 < nose[1] - ml[1] < 45.0


# ---------------------------------------------------------------------- error paths
def test_missing_and_unreadable_videos_are_clear_errors(tmp_path):
    from engine.track.video import probe

    with pytest.raises(TrackError, match="no such file"):
        probe(tmp_path / "nope.mp4")
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    with pytest.raises(TrackError, match="cannot read this video"):
        probe(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrackError, match="no frames"):
        probe(tmp_path / "empty")


def test_a_clip_without_a_face_fails_and_writes_nothing(tmp_path, demo_embedding):
    import imageio.v3 as iio

    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        iio.imwrite(frames / f"{i}.png", rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    with pytest.raises(TrackError, match="no face"):
        _track(frames, tmp_path / "ds", demo_embedding, resolution=128)
    assert not (tmp_path / "ds").exists()


def test_too_few_frames_with_a_face_is_a_clear_error(tmp_path, demo_embedding):
    _similarity_clip(tmp_path / "frames", frames=3)
    with pytest.raises(TrackError, match="at least 5"):
        _track(tmp_path / "frames", tmp_path / "ds", demo_embedding, resolution=128)


def test_check_coverage_drops_up_to_a_fifth_of_the_frames():
    from engine.track.pipeline import check_coverage

    found = np.ones(10, bool)
    found[[2, 7]] = False
    check_coverage(found, Path("clip.mp4"))  # 2 of 10: dropped and counted, not an error
    found[5] = False
    with pytest.raises(TrackError, match="no face in 3 of 10 frames"):
        check_coverage(found, Path("clip.mp4"))


def test_video_file_is_read_at_a_constant_rate_in_portrait(tmp_path):
    """An .mp4 in portrait orientation: size, rate and frame count as written."""
    from engine.io.video import write_mp4
    from engine.track.video import probe, read_frames

    frames = [np.full((96, 64, 3), 10 * i, np.uint8) for i in range(12)]
    write_mp4(tmp_path / "clip.mp4", frames, fps=12)
    info = probe(tmp_path / "clip.mp4")
    assert (info.width, info.height, info.fps) == (64, 96, 12.0) and not info.variable_frame_rate
    got = list(read_frames(info))
    assert len(got) == 12 and got[0].shape == (96, 64, 3)
    assert abs(int(got[5].mean()) - 50) <= 3  # H.264 keeps a flat grey within a few levels
    half = probe(tmp_path / "clip.mp4", fps=6.0)
    assert half.frames == 6 and len(list(read_frames(half))) == 6


def test_similarity_fit_from_exact_landmarks_recovers_the_pose(demo_embedding):
    """The fit on exact projections of the demo head's own landmarks (+1 px noise) with the focal
    known: rotation within 1°, jaw within 2° (the fit's own precision, without the detector; the pull
    towards MediaPipe's 3D rotation is off: this clip's "3D landmarks" are a weak-perspective stand-in)."""
    import torch

    from engine.demo.motion import talking_motion
    from engine.model.demo_head import build_demo_head
    from engine.track.embedding import LandmarkEmbedding
    from engine.track.fit import CAMERA_R, FitSettings, LandmarkFit
    from engine.track.landmark_model import LandmarkHead
    from engine.track.accuracy import _angle_deg
    from engine.geometry.rotations import axis_angle_to_matrix

    head = build_demo_head()
    emb = LandmarkEmbedding.load(demo_embedding)
    T, R, f = 40, 256, 2.2 * 256
    m = talking_motion(head, T, 0)
    pose = m["pose"].copy()
    pose[:, 3:6] = 0
    pose[:, 0:3] = np.stack([m["pitch"], m["yaw"], np.zeros(T)], 1)
    tr = np.zeros((T, 3), np.float32)
    tr[:, 2] = -0.5
    lm, _ = LandmarkHead(head, emb, 100, 100)(torch.zeros(1, 12), torch.as_tensor(m["expr"]), torch.as_tensor(pose),
                                               torch.as_tensor(tr))
    pc = lm.numpy() @ CAMERA_R.T
    uv = pc[..., :2] / pc[..., 2:3] * f + R / 2
    lm2d = np.zeros((T, 478, 2))
    lm3d = np.zeros((T, 478, 3))
    lm2d[:, emb.mediapipe_index] = uv + np.random.default_rng(0).normal(size=uv.shape)
    lm3d[:, emb.mediapipe_index, :2] = uv
    lm3d[:, emb.mediapipe_index, 2] = (pc[..., 2] - pc[..., 2].mean(1, keepdims=True)) * f / 0.5
    torch.set_num_threads(1)
    res = LandmarkFit(head, emb, lm2d, lm3d, np.arange(T), f, np.array([R / 2, R / 2]),
                      FitSettings(focal_fixed=True, rigid_steps=150, fit_steps=250, w_mp_rotation=0.0), torch.device("cpu")).run()
    Rg = axis_angle_to_matrix(torch.as_tensor(pose[:, :3]).double())
    Rt = axis_angle_to_matrix(torch.as_tensor(res.pose[:, :3]).double())
    assert _angle_deg(Rg.transpose(1, 2) @ Rt).mean() < 1.0
    Jg = axis_angle_to_matrix(torch.as_tensor(pose[:, 6:9]).double())
    Jt = axis_angle_to_matrix(torch.as_tensor(res.pose[:, 6:9]).double())
    assert _angle_deg(Jg.transpose(1, 2) @ Jt).mean() < 2.0


# ---------------------------------------------------------------------- eval --refine_test_tracking
def test_eval_refine_test_tracking_recovers_jittered_test_poses(tmp_path, trained_avatar, demo_dataset):
    """The trained avatar's test frames with their head pose jittered (1° + 2 mm): the plain PSNR
    drops, the refined figure (pose + expression fitted with the avatar frozen) comes back above it;
    both are reported, the refined one under its protocol's name."""
    import shutil

    from engine.evaluate.config import EvalConfig
    from engine.evaluate.evaluate import REFINED_KEY, run_eval

    av = tmp_path / "avatar"
    shutil.copytree(trained_avatar, av)
    z = dict(np.load(av / "tracking.npz", allow_pickle=False))
    test = z["split"] == 1
    rng = np.random.default_rng(0)
    z["pose"] = z["pose"].copy()
    z["pose"][test, :3] += np.radians(1.0) * rng.choice([-1, 1], (test.sum(), 3)) / np.sqrt(3)
    z["translation"] = z["translation"].copy()
    z["translation"][test] += 0.002 * rng.choice([-1, 1], (test.sum(), 3)) / np.sqrt(3)
    np.savez(av / "tracking.npz", **z)
    from engine.io.atomic import file_sha256

    manifest = json.loads((av / "avatar.json").read_text())  # the edit is deliberate: record it
    manifest["files"]["tracking.npz"] = file_sha256(av / "tracking.npz")
    (av / "avatar.json").write_text(json.dumps(manifest))
    m = run_eval(EvalConfig(avatar=str(av), dataset=str(demo_dataset), refine_test_tracking=True, refine_steps=40,
                            device="cpu", out=str(tmp_path / "m.json")))
    ref = json.loads((tmp_path / "m.json").read_text())[REFINED_KEY]
    assert "IMavatar" in ref["protocol"] and ref["steps"] == 40
    assert ref["psnr"] > m["psnr"] + 1.0, (m["psnr"], ref["psnr"])


class _CancelLater:
    """A cancel token that asks to stop after ``polls`` checks (the job polls between frames/steps)."""

    def __init__(self, polls: int):
        self.polls = polls
        self.checkpoint = None

    @property
    def requested(self) -> bool:
        self.polls -= 1
        return self.polls < 0

    def raise_if_requested(self) -> None:
        from engine.errors import CancelledError

        if self.requested:
            raise CancelledError("cancelled (test)")


def test_cancel_keeps_the_finished_stages_and_resume_reuses_them(tmp_path, demo_embedding):
    """Cancelled in the fit: nothing at --output, the detections cached beside it; --resume then
    finishes without detecting again (no 'detect' time in the report)."""
    from engine.errors import CancelledError
    from engine.track.config import TrackConfig
    from engine.track.pipeline import run_track

    _similarity_clip(tmp_path / "frames", frames=6)
    cfg = dict(video=str(tmp_path / "frames"), output=str(tmp_path / "ds"), embedding=str(demo_embedding),
               resolution=128, focal=600.0, **FAST)
    with pytest.raises(CancelledError):
        run_track(TrackConfig(**cfg), cancel=_CancelLater(polls=6))  # past detection (1 + 1 polls), inside the fit
    assert not (tmp_path / "ds").exists()
    assert (tmp_path / ".ds.partial" / "work" / "detections.npz").is_file()
    run_track(TrackConfig(**cfg, resume=True))
    rep = json.loads((tmp_path / "ds" / "tracking" / "report.json").read_text())
    assert "detect" not in rep["seconds"] and "fit" in rep["seconds"] and rep["frames"] == 6
    assert not (tmp_path / ".ds.partial").exists()


def test_crop_pads_with_its_fill_and_keeps_the_dtype():
    """Crop.apply: the video's uint8 frames pad black (as the tracker crops them); the relighting
    test's float frames on white pad white, so a held-out Cycles frame crops like a tracked one."""
    import numpy as np

    from engine.track.crop import Crop

    c = Crop(-10, -5, 40, 20)  # 10 px left of and 5 px above a 30² frame
    frame = np.full((30, 30, 3), 200, np.uint8)
    out = c.apply(frame)
    assert out.dtype == np.uint8 and out.shape == (20, 20, 3)
    assert out[0, 0].tolist() == [0, 0, 0] and out[10, 10].tolist() == [200, 200, 200]
    f = c.apply(frame.astype(np.float32) / 255, fill=1.0)
    assert f.dtype == np.float32 and f[0, 0].tolist() == [1.0, 1.0, 1.0]
    assert abs(float(f[10, 10, 0]) - 200 / 255) < 1e-6


def test_relighting_test_reads_the_trackers_crop_or_names_the_bad_report(tmp_path):
    """engine.demo.relight.dataset_crop: the crop from tracking/report.json; None without a
    report (exact parameters); a report without a valid crop is refused, naming the file."""
    import json

    import pytest

    from engine.demo.relight import dataset_crop
    from engine.errors import DemoError
    from engine.track.crop import Crop

    assert dataset_crop(tmp_path) is None
    (tmp_path / "tracking").mkdir()
    rep = tmp_path / "tracking" / "report.json"
    rep.write_text(json.dumps({"crop": {"x0": -3, "y0": 4, "side": 100, "resolution": 64}}))
    assert dataset_crop(tmp_path) == Crop(-3, 4, 100, 64)
    rep.write_text(json.dumps({"crop": {"x0": 1}}))
    with pytest.raises(DemoError, match="report.json"):
        dataset_crop(tmp_path)
