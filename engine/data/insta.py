"""INSTA dataset layout (as written by FATE's modified INSTA script): reader and writer.

Layout (one folder)::

    transforms_train.json, transforms_test.json
        {"fl_x", "fl_y", "cx", "cy", "w", "h",            # pixels (INSTA writes floats)
         "frames": [{"file_path": "images/00000.png",
                     "transform_matrix": 4x4,             # camera→world, OpenCV axes
                     "exp_path": "flame/exp/00000.txt", ...}]}
    images/NNNNN.png      8-bit RGBA (background and clothing removed) or RGB
    alpha/NNNNN.png       8-bit mask (0 = background)
    flame/shape/NNNNN.txt  S floats (the tracker writes the same shape every frame)
    flame/exp/NNNNN.txt    E floats (100 for the metrical tracker)
    flame/jaw/NNNNN.txt    6 floats, 6D rotation of the jaw joint
    flame/eyes/NNNNN.txt   12 floats: 6D of FLAME joint 3 (left eye), then 6D of joint 4
    flame/neck, flame/rotation (6D each), flame/translation (3 floats, meters):
        written only by :func:`write_insta` so that any :class:`Sequence` round-trips;
        original INSTA data lacks them and they default to identity / zero.

Conventions, checked against the producer (INSTA ``scripts/transforms.py`` on the
metrical tracker's output) and the consumer (FATE ``train/dataset.py::InstaDataset``):

- ``transform_matrix`` is ``inv(w2c)`` of the tracker's **OpenCV** camera (pytorch3d's
  ``opencv_from_cameras_projection``); FATE inverts it and hands it to the 3DGS
  rasteriser (OpenCV/COLMAP axes) with no axis flip. So ``viewmat = inv(transform_matrix)``
  (:func:`engine.geometry.cameras.c2w_to_w2c`), not the NeRF OpenGL flip.
- 6D rotations are PyTorch3D's (first two rows of R, Gram–Schmidt):
  :func:`engine.geometry.rotations.rotation_6d_to_matrix`, then axis-angle.
- FLAME pose = [root, neck, jaw, left_eye, right_eye]; root and neck are identity in
  INSTA data (the head rotation lives in the camera: FATE's ``rot_camera = True``).
- Eyes: the tracker's FLAME concatenates ``[rot, neck, jaw, eyes]`` as 6D blocks, so
  ``eyes[0:6]`` drives joint 3 (left_eye) and ``eyes[6:12]`` joint 4 (right_eye); we
  follow the producer. (FATE's loader assigns them the other way round,
  ``eyes[6:]`` → joint 3; the two eyes' rotations are nearly equal in tracked data.)
- Intrinsics: ``K = [[fl_x, 0, cx], [0, fl_y, cy], [0, 0, 1]]`` in pixels. (FATE keeps
  only a field of view, i.e. assumes a centred principal point; we keep cx, cy.)
  Per-frame ``fl_x``/``fl_y``/``cx``/``cy`` keys, when present, override the global ones.
- Frames: train frames then test frames, each json's frames sorted by their number
  (FATE sorts by ``int(stem)``); ``split`` records which json a frame came from.
  ``transforms_val.json`` (a subset of test in INSTA) is ignored.
- Shape: taken from the first train frame's file, as FATE does (others are checked
  and a warning is logged if they differ).
- Masks: FATE composites with the alpha channel of ``images/`` (RGBA) and does not read
  ``alpha/``; so do we when the image has alpha, else ``alpha/`` is required.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import torch

from engine.data.checks import (
    check_finite,
    check_image_file,
    check_mask_file,
    check_rigid,
    numeric_sort_key,
    read_float_file,
    stack_vectors,
)
from engine.data.sequence import JOINT_SLICES, POSE_DIM, Sequence
from engine.errors import DatasetError
from engine.geometry.cameras import c2w_to_w2c
from engine.geometry.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_rotation_6d,
    rotation_6d_to_matrix,
)
from engine.io.atomic import write_text

log = logging.getLogger(__name__)

__all__ = ["read_insta", "write_insta", "TRAIN_JSON", "TEST_JSON", "FORMAT_NAME"]

TRAIN_JSON = "transforms_train.json"
TEST_JSON = "transforms_test.json"
#: ``"format"`` value of the json files :func:`write_insta` writes.
FORMAT_NAME = "fate-insta"
FORMAT_VERSION = 1

IMAGES_DIR = "images"
MASKS_DIR = "alpha"
FLAME_DIR = "flame"
#: Optional parameter folders written by :func:`write_insta` (absent in INSTA data).
OPTIONAL_6D = {"rotation": "root", "neck": "neck"}

#: |value| below which an inverted matrix entry is treated as an exact zero (meters or
#: rotation-matrix units; 1e-13 is ~1000 float64 ulps of 1 and far below any real value).
_ZERO_SNAP = 1e-13

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def _as_int_size(value, where: str, key: str) -> int:
    """INSTA writes every global key as float (``512.0``); accept integral numbers only."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DatasetError(f"{where}: key {key!r} must be a number, found {value!r}")
    if not (math.isfinite(value) and value > 0 and abs(value - round(value)) < 1e-6):
        raise DatasetError(f"{where}: key {key!r} must be a positive integer, found {value!r}")
    return int(round(value))


