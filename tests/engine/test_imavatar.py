"""engine.data.imavatar: IMavatar/NerFace layout, camera conventions, splits, errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from engine.data import load_sequence, read_imavatar
from engine.errors import DatasetError
from engine.io.images import write_png

W, H = 16, 12
FX, FY, CX, CY = -1.5, 1.6, 0.48, 0.52  # normalised; IMavatar stores fx negated
INTR = (FX, FY, CX, CY)


def make_imavatar(folder: Path, T: int = 10, seed: int = 0, rotation: np.ndarray | None = None,
                  intrinsics=(FX, FY, CX, CY), rgba: bool = False, json_name: str = "flame_params.json",
                  start: int = 1) -> dict:
    """Writes an IMavatar folder (json + image/ + mask/, or matted/ RGBA) and returns the json."""
    rng = np.random.default_rng(seed)
    R = np.eye(3) if rotation is None else rotation
    frames = []
    for k in range(start, start + T):
        t = np.array([0.05, -0.02, -4.0]) + rng.normal(scale=0.01, size=3)  # FLAME×4 units
        frames.append({
            "file_path": f"./image/{k}",
            "world_mat": np.hstack([R, t[:, None]]).tolist(),
            "expression": rng.normal(size=50).tolist(),
            "pose": (rng.normal(size=15) * 0.1).tolist(),
            "bbox": [-0.5, -0.5, 0.5, 0.5],
        })
        if rgba:
            write_png(folder / f"matted/{k}.png", rng.integers(0, 256, size=(H, W, 4), dtype=np.uint8))
        else:
            write_png(folder / f"image/{k}.png", rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8))
            write_png(folder / f"mask/{k}.png", rng.integers(0, 256, size=(H, W), dtype=np.uint8))
    data = {"frames": frames, "intrinsics": list(intrinsics), "shape_params": rng.normal(size=100).tolist()}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / json_name).write_text(json.dumps(data))
    return data


def imavatar_project(world_mat: np.ndarray, intr, X: np.ndarray) -> np.ndarray:
    """IMavatar's own projection (preprocess/DECA/optimize.py): FLAME scaled by 4, the camera
    divides by z < 0, pixel = f · x/z + c with the stored (signed) normalised intrinsics × size."""
    p = (4.0 * X) @ world_mat[:3, :3].T + world_mat[:3, 3]
    assert (p[:, 2] < 0).all()
    return np.stack([intr[0] * W * p[:, 0] / p[:, 2] + intr[2] * W,
                     intr[1] * H * p[:, 1] / p[:, 2] + intr[3] * H], axis=1)


def engine_project(seq, i: int, X: np.ndarray) -> np.ndarray:
    """OpenCV projection with the sequence's viewmat and K (float64). [N, 2]"""
    V, K = seq.viewmats[i].double().numpy(), seq.Ks[i].double().numpy()
    xc = X @ V[:3, :3].T + V[:3, 3]
    assert (xc[:, 2] > 0).all()  # in front of the OpenCV camera
    uv = xc @ K.T
    return uv[:, :2] / uv[:, 2:]


