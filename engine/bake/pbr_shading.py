"""How the bake shades a relightable (``appearance = "pbr"``) avatar's Gaussians (HRAvatar §3.3
shading, :mod:`engine.model.pbr`), shared by the image objective (:mod:`engine.bake.baker`) and
the full-head stage's pseudo views (:mod:`engine.bake.pseudo_views`)."""

from __future__ import annotations

from dataclasses import replace

from torch import Tensor


def shade_baked(shading, g, local_rot: Tensor, pbr_values: dict[str, Tensor], cam) -> Tensor:
    """A relightable avatar's baked Gaussians shaded under its learnt light, for the bake's image
    objective: the albedo (``g.colors``) learns from the image, the shading normals do not — they
    follow the rotation and scale maps, which learn from the splats' footprint as in a static bake
    (the image gradient through the normals, with no normal prior in the bake, drove the CPU main
    job's rotation maps to ±5e18 rad and a scale axis to 0 within 300 steps).

    Args:
        shading: the avatar's :class:`engine.model.pbr.PBRAppearance`.
        g: the placed Gaussians (:class:`engine.model.gaussians.WorldGaussians`).
        local_rot: their rotations in the face frame. [N, 3, 3]
        pbr_values: per-Gaussian ``roughness`` and ``f0`` [N].
        cam: the view.
    Returns:
        encoded (sRGB) shaded colours. [N, 3]
    """
    still = replace(g, rotmats=g.rotmats.detach(), scales=g.scales.detach())
    return shading.shade(still, local_rot.detach(), pbr_values["roughness"], pbr_values["f0"], cam).colors
