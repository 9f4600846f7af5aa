"""The bake job's config (FATE §3.3, supp. §7.3); torch-free so the CLI and the schema import it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engine.errors import ConfigError
from engine.jobs.config import check_ranges


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
    warmup_steps: int = 0
    """attribute-regression warm-start steps before the image objective (a deviation from FATE,
    which has none; 0 = none; a CPU bake from noise may want ~500)"""
    base_channels: int = 64
    """first U-Net width (FATE: 64)"""
    depth: int = 4
    """U-Net down-sampling levels (FATE: 4, i.e. 64→1024)"""
    lr: float = 1e-3
    """Adam learning rate (supp. §7.3)"""
    lr_final: float = -1.0
    """learning rate at the last image step (exponential decay from ``lr``; = lr: constant;
    -1: 1e-4 for init="direct", constant ``lr`` for init="noise" as in FATE)"""
    init: Literal["direct", "noise"] = "direct"
    """"direct": BakeNet filters the per-texel fit of the trained Gaussians and adds a residual to
    its low-passed version (module doc); converges in ~150 steps. "noise": FATE's procedure — its
    U-Net maps fixed U(−1, 1) noise to the maps, scale capped at mean + std, rotation and scale
    regularisers 0.1 (needs thousands of steps, i.e. a GPU; docs/FATE_DEVIATIONS.md)"""
    base_blur: float = 1.0
    """σ of the Gaussian low-pass of the starting maps when init="direct", in texels"""
    appearance_only: bool = False
    """bake colour + opacity only; keep the trained geometry (supp. §9)"""
    lambda_rotation: float = -1.0
    """rotation regulariser ‖r_x‖² + ‖r_y‖² (Eq. 27): flatter splats, smoother maps (-1: 0 for
    init="direct", FATE's 0.1 for init="noise")"""
    lambda_scale: float = -1.0
    """scale-ratio regulariser (Eq. 13, r = ``scale_ratio``) on the baked scales (-1: 0 for
    init="direct", FATE's 0.1 for init="noise")"""
    scale_ratio: float = 9.0
    """r of Eq. 13 for ``lambda_scale`` (FATE's code: 9)"""
    dynamic_maps: bool = False
    """expression-conditioned BakeNet (issue 19, after Animatable Gaussians): the U-Net also reads
    the expression-deformed position map, so colour and opacity change with the expression; map
    shape keys are fitted from it over the training frames"""
    dynamic_pca: int = 16
    """principal components of the conditioning maps that novel expressions are projected on
    (Animatable Gaussians' pose projection; 0 = none)"""
    map_keys: bool = True
    """write map shape keys (maps/dynamic) when the bake is expression-dependent (dynamic_maps, or a
    HeadGaS avatar)"""
    key_num_expr: int = 52
    """expression coefficients that may drive map shape keys with dynamic_maps (HeadGaS avatars use
    their own blending coefficients)"""
    key_min_effect: float = 0.004
    """map shape keys whose largest |delta| (colour or opacity) stays below this are dropped (1/255
    of colour)"""
    lambda_attr: float = 0.0
    """attribute regulariser ‖v − v̄‖² to the trained values (Eq. 26) during the image stage"""
    full_head: bool = True
    """complete what the training views never saw (FATE §3.4): the visibility-masked maps are
    filled (engine.bake.completion), rendered from novel views and fine-tuned on them together
    with the real frames (engine.bake.pseudo_views); False = the seen-only bake"""
    full_head_steps: int = 200
    """pseudo-view + real-frame step pairs of the full-head fine-tune (0 = fill only)"""
    full_head_keep_seen: bool = True
    """the fine-tune changes only what the video never saw: its network output is weighted by
    1 − the texel's seen weight, so seen texels keep their baked value (false = FATE's: every
    texel, the real frames keeping their loss; on the CPU main job that cost the test frames
    2 dB). Not applied with dynamic_maps (the stage's network relearns the expression maps)"""
    completion_generator: str = ""
    """module:function of a generative completion (docs/COMPLETION.md): it gets the completed
    avatar's novel views and masks and returns the images to fine-tune on; empty = built-in"""
    completion_options: str = ""
    """free text handed to the generator (e.g. its checkpoint folder)"""
    full_head_only: bool = False
    """skip the image stage: redo only the full-head completion from the maps_seen.safetensors an
    earlier bake of this avatar left (e.g. to try another generator)"""
    lambda_dssim: float = 0.2
    """D-SSIM weight (perceptual term without VGG weights)"""
    vgg_weights: str = ""
    """VGG16 weights for the perceptual term (optional)"""
    lambda_perceptual: float = 0.1
    """VGG weight when vgg_weights is given"""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """auto, cuda or cpu"""
    rasterizer: Literal["auto", "torch", "gsplat"] = "auto"
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
    keep_backups: int = 5
    """re-baking keeps the previous maps in <avatar>/maps/backups/<time>/; at most this many sets"""
    force: bool = False
    """bake an avatar whose head model does not match its avatar.json (experts only)"""

    @property
    def warmup(self) -> int:
        """Warm-start steps (``warmup_steps``)."""
        return self.warmup_steps

    @property
    def fate_recipe(self) -> bool:
        """``init="noise"``: FATE's baking procedure (its U-Net, input, scale cap, regularisers)."""
        return self.init == "noise"

    @property
    def final_lr(self) -> float:
        """``lr_final`` with -1 resolved: 1e-4 for init="direct", ``lr`` (constant) for "noise"."""
        if self.lr_final >= 0:
            return self.lr_final
        return self.lr if self.fate_recipe else 1e-4

    @property
    def rotation_weight(self) -> float:
        """``lambda_rotation`` with -1 resolved (0.1 for FATE's recipe, else 0)."""
        return self.lambda_rotation if self.lambda_rotation >= 0 else (0.1 if self.fate_recipe else 0.0)

    @property
    def scale_weight(self) -> float:
        """``lambda_scale`` with -1 resolved (0.1 for FATE's recipe, else 0)."""
        return self.lambda_scale if self.lambda_scale >= 0 else (0.1 if self.fate_recipe else 0.0)

    def __post_init__(self):
        if self.resolution < 16 or self.resolution % (2 ** self.depth):
            raise ConfigError(f"bake resolution must be >= 16 and divisible by 2^depth = {2 ** self.depth}, "
                              f"found {self.resolution}")
        if self.full_head_steps < 0:
            raise ConfigError(f"full_head_steps must be >= 0, found {self.full_head_steps}")
        if self.completion_generator and ":" not in self.completion_generator:
            raise ConfigError(f"completion_generator must be module:function, found {self.completion_generator!r}")
        self.background = tuple(float(c) for c in self.background)  # type: ignore[assignment]
        for name in ("lr_final", "lambda_rotation", "lambda_scale"):  # -1: the init's default
            if getattr(self, name) != -1:
                check_ranges(self, **{"positive" if name == "lr_final" else "non_negative": (name,)})
        check_ranges(self, positive=("lr", "scale_ratio"), at_least_one=("base_channels", "depth"),
                     non_negative=("steps", "warmup_steps", "base_blur", "lambda_attr", "lambda_dssim",
                                   "lambda_perceptual", "threads", "checkpoint_every", "preview_every", "keep_backups",
                                   "dynamic_pca", "key_num_expr", "key_min_effect"),
                     unit_interval=("background",))
        if self.warmup + self.steps < 1:
            raise ConfigError(f"steps + warmup_steps must be >= 1 (a bake of no steps would overwrite the maps with "
                              f"untrained ones), found steps={self.steps}, warmup_steps={self.warmup_steps}")
