"""The learnt lighting of a relightable avatar: one distant environment map (HRAvatar §3.3).

Representation: a small **lat-long radiance map** ``L`` (``H × 2H`` texels, linear RGB, HDR,
``softplus`` of the learnt values), from which both lighting terms of HRAvatar's shading are
derived by fixed linear operators, so they always describe the same light:

- diffuse irradiance ``I_irr(N) = (1/π) ∫ L(ω) max(N·ω, 0) dω`` through **order-2 spherical
  harmonics** (9 coefficients per channel): the map is projected onto SH by quadrature and each
  band scaled by the clamped-cosine kernel ``Â = (π, 2π/3, π/4)`` (Ramamoorthi & Hanrahan 2001:
  order 2 keeps ≥ 99 % of a Lambertian surface's irradiance energy, error below 3 % for natural
  light; a single direction light is the worst case, 6 % too bright head-on);
- specular ``I_env(R, o)``: the map **prefiltered** with the GGX lobe at :data:`LEVELS` roughness
  levels (Karis 2013's split sum, with his ``N = V = R`` assumption), looked up trilinearly in
  direction and roughness — the mip chain of HRAvatar's cube map, as dense weight matrices since
  the map is tiny.

HRAvatar's code learns a 6 × 32² cube map (diffuse from a 16² prefiltered copy); a lat-long map
of 16 × 32 has about the same number of texels, needs no face seams, and is what Blender's
Environment Texture reads, so the learnt light becomes a World as it is (``blender/environment.exr``).

Frame ("room" frame, where the map lives): a monocular video's room stays fixed relative to its
camera while the head turns — and our trackers express head turns as camera motion — so the
environment is attached to each frame's camera: ``x`` = camera right, ``y`` = camera forward,
``z`` = camera up, i.e. ``d_room = (x, z, −y)`` of the OpenCV camera direction. For the still
camera of a Blender import (looking along +Y, up +Z) the room frame is Blender's world frame.
Parameterisation: Blender's equirectangular mapping, ``u = (π − atan2(y, x)) / 2π``,
``v = 1/2 + asin(z)/π`` (v up); row 0 of the map = the zenith (``v ≈ 1``), +X at the centre column.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.model.brdf import ggx_distribution

HEIGHT = 16
"""Rows of the lat-long map (columns: twice as many)."""
LEVELS = 9
"""Prefiltered roughness levels, at roughness ``k / (LEVELS − 1)``; level 0 is the map itself."""
SH_BAND_KERNEL = (math.pi, 2.0 * math.pi / 3.0, math.pi / 4.0)
"""Clamped-cosine convolution factors Â_l of SH bands 0, 1, 2 (Ramamoorthi & Hanrahan 2001)."""


# ---------------------------------------------------------------------- frames and directions
def camera_to_room(d_cv: Tensor) -> Tensor:
    """OpenCV camera directions (x right, y down, z forward) → room frame (x right, y forward,
    z up): ``(x, z, −y)``. [..., 3]"""
    return torch.stack([d_cv[..., 0], d_cv[..., 2], -d_cv[..., 1]], -1)


def direction_to_latlong(d: Tensor) -> tuple[Tensor, Tensor]:
    """Room-frame unit directions → (u, v) of Blender's equirectangular mapping (v up).

    Returns:
        u in [0, 1), v in [0, 1]. [...] each
    """
    u = (math.pi - torch.atan2(d[..., 1], d[..., 0])) / (2.0 * math.pi)
    v = 0.5 + torch.asin(d[..., 2].clamp(-1.0, 1.0)) / math.pi
    return u, v


def latlong_directions(height: int, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Texel-centre directions and exact solid angles of a ``height × 2·height`` lat-long map.

    Returns:
        directions, room frame, unit. [H, W, 3]; solid angles, sr (sum 4π). [H, W]
    """
    H, W = int(height), 2 * int(height)
    v = 1.0 - (torch.arange(H, dtype=dtype) + 0.5) / H  # row 0 = top
    u = (torch.arange(W, dtype=dtype) + 0.5) / W
    el = (v - 0.5) * math.pi
    phi = math.pi - 2.0 * math.pi * u
    el, phi = torch.meshgrid(el, phi, indexing="ij")
    d = torch.stack([torch.cos(el) * torch.cos(phi), torch.cos(el) * torch.sin(phi), torch.sin(el)], -1)
    top = math.pi / 2 - torch.arange(H, dtype=dtype) * math.pi / H
    band = torch.sin(top) - torch.sin(top - math.pi / H)  # ∫ cos(el) d el over the row
    return d, (band * 2.0 * math.pi / W)[:, None].expand(H, W).clone()


