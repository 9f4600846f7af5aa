"""Import Avatar on a synthetic avatar folder: mesh, UVs, shape keys, rig, keyframes, camera,
images, material and bindings are what the files say."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed")

from addon.errors import AvatarError  # noqa: E402
from addon.files import avatar as avatar_files  # noqa: E402
from addon.rig import flame_math  # noqa: E402
from addon.rig.bindings import avatar_map_images, find_head_object, get_avatar_dir, get_bindings  # noqa: E402
from addon.rig.importer import import_avatar  # noqa: E402
from synthetic_avatar import JOINT_NAMES, MAP_LAYOUT, write_avatar  # noqa: E402

N_EXPR, N_FRAMES = 20, 5


@pytest.fixture(scope="module")
def avatar_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("avatar") / "subject"
    arrays = write_avatar(folder, n_expr=N_EXPR, n_frames=N_FRAMES)
    return folder, arrays


@pytest.fixture(scope="module")
def imported(avatar_dir):
    folder, arrays = avatar_dir
    bpy.ops.wm.read_factory_settings(use_empty=True)
    result = import_avatar(folder, bpy.context.scene, camera="TRACKED")
    return result, arrays


def _fcurve_keys(id_data, data_path, index=0):
    """(frames, values) of an F-curve, found through the channels (4.4+ or legacy) of the active
    action or, for the tracked animation, the "FATE Tracking" NLA strip's action."""
    ad = id_data.animation_data
    action = ad.action or ad.nla_tracks["FATE Tracking"].strips[0].action
    if hasattr(action, "layers"):
        fcurves = [fc for layer in action.layers for strip in layer.strips
                   for bag in strip.channelbags for fc in bag.fcurves]
    else:  # pragma: no cover - Blender < 4.4
        fcurves = list(action.fcurves)
    fc = next(fc for fc in fcurves if fc.data_path == data_path and fc.array_index == index)
    co = np.empty(len(fc.keyframe_points) * 2, np.float32)
    fc.keyframe_points.foreach_get("co", co)
    return co[0::2], co[1::2]


def test_mesh_and_uvs(imported):
    result, arrays = imported
    head = arrays["head"]
    mesh = result.head.data
    assert result.head.name == "subject" and result.head["fate_role"] == "head"
    assert len(mesh.vertices) == len(head["v_template"])
    assert len(mesh.polygons) == len(head["faces"])  # mesh + mouth faces, order kept
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    np.testing.assert_array_equal(co.reshape(-1, 3), head["v_template"])  # FLAME coordinates, exact
    loops = np.empty(len(mesh.loops), np.int32)
    mesh.loops.foreach_get("vertex_index", loops)
    np.testing.assert_array_equal(loops.reshape(-1, 3), head["faces"])
    uv = np.empty(len(mesh.loops) * 2, np.float32)
    mesh.uv_layers["UVMap"].data.foreach_get("uv", uv)
    np.testing.assert_array_equal(uv.reshape(-1, 3, 2), head["uvs"][head["faces_uv"]])
    mouth = np.empty(len(mesh.polygons), bool)
    mesh.attributes["fate_mouth"].data.foreach_get("value", mouth)
    assert mouth.sum() == int(head["num_mouth_faces"]) and mouth[-int(head["num_mouth_faces"]):].all()
    # The rig carries R_x(+90°); the head is its child with an identity local transform.
    np.testing.assert_allclose(np.array(result.head.matrix_world), flame_math.FLAME_TO_BLENDER_WORLD, atol=1e-6)
    assert result.head.parent == result.rig


def test_shape_keys(imported):
    result, arrays = imported
    head = arrays["head"]
    keys = result.head.data.shape_keys.key_blocks
    names = [kb.name for kb in keys]
    expected = (["Basis"] + [f"Exp{k:03d}" for k in range(N_EXPR)]
                + [f"Pose_{j}_{r}{c}" for j in JOINT_NAMES[1:] for r in range(3) for c in range(3)])
    assert names == expected
    v = head["v_template"]
    co = np.empty(v.size, np.float32)
    keys["Exp007"].data.foreach_get("co", co)
    # stored as v + E_k in float32; the difference is E_k to float32 rounding of ~0.1 m values
    np.testing.assert_allclose(co.reshape(-1, 3) - v, head["exprdirs"][:, :, 7], atol=2e-8)
    keys["Pose_jaw_12"].data.foreach_get("co", co)
    row = (2 - 1) * 9 + 1 * 3 + 2  # jaw is joint 2 → rows 9..17, entry (1, 2)
    np.testing.assert_allclose(co.reshape(-1, 3) - v, head["posedirs"][row].reshape(-1, 3), atol=2e-8)
    assert keys["Exp000"].slider_min == -3.0 and keys["Exp000"].slider_max == 3.0
    assert keys["Pose_neck_00"].slider_min == -2.0 and keys["Pose_neck_00"].slider_max == 2.0
    drivers = {fc.data_path for fc in result.head.data.shape_keys.animation_data.drivers}
    assert all(f'key_blocks["{n}"].value' in drivers for n in names if n.startswith("Pose_"))
    for fc in result.head.data.shape_keys.animation_data.drivers:
        assert fc.driver.is_simple_expression and fc.driver.is_valid
        assert len(fc.keyframe_points) == 0 and len(fc.modifiers) == 0


