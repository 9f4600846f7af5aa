"""Setup Composite (any Blender version): the FATE Splats scene Z-combined into a Cycles scene
through the Depth pass — a Cycles cube in front of the head occludes it, the head shows elsewhere.
Tiny render (96×72, Cycles 8 samples)."""

from __future__ import annotations

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed")

from addon.errors import SplatError  # noqa: E402
from addon.splats import composite  # noqa: E402

from test_render_engine import _render_exr, _solid  # noqa: E402


def _emissive(obj, colour) -> None:
    mat = obj.data.materials[0]
    nodes = mat.node_tree.nodes
    nodes.clear()
    emit = nodes.new("ShaderNodeEmission")
    emit.inputs["Color"].default_value = (*colour, 1.0)
    mat.node_tree.links.new(emit.outputs[0], nodes.new("ShaderNodeOutputMaterial").inputs["Surface"])


def test_setup_composite_z_combines_splats_into_cycles(splat_scene, splat_engine, tmp_path):
    from addon.ui import properties

    properties.register()
    try:
        scene = bpy.context.scene
        scene.render.engine = "FATE_SPLAT"
        scene.render.film_transparent = True
        splats_alone = _render_exr(tmp_path / "splats.exr")
        scene.render.film_transparent = False
        scene.render.engine = "CYCLES"
        scene.cycles.samples = 8
        scene.cycles.device = "CPU"
        with pytest.raises(SplatError, match="no FATE head"):
            splat_scene.head["fate_avatar"] = False
            composite.setup_composite(scene)
        splat_scene.head["fate_avatar"] = True
        cube = _solid("Cube", (0.04, 0.04, 0.04), (0.03, -0.3, 0.02), (1.0, 0.0, 0.0))
        _emissive(cube, (1.0, 0.0, 0.0))
        result = composite.setup_composite(scene)
        assert result.splat_scene.render.engine == "FATE_SPLAT"
        assert result.splat_scene.fate.splat_draw_meshes is False
        assert result.hidden_heads == [splat_scene.head] and not splat_scene.head.visible_camera
        assert composite.setup_composite(scene).splat_scene == result.splat_scene  # idempotent
        img = _render_exr(tmp_path / "composite.exr")
    finally:
        properties.unregister()
    # The cube (columns 58..70, rows 30..42 well inside it) is in front of the head: red (Cycles
    # at 8 samples: ±3 % from the pixel filter's noise).
    np.testing.assert_allclose(img[30:43, 58:71, :3].reshape(-1, 3), np.broadcast_to([1.0, 0.0, 0.0], (169, 3)),
                               atol=0.03)
    # Where the head is opaque and the cube is not: the FATE Splats pixels (Z Combine keeps them).
    opaque = splats_alone[..., 3] > 0.995
    opaque[22:51, 46:82] = False
    assert opaque.sum() > 500
    np.testing.assert_allclose(img[opaque][:, :3], splats_alone[opaque][:, :3], atol=0.02)
    # Elsewhere Cycles' world (0.05, 0.1, 0.2).
    empty = splats_alone[..., 3] < 1e-4
    empty[22:51, 46:82] = False
    np.testing.assert_allclose(img[empty][:, :3].mean(0), [0.05, 0.1, 0.2], atol=0.01)
