"""The product's main job (issue 6): a Cycles-rendered demo subject → avatar → Blender.

``python -m engine demo --out out/demo`` runs, with one progress bar per stage:

1. ``subject``  — the procedural demo head (:mod:`engine.demo_head`, not FLAME) in the avatar
   export format (``blender/head.npz`` with no learnt deltas), a detailed albedo texture over its
   UV layout (:func:`demo_albedo`) and a talking sequence (expressions, jaw, blinks, head turns
   up to ±30° yaw / ±15° pitch as an orbiting camera, as INSTA has it) in ``tracking.npz``;
2. ``cycles``   — Blender (``python -m addon.demo cycles``) builds the rigged, textured head
   with the add-on's own rig builder, keys the sequence and renders every frame with **Cycles**
   on the CPU (transparent film, soft light, Standard view transform);
3. ``dataset``  — the renders and the exact parameters in the INSTA layout (last fifth = test);
4. ``train``    — :func:`engine.train.train`;
5. ``bake``     — :func:`engine.bake.bake` with ``init="direct"`` (converges within the CPU budget);
6. ``eval``     — PSNR/SSIM of the trained and the baked avatar on the test frames;
7. ``extension``— ``build.py`` builds the Blender extension and installs it into a private
   Blender user folder;
8. ``blender``  — Blender (``python -m addon.demo final``) enables the extension, runs
   Import Avatar, renders the test frames with the "FATE Splats" engine, stamps a logo into the
   colour map (as an artist would in Texture Paint), runs Sync Maps, renders the test frames again
   and a 360° turntable, and saves ``demo.blend``;
9. ``report``   — the engine re-splats the edited maps for the same frames (the Blender render must
   agree to >= 35 dB), writes ``metrics.json``, ``contact_sheet.png`` and ``turntable.mp4``.

The Blender stages run in their own interpreter (``bpy`` and ``torch`` never share a process);
they speak the worker protocol on stdout (``progress`` events, then ``done`` with the result) and
the rest of their output goes to ``<out>/logs/<stage>.log``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from engine.errors import CancelledError, ConfigError, FateError
from engine.head_model import HeadModel

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
"""Repository root (holds ``addon/`` and ``build.py``)."""

EXTENSION_ID = "fate_avatar"
"""Extension id of blender_manifest.toml."""


class DemoError(FateError):
    """A stage of the main job failed (the message names the stage and its log file)."""


# ---------------------------------------------------------------------- config
@dataclass
class DemoConfig:
    """The main job (issue 6). Fields left at 0 take the preset's value (see :data:`PRESETS`)."""

    out: str = "out/demo"
    """output folder"""
    preset: Literal["auto", "cpu", "cuda", "test"] = "auto"
    """"auto" (= "cuda" when torch sees a GPU, else "cpu"), "cpu", "cuda" or "test" (CI-sized)"""
    frames: int = 0
    """frames of the sequence (the last fifth is the test split)"""
    resolution: int = 0
    """square image size, pixels"""
    samples: int = 0
    """Cycles samples per pixel"""
    texture_resolution: int = 0
    """albedo texture size, texels"""
    steps: int = 0
    """training steps"""
    uv_resolution: int = 0
    """UV sampling resolution of the initial Gaussians"""
    bake_resolution: int = 0
    """baked map resolution"""
    densify_count: int = 0
    """Gaussians added by each of the two sampling densifications (FATE §3.2)"""
    bake_steps: int = 0
    """baking steps (image objective; BakeNet starts from the direct-fit maps)"""
    bake_channels: int = 0
    """BakeNet base width"""
    turntable_frames: int = 0
    """frames of the 360° turntable"""
    sheet_frames: int = 4
    """test frames shown in the contact sheet"""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """torch device: auto, cuda or cpu"""
    threads: int = 0
    """CPU threads for torch (train, bake, eval); presets: cpu/test 1 (a second thread gains ~1.4×
    on an idle 2-core machine but loses ~3× as soon as another process shares it), cuda: torch's
    default"""
    blender_python: str = ""
    """Python with the bpy module for the Blender stages (default: this interpreter)"""
    seed: int = 0
    """random seed"""


