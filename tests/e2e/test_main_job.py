"""The main job end to end, shortened (``--preset test``: 20 frames at 128², a short tracking, training and
bake, a 6-frame turntable): Cycles ground truth → subject.mp4 → track → train on the tracked parameters → bake → extension build/install →
Import Avatar → logo stamp → Sync Maps → FATE Splats renders → metrics, contact sheet, video,
demo.blend. The same code path as ``python -m engine demo --out out/demo``; about 15 s on an idle
2-core CPU (a few minutes when other processes share the cores).

The job runs in a subprocess (as from the README), so torch and bpy never share this process.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow]

_missing = [m for m in ("torch", "bpy", "imageio_ffmpeg") if importlib.util.find_spec(m) is None]
needs_all = pytest.mark.skipif(bool(_missing), reason=f"the main job needs {_missing} (bash .ci/setup installs them)")

# Stage names, in order, with one progress bar each.
STAGES = ["subject", "cycles", "views", "dataset", "video", "track", "train", "bake", "full_head", "eval", "extension",
          "blender", "relight_cycles", "train_pbr", "bake_pbr", "relight_splats",
          "report"]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Runs the shortened main job once; yields (out folder, events, metrics)."""
    out = tmp_path_factory.mktemp("main_job") / "demo"
    proc = subprocess.run([sys.executable, "-m", "engine", "demo", "--out", str(out), "--preset", "test",
                           "--events", "jsonl"], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=900)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-4000:]}"
    assert events and events[-1]["type"] == "done", proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    return out, events, metrics


