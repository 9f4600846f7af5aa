"""Per-texel re-splat density in the engine (issue 14): texel_bindings and
gaussians_from_maps(texels=...) on the demo head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import MapsError
from engine.geometry.uv import island_mask
from engine.maps import TEXEL_SIGMA, gaussians_from_maps, texel_bindings


@pytest.fixture(scope="module")
def head():
    from engine.model.demo_head import build_demo_head

    return build_demo_head()


def test_one_gaussian_per_covered_texel(head):
    res = 64
    verts = torch.as_tensor(head.v_template)
    faces = torch.as_tensor(head.faces_all, dtype=torch.long)
    covered = int(island_mask(head.uvs, head.faces_uv_all, res).sum())
    t1 = texel_bindings(verts, faces, head.uvs, head.faces_uv_all, res)
    assert len(t1) == covered
    t2 = texel_bindings(verts, faces, head.uvs, head.faces_uv_all, res, stride=2)
    assert abs(len(t2) - covered / 4) < 0.1 * covered / 4  # every 2nd texel in u and v
    with pytest.raises(MapsError, match="stride"):
        texel_bindings(verts, faces, head.uvs, head.faces_uv_all, res, stride=0)

    # A map of distinct colours per texel: each Gaussian carries exactly its texel's value.
    rng = np.random.default_rng(0)
    maps = {"color": torch.as_tensor(rng.uniform(0, 1, (res, res, 3)), dtype=torch.float32),
            "opacity": torch.full((res, res, 1), 0.9), "scale": torch.full((res, res, 3), 5.0),
            "rotation": torch.zeros(res, res, 3), "offset": torch.zeros(res, res, 1)}
    g = gaussians_from_maps(maps, verts, faces, texels=t1)
    row = ((1 - t1.uv[:, 1]) * res).floor().long()
    col = (t1.uv[:, 0] * res).floor().long()
    torch.testing.assert_close(g.colors, maps["color"][row, col], rtol=0, atol=1e-6)
    # Sized to the texel, not by the scale map (5 face scales would be huge): the in-plane σ is
    # TEXEL_SIGMA texel steps; a texel step on the demo head is ~0.2-2 mm at 64².
    sigma = g.scales[:, :2].max(-1).values
    assert float(sigma.max()) < 0.01 and float(sigma.median()) > 1e-4
    # the Gaussian lies on the surface: centre = the texel's surface point (offset map 0)
    from engine.geometry.mesh_ops import barycentric_points
    torch.testing.assert_close(g.means, barycentric_points(verts, faces, t1.face_idx, t1.bary), atol=1e-6, rtol=0)
    assert TEXEL_SIGMA == pytest.approx(0.6)


def test_gaussians_from_maps_needs_bindings_or_texels(head):
    with pytest.raises(MapsError, match="bindings"):
        gaussians_from_maps({m: torch.zeros(4, 4, 3) for m in ("color", "opacity", "scale", "rotation", "offset")},
                            torch.as_tensor(head.v_template), torch.as_tensor(head.faces_all, dtype=torch.long))
