"""The specular BRDF of the relightable avatar and its split-sum lookup table (HRAvatar §3.3).

HRAvatar (Zhang et al., CVPR 2025) shades with a Disney-style microfacet model in the split-sum
form of Karis 2013 ("Real Shading in Unreal Engine 4"):

    I_specular ≈ I_env(R, o) · (k_s · LUT(N·V, o)[0] + LUT(N·V, o)[1])

with roughness ``o`` (α = o², Burley 2012), the GGX normal distribution, Smith's shadowing in
Schlick's form with ``k = α / 2`` (Karis's choice for image-based light) and Schlick's Fresnel.
``LUT`` is the pre-integrated BRDF (the "environment BRDF"): for a surface of base reflectance
F0 the directional albedo of the specular lobe is ``F0 · A + B`` (:func:`integrate_brdf`). The
engine computes the table itself (:func:`brdf_lut`, importance-sampled with a Hammersley set, as
in Karis's ``IntegrateBRDF``). ``k_s`` is HRAvatar's roughness-aware Fresnel term
(:func:`fresnel_schlick_roughness`, UE4's spherical-Gaussian fit of Schlick's power).

All functions work on torch tensors of any leading shape; angles are cosines in [0, 1].
The Blender side re-implements the same maths in numpy (``addon/splats/shading.py``); a test
keeps the two equal.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

LUT_SIZE = 32
"""Texels per side of the lookup table: columns N·V, rows roughness, both at texel centres
``(i + 0.5) / LUT_SIZE``."""
LUT_SAMPLES = 1024
"""Importance samples per texel (Hammersley points)."""

SG_A, SG_B = -5.55473, -6.98316
"""UE4's spherical-Gaussian fit of Schlick's ``(1 − c)^5`` ≈ ``2^((A·c + B)·c)`` (Karis 2013; the
seminar slides print B as 6.698316, a typo of UE4's 6.98316)."""


def ggx_distribution(n_dot_h: Tensor, alpha: Tensor) -> Tensor:
    """GGX / Trowbridge-Reitz normal distribution ``D = α² / (π ((N·H)² (α² − 1) + 1)²)``.

    Args:
        n_dot_h: cosine between normal and half vector. [...]
        alpha: α = roughness², > 0. [...] (broadcast)
    Returns:
        D, 1/sr. [...]
    """
    a2 = alpha * alpha
    d = n_dot_h * n_dot_h * (a2 - 1.0) + 1.0
    return a2 / (math.pi * d * d).clamp_min(1e-20)


def smith_g_schlick(n_dot_v: Tensor, n_dot_l: Tensor, alpha: Tensor) -> Tensor:
    """Smith shadowing-masking in Schlick's form, ``k = α / 2`` (Karis 2013, image-based light):
    ``G = G1(N·V) G1(N·L)`` with ``G1(x) = x / (x (1 − k) + k)``. [...]"""
    k = alpha / 2.0
    g1v = n_dot_v / (n_dot_v * (1.0 - k) + k).clamp_min(1e-12)
    g1l = n_dot_l / (n_dot_l * (1.0 - k) + k).clamp_min(1e-12)
    return g1v * g1l


def fresnel_schlick(f0: Tensor, cos_theta: Tensor) -> Tensor:
    """Schlick's Fresnel ``F0 + (1 − F0)(1 − cos θ)^5``. [...]"""
    return f0 + (1.0 - f0) * (1.0 - cos_theta).clamp(0.0, 1.0) ** 5


def fresnel_schlick_roughness(f0: Tensor, n_dot_v: Tensor, roughness: Tensor) -> Tensor:
    """HRAvatar's ``k_s = F0 + (max(1 − o, F0) − F0) · 2^((−5.55473 (N·V) − 6.98316) (N·V))``:
    Schlick's Fresnel at the view angle, its grazing value capped by ``1 − roughness``
    (Lagarde's roughness-aware form, UE4's exponent fit).

    Args:
        f0: base reflectance at normal incidence. [...]
        n_dot_v: cosine of the view angle, [0, 1]. [...]
        roughness: o in [0, 1]. [...]
    Returns:
        k_s. [...] — equals F0 at normal incidence (up to 2^−12.5 ≈ 1.7e-4 of the cap).
    """
    c = n_dot_v.clamp(0.0, 1.0)
    return f0 + (torch.maximum(1.0 - roughness, f0) - f0) * torch.exp2((SG_A * c + SG_B) * c)


def hammersley(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The Hammersley point set ``(i / n, radical_inverse_2(i))``. [n, 2]"""
    i = torch.arange(n, dtype=torch.int64)
    bits = i.clone()
    rev = torch.zeros(n, dtype=dtype)
    scale = 0.5
    for _ in range(32):
        rev = rev + (bits & 1).to(dtype) * scale
        bits = bits >> 1
        scale *= 0.5
    return torch.stack([i.to(dtype) / n, rev], -1)


def integrate_brdf(n_dot_v: Tensor, roughness: Tensor, samples: int = LUT_SAMPLES) -> tuple[Tensor, Tensor]:
    """The split-sum BRDF integral (Karis 2013, ``IntegrateBRDF``): scale ``A`` and bias ``B`` with
    ``∫ f_spec(l, v) (N·l) dl = F0 · A + B`` for the GGX / Smith (k = α/2) / Schlick model.

    Importance-samples half vectors from the GGX distribution (α = roughness²) with a Hammersley
    set; each sample contributes ``G · (V·H) / ((N·H)(N·V))`` weighted by ``1 − Fc`` (to A) and
    ``Fc = (1 − V·H)^5`` (to B). At roughness 0 the lobe is a mirror: ``A = 1 − (1 − N·V)^5``,
    ``B = (1 − N·V)^5`` exactly.

    Args:
        n_dot_v: cosines of the view angle, in (0, 1]. [M]
        roughness: in [0, 1]. [M]
        samples: number of importance samples.
    Returns:
        (A, B), float64. [M] each
    """
    nv = n_dot_v.double().clamp(1e-4, 1.0)[:, None]
    alpha = (roughness.double() ** 2)[:, None]
    xi = hammersley(samples)[None]  # [1, S, 2]
    phi = 2.0 * math.pi * xi[..., 0]
    cos_h = torch.sqrt((1.0 - xi[..., 1]) / (1.0 + (alpha * alpha - 1.0) * xi[..., 1]))
    sin_h = torch.sqrt((1.0 - cos_h * cos_h).clamp_min(0.0))
    hx, hz = sin_h * torch.cos(phi), cos_h  # H's y component drops out: V·H and L_z need none
    vx, vz = torch.sqrt(1.0 - nv * nv), nv  # V in the x-z plane
    v_dot_h = vx * hx + vz * hz
    lz = 2.0 * v_dot_h * hz - vz  # L = 2 (V·H) H − V
    n_dot_l = lz.clamp(0.0, 1.0)
    v_dot_h = v_dot_h.clamp(0.0, 1.0)
    g = smith_g_schlick(nv.expand_as(n_dot_l), n_dot_l, alpha)
    g_vis = torch.where(n_dot_l > 0, g * v_dot_h / (hz.clamp_min(1e-12) * nv), torch.zeros_like(g))
    fc = (1.0 - v_dot_h) ** 5
    return ((1.0 - fc) * g_vis).mean(-1), (fc * g_vis).mean(-1)


@functools.lru_cache(maxsize=4)
def _lut_cpu(size: int, samples: int) -> Tensor:
    centres = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    rough, nv = torch.meshgrid(centres, centres, indexing="ij")
    a, b = integrate_brdf(nv.reshape(-1), rough.reshape(-1), samples)
    return torch.stack([a, b], -1).reshape(size, size, 2).float()


def brdf_lut(size: int = LUT_SIZE, samples: int = LUT_SAMPLES, device: torch.device | str = "cpu") -> Tensor:
    """The split-sum lookup table, computed by :func:`integrate_brdf` (cached per size).

    Returns:
        [size (roughness), size (N·V), 2 (A, B)] float32; texel (i, j) at roughness
        ``(i + 0.5) / size``, N·V ``(j + 0.5) / size``.
    """
    return _lut_cpu(int(size), int(samples)).to(device)


def lookup_lut(lut: Tensor, n_dot_v: Tensor, roughness: Tensor) -> tuple[Tensor, Tensor]:
    """Bilinear, clamp-to-edge lookup of :func:`brdf_lut` (differentiable in both arguments).

    Args:
        lut: [S, S, 2] from :func:`brdf_lut`.
        n_dot_v: [N] in [0, 1]; roughness: [N] in [0, 1].
    Returns:
        (A, B). [N] each
    """
    grid = torch.stack([2.0 * n_dot_v - 1.0, 2.0 * roughness - 1.0], -1).to(lut.dtype)  # x = N·V, y = rough
    out = F.grid_sample(lut.permute(2, 0, 1)[None], grid[None, None], mode="bilinear",
                        padding_mode="border", align_corners=False)[0, :, 0]  # [2, N]
    return out[0], out[1]
