"""Lighting a relightable avatar's splats with the scene's lights (numpy only; no bpy).

The Blender twin of ``engine/model/pbr.py``, ``brdf.py`` and ``environment.py`` (HRAvatar,
CVPR 2025, §3.3; Karis 2013's split sum): every splat has an encoded albedo, a roughness ``o``,
a Fresnel base reflectance ``F0`` and a normal (its shortest axis), and its colour is

    I = A · I_irr(N) + I_env(R, o) · (k_s · LUT(N·V, o)[0] + LUT(N·V, o)[1])     (the world)
      + Σ_lights  A · E_l(N) + π E_l(N) · D F G / (4 (N·L)(N·V))                  (lamps)

in linear RGB, then clamped and sRGB-encoded like any splat colour. ``E_l(N)`` is a lamp's
irradiance over π (the radiance it gives a white Lambertian surface), in Blender's light units as
Cycles renders them (measured with a white diffuse plane, bpy 5.0, within Cycles' sampling noise):

========= =================================================================================
sun       ``S · max(N·L, 0) / π`` (strength S, W/m²; L towards the sun)
point     ``P · max(N·L, 0) / (4 π² d²)`` (power P, W; d the distance)
spot      as point, times ``smoothstep((cos φ − cos(size/2)) / ((1 − cos(size/2)) · blend))``
area      ``P · max(N·L, 0) · max(cos φ, 0) / (π² d²)`` (φ from the light's axis), its shape
          reduced to its centre
========= =================================================================================

Lamps are points or directions: no shadows, no occlusion, no interreflection; their radius
(sun: angle; point/spot: radius; area: half its size) widens the specular lobe as Karis 2013 does
for sphere lights, ``α' = min(1, α + r / (2d))``, energy-normalised by ``(α/α')²``. The world (a
uniform colour, or an Environment Texture, optionally rotated by a Mapping node, times the
Background strength) becomes an environment as in the engine: a 16 × 32 lat-long radiance map in
the world frame, its order-2 SH irradiance and GGX-prefiltered specular levels.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from .colour import linear_to_srgb, srgb_to_linear

__all__ = ["LUT_SIZE", "ENV_HEIGHT", "LEVELS", "Lamp", "Environment", "Lighting", "brdf_lut", "integrate_brdf",
           "lookup_lut", "fresnel_schlick_roughness", "latlong_directions", "direction_to_latlong",
           "sample_latlong", "sh_basis", "lamp_irradiance", "shade"]

LUT_SIZE = 32
"""Split-sum table size (the engine's ``engine.model.brdf.LUT_SIZE``)."""
LUT_SAMPLES = 1024
"""Importance samples per table texel (the engine's)."""
ENV_HEIGHT = 16
"""Rows of the world's lat-long radiance map (the engine's ``environment.HEIGHT``)."""
LEVELS = 9
"""Prefiltered roughness levels (the engine's ``environment.LEVELS``)."""
SG_A, SG_B = -5.55473, -6.98316
"""UE4's fit of Schlick's power (engine.model.brdf)."""
_BAND_KERNEL = (math.pi, 2.0 * math.pi / 3.0, math.pi / 4.0)


# ---------------------------------------------------------------------- BRDF
def ggx_distribution(n_dot_h: np.ndarray, alpha) -> np.ndarray:
    """GGX ``α² / (π ((N·H)²(α² − 1) + 1)²)``, 1/sr. [...]"""
    a2 = np.asarray(alpha) ** 2
    d = n_dot_h * n_dot_h * (a2 - 1.0) + 1.0
    return a2 / np.maximum(math.pi * d * d, 1e-20)


def smith_g_schlick(n_dot_v: np.ndarray, n_dot_l: np.ndarray, alpha) -> np.ndarray:
    """Smith–Schlick shadowing with ``k = α / 2`` (Karis 2013). [...]"""
    k = np.asarray(alpha) / 2.0
    g1v = n_dot_v / np.maximum(n_dot_v * (1.0 - k) + k, 1e-12)
    return g1v * (n_dot_l / np.maximum(n_dot_l * (1.0 - k) + k, 1e-12))


def fresnel_schlick_roughness(f0: np.ndarray, n_dot_v: np.ndarray, roughness: np.ndarray) -> np.ndarray:
    """HRAvatar's ``k_s = F0 + (max(1 − o, F0) − F0) · 2^((−5.55473 c − 6.98316) c)``, c = N·V. [...]"""
    c = np.clip(n_dot_v, 0.0, 1.0)
    return f0 + (np.maximum(1.0 - roughness, f0) - f0) * np.exp2((SG_A * c + SG_B) * c)


def _hammersley(n: int) -> np.ndarray:
    i = np.arange(n, dtype=np.uint64)
    rev = np.zeros(n)
    bits, scale = i.copy(), 0.5
    for _ in range(32):
        rev += (bits & np.uint64(1)).astype(np.float64) * scale
        bits >>= np.uint64(1)
        scale *= 0.5
    return np.stack([i.astype(np.float64) / n, rev], -1)


def integrate_brdf(n_dot_v: np.ndarray, roughness: np.ndarray, samples: int = LUT_SAMPLES
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The split-sum scale A and bias B (Karis 2013 ``IntegrateBRDF``; the engine's
    ``engine.model.brdf.integrate_brdf``). [M] each, float64"""
    nv = np.clip(np.asarray(n_dot_v, np.float64), 1e-4, 1.0)[:, None]
    alpha = (np.asarray(roughness, np.float64) ** 2)[:, None]
    xi = _hammersley(samples)[None]
    phi = 2.0 * math.pi * xi[..., 0]
    cos_h = np.sqrt((1.0 - xi[..., 1]) / (1.0 + (alpha * alpha - 1.0) * xi[..., 1]))
    sin_h = np.sqrt(np.maximum(1.0 - cos_h * cos_h, 0.0))
    hx, hz = sin_h * np.cos(phi), cos_h
    vx, vz = np.sqrt(1.0 - nv * nv), nv
    v_dot_h = vx * hx + vz * hz
    n_dot_l = np.clip(2.0 * v_dot_h * hz - vz, 0.0, 1.0)
    v_dot_h = np.clip(v_dot_h, 0.0, 1.0)
    g = smith_g_schlick(np.broadcast_to(nv, n_dot_l.shape), n_dot_l, alpha)
    g_vis = np.where(n_dot_l > 0, g * v_dot_h / (np.maximum(hz, 1e-12) * nv), 0.0)
    fc = (1.0 - v_dot_h) ** 5
    return ((1.0 - fc) * g_vis).mean(-1), (fc * g_vis).mean(-1)


@functools.lru_cache(maxsize=2)
def brdf_lut(size: int = LUT_SIZE, samples: int = LUT_SAMPLES) -> np.ndarray:
    """[size (roughness), size (N·V), 2 (A, B)] float32 at texel centres (cached)."""
    c = (np.arange(size) + 0.5) / size
    rough, nv = np.meshgrid(c, c, indexing="ij")
    a, b = integrate_brdf(nv.ravel(), rough.ravel(), samples)
    return np.stack([a, b], -1).reshape(size, size, 2).astype(np.float32)


def _bilinear_clamped(table: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a [H, W, C] table at texel-centre coordinates x (columns) and y (rows),
    both in [0, 1], clamp to edge. [N, C]"""
    H, W = table.shape[:2]
    fx = np.clip(x * W - 0.5, 0.0, W - 1.0)
    fy = np.clip(y * H - 0.5, 0.0, H - 1.0)
    x0, y0 = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, W - 1), np.minimum(y0 + 1, H - 1)
    tx, ty = (fx - x0)[:, None], (fy - y0)[:, None]
    top = table[y0, x0] * (1 - tx) + table[y0, x1] * tx
    bot = table[y1, x0] * (1 - tx) + table[y1, x1] * tx
    return top * (1 - ty) + bot * ty


def lookup_lut(lut: np.ndarray, n_dot_v: np.ndarray, roughness: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear, clamp-to-edge (A, B) at (N·V, roughness). [N] each"""
    ab = _bilinear_clamped(lut, n_dot_v, roughness)
    return ab[:, 0], ab[:, 1]


# ---------------------------------------------------------------------- environment
def direction_to_latlong(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit directions → Blender's equirectangular (u, v), v up: ``u = (π − atan2(y, x)) / 2π``,
    ``v = ½ + asin(z)/π`` (checked against Cycles' Environment Texture). [...] each"""
    u = (math.pi - np.arctan2(d[..., 1], d[..., 0])) / (2.0 * math.pi)
    v = 0.5 + np.arcsin(np.clip(d[..., 2], -1.0, 1.0)) / math.pi
    return u, v


@functools.lru_cache(maxsize=2)
def latlong_directions(height: int = ENV_HEIGHT) -> tuple[np.ndarray, np.ndarray]:
    """Texel-centre directions [H, 2H, 3] and solid angles [H, 2H] of a lat-long map, row 0 = top."""
    H, W = int(height), 2 * int(height)
    v = 1.0 - (np.arange(H) + 0.5) / H
    u = (np.arange(W) + 0.5) / W
    el, phi = np.meshgrid((v - 0.5) * math.pi, math.pi - 2.0 * math.pi * u, indexing="ij")
    d = np.stack([np.cos(el) * np.cos(phi), np.cos(el) * np.sin(phi), np.sin(el)], -1)
    top = math.pi / 2 - np.arange(H) * math.pi / H
    band = np.sin(top) - np.sin(top - math.pi / H)
    return d, np.repeat((band * 2.0 * math.pi / W)[:, None], W, axis=1)


def sh_basis(d: np.ndarray) -> np.ndarray:
    """Real SH bands 0–2 (the engine's order). [..., 9]"""
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    return np.stack([np.full_like(x, 0.28209479177387814), 0.4886025119029199 * y, 0.4886025119029199 * z,
                     0.4886025119029199 * x, 1.0925484305920792 * x * y, 1.0925484305920792 * y * z,
                     0.31539156525252005 * (3.0 * z * z - 1.0), 1.0925484305920792 * x * z,
                     0.5462742152960396 * (x * x - y * y)], -1)


@functools.lru_cache(maxsize=2)
def _irradiance_operator(height: int) -> np.ndarray:
    d, sa = latlong_directions(height)
    Y = sh_basis(d.reshape(-1, 3))
    band = np.array([_BAND_KERNEL[0]] + [_BAND_KERNEL[1]] * 3 + [_BAND_KERNEL[2]] * 5) / math.pi
    return (band[:, None] * (Y * sa.reshape(-1, 1)).T).astype(np.float32)


@functools.lru_cache(maxsize=2)
def _prefilter_operators(height: int, levels: int = LEVELS) -> np.ndarray:
    d, sa = latlong_directions(height)
    d, sa = d.reshape(-1, 3), sa.reshape(-1)
    cos_rl = d @ d.T
    n_dot_h = np.sqrt(np.clip((1.0 + cos_rl) / 2.0, 0.0, 1.0))
    ops = [np.eye(d.shape[0])]
    for k in range(1, levels):
        w = ggx_distribution(n_dot_h, (k / (levels - 1)) ** 2) * np.maximum(cos_rl, 0.0) * sa[None]
        ops.append(w / np.maximum(w.sum(-1, keepdims=True), 1e-30))
    return np.stack(ops).astype(np.float32)


def sample_latlong(image: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a lat-long image [H, W, C] (row 0 = top) at unit directions [N, 3],
    longitude wrapping, latitude clamped. [N, C]"""
    H, W = image.shape[:2]
    u, v = direction_to_latlong(d)
    fx = u * W - 0.5
    fy = np.clip((1.0 - v) * H - 0.5, 0.0, H - 1.0)
    x0 = np.floor(fx).astype(np.int64)
    y0 = np.floor(fy).astype(np.int64)
    tx, ty = (fx - x0)[:, None], (fy - y0)[:, None]
    x0w, x1w = x0 % W, (x0 + 1) % W
    y1 = np.minimum(y0 + 1, H - 1)
    top = image[y0, x0w] * (1 - tx) + image[y0, x1w] * tx
    bot = image[y1, x0w] * (1 - tx) + image[y1, x1w] * tx
    return top * (1 - ty) + bot * ty


@dataclass
class Environment:
    """Distant light in the Blender world frame: SH irradiance and prefiltered specular.

    Attributes:
        sh: SH coefficients (bands 0–2) of ``I_irr``. [9, 3]
        prefiltered: the radiance map prefiltered per roughness level. [LEVELS, H, 2H, 3]
        radiance: the lat-long radiance map it came from, linear RGB, row 0 = zenith. [H, 2H, 3]
    """

    sh: np.ndarray
    prefiltered: np.ndarray
    radiance: np.ndarray

    @classmethod
    def from_radiance(cls, radiance: np.ndarray) -> "Environment":
        """From a ``H × 2H`` lat-long radiance map (world frame, linear RGB) [H, 2H, 3]."""
        L = np.asarray(radiance, np.float32)
        H = L.shape[0]
        flat = L.reshape(-1, 3)
        pre = (_prefilter_operators(H) @ flat).reshape(LEVELS, H, 2 * H, 3)
        return cls(_irradiance_operator(H) @ flat, pre, L)

    @classmethod
    def uniform(cls, rgb) -> "Environment":
        """A uniform world of radiance ``rgb`` (linear): ``I_irr = I_env = rgb`` exactly."""
        c = np.asarray(rgb, np.float32).reshape(3)
        sh = np.zeros((9, 3), np.float32)
        sh[0] = c / 0.28209479177387814
        L = np.broadcast_to(c, (ENV_HEIGHT, 2 * ENV_HEIGHT, 3)).copy()
        return cls(sh, np.broadcast_to(c, (LEVELS, ENV_HEIGHT, 2 * ENV_HEIGHT, 3)).copy(), L)

    def irradiance(self, normals: np.ndarray) -> np.ndarray:
        """``I_irr(N)`` at unit world normals. [N, 3]"""
        return sh_basis(normals).astype(np.float32) @ self.sh

    def specular(self, directions: np.ndarray, roughness: np.ndarray) -> np.ndarray:
        """Prefiltered radiance, trilinear in (direction, roughness level). [N, 3]"""
        pre = self.prefiltered
        L = pre.shape[0]
        t = np.clip(roughness, 0.0, 1.0) * (L - 1)
        k0 = np.minimum(np.floor(t).astype(np.int64), L - 2)
        w = (t - k0)[:, None]
        out = np.empty((len(directions), 3), np.float32)
        for k in np.unique(k0):
            sel = k0 == k
            a = sample_latlong(pre[k], directions[sel])
            b = sample_latlong(pre[k + 1], directions[sel])
            out[sel] = a * (1 - w[sel]) + b * w[sel]
        return out


# ---------------------------------------------------------------------- lamps
@dataclass
class Lamp:
    """One Blender light, reduced to a point or a direction.

    Attributes:
        kind: "SUN", "POINT", "SPOT" or "AREA".
        color: light colour × strength/power (linear RGB; W/m² for a sun, W otherwise). [3]
        position: world position, m (unused for a sun). [3]
        axis: unit direction the light shines along (its −Z axis), world. [3]
        radius: sun: angular radius (rad); others: radius, m (area: half its size).
        spot_cos: cos of half the spot cone (spot lights).
        spot_smooth: ``(1 − spot_cos) · blend`` (spot lights).
    """

    kind: str
    color: np.ndarray
    position: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    axis: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, -1.0], np.float32))
    radius: float = 0.0
    spot_cos: float = -1.0
    spot_smooth: float = 0.0


def lamp_irradiance(lamp: Lamp, positions: np.ndarray, normals: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A lamp's light at the splats (module doc table).

    Args:
        lamp: the lamp.
        positions: splat centres, world, m. [N, 3]; normals: unit world normals. [N, 3]
    Returns:
        E: irradiance over π including ``max(N·L, 0)``, linear RGB. [N, 3];
        L: unit directions towards the lamp. [N, 3];
        r_over_d: the lamp's apparent radius (for the specular widening). [N]
    """
    col = np.asarray(lamp.color, np.float32)
    if lamp.kind == "SUN":
        L = np.broadcast_to(-lamp.axis.astype(np.float32), positions.shape)
        cos = np.maximum((normals * L).sum(-1), 0.0)
        return cos[:, None] * col / math.pi, L, np.full(len(positions), math.tan(lamp.radius), np.float32)
    to = lamp.position.astype(np.float32) - positions
    d2 = np.maximum((to * to).sum(-1), 1e-8)
    d = np.sqrt(d2)
    L = to / d[:, None]
    cos = np.maximum((normals * L).sum(-1), 0.0)
    cos_axis = (-L * lamp.axis.astype(np.float32)).sum(-1)  # emission angle from the lamp's axis
    if lamp.kind == "AREA":
        fall = np.maximum(cos_axis, 0.0) / (math.pi ** 2 * d2)
    else:
        fall = 1.0 / (4.0 * math.pi ** 2 * d2)
        if lamp.kind == "SPOT":
            t = (cos_axis - lamp.spot_cos) / max(lamp.spot_smooth, 1e-6)
            t = np.clip(t, 0.0, 1.0)
            fall = fall * (t * t * (3.0 - 2.0 * t) if lamp.spot_smooth > 0 else (cos_axis > lamp.spot_cos))
    return (cos * fall)[:, None] * col, L, lamp.radius / d


@dataclass
class Lighting:
    """Everything that lights the splats: the world and the lamps."""

    environment: Environment
    lamps: list[Lamp] = field(default_factory=list)


# ---------------------------------------------------------------------- shading
def shade(albedo: np.ndarray, roughness: np.ndarray, f0: np.ndarray, normals: np.ndarray, positions: np.ndarray,
          view: np.ndarray, lighting: Lighting) -> np.ndarray:
    """The splats' colours under ``lighting`` (module doc).

    Args:
        albedo: encoded (sRGB) albedo in [0, 1]. [N, 3]
        roughness: o. [N]; f0: [N]
        normals: unit normals, world. [N, 3]
        positions: centres, world, m. [N, 3]
        view: unit directions towards the camera, world. [N, 3]
        lighting: world and lamps.
    Returns:
        encoded (sRGB) colours in [0, 1]. [N, 3] float32
    """
    a = srgb_to_linear(np.clip(albedo, 0.0, 1.0)).astype(np.float32)
    rough = np.clip(roughness, 0.0, 1.0).astype(np.float32)
    f0 = np.asarray(f0, np.float32)
    n_dot_v = np.clip((normals * view).sum(-1), 1e-4, 1.0)
    refl = 2.0 * n_dot_v[:, None] * normals - view
    env = lighting.environment
    k_s = fresnel_schlick_roughness(f0, n_dot_v, rough)
    A, B = lookup_lut(brdf_lut(), n_dot_v, rough)
    out = a * env.irradiance(normals) + env.specular(refl, rough) * (k_s * A + B)[:, None]
    alpha = rough * rough
    for lamp in lighting.lamps:
        E, L, r_over_d = lamp_irradiance(lamp, positions, normals)
        h = L + view
        h /= np.maximum(np.linalg.norm(h, axis=-1, keepdims=True), 1e-12)
        n_dot_l = np.maximum((normals * L).sum(-1), 0.0)
        n_dot_h = np.clip((normals * h).sum(-1), 0.0, 1.0)
        v_dot_h = np.clip((view * h).sum(-1), 0.0, 1.0)
        wide = np.minimum(1.0, alpha + 0.5 * r_over_d)
        D = ggx_distribution(n_dot_h, wide) * (alpha / np.maximum(wide, 1e-6)) ** 2
        F = f0 + (1.0 - f0) * (1.0 - v_dot_h) ** 5
        G = smith_g_schlick(n_dot_v, n_dot_l, alpha)
        spec = np.where(n_dot_l > 0, math.pi * D * F * G / np.maximum(4.0 * n_dot_l * n_dot_v, 1e-6), 0.0)
        out += E * (a + spec[:, None].astype(np.float32))
    return linear_to_srgb(np.clip(out, 0.0, 1.0)).astype(np.float32)
