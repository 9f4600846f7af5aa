"""The demo subject's expression-dependent Cycles material (issue 19): its layers are mixed over
the albedo with factors driven by the head's shape keys, the jaw's through its pose corrective."""

from __future__ import annotations

import math

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed")
pytest.importorskip("torch", reason="torch is not installed (the engine writes the subject)")

from addon.demo.appearance import add_expression_layers  # noqa: E402
from addon.demo.cycles import _albedo_material  # noqa: E402
from addon.rig.importer import import_avatar  # noqa: E402


@pytest.fixture
def subject_head(tmp_path):
    from engine.demo.config import DemoConfig
    from engine.demo.subject import write_subject

    write_subject(tmp_path, DemoConfig(frames=5, resolution=32, texture_resolution=64))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    res = import_avatar(tmp_path, bpy.context.scene, bpy.context, name="Subject", with_maps=False, camera="TRACKED")
    mat = _albedo_material("Subject_albedo", tmp_path / "albedo.png")
    res.head.data.materials.clear()
    res.head.data.materials.append(mat)
    layers = add_expression_layers(mat, tmp_path, res.head)
    return res, mat, layers


def _driven_value(mat, shape_key: str) -> float:
    node = next(n for n in mat.node_tree.nodes if n.type == "VALUE" and n.label.startswith(shape_key))
    return float(node.outputs[0].default_value)


def test_layers_follow_the_shape_keys(subject_head):
    from engine.demo.expression_appearance import LAYERS

    res, mat, layers = subject_head
    assert layers == [layer.name for layer in LAYERS]
    # the chain ends in the BSDF: albedo → 6 mixes → Diffuse BSDF
    bsdf = next(n for n in mat.node_tree.nodes if n.type == "BSDF_DIFFUSE")
    assert bsdf.inputs["Color"].links[0].from_node.type == "MIX"
    scene = bpy.context.scene
    key = res.head.data.shape_keys
    # the tracked animation drives the keys; take the NLA out so the test sets them itself
    key.animation_data.nla_tracks[0].mute = True
    res.rig.animation_data.nla_tracks[0].mute = True
    key.key_blocks["brow_raise"].value = 0.8
    key.key_blocks["blink_left"].value = 0.3
    jaw = res.rig.pose.bones["jaw"]
    jaw.rotation_quaternion = (math.cos(0.1), math.sin(0.1), 0.0, 0.0)  # 0.2 rad about +x: mouth opens
    scene.frame_set(scene.frame_current)
    assert _driven_value(mat, "brow_raise") == pytest.approx(0.8, abs=1e-6)
    # Pose_jaw_21 = (R − I)[2, 1] = sin θ (the corrective's own driver), then the material's
    np.testing.assert_allclose(key.key_blocks["Pose_jaw_21"].value, math.sin(0.2), atol=1e-5)
    assert _driven_value(mat, "Pose_jaw_21") == pytest.approx(math.sin(0.2), abs=1e-5)
    assert _driven_value(mat, "blink_left") == pytest.approx(0.3, abs=1e-6)