def _number(d: dict, key: str, where: str) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise DatasetError(f"{where}: key {key!r} must be a finite number, found {v!r}")
    return float(v)


def _load_json(path: Path) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: file not found") from e
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot parse JSON ({e})") from e
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _decode_6d(d6: np.ndarray, sources: list[str], field_desc: str) -> np.ndarray:
    """6D rotations → axis-angle (float64), rejecting degenerate 6D vectors.

    Args:
        d6: [T, 6] float64.
    Returns:
        [T, 3] float64 axis-angle, radians.
    """
    a1, a2 = d6[:, :3], d6[:, 3:]
    n1 = np.linalg.norm(a1, axis=1)
    ortho = a2 - (np.sum(a1 * a2, axis=1) / np.maximum(n1, 1e-300) ** 2)[:, None] * a1
    bad = np.flatnonzero((n1 < 1e-8) | (np.linalg.norm(ortho, axis=1) < 1e-8))
    if bad.size:
        i = int(bad[0])
        raise DatasetError(f"{sources[i]}: {field_desc} {d6[i].tolist()} is not a valid 6D "
                           "rotation (zero or parallel rows)")
    t = torch.from_numpy(d6)
    return matrix_to_axis_angle(rotation_6d_to_matrix(t)).numpy()


def _encode_6d(axis_angle: np.ndarray) -> np.ndarray:
    """Axis-angle [..., 3] → 6D [..., 6], computed in float64."""
    t = torch.from_numpy(np.asarray(axis_angle, dtype=np.float64))
    return matrix_to_rotation_6d(axis_angle_to_matrix(t)).numpy()


