"""Frames of a portrait video or of a folder of images, at a constant frame rate.

A video is decoded by ffmpeg (imageio-ffmpeg) through its ``fps`` filter, so a variable-frame-rate
phone video comes out at one constant rate (frame ``i`` shows time ``i / fps``; ffmpeg repeats or
drops frames by their timestamps) and a rotated phone video comes out upright (ffmpeg's
autorotation). A folder holds ``.png``/``.jpg`` frames sorted by the number in their names.
Frames are RGB ``uint8`` ``[H, W, 3]``, row 0 the top row; portrait and landscape are both fine.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import TrackError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_FOLDER_FPS = 25.0
"""Frame rate of a folder of frames when ``--fps`` is not given."""


@dataclass
class VideoInfo:
    """What the tracker knows about its input.

    Attributes:
        path: the video file or frames folder.
        kind: "video" or "frames".
        width, height: frame size, pixels (after autorotation).
        fps: frame rate of the frames delivered (constant).
        source_fps: the file's average frame rate (frames: = fps).
        frames: number of frames delivered (after ``max_frames``).
        variable_frame_rate: the file's frame count disagrees with duration x rate by more than
            2 % (it was resampled to ``fps``).
    """

    path: Path
    kind: str
    width: int
    height: int
    fps: float
    source_fps: float
    frames: int
    variable_frame_rate: bool = False


def _numeric_key(p: Path) -> tuple:
    nums = re.findall(r"\d+", p.stem)
    return (int(nums[-1]) if nums else -1, p.name)


def frame_files(folder: Path) -> list[Path]:
    """The image files of a frames folder, in frame order (the last number in the name)."""
    files = sorted((p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_numeric_key)
    if not files:
        raise TrackError(f"{folder}: no frames (.png/.jpg files) in this folder")
    return files


def _ffmpeg_meta(path: Path) -> dict:
    import imageio_ffmpeg

    try:
        gen = imageio_ffmpeg.read_frames(str(path))
        meta = next(gen)
        gen.close()
    except (OSError, RuntimeError, StopIteration) as exc:
        raise TrackError(f"{path}: cannot read this video ({str(exc).strip().splitlines()[-1] if str(exc) else exc})") \
            from exc
    if not meta.get("size") or not meta.get("fps"):
        raise TrackError(f"{path}: ffmpeg found no video stream (size/fps missing)")
    return meta


def probe(path: str | Path, fps: float = 0.0, max_frames: int = 0) -> VideoInfo:
    """Opens the input and describes the frames :func:`read_frames` will deliver.

    Args:
        path: video file or frames folder.
        fps: constant output frame rate (0 = the source's average rate; frames: 25).
        max_frames: deliver at most this many frames (0 = all).
    Raises:
        TrackError: missing path, unreadable video, empty folder or frames of different sizes.
    """
    path = Path(path)
    if not path.exists():
        raise TrackError(f"--video {path}: no such file or folder")
    if path.is_dir():
        files = frame_files(path)
        first = _read_image_file(files[0])
        rate = fps or DEFAULT_FOLDER_FPS
        n = len(files) if not max_frames else min(max_frames, len(files))
        return VideoInfo(path, "frames", first.shape[1], first.shape[0], rate, rate, n)
    import imageio_ffmpeg

    meta = _ffmpeg_meta(path)
    w, h = (int(x) for x in meta["size"])
    if meta.get("rotate") in (90, 270, -90):
        w, h = h, w
    src_fps = float(meta["fps"])
    rate = fps or src_fps
    duration = float(meta.get("duration") or 0.0)
    try:
        count, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except (OSError, RuntimeError):
        count = int(round(duration * src_fps))
    vfr = duration > 0 and abs(count - duration * src_fps) > max(2.0, 0.02 * count)
    n = int(round(duration * rate)) if duration > 0 else count
    n = max(n, 1)
    if max_frames:
        n = min(n, max_frames)
    return VideoInfo(path, "video", w, h, rate, src_fps, n, vfr)


def _read_image_file(p: Path) -> np.ndarray:
    import imageio.v3 as iio

    try:
        img = np.asarray(iio.imread(p))
    except Exception as exc:  # noqa: BLE001 - imageio raises many types for a bad file
        raise TrackError(f"{p}: cannot read this frame ({exc})") from exc
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise TrackError(f"{p}: expected an RGB(A) image, found shape {img.shape}")
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float64) / np.iinfo(img.dtype).max, 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(img[..., :3])


def read_frames(info: VideoInfo) -> Iterator[np.ndarray]:
    """Yields the ``info.frames`` frames, RGB uint8 ``[H, W, 3]``, at ``info.fps``.

    Raises:
        TrackError: a frame of another size (folders), or a decoding failure.
    """
    if info.kind == "frames":
        for p in frame_files(info.path)[: info.frames]:
            img = _read_image_file(p)
            if img.shape[:2] != (info.height, info.width):
                raise TrackError(f"{p}: frame is {img.shape[1]}x{img.shape[0]} px, the first frame is "
                                 f"{info.width}x{info.height}; one size per clip")
            yield img
        return
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(info.path), output_params=["-vf", f"fps={info.fps:.6f}"])
    try:
        meta = next(gen)
        w, h = (int(x) for x in meta["size"])
        if meta.get("rotate") in (90, 270, -90):
            w, h = h, w
        count = 0
        for raw in gen:
            if count >= info.frames:
                break
            frame = np.frombuffer(raw, np.uint8)
            if frame.size != w * h * 3:
                raise TrackError(f"{info.path}: decoded frame {count} has {frame.size} bytes, expected {w}x{h}x3")
            yield frame.reshape(h, w, 3)
            count += 1
    except RuntimeError as exc:
        raise TrackError(f"{info.path}: decoding failed ({exc})") from exc
    finally:
        gen.close()