PRESETS: dict[str, dict[str, int]] = {
    "cpu": dict(frames=100, resolution=256, samples=16, texture_resolution=1024, steps=400,
                uv_resolution=160, densify_count=1000, bake_resolution=256, bake_steps=300,
                bake_channels=16, turntable_frames=72, threads=1),
    "cuda": dict(frames=150, resolution=512, samples=32, texture_resolution=2048, steps=6000,
                 uv_resolution=256, densify_count=5000, bake_resolution=512, bake_steps=1500,
                 bake_channels=32, turntable_frames=96),
    "test": dict(frames=20, resolution=64, samples=8, texture_resolution=256, steps=150,
                 uv_resolution=64, densify_count=300, bake_resolution=64, bake_steps=30,
                 bake_channels=8, turntable_frames=6, threads=1),
}
"""Defaults per preset; "cpu" fits the 15-minute budget of a 2-core CPU."""


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


# ---------------------------------------------------------------------- subject
def demo_albedo(points: np.ndarray, normals: np.ndarray, head: HeadModel, seed: int = 0) -> np.ndarray:
    """The demo subject's skin texture: :func:`engine.synthetic.albedo` (skin tone variation,
    cheeks, freckles, lips, brows, irises, hair) plus a dark lash line along each eye opening
    and a light stubble on the chin and jaw (high frequencies on purpose).

    Args:
        points: canonical surface points, meters, FLAME frame. [N, 3]
        normals: unit normals at those points. [N, 3]
        head: the demo head (its eye joints and mouth place the features).
        seed: texture seed.
    Returns:
        encoded (sRGB) colours in [0, 1]. [N, 3] float32
    """
    from engine.synthetic import albedo, landmarks

    # synthetic.albedo is per point; chunks bound its [N, 90, 3] freckle distance temporaries
    chunk = 1 << 16
    col = np.concatenate([albedo(points[i:i + chunk], normals[i:i + chunk], head, seed)
                          for i in range(0, len(points), chunk)] or [np.zeros((0, 3), np.float32)])
    col = col.astype(np.float64)
    lm = landmarks(head)
    eye_gap = float(np.linalg.norm(lm["left_eye"] - lm["right_eye"]))
    unit = eye_gap / 0.064  # the features below are sized for the demo head (eye gap 64 mm)
    eye_r = 0.0125 * unit
    # lash line: a thin dark band on the upper lid rim, just outside each eyeball
    for side in (lm["left_eye"], lm["right_eye"]):
        rel = points - side
        r = np.linalg.norm(rel, axis=1)
        rim = np.exp(-((r - 1.07 * eye_r) / (0.07 * eye_r)) ** 2) * (r > 1.02 * eye_r)
        rim *= np.clip((rel[:, 1] + 0.25 * eye_r) / (0.3 * eye_r), 0.0, 1.0)
        col = col * (1 - 0.85 * rim[:, None]) + 0.85 * rim[:, None] * 0.06
    # stubble: tiny dark dots on the chin and along the jaw (a 1.6 mm hash grid)
    mouth = lm["mouth"]
    rel = (points - (mouth + np.array([0.0, -0.028, 0.0]) * unit)) / (np.array([0.055, 0.024, 1.0]) * unit)
    region = np.clip(1.5 * (1.0 - rel[:, 0] ** 2 - rel[:, 1] ** 2), 0.0, 1.0) * (normals[:, 2] > 0.2)
    lips = ((points - mouth) / (np.array([0.028, 0.011, 1.0]) * unit)) ** 2
    region *= np.clip(2.0 * (lips[:, 0] + lips[:, 1]) - 2.0, 0.0, 1.0)
    q = np.floor(points / (0.0016 * unit))
    h = np.sin(q @ np.array([12.9898, 78.233, 37.719]) + seed) * 43758.5453
    dots = region * ((h - np.floor(h)) > 0.75)
    col = col * (1 - 0.4 * dots[:, None]) + 0.4 * dots[:, None] * np.array([0.2, 0.14, 0.1])
    return np.clip(col, 0.0, 1.0).astype(np.float32)


