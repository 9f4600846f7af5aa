"""IMavatar / NerFace dataset layout (DECA-based preprocessing): reader.

Layouts accepted (``root`` is what the user points at)::

    root/flame_params.json            one folder; frames listed in order
    root/flame_params_test.json       (optional) test frames of the same folder
    root/image/1.png ...              images (``file_path`` is "./image/1", no extension)
    root/mask/1.png ...               masks
    root/matted/1.png ...             (optional) RGBA images, clothing removed

  or FATE's layout, one folder per split::

    root/<subject>_train/flame_params.json, image/, mask/, matted/
    root/<subject>_test/flame_params.json,  image/, mask/, matted/
    (plain ``train/`` and ``test/`` folder names work too)

``flame_params.json`` (written by IMavatar ``preprocess/DECA/optimize.py``)::

    {"shape_params": [100],
     "intrinsics": [fx, fy, cx, cy],        # normalised by the image size, fx NEGATED
     "frames": [{"file_path": "./image/1",
                 "world_mat": 3x4,           # world→camera, OpenGL axes, FLAME scaled by 4
                 "expression": [50],
                 "pose": [15],               # FLAME full pose, axis-angle
                 "bbox", "flame_keypoints": ...}]}

Conventions, checked against IMavatar (``optimize.py`` projection, ``real_dataset.py``,
``rend_util.get_camera_params``) and FATE (``train/dataset.py::IMAvatarDataset``):

- ``world_mat`` maps FLAME×4 coordinates into a camera that looks down −z (IMavatar
  divides by z < 0 and lifts pixels at depth −1): OpenGL axes. Pixel
  ``u = fx·x/z + cx``, ``v = fy·y/z + cy`` with the stored (normalised × size) ``fx < 0``,
  ``fy > 0``. Hence ``viewmat = diag(−sgn fx, −sgn fy, −1, 1) @ [R | t / 4]``, which for
  the standard signs is :func:`engine.geometry.cameras.opengl_w2c_to_opencv_w2c`; signs that
  would mirror the image (sgn fx = sgn fy) are rejected. FATE divides the translation
  by 4 too and, for IMavatar's identity rotation, its chain of axis flips gives the same
  camera.
- ``K = [[|fx|·W, 0, cx·W], [0, |fy|·H, cy·H], [0, 0, 1]]``. Old files with pixel
  intrinsics for 512² images (``cy > 1``, IMavatar's "old format") are divided by 512.
- ``pose`` is already FLAME's 15-dim [root, neck, jaw, left_eye, right_eye] axis-angle
  (IMavatar puts DECA's head rotation in the neck slot); translation is zero (the camera
  carries it).
- Images: ``matted/`` (RGBA, clothing removed) when that folder exists, as FATE does
  (``image`` → ``matted`` in the path); otherwise ``image/``. Masks: ``mask/`` (same
  relative path), used when the image has no alpha. IMavatar binarises masks at 127.5;
  we keep the soft values.
- Split: the folder a frame's json is in (``*_train`` / ``*_test``) or
  ``flame_params_test.json``; with a single json, the last ``test_fraction`` of the
  frames (rounded down) are test frames. In the two-folder layout frame names are
  prefixed with the split (``train_1``, ``test_1``), since both folders count from 1.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch

from engine.data.checks import (
    check_finite,
    check_image_file,
    check_mask_file,
    check_rigid,
    read_image_header,
    stack_vectors,
)
from engine.data.sequence import POSE_DIM, Sequence
from engine.errors import DatasetError
from engine.geometry.cameras import (
    normalized_to_pixel_intrinsics,
    opengl_w2c_to_opencv_w2c,
)

log = logging.getLogger(__name__)

__all__ = ["read_imavatar", "find_imavatar_jsons", "PARAMS_JSON"]

PARAMS_JSON = "flame_params.json"
TEST_PARAMS_JSON = "flame_params_test.json"
#: IMavatar scales FLAME by 4 "to fit the unit sphere"; world_mat translations use it.
IMAVATAR_FLAME_SCALE = 4.0
#: Old IMavatar files store pixel intrinsics for this image size.
_OLD_FORMAT_SIZE = 512.0


def _split_of_folder(name: str) -> str | None:
    low = name.lower()
    if low == "train" or low.endswith("_train"):
        return "train"
    if low == "test" or low.endswith("_test"):
        return "test"
    return None


def find_imavatar_jsons(root: str | Path) -> list[tuple[str, Path]]:
    """Finds the ``flame_params`` jsons of an IMavatar dataset and the split of each.

    Returns:
        ``[(split, json_path), ...]`` with split ``"train"``, ``"test"`` or ``"auto"``
        (single json: test = last frames); empty when there is none.
    Raises:
        DatasetError: subfolders with ``flame_params.json`` whose split cannot be told.
    """
    root = Path(root)
    if (root / PARAMS_JSON).is_file():
        if (root / TEST_PARAMS_JSON).is_file():
            return [("train", root / PARAMS_JSON), ("test", root / TEST_PARAMS_JSON)]
        return [("auto", root / PARAMS_JSON)]
    if not root.is_dir():
        return []
    found = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if (sub / PARAMS_JSON).is_file():
            split = _split_of_folder(sub.name)
            if split is None:
                raise DatasetError(f"{sub / PARAMS_JSON}: cannot tell the split of folder "
                                   f"{sub.name!r}; name folders <subject>_train / <subject>_test")
            found.append((split, sub / PARAMS_JSON))
    found.sort(key=lambda sj: (sj[0] != "train", str(sj[1])))
    return found


def _load_json(path: Path) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot parse JSON ({e})") from e
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _vector(value, where: str, key: str, length: int | None = None) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{where}: {key} is not a list of numbers ({e})") from e
    if a.ndim != 1 or a.size == 0:
        raise DatasetError(f"{where}: {key} must be a flat list of numbers, found shape {a.shape}")
    if length is not None and a.size != length:
        raise DatasetError(f"{where}: {key} has {a.size} values, expected {length}")
    check_finite(a, where, key)
    return a


def _camera_axes(intr: np.ndarray, where: str) -> tuple[float, float]:
    """Signs (s_x, s_y) turning IMavatar camera axes into OpenCV ones (see module doc)."""
    fx, fy = intr[0], intr[1]
    if fx == 0 or fy == 0:
        raise DatasetError(f"{where}: intrinsics {intr.tolist()} has a zero focal length")
    sx, sy = -math.copysign(1.0, fx), -math.copysign(1.0, fy)
    if sx * sy > 0:
        raise DatasetError(
            f"{where}: intrinsics fx={fx}, fy={fy} have the same sign, which describes a "
            "mirrored image; IMavatar stores fx negated (fx < 0, fy > 0)")
    return sx, sy


def _frame_paths(folder: Path, file_path: str, use_matted: bool) -> tuple[Path, Path, str]:
    """Image path, mask path and frame name for one ``file_path`` ("./image/1")."""
    rel = Path(file_path)
    if not rel.suffix:
        rel = rel.with_suffix(".png")
    parts = rel.parts
    tail = Path(*parts[1:]) if len(parts) > 1 and parts[0] == "image" else Path(rel.name)
    image = folder / ("matted" / tail if use_matted else rel)
    mask = folder / "mask" / tail
    return image, mask, rel.stem


def read_imavatar(root: str | Path, test_fraction: float = 0.2,
                  flame_scale: float = IMAVATAR_FLAME_SCALE,
                  validate_images: bool = True) -> Sequence:
    """Reads an IMavatar/NerFace-layout dataset (module docstring: layouts, conventions).

    Args:
        root: the dataset folder.
        test_fraction: with a single json, this fraction of the last frames (rounded
            down) becomes the test split.
        flame_scale: the FLAME scale the ``world_mat`` translations assume (IMavatar: 4).
        validate_images: check every image/mask header (existence, one size, 8-bit
            RGB/RGBA, a mask wherever the image has no alpha).
    Returns:
        The sequence (train frames first), float32 tensors, zero ``translation``.
    Raises:
        DatasetError: naming the file and the field — no json, missing keys or frame
            files, ragged/NaN parameters, non-rigid ``world_mat``, mirrored intrinsics,
            images of the wrong size or mode, missing masks.
    """
    root = Path(root)
    jsons = find_imavatar_jsons(root)
    if not jsons:
        raise DatasetError(f"{root}: {PARAMS_JSON} not found in the folder or in "
                           "*_train/*_test subfolders (IMavatar layout)")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), found {test_fraction}")
    two_folders = len({p.parent for _, p in jsons}) > 1

    names, splits, images, masks = [], [], [], []
    expr_v, pose_v, srcs, viewmats, Ks_norm, shape = [], [], [], [], [], None
    shape_src = None
    for split, jpath in jsons:
        data = _load_json(jpath)
        folder = jpath.parent
        for key in ("frames", "intrinsics", "shape_params"):
            if key not in data:
                raise DatasetError(f"{jpath}: key {key!r} missing")
        intr = _vector(data["intrinsics"], str(jpath), "intrinsics", 4)
        if intr[3] > 1.0:  # IMavatar's "old format": pixels for 512 x 512 images
            intr = intr / _OLD_FORMAT_SIZE
        sx, sy = _camera_axes(intr, str(jpath))
        shp = _vector(data["shape_params"], str(jpath), "shape_params")
        if shape is None:
            shape, shape_src = shp, jpath
        elif shp.shape != shape.shape:
            raise DatasetError(f"{jpath}: shape_params has {shp.size} values, {shape_src} has "
                               f"{shape.size} (ragged parameters)")
        elif not np.array_equal(shp, shape):
            log.warning("%s: shape_params differ from %s by up to %.3g; using the latter",
                        jpath, shape_src, float(np.abs(shp - shape).max()))
        frames = data["frames"]
        if not isinstance(frames, list) or not frames:
            raise DatasetError(f"{jpath}: key 'frames' must be a non-empty list")
        use_matted = (folder / "matted").is_dir()
        n_frames = len(frames)
        n_test = int(math.floor(n_frames * test_fraction + 1e-9)) if split == "auto" else 0
        for k, fr in enumerate(frames):
            where = f"{jpath} frames[{k}]"
            if not isinstance(fr, dict):
                raise DatasetError(f"{where}: expected an object, found {type(fr).__name__}")
            for key in ("file_path", "world_mat", "expression", "pose"):
                if key not in fr:
                    raise DatasetError(f"{where}: key {key!r} missing")
            if not isinstance(fr["file_path"], str) or not fr["file_path"]:
                raise DatasetError(f"{where}: key 'file_path' must be a non-empty string")
            w2c_gl = check_rigid(fr["world_mat"], where, "world_mat")
            w2c_gl[:3, 3] /= flame_scale
            view = opengl_w2c_to_opencv_w2c(w2c_gl)
            if (sx, sy) != (1.0, -1.0):  # fx > 0, fy < 0: camera rolled by 180°
                view = np.diag([-1.0, -1.0, 1.0, 1.0]) @ view
            viewmats.append(view)
            Ks_norm.append(intr)
            expr_v.append(_vector(fr["expression"], where, "expression"))
            pose_v.append(_vector(fr["pose"], where, "pose"))
            srcs.append(where)
            img, msk, stem = _frame_paths(folder, fr["file_path"], use_matted)
            names.append(f"{split}_{stem}" if two_folders else stem)
            images.append(img)
            masks.append(msk)
            fr_split = split if split != "auto" else ("test" if k >= n_frames - n_test else "train")
            splits.append(fr_split)

    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:5]
        raise DatasetError(f"{root}: duplicate frame file paths {dup}")
    expr = stack_vectors(expr_v, srcs, "expression")
    pose = stack_vectors(pose_v, srcs, "pose", POSE_DIM)

    # Image size from the first image; then every frame is checked against it.
    first = images[0]
    if not first.is_file():
        raise DatasetError(f"{first}: image file not found ({srcs[0]}.file_path)")
    hd = read_image_header(first)
    width, height = hd.width, hd.height
    mask_paths: list[Path | None] = []
    for img, msk, src in zip(images, masks, srcs):
        has_alpha = None
        if validate_images:
            desc = f"{src}.file_path" + ("" if img == first else f"; size of {first.name}")
            has_alpha = check_image_file(img, width, height, desc).channels == 4
        if msk.is_file():
            if validate_images:
                check_mask_file(msk, width, height, f"mask of {src}")
            mask_paths.append(msk)
        elif has_alpha is False:
            if not msk.parent.is_dir():
                raise DatasetError(f"{msk.parent}: masks folder missing, and image {img} has no "
                                   "alpha channel (masks are needed to composite)")
            raise DatasetError(f"{msk}: mask file not found (mask of {src}; image {img} has no "
                               "alpha channel)")
        else:
            mask_paths.append(None)

    Ks = np.stack([normalized_to_pixel_intrinsics(abs(i[0]), abs(i[1]), i[2], i[3], width, height)
                   for i in Ks_norm])
    T = len(names)
    f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    order = sorted(range(T), key=lambda i: splits[i] != "train")  # train first, stable
    seq = Sequence(
        root=root,
        frame_names=[names[i] for i in order],
        shape=f32(shape),
        expr=f32(expr[order]),
        pose=f32(pose[order]),
        translation=torch.zeros(T, 3),
        viewmats=f32(np.stack(viewmats)[order]),
        Ks=f32(Ks[order]),
        width=width,
        height=height,
        image_paths=[images[i] for i in order],
        mask_paths=[mask_paths[i] for i in order],
        split=[splits[i] for i in order],
    )
    log.info("read IMavatar sequence %s: %d frames (%d train, %d test), %dx%d, S=%d, E=%d",
             root, T, len(seq.indices("train")), len(seq.indices("test")), width, height,
             shape.size, expr.shape[1])
    return seq
