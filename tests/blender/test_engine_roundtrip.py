"""Real engine through the worker client: synth → Train → Bake (tiny, CPU) → Import Avatar, and the
imported rig reproduces the engine's own deformation of the trained avatar.

The engine runs in subprocesses (torch never enters this bpy process) with the Worker Python of
:func:`conftest.engine_python` — this interpreter under bpy 5.0 (Python 3.11), the 3.11 ``.venv``
under bpy 5.3 (Python 3.13, no torch), as an artist's Blender does; its reference vertices are
computed by a helper subprocess too. About 30 s on a 2-core CPU.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed")

from addon.jobs import config as job_config  # noqa: E402
from addon.jobs.worker import WorkerClient  # noqa: E402
from addon.rig.bindings import get_bindings  # noqa: E402
from addon.rig.importer import import_avatar  # noqa: E402
from blender_support import NO_ENGINE_PYTHON, engine_env, engine_python  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TOL_M = 1e-4  # acceptance 0.1 mm; observed ~1.5e-7 m (float32)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(engine_python() is None, reason=NO_ENGINE_PYTHON),
    pytest.mark.skipif(not (REPO / "engine" / "__main__.py").is_file(), reason="engine CLI not present"),
]

_REFERENCE = r"""
import sys, numpy as np, torch
from engine.avatar_folder import load_avatar
av_dir, out = sys.argv[1], sys.argv[2]
la = load_avatar(av_dir)
av, bs = la.avatar, la.avatar.blendshapes
tr = dict(np.load(av_dir + "/tracking.npz"))
verts = []
with torch.no_grad():
    for t in range(len(tr["expr"])):
        v, _ = av.flame(torch.as_tensor(tr["shape"])[None], torch.as_tensor(tr["expr"][t])[None],
                        torch.as_tensor(tr["pose"][t])[None], delta_exprdirs=bs.delta_exprdirs,
                        delta_posedirs=bs.delta_posedirs, delta_vertices=bs.delta_vertices)
        verts.append(v[0].double().numpy() + tr["translation"][t])
np.save(out, np.stack(verts))
"""


def _env():
    return engine_env()


@pytest.fixture(scope="module")
def baked_avatar(tmp_path_factory):
    root = tmp_path_factory.mktemp("roundtrip")
    dataset, avatar = root / "dataset", root / "avatar"
    python = engine_python()
    subprocess.run([python, "-m", "engine", "synth", str(dataset), "--frames", "6", "--resolution", "48",
                    "--gt_uv_resolution", "24", "--events", "none"], env=_env(), check=True, timeout=300,
                   capture_output=True)
    client = WorkerClient(python, REPO)
    cfg = job_config.train_config(dataset, avatar, job_config.resolve_head_model(""), device="cpu", steps=12,
                                  extra={"uv_resolution": 16, "checkpoint_every": 6, "preview_every": 6})
    train = client.start("train", cfg, avatar)
    progress = []
    train.on("progress", progress.append)
    assert train.wait(300) == "done", train.error
    assert progress[-1]["step"] == progress[-1]["total"] == 12
    bake = client.start("bake", job_config.bake_config(avatar, device="cpu", extra={
        "resolution": 32, "steps": 6, "warmup_steps": 3, "base_channels": 8, "depth": 2}), avatar)
    assert bake.wait(300) == "done", bake.error
    ref = root / "reference.npy"
    subprocess.run([python, "-c", _REFERENCE, str(avatar), str(ref)], env=_env(), check=True,
                   timeout=300, capture_output=True)
    return avatar, np.load(ref), train


def test_train_bake_import_matches_engine(baked_avatar):
    avatar, reference, train = baked_avatar
    assert (avatar / "logs").is_dir() and train.log_path.is_file()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    # the tracked camera: the rig is then FLAME itself (the still camera's rig moves the head too)
    result = import_avatar(avatar, bpy.context.scene, camera="TRACKED")
    assert result.warnings == []
    assert result.bindings is not None and "fate_color" in result.bindings.data.attributes  # trained, baked
    assert set(result.images) == {"color", "opacity", "scale", "rotation", "offset", "visibility"}  # + the full head's
    maps = json.loads((avatar / "maps" / "maps.json").read_text())["maps"]
    for name, img in result.images.items():
        assert img.colorspace_settings.name == maps[name]["colorspace"]
    face_idx, bary, uv = get_bindings(result.head)
    assert len(face_idx) > 0 and face_idx.max() < len(result.head.data.polygons)
    for t in range(len(reference)):
        bpy.context.scene.frame_set(t + 1)
        bpy.context.view_layer.update()
        obj = result.head.evaluated_get(bpy.context.evaluated_depsgraph_get())
        mesh = obj.to_mesh()
        co = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", co)
        obj.to_mesh_clear()
        M = np.linalg.inv(np.array(result.rig.matrix_world)) @ np.array(obj.matrix_world)
        flame = co.reshape(-1, 3).astype(np.float64) @ M[:3, :3].T + M[:3, 3]
        assert np.abs(flame - reference[t]).max() <= TOL_M, (t, np.abs(flame - reference[t]).max())
