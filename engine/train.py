"""Monocular reconstruction of a FATE avatar (FATE §3.1, §3.2, §3.5; supp. §7.2).

One step: pick a training frame → FLAME forward with the learnt blendshapes (Eq. 5) → place the
UV-bound Gaussians on the posed mesh (Eq. 2–4) → rasterise → image loss (Eq. 12) + regularisers
(Eq. 13–15) → Adam → densify / prune / reset on schedule (§3.2).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from engine import avatar_io, losses
from engine.blendshapes import LearnedBlendshapes, deform
from engine.cameras import Camera
from engine.data import load_sequence
from engine.data.sequence import Sequence
from engine.densify import DensifyConfig, Densifier
from engine.errors import CancelledError, ConfigError
from engine.gaussians import UVGaussians
from engine.head_model import FlameLayer, HeadModel
from engine.raster import rasterize
from engine.rotations import axis_angle_to_matrix
from engine.uv import sample_uv_texels

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """A training job (saved into avatar.json so the run is reproducible)."""

    dataset: str = ""
    """tracked dataset folder (INSTA or IMavatar layout)"""
    output: str = ""
    """avatar folder to write"""
    head_model: str = "demo"
    """"demo" (procedural demo head, not FLAME) or a FLAME folder / .pkl / .npz"""
    steps: int = 30_000
    """optimisation steps (one frame per step)"""
    uv_resolution: int = 256
    """UV sampling resolution for the initial Gaussians (FATE: 256)"""
    image_size: int = 0
    """resize frames so the longer side has this many pixels (0 = as stored)"""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """background colour behind the masked subject"""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """torch device; auto = CUDA when available"""
    rasterizer: Literal["auto", "torch", "gsplat"] = "auto"
    """auto = gsplat on CUDA, the PyTorch reference on CPU"""
    threads: int = 0
    """CPU threads for torch (0 = torch's default); 1 is fastest on a busy 2-core machine"""
    shell: float = 0.01
    """maximum normal offset of a Gaussian from its face, meters"""
    lr_color: float = 2.5e-3
    """supp. §7.2"""
    lr_opacity: float = 5e-2
    """supp. §7.2"""
    lr_scale: float = 5e-3
    """supp. §7.2"""
    lr_rotation: float = 1e-3
    """supp. §7.2"""
    lr_offset: float = 1.6e-3
    """supp. §7.2 (applied to the pre-tanh offset)"""
    lr_blendshapes: float = 1e-5
    """learnable blendshapes ΔE, ΔP, Δ (supp. §7.2)"""
    learn_blendshapes: bool = True
    """optimise ΔE, ΔP and Δ (Eq. 5)"""
    lambda_perceptual: float = 0.1
    """λ1 of Eq. 12 for the VGG term"""
    lambda_dssim: float = 0.2
    """weight of D-SSIM, used as the perceptual term when no VGG weights are supplied"""
    vgg_weights: str = ""
    """VGG16 weights file (torchvision state_dict .pth or .safetensors); empty = D-SSIM"""
    lambda_lap: float = 100.0
    """λ2, Laplacian smoothness of the learnt deformation (Eq. 14)"""
    lambda_flame: float = 100.0
    """λ3, L2 to the plain FLAME vertices (Eq. 14)"""
    lambda_scale: float = 0.1
    """λ4, scale-ratio term (Eq. 13)"""
    scale_ratio: float = 5.0
    """r of Eq. 13: largest allowed ratio of major to minor axis"""
    refine_tracking: bool = False
    """optimise per-frame expression, pose and camera corrections (supp. §7.1)"""
    lr_tracking: float = 5e-4
    """learning rate of the tracking corrections (supp. §7.1)"""
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    """densification schedule"""
    checkpoint_every: int = 1000
    """write a resumable checkpoint every N steps"""
    preview_every: int = 500
    """write a preview image every N steps (0 = never)"""
    seed: int = 0
    """random seed"""
    resume: bool = False
    """continue from output/checkpoints/last.* if present"""

    def __post_init__(self):
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, found {self.steps}")
        if self.uv_resolution < 8:
            raise ConfigError(f"uv_resolution must be >= 8, found {self.uv_resolution}")
        if self.device not in ("auto", "cuda", "cpu"):
            raise ConfigError(f"device must be auto, cuda or cpu, found {self.device!r}")
        self.background = tuple(float(c) for c in self.background)  # type: ignore[assignment]


def resolve_device(name: str) -> torch.device:
    """"auto" → CUDA when available, else CPU; "cuda" without a GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but torch sees no CUDA device "
                          f"(torch {torch.__version__}); use device 'auto' or 'cpu'")
    return torch.device(name)


class FrameSchedule:
    """Which training frame each step uses: every epoch is a permutation of ``frames`` seeded by
    (seed, epoch), so the order depends only on the step and a resumed job sees the same frames
    as an uninterrupted one.

    Args:
        frames: frame indices of the training split.
        seed: the job's seed.
    """

    def __init__(self, frames: list[int], seed: int):
        self.frames, self.seed = list(frames), seed
        self._epoch, self._order = -1, np.zeros(0, dtype=np.int64)

    def __call__(self, step: int) -> int:
        """Frame index for 0-based ``step``."""
        epoch, i = divmod(step, len(self.frames))
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = np.random.default_rng([self.seed, epoch]).permutation(self.frames)
        return int(self._order[i])


class FrameImages:
    """All frames of a sequence decoded once into uint8 tensors (resized if asked)."""

    def __init__(self, seq: Sequence, indices: list[int], background: tuple[float, float, float],
                 device: torch.device):
        self.device = device
        self.images: dict[int, Tensor] = {}
        for i in indices:
            img, _ = seq.load_image(i, background=background)
            if img.shape[0] != seq.height or img.shape[1] != seq.width:
                img = _resize(img, seq.height, seq.width)
            self.images[i] = (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8)

    def get(self, i: int) -> Tensor:
        """Frame i as float [H, W, 3] in [0, 1] on the training device."""
        return self.images[i].to(self.device).float() / 255.0


def _resize(img: Tensor, h: int, w: int) -> Tensor:
    x = img.permute(2, 0, 1)[None]
    x = torch.nn.functional.interpolate(x, size=(h, w), mode="area" if h < img.shape[0] else "bilinear",
                                        align_corners=None if h < img.shape[0] else False)
    return x[0].permute(1, 2, 0)


def resize_sequence(seq: Sequence, image_size: int) -> Sequence:
    """Scales the intrinsics/resolution so the longer side is ``image_size`` px (0 = unchanged)."""
    if not image_size or max(seq.width, seq.height) == image_size:
        return seq
    s = image_size / max(seq.width, seq.height)
    Ks = seq.Ks.clone()
    Ks[:, :2, :] *= s
    import dataclasses
    return dataclasses.replace(seq, Ks=Ks, width=round(seq.width * s), height=round(seq.height * s))


class TrackingRefinement(torch.nn.Module):
    """Per-frame corrections of the tracked expression, pose and camera (optional, supp. §7.1).

    Camera correction: a world-space rotation (axis-angle) and translation applied as
    viewmat' = viewmat · [R(δr) | δt].
    """

    def __init__(self, num_frames: int, num_expr: int, num_pose: int, enabled: bool):
        super().__init__()
        self.enabled = enabled
        self.d_expr = torch.nn.Parameter(torch.zeros(num_frames, num_expr), requires_grad=enabled)
        self.d_pose = torch.nn.Parameter(torch.zeros(num_frames, num_pose), requires_grad=enabled)
        self.d_cam = torch.nn.Parameter(torch.zeros(num_frames, 6), requires_grad=enabled)

    def camera(self, i: int, cam: Camera) -> Camera:
        if not self.enabled:
            return cam
        delta = torch.eye(4, device=cam.viewmat.device)
        delta = delta.clone()
        delta[:3, :3] = axis_angle_to_matrix(self.d_cam[i, :3])
        delta[:3, 3] = self.d_cam[i, 3:]
        return Camera(cam.viewmat @ delta, cam.K, cam.width, cam.height)


@dataclass
class Avatar:
    """Everything that is trained: head model layer, Gaussians, blendshapes, tracking corrections."""

    head: HeadModel
    flame: FlameLayer
    faces: Tensor  # [F + M, 3] int64 mesh + mouth faces
    gaussians: UVGaussians
    blendshapes: LearnedBlendshapes
    tracking: TrackingRefinement

    def posed_vertices(self, shape: Tensor, expr: Tensor, pose: Tensor,
                       translation: Tensor | None) -> tuple[Tensor, Tensor]:
        """[1, V, 3] vertices with and without the learnt blendshapes."""
        return deform(self.flame, self.blendshapes, shape, expr, pose, translation)

    def render(self, shape: Tensor, expr: Tensor, pose: Tensor, translation: Tensor | None,
               camera: Camera, background: Tensor, backend: str = "auto"):
        """Renders one frame. shape [S], expr [E], pose [J·3], translation [3] | None."""
        verts, _ = self.posed_vertices(shape[None], expr[None], pose[None],
                                       None if translation is None else translation[None])
        g = self.gaussians.place(verts[0], self.faces)
        return rasterize(g.means, g.covars, g.opacities, g.colors, camera, background, backend=backend)


def build_avatar(head: HeadModel, cfg: TrainConfig, seq: Sequence, device: torch.device) -> Avatar:
    """Initial avatar: UV-sampled Gaussians on the subject's canonical mesh (FATE §3.1, §4.1)."""
    flame = FlameLayer(head).to(device)
    faces = torch.as_tensor(head.faces_all, dtype=torch.long, device=device)
    samples = sample_uv_texels(head.uvs, head.faces_uv_all, cfg.uv_resolution)
    with torch.no_grad():
        shape = seq.shape[None].to(device)
        verts, _ = flame(shape, torch.zeros(1, seq.expr.shape[1], device=device),
                         torch.zeros(1, seq.pose.shape[1], device=device))
    face_idx = torch.as_tensor(samples.face_idx, dtype=torch.long, device=device)
    bary = torch.as_tensor(samples.bary, dtype=torch.float32, device=device)
    gaussians = UVGaussians.from_bindings(face_idx, bary, verts[0], faces, shell=cfg.shell).to(device)
    n_expr = min(seq.expr.shape[1], head.num_expr)
    blendshapes = LearnedBlendshapes(head.num_vertices, n_expr, head.posedirs.shape[0],
                                     enabled=cfg.learn_blendshapes).to(device)
    tracking = TrackingRefinement(len(seq), seq.expr.shape[1], seq.pose.shape[1],
                                  enabled=cfg.refine_tracking).to(device)
    return Avatar(head, flame, faces, gaussians, blendshapes, tracking)


def make_optimizer(av: Avatar, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam with FATE's per-attribute learning rates (supp. §7.2)."""
    g = av.gaussians
    groups = [
        {"params": [g.sh0], "lr": cfg.lr_color, "name": "sh0"},
        {"params": [g.opacity_logit], "lr": cfg.lr_opacity, "name": "opacity_logit"},
        {"params": [g.scale_log], "lr": cfg.lr_scale, "name": "scale_log"},
        {"params": [g.rotation], "lr": cfg.lr_rotation, "name": "rotation"},
        {"params": [g.offset_raw], "lr": cfg.lr_offset, "name": "offset_raw"},
    ]
    if cfg.learn_blendshapes:
        groups.append({"params": list(av.blendshapes.parameters()), "lr": cfg.lr_blendshapes,
                       "name": "blendshapes"})
    if cfg.refine_tracking:
        groups.append({"params": list(av.tracking.parameters()), "lr": cfg.lr_tracking, "name": "tracking"})
    return torch.optim.Adam(groups, eps=1e-15, foreach=True)


def frame_inputs(av: Avatar, seq: Sequence, i: int, device: torch.device):
    """FLAME parameters and camera of frame i, with the tracking corrections applied."""
    tr = av.tracking
    expr = seq.expr[i].to(device)
    pose = seq.pose[i].to(device)
    if tr.enabled:
        expr = expr + tr.d_expr[i]
        pose = pose + tr.d_pose[i]
    cam = tr.camera(i, seq.camera(i).to(device))
    return seq.shape.to(device), expr, pose, seq.translation[i].to(device), cam


class Trainer:
    """Runs the optimisation loop with events, checkpoints, cancel and resume."""

    def __init__(self, cfg: TrainConfig, head: HeadModel, sink=None, cancel=None):
        self.cfg = cfg
        self.head = head
        self.sink = sink
        self.cancel = cancel
        self.device = resolve_device(cfg.device)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.out = Path(cfg.output)
        self.seq = resize_sequence(load_sequence(Path(cfg.dataset)), cfg.image_size)
        self.train_idx = self.seq.indices("train")
        if not self.train_idx:
            raise ConfigError(f"{cfg.dataset}: the dataset has no training frames")
        self.background = torch.tensor(cfg.background, dtype=torch.float32, device=self.device)
        self.avatar = build_avatar(head, cfg, self.seq, self.device)
        self.optimizer = make_optimizer(self.avatar, cfg)
        self.densifier = Densifier(cfg.densify, len(self.avatar.gaussians), self.device)
        self.laplacian = losses.uniform_laplacian(torch.as_tensor(head.faces, dtype=torch.long),
                                                  head.num_vertices).to(self.device)
        self.perceptual, self.perceptual_name = losses.make_perceptual_loss(
            Path(cfg.vgg_weights) if cfg.vgg_weights else None)
        self.step = 0
        self.frames = FrameImages(self.seq, self.train_idx, cfg.background, self.device)
        self.backend = cfg.rasterizer
        self.history: list[dict] = []

    # ------------------------------------------------------------------ loop
    def run(self) -> dict:
        cfg = self.cfg
        if cfg.resume and avatar_io.has_checkpoint(self.out):
            self.step = avatar_io.load_checkpoint(self.out, self)
            self._log(f"resumed from step {self.step}")
        self._log(f"training on {self.device} with the '{self._backend_name()}' rasteriser, "
                  f"{len(self.avatar.gaussians)} Gaussians, perceptual term: {self.perceptual_name}")
        schedule = FrameSchedule(self.train_idx, cfg.seed)
        t0 = time.time()
        stats = {"loss": float("nan"), "psnr": float("nan")}
        while self.step < cfg.steps:
            if self.cancel is not None and self.cancel.requested:
                path = avatar_io.save_checkpoint(self.out, self)
                self.cancel.checkpoint = str(path)
                err = CancelledError(f"training cancelled at step {self.step}; checkpoint {path}")
                err.checkpoint = str(path)  # type: ignore[attr-defined]
                raise err
            stats = self.train_step(schedule(self.step))
            self.step += 1
            self._after_step(stats, t0)
        avatar_io.save_checkpoint(self.out, self)
        avatar_io.save_avatar(self.out, self.avatar, self.seq, self.cfg, metrics={
            "train_loss": stats["loss"], "train_psnr_last": stats["psnr"],
            "num_gaussians": len(self.avatar.gaussians), "seconds": time.time() - t0,
            "device": str(self.device), "rasterizer": self._backend_name(), "steps": self.step})
        return {"avatar": str(self.out), "num_gaussians": len(self.avatar.gaussians),
                "seconds": time.time() - t0}

    def train_step(self, i: int) -> dict:
        """One optimisation step on frame i; returns {"loss", "psnr"}."""
        cfg, av = self.cfg, self.avatar
        shape, expr, pose, trans, cam = frame_inputs(av, self.seq, i, self.device)
        verts, verts_ref = av.posed_vertices(shape[None], expr[None], pose[None], trans[None])
        g = av.gaussians.place(verts[0], av.faces)
        g.means.retain_grad()
        out = rasterize(g.means, g.covars, g.opacities, g.colors, cam, self.background, backend=self.backend)
        gt = self.frames.get(i)
        l1 = (out.image - gt).abs().mean()
        loss = l1
        if self.perceptual_name == "vgg":
            loss = loss + cfg.lambda_perceptual * self.perceptual(out.image, gt)
        elif cfg.lambda_dssim > 0:
            loss = loss + cfg.lambda_dssim * self.perceptual(out.image, gt)
        if cfg.learn_blendshapes:
            disp = verts[0] - verts_ref[0]
            loss = loss + cfg.lambda_lap * losses.laplacian_loss(disp, self.laplacian)
            loss = loss + cfg.lambda_flame * losses.flame_loss(verts, verts_ref)
        if cfg.lambda_scale > 0:
            loss = loss + cfg.lambda_scale * losses.scale_ratio_loss(g.scales, cfg.scale_ratio)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if g.means.grad is not None:
            self.densifier.accumulate(g.means.grad, out.radii > 0)
        self.optimizer.step()
        self.densifier.step(self.step + 1, av.gaussians, self.optimizer, self.generator)
        with torch.no_grad():
            mse = (out.image.detach() - gt).square().mean().item()
        return {"loss": float(loss.item()), "psnr": -10.0 * math.log10(max(mse, 1e-12)), "frame": i}

    def _after_step(self, stats: dict, t0: float) -> None:
        cfg = self.cfg
        self.history.append({"step": self.step, "loss": stats["loss"], "psnr": stats["psnr"]})
        if self.sink is not None:
            self.sink.progress("train", self.step, cfg.steps, loss=round(stats["loss"], 5),
                               psnr=round(stats["psnr"], 3), n_gaussians=len(self.avatar.gaussians))
        if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
            avatar_io.save_checkpoint(self.out, self)
        if cfg.preview_every and self.step % cfg.preview_every == 0:
            path = self.write_preview(stats["frame"])
            if self.sink is not None:
                self.sink.preview(path)

    @torch.no_grad()
    def write_preview(self, i: int) -> Path:
        """Saves ground truth | render of frame i to output/previews/latest.png."""
        from engine.image_io import write_png

        shape, expr, pose, trans, cam = frame_inputs(self.avatar, self.seq, i, self.device)
        out = self.avatar.render(shape, expr, pose, trans, cam, self.background, self.backend)
        both = torch.cat([self.frames.get(i), out.image.clamp(0, 1)], dim=1).cpu().numpy()
        path = self.out / "previews" / "latest.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_png(path, both)
        return path

    def _backend_name(self) -> str:
        from engine.raster import default_backend
        return default_backend(self.device) if self.backend == "auto" else self.backend

    def _log(self, msg: str) -> None:
        log.info(msg)
        if self.sink is not None:
            self.sink.log(msg)


def resolve_head_model(spec: str) -> HeadModel:
    """"demo" → the procedural demo head (not FLAME); anything else → ``load_head_model(path)``."""
    if spec == "demo":
        from engine.demo_head import build_demo_head
        return build_demo_head()
    from engine.head_model import load_head_model
    return load_head_model(Path(spec))


def train(cfg: TrainConfig, sink=None, cancel=None) -> dict:
    """Trains an avatar as configured and writes the avatar folder (docs/FORMATS.md)."""
    head = resolve_head_model(cfg.head_model)
    return Trainer(cfg, head, sink, cancel).run()
