"""Video files: H.264 ``.mp4`` writing through imageio-ffmpeg (or PyAV), published atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.errors import DemoError


def check_video_writer() -> str:
    """Name of the available mp4 writer ("imageio-ffmpeg" or "pyav").

    Raises:
        DemoError: neither is installed.
    """
    try:
        import imageio_ffmpeg  # noqa: F401
        return "imageio-ffmpeg"
    except ImportError:
        pass
    try:
        import av  # noqa: F401
        return "pyav"
    except ImportError:
        raise DemoError("the turntable video needs imageio-ffmpeg or PyAV: "
                        "pip install imageio-ffmpeg (the 'video' extra, installed by .ci/setup)") from None


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = 24) -> None:
    """Writes RGB uint8 frames [H, W, 3] (H, W even) as H.264 .mp4 (yuv420p)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    tmp = path.with_name(f".{path.stem}.tmp.mp4")
    if check_video_writer() == "imageio-ffmpeg":
        import imageio_ffmpeg

        writer = imageio_ffmpeg.write_frames(str(tmp), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                             quality=8, macro_block_size=1, ffmpeg_log_level="error")
        writer.send(None)
        for f in frames:
            writer.send(np.ascontiguousarray(f[..., :3], dtype=np.uint8))
        writer.close()
    else:
        import av

        with av.open(str(tmp), mode="w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            for f in frames:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[..., :3]), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    os.replace(tmp, path)