def _read_split(root: Path, json_name: str, split: str) -> list[dict]:
    """Parses one transforms json into per-frame records (no parameter files yet)."""
    path = root / json_name
    data = _load_json(path)
    version = data.get("format_version") if data.get("format") == FORMAT_NAME else None
    if version is not None and (not isinstance(version, int) or version > FORMAT_VERSION):
        raise DatasetError(f"{path}: format_version {version!r} is newer than this engine reads ({FORMAT_VERSION})")
    frames = data.get("frames")
    if not isinstance(frames, list):
        raise DatasetError(f"{path}: key 'frames' must be a list, found {type(frames).__name__}")
    records = []
    for k, fr in enumerate(frames):
        where = f"{path} frames[{k}]"
        if not isinstance(fr, dict):
            raise DatasetError(f"{where}: expected an object, found {type(fr).__name__}")
        fp = fr.get("file_path")
        if not isinstance(fp, str) or not fp:
            raise DatasetError(f"{where}: key 'file_path' missing or not a string")
        if "transform_matrix" not in fr:
            raise DatasetError(f"{where}: key 'transform_matrix' missing")
        c2w = check_rigid(fr["transform_matrix"], where, "transform_matrix")
        intr = {}
        for key in ("fl_x", "fl_y", "cx", "cy"):
            src = fr if key in fr else data
            intr[key] = _number(src, key, where if key in fr else str(path))
        for key in ("w", "h"):
            src = fr if key in fr else data
            if key not in src:
                raise DatasetError(f"{path}: key {key!r} (image size) missing")
            intr[key] = _as_int_size(src[key], where if key in fr else str(path), key)
        if intr["fl_x"] <= 0 or intr["fl_y"] <= 0:
            raise DatasetError(f"{where}: focal lengths fl_x={intr['fl_x']}, fl_y={intr['fl_y']} "
                               "must be positive")
        exp_rel = fr.get("exp_path")
        if exp_rel is not None and not isinstance(exp_rel, str):
            raise DatasetError(f"{where}: key 'exp_path' must be a string, found {exp_rel!r}")
        stem = Path(fp).stem
        records.append({
            "name": stem, "file_path": fp, "c2w": c2w, "intr": intr, "split": split,
            "exp_file": root / (exp_rel if exp_rel else f"{FLAME_DIR}/exp/{stem}.txt"),
            "where": where,
        })
    records.sort(key=lambda r: numeric_sort_key(r["name"]))
    return records


def _param_file(rec: dict, param: str) -> Path:
    """flame/<param>/<name>.txt next to the frame's exp file (FATE: ``exp_path.replace``)."""
    exp_file: Path = rec["exp_file"]
    return exp_file.parent.parent / param / exp_file.name


