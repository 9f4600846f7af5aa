"""FATE §3.4's pseudo-view stage: novel views around the head, a generator, and the fine-tune.

After the bake's image stage (``engine.bake.baker``) the full-head stage

1. reads how well the training views saw the surface (``engine.model.visibility``; computed here
   for avatars saved without it) and writes the ``visibility`` map;
2. fills the unseen part of the maps (:func:`engine.bake.completion.complete_maps`);
3. renders the completed avatar at neutral expression and pose from a ring of novel cameras
   (:data:`DEFAULT_VIEWS`: behind, the sides, above) and hands those images, their alpha and the
   share of each pixel that was never seen to a *generator*, which returns the images to learn
   from. The built-in generator returns the renders themselves with the closed surface's
   silhouette as the mask (:func:`builtin_generator`: the completion, opaque, is the target);
   ``completion_generator = "module:function"`` plugs in a generative model — SphereHead + PTI
   in FATE (docs/COMPLETION.md); the tests use an oracle that returns the true renders;
4. fine-tunes the maps on alternating steps — one pseudo view over a random background (so the
   silhouette is learnt too), then one real training frame with its full loss — as FATE's code
   does (``bake_full_head_epoch``).

Deviations from FATE, documented (docs/FATE_DEVIATIONS.md): FATE resumes its bake network; here
a fresh residual U-Net (:class:`engine.bake.bakenet.BakeNet`, zero output layer) learns a
correction over the *completed* maps, so step 0 renders the completion exactly and the stage can
be redone from the seen maps alone (``full_head_only``). FATE drops the L1 term on the real frames
of this stage and uses the current frame's expression on the pseudo views; we keep the real
frames' full loss (the front must not degrade) and render pseudo views at neutral expression, as
§3.4's text says. FATE keeps the back half of a 30-view horizontal ring; our ring adds views from
above (the crown) and starts 45° off the front.

Camera rig: the novel cameras orbit the neutral head's bounding-box centre (head model with the
subject's shape, zero expression and pose) at the median distance of the training cameras, with
the first training frame's intrinsics; yaw 0 looks at the face (camera on +Z), yaw +90° from the
subject's left (+X), pitch > 0 from above (+Y); up is +Y (FLAME canonical frame).
"""

from __future__ import annotations

import importlib
import logging
import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from engine.bake import dynamic
from engine.bake.bakenet import make_bakenet
from engine.bake.channels import CHANNELS, raw_from_maps, standardise
from engine.bake.completion import complete_maps, seen_weights, texel_visibility
from engine.bake.pbr_shading import shade_baked
from engine.errors import CancelledError, CompletionError
from engine.geometry.cameras import Camera, look_at_opencv
from engine.geometry.rotations import axis_angle_to_matrix
from engine.model.gaussians import place_gaussians
from engine.model.visibility import (
    SURFACE_OPACITY,
    Visibility,
    evenly_spaced,
    load_visibility,
    over_background,
    tracking_visibility,
)
from engine.raster import rasterize
from engine.train.losses import scale_ratio_loss

log = logging.getLogger(__name__)

SEEN_ANY_MIN_COS = -1.0
"""``min_cos`` of the visibility that decides where the completion closes opacity: every face
counts, front- or back-facing; only the rendered weights (occlusion) decide. Measured on the
previous CPU main job's avatar (test frames, completion alone): 28.51 dB with ``min_cos`` 0 and
grazing views down-weighted, 29.19 with grazing views counting fully, 30.43 with back-facing faces
too — 0.31 dB below the uncompleted bake's 30.74 (docs/benchmarks.md, "Full head")."""

DEFAULT_VIEWS: tuple[tuple[float, float], ...] = (
    tuple((float(y), 0.0) for y in range(45, 316, 30))
    + ((90.0, 35.0), (180.0, 35.0), (270.0, 35.0), (180.0, 70.0)))
"""(yaw, pitch) in degrees of the pseudo views: a horizontal ring every 30° from 45° to 315° (the
front ±45° is what the video saw), three views from 35° above and one over the crown."""


# ---------------------------------------------------------------------- cameras
@dataclass(frozen=True)
class OrbitRig:
    """Where novel cameras orbit: centre (meters, FLAME frame), radius (meters), intrinsics."""

    centre: tuple[float, float, float]
    radius: float
    K: tuple[tuple[float, ...], ...]
    width: int
    height: int


