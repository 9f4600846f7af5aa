"""Monocular reconstruction of a FATE avatar (FATE §3.1, §3.2, §3.5; supp. §7.2).

One step: pick a training frame → FLAME forward with the learnt blendshapes (Eq. 5) → place the
UV-bound Gaussians on the posed mesh (Eq. 2–4) → rasterise → image loss (Eq. 12) + regularisers
(Eq. 13–15) → Adam → densify / prune / reset on schedule (§3.2).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch

from engine.avatar_folder import AvatarFolder
from engine.data import load_sequence
from engine.data.frames import FrameImages, FrameSchedule, resize_sequence
from engine.device import resolve_device
from engine.errors import CancelledError, ConfigError
from engine.io.atomic import uninterruptible
from engine.io.output import claim_output
from engine.jobs.config import require
from engine.model.avatar import Avatar, build_avatar, frame_inputs, match_coefficients
from engine.model.head_model import HeadModel
from engine.model.headgas import attach_headgas
from engine.model.provenance import check_tracking_model
from engine.model.resolve import resolve_head_model
from engine.model.visibility import evenly_spaced, save_visibility, sequence_visibility
from engine.raster import default_backend, rasterize
from engine.train import losses
from engine.train.checkpoint import (
    TrainState,
    has_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from engine.train.config import TrainConfig
from engine.train.densify.factory import make_strategy
from engine.train.guards import before_training, check_step
from engine.train.optimizer import make_optimizer
from engine.train.pbr_losses import PBRRegularisers

log = logging.getLogger(__name__)

PERCEPTUAL_FALLBACK_WARNING = (
    "No VGG16 weights given: the perceptual term is D-SSIM x{weight:g}, not FATE's VGG x0.1 "
    "(Eq. 12). Numbers are not comparable with the paper's. Supply torchvision's vgg16 weights "
    "(vgg16-397923af.pth or a .safetensors of it) with --vgg_weights PATH; see README, 'VGG weights'.")


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
        self.folder = AvatarFolder(cfg.output)
        self.seq = match_coefficients(resize_sequence(load_sequence(Path(cfg.dataset)), cfg.image_size), head)
        self.tracking_model = check_tracking_model(Path(cfg.dataset), head)
        self.train_idx = self.seq.indices("train")
        if not self.train_idx:
            raise ConfigError(f"{cfg.dataset}: the dataset has no training frames")
        self.background = torch.tensor(cfg.background, dtype=torch.float32, device=self.device)
        avatar = build_avatar(head, self.seq, self.device, uv_resolution=cfg.uv_resolution, shell=cfg.shell,
                              learn_blendshapes=cfg.learn_blendshapes, refine_tracking=cfg.refine_tracking,
                              binding=cfg.binding, soft_resolution=cfg.soft_uv_resolution, soft_width=cfg.soft_width,
                              background=cfg.background, appearance=cfg.appearance)
        if cfg.appearance == "headgas":
            h = cfg.headgas
            attach_headgas(avatar, self.seq.shape, h.num_expr, h.jaw, h.feature_dim, h.hidden, h.pe_freqs)
        self.strategy = make_strategy(cfg.densify)
        self.state = TrainState(step=0, avatar=avatar, optimizer=make_optimizer(avatar, cfg),
                                densify_state=self.strategy.initialize_state(len(avatar.gaussians), self.device),
                                generator=torch.Generator().manual_seed(cfg.seed))
        self.strategy.check_sanity(avatar.gaussians, self.state.optimizer, self.state.densify_state)
        self.strategy.bind_sequence(self.state.densify_state, self.seq, self.train_idx, head, seed=cfg.seed)
        self.laplacian = losses.uniform_laplacian(torch.as_tensor(head.faces, dtype=torch.long),
                                                  head.num_vertices).to(self.device)
        self.perceptual, self.perceptual_name = losses.make_perceptual_loss(
            Path(cfg.vgg_weights) if cfg.vgg_weights else None)
        self.frames = FrameImages(self.seq, self.train_idx, cfg.background, self.device)
        self.pbr_losses = None if avatar.shading is None else PBRRegularisers(
            avatar.faces, cfg.lambda_normal, cfg.lambda_albedo, cfg.lambda_tv)
        self.backend = cfg.rasterizer
        self.history: list[dict] = []

    @property
    def avatar(self) -> Avatar:
        """The model being trained."""
        return self.state.avatar

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.state.optimizer

    @property
    def step(self) -> int:
        """Optimisation steps done."""
        return self.state.step

    @step.setter
    def step(self, value: int) -> None:
        self.state.step = int(value)

    # ------------------------------------------------------------------ loop
    def run(self) -> dict:
        """Trains to ``cfg.steps`` (resuming first if asked), then writes the avatar folder.

        Returns:
            {"avatar": folder, "num_gaussians": N, "seconds": wall time}.
        Raises:
            CancelledError: on a cancel request, after writing a checkpoint (its path in
                ``checkpoint``).
        """
        cfg = self.cfg
        if cfg.resume and has_checkpoint(self.folder):
            load_checkpoint(self.folder, self.state, self.device)
            self._log(f"resumed from step {self.step}")
        if self.perceptual_name != "vgg":
            self._log(PERCEPTUAL_FALLBACK_WARNING.format(weight=cfg.lambda_dssim), level="warning")
        self._log(f"training on {self.device} with the '{self._backend_name()}' rasteriser, "
                  f"{len(self.avatar.gaussians)} Gaussians, perceptual term: {self.perceptual_term()}")
        schedule = FrameSchedule(self.train_idx, cfg.seed)
        t0 = time.time()
        stats = {"loss": float("nan"), "psnr": float("nan")}
        while self.step < cfg.steps:
            if self.cancel is not None and self.cancel.requested:
                path = save_checkpoint(self.folder, self.state)
                self.cancel.checkpoint = str(path)
                err = CancelledError(f"training cancelled at step {self.step}; checkpoint {path}")
                err.checkpoint = str(path)  # type: ignore[attr-defined]
                raise err
            stats = self.train_step(schedule(self.step))
            check_step(stats, self.step, self.folder)
            self.step += 1
            self._after_step(stats, t0)
        save_checkpoint(self.folder, self.state)
        save_visibility(self.folder.root, sequence_visibility(
            self.avatar, self.seq, evenly_spaced(self.train_idx, cfg.visibility_frames), self.device, self.backend))
        self.folder.save(self.avatar, self.seq, self.cfg, metrics={
            "train_loss": stats["loss"], "train_psnr_last": stats["psnr"],
            "num_gaussians": len(self.avatar.gaussians), "seconds": time.time() - t0,
            "device": str(self.device), "rasterizer": self._backend_name(), "steps": self.step,
            "perceptual": self.perceptual_term(), "dataset_tracked_with": self.tracking_model})
        return {"avatar": str(self.folder.root), "num_gaussians": len(self.avatar.gaussians),
                "seconds": time.time() - t0}

    def train_step(self, i: int) -> dict:
        """One optimisation step on frame i; returns {"loss", "psnr"}."""
        cfg, av = self.cfg, self.avatar
        shape, expr, pose, trans, cam = frame_inputs(av, self.seq, i, self.device)
        verts, verts_ref = av.posed_vertices(shape[None], expr[None], pose[None], trans[None])
        delta = av.binding_offsets(shape, expr, pose)
        g = av.place(verts[0], delta, expr=expr, pose=pose)
        colors, shading = av.shade(g, cam)
        out = rasterize(g.means, g.covars, g.opacities, colors, cam, self.background, backend=self.backend)
        gt = self.frames.get(i)
        info = {"means": g.means, "means2d": out.means2d, "radii": out.radii, "frame": i, "image": out.image, "gt": gt}
        self.strategy.step_pre_backward(self.state.densify_state, info)
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
        if delta is not None and cfg.lambda_soft_offset > 0:
            loss = loss + cfg.lambda_soft_offset * delta.square().mean()
        if cfg.appearance == "headgas" and cfg.headgas.lambda_residual > 0:
            loss = loss + cfg.headgas.lambda_residual * av.appearance.residual_penalty()
        if shading is not None:  # relightable appearance (HRAvatar §3.4)
            loss = loss + self.pbr_losses(shading, verts[0], av.gaussians.face_idx, av.gaussians.bary,
                                          g.opacities, out.radii)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.strategy.step_post_backward(self.state.densify_state, info)
        self.optimizer.step()
        self.strategy.step_post_update(self.state.densify_state, self.step + 1, av.gaussians, self.optimizer,
                                       self.state.generator)
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
            save_checkpoint(self.folder, self.state)
        if cfg.preview_every and self.step % cfg.preview_every == 0:
            path = self.write_preview(stats["frame"])
            if self.sink is not None:
                self.sink.preview(path)

    @torch.no_grad()
    def write_preview(self, i: int) -> Path:
        """Saves ground truth | render of frame i to output/previews/latest.png."""
        from engine.io.images import write_png

        shape, expr, pose, trans, cam = frame_inputs(self.avatar, self.seq, i, self.device)
        out = self.avatar.render(shape, expr, pose, trans, cam, self.background, self.backend)
        both = torch.cat([self.frames.get(i), out.image.clamp(0, 1)], dim=1).cpu().numpy()
        path = self.folder.path(self.folder.PREVIEW)
        write_png(path, both)
        return path

    def perceptual_term(self) -> str:
        """The perceptual term as trained, e.g. "vgg x0.1" (FATE, Eq. 12) or "dssim x0.2 (no VGG
        weights; FATE: vgg x0.1)" — written into avatar.json so every number says which it was."""
        if self.perceptual_name == "vgg":
            return f"vgg x{self.cfg.lambda_perceptual:g}"
        return f"dssim x{self.cfg.lambda_dssim:g} (no VGG weights; FATE: vgg x0.1)"

    def _backend_name(self) -> str:
        return default_backend(self.device) if self.backend == "auto" else self.backend

    def _log(self, msg: str, level: str = "info") -> None:
        # run_job forwards engine.* records to the sink (with their level): one line, one event
        log.log(logging.WARNING if level == "warning" else logging.INFO, msg)


def train(cfg: TrainConfig, sink=None, cancel=None) -> dict:
    """Trains an avatar as configured and writes the avatar folder (docs/FORMATS.md), holding the
    folder's lock; the checks of docs/RELIABILITY.md run before step 1."""
    require(cfg, "dataset", "train")
    with claim_output(require(cfg, "output", "train"), "train") as output:
        head = resolve_head_model(cfg.head_model)
        trainer = Trainer(cfg, head, sink, cancel)
        before_training(trainer.avatar, trainer.seq, cfg, trainer.device, output)
        with uninterruptible():  # a cancel stops the loop at its next step, with a checkpoint
            return trainer.run()
