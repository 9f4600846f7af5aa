"""The avatar: everything that is trained (FATE §3.1), and the inputs of one frame.

:class:`Avatar` bundles the head model's FLAME layer, the UV-bound Gaussians, the learnt
blendshapes (Eq. 5), the optional per-frame tracking corrections and the optional soft binding
(STAvatar, ``engine.model.soft_binding``), the optional expression-dependent appearance
(HeadGaS, ``engine.model.headgas``) or the optional relightable shading (HRAvatar,
``engine.model.pbr``); :func:`build_avatar` makes the initial one,
:func:`frame_inputs` gives a frame's FLAME parameters and camera.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from engine.data.sequence import Sequence
from engine.geometry.cameras import Camera
from engine.geometry.uv import sample_uv_texels
from engine.model.blendshapes import LearnedBlendshapes, deform
from engine.model.flame_layer import FlameLayer
from engine.model.gaussians import UVGaussians, WorldGaussians
from engine.model.head_model import HeadModel
from engine.model.soft_binding import (
    SoftBinding,
    build_soft_binding,
    canonical_pose,
    fold_static_offsets,
    place_soft,
)
from engine.model.tracking import TrackingRefinement
from engine.raster import rasterize

if TYPE_CHECKING:  # pragma: no cover
    from engine.model.pbr import PBRAppearance, Shading

log = logging.getLogger(__name__)


@dataclass
class Avatar:
    """Everything that is trained: head model layer, Gaussians, blendshapes, tracking corrections."""

    head: HeadModel
    flame: FlameLayer
    faces: Tensor  # [F + M, 3] int64 mesh + mouth faces
    gaussians: UVGaussians
    blendshapes: LearnedBlendshapes
    tracking: TrackingRefinement
    soft_binding: SoftBinding | None = None  # None = hard binding (FATE)
    appearance: Any = None
    """Expression-dependent colour and opacity, or None for FATE's static ones: a callable
    ``(gaussians, expr [E], pose [J·3]) -> (colors [N, 3], opacities [N])``, e.g.
    :class:`engine.model.headgas.HeadGaSAppearance` or ``engine.map_keys.MapKeyAppearance``;
    applied by :meth:`place`."""
    shading: "PBRAppearance | None" = None
    """The relightable appearance (``appearance = "pbr"``, :mod:`engine.model.pbr`): the colour is
    an albedo shaded under a learnt environment for each camera (:meth:`shade`); None = the colour
    is rasterised as it is. Never set together with :attr:`appearance` (TrainConfig rejects it)."""

    def shade(self, world: "WorldGaussians", camera: Camera) -> "tuple[Tensor, Shading | None]":
        """The per-Gaussian encoded colours to rasterise for ``camera``: the placed colour, or the
        PBR shading under the learnt environment (then also its :class:`engine.model.pbr.Shading`).

        Args:
            world: the placed Gaussians (:meth:`place`).
            camera: the view (OpenCV camera).
        Returns:
            (colours [N, 3] float32 in [0, 1], the Shading or None)
        """
        if self.shading is None:
            return world.colors, None
        shading = self.shading.shade_gaussians(self.gaussians, world, camera)
        return shading.colors, shading

    def posed_vertices(self, shape: Tensor, expr: Tensor, pose: Tensor,
                       translation: Tensor | None) -> tuple[Tensor, Tensor]:
        """[1, V, 3] vertices with and without the learnt blendshapes."""
        return deform(self.flame, self.blendshapes, shape, expr, pose, translation)

    def binding_offsets(self, shape: Tensor, expr: Tensor, pose: Tensor) -> Tensor | None:
        """Soft-binding offsets δ of every Gaussian for a frame [N, 9] (None with hard binding).

        Args:
            shape: [S]; expr: [E]; pose: [J·3] axis-angle (root and neck are ignored).
        """
        sb = self.soft_binding
        if sb is None:
            return None
        with torch.no_grad():
            canon, _ = self.flame(shape[None], expr[None], canonical_pose(pose[None], self.head.joint_names))
        return sb.offsets(canon[0], self.faces, self.gaussians.face_idx, self.gaussians.bary)

    def place(self, verts: Tensor, delta: Tensor | None = None, *, expr: Tensor | None = None,
              pose: Tensor | None = None) -> WorldGaussians:
        """The Gaussians on a posed mesh (FATE Eq. 2–4), with soft-binding offsets and the frame's
        appearance.

        Args:
            verts: posed vertices, meters. [V, 3]
            delta: soft-binding offsets (None = hard binding). [N, 9]
            expr: the frame's expression coefficients; needed with an appearance model. [E]
            pose: its joint rotations, axis-angle, radians; needed with an appearance model. [J·3]
        Raises:
            ValueError: the avatar has an appearance model and ``expr`` / ``pose`` are missing.
        """
        g = place_soft(self.gaussians, verts, self.faces, delta)
        if self.appearance is not None:
            if expr is None or pose is None:
                raise ValueError("Avatar.place: this avatar's appearance depends on the expression; pass expr and pose")
            g.colors, g.opacities = self.appearance(self.gaussians, expr, pose)
        return g

    def render(self, shape: Tensor, expr: Tensor, pose: Tensor, translation: Tensor | None,
               camera: Camera, background: Tensor, backend: str = "auto"):
        """Renders one frame. shape [S], expr [E], pose [J·3], translation [3] | None."""
        verts, _ = self.posed_vertices(shape[None], expr[None], pose[None],
                                       None if translation is None else translation[None])
        g = self.place(verts[0], self.binding_offsets(shape, expr, pose), expr=expr, pose=pose)
        colors, _ = self.shade(g, camera)
        return rasterize(g.means, g.covars, g.opacities, colors, camera, background, backend=backend)


def build_avatar(head: HeadModel, seq: Sequence, device: torch.device, *, uv_resolution: int, shell: float,
                 learn_blendshapes: bool, refine_tracking: bool, binding: str = "hard",
                 soft_resolution: int = 64, soft_width: int = 16,
                 background: tuple[float, float, float] = (1.0, 1.0, 1.0), appearance: str = "static") -> Avatar:
    """Initial avatar: UV-sampled Gaussians on the subject's canonical mesh (FATE §3.1, §4.1).

    Args:
        head: the head model.
        seq: the tracked sequence (its shape coefficients place the canonical mesh; its expression
            and pose dimensions size the learnt blendshapes and the tracking corrections).
        device: where the model lives.
        uv_resolution: one Gaussian per covered texel of a map this size (FATE: 256).
        shell: largest normal offset of a Gaussian from its face, meters.
        learn_blendshapes: optimise ΔE, ΔP, Δ (Eq. 5).
        refine_tracking: optimise per-frame tracking corrections (supp. §7.1).
        binding: "hard" (FATE) or "soft" (STAvatar's UV-adaptive soft binding).
        soft_resolution: UV resolution of the soft-binding network's maps.
        soft_width: the soft-binding network's width.
        background: colour behind the subject in the soft binding's unwrapped reference image.
        appearance: TrainConfig.appearance: "pbr" gives the avatar its :attr:`Avatar.shading`
            (albedo, roughness, F0 under a learnt environment, HRAvatar: :mod:`engine.model.pbr`);
            "static" and "headgas" build a static-colour avatar (the trainer attaches HeadGaS).
    """
    flame = FlameLayer(head).to(device)
    faces = torch.as_tensor(head.faces_all, dtype=torch.long, device=device)
    samples = sample_uv_texels(head.uvs, head.faces_uv_all, uv_resolution)
    with torch.no_grad():
        shape = seq.shape[None].to(device)
        verts, _ = flame(shape, torch.zeros(1, seq.expr.shape[1], device=device),
                         torch.zeros(1, seq.pose.shape[1], device=device))
    face_idx = torch.as_tensor(samples.face_idx, dtype=torch.long, device=device)
    bary = torch.as_tensor(samples.bary, dtype=torch.float32, device=device)
    gaussians = UVGaussians.from_bindings(face_idx, bary, verts[0], faces, shell=shell).to(device)
    n_expr = min(seq.expr.shape[1], head.num_expr)
    blendshapes = LearnedBlendshapes(head.num_vertices, n_expr, head.posedirs.shape[0],
                                     enabled=learn_blendshapes).to(device)
    tracking = TrackingRefinement(len(seq), seq.expr.shape[1], seq.pose.shape[1],
                                  enabled=refine_tracking).to(device)
    soft = None
    if binding == "soft":
        soft = build_soft_binding(head, flame, seq, seq.indices("train"), device, soft_resolution, soft_width,
                                  background)
    return Avatar(head, flame, faces, gaussians, blendshapes, tracking, soft,
                  shading=_initial_shading(gaussians, appearance, device))


@torch.no_grad()
def mean_binding_offsets(av: Avatar, seq: Sequence, frames: list[int]) -> Tensor:
    """The soft-binding offsets δ of every Gaussian averaged over ``frames``. [N, 9]

    Raises:
        ValueError: the avatar has hard binding, or ``frames`` is empty.
    """
    if av.soft_binding is None or not frames:
        raise ValueError("mean_binding_offsets needs a soft-bound avatar and at least one frame")
    dev = av.faces.device
    total = torch.zeros(len(av.gaussians), 9, device=dev)
    for i in frames:
        shape, expr, pose, _, _ = frame_inputs(av, seq, i, dev)
        total += av.binding_offsets(shape, expr, pose)
    return total / len(frames)


@torch.no_grad()
def static_bake(av: Avatar, seq: Sequence, frames: list[int]) -> Avatar:
    """The hard-bound avatar with the soft-binding offsets averaged over ``frames`` folded into
    its Gaussians (``engine.model.soft_binding.fold_static_offsets``, on the subject's rest mesh);
    what the avatar folder ships for baking and Blender. ``av`` itself is not modified."""
    delta = mean_binding_offsets(av, seq, frames)
    dev = av.faces.device
    n_expr = av.blendshapes.delta_exprdirs.shape[-1]
    rest, _ = av.posed_vertices(seq.shape[None].to(dev), torch.zeros(1, n_expr, device=dev),
                                torch.zeros(1, seq.pose.shape[1], device=dev), None)
    folded = fold_static_offsets(av.gaussians, delta, rest[0], av.faces)
    return Avatar(av.head, av.flame, av.faces, folded, av.blendshapes, av.tracking, None, av.appearance,
                  av.shading)


def _initial_shading(gaussians: UVGaussians, appearance: str, device: torch.device) -> "PBRAppearance | None":
    """For "pbr" a fresh :class:`engine.model.pbr.PBRAppearance` (and the Gaussians get its
    per-Gaussian parameters); None otherwise (static, or "headgas", attached by the trainer:
    ``engine.model.headgas.attach_headgas``)."""
    if appearance != "pbr":
        return None
    from engine.model.pbr import PBRAppearance

    PBRAppearance.add_parameters(gaussians)
    return PBRAppearance().to(device)


def match_coefficients(seq: Sequence, head: HeadModel) -> Sequence:
    """The sequence with no more shape / expression coefficients than the head model has.

    A dataset tracked with fewer coefficients than the model (IMavatar/NerFace: 50 expression
    coefficients; FLAME 2020 has 100) is used as it is: the missing components count as zero and
    ΔE is learnt for the dataset's count (FATE slices the basis the same way). A dataset with more
    coefficients than the model has them dropped, with a warning (their motion is lost).

    Returns:
        ``seq`` itself, or a shallow copy with ``shape`` [S'] and ``expr`` [T, E'] cut to the model.
    """
    cut_s = seq.shape.shape[0] > head.num_shape
    cut_e = seq.expr.shape[1] > head.num_expr
    if not (cut_s or cut_e):
        return seq
    log.warning("%s has %d shape / %d expression coefficients, the head model %r %d / %d: using the "
                "first %d / %d", seq.root, seq.shape.shape[0], seq.expr.shape[1], head.name, head.num_shape,
                head.num_expr, min(seq.shape.shape[0], head.num_shape), min(seq.expr.shape[1], head.num_expr))
    out = copy.copy(seq)
    out.shape = seq.shape[: head.num_shape]
    out.expr = seq.expr[:, : head.num_expr]
    return out


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