def orbit_rig(head_vertices: np.ndarray, viewmats: np.ndarray, translations: np.ndarray, K: np.ndarray,
              width: int, height: int) -> OrbitRig:
    """The rig of the novel views for a tracked sequence (module doc).

    Args:
        head_vertices: neutral head (subject's shape, zero expression/pose), meters. [V, 3]
        viewmats: the tracked world→camera matrices (OpenCV). [T, 4, 4]
        translations: the tracked head translations, meters. [T, 3]
        K: intrinsics of the first frame, pixels. [3, 3]
        width, height: image size, pixels.
    """
    v = np.asarray(head_vertices, np.float64)
    centre = 0.5 * (v.min(0) + v.max(0))
    vm = np.asarray(viewmats, np.float64)
    cams = -np.einsum("tji,tj->ti", vm[:, :3, :3], vm[:, :3, 3])  # camera centres −Rᵀt
    dist = np.linalg.norm(cams - (centre[None] + np.asarray(translations, np.float64)), axis=1)
    return OrbitRig(tuple(float(c) for c in centre), float(np.median(dist)),
                    tuple(tuple(float(x) for x in row) for row in np.asarray(K, np.float64)), int(width), int(height))


def ring_viewmats(rig: OrbitRig, views) -> np.ndarray:
    """World→camera (OpenCV) matrices of (yaw, pitch) views in degrees (module doc). [V, 4, 4] float64."""
    out = []
    for yaw, pitch in views:
        y, p = math.radians(yaw), math.radians(pitch)
        d = np.array([math.sin(y) * math.cos(p), math.sin(p), math.cos(y) * math.cos(p)])
        c = np.asarray(rig.centre)
        out.append(look_at_opencv(c + rig.radius * d, c))
    return np.stack(out)


def ring_cameras(rig: OrbitRig, views, device: torch.device | str = "cpu") -> list[Camera]:
    """:func:`ring_viewmats` as engine cameras (float32)."""
    K = torch.tensor(rig.K, dtype=torch.float32, device=device)
    return [Camera(torch.as_tensor(m, dtype=torch.float32, device=device), K, rig.width, rig.height)
            for m in ring_viewmats(rig, views)]


# ---------------------------------------------------------------------- generators
@dataclass
class PseudoViews:
    """What a completion generator gets (docs/COMPLETION.md). numpy float32 unless noted.

    Attributes:
        images: the completed avatar's renders over ``background``, encoded (sRGB) colour in
            [0, 1]. [V, H, W, 3]
        alpha: their coverage in [0, 1]. [V, H, W]
        unseen: per pixel, the weight of surface the video never saw, Σ αᵢTᵢ(1 − visᵢ) (≤ alpha;
            divide by alpha for the share of the pixel's colour that was invented). [V, H, W]
        surface_images, surface_alpha: the same views with every Gaussian opaque (the closed head
            surface): straight colour [V, H, W, 3] and coverage [V, H, W] — the silhouette the
            completed head should have.
        viewmats: world→camera, OpenCV axes, meters. [V, 4, 4]
        K: intrinsics, pixels. [V, 3, 3]
        yaw_deg, pitch_deg: the views on the orbit (module doc). [V]
        background: the encoded background colour of ``images``. [3]
        reference_images: a few real training frames over ``background`` (for inversion, e.g.
            PTI). [k, H, W, 3]
        reference_viewmats, reference_K: their cameras. [k, 4, 4], [k, 3, 3]
        options: the job's ``completion_options`` text.
    """

    images: np.ndarray
    alpha: np.ndarray
    unseen: np.ndarray
    surface_images: np.ndarray
    surface_alpha: np.ndarray
    viewmats: np.ndarray
    K: np.ndarray
    yaw_deg: np.ndarray
    pitch_deg: np.ndarray
    background: np.ndarray
    reference_images: np.ndarray
    reference_viewmats: np.ndarray
    reference_K: np.ndarray
    options: str = ""
    extra: dict = field(default_factory=dict)


def builtin_generator(views: PseudoViews) -> np.ndarray:
    """The built-in completion's generator (RGBA): the completed renders' own colour (over the
    background removed) where they cover, the closed surface's colour where they are thin, and
    the closed surface's silhouette as the mask — the head the fill describes, opaque."""
    a = views.alpha[..., None]
    own = (views.images - (1 - a) * views.background) / np.maximum(a, 1e-4)
    rgb = np.where(a >= 0.5, own, views.surface_images).clip(0, 1)
    return np.concatenate([rgb, views.surface_alpha[..., None]], axis=-1).astype(np.float32)


