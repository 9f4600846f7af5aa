"""Tracking accuracy against exactly known parameters (the demo subject, synthetic clips).

Trackers and ground truth may split head motion differently (the demo turns the camera and the
neck; the tracker turns FLAME's root with a fixed camera), so poses are compared in one frame: the
head's orientation and position *relative to the camera*.

- head rotation: ``R_view · R_root · R_neck`` (the neck joint's global rotation in camera axes);
  error = the angle of ``R_true⁻¹ R_tracked`` in degrees; ``rotation_deg_aligned`` first removes
  the clip's mean offset (a constant tilt of the landmark embedding's "frontal"), which is what
  costs PSNR frame to frame;
- translation: the mean of the posed vertices in camera coordinates, error in millimetres;
- jaw: the angle between the jaw joints' local rotations, degrees;
- jitter: the mean |Δ| of the per-frame aligned rotation error between consecutive frames, degrees.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.data.sequence import JOINT_SLICES, Sequence
from engine.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from engine.model.flame_layer import FlameLayer
from engine.model.head_model import HeadModel


def _angle_deg(R: torch.Tensor) -> np.ndarray:
    cos = ((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1.0, 1.0)
    return np.degrees(torch.arccos(cos).numpy())


@torch.no_grad()
def head_in_camera(seq: Sequence, head: HeadModel, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame the head's rotation [N, 3, 3] and centre [N, 3] (meters) in camera coordinates."""
    idx = torch.as_tensor(indices, dtype=torch.long)
    pose = seq.pose[idx].double()
    R_view = seq.viewmats[idx, :3, :3].double()
    t_view = seq.viewmats[idx, :3, 3].double()
    R = R_view @ axis_angle_to_matrix(pose[:, JOINT_SLICES["root"]]) @ axis_angle_to_matrix(pose[:, JOINT_SLICES["neck"]])
    verts, _ = FlameLayer(head)(seq.shape[None], seq.expr[idx], seq.pose[idx])
    centre = verts.double().mean(1) + seq.translation[idx].double()
    return R, torch.einsum("nij,nj->ni", R_view, centre) + t_view


def tracking_errors(true: Sequence, tracked: Sequence, head: HeadModel, pairs: list[tuple[int, int]] | None = None
                    ) -> dict:
    """Errors of ``tracked`` against ``true`` on frames with the same names (module doc).

    Args:
        pairs: (true index, tracked index) per compared frame; default: matched by frame name.
    Returns:
        {"frames", "rotation_deg", "rotation_deg_aligned", "translation_mm", "jaw_deg",
        "rotation_jitter_deg", "rotation_deg_per_frame"} (means over the frames).
    """
    if pairs is None:
        where = {n: i for i, n in enumerate(true.frame_names)}
        pairs = [(where[n], j) for j, n in enumerate(tracked.frame_names) if n in where]
    ti, ki = [p[0] for p in pairs], [p[1] for p in pairs]
    R_t, c_t = head_in_camera(true, head, ti)
    R_k, c_k = head_in_camera(tracked, head, ki)
    D = R_t.transpose(1, 2) @ R_k  # per-frame error rotation (head axes)
    err = _angle_deg(D)
    mean_offset = axis_angle_to_matrix(matrix_to_axis_angle(D).mean(0))
    aligned = _angle_deg(D @ mean_offset.T)
    jaw_t = axis_angle_to_matrix(true.pose[ti][:, JOINT_SLICES["jaw"]].double())
    jaw_k = axis_angle_to_matrix(tracked.pose[ki][:, JOINT_SLICES["jaw"]].double())
    jaw = _angle_deg(jaw_t.transpose(1, 2) @ jaw_k)
    trans = (c_t - c_k).norm(dim=1).numpy() * 1000.0
    r = lambda x: round(float(x), 3)  # noqa: E731
    return {"frames": len(pairs), "rotation_deg": r(err.mean()), "rotation_deg_aligned": r(aligned.mean()),
            "translation_mm": r(trans.mean()), "jaw_deg": r(jaw.mean()),
            "rotation_jitter_deg": r(np.abs(np.diff(aligned)).mean() if len(aligned) > 1 else 0.0),
            "rotation_deg_per_frame": [round(float(x), 2) for x in err]}