def albedo_texture(head: HeadModel, resolution: int, seed: int = 0) -> np.ndarray:
    """The demo albedo as a texture over the head's UV layout.

    Every texel whose centre lies in a UV triangle gets :func:`demo_albedo` at the canonical
    surface point of that texel centre (:func:`engine.uv.sample_uv_texels` +
    :func:`engine.mesh_ops.barycentric_points`); every other texel takes the colour of the
    nearest covered texel, so bilinear lookups at island borders never mix in a background colour.

    Args:
        head: the head model (mesh + mouth faces are covered).
        resolution: texels per side.
        seed: texture seed.
    Returns:
        encoded (sRGB) colours, row 0 = top (v ≈ 1). [R, R, 3] float32
    """
    from scipy.ndimage import distance_transform_edt

    from engine.mesh_ops import barycentric_points, vertex_normals
    from engine.uv import sample_uv_texels

    R = int(resolution)
    s = sample_uv_texels(head.uvs, head.faces_uv_all, R)
    faces = torch.as_tensor(head.faces_all, dtype=torch.long)
    verts = torch.as_tensor(head.v_template, dtype=torch.float64)
    face_idx = torch.as_tensor(s.face_idx, dtype=torch.long)
    bary = torch.as_tensor(s.bary, dtype=torch.float64)
    pts = barycentric_points(verts, faces, face_idx, bary)
    nrm = torch.nn.functional.normalize(barycentric_points(vertex_normals(verts, faces), faces, face_idx, bary), dim=-1)
    colors = demo_albedo(pts.numpy(), nrm.numpy(), head, seed)
    img = np.zeros((R, R, 3), np.float32)
    filled = np.zeros((R, R), bool)
    img[s.texel[:, 0], s.texel[:, 1]] = colors
    filled[s.texel[:, 0], s.texel[:, 1]] = True
    if not filled.all():
        _, (ri, ci) = distance_transform_edt(~filled, return_indices=True)
        img = img[ri, ci]
    return img


def demo_motion(head: HeadModel, frames: int, seed: int = 0, max_yaw_deg: float = 30.0,
                max_pitch_deg: float = 15.0) -> dict[str, np.ndarray]:
    """A talking sequence with exactly known parameters, ``t`` in [0, 1] over the sequence.

    Like :func:`engine.synthetic.make_motion` (smooth sines on the first 12 expression
    coefficients, jaw opening, neck, gaze), but every channel cycles 2.5–4.5 times per sequence,
    so the last 20 % (the test split) stays inside the range the first 80 % covers, as the end of
    a real monocular video does; blinks (demo head: both eyes, three times) and head turns as an
    orbiting camera (the INSTA way): ``yaw = max_yaw · sin(2π·1.5·t)``,
    ``pitch = max_pitch · sin(2π·3.3·t)`` — a Lissajous path on which no test view is more than
    ~2.5° from a training view.

    Returns:
        expr [T, E], pose [T, J·3] axis-angle (rad), yaw [T], pitch [T] (rad, camera orbit).
    """
    from engine.demo_head import DEMO_EXPRESSION_NAMES

    rng = np.random.default_rng(seed)
    T = int(frames)
    t = np.arange(T, dtype=np.float64) / max(T - 1, 1)

    def wave(lo: float = 2.5, hi: float = 4.5) -> np.ndarray:
        return np.sin(2 * np.pi * rng.uniform(lo, hi) * t + rng.uniform(0, 2 * np.pi))

    expr = np.zeros((T, head.num_expr))
    for c in range(min(head.num_expr, 12)):
        expr[:, c] = rng.uniform(0.4, 1.0) * wave()
    pose = np.zeros((T, head.num_joints * 3))
    pose[:, 3] = 0.07 * wave()  # neck nod
    pose[:, 4] = 0.07 * wave()  # neck turn
    pose[:, 6] = 0.22 * np.clip(wave(3.0, 4.0), 0.0, 1.0)  # jaw opens while talking
    if head.num_joints >= 5:
        gaze = 0.15 * np.stack([wave(), wave(), np.zeros(T)], 1)
        pose[:, 9:12] = gaze
        pose[:, 12:15] = gaze
    if head.name.startswith("FATE demo head"):
        period = max(T / 3.0, 8.0)  # three blinks per sequence
        phase = (np.arange(T) + 0.35 * period) % period
        blink = np.clip(1.0 - np.abs(phase - period / 2) / 2.2, 0.0, 1.0)
        for name in ("blink_left", "blink_right"):
            expr[:, DEMO_EXPRESSION_NAMES.index(name)] = blink
        expr[:, DEMO_EXPRESSION_NAMES.index("eyes_wide")] *= 0.5
    return {"expr": expr.astype(np.float32), "pose": pose.astype(np.float32),
            "yaw": np.radians(max_yaw_deg) * np.sin(2 * np.pi * 1.5 * t),
            "pitch": np.radians(max_pitch_deg) * np.sin(2 * np.pi * 3.3 * t)}


