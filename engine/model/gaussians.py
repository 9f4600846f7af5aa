"""UV-bound Gaussians: the FATE avatar's splats (FATE §3.1, Eq. 1–4).

Each Gaussian is bound to a face of the head mesh (mesh faces + mouth-closing faces) by a
face index and a barycentric coordinate, i.e. to a point of UV space. Its raw (learnable)
attributes live in the face's local frame (``engine.geometry.mesh_ops.face_frames``):

========== ======================= ===============================================
attribute  raw parameter           activated value
========== ======================= ===============================================
colour     SH-0 coefficient [N,3]  ``clamp(0.5 + C0 · sh0, 0, 1)``: encoded (sRGB) colour
opacity    logit [N]               ``sigmoid``: opacity in [0, 1]
scale      log [N,3]               ``exp``: multiplier of the face scale k_f (dimensionless);
                                   world σ = k_f · s (meters), so splats stretch with the face (Eq. 3)
rotation   quaternion wxyz [N,4]   unit quaternion in the face frame; world R = R_f · r (Eq. 2)
offset     raw [N]                 ``shell · tanh(raw)``: meters along the unit face normal (Eq. 4)
========== ======================= ===============================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from engine.geometry.mesh_ops import barycentric_points, face_areas, face_frames
from engine.geometry.rotations import quaternion_to_matrix

SH_C0 = 0.28209479177387814
"""Zeroth-order real spherical harmonic, 1 / (2 √π)."""

ATTRIBUTES = ("color", "opacity", "scale", "rotation", "offset")


@dataclass
class WorldGaussians:
    """Gaussians placed on a posed mesh, ready to rasterise.

    Attributes:
        means: centres, meters, mesh/world frame. [N, 3]
        covars: covariances, m². [N, 3, 3]
        colors: encoded (sRGB) colours in [0, 1]. [N, 3]
        opacities: in [0, 1]. [N]
        scales: world standard deviations along the Gaussian's axes, meters. [N, 3]
        rotmats: world rotations (columns = Gaussian axes). [N, 3, 3]
    """

    means: Tensor
    covars: Tensor
    colors: Tensor
    opacities: Tensor
    scales: Tensor
    rotmats: Tensor


def inverse_sigmoid(x: Tensor) -> Tensor:
    """logit, with the argument clamped away from 0 and 1."""
    x = x.clamp(1e-6, 1 - 1e-6)
    return torch.log(x / (1 - x))


class UVGaussians(nn.Module):
    """The set of UV-bound Gaussians and their learnable attributes (FATE §3.1).

    Args:
        face_idx: bound face (index into the mesh + mouth faces), int64. [N]
        bary: barycentric coordinates in that face, rows sum to 1. [N, 3]
        sh0: SH-0 colour coefficients. [N, 3]
        opacity_logit: [N]
        scale_log: log scale multipliers. [N, 3]
        rotation: quaternions wxyz (need not be normalised). [N, 4]
        offset_raw: pre-tanh normal offsets. [N]
        shell: maximum |normal offset|, meters.
    """

    def __init__(self, face_idx: Tensor, bary: Tensor, sh0: Tensor, opacity_logit: Tensor,
                 scale_log: Tensor, rotation: Tensor, offset_raw: Tensor, shell: float = 0.01):
        super().__init__()
        self.shell = float(shell)
        self.register_buffer("face_idx", face_idx.long())
        self.register_buffer("bary", bary.float())
        self.sh0 = nn.Parameter(sh0.float())
        self.opacity_logit = nn.Parameter(opacity_logit.float())
        self.scale_log = nn.Parameter(scale_log.float())
        self.rotation = nn.Parameter(rotation.float())
        self.offset_raw = nn.Parameter(offset_raw.float())
        self.extra_names: list[str] = []
        """Per-Gaussian parameters an appearance model added (:meth:`add_per_gaussian`)."""

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_bindings(cls, face_idx: Tensor, bary: Tensor, verts: Tensor, faces: Tensor,
                      shell: float = 0.01, opacity: float = 0.1,
                      color: tuple[float, float, float] = (0.5, 0.5, 0.5)) -> "UVGaussians":
        """Initial Gaussians for the given bindings (FATE's initialisation: grey, opacity 0.1,
        identity rotation, zero offset, isotropic scale ≈ the sample spacing on the surface).

        Args:
            face_idx: int64 [N]; bary: [N, 3] (e.g. from ``engine.geometry.uv.sample_uv_texels``).
            verts: canonical mesh vertices, meters. [V, 3]
            faces: mesh + mouth faces, int64. [F, 3]
            shell: maximum normal offset, meters.
        """
        n = face_idx.shape[0]
        scale_log = initial_scale_log(face_idx, verts, faces)
        sh0 = (torch.tensor(color, dtype=torch.float32) - 0.5) / SH_C0
        rot = torch.zeros(n, 4)
        rot[:, 0] = 1.0
        return cls(face_idx, bary, sh0.expand(n, 3).clone(),
                   inverse_sigmoid(torch.full((n,), opacity)), scale_log, rot,
                   torch.zeros(n), shell=shell)

    # ------------------------------------------------------------------ extra per-Gaussian parameters
    def add_per_gaussian(self, name: str, value: Tensor) -> None:
        """Registers an extra per-Gaussian parameter [N, ...], e.g. the HeadGaS features
        (``engine.model.headgas``) or a relightable avatar's roughness and F0
        (``engine.model.pbr``): densification, pruning, checkpoints and :meth:`raw_state` then
        carry it like the FATE attributes.

        Raises:
            ValueError: a name already taken, or a first dimension other than N.
        """
        if name in self.parameter_names() or hasattr(self, name):
            raise ValueError(f"per-Gaussian parameter {name!r} exists already")
        if value.shape[0] != len(self):
            raise ValueError(f"per-Gaussian parameter {name!r}: first dimension {value.shape[0]}, expected {len(self)}")
        self.register_parameter(name, nn.Parameter(value.float().to(self.bary.device)))
        self.extra_names.append(name)

    def parameter_names(self) -> tuple[str, ...]:
        """Every per-Gaussian parameter: :attr:`PARAMETERS`, then the extras."""
        return self.PARAMETERS + tuple(self.extra_names)

    # ------------------------------------------------------------------ attributes
    def __len__(self) -> int:
        return int(self.face_idx.shape[0])

    def colors(self) -> Tensor:
        """Encoded (sRGB) colour in [0, 1]. [N, 3]"""
        return (0.5 + SH_C0 * self.sh0).clamp(0.0, 1.0)

    def opacities(self) -> Tensor:
        """[N] in [0, 1]."""
        return torch.sigmoid(self.opacity_logit)

    def scale_multipliers(self) -> Tensor:
        """Scale as a multiple of the face scale k_f. [N, 3]"""
        return torch.exp(self.scale_log)

    def local_rotmats(self) -> Tensor:
        """Rotations in the face frame. [N, 3, 3]"""
        return quaternion_to_matrix(nn.functional.normalize(self.rotation, dim=-1))

    def offsets(self) -> Tensor:
        """Normal offsets, meters. [N]"""
        return self.shell * torch.tanh(self.offset_raw)

    def activated(self) -> dict[str, Tensor]:
        """Activated attributes as stored in UV maps (see the module table)."""
        from engine.geometry.rotations import matrix_to_axis_angle

        return {
            "color": self.colors(),
            "opacity": self.opacities(),
            "scale": self.scale_multipliers(),
            "rotation": matrix_to_axis_angle(self.local_rotmats()),
            "offset": self.offsets(),
        }

    # ------------------------------------------------------------------ placement
    def place(self, verts: Tensor, faces: Tensor) -> WorldGaussians:
        """Places the Gaussians on a posed mesh (Eq. 2–4).

        Args:
            verts: posed vertices, meters (FLAME/world frame). [V, 3]
            faces: mesh + mouth faces, int64. [F, 3]
        Returns:
            WorldGaussians with N entries.
        """
        return place_gaussians(verts, faces, self.face_idx, self.bary, self.colors(),
                               self.opacities(), self.scale_multipliers(), self.local_rotmats(),
                               self.offsets())

    # ------------------------------------------------------------------ persistence
    def raw_state(self) -> dict[str, Tensor]:
        """Tensors that fully describe the Gaussians (the avatar's gaussians.safetensors)."""
        return {
            "face_idx": self.face_idx.detach().cpu(),
            "bary": self.bary.detach().cpu(),
            "sh0": self.sh0.detach().cpu(),
            "opacity_logit": self.opacity_logit.detach().cpu(),
            "scale_log": self.scale_log.detach().cpu(),
            "rotation": self.rotation.detach().cpu(),
            "offset_raw": self.offset_raw.detach().cpu(),
            **{name: getattr(self, name).detach().cpu() for name in self.extra_names},
        }

    @classmethod
    def from_raw_state(cls, state: dict[str, Tensor], shell: float) -> "UVGaussians":
        """Inverse of :meth:`raw_state` (extra parameters included)."""
        g = cls(state["face_idx"], state["bary"], state["sh0"], state["opacity_logit"],
                state["scale_log"], state["rotation"], state["offset_raw"], shell=shell)
        for name in sorted(set(state) - set(cls.PARAMETERS) - {"face_idx", "bary"}):
            g.add_per_gaussian(name, state[name])
        return g

    PARAMETERS = ("sh0", "opacity_logit", "scale_log", "rotation", "offset_raw")


def place_gaussians(verts: Tensor, faces: Tensor, face_idx: Tensor, bary: Tensor, colors: Tensor,
                    opacities: Tensor, scale_mult: Tensor, local_rot: Tensor,
                    offsets: Tensor, position_delta: Tensor | None = None) -> WorldGaussians:
    """Activated face-frame attributes → world Gaussians (FATE Eq. 2–4). Shared by training,
    map re-splatting and the parity tests with the Blender runtime.

    Args:
        verts: posed vertices, meters. [V, 3]
        faces: mesh + mouth faces, int64. [F, 3]
        face_idx: int64 [N]; bary: [N, 3]
        colors: [N, 3]; opacities: [N]
        scale_mult: multiples of the face scale k_f. [N, 3]
        local_rot: rotations in the face frame. [N, 3, 3]
        offsets: meters along the unit face normal. [N]
        position_delta: optional extra offset in the face frame (columns e1, e2, n), multiples
            of the face scale k_f: μ += k_f R_f δ (soft binding, ``engine.model.soft_binding``). [N, 3]
    Returns:
        WorldGaussians.
    """
    R_f, k_f, n_f = face_frames(verts, faces)
    R_f, k_f, n_f = R_f[face_idx], k_f[face_idx], n_f[face_idx]
    means = barycentric_points(verts, faces, face_idx, bary) + offsets[:, None] * n_f
    if position_delta is not None:
        means = means + k_f[:, None] * (R_f @ position_delta[..., None])[..., 0]
    rot = R_f @ local_rot
    scales = scale_mult * k_f[:, None]
    covars = (rot * scales[:, None, :].square()) @ rot.transpose(-1, -2)
    return WorldGaussians(means, covars, colors, opacities, scales, rot)


def initial_scale_log(face_idx: Tensor, verts: Tensor, faces: Tensor, factor: float = 0.7) -> Tensor:
    """log scale multipliers that make neighbouring samples overlap.

    The sample spacing on face f is √(A_f / n_f) for n_f samples on a face of area A_f;
    σ = factor · spacing, expressed as a multiple of the face scale k_f.

    Args:
        face_idx: int64 [N]; verts: [V, 3] meters; faces: int64 [F, 3].
    Returns:
        [N, 3] log multipliers (isotropic).
    """
    with torch.no_grad():
        _, k_f, _ = face_frames(verts, faces)
        area = face_areas(verts, faces)
        counts = torch.bincount(face_idx, minlength=faces.shape[0]).clamp_min(1).float()
        spacing = torch.sqrt(area / counts)
        mult = (factor * spacing / k_f.clamp_min(1e-9))[face_idx].clamp(1e-4, 10.0)
        return torch.log(mult)[:, None].expand(-1, 3).clone()


def random_barycentric(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Random barycentric coordinates by normalising three U(0,1) draws (FATE Eq. 7–8).

    Note this is FATE's rule (not area-uniform: it favours the centroid).

    Returns:
        [n, 3] float32, rows sum to 1.
    """
    w = torch.rand(n, 3, generator=generator).clamp_min(1e-6)
    return w / w.sum(dim=1, keepdim=True)


def numpy_bindings(g: UVGaussians) -> tuple[np.ndarray, np.ndarray]:
    """Bindings as numpy: face index int32 [N], barycentric float32 [N, 3]."""
    return g.face_idx.cpu().numpy().astype(np.int32), g.bary.cpu().numpy().astype(np.float32)