@needs_all
def test_outputs_written(demo):
    out, _, m = demo
    for name in ("metrics.json", "contact_sheet.png", "turntable.mp4", "demo.blend"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not (out / "demo.blend1").exists(), "no .blend1 backup next to the demo file"
    n_test = m["test_frames"]
    assert n_test == max(1, round(m["frames"] * 0.2))
    for folder in ("test_engine_trained", "test_engine_baked", "test_engine_edited",
                   "test_blender_baked", "test_blender_edited"):
        assert len(list((out / "renders" / folder).glob("*.png"))) == n_test, folder
    assert len(list((out / "renders" / "turntable").glob("*.png"))) == m["config"]["turntable_frames"]
    # the INSTA dataset: last 20 % = test split, images + alpha + exact FLAME parameters
    ds = out / "dataset"
    test_json = json.loads((ds / "transforms_test.json").read_text())
    assert len(test_json["frames"]) == n_test and test_json["w"] == test_json["h"] == m["resolution"]
    assert len(list((ds / "alpha").glob("*.png"))) == m["frames"]
    assert len(list((ds / "flame" / "exp").glob("*.txt"))) == m["frames"]
    assert (out / "avatar" / "maps" / "maps.json").is_file()


@needs_all
def test_progress_per_stage(demo):
    _, events, m = demo
    stages = []
    for ev in events:
        if ev["type"] == "progress" and ev["stage"] not in stages and "/" not in ev["stage"]:
            stages.append(ev["stage"])  # "track/fit" etc. are the tracker's own bars
    assert stages == STAGES
    for s in STAGES:
        last = [ev for ev in events if ev["type"] == "progress" and ev["stage"] == s][-1]
        assert last["step"] == last["total"], s
    assert set(STAGES) <= set(m["seconds"]) and m["seconds"]["total"] > 0


@needs_all
def test_metrics(demo):
    _, events, m = demo
    t = m["test"]
    for key in ("trained", "baked", "blender"):
        assert math.isfinite(t[key]["psnr"]) and 0 < t[key]["ssim"] <= 1, key
    # 128², 20 frames, 150 steps on the tracked parameters (measured 30.61 dB; 27.79 while the
    # tracker's masks had holes and the avatar was see-through): 26 dB fails that and a misaligned
    # avatar, with room for run-to-run variation
    assert t["trained"]["psnr"] > 26.0
    # a 30-step bake into 128² maps (measured 30.61 -> 27.36 dB, the same without the full-head
    # fine-tune); the full run's cost is in docs/benchmarks.md
    assert t["baked"]["psnr"] > t["trained"]["psnr"] - 4.0
    # the Blender render of the (unedited) baked avatar is the baked avatar
    assert abs(t["blender"]["psnr"] - t["baked"]["psnr"]) < 0.5
    # FATE Splats in Blender vs the engine's rasteriser, same maps: the acceptance bar is 35 dB
    assert m["blender_vs_engine"]["baked"]["psnr"] >= 35.0
    assert m["blender_vs_engine"]["edited"]["psnr"] >= 35.0
    assert m["num_gaussians"] > 1000 and m["device"] in ("cpu", "cuda")
    # trained on the tracked parameters (issue 13): plain and refined test PSNR are both reported;
    # the refined one fits each test frame's pose and expression with the avatar frozen
    assert t["trained_refined"]["psnr"] >= t["trained"]["psnr"] - 0.5 and "IMavatar" in t["trained_refined"]["protocol"]
    tr = m["tracking"]
    assert tr["frames"] == m["frames"] and tr["frames_without_face"] == 0
    # 20 frames at 128² through H.264 and MediaPipe, ±30° of yaw in 20 frames (measured: 3.5° rotation,
    # 4° jaw, 23 mm; the full run's targets are 2° / 3°); these bounds fail a tracker that under-reads
    # the turns as the 2D-only fit did (10°), lost the head or mirrored it
    assert tr["rotation_deg_aligned"] < 6.0 and tr["jaw_deg"] < 10.0 and tr["translation_mm"] < 60.0, tr
    assert tr["landmark_error_px"] < 4.0, tr
    done = events[-1]
    assert done["psnr_trained"] == t["trained"]["psnr"]


@needs_all
def test_edit_reached_the_maps_and_the_render(demo):
    """Sync Maps kept a backup and saved the stamped colour map; both renderers show the logo."""
    from engine.io.images import read_image

    out, _, m = demo
    maps = out / "avatar" / "maps"
    backups = sorted(maps.glob("color.*.bak.exr"))
    assert len(backups) == 1
    new, old = read_image(maps / "color.exr")[..., :3], read_image(backups[0])[..., :3]
    R = new.shape[0]
    u0, v0, u1, v1 = m["edit"]["logo_uv_box"]
    box = np.zeros((R, R), bool)
    box[int(round((1 - v1) * R)):int(round((1 - v0) * R)), int(round(u0 * R)):int(round(u1 * R))] = True
    diff = np.abs(new - old).max(axis=-1)
    assert diff[box].max() > 0.2, "the logo is in the colour map"
    assert diff[~box].max() < 1e-3, "nothing outside the logo box changed (sRGB round trip ~2e-5)"
    assert m["edit"]["texels"] > 0
    # the edited renders differ from the unedited ones somewhere (the cheek faces the test cameras)
    r = out / "renders"
    changed = 0.0
    for p in sorted((r / "test_blender_edited").glob("*.png")):
        before = read_image(r / "test_blender_baked" / p.name)[..., :3]
        changed = max(changed, float(np.abs(read_image(p)[..., :3] - before).max()))
    assert changed > 0.1


@needs_all
def test_contact_sheet_and_video(demo):
    import imageio_ffmpeg

    from engine.io.images import read_image

    out, _, m = demo
    sheet = read_image(out / "contact_sheet.png")
    res, k = m["resolution"], len(m["contact_sheet_frames"])
    assert sheet.shape[1] >= 4 * res and sheet.shape[0] >= (k + 1) * res  # + the back-view row
    assert m["contact_sheet_columns"] == ["ground truth (Cycles)", "avatar", "baked", "edited (Blender)"]
    n, _ = imageio_ffmpeg.count_frames_and_secs(str(out / "turntable.mp4"))
    assert n == m["config"]["turntable_frames"]


@needs_all
def test_full_head_against_the_true_back(demo):
    """metrics.json's full_head (issue 16): Cycles views all around the neutral head, never
    trained on; trained / completed / oracle-completed avatars per yaw bucket."""
    out, _, m = demo
    fh = m["full_head"]
    yaws = sorted({v["yaw"] for v in fh["views"]})
    assert yaws == [0.0, 60.0, 120.0, 180.0, 240.0, 300.0]  # the test preset's 6 yaws
    for label in ("trained", "completed", "oracle"):
        for b in ("front", "sides", "back"):
            e = fh[label][b]
            assert math.isfinite(e["psnr"]) and 0 <= e["coverage_min"] <= e["coverage"] <= 1, (label, b, e)
        assert len(list((out / "renders" / f"views_{label}").glob("*.png"))) == len(fh["views"])
    t, c = fh["trained"], fh["completed"]
    # the see-through back and sides of the trained avatar are closed by the completion (64², 150
    # training steps, views around each avatar's own head: measured coverage trained 0.19 / 0.14,
    # completed 0.55 / 0.33 at back / sides; the test preset's short training leaves most of the
    # head below alpha 0.9 even where it was seen)
    assert c["back"]["coverage"] > t["back"]["coverage"] + 0.25
    assert c["sides"]["coverage"] > t["sides"]["coverage"] + 0.12
    assert (out / "avatar" / "maps" / "visibility.exr").is_file()
    assert (out / "work" / "views" / "views.json").is_file()


@needs_all
def test_relight_under_held_out_lights(demo):
    """metrics.json's relight (issue 18): Cycles renders the test frames again under held-out
    lights; the relightable avatar, lit by the same Blender lamps in FATE Splats, follows them and
    the unlit avatar cannot."""
    out, _, m = demo
    r = m["relight"]
    n = m["test_frames"]
    assert r["lights"] == ["key_mirrored", "warm_cool"]
    for rig in r["lights"]:
        assert len(list((out / "work" / "relight_cycles" / rig).glob("*.png"))) == n, rig
    for rig in ("train", "learnt", *r["lights"]):
        assert len(list((out / "renders" / "relight_blender" / rig).glob("*.png"))) == n, rig
    assert (out / "relight_sheet.png").is_file() and (out / "relight.blend").is_file()
    assert (out / "avatar_pbr" / "maps" / "albedo.exr").is_file()
    # one exposure for the Blender lamps, fitted on the training frames (the albedo-scale gauge
    # is off by ~1.6 on the demo's room)
    assert 0.5 < r["exposure"] < 3.0, r["exposure"]
    t = r["training_light"]
    # Blender's learnt-environment World reproduces the engine's render of the same maps
    assert abs(t["pbr_blender_learnt"]["psnr"] - t["pbr_engine"]["psnr"]) < 0.5, t
    # the test preset (150 steps, 128²) measured +1.2 / +1.4 dB over the unlit avatar and no
    # loss under the training light (−0.7 dB: the pbr avatar is better)
    for rig in r["lights"]:
        assert r["held_out"][rig]["gain_db"] > 0.4, (rig, r["held_out"][rig])
    assert t["loss_db"] < 0.5, t


_OPEN_BLEND = r"""
import json, sys, bpy, addon_utils
bpy.ops.wm.read_userpref()  # the extension the job installed (BLENDER_USER_RESOURCES)
enabled = addon_utils.check("bl_ext.user_default.fate_avatar")[1]
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
scene = bpy.context.scene
heads = [o for o in bpy.data.objects if o.get("fate_role") == "head"]
imgs = {i.get("fate_map"): bpy.path.abspath(i.filepath) for i in bpy.data.images if i.get("fate_map")}
import os
print("RESULT " + json.dumps({
    "enabled": enabled, "engine": scene.render.engine, "heads": [h.name for h in heads],
    "keys": len(heads[0].data.shape_keys.key_blocks) if heads else 0,
    "maps": sorted(imgs), "maps_exist": all(os.path.isfile(p) for p in imgs.values()),
    "relative": all(i.filepath.startswith("//") for i in bpy.data.images if i.get("fate_map")),
    "output_relative": scene.render.filepath.startswith("//"),
    "colorspaces": {i.get("fate_map"): i.colorspace_settings.name for i in bpy.data.images if i.get("fate_map")},
    "frames": [scene.frame_start, scene.frame_end], "camera": scene.camera.name if scene.camera else None,
    "turntable": "FATE demo turntable" in bpy.data.objects}))
"""


@needs_all
def test_demo_blend_opens_ready(demo):
    """demo.blend holds the imported, edited avatar (maps referenced relatively, FATE Splats set),
    opened in a Blender with the extension the job built and installed."""
    out, _, m = demo
    env = dict(_env(), BLENDER_USER_RESOURCES=str(out / "work" / "blender_user"))
    proc = subprocess.run([sys.executable, "-c", _OPEN_BLEND, str(out / "demo.blend")], capture_output=True,
                          text=True, timeout=300, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, proc.stderr[-2000:]
    res = json.loads(line[len("RESULT "):])
    assert res["enabled"] and res["engine"] == "FATE_SPLAT"
    assert res["heads"] == ["avatar"] and res["keys"] > 10
    assert res["maps"] == ["color", "offset", "opacity", "rotation", "scale", "visibility"]
    assert res["colorspaces"]["visibility"] == "Non-Color"  # data for the artist, not a colour
    assert res["maps_exist"] and res["relative"] and res["output_relative"]
    assert res["frames"] == [1, m["frames"]] and res["camera"] == "avatar_camera"
    assert res["turntable"]
