"""Training frames: which frame each step uses, and the decoded frames kept in memory."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from engine.data.sequence import Sequence, resize_image
from engine.errors import ConfigError


class FrameSchedule:
    """Which training frame each step uses: every epoch is a permutation of ``frames`` seeded by
    (seed, epoch), so the order depends only on the step and a resumed job sees the same frames
    as an uninterrupted one.

    Args:
        frames: frame indices of the training split.
        seed: the job's seed.
    """

    def __init__(self, frames: list[int], seed: int):
        self.frames, self.seed = list(frames), seed
        self._epoch, self._order = -1, np.zeros(0, dtype=np.int64)

    def __call__(self, step: int) -> int:
        """Frame index for 0-based ``step``."""
        epoch, i = divmod(step, len(self.frames))
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = np.random.default_rng([self.seed, epoch]).permutation(self.frames)
        return int(self._order[i])


class FrameImages:
    """All frames of a sequence decoded once into uint8 tensors (resized if asked)."""

    def __init__(self, seq: Sequence, indices: list[int], background: tuple[float, float, float],
                 device: torch.device):
        self.device = device
        self.images: dict[int, Tensor] = {}
        for i in indices:
            img, _ = seq.load_image(i, background=background)
            if img.shape[0] != seq.height or img.shape[1] != seq.width:
                img = resize_image(img, seq.width, seq.height)
            self.images[i] = (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8)

    def get(self, i: int) -> Tensor:
        """Frame i as float [H, W, 3] in [0, 1] on the training device."""
        return self.images[i].to(self.device).float() / 255.0


def resize_sequence(seq: Sequence, image_size: int) -> Sequence:
    """The sequence delivered with its longer side ``image_size`` px (0 or equal: unchanged).

    Intrinsics scale with the image and frames are resized on load
    (:meth:`engine.data.sequence.Sequence.resized`); the aspect ratio is kept (sides rounded).

    Raises:
        ConfigError: a negative ``image_size``.
    """
    if image_size < 0:
        raise ConfigError(f"image_size must be >= 0 (0 = as stored), found {image_size}")
    if not image_size or max(seq.width, seq.height) == image_size:
        return seq
    s = image_size / max(seq.width, seq.height)
    return seq.resized(max(1, round(seq.width * s)), max(1, round(seq.height * s)))
