"""An avatar an artist can direct (issue 14), in real Blender on a small synthetic avatar:

1. the tracked head motion is on the head (root bone) with a still camera, which renders exactly
   what the tracked camera rendered;
2. the tracking is an NLA layer: an artist's key adds to it (or replaces it) on every frame;
3. expression keys carry the head's names, presets round-trip, neutral resets, the eyes follow a
   look-at target;
6. Import Avatar changes the scene only as asked, and the still camera keeps the whole head in
   frame at any output aspect;
8. an avatar that is not baked renders its trained Gaussians, or says "Bake first".
"""

from __future__ import annotations

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed")

from addon.errors import AvatarError  # noqa: E402
from addon.rig import flame_math, presets  # noqa: E402
from addon.rig.importer import import_avatar  # noqa: E402
from addon.splats import render_engine  # noqa: E402
from addon.splats import runtime as sr  # noqa: E402
from renders import psnr, render_exr  # noqa: E402
from synthetic_avatar import write_avatar  # noqa: E402

N_EXPR, N_FRAMES = 6, 5


@pytest.fixture(scope="module")
def avatar_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("artist") / "subject"
    arrays = write_avatar(folder, n_expr=N_EXPR, n_frames=N_FRAMES, n_gaussians=1500, plausible=True)
    return folder, arrays


@pytest.fixture
def splats():
    """The FATE Splats engine registered, caches clean (unregistered afterwards)."""
    render_engine.register()
    sr.clear_caches()
    yield
    render_engine.unregister()
    sr.clear_caches()


def _import(folder, **options):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return import_avatar(folder, bpy.context.scene, **options)


def _render_setup(scale: int = 50) -> None:
    rd = bpy.context.scene.render
    rd.engine = "FATE_SPLAT"
    rd.film_transparent = True
    rd.resolution_percentage = scale


def _tracking_fcurve(id_data, data_path, index=0):
    action = id_data.animation_data.nla_tracks["FATE Tracking"].strips[0].action
    return next(fc for layer in action.layers for strip in layer.strips for bag in strip.channelbags
                for fc in bag.fcurves if fc.data_path == data_path and fc.array_index == index)


# ------------------------------------------------------------------------------ 1. head motion
def test_still_camera_renders_what_the_tracked_camera_rendered(avatar_dir, splats, tmp_path):
    folder, _ = avatar_dir
    images, roots = {}, {}
    for mode in ("TRACKED", "STILL"):
        result = _import(folder, camera=mode)
        _render_setup()
        scene = bpy.context.scene
        assert scene.camera == result.camera
        moving = result.camera.animation_data is not None and result.camera.animation_data.action is not None
        assert moving == (mode == "TRACKED")
        for f in (1, 3, 5):
            scene.frame_set(f)
            images[mode, f] = render_exr(tmp_path / f"{mode}_{f}.exr")
            bone = result.rig.pose.bones["root"]
            roots[mode, f] = (np.array(result.rig.matrix_world) @ np.array(bone.matrix))[:3, :3]
    for f in (1, 3, 5):
        a, b = images["TRACKED", f], images["STILL", f]
        assert a[..., 3].mean() > 0.05  # the head is in view
        # Same splats seen from the same relative pose; the world positions differ, so their
        # float32 rounding does: observed PSNR >= 96 dB, max 3.8e-3 (one pixel where two splats'
        # depths tie and the sort flips), mean 2e-7 on 128×120 px.
        assert psnr(a, b) > 80.0, (f, psnr(a, b))
        assert np.abs(a - b).max() < 1e-2, (f, np.abs(a - b).max())
    # The frames differ (the head moves and talks), so equality above is not trivial.
    assert np.abs(images["STILL", 1] - images["STILL", 5]).max() > 0.3
    # With the still camera the head turns in the world by the camera's orbit as well.
    def turn(R1, R2):
        return np.degrees(np.arccos(np.clip((np.trace(R1.T @ R2) - 1) / 2, -1, 1)))
    assert abs(turn(roots["STILL", 1], roots["STILL", 5]) - turn(roots["TRACKED", 1], roots["TRACKED", 5])) > 2.0


