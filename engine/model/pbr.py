"""The relightable appearance ``--appearance pbr`` (HRAvatar, Zhang et al. CVPR 2025, §3.3).

Instead of a colour, each Gaussian carries an **albedo** (the same parameter and activation as the
static colour, ``clamp(0.5 + C0·sh0, 0, 1)``, sRGB-encoded so the albedo map paints like the
colour map), a **roughness** ``o`` and a **Fresnel base reflectance** ``F0`` (a scalar: skin is a
dielectric), both bounded by a sigmoid to HRAvatar's ranges (:data:`ROUGHNESS_RANGE`,
:data:`F0_RANGE`, its code's ``min/max_roughness`` and ``min/max_reflectance``). Its **normal** is
the Gaussian's shortest axis, turned to the side of its face's normal (regularised towards the
mesh normal by ``engine.train.pbr_losses``). The light is a learnt
:class:`engine.model.environment.Environment` in the frame of the camera.

Shading (HRAvatar Eq. 9–11, Karis 2013's split sum), per Gaussian, in linear RGB:

    I = A · I_irr(N) + I_env(R, o) · (k_s · LUT(N·V, o)[0] + LUT(N·V, o)[1])

with ``A`` the linear albedo, ``V`` the unit direction to the camera centre, ``R = 2(N·V)N − V``,
``k_s`` from :func:`engine.model.brdf.fresnel_schlick_roughness` and the LUT of
:func:`engine.model.brdf.brdf_lut`. The result is clamped to [0, 1] and sRGB-encoded — the space
the static avatar's colours and the training images live in — and rasterised like a colour
(PyTorch reference on the CPU, gsplat on CUDA: no custom kernels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from engine.geometry.cameras import Camera
from engine.model.brdf import brdf_lut, fresnel_schlick_roughness, lookup_lut
from engine.model.environment import Environment, camera_to_room

APPEARANCES = ("static", "pbr")
"""The appearance models (TrainConfig.appearance)."""
ROUGHNESS_RANGE = (0.5, 1.0)
"""Bounds of the roughness o (HRAvatar's code: min_roughness 0.5, max_roughness 1.0)."""
F0_RANGE = (0.04, 0.15)
"""Bounds of the Fresnel base reflectance F0 (HRAvatar's code: min/max_reflectance 0.04 / 0.15)."""
PBR_PARAMETERS = ("roughness_raw", "f0_raw")
"""The per-Gaussian parameters this model adds to :class:`engine.model.gaussians.UVGaussians`."""
INITIAL_ROUGHNESS = 0.95
"""Starting roughness, near the top of the range: the specular lobe starts broad and faint, so
the image is explained by albedo × light first and specular only grows where it helps (from the
middle of the range, on the CPU demo, specular took half of the face's brightness and the albedo
came out 0.4× too dark; docs/benchmarks.md)."""
INITIAL_F0 = 0.042
"""Starting F0, at the dielectric floor (skin's F0 is about 0.028; HRAvatar bounds it at 0.04)."""
NORMAL_FLATTEN = 0.5
"""At the start the Gaussian's normal-direction scale is this fraction of its in-plane scale, so
its shortest axis — its shading normal — is the face normal (isotropic Gaussians have none)."""


# ---------------------------------------------------------------------- colour and bounds
def srgb_to_linear(c: Tensor) -> Tensor:
    """sRGB transfer function inverse (IEC 61966-2-1), for encoded values in [0, 1]. [...]"""
    return torch.where(c <= 0.04045, c / 12.92, ((c.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: Tensor) -> Tensor:
    """sRGB transfer function (IEC 61966-2-1), for linear values in [0, 1]. [...]"""
    return torch.where(c <= 0.0031308, 12.92 * c, 1.055 * c.clamp_min(0.0031308) ** (1.0 / 2.4) - 0.055)


def bounded(raw: Tensor, bounds: tuple[float, float]) -> Tensor:
    """``lo + (hi − lo) · sigmoid(raw)``. [...]"""
    lo, hi = bounds
    return lo + (hi - lo) * torch.sigmoid(raw)


def unbounded(value: Tensor, bounds: tuple[float, float]) -> Tensor:
    """Inverse of :func:`bounded` (values clamped just inside the bounds). [...]"""
    lo, hi = bounds
    t = ((value - lo) / (hi - lo)).clamp(1e-4, 1.0 - 1e-4)
    return torch.log(t / (1.0 - t))


# ---------------------------------------------------------------------- geometry
def gaussian_normals(rotmats: Tensor, scales: Tensor, local_rot: Tensor) -> Tensor:
    """Each Gaussian's shading normal: its shortest axis, on the side of its face's normal.

    Args:
        rotmats: world rotations (columns = the Gaussian's axes). [N, 3, 3]
        scales: world standard deviations along those axes, meters. [N, 3]
        local_rot: the same rotations in the face frame (its third row is the face-normal
            component of each axis). [N, 3, 3]
    Returns:
        unit normals, world frame. [N, 3]
    """
    k = scales.argmin(-1)  # [N]
    idx = k[:, None, None].expand(-1, 3, 1)
    axis = rotmats.gather(-1, idx)[..., 0]
    side = local_rot[:, 2].gather(-1, k[:, None])[:, 0]
    return axis * torch.where(side < 0, -1.0, 1.0)[:, None]


def camera_centre(camera: Camera) -> Tensor:
    """Centre of an OpenCV camera in world coordinates, meters: ``−Rᵀ t``. [3]"""
    R, t = camera.viewmat[:3, :3], camera.viewmat[:3, 3]
    return -(R.T @ t)


# ---------------------------------------------------------------------- shading
def shade_radiance(albedo_linear: Tensor, roughness: Tensor, f0: Tensor, normals: Tensor, view: Tensor,
                   irradiance: Tensor, prefiltered_specular_fn, lut: Tensor) -> Tensor:
    """HRAvatar's shading (module doc) given the lighting terms.

    Args:
        albedo_linear: linear albedo. [N, 3]
        roughness: o. [N]; f0: [N]
        normals: unit normals (any frame shared with ``view``). [N, 3]
        view: unit directions towards the camera. [N, 3]
        irradiance: ``I_irr(N)`` (the environment's, or any light's). [N, 3]
        prefiltered_specular_fn: ``f(R [N, 3], o [N]) → I_env(R, o) [N, 3]``.
        lut: :func:`engine.model.brdf.brdf_lut`.
    Returns:
        outgoing radiance, linear RGB. [N, 3]
    """
    n_dot_v = (normals * view).sum(-1).clamp(1e-4, 1.0)
    refl = 2.0 * n_dot_v[:, None] * normals - view
    k_s = fresnel_schlick_roughness(f0, n_dot_v, roughness)
    a, b = lookup_lut(lut, n_dot_v, roughness)
    return albedo_linear * irradiance + prefiltered_specular_fn(refl, roughness) * (k_s * a + b)[:, None]


@dataclass
class Shading:
    """One frame's shading of every Gaussian (what the PBR losses read).

    Attributes:
        colors: encoded (sRGB) colours to rasterise, [0, 1]. [N, 3]
        normals: unit shading normals, world frame. [N, 3]
        irradiance: ``I_irr(N)`` of the environment, linear. [N, 3]
        roughness: [N]; f0: [N]
    """

    colors: Tensor
    normals: Tensor
    irradiance: Tensor
    roughness: Tensor
    f0: Tensor


class PBRAppearance(nn.Module):
    """The relightable appearance: the learnt environment and the per-Gaussian bounds (module doc).

    The per-Gaussian parameters (:data:`PBR_PARAMETERS`) live on the Gaussians
    (:meth:`add_parameters`), so densification and checkpoints carry them.

    Args:
        environment: the learnt light (a uniform one of radiance 1 by default).
    """

    def __init__(self, environment: Environment | None = None):
        super().__init__()
        self.environment = environment or Environment()
        self.register_buffer("lut", brdf_lut(), persistent=False)

    # ------------------------------------------------------------------ per-Gaussian values
    @staticmethod
    def add_parameters(gaussians, roughness: float = INITIAL_ROUGHNESS, f0: float = INITIAL_F0,
                       flatten: float = NORMAL_FLATTEN) -> None:
        """Adds roughness and F0 to fresh :class:`engine.model.gaussians.UVGaussians` and flattens
        them along the face normal by ``flatten`` (:data:`NORMAL_FLATTEN`)."""
        n = len(gaussians)
        dev = gaussians.bary.device
        gaussians.add_per_gaussian("roughness_raw", unbounded(torch.full((n,), roughness, device=dev), ROUGHNESS_RANGE))
        gaussians.add_per_gaussian("f0_raw", unbounded(torch.full((n,), f0, device=dev), F0_RANGE))
        with torch.no_grad():
            gaussians.scale_log.data[:, 2] += math.log(flatten)

    @staticmethod
    def roughness(gaussians) -> Tensor:
        """o in :data:`ROUGHNESS_RANGE`. [N]"""
        return bounded(gaussians.roughness_raw, ROUGHNESS_RANGE)

    @staticmethod
    def f0(gaussians) -> Tensor:
        """F0 in :data:`F0_RANGE`. [N]"""
        return bounded(gaussians.f0_raw, F0_RANGE)

    def activated(self, gaussians) -> dict[str, Tensor]:
        """The appearance maps' values: ``albedo`` (encoded, [N, 3]), ``roughness`` [N], ``f0`` [N]."""
        return {"albedo": gaussians.colors(), "roughness": self.roughness(gaussians), "f0": self.f0(gaussians)}

    @staticmethod
    @torch.no_grad()
    def set_values(gaussians, values: dict[str, Tensor]) -> None:
        """Overwrites roughness and F0 from (map) values [N] (clamped to the bounds)."""
        if "roughness" in values:
            gaussians.roughness_raw.data = unbounded(values["roughness"].to(gaussians.bary.device), ROUGHNESS_RANGE)
        if "f0" in values:
            gaussians.f0_raw.data = unbounded(values["f0"].to(gaussians.bary.device), F0_RANGE)

    # ------------------------------------------------------------------ shading
    def shade_gaussians(self, gaussians, world, camera: Camera) -> Shading:
        """Shades the placed Gaussians (:meth:`engine.model.gaussians.UVGaussians.place`) for a camera."""
        return self.shade(world, gaussians.local_rotmats(), self.roughness(gaussians), self.f0(gaussians), camera)

    def shade(self, world, local_rot: Tensor, roughness: Tensor, f0: Tensor, camera: Camera) -> Shading:
        """Shades world Gaussians (their ``colors`` are the encoded albedo) under the learnt
        environment for ``camera`` (module doc).

        Args:
            world: :class:`engine.model.gaussians.WorldGaussians`.
            local_rot: their rotations in the face frame. [N, 3, 3]
            roughness: [N]; f0: [N]
            camera: the view (its centre gives V; its rotation the room frame).
        """
        normals = gaussian_normals(world.rotmats, world.scales, local_rot)
        view = torch.nn.functional.normalize(camera_centre(camera)[None] - world.means, dim=-1)
        R = camera.viewmat[:3, :3]
        n_room = camera_to_room(normals @ R.T)
        v_room = camera_to_room(view @ R.T)
        env = self.environment
        irr = env.irradiance(n_room)
        pre = env.prefiltered()
        radiance = shade_radiance(srgb_to_linear(world.colors), roughness, f0, n_room, v_room, irr,
                                  lambda d, o: env.specular(d, o, pre), self.lut)
        return Shading(linear_to_srgb(radiance.clamp(0.0, 1.0)), normals, irr, roughness, f0)
