"""engine.data.insta (+ Sequence): exact write/read round trip, INSTA conventions, errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from engine.data import Sequence, load_sequence, read_insta, write_insta
from engine.errors import DatasetError
from engine.geometry.cameras import look_at_opencv
from engine.io.images import write_png

W, H = 16, 12
T = 6
S, E = 20, 10


def make_sequence(root: Path, seed: int = 0, T: int = T) -> Sequence:
    """A synthetic sequence: random FLAME params, look-at cameras around the origin.

    Train frames first, then test frames, names 00000.. in order (read_insta's order).
    """
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=(T, 5, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    pose = (axis * rng.uniform(0.05, 1.0, size=(T, 5, 1))).reshape(T, 15)
    views = []
    for _ in range(T):
        eye = np.array([0.0, 0.0, 1.0]) + rng.normal(scale=0.2, size=3)
        views.append(look_at_opencv(eye, rng.normal(scale=0.02, size=3)))
    Ks = np.tile(np.eye(3), (T, 1, 1))
    Ks[:, 0, 0] = 20.0 + rng.random()
    Ks[:, 1, 1] = 21.0 + rng.random()
    Ks[:, 0, 2] = W / 2 + rng.normal(scale=0.3)
    Ks[:, 1, 2] = H / 2 + rng.normal(scale=0.3)
    f32 = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    n_test = 2
    return Sequence(
        root=root,
        frame_names=[f"{i:05d}" for i in range(T)],
        shape=f32(rng.normal(size=S)),
        expr=f32(rng.normal(size=(T, E))),
        pose=f32(pose),
        translation=f32(rng.normal(scale=0.01, size=(T, 3))),
        viewmats=f32(np.stack(views)),
        Ks=f32(Ks),
        width=W,
        height=H,
        image_paths=[root / f"images/{i:05d}.png" for i in range(T)],
        mask_paths=[root / f"alpha/{i:05d}.png" for i in range(T)],
        split=["train"] * (T - n_test) + ["test"] * n_test,
    )


def make_pixels(seed: int = 0, alpha: bool = False):
    """Random uint8 images [T, H, W, 3|4] and masks [T, H, W]."""
    rng = np.random.default_rng(seed + 100)
    images = rng.integers(0, 256, size=(T, H, W, 4 if alpha else 3), dtype=np.uint8)
    masks = rng.integers(0, 256, size=(T, H, W), dtype=np.uint8)
    return list(images), list(masks)


@pytest.fixture
def written(tmp_path):
    """(root, sequence, images, masks) of a written RGB + alpha/ dataset."""
    root = tmp_path / "insta"
    seq = make_sequence(root)
    images, masks = make_pixels()
    write_insta(root, seq, images, masks)
    return root, seq, images, masks


def assert_same_sequence(a: Sequence, b: Sequence) -> None:
    for name in ("shape", "expr", "pose", "translation", "viewmats", "Ks"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype == torch.float32, name
        assert torch.equal(x, y), (name, (x - y).abs().max())
    assert a.frame_names == b.frame_names
    assert a.split == b.split
    assert (a.width, a.height) == (b.width, b.height)
    assert a.image_paths == b.image_paths
    assert a.mask_paths == b.mask_paths


def test_round_trip_exact(written):
    root, seq, _, _ = written
    back = read_insta(root)
    assert_same_sequence(back, seq)
    assert back.root == root
    assert back.indices("train") == [0, 1, 2, 3] and back.indices("test") == [4, 5]
    # Writing what we read gives byte-identical parameter files.
    root2 = root.parent / "again"
    write_insta(root2, back)
    for f in sorted((root / "flame").rglob("*.txt")):
        assert (root2 / f.relative_to(root)).read_text() == f.read_text(), f


def test_json_layout_and_opencv_c2w(written):
    root, seq, _, _ = written
    data = json.loads((root / "transforms_train.json").read_text())
    assert data["format"] == "fate-insta" and data["format_version"] == 1
    assert (data["w"], data["h"]) == (W, H)
    fr = data["frames"][1]
    assert fr["file_path"] == "images/00001.png" and fr["exp_path"] == "flame/exp/00001.txt"
    c2w = np.array(fr["transform_matrix"])
    # transform_matrix is camera→world with OpenCV axes: its inverse is the viewmat ...
    np.testing.assert_allclose(np.linalg.inv(c2w), seq.viewmats[1].double().numpy(), rtol=0, atol=1e-7)
    # ... its translation is the camera centre, and its +z column points at the head.
    np.testing.assert_allclose(c2w[:3, 3], seq.camera(1).center.double().numpy(), atol=1e-6)
    assert c2w[:3, 2] @ (np.zeros(3) - c2w[:3, 3]) > 0.9
    for name in ("shape", "exp", "jaw", "eyes", "neck", "rotation", "translation"):
        assert (root / "flame" / name / "00003.txt").is_file(), name
    assert len((root / "flame/eyes/00003.txt").read_text().split()) == 12
    assert len(json.loads((root / "transforms_test.json").read_text())["frames"]) == 2


def _write_rows(path: Path, values) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, np.asarray(values).reshape(-1), fmt="%.8f")  # what INSTA's script does


def test_reads_original_insta_conventions(tmp_path):
    """A folder written the way INSTA's scripts/transforms.py + FATE's patch write it."""
    root = tmp_path / "orig"
    rng = np.random.default_rng(5)
    jaw = Rotation.from_rotvec([0.2, 0.0, 0.01])
    left, right = Rotation.from_rotvec([0.05, -0.1, 0.0]), Rotation.from_rotvec([0.06, -0.09, 0.0])
    frames = []
    for i in (10, 2):  # unsorted on purpose: the reader sorts by frame number
        name = f"{i:05d}"
        w2c = look_at_opencv([0.1, 0.0, 1.2], [0.0, 0.0, 0.0])
        frames.append({"file_path": f"images/{name}.png", "transform_matrix": np.linalg.inv(w2c).tolist(),
                       "exp_path": f"flame/exp/{name}.txt", "mesh_path": f"meshes/{name}.obj"})
        _write_rows(root / f"flame/exp/{name}.txt", rng.normal(size=100))
        _write_rows(root / f"flame/shape/{name}.txt", np.arange(300) * 1e-3)
        # 6D = first two ROWS of the rotation matrix (PyTorch3D).
        _write_rows(root / f"flame/jaw/{name}.txt", jaw.as_matrix()[:2].reshape(-1))
        _write_rows(root / f"flame/eyes/{name}.txt",
                    np.concatenate([left.as_matrix()[:2].reshape(-1), right.as_matrix()[:2].reshape(-1)]))
        write_png(root / f"images/{name}.png", rng.integers(0, 256, size=(H, W, 4), dtype=np.uint8))
    meta = {"cx": 8.0, "cy": 6.0, "fl_x": 30.0, "fl_y": 30.0, "w": float(W), "h": float(H),
            "camera_angle_x": 0.5, "integer_depth_scale": 0.001}
    (root / "transforms_train.json").write_text(json.dumps({**meta, "frames": frames}))
    (root / "transforms_test.json").write_text(json.dumps({**meta, "frames": []}))
    seq = load_sequence(root)
    assert seq.frame_names == ["00002", "00010"]
    assert seq.expr.shape == (2, 100) and seq.shape.shape == (300,)
    # Inputs have 8 decimals; float32 pose ~1e-7.
    tol = dict(rtol=0, atol=2e-7)
    np.testing.assert_allclose(seq.pose[:, 6:9].numpy(), np.tile(jaw.as_rotvec(), (2, 1)), **tol)
    np.testing.assert_allclose(seq.pose[:, 9:12].numpy(), np.tile(left.as_rotvec(), (2, 1)), **tol)
    np.testing.assert_allclose(seq.pose[:, 12:15].numpy(), np.tile(right.as_rotvec(), (2, 1)), **tol)
    # No neck/rotation/translation files: identity / zero.
    assert torch.equal(seq.pose[:, :6], torch.zeros(2, 6))
    assert torch.equal(seq.translation, torch.zeros(2, 3))
    # The head (origin) projects onto the principal point: viewmat = inv(transform_matrix).
    cam = seq.camera(0)
    xc = cam.viewmat[:3, 3]
    assert xc[2] > 0
    uv = (cam.K @ xc)[:2] / xc[2]
    torch.testing.assert_close(uv, torch.tensor([8.0, 6.0]), rtol=0, atol=1e-4)  # float32
    torch.testing.assert_close(seq.Ks[0], torch.tensor([[30.0, 0, 8], [0, 30, 6], [0, 0, 1]]))
    assert seq.mask_paths == [None, None] and seq.split == ["train", "train"]  # RGBA: alpha is the mask


def test_load_image_composites_with_mask(written):
    root, seq, images, masks = written
    back = read_insta(root)
    img, m = back.load_image(2, background=(0.0, 0.5, 1.0))
    assert img.shape == (H, W, 3) and m.shape == (H, W, 1) and img.dtype == torch.float32
    rgb = torch.from_numpy(images[2]).float() / 255
    mask = torch.from_numpy(masks[2]).float()[..., None] / 255
    torch.testing.assert_close(m, mask, rtol=0, atol=1e-7)  # k/255 in float32
    expected = rgb * mask + torch.tensor([0.0, 0.5, 1.0]) * (1 - mask)
    torch.testing.assert_close(img, expected, rtol=0, atol=1e-6)  # float32 arithmetic


def test_rgba_images_use_their_alpha(tmp_path):
    root = tmp_path / "rgba"
    seq = make_sequence(root)
    images, _ = make_pixels(alpha=True)
    write_insta(root, seq, images, None)
    back = read_insta(root)
    assert back.mask_paths == [None] * T
    img, m = back.load_image(0)
    a = torch.from_numpy(images[0]).float() / 255
    torch.testing.assert_close(m, a[..., 3:], rtol=0, atol=1e-7)
    torch.testing.assert_close(img, a[..., :3] * a[..., 3:] + (1 - a[..., 3:]), rtol=0, atol=1e-6)


def test_sequence_helpers(written):
    root, _, _, _ = written
    seq = read_insta(root)
    sub = seq.subset([5, 1])
    assert sub.frame_names == ["00005", "00001"] and sub.split == ["test", "train"]
    assert torch.equal(sub.pose[0], seq.pose[5]) and torch.equal(sub.shape, seq.shape)
    cam = seq.camera(3)
    assert torch.equal(cam.viewmat, seq.viewmats[3]) and (cam.width, cam.height) == (W, H)
    with pytest.raises(ValueError):
        seq.indices("val")
    # Resize: K scales with the image; shrinking by 2 averages 2x2 blocks.
    half = seq.resized(W // 2, H // 2)
    assert half.source_size == (W, H)
    torch.testing.assert_close(half.Ks[:, :2], seq.Ks[:, :2] / 2, rtol=0, atol=0)
    img, m = half.load_image(0)
    assert img.shape == (H // 2, W // 2, 3) and m.shape == (H // 2, W // 2, 1)
    full = seq.load_image(0)[1]
    block = full[:, :, 0].reshape(H // 2, 2, W // 2, 2).mean((1, 3))
    torch.testing.assert_close(m[:, :, 0], block, rtol=0, atol=1e-6)  # float32 summation order


def test_writer_renumbers_unsafe_names_and_checks_inputs(tmp_path):
    seq = make_sequence(tmp_path / "x")
    seq.frame_names = [f"a/{i}" for i in range(T)]
    names = write_insta(tmp_path / "x", seq)
    assert names == [f"{i:05d}" for i in range(T)]
    images, masks = make_pixels()
    with pytest.raises(DatasetError, match=r"images\[1\]"):
        write_insta(tmp_path / "y", make_sequence(tmp_path / "y"), [images[0], images[1][:5]] + images[2:])
    with pytest.raises(DatasetError, match="5 masks"):
        write_insta(tmp_path / "y", make_sequence(tmp_path / "y"), None, masks[:5])


# ---------------------------------------------------------------- errors


def _expect(root: Path, *fragments: str) -> None:
    with pytest.raises(DatasetError) as ei:
        read_insta(root)
    msg = str(ei.value)
    for f in fragments:
        assert f in msg, (f, msg)


def test_error_missing_train_json(tmp_path):
    _expect(tmp_path, "transforms_train.json")
    with pytest.raises(DatasetError, match="no dataset found"):
        load_sequence(tmp_path)


def test_error_missing_image(written):
    root = written[0]
    (root / "images/00003.png").unlink()
    _expect(root, "images/00003.png", "file_path", "not found")


def test_error_missing_mask_file_and_folder(written):
    root = written[0]
    (root / "alpha/00002.png").unlink()
    _expect(root, "alpha/00002.png", "mask", "no alpha channel")
    shutil.rmtree(root / "alpha")
    _expect(root, "alpha", "masks folder missing", "00000.png")


def test_error_missing_param_file(written):
    root = written[0]
    (root / "flame/exp/00001.txt").unlink()
    _expect(root, "exp/00001.txt", "flame/exp", "not found")


def test_error_missing_optional_param_file(written):
    root = written[0]
    (root / "flame/neck/00004.txt").unlink()
    _expect(root, "neck/00004.txt", "flame/neck", "not found")


def test_error_ragged_params(written):
    root = written[0]
    (root / "flame/exp/00004.txt").write_text("0.1\n0.2\n")
    _expect(root, "exp/00004.txt", "flame/exp", "2 values", f"has {E}", "ragged")
    write_insta(root, written[1])  # restore the parameter files
    (root / "flame/jaw/00000.txt").write_text("1\n0\n0\n0\n1\n")
    _expect(root, "jaw/00000.txt", "flame/jaw", "5 values", "expected 6")


def test_error_nan_params(written):
    root = written[0]
    vals = (root / "flame/eyes/00002.txt").read_text().split()
    vals[3] = "nan"
    (root / "flame/eyes/00002.txt").write_text("\n".join(vals))
    _expect(root, "eyes/00002.txt", "flame/eyes", "NaN")
    write_insta(root, written[1])
    (root / "flame/translation/00005.txt").write_text("0\ninf\n0\n")
    _expect(root, "translation/00005.txt", "flame/translation", "NaN/Inf")


def test_error_degenerate_6d(written):
    root = written[0]
    (root / "flame/jaw/00001.txt").write_text("1\n0\n0\n2\n0\n0\n")  # parallel rows
    _expect(root, "jaw/00001.txt", "flame/jaw", "not a valid 6D rotation")


def test_error_bad_transform(written):
    root = written[0]
    p = root / "transforms_test.json"
    data = json.loads(p.read_text())
    data["frames"][1]["transform_matrix"][0][0] = float("nan")
    p.write_text(json.dumps(data))
    _expect(root, "transforms_test.json frames[1]", "transform_matrix", "NaN")
    data["frames"][1]["transform_matrix"] = np.diag([2.0, 2.0, 2.0, 1.0]).tolist()
    p.write_text(json.dumps(data))
    _expect(root, "transforms_test.json frames[1]", "transform_matrix", "not a rigid")
    data["frames"][1]["transform_matrix"] = np.eye(3).tolist()
    p.write_text(json.dumps(data))
    _expect(root, "transforms_test.json frames[1]", "transform_matrix", "shape (3, 3)")


def test_error_missing_intrinsics_key(written):
    root = written[0]
    p = root / "transforms_train.json"
    data = json.loads(p.read_text())
    del data["fl_y"]
    p.write_text(json.dumps(data))
    _expect(root, "transforms_train.json", "'fl_y'")
    data["fl_y"] = 20.0
    data["w"] = 16.5
    p.write_text(json.dumps(data))
    _expect(root, "transforms_train.json", "'w'", "positive integer")


def test_error_image_wrong_size(written):
    root = written[0]
    write_png(root / "images/00002.png", np.zeros((H, W + 1, 3), np.uint8))
    _expect(root, "images/00002.png", "17x12", "expected 16x12", "file_path")


def test_error_image_wrong_mode(written):
    root = written[0]
    write_png(root / "images/00001.png", np.zeros((H, W), np.uint8))
    _expect(root, "images/00001.png", "8-bit gray", "expected 8-bit RGB")
    write_insta(root, written[1], written[2], written[3])  # restore
    _write_png16_rgb(root / "images/00004.png")
    _expect(root, "images/00004.png", "16-bit RGB")


def _write_png16_rgb(path: Path) -> None:
    """A 16-bit RGB PNG written by hand (Pillow cannot write 48-bit RGB)."""
    import struct
    import zlib

    raw = b"".join(b"\x00" + b"\x00" * (W * 6) for _ in range(H))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", W, H, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def test_error_duplicate_frame(written):
    root = written[0]
    p = root / "transforms_test.json"
    data = json.loads(p.read_text())
    data["frames"][0]["file_path"] = "images/00001.png"
    p.write_text(json.dumps(data))
    _expect(root, "'00001'", "appears twice", "transforms_train.json")


def test_error_mask_wrong_size_at_load(written):
    root = written[0]
    seq = read_insta(root, validate_images=False)
    write_png(root / "alpha/00003.png", np.zeros((H - 1, W), np.uint8))
    with pytest.raises(DatasetError, match=r"alpha/00003.png.*16x11"):
        seq.load_image(3)
    with pytest.raises(DatasetError, match=r"alpha/00003.png.*mask is 16x11"):
        read_insta(root)


def test_sequence_constructor_checks_and_casts(tmp_path):
    seq = make_sequence(tmp_path)
    fields = {k: getattr(seq, k) for k in seq.__dataclass_fields__}
    s64 = Sequence(**{**fields, "expr": seq.expr.double()})
    assert s64.expr.dtype == torch.float32 and torch.equal(s64.expr, seq.expr)
    with pytest.raises(DatasetError, match=r"field pose has shape \(6, 14\), expected \(6, 15\)"):
        Sequence(**{**fields, "pose": seq.pose[:, :14]})
    with pytest.raises(DatasetError, match="field translation has NaN"):
        Sequence(**{**fields, "translation": seq.translation * float("nan")})
    with pytest.raises(DatasetError, match=r"field split has values \['val'\]"):
        Sequence(**{**fields, "split": ["val"] * T})
    with pytest.raises(DatasetError, match="mask_paths has 5 entries for 6 frames"):
        Sequence(**{**fields, "mask_paths": fields["mask_paths"][:5]})