def load_generator(spec: str):
    """The callable named by ``module:function``.

    Raises:
        CompletionError: not of that form, the module cannot be imported, or it has no such
            callable (the message names ``spec``).
    """
    if spec.count(":") != 1 or not all(spec.split(":")):
        raise CompletionError(f"completion generator {spec!r}: expected module:function, e.g. mypkg.sphere:complete")
    mod_name, fn_name = spec.split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise CompletionError(f"completion generator {spec!r}: cannot import {mod_name!r} ({exc})") from exc
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise CompletionError(f"completion generator {spec!r}: {mod_name} has no callable {fn_name!r}")
    return fn


def check_generated(out, views: PseudoViews, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validates a generator's answer: [V, H, W, 3] (masks = the rendered alpha) or [V, H, W, 4]
    (RGBA), float in [0, 1] or uint8, finite.

    Returns:
        rgb [V, H, W, 3] and mask [V, H, W], float32 in [0, 1].
    Raises:
        CompletionError: wrong type, shape or values, naming the generator ``name``.
    """
    V, H, W = views.alpha.shape
    if not (hasattr(out, "__array__") or isinstance(out, (list, tuple))):
        raise CompletionError(f"completion generator {name!r} returned {type(out).__name__}, not an array")
    try:
        arr = np.asarray(out)
    except Exception as exc:  # noqa: BLE001 - anything the user's code returns
        raise CompletionError(f"completion generator {name!r} returned {type(out).__name__}, not an array") from exc
    if arr.ndim != 4 or arr.shape[:3] != (V, H, W) or arr.shape[3] not in (3, 4):
        raise CompletionError(f"completion generator {name!r} returned images of shape {tuple(arr.shape)}; "
                              f"expected ({V}, {H}, {W}, 3 or 4): one image per requested view at the render size")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif not np.issubdtype(arr.dtype, np.floating):
        raise CompletionError(f"completion generator {name!r} returned dtype {arr.dtype}; "
                              "expected float in [0, 1] or uint8")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        bad = np.unique(np.nonzero(~np.isfinite(arr))[0]).tolist()
        raise CompletionError(f"completion generator {name!r} returned NaN/Inf values in view(s) {bad}")
    if arr.min() < -1e-3 or arr.max() > 1 + 1e-3:
        raise CompletionError(f"completion generator {name!r} returned values in [{arr.min():.3g}, {arr.max():.3g}]; "
                              "expected [0, 1]")
    arr = arr.clip(0, 1)
    mask = arr[..., 3] if arr.shape[3] == 4 else views.alpha
    return arr[..., :3], mask.astype(np.float32)


# ---------------------------------------------------------------------- the stage
class FullHead:
    """The full-head stage on a :class:`engine.bake.baker.Baker` whose image stage is done.

    It replaces the baker's network, input and base maps (``net``, ``net_input``, ``base_raw``)
    so that the baker's own ``maps()`` and ``write()`` give the completed, fine-tuned maps, and
    sets ``baker.visibility_map``.
    """

    def __init__(self, baker):
        self.b = baker
        self.cfg = baker.cfg
        self.device = baker.device
        self.av = baker.loaded.avatar
        self.head = self.av.head
        self.gen = torch.Generator().manual_seed(self.cfg.seed + 16)

    # ---------------------------------------------------------------- pieces
    def visibility(self) -> Visibility:
        """The avatar's saved visibility, else computed over its training frames."""
        vis = load_visibility(self.b.folder.root, len(self.av.gaussians))
        if vis is None:
            log.info("%s has no visibility.safetensors: computing it from the training frames", self.b.folder.root)
            vis = tracking_visibility(self.av, self.b.loaded.tracking, evenly_spaced(self.b.train_idx, 32),
                                      self.device, self.cfg.rasterizer)
        return vis

    def seen_maps(self) -> dict[str, Tensor]:
        """The image stage's maps (saved to maps_seen.safetensors), or those an earlier bake saved
        when ``full_head_only``."""
        from engine.io.atomic import write_safetensors

        path = self.b.folder.path(self.b.folder.MAPS_SEEN)
        if self.cfg.full_head_only:
            maps = read_seen_maps(path)
            res = next(iter(maps.values())).shape[0]
            if res != self.cfg.resolution:
                raise CompletionError(f"{path} holds {res}² maps, the job asks for {self.cfg.resolution}²")
            return {k: v.to(self.device) for k, v in maps.items()}
        with torch.no_grad():
            maps = {k: v.detach() for k, v in self.b.maps().items()}
        write_safetensors(path, {k: v.float().cpu() for k, v in maps.items()}, {"resolution": self.cfg.resolution})
        return maps

    def _neutral(self) -> tuple[Tensor, Tensor, Tensor]:
        """The subject's shape [1, S] with zero expression [1, E] and pose [1, J·3]."""
        shape = torch.as_tensor(self.b.loaded.tracking["shape"], device=self.device)[None]
        n_e = self.av.blendshapes.delta_exprdirs.shape[-1]
        return (shape, torch.zeros(1, n_e, device=self.device),
                torch.zeros(1, self.head.num_joints * 3, device=self.device))

    @torch.no_grad()
    def neutral_vertices(self) -> Tensor:
        """Posed vertices at neutral expression and pose (learnt deltas applied). [V, 3]"""
        verts, _ = self.av.posed_vertices(*self._neutral(), torch.zeros(1, 3, device=self.device))
        return verts[0]

    @torch.no_grad()
    def rig(self) -> OrbitRig:
        """The novel views' rig from the avatar's tracking (module doc): the head model's neutral
        vertices without the learnt Δ, so the main job computes the same rig from its subject."""
        tr = self.b.loaded.tracking
        verts, _ = self.av.flame(*self._neutral())
        i0 = self.b.train_idx[0]
        return orbit_rig(verts[0].cpu().numpy(), tr["viewmat"], tr["translation"], tr["K"][i0],
                         int(tr["width"]), int(tr["height"]))

    def render(self, vals: dict[str, Tensor], verts: Tensor, cam: Camera, background: Tensor, colors=None):
        """Rasterises the Gaussians with map values ``vals`` on ``verts``; a relightable avatar's
        albedo is shaded under its learnt light for ``cam``, as the real frames are
        (:meth:`engine.bake.baker.Baker.render`), unless ``colors`` replaces the colour (the
        visibility and surface passes)."""
        av = self.av
        local_rot = axis_angle_to_matrix(vals["rotation"])
        g = place_gaussians(verts, av.faces, av.gaussians.face_idx, av.gaussians.bary,
                            vals["color"] if colors is None else colors, vals["opacity"], vals["scale"],
                            local_rot, vals["offset"])
        shaded = g.colors
        if colors is None and av.shading is not None:
            shaded = shade_baked(av.shading, g, local_rot, self.b.pbr_values, cam)
        return rasterize(g.means, g.covars, g.opacities, shaded, cam, background, backend=self.cfg.rasterizer)

    @torch.no_grad()
    def request(self, vals, verts, cams, views, gaussian_vis: Tensor) -> PseudoViews:
        """Renders the completed avatar for the generator."""
        bg = self.b.background
        black = torch.zeros(3, device=self.device)
        unseen_col = (1 - gaussian_vis.to(self.device))[:, None].expand(-1, 3)
        opaque = dict(vals, opacity=vals["opacity"].clamp_min(SURFACE_OPACITY))
        imgs, alphas, unseen, s_imgs, s_alphas = [], [], [], [], []
        for cam in cams:
            out = self.render(vals, verts, cam, bg)
            imgs.append(out.image.clamp(0, 1).cpu().numpy())
            alphas.append(out.alpha[..., 0].clamp(0, 1).cpu().numpy())
            shade = self.render(vals, verts, cam, black, colors=unseen_col).image[..., 0]
            unseen.append(shade.clamp(0, 1).cpu().numpy())
            surf = self.render(opaque, verts, cam, black)
            a = surf.alpha.clamp(0, 1)
            s_imgs.append((surf.image / a.clamp_min(1e-4)).clamp(0, 1).cpu().numpy())
            s_alphas.append(a[..., 0].cpu().numpy())
        tr = self.b.loaded.tracking
        ref = evenly_spaced(self.b.train_idx, 4)
        return PseudoViews(
            images=np.stack(imgs).astype(np.float32), alpha=np.stack(alphas).astype(np.float32),
            unseen=np.stack(unseen).astype(np.float32), surface_images=np.stack(s_imgs).astype(np.float32),
            surface_alpha=np.stack(s_alphas).astype(np.float32),
            viewmats=np.stack([c.viewmat.cpu().numpy() for c in cams]), K=np.stack([c.K.cpu().numpy() for c in cams]),
            yaw_deg=np.array([v[0] for v in views], np.float32), pitch_deg=np.array([v[1] for v in views], np.float32),
            background=bg.cpu().numpy().astype(np.float32),
            reference_images=np.stack([self.b.frames.get(i).cpu().numpy() for i in ref]).astype(np.float32),
            reference_viewmats=np.asarray(tr["viewmat"])[ref], reference_K=np.asarray(tr["K"])[ref],
            options=self.cfg.completion_options)

    def targets(self, views: PseudoViews) -> tuple[Tensor, Tensor]:
        """The generator's images and masks, checked. [V, H, W, 3], [V, H, W, 1] on the device."""
        spec = self.cfg.completion_generator
        if spec:
            fn, name = load_generator(spec), spec
        else:
            fn, name = builtin_generator, "builtin"
        rgb, mask = check_generated(fn(views), views, name)
        return (torch.as_tensor(rgb, device=self.device), torch.as_tensor(mask, device=self.device)[..., None])

    # ---------------------------------------------------------------- fine-tune
    def loss(self, vals: dict[str, Tensor], pred: Tensor, gt: Tensor) -> Tensor:
        """The bake's image objective (Eq. 12 + the bake's regularisers)."""
        b, cfg = self.b, self.cfg
        loss = (pred - gt).abs().mean()
        if b.perceptual_name == "vgg":
            loss = loss + cfg.lambda_perceptual * b.perceptual(pred, gt)
        elif cfg.lambda_dssim > 0:
            loss = loss + cfg.lambda_dssim * b.perceptual(pred, gt)
        if cfg.rotation_weight > 0 and not cfg.appearance_only:
            loss = loss + cfg.rotation_weight * vals["rotation"][:, :2].square().sum(-1).mean()
        if cfg.scale_weight > 0 and not cfg.appearance_only:
            loss = loss + cfg.scale_weight * scale_ratio_loss(vals["scale"], cfg.scale_ratio)
        return loss

    def update_mask(self, vertex_vis: Tensor, opacity_vis: Tensor, resolution: int) -> Tensor:
        """[1, 11, R, R]: per raw channel, 1 − the texel's seen weight in the completion
        (:func:`engine.bake.completion.seen_weights`): seen texels keep their baked value through the
        fine-tune, invented ones take all of it (``BakeConfig.full_head_keep_seen``)."""
        keep = seen_weights(vertex_vis.cpu(), self.head, resolution, opacity_vis.cpu())
        mask = torch.zeros(1, 11, resolution, resolution)
        for name, (a, b) in CHANNELS.items():
            mask[0, a:b] = (1.0 - keep[name][..., 0])[None]
        return mask.to(self.device)

    def lr(self, k: int) -> float:
        """``lr`` decaying exponentially to the bake's final lr over the stage's steps."""
        cfg = self.cfg
        return cfg.lr * (cfg.final_lr / cfg.lr) ** (k / max(2 * cfg.full_head_steps - 1, 1))

    def run(self, sink=None, cancel=None) -> dict:
        """Runs the stage (module doc). Returns {"views", "steps", "unseen_share"}."""
        b, cfg = self.b, self.cfg
        seen = self.seen_maps()
        vis = self.visibility()
        shell = self.av.gaussians.shell
        b.visibility_map = texel_visibility(vis.vertex, self.head.uvs, self.head.faces_all, self.head.faces_uv_all,
                                            cfg.resolution)
        # opacity is closed only where no training view saw the surface at all (the outline of a
        # too-large mesh was made see-through by training and must stay so): any face whose
        # Gaussians paint pixels of a training view counts fully, however grazing (full_cos 0) and
        # even turned away (min_cos −1: beyond the true silhouette the rim of a too-large mesh is
        # back-facing, and still in view); the rendered weights alone decide occlusion
        frames = evenly_spaced(b.train_idx, 32)
        seen_any = tracking_visibility(self.av, b.loaded.tracking, frames, self.device,
                                       cfg.rasterizer, min_cos=SEEN_ANY_MIN_COS, full_cos=0.0)
        # nor where a training frame shows background at the surface (outside the silhouette)
        outside = over_background(self.av, b.loaded.tracking, lambda i: b.seq.load_image(i)[1], frames, self.device)
        seen_any = replace(seen_any, vertex=torch.maximum(seen_any.vertex.cpu(), outside))
        completed = complete_maps({k: v.cpu() for k, v in seen.items()}, vis.vertex, self.head,
                                  opacity_vis=seen_any.vertex.cpu())
        raw = raw_from_maps(completed, b.scale_norm, shell)
        b.base_raw = raw[None].to(self.device)
        if cfg.full_head_keep_seen and b.cond is None:  # the fine-tune changes only what was invented
            b.update_mask = self.update_mask(vis.vertex, seen_any.vertex, raw.shape[-1])
        b.net_input = standardise(raw)[None].to(self.device)
        extra_in = dynamic.CHANNELS if b.cond is not None else 0  # dynamic_maps: the conditioning channels
        b.net = make_bakenet("residual", cfg.base_channels, cfg.depth, in_channels=11 + extra_in).to(self.device)
        b.opt = torch.optim.Adam(b.net.parameters(), lr=cfg.lr)
        if cfg.full_head_steps == 0:
            return {"views": 0, "steps": 0}
        verts = self.neutral_vertices()
        views = list(DEFAULT_VIEWS)
        cams = ring_cameras(self.rig(), views, self.device)
        with torch.no_grad():
            vals0 = b.gaussian_attributes({k: v.to(self.device) for k, v in completed.items()})
        request = self.request(vals0, verts, cams, views, vis.gaussian)
        rgb, mask = self.targets(request)
        total = 2 * cfg.full_head_steps
        for k in range(total):
            if cancel is not None and cancel.requested:
                raise CancelledError(f"full-head completion cancelled at step {k}; bake again with "
                                     "full_head_only to redo it from maps_seen.safetensors")
            vals = b.gaussian_attributes(b.maps())
            if k % 2 == 0:  # a pseudo view over a random background (FATE's code)
                j = int(torch.randint(len(cams), (1,), generator=self.gen))
                bg = torch.rand(3, generator=self.gen).to(self.device)
                pred = self.render(vals, verts, cams[j], bg).image
                gt = rgb[j] * mask[j] + bg * (1 - mask[j])
            else:  # a real training frame, full loss (the front keeps its weight)
                i = b.schedule(k // 2)
                if b.key_blend is not None:  # the frame's map shape keys, as Blender blends them
                    vals = b.gaussian_attributes(b.maps(), i)
                pred, gt = b.render(vals, i).image, b.frames.get(i)
            loss = self.loss(vals, pred, gt)
            b.opt.zero_grad(set_to_none=True)
            loss.backward()
            for group in b.opt.param_groups:
                group["lr"] = self.lr(k)
            b.opt.step()
            if sink is not None:
                sink.progress("full_head", k + 1, total, loss=round(float(loss.detach()), 5))
        share = float(request.unseen.sum() / max(float(request.alpha.sum()), 1e-9))  # unseen is premultiplied
        return {"views": len(cams), "steps": cfg.full_head_steps, "unseen_share": round(share, 4)}


def complete_full_head(baker, sink=None, cancel=None) -> dict:
    """The full-head stage of a bake (module doc); see :class:`FullHead`."""
    return FullHead(baker).run(sink, cancel)


def read_seen_maps(path) -> dict[str, Tensor]:
    """``maps_seen.safetensors``: the five activated maps [R, R, C] of a bake before completion.

    Raises:
        CompletionError: the file is missing (no earlier full-head bake).
    """
    from pathlib import Path

    from safetensors.torch import load_file

    if not Path(path).exists():
        raise CompletionError(f"{path} is missing: full_head_only needs an earlier bake of this avatar "
                              "with full_head on")
    return load_file(str(path))


def seen_visibility_map(baker) -> Tensor:
    """The ``visibility`` map of a bake without the full-head stage. [R, R, 1]"""
    stage = FullHead(baker)
    head = stage.head
    return texel_visibility(stage.visibility().vertex, head.uvs, head.faces_all, head.faces_uv_all,
                            baker.cfg.resolution)