def read_insta(root: str | Path, validate_images: bool = True) -> Sequence:
    """Reads an INSTA-layout folder (see the module docstring for layout and conventions).

    Args:
        root: the dataset folder (holding ``transforms_train.json``).
        validate_images: check every image/mask header (existence, size = json ``w``×``h``,
            8-bit RGB/RGBA; a mask wherever the image has no alpha). Reading headers only,
            this costs a few ms per hundred frames.
    Returns:
        The sequence: train frames then test frames; ``translation`` zero unless
        ``flame/translation`` exists; float32 tensors.
    Raises:
        DatasetError: naming the file and the field — missing json/frame files, ragged or
            NaN/Inf parameters, non-rigid transforms, images of the wrong size or mode,
            missing masks, duplicate frames, inconsistent image sizes.
    """
    root = Path(root)
    if not (root / TRAIN_JSON).is_file():
        raise DatasetError(f"{root}: {TRAIN_JSON} not found (INSTA layout)")
    records = _read_split(root, TRAIN_JSON, "train")
    if not records:
        raise DatasetError(f"{root / TRAIN_JSON}: key 'frames' is empty")
    if (root / TEST_JSON).is_file():
        records += _read_split(root, TEST_JSON, "test")
    else:
        log.warning("%s: %s not found; the sequence has no test frames", root, TEST_JSON)

    seen: dict[str, str] = {}
    for r in records:
        if r["name"] in seen:
            raise DatasetError(f"{r['where']}: frame {r['name']!r} appears twice "
                               f"(also in {seen[r['name']]})")
        seen[r["name"]] = r["where"]
    sizes = {(r["intr"]["w"], r["intr"]["h"]) for r in records}
    if len(sizes) != 1:
        raise DatasetError(f"{root}: frames have different image sizes {sorted(sizes)} "
                           "(w, h); one size per sequence is supported")
    width, height = sizes.pop()

    # FLAME parameters.
    def read_all(param: str, expected_len: int | None) -> np.ndarray:
        files = [_param_file(r, param) if param != "exp" else r["exp_file"] for r in records]
        vecs = [read_float_file(f, f"{FLAME_DIR}/{param} of frame {r['name']!r}")
                for f, r in zip(files, records)]
        return stack_vectors(vecs, [str(f) for f in files], f"{FLAME_DIR}/{param}", expected_len)

    exp = read_all("exp", None)
    jaw6 = read_all("jaw", 6)
    eyes6 = read_all("eyes", 12)
    shape_file = _param_file(records[0], "shape")
    shape = read_float_file(shape_file, f"{FLAME_DIR}/shape of frame {records[0]['name']!r}")
    _check_other_shapes(records, shape, shape_file)

    T = len(records)
    pose = np.zeros((T, POSE_DIM))
    srcs = lambda p: [str(_param_file(r, p)) for r in records]  # noqa: E731
    pose[:, JOINT_SLICES["jaw"]] = _decode_6d(jaw6, srcs("jaw"), "flame/jaw")
    pose[:, JOINT_SLICES["left_eye"]] = _decode_6d(eyes6[:, :6], srcs("eyes"), "flame/eyes[0:6]")
    pose[:, JOINT_SLICES["right_eye"]] = _decode_6d(eyes6[:, 6:], srcs("eyes"), "flame/eyes[6:12]")
    flame_root = records[0]["exp_file"].parent.parent
    for param, joint in OPTIONAL_6D.items():
        if (flame_root / param).is_dir():
            pose[:, JOINT_SLICES[joint]] = _decode_6d(read_all(param, 6), srcs(param),
                                                      f"flame/{param}")
    translation = np.zeros((T, 3))
    if (flame_root / "translation").is_dir():
        translation = read_all("translation", 3)

    viewmats = c2w_to_w2c(np.stack([r["c2w"] for r in records]))
    # Entries this small are float64 round-off of exact zeros (e.g. look-at cameras);
    # zeroing them makes write_insta → read_insta exact for such cameras too.
    viewmats[np.abs(viewmats) < _ZERO_SNAP] = 0.0
    Ks = np.zeros((T, 3, 3))
    for i, r in enumerate(records):
        it = r["intr"]
        Ks[i] = [[it["fl_x"], 0.0, it["cx"]], [0.0, it["fl_y"], it["cy"]], [0.0, 0.0, 1.0]]

    image_paths = [root / r["file_path"] for r in records]
    mask_paths = [root / MASKS_DIR / Path(r["file_path"]).name for r in records]
    mask_dir_exists = (root / MASKS_DIR).is_dir()
    out_masks: list[Path | None] = []
    for r, ip, mp in zip(records, image_paths, mask_paths):
        field_desc = f"{r['where']}.file_path"
        has_alpha = None
        if validate_images:
            has_alpha = check_image_file(ip, width, height, field_desc).channels == 4
        if mp.is_file():
            if validate_images:
                check_mask_file(mp, width, height, f"mask of frame {r['name']!r}")
            out_masks.append(mp)
        elif has_alpha is False:
            if not mask_dir_exists:
                raise DatasetError(f"{root / MASKS_DIR}: masks folder missing, and image {ip} "
                                   "has no alpha channel (masks are needed to composite)")
            raise DatasetError(f"{mp}: mask file not found (mask of frame {r['name']!r}; "
                               f"image {ip} has no alpha channel)")
        else:
            out_masks.append(None)

    f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    seq = Sequence(
        root=root,
        frame_names=[r["name"] for r in records],
        shape=f32(shape),
        expr=f32(exp),
        pose=f32(pose),
        translation=f32(translation),
        viewmats=f32(viewmats),
        Ks=f32(Ks),
        width=width,
        height=height,
        image_paths=image_paths,
        mask_paths=out_masks,
        split=[r["split"] for r in records],
    )
    log.info("read INSTA sequence %s: %d frames (%d train, %d test), %dx%d, S=%d, E=%d",
             root, T, len(seq.indices("train")), len(seq.indices("test")), width, height,
             shape.size, exp.shape[1])
    return seq