def write_blender_head(path: Path, head: HeadModel) -> None:
    """``blender/head.npz`` (docs/FORMATS.md) of an untrained head: zero shape, no learnt deltas.

    The same keys :func:`engine.avatar_io.export_blender` writes for a trained avatar.
    """
    from engine.avatar_io import write_npz

    write_npz(path, name=np.array(head.name), v_template=head.v_template.astype(np.float32),
              shape_offset=np.zeros_like(head.v_template, dtype=np.float32),
              faces=head.faces_all.astype(np.int32), faces_uv=head.faces_uv_all.astype(np.int32),
              num_mouth_faces=np.int32(len(head.mouth_faces)), uvs=head.uvs.astype(np.float32),
              exprdirs=head.exprdirs.astype(np.float32), posedirs=head.posedirs.astype(np.float32),
              J_regressor=np.asarray(head.J_regressor, np.float32), parents=np.asarray(head.parents, np.int32),
              lbs_weights=np.asarray(head.lbs_weights, np.float32),
              joint_names=np.array(head.joint_names, dtype=np.str_))


def write_subject(folder: Path, cfg: DemoConfig, head: HeadModel | None = None) -> dict:
    """Writes the demo subject for Blender into ``folder``.

    Files: ``blender/head.npz`` (:func:`write_blender_head`), ``tracking.npz`` (the sequence:
    shape, expr, pose, translation, viewmat (OpenCV w2c), K, width, height, frame_names, split;
    docs/FORMATS.md), ``albedo.png`` (sRGB texture, :func:`albedo_texture`) and
    ``subject.json`` (sizes and the logo's UV box).

    Returns:
        the content of subject.json.
    """
    from engine.avatar_io import write_json, write_npz
    from engine.demo_head import build_demo_head
    from engine.image_io import write_png
    from engine.synthetic import orbit_cameras

    folder = Path(folder)
    head = head or build_demo_head()
    T, R = cfg.frames, cfg.resolution
    motion = demo_motion(head, T, cfg.seed)
    views, K = orbit_cameras(head, motion["yaw"], motion["pitch"], R)
    n_test = max(1, int(round(T * 0.2)))
    split = np.array([0] * (T - n_test) + [1] * n_test, np.int8)
    write_blender_head(folder / "blender" / "head.npz", head)
    write_npz(folder / "tracking.npz", shape=np.zeros(head.num_shape, np.float32), expr=motion["expr"],
              pose=motion["pose"], translation=np.zeros((T, 3), np.float32),
              viewmat=views.astype(np.float32), K=np.repeat(K[None], T, 0).astype(np.float32),
              width=np.int32(R), height=np.int32(R),
              frame_names=np.array([f"{i:05d}" for i in range(T)], dtype=np.str_), split=split)
    write_png(folder / "albedo.png", albedo_texture(head, cfg.texture_resolution, cfg.seed))
    info = {"format": "fate-demo-subject", "format_version": 1, "frames": T, "resolution": R,
            "test_frames": int(n_test), "head": head.name, "logo_uv_box": list(logo_uv_box(head)),
            "head_centre": [float(c) for c in 0.5 * (head.v_template.min(0) + head.v_template.max(0))]}
    write_json(folder / "subject.json", info)
    return info