def test_fixed_camera_tracking_keeps_flame_pose(tmp_path):
    """A tracker that writes the head motion as FLAME pose (constant viewmat): the still camera is
    that camera and the root bone keeps FLAME's own rotation and translation."""
    folder = tmp_path / "fixed"
    arrays = write_avatar(folder, n_expr=N_EXPR, n_frames=N_FRAMES, with_maps=False)
    data = dict(np.load(folder / "tracking.npz"))
    data["viewmat"] = np.repeat(data["viewmat"][:1], N_FRAMES, 0)
    np.savez(folder / "tracking.npz", **data)
    result = _import(folder)
    np.testing.assert_allclose(flame_math.blender_c2w_to_opencv_w2c(np.array(result.camera.matrix_local)),
                               data["viewmat"][0], atol=1e-6)
    q = flame_math.axis_angle_to_quaternion(arrays["tracking"]["pose"][:, :3])
    fc_w = _tracking_fcurve(result.rig, 'pose.bones["root"].rotation_quaternion', 0)
    fc_tx = _tracking_fcurve(result.rig, 'pose.bones["root"].location', 0)
    for t in range(N_FRAMES):
        assert fc_w.evaluate(t + 1) == pytest.approx(abs(q[t, 0]), abs=1e-6)
        assert fc_tx.evaluate(t + 1) == pytest.approx(arrays["tracking"]["translation"][t, 0], abs=1e-6)


# ------------------------------------------------------------------------------ 2. layers
def test_tracking_is_a_layer_the_artist_keys_over(avatar_dir, splats, tmp_path):
    folder, arrays = avatar_dir
    result = _import(folder)
    _render_setup()
    scene = bpy.context.scene
    key = result.head.data.shape_keys
    ad = key.animation_data
    assert ad.action is None and ad.nla_tracks["FATE Tracking"].strips[0].action is not None
    assert result.rig.animation_data.action is None
    name = result.head["fate_expressions"][2]
    kb = key.key_blocks[name]
    tracked = arrays["tracking"]["expr"][:, 2].astype(np.float64)
    scene.frame_set(2)
    before = render_exr(tmp_path / "before.exr")
    kb.value = float(tracked[1] + 1.5)  # what the artist sets on frame 2, then keys
    kb.keyframe_insert("value", frame=2)
    assert ad.action is not None  # the artist's own layer
    for f in (2, 4):  # one key: the offset applies on every frame, over the tracking
        scene.frame_set(f)
        assert kb.value == pytest.approx(tracked[f - 1] + 1.5, abs=1e-5)
    scene.frame_set(2)
    after = render_exr(tmp_path / "after.exr")
    assert np.abs(after - before).max() > 0.05  # the keyed expression changes the render
    fc = _tracking_fcurve(key, f'key_blocks["{name}"].value')  # the tracking itself is untouched
    np.testing.assert_allclose([fc.evaluate(f) for f in range(1, N_FRAMES + 1)], tracked, atol=1e-6)
    ad.action_blend_type = "REPLACE"  # the artist's channel replaces the tracked one
    scene.frame_set(4)
    assert kb.value == pytest.approx(1.5, abs=1e-5)
    ad.action_blend_type = "ADD"
    ad.nla_tracks["FATE Tracking"].mute = True  # the tracking muted: only the artist's layer
    scene.frame_set(3)
    assert kb.value == pytest.approx(1.5, abs=1e-5)


# ------------------------------------------------------------------------------ 3. expressions
def test_expression_keys_carry_the_heads_names(tmp_path):
    folder = tmp_path / "named"
    write_avatar(folder, n_expr=3, n_frames=2, with_maps=False)
    head_file = folder / "blender" / "head.npz"
    head = dict(np.load(head_file))
    head["expression_names"] = np.array(["jaw_open", "smile", "blink_left"])
    np.savez(head_file, **head)
    result = _import(folder)
    names = [kb.name for kb in result.head.data.shape_keys.key_blocks][:4]
    assert names == ["Basis", "jaw_open", "smile", "blink_left"]
    assert list(result.head["fate_expressions"]) == ["jaw_open", "smile", "blink_left"]
    fc = _tracking_fcurve(result.head.data.shape_keys, 'key_blocks["smile"].value')
    assert len(fc.keyframe_points) == 2
    head["expression_names"] = np.array(["jaw_open", "jaw_open", "x"])
    np.savez(head_file, **head)
    with pytest.raises(AvatarError, match="expression_names.*unique"):
        _import(folder)