def sh_basis(d: Tensor) -> Tensor:
    """Real spherical harmonics of bands 0–2 at unit directions (the standard order
    Y00, Y1−1, Y10, Y11, Y2−2, Y2−1, Y20, Y21, Y22 with y, z, x for band 1). [..., 9]"""
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    return torch.stack([
        torch.full_like(x, 0.28209479177387814),
        0.4886025119029199 * y, 0.4886025119029199 * z, 0.4886025119029199 * x,
        1.0925484305920792 * x * y, 1.0925484305920792 * y * z,
        0.31539156525252005 * (3.0 * z * z - 1.0),
        1.0925484305920792 * x * z, 0.5462742152960396 * (x * x - y * y)], -1)


@functools.lru_cache(maxsize=2)
def irradiance_operator(height: int) -> Tensor:
    """The linear map radiance texels → SH coefficients of ``I_irr = E / π``:
    ``c_lm = (Â_l / π) Σ_j Y_lm(ω_j) L(ω_j) dΩ_j``. [9, H·W] float32 (cached: do not modify)"""
    d, sa = latlong_directions(height)
    Y = sh_basis(d.reshape(-1, 3))  # [HW, 9]
    band = torch.tensor([SH_BAND_KERNEL[0]] + [SH_BAND_KERNEL[1]] * 3 + [SH_BAND_KERNEL[2]] * 5,
                        dtype=d.dtype) / math.pi
    return (band[:, None] * (Y * sa.reshape(-1, 1)).T).float()


@functools.lru_cache(maxsize=2)
def prefilter_operators(height: int, levels: int = LEVELS) -> Tensor:
    """Linear maps radiance texels → GGX-prefiltered texels, one per roughness level.

    Level ``k`` (roughness ``o = k / (levels − 1)``, α = o²): each output texel is the
    ``D(N·H) · max(R·L, 0) dΩ``-weighted mean of the map with ``N = V = R`` its direction
    (Karis 2013's prefiltered environment: importance-sampled GGX weighted by N·L), i.e.
    ``N·H = sqrt((1 + R·L) / 2)``. Level 0 (a mirror) is the identity.

    Returns:
        [levels, H·W (output), H·W (input)] float32, rows summing to 1 (cached: do not modify).
    """
    d, sa = latlong_directions(height)
    d, sa = d.reshape(-1, 3), sa.reshape(-1)
    cos_rl = d @ d.T  # [out, in]
    n_dot_h = torch.sqrt(((1.0 + cos_rl) / 2.0).clamp(0.0, 1.0))
    ops = [torch.eye(d.shape[0], dtype=d.dtype)]
    for k in range(1, levels):
        alpha = torch.tensor((k / (levels - 1)) ** 2, dtype=d.dtype)
        w = ggx_distribution(n_dot_h, alpha) * cos_rl.clamp_min(0.0) * sa[None, :]
        ops.append(w / w.sum(-1, keepdim=True).clamp_min(1e-30))
    return torch.stack(ops).float()


def _softplus_inverse(x: Tensor) -> Tensor:
    return x + torch.log(-torch.expm1(-x))