def logo_uv_box(head: HeadModel, size_m: float = 0.03) -> tuple[float, float, float, float]:
    """UV box (u0, v0, u1, v1; OBJ convention) of a square ~``size_m`` wide on the left cheek
    (the subject's left, +x: the side the test frames see), where the scripted edit stamps its logo."""
    from engine.synthetic import landmarks

    lm = landmarks(head)
    target = np.array([lm["left_eye"][0] * 1.1, 0.4 * lm["left_eye"][1] + 0.6 * lm["mouth"][1], 0.0])
    v = head.v_template
    near = np.hypot(v[:, 0] - target[0], v[:, 1] - target[1])
    skin = np.arange(len(v))[near < max(2.0 * near.min(), 0.004)]
    vi = skin[np.argmax(v[skin, 2])]  # the front-most vertex near that (x, y)
    # UV of that vertex and the local UV → 3D Jacobian of a face using it (meters per UV unit)
    fi, ci = np.nonzero(head.faces == vi)
    uv0 = head.uvs[head.faces_uv[fi[0], ci[0]]].astype(np.float64)
    p3 = v[head.faces[fi[0]]].astype(np.float64)
    p2 = head.uvs[head.faces_uv[fi[0]]].astype(np.float64)
    jac = np.stack([p3[1] - p3[0], p3[2] - p3[0]], 1) @ np.linalg.inv(np.stack([p2[1] - p2[0], p2[2] - p2[0]], 1))
    half_u = 0.5 * size_m / max(np.linalg.norm(jac[:, 0]), 1e-9)
    half_v = 0.5 * size_m / max(np.linalg.norm(jac[:, 1]), 1e-9)
    box = (uv0[0] - half_u, uv0[1] - half_v, uv0[0] + half_u, uv0[1] + half_v)
    return tuple(float(np.clip(b, 0.0, 1.0)) for b in box)  # type: ignore[return-value]


def write_dataset(root: Path, subject: Path, renders: Path) -> Path:
    """The Cycles renders + the subject's exact parameters in the INSTA layout (engine.data.insta).

    ``images/NNNNN.png`` get the RGB of the renders (straight alpha), ``alpha/NNNNN.png`` their
    alpha; the tracked parameters and cameras are written exactly (``flame/*``, transforms JSON).
    """
    from engine.data.insta import write_insta
    from engine.data.sequence import Sequence
    from engine.image_io import read_image

    with np.load(Path(subject) / "tracking.npz", allow_pickle=False) as z:
        tr = {k: z[k] for k in z.files}
    names = [str(n) for n in tr["frame_names"]]
    T = len(names)
    images, masks = [], []
    for n in names:
        rgba = read_image(Path(renders) / f"{n}.png")
        if rgba.shape[-1] != 4:
            raise DemoError(f"{renders / (n + '.png')}: expected an RGBA render, found {rgba.shape[-1]} channels")
        images.append((rgba[..., :3] * 255 + 0.5).astype(np.uint8))
        masks.append((rgba[..., 3] * 255 + 0.5).astype(np.uint8))
    root = Path(root)
    seq = Sequence(
        root=root, frame_names=names, shape=torch.as_tensor(tr["shape"]), expr=torch.as_tensor(tr["expr"]),
        pose=torch.as_tensor(tr["pose"]), translation=torch.as_tensor(tr["translation"]),
        viewmats=torch.as_tensor(tr["viewmat"]), Ks=torch.as_tensor(tr["K"]),
        width=int(tr["width"]), height=int(tr["height"]),
        image_paths=[root / "images" / f"{n}.png" for n in names],
        mask_paths=[root / "alpha" / f"{n}.png" for n in names],
        split=["train" if s == 0 else "test" for s in tr["split"]])
    write_insta(root, seq, images, masks)
    return root


# ---------------------------------------------------------------------- subprocesses
def _python(cfg: DemoConfig) -> str:
    return cfg.blender_python or sys.executable


def _event(line: str) -> dict | None:
    """A worker-protocol event line (docs/PROTOCOL.md) as a dict, else None."""
    if not line.startswith("{"):
        return None
    try:
        ev = json.loads(line)
    except json.JSONDecodeError:
        return None
    return ev if isinstance(ev, dict) and isinstance(ev.get("type"), str) else None


