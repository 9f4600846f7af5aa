"""Neural baking: discrete Gaussians → continuous, editable UV maps (FATE §3.3, supp. §7.3, §9).

BakeNet is a U-Net (supp. Fig. 10) that turns a fixed 11-channel Gaussian-noise map ℱ at map
resolution into 11 attribute channels (scale 3, rotation 3 as axis-angle, colour 3, opacity 1,
normal offset 1). Its convolutions act as the low-pass pre-filter ℋ of Eq. 11; the bilinear
lookup at each Gaussian's UV is ℬ. Stage II of FATE: the trained avatar's bindings and learnt
blendshapes are inherited and BakeNet is trained on the same image objective (§3.5).

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
2. With ``init="noise"``, BakeNet is first warm-started for ``warmup_steps`` by regressing the
   trained Gaussians' activated attributes at their UVs (the attribute term of Eq. 26 with a
   large weight, then switched off or to ``lambda_attr``).
3. ``base_channels`` and ``depth`` are configurable (FATE: 64 and 4 levels, 64→1024); CPU runs use
   a narrower net.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine import losses
from engine.avatar_io import load_avatar, write_json, write_safetensors
from engine.errors import CancelledError, ConfigError
from engine.maps import gaussian_uvs, sample_maps, write_maps

log = logging.getLogger(__name__)

CHANNELS = {"scale": (0, 3), "rotation": (3, 6), "color": (6, 9), "opacity": (9, 10), "offset": (10, 11)}
"""Slices of BakeNet's 11 output channels (supp. §7.3 order)."""


@dataclass
class BakeConfig:
    """A baking job (FATE §3.3)."""

    avatar: str = ""
    """trained avatar folder; maps are written to <avatar>/maps"""
    resolution: int = 512
    """map resolution (FATE: 512)"""
    steps: int = 2000
    """image-objective steps (init="direct" measured converged by ~150 at 128²; init="noise"
    needs ~10k, as in FATE)"""
    warmup_steps: int = -1
    """attribute-regression warm-start steps before the image objective (-1: 500 for
    init="noise", 0 for init="direct", whose starting maps already hold the attributes)"""
    base_channels: int = 64
    """first U-Net width (FATE: 64)"""
    depth: int = 4
    """U-Net down-sampling levels (FATE: 4, i.e. 64→1024)"""
    lr: float = 1e-3
    """Adam learning rate (supp. §7.3)"""
    lr_final: float = 1e-4
    """learning rate at the last image step (exponential decay from ``lr``; = lr: constant)"""
    init: Literal["direct", "noise"] = "direct"
    """"direct": BakeNet filters the per-texel fit of the trained Gaussians and adds a residual to
    its low-passed version (module doc); converges in ~150 steps. "noise": BakeNet maps fixed
    noise to the maps, as in FATE (needs thousands of steps, i.e. a GPU)"""
    base_blur: float = 1.0
    """σ of the Gaussian low-pass of the starting maps when init="direct", in texels"""
    appearance_only: bool = False
    """bake colour + opacity only; keep the trained geometry (supp. §9)"""
    lambda_rotation: float = 0.0
    """rotation regulariser ‖r_x‖² + ‖r_y‖² (Eq. 27): flatter splats, smoother maps"""
    lambda_attr: float = 0.0
    """attribute regulariser ‖v − v̄‖² to the trained values (Eq. 26) during the image stage"""
    lambda_dssim: float = 0.2
    """D-SSIM weight (perceptual term without VGG weights)"""
    vgg_weights: str = ""
    """VGG16 weights for the perceptual term (optional)"""
    lambda_perceptual: float = 0.1
    """VGG weight when vgg_weights is given"""
    device: str = "auto"
    """auto, cuda or cpu"""
    rasterizer: str = "auto"
    """auto, torch or gsplat"""
    threads: int = 0
    """CPU threads for torch (0 = torch's default)"""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """background colour"""
    checkpoint_every: int = 500
    """resumable checkpoint interval"""
    preview_every: int = 0
    """preview image interval (0 = never)"""
    seed: int = 0
    """random seed"""
    resume: bool = False
    """continue from <avatar>/maps_checkpoint if present"""

    @property
    def warmup(self) -> int:
        """``warmup_steps`` with -1 resolved for ``init``."""
        if self.warmup_steps >= 0:
            return self.warmup_steps
        return 500 if self.init == "noise" else 0

    def __post_init__(self):
        if self.resolution < 16 or self.resolution % (2 ** self.depth):
            raise ConfigError(f"bake resolution must be >= 16 and divisible by 2^depth = {2 ** self.depth}, "
                              f"found {self.resolution}")
        self.background = tuple(float(c) for c in self.background)  # type: ignore[assignment]


