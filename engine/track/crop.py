"""One fixed square crop around the head for the whole clip, and the camera it implies.

The crop is square, centred on the faces' median centre, with side ``crop_scale`` x the size of
the union of the face boxes (robust: 5th–95th percentiles of the box edges), so the head, the hair
and the neck stay inside while the head moves. Parts of the crop outside the frame are filled with
black (they are masked out). Portrait and landscape frames give the same square.

Pixel convention: continuous coordinates with pixel centres at integer + 0.5 (the engine's); a
frame pixel ``u`` maps to ``(u - x0) * scale`` in the crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import TrackError


@dataclass(frozen=True)
class Crop:
    """A square crop of the source frames resized to ``resolution``.

    Attributes:
        x0, y0: top-left corner in frame pixels (may be negative: padding).
        side: crop side in frame pixels.
        resolution: side of the output images, pixels.
    """

    x0: int
    y0: int
    side: int
    resolution: int

    @property
    def scale(self) -> float:
        """Output pixels per frame pixel."""
        return self.resolution / self.side

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Frame pixels [..., 2] → output pixels [..., 2]."""
        return (np.asarray(points, np.float64) - [self.x0, self.y0]) * self.scale

    def intrinsics(self, focal: float, frame_width: int, frame_height: int) -> np.ndarray:
        """K [3, 3] of the output images for a camera of focal length ``focal`` (frame pixels)
        whose principal point is the frame's centre."""
        s = self.scale
        c = self.to_crop(np.array([frame_width / 2.0, frame_height / 2.0]))
        return np.array([[focal * s, 0.0, c[0]], [0.0, focal * s, c[1]], [0.0, 0.0, 1.0]])

    def apply(self, frame: np.ndarray, fill: float = 0) -> np.ndarray:
        """The crop of a frame [H, W, C] (uint8 RGB from the video, or float), resized to
        [resolution, resolution, C] (area filter when shrinking); outside the frame: ``fill``."""
        import cv2

        h, w = frame.shape[:2]
        x0, y0, n = self.x0, self.y0, self.side
        sub = np.full((n, n) + frame.shape[2:], fill, frame.dtype)
        fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + n, w), min(y0 + n, h)
        if fx1 > fx0 and fy1 > fy0:
            sub[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0] = frame[fy0:fy1, fx0:fx1]
        interp = cv2.INTER_AREA if n > self.resolution else cv2.INTER_LINEAR
        return cv2.resize(sub, (self.resolution, self.resolution), interpolation=interp)


def choose_crop(boxes: list[np.ndarray | None], crop_scale: float, resolution: int) -> Crop:
    """The clip's square crop from per-frame face boxes.

    Args:
        boxes: per frame the largest face's (x0, y0, x1, y1) in frame pixels, or None.
        crop_scale: crop side / size of the union face box.
        resolution: output side, pixels.
    Raises:
        TrackError: no box at all.
    """
    found = np.array([b for b in boxes if b is not None], np.float64)
    if len(found) == 0:
        raise TrackError("no face was detected in any frame")
    lo = np.percentile(found[:, :2], 5, axis=0)
    hi = np.percentile(found[:, 2:], 95, axis=0)
    centre = 0.5 * (np.median(found[:, :2], axis=0) + np.median(found[:, 2:], axis=0))
    size = float(max(hi - lo))
    # the face box of BlazeFace covers brows to chin; the head's centre sits a little higher
    centre = centre - [0.0, 0.08 * size]
    side = max(int(round(crop_scale * size)), 16)
    x0 = int(round(centre[0] - side / 2))
    y0 = int(round(centre[1] - side / 2))
    return Crop(x0, y0, side, int(resolution))