def run_stage_process(cmd: list[str], stage: str, log_path: Path, sink=None, cancel=None,
                      env: dict | None = None, timeout_s: float | None = None) -> dict:
    """Runs a Blender-side (or build) command, forwarding its ``progress`` events to ``sink``.

    Every other output line goes to ``log_path``. The child is terminated when ``cancel`` is
    requested (then :class:`CancelledError`).

    Returns:
        the child's ``done`` event without type/job/time ({} when it sent none).
    Raises:
        DemoError: non-zero exit (the message names the log and quotes its tail).
    """
    import threading

    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO) + (os.pathsep + full_env["PYTHONPATH"] if full_env.get("PYTHONPATH") else "")
    full_env.update(env or {})
    result: dict = {}
    t0 = time.time()
    with open(log_path, "w", encoding="utf-8") as logf:
        logf.write("$ " + " ".join(cmd) + "\n")
        logf.flush()
        proc = subprocess.Popen(cmd, cwd=str(REPO), env=full_env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        stop = threading.Event()

        def watch():  # cancel / timeout while the child is quiet
            while not stop.wait(0.2):
                late = timeout_s is not None and time.time() - t0 > timeout_s
                if (cancel is not None and cancel.requested) or late:
                    proc.terminate()
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                ev = _event(line)
                if ev is not None and ev["type"] == "progress":
                    if sink is not None:
                        sink.progress(ev.get("stage", stage), int(ev["step"]), int(ev["total"]))
                    continue
                if ev is not None and ev["type"] == "done":
                    result = {k: v for k, v in ev.items() if k not in ("type", "job", "time")}
                logf.write(line)
            rc = proc.wait()
        finally:
            stop.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if cancel is not None and cancel.requested:
        raise CancelledError(f"demo cancelled during the {stage} stage")
    if rc != 0:
        tail = "".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines(True)[-15:])
        why = "timed out" if timeout_s is not None and time.time() - t0 > timeout_s else f"exit code {rc}"
        raise DemoError(f"the {stage} stage failed ({why}); full log: {log_path}\n{tail}")
    return result


