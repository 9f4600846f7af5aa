"""The baking loop: Stage II of FATE (§3.3, supp. §7.3, §9) — BakeNet trained on the image objective.

BakeNet (:mod:`engine.bake.bakenet`) turns a fixed 11-channel input at map resolution into 11
attribute channels (:mod:`engine.bake.channels`); its convolutions act as the low-pass pre-filter
ℋ of Eq. 11 and the bilinear lookup at each Gaussian's UV is ℬ. The trained avatar's bindings and
learnt blendshapes are inherited and BakeNet is trained on the same image objective (§3.5).

Channels are activated *per texel* before the bilinear lookup, so the written maps are exactly
what training rendered: a baked avatar re-splatted from its maps (``engine.maps``) reproduces the
baked renders. Scale uses the normalisation of Eq. 24 on the log scale.

Deviations, documented:

1. ``init="direct"`` (the default): BakeNet's input is the direct per-texel fit of the trained
   Gaussians (FATE Fig. 4's discontinuous "direct" maps, standardised per channel) instead of
   fixed noise, and its output is a *residual* added to that fit low-passed by a Gaussian of
   ``base_blur`` texels. The image objective then trains BakeNet as in FATE; the U-Net acts as a
   learnt pre-filter of the direct fit. From noise alone (``init="noise"``, FATE's formulation) a
   CPU-sized bake is 1–7 dB below the trained avatar after a few hundred steps; this way it is
   within 1 dB after ~150–200 steps, and the colour map keeps about half the direct fit's total
   variation (docs/benchmarks.md).
2. ``init="noise"`` is FATE's procedure (its code, docs/FATE_DEVIATIONS.md): FATE's U-Net
   (:class:`engine.bake.bakenet.FateBakeNet`), fixed U(−1, 1) input, scale cap mean + std of the
   trained log-scales, rotation and scale regularisers 0.1, constant lr. An optional warm start
   (``warmup_steps``, default 0 as in FATE) regresses the trained attributes first.
3. ``base_channels`` and ``depth`` are configurable (FATE: 64 and 4 levels); CPU runs use a
   narrower net.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.avatar_folder import AvatarFolder
from engine.bake import dynamic
from engine.bake.bakenet import make_bakenet
from engine.bake.channels import (
    CHANNELS,
    ScaleNorm,
    activate,
    raw_from_maps,
    standardise,
)
from engine.bake.config import BakeConfig
from engine.bake.direct_fit import direct_fit_maps, gaussian_blur
from engine.bake.guards import (
    check_bake_step,
    check_state_finite,
    estimate_bake_bytes,
    load_bake_checkpoint,
)
from engine.bake.key_fit import headgas_keys, map_keys_from_maps
from engine.bake.pbr_shading import shade_baked
from engine.bake.pseudo_views import complete_full_head, seen_visibility_map
from engine.data import load_sequence
from engine.data.frames import FrameImages, FrameSchedule, resize_sequence
from engine.device import resolve_device
from engine.errors import CancelledError
from engine.geometry.cameras import Camera
from engine.geometry.rotations import axis_angle_to_matrix
from engine.io.atomic import file_sha256, uninterruptible, write_safetensors
from engine.io.output import claim_output
from engine.jobs.config import require, to_dict
from engine.map_keys import DYNAMIC_DIR, MapKeyAppearance, MapKeys, map_key_files
from engine.maps import gaussian_uvs, sample_maps, write_maps
from engine.model.appearance_drivers import make_drivers
from engine.model.gaussians import place_gaussians
from engine.raster import rasterize
from engine.train.losses import make_perceptual_loss, scale_ratio_loss

log = logging.getLogger(__name__)


class Baker:
    """Stage II of FATE: trains BakeNet on the image objective with the avatar's bindings."""

    def __init__(self, cfg: BakeConfig, sink=None, cancel=None):
        self.cfg, self.sink, self.cancel = cfg, sink, cancel
        self.device = resolve_device(cfg.device)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.folder = AvatarFolder(cfg.avatar)
        self.loaded = self.folder.load(self.device, force=cfg.force)
        av = self.loaded.avatar
        for p in list(av.gaussians.parameters()) + list(av.blendshapes.parameters()):
            p.requires_grad_(False)
        if isinstance(av.appearance, torch.nn.Module):
            av.appearance.requires_grad_(False)
        tr = self.loaded.tracking
        dataset = self.loaded.meta.get("dataset", "")
        seq = load_sequence(Path(dataset))
        self.loaded.check_same_frames(seq)
        self.seq = resize_sequence(seq, max(int(tr["width"]), int(tr["height"])))
        self.train_idx = [i for i in range(len(tr["split"])) if int(tr["split"][i]) == 0]
        self.frames = FrameImages(self.seq, self.train_idx, cfg.background, self.device)
        self.background = torch.tensor(cfg.background, dtype=torch.float32, device=self.device)
        g = av.gaussians
        self.uv = gaussian_uvs(g.face_idx, g.bary, av.head.uvs, av.head.faces_uv_all)
        with torch.no_grad():
            self.target = {k: v.detach() for k, v in g.activated().items()}
            logs = g.scale_log.detach()
            cap = float(logs.mean() + logs.std()) if cfg.fate_recipe else float(logs.max()) + 0.5
            self.scale_norm = ScaleNorm(float(logs.mean()), cap)  # FATE: mean + std (its code)
        self._init_expression_dependence()
        extra_in = dynamic.CHANNELS if self.cond is not None else 0
        self.net = make_bakenet("fate" if cfg.fate_recipe else "residual", cfg.base_channels, cfg.depth,
                                in_channels=11 + extra_in).to(self.device)
        gen = torch.Generator().manual_seed(cfg.seed)
        self.net_input = (torch.rand(1, 11, cfg.resolution, cfg.resolution, generator=gen) * 2 - 1).to(self.device)
        self.base_raw: Tensor | None = None
        self.update_mask: Tensor | None = None
        """[1, 11, R, R] in [0, 1]: what share of the network's output each raw texel takes (the
        full-head stage: 1 − the seen weight, engine.bake.pseudo_views), None = all of it."""
        if cfg.init == "direct":
            self._init_from_direct_fit()
        self.pbr_maps = self._pbr_maps() if av.shading is not None else {}
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.perceptual, self.perceptual_name = make_perceptual_loss(
            Path(cfg.vgg_weights) if cfg.vgg_weights else None)
        self.step = 0
        self.schedule = FrameSchedule(self.train_idx, cfg.seed)

    @torch.no_grad()
    def _init_expression_dependence(self) -> None:
        """Issue 19: ``dynamic_maps`` → the conditioning of the conditioned BakeNet
        (:mod:`engine.bake.dynamic`); a HeadGaS avatar → its map shape keys, fitted from its MLP
        before baking (:func:`engine.bake.key_fit.headgas_keys`) and blended into every image
        step, so the base maps are trained with exactly what Blender adds to them."""
        cfg, av = self.cfg, self.loaded.avatar
        self.cond: dynamic.ExpressionConditioning | None = None
        self.keys: MapKeys | None = None
        self.key_blend: MapKeyAppearance | None = None
        self.key_stats: dict = {}
        if cfg.dynamic_maps:
            if av.appearance is not None:
                log.warning("dynamic_maps: the avatar's own appearance model is not used; BakeNet learns "
                            "the expression-dependent maps from the images")
            self.cond = dynamic.ExpressionConditioning(av, self.loaded.tracking, cfg.resolution, self.train_idx,
                                                       cfg.dynamic_pca, self.device)
        elif av.appearance is not None and cfg.map_keys:
            self.keys, self.key_stats = headgas_keys(av, self.loaded.tracking, self.train_idx, self.uv,
                                                     cfg.resolution, cfg.base_blur, cfg.key_min_effect)
            self.key_blend = MapKeyAppearance(self.keys, self.key_drivers(), self.uv)
            log.info("map shape keys from the HeadGaS MLP: %d keys, explained %.3f", len(self.keys),
                     self.key_stats.get("explained", float("nan")))

    def key_drivers(self):
        """The driving vector whose halves are the candidate map shape keys: every expression
        coefficient of the avatar (``key_num_expr`` at most) and the jaw."""
        av = self.loaded.avatar
        n = min(self.cfg.key_num_expr, int(av.blendshapes.delta_exprdirs.shape[-1]))
        return make_drivers(av.head, n, use_jaw=True)

    @torch.no_grad()
    def _init_from_direct_fit(self) -> None:
        """``init="direct"``: BakeNet's input becomes the standardised raw channels of the direct
        per-texel fit [1, 11, R, R] (instead of noise), so its convolutions act as a learnt
        pre-filter ℋ (Eq. 11) of that fit; its output is added to ``base_raw``, the direct fit
        low-passed by σ = ``base_blur`` texels. The zero-initialised output layer makes step 0
        render the low-passed maps."""
        shell = self.loaded.avatar.gaussians.shell
        direct = direct_fit_maps(self.target, self.uv.cpu(), self.cfg.resolution)
        base = {k: gaussian_blur(m, self.cfg.base_blur) for k, m in direct.items()} if self.cfg.base_blur > 0 else direct
        self.base_raw = raw_from_maps(base, self.scale_norm, shell)[None].to(self.device)
        self.net_input = standardise(raw_from_maps(direct, self.scale_norm, shell))[None].to(self.device)

    @torch.no_grad()
    def _pbr_maps(self) -> dict[str, Tensor]:
        """A relightable avatar's roughness and F0 maps: the direct per-texel fit of the trained
        values, low-passed by σ = max(``base_blur``, 1) texels, kept fixed while BakeNet bakes the
        albedo (in the colour channels) and the geometry. (HRAvatar has no baking stage; roughness
        and F0 are smooth by their TV prior, so a filtered fit keeps what the Gaussians learnt.)"""
        av = self.loaded.avatar
        for p in av.shading.parameters():
            p.requires_grad_(False)
        values = {k: v.detach() for k, v in av.shading.activated(av.gaussians).items() if k != "albedo"}
        fit = direct_fit_maps(values, self.uv.cpu(), self.cfg.resolution)
        maps = {k: gaussian_blur(m, max(self.cfg.base_blur, 1.0)) for k, m in fit.items()}
        self.pbr_values = {k: v.to(self.device) for k, v in sample_maps(maps, self.uv.cpu()).items()}
        return maps

    # ------------------------------------------------------------------ attributes
    def maps(self, frame: int | None = None) -> dict[str, Tensor]:
        """Current activated maps, name → [R, R, C]: the neutral ones, or with ``dynamic_maps``
        frame ``frame``'s (colour and opacity from the pass conditioned on its expression, the
        geometry from the neutral pass)."""
        if self.cond is None:
            raw = self.net(self.net_input)
        else:
            raw = self.net(torch.cat([self.net_input, self.cond.neutral], dim=1))
            if frame is not None:
                a, b = CHANNELS["color"][0], CHANNELS["opacity"][1]
                raw_e = self.net(torch.cat([self.net_input, self.cond.frame_map(frame)], dim=1))
                raw = torch.cat([raw[:, :a], raw_e[:, a:b], raw[:, b:]], dim=1)
        if self.update_mask is not None:  # the full-head fine-tune changes only what was invented
            raw = raw * self.update_mask
        if self.base_raw is not None:
            raw = raw + self.base_raw
        return activate(raw[0], self.scale_norm, self.loaded.avatar.gaussians.shell)

    def gaussian_attributes(self, maps: dict[str, Tensor], frame: int | None = None) -> dict[str, Tensor]:
        """Per-Gaussian attributes (baked; geometry from the trained avatar when appearance_only;
        with map shape keys, frame ``frame``'s colour and opacity)."""
        vals = sample_maps(maps, self.uv)
        if self.cfg.appearance_only:
            for k in ("scale", "rotation", "offset"):
                vals[k] = self.target[k]
        if self.key_blend is not None and frame is not None:
            tr = self.loaded.tracking
            vals["color"], vals["opacity"] = self.key_blend.blend(
                vals["color"], vals["opacity"], torch.as_tensor(tr["expr"][frame], device=self.device),
                torch.as_tensor(tr["pose"][frame], device=self.device))
        return vals

    def render(self, vals: dict[str, Tensor], i: int):
        av = self.loaded.avatar
        tr = self.loaded.tracking

        shape = torch.as_tensor(tr["shape"], device=self.device)
        expr = torch.as_tensor(tr["expr"][i], device=self.device)
        pose = torch.as_tensor(tr["pose"][i], device=self.device)
        trans = torch.as_tensor(tr["translation"][i], device=self.device)
        cam = Camera(torch.as_tensor(tr["viewmat"][i], device=self.device),
                     torch.as_tensor(tr["K"][i], device=self.device), int(tr["width"]), int(tr["height"]))
        with torch.no_grad():
            verts, _ = av.posed_vertices(shape[None], expr[None], pose[None], trans[None])
        local_rot = axis_angle_to_matrix(vals["rotation"])
        g = place_gaussians(verts[0], av.faces, av.gaussians.face_idx, av.gaussians.bary, vals["color"],
                            vals["opacity"], vals["scale"], local_rot, vals["offset"])
        colors = g.colors
        if av.shading is not None:  # relightable: the baked albedo shaded under the learnt light
            colors = shade_baked(av.shading, g, local_rot, self.pbr_values, cam)
        return rasterize(g.means, g.covars, g.opacities, colors, cam, self.background, backend=self.cfg.rasterizer)

    # ------------------------------------------------------------------ loop
    def warmup_step(self) -> float:
        """Attribute regression to the trained Gaussians (warm start; Eq. 26 form)."""
        vals = self.gaussian_attributes(self.maps())
        loss = sum(F.mse_loss(vals[k], self.target[k]) for k in ("color", "opacity"))
        if not self.cfg.appearance_only:
            loss = loss + F.mse_loss(torch.log(vals["scale"]), torch.log(self.target["scale"])) * 0.1
            loss = loss + F.mse_loss(vals["offset"] / 0.001, self.target["offset"] / 0.001) * 0.1
            loss = loss + _rotation_distance(vals["rotation"], self.target["rotation"]) * 0.1
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def image_step(self, i: int) -> dict:
        cfg = self.cfg
        vals = self.gaussian_attributes(self.maps(i), i)
        out = self.render(vals, i)
        gt = self.frames.get(i)
        loss = (out.image - gt).abs().mean()
        if self.perceptual_name == "vgg":
            loss = loss + cfg.lambda_perceptual * self.perceptual(out.image, gt)
        elif cfg.lambda_dssim > 0:
            loss = loss + cfg.lambda_dssim * self.perceptual(out.image, gt)
        if cfg.rotation_weight > 0 and not cfg.appearance_only:
            loss = loss + cfg.rotation_weight * vals["rotation"][:, :2].square().sum(-1).mean()  # Eq. 27
        if cfg.scale_weight > 0 and not cfg.appearance_only:
            loss = loss + cfg.scale_weight * scale_ratio_loss(vals["scale"], cfg.scale_ratio)  # Eq. 13
        if cfg.lambda_attr > 0:
            loss = loss + cfg.lambda_attr * sum(F.mse_loss(vals[k], self.target[k])  # Eq. 26
                                                for k in ("color", "opacity"))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        for group in self.opt.param_groups:
            group["lr"] = self.image_lr(self.step - cfg.warmup)
        self.opt.step()
        mse = float((out.image.detach() - gt).square().mean())
        return {"loss": float(loss.detach()), "psnr": -10 * math.log10(max(mse, 1e-12))}

    def image_lr(self, k: int) -> float:
        """Learning rate of image step ``k`` (0-based): ``lr`` decaying exponentially to
        ``lr_final`` at the last step (a function of the step, so resumed bakes are exact)."""
        cfg = self.cfg
        return cfg.lr * (cfg.final_lr / cfg.lr) ** (k / max(cfg.steps - 1, 1))

    def run(self) -> dict:
        cfg = self.cfg
        ckpt = self.folder.path(self.folder.MAPS_CHECKPOINT)
        if cfg.resume and ckpt.exists():
            self._load_checkpoint(ckpt)
        total = cfg.warmup + cfg.steps
        if cfg.full_head_only:  # the image stage was an earlier bake's (maps_seen.safetensors)
            self.step = total
        t0 = time.time()
        stats = {"loss": float("nan"), "psnr": float("nan")}
        while self.step < total:
            if self.cancel is not None and self.cancel.requested:
                self._save_checkpoint(ckpt)
                self.cancel.checkpoint = str(ckpt)
                err = CancelledError(f"baking cancelled at step {self.step}; checkpoint {ckpt}")
                err.checkpoint = str(ckpt)  # type: ignore[attr-defined]
                raise err
            if self.step < cfg.warmup:
                stats = {"loss": self.warmup_step(), "psnr": float("nan")}
            else:
                stats = self.image_step(self.schedule(self.step - cfg.warmup))
            check_bake_step(stats, self.step, ckpt)
            self.step += 1
            if self.sink is not None:
                self.sink.progress("bake", self.step, total, loss=round(stats["loss"], 5),
                                   psnr=None if math.isnan(stats["psnr"]) else round(stats["psnr"], 3))
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < total:
                self._save_checkpoint(ckpt)
        if self.cond is not None and cfg.map_keys:  # before the full-head stage replaces the conditioned net
            self._fit_dynamic_keys()
        if cfg.full_head:  # FATE §3.4 (engine.bake.pseudo_views)
            self.full_head = complete_full_head(self, self.sink, self.cancel)
        else:
            self.visibility_map = seen_visibility_map(self)
        path = self.write()
        if ckpt.exists():
            ckpt.unlink()
        return {"maps": str(path.parent), "seconds": round(time.time() - t0, 1), "steps": self.step,
                "full_head": getattr(self, "full_head", None)}

    @torch.no_grad()
    def write(self) -> Path:
        """Writes <avatar>/maps (EXR + previews + maps.json) and the BakeNet weights."""
        maps = {k: v.detach().cpu() for k, v in self.maps().items()}
        if self.cfg.appearance_only:
            maps.update(direct_fit_maps(self.target, self.uv.cpu(), self.cfg.resolution,
                                        names=("scale", "rotation", "offset")))
        if getattr(self, "visibility_map", None) is not None:
            maps["visibility"] = self.visibility_map.cpu()
        extra = {"source_avatar_sha256": file_sha256(self.folder.path(self.folder.GAUSSIANS)),
                 "bake_config": to_dict(self.cfg)}
        keys, stats = self.keys, self.key_stats
        if keys is not None and len(keys) == 0:
            log.warning("map shape keys: no key changes the maps by key_min_effect = %g; none written",
                        self.cfg.key_min_effect)
            keys = None
        npz_files = {}
        if keys is not None:
            npz_files, extra["dynamic"] = map_key_files(keys, stats)
        exr_files = {}
        if self.pbr_maps:
            maps, pbr_extra, exr_files = self._pbr_outputs(maps)
            extra.update(pbr_extra)
        path = write_maps(self.folder.maps_dir, maps, extra=extra, keep_backups=self.cfg.keep_backups,
                          exr_files=exr_files, npz_files=npz_files)
        if keys is None and (self.folder.maps_dir / DYNAMIC_DIR).is_dir():
            shutil.rmtree(self.folder.maps_dir / DYNAMIC_DIR)  # a previous bake's keys
        weights = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        weights["input"] = self.net_input
        if self.cond is not None:
            weights.update(self.cond.state())
        if self.base_raw is not None:
            weights["base_raw"] = self.base_raw
        if self.update_mask is not None:
            weights["update_mask"] = self.update_mask
        write_safetensors(self.folder.path(self.folder.BAKENET), weights)
        return path

    @torch.no_grad()
    def _fit_dynamic_keys(self) -> None:
        """``dynamic_maps``: the map shape keys fitted from the conditioned BakeNet over the
        training frames (:func:`engine.bake.key_fit.map_keys_from_maps`); they are then blended
        into the real frames of the full-head stage, as Blender blends them."""
        self.keys, self.key_stats = map_keys_from_maps(lambda i: {k: v.detach() for k, v in self.maps(i).items()},
                                                       self.key_drivers(), self.loaded.tracking, self.train_idx,
                                                       self.cfg.resolution, self.cfg.key_min_effect)
        if len(self.keys):
            self.key_blend = MapKeyAppearance(self.keys, self.key_drivers(), self.uv)

    def _pbr_outputs(self, maps: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict, dict]:
        """A relightable avatar's maps (``albedo`` instead of ``color``, plus ``roughness`` and ``f0``),
        the ``maps.json`` entries (``appearance`` and the learnt ``environment``) and the files
        published with the maps: ``environment.exr`` (linear RGB lat-long radiance, docs/FORMATS.md)."""
        maps = {("albedo" if k == "color" else k): v for k, v in maps.items()}
        maps.update({k: v.cpu() for k, v in self.pbr_maps.items()})
        env = self.loaded.avatar.shading.environment
        exr_files = {"environment.exr": env.radiance().detach().cpu().numpy()}
        return maps, {"appearance": "pbr", "environment": {
            "file": "environment.exr", "colorspace": "Linear Rec.709", "projection": "equirectangular",
            "frame": "room: x camera right, y camera forward, z camera up (the still camera's view)"}}, exr_files

    def _save_checkpoint(self, path: Path) -> None:
        tensors = {f"net/{k}": v for k, v in self.net.state_dict().items()}
        for j, (p, st) in enumerate(self.opt.state.items()):
            for key in ("exp_avg", "exp_avg_sq", "step"):
                tensors[f"adam/{j}/{key}"] = st[key]
        tensors["step"] = torch.tensor(self.step)
        check_state_finite(tensors, self.step, path)
        write_safetensors(path, tensors)

    def _load_checkpoint(self, path: Path) -> None:
        t = load_bake_checkpoint(path, str(self.device))
        self.net.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("net/")})
        for j, p in enumerate(self.net.parameters()):
            if f"adam/{j}/exp_avg" in t:
                self.opt.state[p] = {"step": t[f"adam/{j}/step"].cpu(), "exp_avg": t[f"adam/{j}/exp_avg"],
                                     "exp_avg_sq": t[f"adam/{j}/exp_avg_sq"]}
        self.step = int(t["step"])


def _rotation_distance(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared geodesic-ish distance between axis-angle rotations (via matrices)."""
    return (axis_angle_to_matrix(a) - axis_angle_to_matrix(b)).square().sum((-1, -2)).mean()


def bake(cfg: BakeConfig, sink=None, cancel=None) -> dict:
    """Runs a bake job and writes <avatar>/maps, holding the avatar folder's lock (docs/RELIABILITY.md)."""
    AvatarFolder(require(cfg, "avatar", "bake")).check_exists()
    with claim_output(cfg.avatar, "bake") as output:
        baker = Baker(cfg, sink, cancel)
        output.require_space(estimate_bake_bytes(cfg.resolution, baker.net, baker.net_input))
        with uninterruptible():  # a cancel stops the loop at its next step, with a checkpoint
            return baker.run()
