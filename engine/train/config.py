"""The train job's config (FATE supp. §7.2 defaults); torch-free so the CLI and the schema import it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from engine.errors import ConfigError
from engine.jobs.config import check_ranges
from engine.train.appearance_config import HeadGaSConfig
from engine.train.densify.config import DensifyConfig


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
    shell: float = 1e-6
    """largest normal offset of a Gaussian from its face, meters. FATE's code bounds it by
    0.05 × the unnormalised face normal (twice the face area, m²), ≈ 1e-6 on FLAME-sized faces:
    the splats stay on the surface. Measured (docs/benchmarks.md, "FATE's code vs round 1"):
    1e-6 is +0.95 dB over a 1 cm bound (34.97 → 35.92 dB) on the held-out frames"""
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
    """learnable blendshapes ΔE, ΔP (supp. §7.2; FATE's code: 1e-5)"""
    lr_delta_vertices: float = 1e-4
    """learnable template offset Δ (Eq. 5; FATE's code: 1e-4, ten times ΔE's)"""
    learn_blendshapes: bool = True
    """optimise ΔE, ΔP and Δ (Eq. 5)"""
    lambda_perceptual: float = 0.1
    """λ1 of Eq. 12 for the VGG term"""
    lambda_dssim: float = 0.2
    """weight of D-SSIM, used as the perceptual term when no VGG weights are supplied"""
    vgg_weights: str = ""
    """VGG16 weights file (torchvision state_dict .pth or .safetensors); empty = D-SSIM"""
    lambda_lap: float = 1e5
    """λ2, Laplacian smoothness of the learnt deformation (Eq. 14; the paper's text says 100, the
    code that produced its numbers uses 1e5 with the same mean-squared uniform Laplacian)"""
    lambda_flame: float = 100.0
    """λ3, L2 to the plain FLAME vertices (Eq. 14)"""
    lambda_scale: float = 0.1
    """λ4, scale-ratio term (Eq. 13)"""
    scale_ratio: float = 9.0
    """r of Eq. 13: largest allowed ratio of major to minor axis (FATE's code: 9)"""
    refine_tracking: bool = False
    """optimise per-frame expression, pose and camera corrections (supp. §7.1)"""
    lr_tracking: float = 5e-4
    """learning rate of the tracking corrections (supp. §7.1)"""
    binding: Literal["hard", "soft"] = "hard"
    """"hard": Gaussians move only with their faces (FATE Eq. 2–4); "soft": plus per-frame offsets
    of position, rotation and scale from a UV-space CNN (STAvatar's UV-adaptive soft binding)"""
    soft_uv_resolution: int = 64
    """soft binding: resolution of the network's UV maps"""
    soft_width: int = 16
    """soft binding: channels of the network's first layer"""
    lr_soft_binding: float = 1e-4
    """soft binding: learning rate of the network"""
    lambda_soft_offset: float = 0.1
    """soft binding: weight of the mean squared offset δ (keeps δ small so the static bake holds)"""
    appearance: Literal["static", "headgas", "pbr"] = "static"
    """colour and opacity: "static" (FATE: one per Gaussian); "headgas" (HeadGaS feature blending by
    the expression, decoded by an MLP; ``headgas.*``, engine/model/headgas.py); "pbr" (albedo,
    roughness and F0 shaded under a learnt environment, relightable; HRAvatar §3.3, ``lr_roughness``
    … ``lambda_tv``, engine/model/pbr.py). One of them: an expression-dependent relightable
    appearance is not implemented"""
    lr_roughness: float = 5e-3
    """pbr: learning rate of the pre-sigmoid roughness (HRAvatar's code: roughness_lr 5e-3)"""
    lr_f0: float = 5e-3
    """pbr: learning rate of the pre-sigmoid F0 (HRAvatar's code: reflectance_lr 5e-3)"""
    lr_environment: float = 5e-2
    """pbr: learning rate of the environment map (pre-softplus; HRAvatar's code: envmap_lr 5e-2)"""
    lambda_normal: float = 1e-2
    """pbr: λ_normal, 1 − cos between each Gaussian's normal and the bound mesh normal (HRAvatar's
    code: lambda_normal 1e-2, there against normals from the rendered depth)"""
    lambda_albedo: float = 0.25
    """pbr: λ_albedo of the albedo-scale prior (mean visible irradiance = 1; stands in for HRAvatar's
    L1 to an intrinsic network's pseudo albedo, lambda_intrinsic_albedo 0.25; engine/train/pbr_losses.py)"""
    lambda_tv: float = 2e-2
    """pbr: λ_tv, total variation of the roughness over the mesh (HRAvatar's code: lambda_tv_roughness 2e-2)"""
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    """densification schedule"""
    headgas: HeadGaSConfig = field(default_factory=HeadGaSConfig)
    """HeadGaS settings (appearance = "headgas")"""
    checkpoint_every: int = 1000
    """write a resumable checkpoint every N steps"""
    preview_every: int = 500
    """write a preview image every N steps (0 = never)"""
    visibility_frames: int = 32
    """training frames (evenly spaced) whose rendered weights give each Gaussian's visibility,
    written to visibility.safetensors for the bake's full-head completion (0 = every frame)"""
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
        if self.binding not in ("hard", "soft"):
            raise ConfigError(f"binding must be 'hard' or 'soft', found {self.binding!r}")
        if self.soft_uv_resolution < 8 or self.soft_uv_resolution % 2:
            raise ConfigError(f"soft_uv_resolution must be an even number >= 8, found {self.soft_uv_resolution}")
        if self.soft_width < 1:
            raise ConfigError(f"soft_width must be >= 1, found {self.soft_width}")
        if self.appearance not in ("static", "headgas", "pbr"):
            both = "headgas" in str(self.appearance) and "pbr" in str(self.appearance)
            raise ConfigError(f"appearance must be 'static', 'headgas' or 'pbr', found {self.appearance!r}"
                              + (" (HeadGaS colours and PBR shading do not combine: the PBR albedo is the"
                                 " static colour; pick one)" if both else ""))
        self.background = tuple(float(c) for c in self.background)  # type: ignore[assignment]
        check_ranges(self, positive=("shell", "lr_color", "lr_opacity", "lr_scale", "lr_rotation", "lr_offset",
                                     "lr_blendshapes", "lr_tracking", "lr_roughness", "lr_f0", "lr_environment"),
                     non_negative=("image_size", "threads", "lambda_perceptual", "lambda_dssim", "lambda_lap",
                                   "lambda_flame", "lambda_scale", "checkpoint_every", "preview_every",
                                   "lambda_normal", "lambda_albedo", "lambda_tv"),
                     at_least_one=("scale_ratio",), unit_interval=("background",))
