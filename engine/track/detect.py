"""MediaPipe (``mediapipe==0.10.21``, Apache-2.0) on the tracker's frames: face boxes, the 478
Face Mesh landmarks (468 + 10 iris points) and the selfie-segmentation person mask.

Every model ships inside the mediapipe wheel (``mediapipe/modules/face_detection/
face_detection_full_range_sparse.tflite``, ``face_landmark/face_landmark_with_attention.tflite``,
``selfie_segmentation/selfie_segmentation.tflite``); the legacy ``mediapipe.solutions`` graphs load
them from the installed package, so nothing is downloaded at run time.

Coordinates: pixels of the image given, x right, y down, pixel centres at integer + 0.5 (MediaPipe's
normalised coordinates times the image size).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import TrackError

NUM_LANDMARKS = 478
"""MediaPipe Face Mesh with refined irises: 468 face points + 5 per iris (468–472 right, 473–477 left)."""
MODEL_FILES = ("modules/face_detection/face_detection_full_range_sparse.tflite",
               "modules/face_landmark/face_landmark_with_attention.tflite",
               "modules/selfie_segmentation/selfie_segmentation.tflite")
"""The wheel's model files the tracker uses (checked before starting)."""


def mediapipe_dir() -> Path:
    """The installed mediapipe package folder.

    Raises:
        TrackError: mediapipe is not installed or lacks one of :data:`MODEL_FILES`.
    """
    try:
        import mediapipe
    except ImportError as exc:
        raise TrackError("the tracker needs mediapipe 0.10.21: pip install 'mediapipe==0.10.21' "
                         "(the engine's 'track' extra, installed by .ci/setup)") from exc
    root = Path(mediapipe.__file__).parent
    missing = [f for f in MODEL_FILES if not (root / f).is_file()]
    if missing:
        raise TrackError(f"{root}: the mediapipe wheel lacks {missing}; reinstall mediapipe==0.10.21")
    return root


@contextlib.contextmanager
def _quiet_stderr():
    """Silences the native (glog/absl/TFLite) lines MediaPipe writes straight to file descriptor 2."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)


@dataclass
class FaceBox:
    """A detected face: box in pixels (x0, y0, x1, y1) and the detector's score."""

    box: np.ndarray
    score: float

    @property
    def size(self) -> float:
        """Geometric mean of the box's width and height, pixels."""
        w, h = self.box[2] - self.box[0], self.box[3] - self.box[1]
        return float(np.sqrt(max(w, 0) * max(h, 0)))


class FaceDetector:
    """MediaPipe's full-range face detector (BlazeFace, up to ~5 m: small faces in wide frames)."""

    def __init__(self, min_score: float = 0.5):
        mediapipe_dir()
        import mediapipe as mp

        with _quiet_stderr():
            self._det = mp.solutions.face_detection.FaceDetection(model_selection=1,
                                                                  min_detection_confidence=min_score)

    def __call__(self, image: np.ndarray) -> list[FaceBox]:
        """Faces in an RGB uint8 image [H, W, 3], largest first."""
        h, w = image.shape[:2]
        res = self._det.process(np.ascontiguousarray(image))
        out = []
        for d in res.detections or []:
            b = d.location_data.relative_bounding_box
            out.append(FaceBox(np.array([b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h]),
                               float(d.score[0])))
        return sorted(out, key=lambda f: -f.size)

    def close(self) -> None:
        self._det.close()


class FaceMesh:
    """MediaPipe Face Mesh with irises on a sequence of images (video mode: the face found in one
    frame seeds the next; several faces: the largest is kept)."""

    def __init__(self, video_mode: bool = True, max_faces: int = 3, min_score: float = 0.5):
        mediapipe_dir()
        import mediapipe as mp

        with _quiet_stderr():
            self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=not video_mode, max_num_faces=max_faces,
                                                         refine_landmarks=True, min_detection_confidence=min_score,
                                                         min_tracking_confidence=min_score)
        self.faces_seen = 0

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """The 478 landmarks of the largest face in an RGB uint8 image [H, W, 3].

        Returns:
            [478, 3] float32: x, y in pixels, z MediaPipe's relative depth in pixels of x (smaller =
            nearer, the head centre near 0); None when no face is found.
        """
        h, w = image.shape[:2]
        with _quiet_stderr():
            res = self._mesh.process(np.ascontiguousarray(image))
        faces = res.multi_face_landmarks or []
        self.faces_seen = max(self.faces_seen, len(faces))
        if not faces:
            return None
        arrs = [np.array([[p.x * w, p.y * h, p.z * w] for p in f.landmark], np.float32) for f in faces]
        sizes = [np.ptp(a[:, 0]) * np.ptp(a[:, 1]) for a in arrs]
        out = arrs[int(np.argmax(sizes))]
        if out.shape[0] != NUM_LANDMARKS:
            raise TrackError(f"mediapipe returned {out.shape[0]} landmarks, expected {NUM_LANDMARKS} "
                             "(refine_landmarks needs mediapipe 0.10.x)")
        return out

    def close(self) -> None:
        self._mesh.close()


class PersonSegmenter:
    """MediaPipe selfie segmentation (general model, 256x256): the person's probability per pixel."""

    def __init__(self):
        mediapipe_dir()
        import mediapipe as mp

        with _quiet_stderr():
            self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Person probability [H, W] float32 in [0, 1] of an RGB uint8 image [H, W, 3]."""
        with _quiet_stderr():
            res = self._seg.process(np.ascontiguousarray(image))
        return np.clip(np.asarray(res.segmentation_mask, np.float32), 0.0, 1.0)

    def close(self) -> None:
        self._seg.close()