def _check_other_shapes(records: list[dict], shape: np.ndarray, first: Path) -> None:
    """Warns when other frames' shape files differ from the first (FATE uses the first)."""
    worst, worst_file = 0.0, None
    for r in records[1:]:
        f = _param_file(r, "shape")
        if not f.is_file():
            continue
        other = read_float_file(f, f"{FLAME_DIR}/shape of frame {r['name']!r}")
        if other.shape != shape.shape:
            raise DatasetError(f"{f}: {FLAME_DIR}/shape has {other.size} values, first frame "
                               f"({first}) has {shape.size} (ragged parameters)")
        d = float(np.abs(other - shape).max())
        if d > worst:
            worst, worst_file = d, f
    if worst_file is not None:
        log.warning("%s differs from %s by up to %.3g; using the first frame's shape (as FATE)",
                    worst_file, first, worst)


# --------------------------------------------------------------------------------------
# Writer


def _fmt32(x: float) -> str:
    """Shortest-enough text for a float32 value: ``%.9g`` round-trips every float32."""
    return "%.9g" % x


def _fmt64(x: float) -> str:
    """``repr`` round-trips every float64."""
    return repr(float(x))


def _write_vector(path: Path, values: np.ndarray, fmt) -> None:
    """One value per line, like ``np.savetxt`` of a 1D array (what INSTA writes)."""
    write_text(path, "".join(fmt(float(v)) + "\n" for v in np.asarray(values).reshape(-1)))


def _frame_file_names(seq: Sequence) -> list[str]:
    names = list(seq.frame_names)
    if len(set(names)) == len(names) and all(_SAFE_NAME.match(n) for n in names):
        return names
    log.warning("frame names are not all safe file names; writing frames as 00000, 00001, ...")
    return [f"{i:05d}" for i in range(len(names))]