def test_armature_and_weights(imported):
    result, arrays = imported
    head = arrays["head"]
    arm = result.rig.data
    J0 = head["J_regressor"].astype(np.float64) @ head["v_template"].astype(np.float64)
    for j, name in enumerate(JOINT_NAMES):
        bone, mch = arm.bones[name], arm.bones[f"MCH-{name}"]
        np.testing.assert_allclose(bone.head_local, J0[j], atol=1e-6)
        np.testing.assert_allclose(np.array(bone.matrix_local)[:3, :3], np.eye(3), atol=1e-6)
        assert bone.use_deform and not mch.use_deform
        assert bone.parent == mch
        parent = head["parents"][j]
        assert (mch.parent.name if mch.parent else None) == (JOINT_NAMES[parent] if parent >= 0 else None)
        assert result.rig.pose.bones[name].rotation_mode == "QUATERNION"
    mod = result.head.modifiers["Armature"]
    assert mod.object == result.rig and not mod.use_deform_preserve_volume and mod.use_vertex_groups
    weights = np.zeros_like(head["lbs_weights"])
    groups = {vg.index: vg.name for vg in result.head.vertex_groups}
    for v in result.head.data.vertices:
        for g in v.groups:
            weights[v.index, JOINT_NAMES.index(groups[g.group])] = g.weight
    np.testing.assert_allclose(weights, head["lbs_weights"], atol=1e-7)


def test_tracked_keyframes_and_camera(imported):
    result, arrays = imported
    tr = arrays["tracking"]
    scene = bpy.context.scene
    assert (scene.frame_start, scene.frame_end) == (1, N_FRAMES) and result.num_frames == N_FRAMES
    key = result.head.data.shape_keys
    frames, values = _fcurve_keys(key, 'key_blocks["Exp004"].value')
    np.testing.assert_array_equal(frames, np.arange(1, N_FRAMES + 1))
    np.testing.assert_allclose(values, tr["expr"][:, 4], atol=1e-7)
    q = flame_math.axis_angle_to_quaternion(tr["pose"][:, 6:9])  # jaw
    quat = np.stack([_fcurve_keys(result.rig, 'pose.bones["jaw"].rotation_quaternion', i)[1] for i in range(4)], 1)
    sign = np.sign((quat * q).sum(1, keepdims=True))
    np.testing.assert_allclose(quat, q * sign, atol=1e-6)
    _, tx = _fcurve_keys(result.rig, 'pose.bones["root"].location', 0)
    np.testing.assert_allclose(tx, tr["translation"][:, 0], atol=1e-7)

    cam = result.camera
    assert scene.camera == cam and cam.parent == result.rig
    assert (scene.render.resolution_x, scene.render.resolution_y) == (256, 240)
    # Projecting FLAME points through Blender's camera gives the OpenCV pixels of the dataset.
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    pts = arrays["head"]["v_template"][::17].astype(np.float64)
    for t in (0, 3):
        scene.frame_set(t + 1)
        K, w2c = tr["K"][t].astype(np.float64), tr["viewmat"][t].astype(np.float64)
        cam_pts = pts @ w2c[:3, :3].T + w2c[:3, 3]
        uv = cam_pts[:, :2] / cam_pts[:, 2:] @ K[:2, :2].T + K[:2, 2]
        to_world = np.array(result.rig.matrix_world)
        for p, (u, v) in zip(pts, uv):
            wp = to_world @ np.append(p, 1.0)
            ndc = world_to_camera_view(scene, cam, Vector(wp[:3]))
            # world_to_camera_view: (0, 0) = bottom-left of the frame
            assert abs(ndc.x * 256 - u) < 1e-3 and abs((1 - ndc.y) * 240 - v) < 1e-3, (t, u, v, ndc)