def test_preset_round_trip_neutral_and_look_at(avatar_dir):
    folder, _ = avatar_dir
    result = _import(folder)
    scene, head, rig = bpy.context.scene, result.head, result.rig
    scene.frame_set(2)
    saved = presets.save_preset(head, "surprise")
    assert presets.preset_names(head) == ["surprise"]
    assert set(saved["bones"]) == {"neck", "jaw", "left_eye", "right_eye"}  # the root moves the head
    scene.frame_set(4)
    assert max(abs(head.data.shape_keys.key_blocks[k].value - v) for k, v in saved["expressions"].items()) > 0.1
    presets.apply_preset(head, "surprise")
    scene.frame_set(3)
    scene.frame_set(4)  # re-evaluated from the keys: the preset is what frame 4 shows
    now = presets.capture_preset(head)
    for k, v in saved["expressions"].items():
        assert now["expressions"][k] == pytest.approx(v, abs=1e-5)
    for j, q in saved["bones"].items():
        np.testing.assert_allclose(now["bones"][j], q, atol=1e-5)  # quaternions combine exactly

    presets.reset_to_neutral(head, frame=5)
    scene.frame_set(5)
    neutral = presets.capture_preset(head)
    assert max(abs(v) for v in neutral["expressions"].values()) < 1e-5
    np.testing.assert_allclose(np.array(list(neutral["bones"].values())), [[1, 0, 0, 0]] * 4, atol=1e-5)

    target = presets.add_look_at_target(head)
    assert presets.add_look_at_target(head) == target  # one target per avatar
    target.location = (0.15, 0.08, 0.5)  # FLAME frame: to the subject's left, up, in front
    bpy.context.view_layer.update()
    for eye in ("left_eye", "right_eye"):
        M = np.array(rig.pose.bones[eye].matrix)
        gaze = M[:3, 2] / np.linalg.norm(M[:3, 2])
        to_target = np.array(target.location) - M[:3, 3]
        assert gaze @ to_target / np.linalg.norm(to_target) > 0.9999

    presets.delete_preset(head, "surprise")
    assert presets.preset_names(head) == []
    with pytest.raises(AvatarError, match="no preset"):
        presets.apply_preset(head, "surprise")


# ------------------------------------------------------------------------------ 6. scene hygiene
def test_import_options_leave_the_scene_as_asked(avatar_dir):
    folder, _ = avatar_dir
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 640, 360, 75
    scene.frame_start, scene.frame_end = 10, 20
    scene.frame_set(12)
    other = bpy.data.objects.new("Shot", bpy.data.cameras.new("Shot"))
    scene.collection.objects.link(other)
    scene.camera = other
    result = import_avatar(folder, scene, set_resolution=False, set_frame_range=False, set_active_camera=False)
    assert result.scene_changes == []
    assert (scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage) == (640, 360, 75)
    assert (scene.frame_start, scene.frame_end, scene.frame_current) == (10, 20, 12)
    assert scene.camera == other
    result = import_avatar(folder, scene)  # the defaults: as before
    assert result.head.name == "subject.001"  # a second avatar of the folder, its own objects
    assert result.scene_changes == ["resolution", "frame range", "active camera"]
    assert (scene.render.resolution_x, scene.render.resolution_y, scene.frame_end) == (256, 240, N_FRAMES)
    assert scene.camera == result.camera