def write_insta(root: str | Path, seq: Sequence,
                images: list[np.ndarray] | None = None,
                masks: list[np.ndarray] | None = None) -> list[str]:
    """Writes ``seq`` in the INSTA layout (module docstring), atomically file by file.

    Writes ``transforms_train.json`` / ``transforms_test.json`` (``"format": "fate-insta"``,
    ``"format_version": 1`` plus the INSTA keys; ``transform_matrix = inv(viewmat)``, i.e.
    camera→world in OpenCV axes), ``flame/{shape,exp,jaw,eyes}`` as INSTA has them and
    ``flame/{neck,rotation,translation}`` (our additions) so that
    ``read_insta(root)`` reproduces ``seq`` exactly when ``seq`` lists its train frames
    before its test frames, each in frame-number order (the order :func:`read_insta`
    returns). Numbers: float32 values as ``%.9g``, 6D rotations and matrices (computed in
    float64) with ``repr``; both round-trip exactly.

    Args:
        root: output folder (created).
        seq: the sequence; its frame names become file names (renumbered 00000… when
            they are not unique ``[A-Za-z0-9_-]+`` names).
        images: per frame, ``[H, W, 3]`` or ``[H, W, 4]`` uint8 (or float in [0, 1]) of
            size ``seq.height`` × ``seq.width``, written to ``images/NAME.png``; ``None``
            writes no images (e.g. when they are already in place).
        masks: per frame, ``[H, W]`` or ``[H, W, 1]`` uint8/float/bool, written to
            ``alpha/NAME.png``; ``None`` writes none (RGBA images carry their own mask).
    Returns:
        The frame file names written (without extension). [T]
    Raises:
        DatasetError: wrong image/mask count or size, intrinsics that INSTA cannot hold
            (skew or a non-[0, 0, 1] last row).
    """
    from engine.io.images import write_png

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    T = len(seq)
    names = _frame_file_names(seq)
    H, W = seq.height, seq.width

    for label, arrs, chans in (("images", images, (3, 4)), ("masks", masks, (1,))):
        if arrs is None:
            continue
        if len(arrs) != T:
            raise DatasetError(f"write_insta {root}: {len(arrs)} {label} for {T} frames")
        for i, a in enumerate(arrs):
            a = np.asarray(a)
            c = 1 if a.ndim == 2 else (a.shape[2] if a.ndim == 3 else -1)
            if a.shape[:2] != (H, W) or c not in chans:
                raise DatasetError(f"write_insta {root}: {label}[{i}] has shape {a.shape}, "
                                   f"expected ({H}, {W}{', C' if label == 'images' else ''}) "
                                   f"with C in {chans}")

    Ks = seq.Ks.detach().cpu().numpy().astype(np.float64)
    if (np.abs(Ks[:, 0, 1]) > 0).any() or (np.abs(Ks[:, 1, 0]) > 0).any() or \
            not np.array_equal(Ks[:, 2], np.tile([0.0, 0.0, 1.0], (T, 1))):
        raise DatasetError(f"write_insta {root}: Ks must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] "
                           "(INSTA has no skew)")
    view = seq.viewmats.detach().cpu().numpy().astype(np.float64)
    c2w = c2w_to_w2c(view)  # its own inverse: camera→world, OpenCV axes
    pose = seq.pose.detach().cpu().numpy().astype(np.float64)
    expr = seq.expr.detach().cpu().numpy()
    shape = seq.shape.detach().cpu().numpy()
    transl = seq.translation.detach().cpu().numpy()
    check_finite(pose, f"write_insta {root}", "pose")

    d6 = {param: _encode_6d(pose[:, JOINT_SLICES[joint]]) for param, joint in
          (("jaw", "jaw"), ("rotation", "root"), ("neck", "neck"))}
    d6["eyes"] = np.concatenate([_encode_6d(pose[:, JOINT_SLICES["left_eye"]]),
                                 _encode_6d(pose[:, JOINT_SLICES["right_eye"]])], axis=1)
    flame = root / FLAME_DIR
    for i, n in enumerate(names):
        _write_vector(flame / "shape" / f"{n}.txt", shape, _fmt32)
        _write_vector(flame / "exp" / f"{n}.txt", expr[i], _fmt32)
        _write_vector(flame / "translation" / f"{n}.txt", transl[i], _fmt32)
        for param, arr in d6.items():
            _write_vector(flame / param / f"{n}.txt", arr[i], _fmt64)
        if images is not None:
            write_png(root / IMAGES_DIR / f"{n}.png", np.asarray(images[i]))
        if masks is not None:
            write_png(root / MASKS_DIR / f"{n}.png", np.asarray(masks[i]))

    same_K = bool((Ks == Ks[:1]).all())
    K0 = Ks[0]
    for split, json_name in (("train", TRAIN_JSON), ("test", TEST_JSON)):
        frames = []
        for i in seq.indices(split):
            fr = {
                "file_path": f"{IMAGES_DIR}/{names[i]}.png",
                "transform_matrix": c2w[i].tolist(),
                "exp_path": f"{FLAME_DIR}/exp/{names[i]}.txt",
            }
            if not same_K:
                fr.update(fl_x=Ks[i, 0, 0], fl_y=Ks[i, 1, 1], cx=Ks[i, 0, 2], cy=Ks[i, 1, 2])
            frames.append(fr)
        data = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "fl_x": K0[0, 0], "fl_y": K0[1, 1], "cx": K0[0, 2], "cy": K0[1, 2],
            "w": W, "h": H,
            "camera_angle_x": 2.0 * math.atan(W / (2.0 * K0[0, 0])),
            "camera_angle_y": 2.0 * math.atan(H / (2.0 * K0[1, 1])),
            "frames": frames,
        }
        write_text(root / json_name, json.dumps(data, indent=1))
    log.info("wrote INSTA sequence %s: %d frames", root, T)
    return names