def test_single_folder_conventions(tmp_path):
    root = tmp_path / "subject"
    data = make_imavatar(root)
    seq = read_imavatar(root)
    assert len(seq) == 10 and seq.frame_names == [str(k) for k in range(1, 11)]
    assert seq.split == ["train"] * 8 + ["test"] * 2  # last 20%
    assert (seq.width, seq.height) == (W, H)
    f32 = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    assert torch.equal(seq.shape, f32(data["shape_params"]))
    assert torch.equal(seq.expr, f32([f["expression"] for f in data["frames"]]))
    assert torch.equal(seq.pose, f32([f["pose"] for f in data["frames"]]))
    assert torch.equal(seq.translation, torch.zeros(10, 3))
    torch.testing.assert_close(seq.Ks[0], f32([[1.5 * W, 0, CX * W], [0, FY * H, CY * H], [0, 0, 1]]))
    # viewmat = diag(1, -1, -1, 1) @ [R | t/4]
    wm = np.array(data["frames"][3]["world_mat"])
    w2c_gl = np.vstack([np.hstack([wm[:, :3], wm[:, 3:] / 4]), [0, 0, 0, 1]])
    expect = np.diag([1.0, -1.0, -1.0, 1.0]) @ w2c_gl
    np.testing.assert_allclose(seq.viewmats[3].numpy(), expect, rtol=0, atol=1e-7)  # float32
    # FLAME points (meters) land on the same pixels as in IMavatar's own projection.
    X = np.random.default_rng(1).normal(scale=0.08, size=(30, 3))
    for i in (0, 9):
        np.testing.assert_allclose(engine_project(seq, i, X),
                                   imavatar_project(np.array(data["frames"][i]["world_mat"]), INTR, X),
                                   rtol=0, atol=1e-4)  # float32 camera, pixels
    assert seq.image_paths[0] == root / "image/1.png" and seq.mask_paths[0] == root / "mask/1.png"


def test_rotated_camera_and_flipped_signs_project_like_imavatar(tmp_path):
    R = Rotation.from_rotvec([0.1, -0.3, 0.05]).as_matrix()
    X = np.random.default_rng(2).normal(scale=0.08, size=(30, 3))
    for name, intr in (("std", INTR), ("rolled", (-FX, -FY, CX, CY))):
        root = tmp_path / name
        data = make_imavatar(root, T=3, rotation=R, intrinsics=intr)
        seq = read_imavatar(root)
        assert np.linalg.det(seq.viewmats[0, :3, :3].double().numpy()) == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose(engine_project(seq, 1, X),
                                   imavatar_project(np.array(data["frames"][1]["world_mat"]), intr, X),
                                   rtol=0, atol=1e-4)  # float32 camera, pixels


def test_old_format_pixel_intrinsics(tmp_path):
    root = tmp_path / "old"
    make_imavatar(root, T=2, intrinsics=(FX * 512, FY * 512, CX * 512, CY * 512))
    seq = read_imavatar(root)
    torch.testing.assert_close(seq.Ks[0], torch.tensor([[1.5 * W, 0, CX * W], [0, FY * H, CY * H], [0, 0, 1]],
                                                       dtype=torch.float32))


def test_two_folder_layout_with_matted(tmp_path):
    root = tmp_path / "yufeng"
    tr = make_imavatar(root / "yufeng_train", T=4, seed=3, rgba=True)
    make_imavatar(root / "yufeng_test", T=2, seed=4)
    seq = load_sequence(root)
    assert seq.frame_names == ["train_1", "train_2", "train_3", "train_4", "test_1", "test_2"]
    assert seq.split == ["train"] * 4 + ["test"] * 2
    assert seq.image_paths[0] == root / "yufeng_train/matted/1.png" and seq.mask_paths[0] is None
    assert seq.image_paths[4] == root / "yufeng_test/image/1.png"
    assert seq.mask_paths[4] == root / "yufeng_test/mask/1.png"
    assert torch.equal(seq.shape, torch.tensor(tr["shape_params"], dtype=torch.float32))
    # Matted RGBA images composite with their own alpha.
    from engine.io.images import read_image

    a = torch.from_numpy(read_image(seq.image_paths[1]))
    img, m = seq.load_image(1, background=(0.0, 0.0, 0.0))
    torch.testing.assert_close(m, a[..., 3:], rtol=0, atol=0)
    torch.testing.assert_close(img, a[..., :3] * a[..., 3:], rtol=0, atol=1e-7)  # float32 product
    img, m = seq.load_image(5)
    mask = torch.from_numpy(read_image(seq.mask_paths[5]))
    torch.testing.assert_close(m, mask, rtol=0, atol=0)


