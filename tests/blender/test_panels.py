"""The sidebar panels and the preferences draw without errors in every job state (background mode
has no UI, so ``draw`` runs against a recording stand-in for ``UILayout``)."""

from __future__ import annotations

import pytest

bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed")

from addon_package import registered, submodule  # noqa: E402,F401


class FakeLayout:
    """Accepts any UILayout call; records operator ids and labels; returns itself for sub-layouts."""

    def __init__(self, log=None):
        self.log = log if log is not None else []
        self.alert = False

    def operator(self, idname, **kwargs):
        assert idname.count(".") == 1, idname
        self.log.append(("operator", idname))
        return type("OpProps", (), {})()

    def label(self, text="", **kwargs):
        self.log.append(("label", text))

    def prop(self, data, name, **kwargs):
        assert hasattr(data, name), name
        self.log.append(("prop", name))

    def __getattr__(self, name):  # row, column, box, separator, progress, ...
        return lambda *a, **k: self


class _Self:
    def __init__(self):
        self.layout = FakeLayout()


@pytest.mark.parametrize("state", ["IDLE", "RUNNING", "ERROR", "DONE", "CANCELLED"])
def test_sidebar_draws(registered, state):
    sidebar = submodule("panels.sidebar")
    scene = bpy.context.scene
    scene.fate.job_state = state
    scene.fate.job_kind = "train"
    scene.fate.job_total = 100 if state != "IDLE" else 0
    scene.fate.job_error = "train failed: something (full log: /tmp/x.log)" if state == "ERROR" else ""
    for cls in sidebar.CLASSES:
        panel = _Self()
        assert cls.poll(bpy.context)
        cls.draw(panel, bpy.context)
        ops = [v for k, v in panel.layout.log if k == "operator"]
        if cls is sidebar.FATE_PT_avatar:
            assert [o for o in ops if o.startswith("fate.")][:5] == ["fate.track_start", "fate.train_start", "fate.bake_start",
                                                               "fate.import_avatar", "fate.sync_maps"]
        if cls is sidebar.FATE_PT_job and state != "IDLE":
            assert "fate.job_cancel" in ops and "fate.job_log_open" in ops
    prefs_cls = submodule("addon.ui.preferences").FATE_AddonPreferences
    fake_prefs = type("P", (), {"flame_dir": "", "python_path": "", "device": "AUTO", "worker_status": "ok",
                                "backups_to_keep": 10, "layout": FakeLayout()})()
    prefs_cls.draw(fake_prefs, bpy.context)
    assert ("operator", "fate.check_worker") in fake_prefs.layout.log


def test_sidebar_with_an_unbaked_avatar(registered, tmp_path):
    """An imported avatar without maps: "Bake first" with the Bake button beside it; the animation
    panel lists the tracking layer and the saved presets."""
    from synthetic_avatar import write_avatar

    sidebar = submodule("panels.sidebar")
    folder = tmp_path / "unbaked"
    write_avatar(folder, n_expr=3, n_frames=2, with_maps=False)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    assert bpy.ops.fate.import_avatar(directory=str(folder)) == {"FINISHED"}
    assert bpy.ops.fate.preset_save(name="smile") == {"FINISHED"}
    panel = _Self()
    sidebar.FATE_PT_avatar.draw(panel, bpy.context)
    log = panel.layout.log
    bake_first = log.index(("label", "Bake first: no maps to render"))
    assert log[bake_first + 1] == ("operator", "fate.bake_start")
    assert ("prop", "resplat") in log and ("operator", "fate.restore_maps") in log
    panel = _Self()
    sidebar.FATE_PT_animation.draw(panel, bpy.context)
    ops = [v for k, v in panel.layout.log if k == "operator"]
    assert ops[:3] == ["fate.preset_save", "fate.preset_apply", "fate.preset_delete"]
    assert "fate.expression_neutral" in ops and "fate.look_at_add" in ops
    assert ("prop", "mute") in panel.layout.log and ("prop", "action_blend_type") in panel.layout.log


@pytest.mark.parametrize("view", ["Standard", "AgX"])
def test_render_panel_names_the_view_and_the_native_status(registered, view):
    render = submodule("panels.render")
    native = submodule("addon.splats.native")
    scene = bpy.context.scene
    scene.render.engine = "FATE_SPLAT"
    scene.view_settings.view_transform = view
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    panel = _Self()
    assert render.FATE_PT_render_splats.poll(bpy.context)
    render.FATE_PT_render_splats.draw(panel, bpy.context)
    log = panel.layout.log
    assert ("prop", "splat_composite") in log and ("prop", "splat_draw_meshes") in log
    labels = " ".join(v for k, v in log if k == "label")
    ops = [v for k, v in log if k == "operator"]
    assert "training images" in labels
    assert ("fate.use_standard_view" in ops) == (view != "Standard")
    if native.native_splats_supported()[0]:
        assert "fate.refresh_native_splats" in ops and "fate.setup_composite" not in ops
    else:
        assert "fate.setup_composite" in ops and "5.3" in labels
    assert "fate.export_splats" in ops
    bpy.ops.fate.use_standard_view()
    assert scene.view_settings.view_transform == "Standard"


def test_finished_track_job_sets_the_dataset_and_the_scene_frame_rate(registered):
    """Step 0 → step 1: the ``done`` event of a track job names the dataset and the video's rate."""
    runtime = submodule("addon.jobs.runtime")
    scene = bpy.context.scene
    scene.fate.dataset_dir = ""
    scene.render.fps, scene.render.fps_base = 24, 1.0
    job = type("J", (), {"kind": "track", "error": None, "log_path": None})()
    runtime.apply_event(scene, job, {"type": "done", "dataset": "/tmp/clip_dataset", "fps": 29.97})
    assert scene.fate.dataset_dir == "/tmp/clip_dataset"
    assert scene.render.fps == 30 and abs(scene.render.fps / scene.render.fps_base - 29.97) < 1e-4
    assert scene.fate.job_state == "DONE"