# ---------------------------------------------------------------------- the module
class Environment(nn.Module):
    """Learnt distant lighting in the room (camera) frame: lat-long radiance → SH irradiance and
    prefiltered specular (module doc).

    Args:
        height: rows H of the lat-long map (W = 2H).
        radiance: initial uniform radiance (linear). A uniform map of 1 makes ``I_irr ≡ 1``: the
            avatar starts out rendering its albedo, like the static model its colour.
    """

    def __init__(self, height: int = HEIGHT, radiance: float = 1.0):
        super().__init__()
        self.height = int(height)
        init = _softplus_inverse(torch.tensor(float(radiance)))
        self.raw = nn.Parameter(torch.full((self.height, 2 * self.height, 3), float(init)))
        self.register_buffer("irr_op", irradiance_operator(self.height), persistent=False)
        self.register_buffer("pre_op", prefilter_operators(self.height), persistent=False)

    @classmethod
    def from_radiance(cls, radiance: Tensor) -> "Environment":
        """An environment holding a given lat-long radiance map [H, 2H, 3] (linear, ≥ 0)."""
        env = cls(radiance.shape[0])
        with torch.no_grad():
            env.raw.copy_(_softplus_inverse(radiance.float().clamp_min(1e-6)))
        return env

    def radiance(self) -> Tensor:
        """The lat-long radiance map, linear RGB, room frame (row 0 = zenith). [H, 2H, 3]"""
        return F.softplus(self.raw)

    def irradiance_sh(self) -> Tensor:
        """SH coefficients (bands 0–2) of ``I_irr(N)``, per channel. [9, 3]"""
        return self.irr_op @ self.radiance().reshape(-1, 3)

    def irradiance(self, normals: Tensor, sh: Tensor | None = None) -> Tensor:
        """Diffuse irradiance over π at unit normals (room frame): white albedo's radiance. [N, 3]"""
        return sh_basis(normals) @ (self.irradiance_sh() if sh is None else sh)

    def prefiltered(self) -> Tensor:
        """The map prefiltered at every roughness level. [LEVELS, H, 2H, 3]"""
        L = self.radiance().reshape(-1, 3)
        return (self.pre_op @ L).reshape(self.pre_op.shape[0], self.height, 2 * self.height, 3)

    def specular(self, directions: Tensor, roughness: Tensor, pre: Tensor | None = None) -> Tensor:
        """Prefiltered radiance ``I_env(R, o)`` at unit reflection directions (room frame):
        bilinear in (u, v) with the longitude wrapping around, linear between roughness levels.

        Args:
            directions: [N, 3]; roughness: [N] in [0, 1].
            pre: :meth:`prefiltered` when already computed.
        Returns:
            [N, 3] linear RGB.
        """
        pre = self.prefiltered() if pre is None else pre
        return sample_prefiltered(pre, directions, roughness)


def sample_prefiltered(pre: Tensor, directions: Tensor, roughness: Tensor) -> Tensor:
    """Trilinear lookup of prefiltered lat-long maps [L, H, W, 3] at room-frame directions [N, 3]
    and roughness [N] (level ``o · (L − 1)``). [N, 3]"""
    L, H, W, _ = pre.shape
    vol = torch.cat([pre[:, :, -1:], pre, pre[:, :, :1]], dim=2)  # wrap one column each side
    u, v = direction_to_latlong(directions)
    x = 2.0 * (u * W + 1.0) / (W + 2) - 1.0
    y = 1.0 - 2.0 * v
    z = 2.0 * (roughness.clamp(0.0, 1.0) * (L - 1) + 0.5) / L - 1.0
    grid = torch.stack([x, y, z], -1).to(pre.dtype)[None, :, None, None]  # [1, N, 1, 1, 3]
    out = F.grid_sample(vol.permute(3, 0, 1, 2)[None], grid, mode="bilinear", padding_mode="border",
                        align_corners=False)  # [1, 3, N, 1, 1]
    return out[0, :, :, 0, 0].T