def test_still_camera_keeps_the_whole_head_in_frame(avatar_dir):
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    folder, arrays = avatar_dir
    result = _import(folder)
    scene, rd = bpy.context.scene, bpy.context.scene.render
    tr = arrays["tracking"]
    still = flame_math.still_camera_frame(tr["viewmat"])

    def world_vertices() -> np.ndarray:
        dg = bpy.context.evaluated_depsgraph_get()
        ev = result.head.evaluated_get(dg)
        co = np.empty(len(ev.data.vertices) * 3, np.float32)
        ev.data.vertices.foreach_get("co", co)
        M = np.array(ev.matrix_world)
        return co.reshape(-1, 3)[::5] @ M[:3, :3].T + M[:3, 3]

    def frame_coords(pts: np.ndarray) -> np.ndarray:
        """(0, 0) = bottom-left, (1, 1) = top-right of the output frame."""
        return np.array([tuple(world_to_camera_view(scene, result.camera, Vector(p)))[:2] for p in pts])

    # At the video's size the still camera is the tracked camera of its frame: the same pixels.
    scene.frame_set(still + 1)
    pts = world_vertices()
    ndc = frame_coords(pts)
    to_flame = np.linalg.inv(np.array(result.rig.matrix_world))
    flame = pts @ to_flame[:3, :3].T + to_flame[:3, 3]
    V, K = tr["viewmat"][still].astype(np.float64), tr["K"][still].astype(np.float64)
    cam = flame @ V[:3, :3].T + V[:3, 3]
    px = cam[:, :2] / cam[:, 2:] @ K[:2, :2].T + K[:2, 2]
    np.testing.assert_allclose(ndc[:, 0] * 256, px[:, 0], atol=1e-3)
    np.testing.assert_allclose((1 - ndc[:, 1]) * 240, px[:, 1], atol=1e-3)
    span = np.ptp(ndc, axis=0)
    assert span[1] > 0.5  # the head fills most of the frame's height: a horizontal fit would cut it
    for size, fitted in (((640, 240), 1), ((240, 640), 0)):  # wider: keep the height; taller: the width
        rd.resolution_x, rd.resolution_y = size
        for f in range(1, N_FRAMES + 1):
            scene.frame_set(f)
            ndc = frame_coords(world_vertices())
            assert ndc.min() > 0.0 and ndc.max() < 1.0, (size, f, ndc.min(0), ndc.max(0))
        scene.frame_set(still + 1)
        # the fitted side keeps the tracked frame's field of view: the head spans as much of it
        assert np.ptp(frame_coords(pts), axis=0)[fitted] == pytest.approx(span[fitted], rel=1e-3)


# ------------------------------------------------------------------------------ 8. not baked
def test_unbaked_avatar_renders_its_trained_gaussians(tmp_path, splats):
    folder = tmp_path / "trained"
    arrays = write_avatar(folder, n_expr=N_EXPR, n_frames=3, n_gaussians=1500, with_maps=False,
                          with_trained=True)
    result = _import(folder, camera="TRACKED")
    _render_setup()
    scene = bpy.context.scene
    scene.frame_set(2)
    dg = bpy.context.evaluated_depsgraph_get()
    g = sr.scene_gaussians(dg)
    trained = arrays["trained"]
    np.testing.assert_array_equal(g.colors, trained["color"])
    np.testing.assert_array_equal(g.opacities, trained["opacity"])
    # Placement with the trained scale/rotation/offset = the runtime's own maths on those values.
    ev = result.head.evaluated_get(dg)
    verts, faces = sr.mesh_arrays(ev.data)
    b = arrays["bindings"]
    from addon.splats.geometry import MapSamples, place_gaussians
    ref = place_gaussians(verts, faces, b["face_idx"], b["bary"], MapSamples(**trained), np.array(ev.matrix_world))
    np.testing.assert_allclose(g.means, ref.means, atol=1e-7)
    np.testing.assert_allclose(g.covars, ref.covars, atol=1e-9)
    img = render_exr(tmp_path / "trained.exr")
    assert img[..., 3].max() > 0.5 and img[..., 3].mean() > 0.02


def test_avatar_without_maps_or_trained_gaussians_says_bake_first(tmp_path, splats):
    folder = tmp_path / "bare"
    write_avatar(folder, n_expr=3, n_frames=2, with_maps=False)
    _import(folder)
    _render_setup()
    with pytest.raises(RuntimeError, match="Bake first"):
        bpy.ops.render.render()
