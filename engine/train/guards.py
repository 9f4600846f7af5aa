"""Checks around the training loop: before step 1 (the cameras see the head, the output folder has
room) and after every step (a non-finite loss stops the job; the last good checkpoint stays).

The loop itself (:mod:`engine.train.trainer`) calls these; they hold no FATE maths.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from engine.errors import DatasetError, DivergedError

if TYPE_CHECKING:  # pragma: no cover
    from engine.avatar_folder import AvatarFolder
    from engine.data.sequence import Sequence
    from engine.io.output import ClaimedOutput
    from engine.model.avatar import Avatar
    from engine.train.config import TrainConfig

NEAR_M = 0.01
"""A vertex counts as seen when it is at least this far in front of the camera, meters."""


def check_step(stats: dict, step: int, folder: "AvatarFolder") -> None:
    """Stops training on a non-finite loss (divergence guard).

    Args:
        stats: the step's {"loss", "psnr", "frame"}.
        step: 0-based index of the step just taken.
        folder: the avatar folder (its last checkpoint is named in the message).
    Raises:
        DivergedError: naming the step, the frame and the checkpoint that is kept.
    """
    loss = stats.get("loss")
    if loss is not None and math.isfinite(loss):
        return
    ckpt = folder.path(folder.CHECKPOINT_TENSORS)
    kept = f"the last good checkpoint {ckpt} is kept (continue with resume=true)" if ckpt.exists() \
        else "no checkpoint was written before it"
    raise DivergedError(f"training diverged at step {step + 1}: the loss is {loss} on frame {stats.get('frame')}; "
                        f"nothing was saved from this run's later state and {kept}. Lower the learning rates or "
                        "check the dataset")


@torch.no_grad()
def check_cameras_see_head(avatar: "Avatar", seq: "Sequence", device: torch.device, chunk: int = 64) -> None:
    """Refuses frames whose camera sees none of the posed head (they would train on background).

    Every frame's FLAME mesh (shape, expression, pose, translation; the dataset's own values) is
    projected with its camera (OpenCV: x right, y down, z forward; ``K`` in pixels); a frame sees
    the head when at least one vertex is ``NEAR_M`` in front of the camera and inside the image.

    Raises:
        DatasetError: naming the dataset and the first frames that see nothing.
    """
    blind: list[str] = []
    T = len(seq)
    shape = seq.shape.to(device)[None]
    for start in range(0, T, chunk):
        idx = torch.arange(start, min(start + chunk, T))
        B = len(idx)
        verts, _ = avatar.flame(shape.expand(B, -1), seq.expr[idx].to(device), seq.pose[idx].to(device))
        verts = verts + seq.translation[idx].to(device)[:, None]
        view = seq.viewmats[idx].to(device)
        K = seq.Ks[idx].to(device)
        cam = torch.einsum("bij,bvj->bvi", view[:, :3, :3], verts) + view[:, None, :3, 3]
        z = cam[..., 2]
        zc = z.clamp_min(NEAR_M)
        u = K[:, None, 0, 0] * cam[..., 0] / zc + K[:, None, 0, 2]
        v = K[:, None, 1, 1] * cam[..., 1] / zc + K[:, None, 1, 2]
        seen = (z > NEAR_M) & (u >= 0) & (u < seq.width) & (v >= 0) & (v < seq.height)
        for b in torch.nonzero(~seen.any(dim=1)).flatten().tolist():
            blind.append(seq.frame_names[start + b])
    if blind:
        raise DatasetError(f"{seq.root}: the camera of {len(blind)} of {T} frames sees none of the head "
                           f"(first: {blind[:5]}): wrong transform_matrix / intrinsics, or a tracking failure; "
                           "fix or remove those frames")


def estimate_output_bytes(avatar: "Avatar", cfg: "TrainConfig", n_frames: int) -> int:
    """A generous estimate of the bytes training writes into its folder: the avatar set (head model
    twice: ``head_model.npz`` and ``blender/head.npz``), a checkpoint (parameters and two Adam
    moments), both once more for the staging copy of a publication, with the Gaussian count
    grown to the densification budget."""
    av = avatar
    head = av.head
    head_bytes = sum(getattr(head, k).nbytes for k in ("v_template", "shapedirs", "exprdirs", "posedirs",
                                                        "J_regressor", "lbs_weights", "uvs", "faces", "faces_uv"))
    n = len(av.gaussians)
    n_max = n if cfg.densify.strategy == "none" else max(n, cfg.densify.max_gaussians)
    per_gaussian = sum(p[0].numel() for p in av.gaussians.parameters() if p.ndim > 0) * 4 + 32
    learnt = sum(p.numel() for p in av.blendshapes.parameters()) * 4
    learnt += sum(p.numel() for p in av.tracking.parameters()) * 4
    avatar_set = 2 * head_bytes + learnt + n_max * per_gaussian + n_frames * 1024
    checkpoint = 3 * (learnt + n_max * per_gaussian)
    return int(2 * (avatar_set + checkpoint)) + (1 << 20)


def before_training(avatar: "Avatar", seq: "Sequence", cfg: "TrainConfig", device: torch.device,
                    output: "ClaimedOutput") -> None:
    """The checks of step 0: every camera sees the head and the folder has room for the outputs.

    Raises:
        DatasetError: a camera sees nothing.
        OutputError: not enough free space.
    """
    check_cameras_see_head(avatar, seq, device)
    output.require_space(estimate_output_bytes(avatar, cfg, len(seq)))