def _cpu_name() -> str:
    """The CPU model (Linux /proc/cpuinfo), else platform.processor(), else "CPU"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def _check_video_writer() -> str:
    """Name of the available mp4 writer ("imageio-ffmpeg" or "pyav").

    Raises:
        DemoError: neither is installed.
    """
    try:
        import imageio_ffmpeg  # noqa: F401
        return "imageio-ffmpeg"
    except ImportError:
        pass
    try:
        import av  # noqa: F401
        return "pyav"
    except ImportError:
        raise DemoError("the turntable video needs imageio-ffmpeg or PyAV: "
                        "pip install imageio-ffmpeg (the 'video' extra, installed by .ci/setup)") from None


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = 24) -> None:
    """Writes RGB uint8 frames [H, W, 3] (H, W even) as H.264 .mp4 (yuv420p)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    tmp = path.with_name(f".{path.stem}.tmp.mp4")
    if _check_video_writer() == "imageio-ffmpeg":
        import imageio_ffmpeg

        writer = imageio_ffmpeg.write_frames(str(tmp), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                             quality=8, macro_block_size=1, ffmpeg_log_level="error")
        writer.send(None)
        for f in frames:
            writer.send(np.ascontiguousarray(f[..., :3], dtype=np.uint8))
        writer.close()
    else:
        import av

        with av.open(str(tmp), mode="w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            for f in frames:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[..., :3]), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    os.replace(tmp, path)


# ---------------------------------------------------------------------- evaluation helpers
@torch.no_grad()
def render_test_frames(avatar_dir: Path, device: torch.device, from_maps: bool,
                       background=(1.0, 1.0, 1.0)) -> tuple[list[str], list[np.ndarray]]:
    """Engine renders of the avatar's test frames (trained Gaussians, or re-splatted from its maps).

    Returns:
        frame names [n] and images [H, W, 3] float32 in [0, 1].
    """
    from engine.avatar_io import load_avatar
    from engine.evaluate import render_frames
    from engine.maps import load_maps_into

    loaded = load_avatar(Path(avatar_dir), device)
    if from_maps:
        load_maps_into(loaded.avatar.gaussians, Path(avatar_dir) / "maps", loaded.avatar.head)
    names, images = [], []
    for _, name, img in render_frames(loaded, "test", "", background, device):
        names.append(name)
        images.append(img.numpy().astype(np.float32))
    return names, images


def image_metrics(preds: list[np.ndarray], gts: list[np.ndarray]) -> dict:
    """Mean PSNR (dB) and SSIM over image pairs, plus the per-frame PSNR list."""
    from engine.metrics import evaluate_images, psnr

    m = evaluate_images([torch.as_tensor(p) for p in preds], [torch.as_tensor(g) for g in gts])
    return {"psnr": round(float(m["psnr"]), 3), "ssim": round(float(m["ssim"]), 4),
            "psnr_per_frame": [round(float(psnr(torch.as_tensor(p), torch.as_tensor(g))), 2)
                               for p, g in zip(preds, gts)]}


def _load_rgb(path: Path, background=(1.0, 1.0, 1.0)) -> np.ndarray:
    from engine.image_io import read_image

    img = read_image(path)
    if img.shape[-1] == 4:
        a = img[..., 3:4]
        img = img[..., :3] * a + np.asarray(background, np.float32) * (1 - a)
    return img[..., :3].astype(np.float32)


def contact_sheet(rows: list[list[np.ndarray]], labels: list[str], path: Path, pad: int = 4) -> np.ndarray:
    """A grid of [H, W, 3] images, one row per frame, under a header with the column ``labels``.

    Returns:
        the sheet, float32 in [0, 1]. [H', W', 3]
    """
    from PIL import Image, ImageDraw, ImageFont

    from engine.image_io import write_png

    h, w = rows[0][0].shape[:2]
    R, C = len(rows), len(rows[0])
    header = 18
    sheet = np.ones((header + R * (h + pad) + pad, C * (w + pad) + pad, 3), np.float32)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            y, x = header + pad + r * (h + pad), pad + c * (w + pad)
            sheet[y:y + h, x:x + w] = np.clip(img[..., :3], 0, 1)
    pil = Image.fromarray((sheet * 255 + 0.5).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default()
    for c, label in enumerate(labels):
        x = pad + c * (w + pad)
        draw.text((x + 2, 3), label, fill=(0, 0, 0), font=font)
    out = np.asarray(pil).astype(np.float32) / 255.0
    write_png(path, out)
    return out


# ---------------------------------------------------------------------- the job
OUTPUT_DIRS = ("subject", "dataset", "avatar", "renders", "logs", "work")
"""Folders the job writes inside ``out`` (removed at the start of a run, with OUTPUT_FILES)."""
OUTPUT_FILES = ("metrics.json", "contact_sheet.png", "turntable.mp4", "demo.blend", "demo.blend1")


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


class _Stages:
    """Times the stages and checks for a cancel request between them."""

    def __init__(self, sink, cancel):
        self.sink, self.cancel = sink, cancel
        self.seconds: dict[str, float] = {}
        self._name: str | None = None
        self._t0 = 0.0

    def start(self, name: str, total: int = 1) -> None:
        self.end()
        if self.cancel is not None and self.cancel.requested:
            raise CancelledError(f"demo cancelled before the {name} stage")
        self._name, self._t0 = name, time.time()
        log.info("demo: %s", name)
        if self.sink is not None:
            self.sink.progress(name, 0, total)

    def end(self, total: int | None = None) -> None:
        if self._name is None:
            return
        if total is not None and self.sink is not None:
            self.sink.progress(self._name, total, total)
        self.seconds[self._name] = round(time.time() - self._t0, 2)
        self._name = None


def _train_config(cfg: DemoConfig, dataset: Path, avatar: Path):
    from engine.densify import DensifyConfig
    from engine.train import TrainConfig

    steps = cfg.steps
    third = max(steps // 3, 1)  # densify (and prune) at 1/3 and 2/3 of the schedule
    dens = DensifyConfig(strategy="sampling", start=third, every=third, stop=2 * third, count=cfg.densify_count,
                         prune_every=third, reset_every=0)
    return TrainConfig(dataset=str(dataset), output=str(avatar), head_model="demo", steps=steps,
                       uv_resolution=cfg.uv_resolution, device=cfg.device, lr_color=0.01,
                       densify=dens, checkpoint_every=max(steps // 2, 1), preview_every=0, seed=cfg.seed,
                       threads=cfg.threads)


def _bake_config(cfg: DemoConfig, avatar: Path):
    from engine.bake import BakeConfig, unet_depth

    return BakeConfig(avatar=str(avatar), resolution=cfg.bake_resolution, steps=cfg.bake_steps,
                      init="direct", base_channels=cfg.bake_channels,
                      depth=unet_depth(cfg.bake_resolution), device=cfg.device,
                      checkpoint_every=0, seed=cfg.seed, threads=cfg.threads)


def run_demo(cfg: DemoConfig, sink=None, cancel=None) -> dict:
    """Runs the main job (module doc) and writes ``cfg.out``.

    Returns:
        a summary: output folder, the headline metrics (dB) and the minutes it took.
    Raises:
        DemoError: a stage failed (the message names the stage and its log);
        CancelledError: on a cancel request (between stages, or killing a Blender stage).
    """
    from engine.bake import bake
    from engine.train import resolve_device, train

    cfg = resolve_config(cfg)
    _check_video_writer()
    device = resolve_device(cfg.device)
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    clear_outputs(out)
    work, logs, renders = out / "work", out / "logs", out / "renders"
    subject, dataset, avatar = out / "subject", out / "dataset", out / "avatar"
    py = _python(cfg)
    st = _Stages(sink, cancel)
    t_start = time.time()
    from engine.avatar_io import write_json

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

    # 3. dataset ---------------------------------------------------------------------------
    st.start("dataset")
    write_dataset(dataset, subject, work / "cycles")
    st.end(1)

    # 4-5. train + bake --------------------------------------------------------------------
    st.start("train", cfg.steps)
    train(_train_config(cfg, dataset, avatar), sink, cancel)
    st.end()
    st.start("bake", cfg.bake_steps)
    bake(_bake_config(cfg, avatar), sink, cancel)
    st.end()

    # 6. eval ------------------------------------------------------------------------------
    st.start("eval", 3)
    from engine.data import load_sequence
    from engine.image_io import write_png

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

    # 9. report ----------------------------------------------------------------------------
    st.start("report", 3)
    _, edited_engine = render_test_frames(avatar, device, from_maps=True)
    for n, img in zip(names, edited_engine):
        write_png(renders / "test_engine_edited" / f"{n}.png", img)
    bl_baked = [_load_rgb(renders / "test_blender_baked" / f"{n}.png") for n in names]
    bl_edited = [_load_rgb(renders / "test_blender_edited" / f"{n}.png") for n in names]
    m_blender = image_metrics(bl_baked, gts)
    parity_baked = image_metrics(bl_baked, baked)
    parity_edited = image_metrics(bl_edited, edited_engine)
    sink and sink.progress("report", 1, 3)
    k = max(1, min(cfg.sheet_frames, len(names)))
    pick = np.linspace(0, len(names) - 1, k).round().astype(int)
    contact_sheet([[gts[i], trained[i], baked[i], bl_edited[i]] for i in pick],
                  ["ground truth (Cycles)", "avatar", "baked", "edited (Blender)"], out / "contact_sheet.png")
    tt = sorted((renders / "turntable").glob("*.png"))
    write_mp4(out / "turntable.mp4", [(np.clip(_load_rgb(p), 0, 1) * 255 + 0.5).astype(np.uint8) for p in tt])
    sink and sink.progress("report", 2, 3)
    st.end(3)

    from engine.raster import default_backend
    n_gauss = json.loads((avatar / "avatar.json").read_text())["num_gaussians"]
    metrics = {
        "format": "fate-demo-metrics", "format_version": 1,
        "preset": cfg.preset, "config": asdict(cfg),
        "device": str(device), "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else _cpu_name(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "rasterizer": default_backend(device),
        "frames": cfg.frames, "test_frames": len(names), "resolution": cfg.resolution,
        "num_gaussians": int(n_gauss),
        "test": {"trained": m_trained, "baked": m_baked, "blender": m_blender},
        "blender_vs_engine": {"baked": parity_baked, "edited": parity_edited},
        "edit": {"logo_uv_box": info["logo_uv_box"], "texels": fin.get("logo_texels")},
        "seconds": {**st.seconds, "total": round(time.time() - t_start, 1)},
        "cycles": {"samples": cfg.samples, "seconds": cyc.get("seconds")},
        "outputs": {"contact_sheet": "contact_sheet.png", "turntable": "turntable.mp4", "blend": "demo.blend",
                    "renders": "renders/", "avatar": "avatar/", "dataset": "dataset/"},
        "contact_sheet_columns": ["ground truth (Cycles)", "avatar", "baked", "edited (Blender)"],
        "contact_sheet_frames": [names[i] for i in pick],
    }
    write_json(out / "metrics.json", metrics)
    return {"out": str(out), "psnr_trained": m_trained["psnr"], "psnr_baked": m_baked["psnr"],
            "psnr_blender": m_blender["psnr"], "psnr_blender_vs_engine": parity_edited["psnr"],
            "minutes": round((time.time() - t_start) / 60, 2)}
