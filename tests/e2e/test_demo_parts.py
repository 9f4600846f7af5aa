"""Fast checks of the main job's engine-side parts (engine/demo/): presets, the demo subject's
motion, texture and logo placement, and the stage runner's error reporting."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the engine needs torch")

from engine.demo.config import DemoConfig  # noqa: E402
from engine.demo.motion import talking_motion  # noqa: E402
from engine.demo.report import contact_sheet  # noqa: E402
from engine.demo.run import resolve_config  # noqa: E402
from engine.demo.stages import run_stage_process  # noqa: E402
from engine.demo.subject import logo_uv_box, write_neutral_blender_head  # noqa: E402
from engine.demo.texture import albedo_texture  # noqa: E402
from engine.errors import ConfigError, DemoError  # noqa: E402
from engine.model.demo_head import DEMO_EXPRESSION_NAMES, build_demo_head  # noqa: E402


@pytest.fixture(scope="module")
def head():
    return build_demo_head()


def test_presets_fill_only_unset_fields():
    cfg = resolve_config(DemoConfig(preset="cpu", steps=7))
    assert cfg.steps == 7 and cfg.resolution == 256 and cfg.preset == "cpu"
    assert resolve_config(DemoConfig(preset="test")).resolution == 128  # MediaPipe needs the face ≥ ~100 px
    auto = resolve_config(DemoConfig(device="cpu"))
    assert auto.preset == "cpu"  # "auto" never picks CUDA when the device is forced to the CPU
    with pytest.raises(ConfigError, match="preset"):
        resolve_config(DemoConfig(preset="huge"))
    with pytest.raises(ConfigError, match="frames"):
        resolve_config(DemoConfig(preset="test", frames=3))


def test_motion_ranges_and_test_views_seen_in_training(head):
    T = 100
    m = talking_motion(head, T)
    assert m["expr"].shape == (T, head.num_expr) and m["pose"].shape == (T, 15)
    # head turns reach ±30° yaw and ±15° pitch (within the sampling of 100 frames)
    assert 29.0 < np.degrees(np.abs(m["yaw"]).max()) <= 30.0 + 1e-9
    assert 14.5 < np.degrees(np.abs(m["pitch"]).max()) <= 15.0 + 1e-9
    views = np.degrees(np.stack([m["yaw"], m["pitch"]], 1))
    train, test = views[:80], views[80:]
    gap = np.sqrt(((test[:, None] - train[None]) ** 2).sum(-1)).min(axis=1)
    assert gap.max() < 3.0  # every test view within 3° of a training view
    # every expression / pose channel of the test split stays inside its training range
    for key in ("expr", "pose"):
        tr, te = m[key][:80], m[key][80:]
        tol = 0.02 * (tr.max(0) - tr.min(0)) + 1e-6  # a sine's peak falls between frames
        assert (te.max(0) <= tr.max(0) + tol).all() and (te.min(0) >= tr.min(0) - tol).all(), key
    # both eyes blink (coefficient 1 closes the lids) three times
    blink = m["expr"][:, DEMO_EXPRESSION_NAMES.index("blink_left")]
    assert np.array_equal(blink, m["expr"][:, DEMO_EXPRESSION_NAMES.index("blink_right")])
    starts = np.flatnonzero((blink[1:] > 0.5) & (blink[:-1] <= 0.5))
    assert len(starts) == 3 and blink.max() == pytest.approx(1.0, abs=0.2)


def test_albedo_texture_is_filled_and_detailed(head):
    tex = albedo_texture(head, 128)
    assert tex.shape == (128, 128, 3) and tex.dtype == np.float32
    assert np.isfinite(tex).all() and tex.min() >= 0 and tex.max() <= 1
    # texels outside the UV islands copy their nearest island texel: no white/black fill
    from engine.geometry.uv import island_mask
    island = island_mask(head.uvs, head.faces_uv_all, 128)
    assert (~island).any()
    assert tex[~island].max() < 0.99 and tex[~island].min(axis=-1).max() > 0.0
    # high frequencies: neighbouring texels differ (freckles, brows, stubble, hair streaks)
    grad = np.abs(np.diff(tex, axis=1)).max(axis=-1)[island[:, 1:] & island[:, :-1]]
    assert np.percentile(grad, 99) > 0.1


def test_logo_box_lies_on_the_left_cheek(head):
    u0, v0, u1, v1 = logo_uv_box(head)
    assert 0 <= u0 < u1 <= 1 and 0 <= v0 < v1 <= 1
    # the box centre maps to a front-facing point on the +x side, between eye and mouth height
    from engine.geometry.mesh_ops import barycentric_points
    from engine.geometry.uv import sample_uv_texels
    s = sample_uv_texels(head.uvs, head.faces_uv_all, 256)
    centre = np.array([(u0 + u1) / 2, (v0 + v1) / 2])
    k = int(np.argmin(np.linalg.norm(s.uv - centre, axis=1)))
    p = barycentric_points(torch.as_tensor(head.v_template), torch.as_tensor(head.faces_all),
                           torch.as_tensor(s.face_idx[k:k + 1]), torch.as_tensor(s.bary[k:k + 1]))[0].numpy()
    assert p[0] > 0.02 and p[2] > 0.03 and -0.05 < p[1] < 0.02
    # about 3 cm wide on the surface: the box's corners are 3-6 cm apart in 3D (UV stretch)
    assert (u1 - u0) > 0.01 and (v1 - v0) > 0.01


def test_blender_head_npz_has_the_export_keys(head, tmp_path):
    write_neutral_blender_head(tmp_path / "head.npz", head)
    with np.load(tmp_path / "head.npz", allow_pickle=False) as z:
        keys = set(z.files)
        assert z["faces"].shape == head.faces_all.shape and z["faces"].dtype == np.int32
        assert np.array_equal(z["v_template"], head.v_template)
        assert int(z["num_mouth_faces"]) == len(head.mouth_faces)
    assert {"v_template", "shape_offset", "faces", "faces_uv", "uvs", "exprdirs", "posedirs", "J_regressor",
            "parents", "lbs_weights", "joint_names", "name", "num_mouth_faces"} <= keys


def test_stage_failure_names_the_log(tmp_path):
    # a Blender stage speaks the worker protocol: one JSON event per line (docs/PROTOCOL.md)
    code = ("import sys; print('{\"type\": \"progress\", \"job\": \"demo-blender\", \"time\": 0, "
            "\"stage\": \"x\", \"step\": 1, \"total\": 2}'); print('boom'); sys.exit(3)")
    seen = []

    class Sink:
        def progress(self, stage, step, total, **_):
            seen.append((stage, step, total))

    with pytest.raises(DemoError, match=r"(?s)x stage failed \(exit code 3\).*boom"):
        run_stage_process([sys.executable, "-c", code], "x", tmp_path / "x.log", Sink())
    assert seen == [("x", 1, 2)]
    assert "boom" in (tmp_path / "x.log").read_text()


def test_contact_sheet_layout(tmp_path):
    rows = [[np.full((8, 10, 3), v, np.float32) for v in (0.1, 0.5, 0.9)] for _ in range(2)]
    sheet = contact_sheet(rows, ["a", "b", "c"], tmp_path / "s.png", pad=2)
    assert sheet.shape == (18 + 2 * (8 + 2) + 2, 3 * (10 + 2) + 2, 3)
    assert (tmp_path / "s.png").is_file()
    assert math.isclose(float(sheet[18 + 2 + 4, 2 + 5, 0]), 0.1, abs_tol=1 / 255)


def test_stage_cancel_kills_the_child(tmp_path):
    """A cancel request terminates a quiet Blender-side child within the watch interval."""
    import threading
    import time

    from engine.errors import CancelledError

    class Token:
        requested = False

    token = Token()
    threading.Timer(0.5, lambda: setattr(token, "requested", True)).start()
    t0 = time.time()
    with pytest.raises(CancelledError, match="z stage"):
        run_stage_process([sys.executable, "-c", "import time; time.sleep(60)"], "z", tmp_path / "z.log",
                               cancel=token)
    assert time.time() - t0 < 10  # terminated, not waited for (0.2 s polling + process exit)


def test_stage_result_is_the_done_event(tmp_path):
    code = ("print('{\"type\": \"done\", \"job\": \"demo-blender\", \"time\": 0, \"seconds\": 1.5}'); "
            "print('{\"not\": \"an event\"}')")
    result = run_stage_process([sys.executable, "-c", code], "x", tmp_path / "x.log")
    assert result == {"seconds": 1.5}
    assert '{"not": "an event"}' in (tmp_path / "x.log").read_text()  # other lines go to the log