def test_test_json_in_same_folder(tmp_path):
    root = tmp_path / "s"
    make_imavatar(root, T=3, seed=5)
    make_imavatar(root, T=2, seed=6, json_name="flame_params_test.json", start=4)
    seq = read_imavatar(root)
    assert seq.frame_names == ["1", "2", "3", "4", "5"] and seq.split == ["train"] * 3 + ["test"] * 2
    # load_sequence accepts the json path too.
    assert load_sequence(root / "flame_params.json").frame_names == seq.frame_names


# ---------------------------------------------------------------- errors


def _edit(root: Path, fn) -> None:
    p = root / "flame_params.json"
    data = json.loads(p.read_text())
    fn(data)
    p.write_text(json.dumps(data))


def _expect(root: Path, *fragments: str) -> None:
    with pytest.raises(DatasetError) as ei:
        read_imavatar(root)
    msg = str(ei.value)
    for f in fragments:
        assert f in msg, (f, msg)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "subj"
    make_imavatar(root, T=4)
    return root


def test_error_no_json(tmp_path):
    _expect(tmp_path, "flame_params.json not found")
    (tmp_path / "weird").mkdir()
    (tmp_path / "weird/flame_params.json").write_text("{}")
    _expect(tmp_path, "weird", "cannot tell the split")


def test_error_missing_key(folder):
    _edit(folder, lambda d: d["frames"][2].pop("expression"))
    _expect(folder, "flame_params.json frames[2]", "'expression' missing")


def test_error_missing_top_key(folder):
    _edit(folder, lambda d: d.pop("intrinsics"))
    _expect(folder, "flame_params.json", "'intrinsics' missing")


def test_error_ragged_expression(folder):
    _edit(folder, lambda d: d["frames"][3].__setitem__("expression", [0.0] * 49))
    _expect(folder, "frames[3]", "expression", "49 values", "50", "ragged")


def test_error_pose_length(folder):
    _edit(folder, lambda d: d["frames"][1].__setitem__("pose", [0.0] * 14))
    _expect(folder, "frames[1]", "pose", "14 values", "expected 15")


def test_error_nan(folder):
    def nan(d):
        d["frames"][0]["pose"][4] = float("nan")
    _edit(folder, nan)
    _expect(folder, "frames[0]", "pose", "NaN")
    _edit(folder, lambda d: d["frames"][0].__setitem__("pose", [0.0] * 15))
    _edit(folder, lambda d: d["shape_params"].__setitem__(7, float("inf")))
    _expect(folder, "flame_params.json", "shape_params", "NaN/Inf")


def test_error_world_mat(folder):
    _edit(folder, lambda d: d["frames"][1].__setitem__("world_mat", [[1, 0, 0], [0, 1, 0]]))
    _expect(folder, "frames[1]", "world_mat", "shape (2, 3)")
    scaled = [[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, -4]]
    _edit(folder, lambda d: d["frames"][1].__setitem__("world_mat", scaled))
    _expect(folder, "frames[1]", "world_mat", "not a rigid")


def test_error_mirrored_intrinsics(folder):
    _edit(folder, lambda d: d.__setitem__("intrinsics", [1.5, 1.5, 0.5, 0.5]))
    _expect(folder, "flame_params.json", "intrinsics", "mirrored")


def test_error_missing_image_and_mask(folder):
    (folder / "image/3.png").unlink()
    _expect(folder, "image/3.png", "frames[2].file_path", "not found")
    write_png(folder / "image/3.png", np.zeros((H, W, 3), np.uint8))
    (folder / "mask/4.png").unlink()
    _expect(folder, "mask/4.png", "frames[3]", "no alpha channel")
    shutil.rmtree(folder / "mask")
    _expect(folder, "mask", "masks folder missing")


def test_error_image_size_and_mode(folder):
    write_png(folder / "image/2.png", np.zeros((H + 2, W, 3), np.uint8))
    _expect(folder, "image/2.png", "16x14", "expected 16x12", "frames[1].file_path")
    write_png(folder / "image/2.png", np.zeros((H, W), np.uint8))
    _expect(folder, "image/2.png", "8-bit gray", "expected 8-bit RGB")
