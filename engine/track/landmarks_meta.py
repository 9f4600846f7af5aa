"""What the MediaPipe Face Mesh landmark numbers mean: the groups the fit weights differently.

The groups come from ``mediapipe.python.solutions.face_mesh_connections`` (the wheel's own lists of
eye, brow, lip, nose, iris and face-oval edges); the named points are MediaPipe's topology (the
subject's right eye is the one on the image's left in an unmirrored frontal view).
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

NAMED = {
    "right_eye_outer": 33, "right_eye_inner": 133, "left_eye_inner": 362, "left_eye_outer": 263,
    "mouth_right": 61, "mouth_left": 291, "nose_tip": 4, "chin": 152, "forehead": 10,
    "right_iris": 468, "left_iris": 473, "upper_lip": 13, "lower_lip": 14,
}
"""Named landmarks (MediaPipe numbers); left/right are the subject's."""

GROUP_WEIGHTS = {"oval": 0.5, "brows": 0.7, "eyes": 1.5, "irises": 1.0, "nose": 1.0, "lips": 1.5, "other": 0.5}
"""Weight of each group in the landmark term (contour and interior points are less precise)."""
RIGID_WEIGHTS = {"oval": 0.3, "brows": 0.5, "eyes": 1.0, "irises": 0.0, "nose": 1.5, "lips": 0.05, "other": 0.3}
"""Weights of the rigid stage: the parts that move least with expression count most."""


@lru_cache(maxsize=1)
def groups() -> dict[str, frozenset[int]]:
    """MediaPipe number sets per group (module doc)."""
    from mediapipe.python.solutions import face_mesh_connections as c

    def pts(*sets) -> frozenset[int]:
        return frozenset(itertools.chain.from_iterable(itertools.chain.from_iterable(s) for s in sets))

    return {
        "oval": pts(c.FACEMESH_FACE_OVAL),
        "brows": pts(c.FACEMESH_LEFT_EYEBROW, c.FACEMESH_RIGHT_EYEBROW),
        "eyes": pts(c.FACEMESH_LEFT_EYE, c.FACEMESH_RIGHT_EYE),
        "irises": pts(c.FACEMESH_LEFT_IRIS, c.FACEMESH_RIGHT_IRIS) | {468, 473},
        "nose": pts(c.FACEMESH_NOSE),
        "lips": pts(c.FACEMESH_LIPS),
    }


def group_of(index: int) -> str:
    """The group of one MediaPipe landmark ("other" for the mesh's interior points)."""
    for name, members in groups().items():
        if index in members:
            return name
    return "other"


def landmark_weights(indices: np.ndarray, rigid: bool = False) -> np.ndarray:
    """[L] float32 weight per landmark (:data:`GROUP_WEIGHTS`, or :data:`RIGID_WEIGHTS`)."""
    table = RIGID_WEIGHTS if rigid else GROUP_WEIGHTS
    return np.array([table[group_of(int(i))] for i in indices], np.float32)


def oval_mask(indices: np.ndarray) -> np.ndarray:
    """[L] bool: landmarks on the face oval (weighted by visibility in the fit)."""
    oval = groups()["oval"]
    return np.array([int(i) in oval for i in indices], bool)