class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.2, inplace=True))


class BakeNet(nn.Module):
    """U-Net of supp. Fig. 10: 11 → base → ×2 per level (to base·2^depth) → back to base → 11.

    Args:
        base: channels after the first convolution (FATE: 64).
        depth: number of 2× down-samplings (FATE: 4 → 1024 channels at the bottom).
        in_channels, out_channels: 11 each (noise in, attributes out).
    """

    def __init__(self, base: int = 64, depth: int = 4, in_channels: int = 11, out_channels: int = 11):
        super().__init__()
        widths = [base * 2 ** i for i in range(depth + 1)]
        self.inc = _Block(in_channels, widths[0])
        self.down = nn.ModuleList(_Block(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                for i in reversed(range(depth)))
        self.dec = nn.ModuleList(_Block(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.out = nn.Conv2d(widths[0], out_channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: noise [B, 11, R, R] → raw attribute channels [B, 11, R, R]."""
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        h = skips.pop()
        for up, dec in zip(self.up, self.dec):
            h = dec(torch.cat([up(h), skips.pop()], dim=1))
        return self.out(h)


@dataclass
class ScaleNorm:
    """Eq. 24: s = s_max − softplus(−(v + s_mean) + s_max) on the log scale (GGHead-style)."""

    s_mean: float
    s_max: float

    def __call__(self, v: Tensor) -> Tensor:
        return self.s_max - F.softplus(-(v + self.s_mean) + self.s_max)

    def inverse(self, s: Tensor) -> Tensor:
        """v such that self(v) = s (s < s_max)."""
        y = (self.s_max - s).clamp_min(1e-6)
        return -(torch.log(torch.expm1(y)) - self.s_max) - self.s_mean


def activate(raw: Tensor, scale_norm: ScaleNorm, shell: float) -> dict[str, Tensor]:
    """Raw BakeNet output [11, R, R] → activated maps name → [R, R, C] (engine.maps units)."""
    def ch(name):
        a, b = CHANNELS[name]
        return raw[a:b].permute(1, 2, 0)
    return {
        "color": torch.sigmoid(ch("color")),
        "opacity": torch.sigmoid(ch("opacity")),
        "scale": torch.exp(scale_norm(ch("scale"))),
        "rotation": ch("rotation"),
        "offset": shell * torch.tanh(ch("offset")),
    }


class Baker:
    """Stage II of FATE: trains BakeNet on the image objective with the avatar's bindings."""

    def __init__(self, cfg: BakeConfig, sink=None, cancel=None):
        from engine.data import load_sequence
        from engine.train import FrameImages, FrameSchedule, resize_sequence, resolve_device

        self.cfg, self.sink, self.cancel = cfg, sink, cancel
        self.device = resolve_device(cfg.device)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.dir = Path(cfg.avatar)
        self.loaded = load_avatar(self.dir, self.device)
        av = self.loaded.avatar
        for p in list(av.gaussians.parameters()) + list(av.blendshapes.parameters()):
            p.requires_grad_(False)
        tr = self.loaded.tracking
        dataset = self.loaded.meta.get("dataset", "")
        seq = load_sequence(Path(dataset))
        self.seq = resize_sequence(seq, max(int(tr["width"]), int(tr["height"])))
        self.train_idx = [i for i in range(len(tr["split"])) if int(tr["split"][i]) == 0]
        self.frames = FrameImages(self.seq, self.train_idx, cfg.background, self.device)
        self.background = torch.tensor(cfg.background, dtype=torch.float32, device=self.device)
        g = av.gaussians
        self.uv = gaussian_uvs(g.face_idx, g.bary, av.head.uvs, av.head.faces_uv_all)
        with torch.no_grad():
            self.target = {k: v.detach() for k, v in g.activated().items()}
            logs = g.scale_log.detach()
            self.scale_norm = ScaleNorm(float(logs.mean()), float(logs.max()) + 0.5)
        self.net = BakeNet(cfg.base_channels, cfg.depth).to(self.device)
        gen = torch.Generator().manual_seed(cfg.seed)
        self.net_input = torch.randn(1, 11, cfg.resolution, cfg.resolution, generator=gen).to(self.device)
        self.base_raw: Tensor | None = None
        if cfg.init == "direct":
            self._init_from_direct_fit()
        else:
            self._init_output_bias()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.perceptual, self.perceptual_name = losses.make_perceptual_loss(
            Path(cfg.vgg_weights) if cfg.vgg_weights else None)
        self.step = 0
        self.schedule = FrameSchedule(self.train_idx, cfg.seed)

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

    def _init_output_bias(self) -> None:
        """Starts each output channel at the mean of its target (raw space), so step 0 renders a
        plausible average avatar."""
        t = self.target
        with torch.no_grad():
            b = self.net.out.bias
            b[6:9] = torch.logit(t["color"].mean(0).clamp(0.02, 0.98))
            b[9] = torch.logit(t["opacity"].mean().clamp(0.02, 0.98))
            b[0:3] = self.scale_norm.inverse(torch.log(t["scale"]).mean(0))
            b[10] = torch.atanh((t["offset"].mean() / self.loaded.avatar.gaussians.shell).clamp(-0.9, 0.9))

    # ------------------------------------------------------------------ attributes
    def maps(self) -> dict[str, Tensor]:
        """Current activated maps, name → [R, R, C]."""
        raw = self.net(self.net_input)
        if self.base_raw is not None:
            raw = raw + self.base_raw
        return activate(raw[0], self.scale_norm, self.loaded.avatar.gaussians.shell)

    def gaussian_attributes(self, maps: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-Gaussian attributes (baked; geometry from the trained avatar when appearance_only)."""
        vals = sample_maps(maps, self.uv)
        if self.cfg.appearance_only:
            for k in ("scale", "rotation", "offset"):
                vals[k] = self.target[k]
        return vals

    def render(self, vals: dict[str, Tensor], i: int):
        from engine.gaussians import place_gaussians
        from engine.rotations import axis_angle_to_matrix
        from engine.raster import rasterize

        av = self.loaded.avatar
        tr = self.loaded.tracking
        from engine.cameras import Camera

        shape = torch.as_tensor(tr["shape"], device=self.device)
        expr = torch.as_tensor(tr["expr"][i], device=self.device)
        pose = torch.as_tensor(tr["pose"][i], device=self.device)
        trans = torch.as_tensor(tr["translation"][i], device=self.device)
        cam = Camera(torch.as_tensor(tr["viewmat"][i], device=self.device),
                     torch.as_tensor(tr["K"][i], device=self.device), int(tr["width"]), int(tr["height"]))
        with torch.no_grad():
            verts, _ = av.posed_vertices(shape[None], expr[None], pose[None], trans[None])
        g = place_gaussians(verts[0], av.faces, av.gaussians.face_idx, av.gaussians.bary, vals["color"],
                            vals["opacity"], vals["scale"], axis_angle_to_matrix(vals["rotation"]), vals["offset"])
        return rasterize(g.means, g.covars, g.opacities, g.colors, cam, self.background, backend=self.cfg.rasterizer)

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
        vals = self.gaussian_attributes(self.maps())
        out = self.render(vals, i)
        gt = self.frames.get(i)
        loss = (out.image - gt).abs().mean()
        if self.perceptual_name == "vgg":
            loss = loss + cfg.lambda_perceptual * self.perceptual(out.image, gt)
        elif cfg.lambda_dssim > 0:
            loss = loss + cfg.lambda_dssim * self.perceptual(out.image, gt)
        if cfg.lambda_rotation > 0 and not cfg.appearance_only:
            loss = loss + cfg.lambda_rotation * vals["rotation"][:, :2].square().sum(-1).mean()  # Eq. 27
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
        return cfg.lr * (cfg.lr_final / cfg.lr) ** (k / max(cfg.steps - 1, 1))

    def run(self) -> dict:
        cfg = self.cfg
        ckpt = self.dir / "maps_checkpoint.safetensors"
        if cfg.resume and ckpt.exists():
            self._load_checkpoint(ckpt)
        total = cfg.warmup + cfg.steps
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
            self.step += 1
            if self.sink is not None:
                self.sink.progress("bake", self.step, total, loss=round(stats["loss"], 5),
                                   psnr=None if math.isnan(stats["psnr"]) else round(stats["psnr"], 3))
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < total:
                self._save_checkpoint(ckpt)
        path = self.write()
        if ckpt.exists():
            ckpt.unlink()
        return {"maps": str(path.parent), "seconds": round(time.time() - t0, 1), "steps": self.step}

    @torch.no_grad()
    def write(self) -> Path:
        """Writes <avatar>/maps (EXR + previews + maps.json) and the BakeNet weights."""
        maps = {k: v.detach().cpu() for k, v in self.maps().items()}
        if self.cfg.appearance_only:
            maps.update(direct_fit_maps(self.target, self.uv.cpu(), self.cfg.resolution,
                                        names=("scale", "rotation", "offset")))
        from engine.avatar_io import file_sha256
        from engine.config import to_dict

        path = write_maps(self.dir / "maps", maps, extra={
            "source_avatar_sha256": file_sha256(self.dir / "gaussians.safetensors"),
            "bake_config": to_dict(self.cfg)})
        weights = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        weights["input"] = self.net_input
        if self.base_raw is not None:
            weights["base_raw"] = self.base_raw
        write_safetensors(self.dir / "bakenet.safetensors", weights)
        return path

    def _save_checkpoint(self, path: Path) -> None:
        tensors = {f"net/{k}": v for k, v in self.net.state_dict().items()}
        for j, (p, st) in enumerate(self.opt.state.items()):
            for key in ("exp_avg", "exp_avg_sq", "step"):
                tensors[f"adam/{j}/{key}"] = st[key]
        tensors["step"] = torch.tensor(self.step)
        write_safetensors(path, tensors)

    def _load_checkpoint(self, path: Path) -> None:
        from safetensors.torch import load_file

        t = load_file(str(path), device=str(self.device))
        self.net.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("net/")})
        for j, p in enumerate(self.net.parameters()):
            if f"adam/{j}/exp_avg" in t:
                self.opt.state[p] = {"step": t[f"adam/{j}/step"].cpu(), "exp_avg": t[f"adam/{j}/exp_avg"],
                                     "exp_avg_sq": t[f"adam/{j}/exp_avg_sq"]}
        self.step = int(t["step"])


def unet_depth(resolution: int, max_depth: int = 4) -> int:
    """U-Net down-sampling levels for a map size: FATE's 4, fewer for small maps so the bottom
    level stays at least 8 texels wide (32 → 2, 64 → 3, 128 and larger → 4)."""
    return max(1, min(max_depth, int(math.log2(resolution)) - 3))


def raw_from_maps(maps: dict[str, Tensor], scale_norm: ScaleNorm, shell: float) -> Tensor:
    """Inverse of :func:`activate`: activated maps → raw BakeNet channels.

    Args:
        maps: name → float32 [R, R, C] in engine.maps units (colour and opacity in [0, 1], scale in
            meters relative to the face scale, rotation axis-angle in the face frame, offset in
            meters along the normal).
        scale_norm: the Eq. 24 normalisation the raw scale channels go through.
        shell: the offset bound in meters (offset = shell·tanh(raw)).
    Returns:
        float32 [11, R, R] on the CPU, channels in :data:`CHANNELS` order (supp. §7.3).

    Colour and opacity are clamped to (1e-4, 1 − 1e-4) and the offset to ±0.999·shell first, so
    the logit/atanh stay finite.
    """
    R = maps["color"].shape[0]
    inverse = {
        "color": torch.logit(maps["color"].clamp(1e-4, 1 - 1e-4)),
        "opacity": torch.logit(maps["opacity"].clamp(1e-4, 1 - 1e-4)),
        "scale": scale_norm.inverse(torch.log(maps["scale"].clamp_min(1e-8))),
        "rotation": maps["rotation"],
        "offset": torch.atanh((maps["offset"] / shell).clamp(-0.999, 0.999)),
    }
    raw = torch.zeros(11, R, R)
    for name, (a, b) in CHANNELS.items():
        raw[a:b] = inverse[name].reshape(R, R, b - a).permute(2, 0, 1)
    return raw


def standardise(x: Tensor) -> Tensor:
    """Per-channel zero mean, unit variance of a [C, H, W] tensor (constant channels → 0)."""
    mu = x.mean((1, 2), keepdim=True)
    return (x - mu) / x.std((1, 2), keepdim=True).clamp_min(1e-6)


def gaussian_blur(m: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of a UV map (the low-pass of the ``init="direct"`` starting maps).

    Args:
        m: float [R, R, C] map.
        sigma: standard deviation in texels (> 0); the kernel spans ±ceil(3σ).
    Returns:
        [R, R, C], same dtype and device; borders are replicated, the kernel sums to 1 (constants
        are kept).
    """
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = (k / k.sum()).to(m)
    c = m.shape[-1]
    img = m.permute(2, 0, 1)[None]
    img = F.conv2d(F.pad(img, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1),
                   groups=c)
    img = F.conv2d(F.pad(img, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1),
                   groups=c)
    return img[0].permute(1, 2, 0)


def _rotation_distance(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared geodesic-ish distance between axis-angle rotations (via matrices)."""
    from engine.rotations import axis_angle_to_matrix
    return (axis_angle_to_matrix(a) - axis_angle_to_matrix(b)).square().sum((-1, -2)).mean()


@torch.no_grad()
def direct_fit_maps(values: dict[str, Tensor], uv: Tensor, resolution: int, names=None) -> dict[str, Tensor]:
    """Per-texel fit without BakeNet: each texel averages the Gaussians whose UV falls in it;
    empty texels take the nearest filled texel (a push-pull fill). This is the 'direct
    optimisation' baseline of FATE Fig. 4 (discontinuous maps), and the geometry maps of an
    appearance-only bake.

    Args:
        values: name → activated values [N, C] or [N].
        uv: [N, 2] OBJ convention.
        resolution: map size R.
        names: the subset of ``values`` to fit (None = all).
    Returns:
        name → map [R, R, C].
    """
    R = resolution
    col = (uv[:, 0] * R).floor().clamp(0, R - 1).long()
    row = ((1 - uv[:, 1]) * R).floor().clamp(0, R - 1).long()
    lin = row * R + col
    count = torch.zeros(R * R).index_add_(0, lin, torch.ones(len(lin)))
    out = {}
    for name, v in values.items():
        if names is not None and name not in names:
            continue
        v2 = v.detach().cpu().float().reshape(len(lin), -1)
        acc = torch.zeros(R * R, v2.shape[1]).index_add_(0, lin, v2)
        m = (acc / count.clamp_min(1)[:, None]).reshape(R, R, -1)
        out[name] = _fill_holes(m, (count > 0).reshape(R, R))
    return out


def _fill_holes(m: Tensor, filled: Tensor) -> Tensor:
    """Push-pull fill of texels where ``filled`` is False. m [R, R, C], filled bool [R, R]."""
    if filled.all() or not filled.any():
        return m
    w = filled.float()[None, None]
    x = (m.permute(2, 0, 1)[None]) * w
    pyramid = [(x, w)]
    while pyramid[-1][0].shape[-1] > 1:
        x, w = F.avg_pool2d(pyramid[-1][0], 2, ceil_mode=True), F.avg_pool2d(pyramid[-1][1], 2, ceil_mode=True)
        pyramid.append((x, w))
    x, w = pyramid[-1]
    est = x / w.clamp_min(1e-8)
    for x, w in reversed(pyramid[:-1]):
        up = F.interpolate(est, size=x.shape[-2:], mode="nearest")
        est = torch.where(w > 0, x / w.clamp_min(1e-8), up)
    return est[0].permute(1, 2, 0)


def bake(cfg: BakeConfig, sink=None, cancel=None) -> dict:
    """Runs a bake job and writes <avatar>/maps."""
    return Baker(cfg, sink, cancel).run()
