"""The avatar: everything that is trained (FATE §3.1), and the inputs of one frame.

:class:`Avatar` bundles the head model's FLAME layer, the UV-bound Gaussians, the learnt
blendshapes (Eq. 5) and the optional per-frame tracking corrections; :func:`build_avatar` makes
the initial one, :func:`frame_inputs` gives a frame's FLAME parameters and camera.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from engine.data.sequence import Sequence
from engine.geometry.cameras import Camera
from engine.geometry.uv import sample_uv_texels
from engine.model.blendshapes import LearnedBlendshapes, deform
from engine.model.flame_layer import FlameLayer
from engine.model.gaussians import UVGaussians
from engine.model.head_model import HeadModel
from engine.model.tracking import TrackingRefinement
from engine.raster import rasterize

if TYPE_CHECKING:  # pragma: no cover
    from engine.model.gaussians import WorldGaussians
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
    appearance: "PBRAppearance | None" = None
    """The relightable appearance (``--appearance pbr``, :mod:`engine.model.pbr`); None = static colour."""

    def shade(self, world: "WorldGaussians", camera: Camera) -> "tuple[Tensor, Shading | None]":
        """The per-Gaussian encoded colours to rasterise for ``camera``: the static colour, or the
        PBR shading under the learnt environment (then also its :class:`engine.model.pbr.Shading`)."""
        if self.appearance is None:
            return world.colors, None
        shading = self.appearance.shade_gaussians(self.gaussians, world, camera)
        return shading.colors, shading

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
        colors, _ = self.shade(g, camera)
        return rasterize(g.means, g.covars, g.opacities, colors, camera, background, backend=backend)


def build_avatar(head: HeadModel, seq: Sequence, device: torch.device, *, uv_resolution: int, shell: float,
                 learn_blendshapes: bool, refine_tracking: bool, appearance: str = "static") -> Avatar:
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
        appearance: "static" (a colour per Gaussian, FATE) or "pbr" (albedo, roughness, F0 under a
            learnt environment, HRAvatar: :mod:`engine.model.pbr`).
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
    return Avatar(head, flame, faces, gaussians, blendshapes, tracking,
                  _initial_appearance(gaussians, appearance, device))


def _initial_appearance(gaussians: UVGaussians, appearance: str, device: torch.device) -> "PBRAppearance | None":
    """None for "static"; for "pbr" a fresh :class:`engine.model.pbr.PBRAppearance` (and the
    Gaussians get its per-Gaussian parameters)."""
    if appearance == "static":
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