def test_maps_material_bindings(imported, avatar_dir):
    result, arrays = imported
    folder, _ = avatar_dir
    images = avatar_map_images(result.head)
    assert set(images) == set(MAP_LAYOUT)
    for name, img in images.items():
        assert bpy.path.abspath(img.filepath) == str((folder / "maps" / f"{name}.exr").resolve())
        assert img.packed_file is None and img.is_float and not img.use_half_precision
        assert img.colorspace_settings.name == MAP_LAYOUT[name][1]
    # A data map's pixels are the file's values (1-channel "Y" maps load as grey).
    w, h = images["opacity"].size
    px = np.empty(w * h * 4, np.float32)
    images["opacity"].pixels.foreach_get(px)
    np.testing.assert_array_equal(px.reshape(h, w, 4)[::-1, :, 0], arrays["maps"]["opacity"][:, :, 0])
    mat = result.material
    assert result.head.data.materials[0] == mat
    tex = mat.node_tree.nodes.active
    assert tex.type == "TEX_IMAGE" and tex.image == images["color"]
    base = next(n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED").inputs["Base Color"]
    assert base.links[0].from_node == tex

    face_idx, bary, uv = get_bindings(result.head)
    b = arrays["bindings"]
    np.testing.assert_array_equal(face_idx, b["face_idx"])
    np.testing.assert_array_equal(bary, b["bary"])
    np.testing.assert_array_equal(uv, b["uv"])
    assert face_idx.dtype == np.int32 and bary.dtype == np.float32 and uv.shape == (len(face_idx), 2)
    assert result.bindings.hide_render and find_head_object(result.bindings) == result.head
    assert find_head_object(result.rig) == result.head and find_head_object(result.camera) == result.head
    dg = bpy.context.evaluated_depsgraph_get()
    np.testing.assert_array_equal(get_bindings(result.head.evaluated_get(dg))[0], b["face_idx"])
    assert get_avatar_dir(result.head) == folder.resolve()


def test_import_without_maps_and_tracking(tmp_path):
    """Missing maps (and tracking) import anyway and say so; a folder without head.npz is an error
    that names the file."""
    folder = tmp_path / "nomaps"
    write_avatar(folder, n_expr=4, n_frames=2, with_maps=False)
    (folder / "tracking.npz").unlink()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    result = import_avatar(folder, bpy.context.scene)
    assert result.images == {} and result.material is None and result.camera is None
    assert any("maps" in w for w in result.warnings) and any("tracking" in w for w in result.warnings)
    assert len(result.head.data.shape_keys.key_blocks) == 1 + 4 + 36

    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "blender" / "head.npz").unlink()
    with pytest.raises(AvatarError, match="head.npz"):
        import_avatar(broken, bpy.context.scene)


def test_bad_head_file_message(tmp_path):
    """Shape mismatches name the file, the key and expected vs found."""
    folder = tmp_path / "bad"
    write_avatar(folder, n_expr=3, n_frames=2, with_maps=False)
    data = dict(np.load(folder / "blender" / "head.npz"))
    data["lbs_weights"] = data["lbs_weights"][:, :4]
    np.savez(folder / "blender" / "head.npz", **data)
    with pytest.raises(AvatarError, match=r"lbs_weights.*shape \[262, 5\], found \[262, 4\]"):
        avatar_files.read_head(folder / "blender" / "head.npz")
    (folder / "maps").mkdir()
    (folder / "maps" / "maps.json").write_text(json.dumps({"maps": {"color": {"file": "nope.exr"}}}))
    with pytest.raises(avatar_files.MapsError, match="nope.exr"):
        avatar_files.read_maps_manifest(folder)


def test_import_records_the_perceptual_term_and_the_panel_warns(tmp_path):
    """Issue 12: an avatar trained without VGG16 weights says so on the head and in the sidebar."""
    folder = tmp_path / "dssim"
    write_avatar(folder, n_expr=4, n_frames=2, with_maps=False)
    meta = json.loads((folder / "avatar.json").read_text())
    meta["metrics"] = {"perceptual": "dssim x0.2 (no VGG weights; FATE: vgg x0.1)"}
    (folder / "avatar.json").write_text(json.dumps(meta))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    head = import_avatar(folder, bpy.context.scene).head
    assert head["fate_trained_with"].startswith("dssim x0.2")
    from addon_package import submodule

    _draw_training_note = submodule("panels.sidebar")._draw_training_note

    class Layout:  # records the labels the panel would draw
        def __init__(self):
            self.labels = []

        def column(self, align=False):
            return self

        def label(self, text="", icon="NONE"):
            self.labels.append(text)

    lay = Layout()
    _draw_training_note(lay, head)
    assert any("D-SSIM" in t for t in lay.labels)
    head["fate_trained_with"] = "vgg x0.1"
    lay = Layout()
    _draw_training_note(lay, head)
    assert lay.labels == []
    assert avatar_files.read_perceptual_term(tmp_path / "missing") == ""
