"""A tracked monocular sequence in engine conventions (the checks the readers share: ``checks``).

A :class:`Sequence` is what every dataset reader returns (``engine/data/insta.py``,
``engine/data/imavatar.py``): FLAME parameters per frame, one OpenCV camera per frame
and the paths of the images and masks. Images are decoded lazily by
:meth:`Sequence.load_image` (training keeps them decoded: :class:`engine.data.frames.FrameImages`).

Conventions (docs/ARCHITECTURE.md):

- ``pose`` is FLAME's 15-dim pose, axis-angle in radians, joints in FLAME order
  root, neck, jaw, left_eye, right_eye (``pose[:, 3*j:3*j+3]`` is joint ``j``).
- ``translation`` is added to the posed FLAME vertices (meters); both readers set it to
  zero because their trackers put the head motion into the camera.
- ``viewmats`` are world→camera in OpenCV axes (x right, y down, z forward), meters;
  ``Ks`` are pixel intrinsics with pixel (0, 0)'s centre at (0.5, 0.5).
- Images are the stored encoded (sRGB) values in [0, 1], composited over a background
  colour with the mask as straight (non-premultiplied) alpha:
  ``rgb · m + bg · (1 − m)`` — what FATE's ``load_rgb`` does with white/black.
- Mask source, as in FATE: the image's own alpha channel when the image is RGBA
  (INSTA ``images/`` and IMavatar ``matted/`` are RGBA with clothing removed);
  otherwise the mask file (INSTA ``alpha/``, IMavatar ``mask/``), first channel.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from engine.errors import DatasetError
from engine.geometry.cameras import Camera

log = logging.getLogger(__name__)

__all__ = ["Sequence", "SPLITS", "POSE_DIM", "JOINT_SLICES"]

#: Allowed values of :attr:`Sequence.split`.
SPLITS = ("train", "test")
#: FLAME pose size: 5 joints × 3 (axis-angle).
POSE_DIM = 15
#: Slices of the 15-dim FLAME pose per joint (FLAME joint order).
JOINT_SLICES = {
    "root": slice(0, 3),
    "neck": slice(3, 6),
    "jaw": slice(6, 9),
    "left_eye": slice(9, 12),
    "right_eye": slice(12, 15),
}


@dataclass
class Sequence:
    """A tracked monocular sequence in engine conventions.

    ``T`` frames, ``S`` shape and ``E`` expression coefficients. Tensors are float32 on
    the CPU (other float dtypes/devices are converted on construction). Construct through :func:`load_sequence` (or the readers); the constructor
    checks shapes and finiteness and raises :class:`DatasetError` naming the field.

    Attributes:
        root: dataset folder.
        frame_names: unique frame names, e.g. ``"00042"``. [T]
        shape: FLAME shape coefficients shared by all frames. [S]
        expr: FLAME expression coefficients. [T, E]
        pose: FLAME pose, axis-angle radians, joints root, neck, jaw, left_eye,
            right_eye. [T, 15]
        translation: added to the FLAME vertices, meters, FLAME/world frame. [T, 3]
        viewmats: world→camera, OpenCV axes, meters. [T, 4, 4]
        Ks: intrinsics in pixels for ``width`` × ``height`` images. [T, 3, 3]
        width: image width in pixels returned by :meth:`load_image`.
        height: image height in pixels returned by :meth:`load_image`.
        image_paths: image file per frame. [T]
        mask_paths: mask file per frame, ``None`` when the image's alpha is the mask. [T]
        split: ``"train"`` or ``"test"`` per frame. [T]
        file_size: (width, height) of the image files when it differs from
            (width, height), i.e. after :meth:`resized`; ``None`` = the same.
    """

    root: Path
    frame_names: list[str]
    shape: Tensor
    expr: Tensor
    pose: Tensor
    translation: Tensor
    viewmats: Tensor
    Ks: Tensor
    width: int
    height: int
    image_paths: list[Path]
    mask_paths: list[Path | None]
    split: list[str]
    file_size: tuple[int, int] | None = field(default=None)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        T = len(self.frame_names)
        where = f"sequence {self.root}"

        def need(cond: bool, what: str) -> None:
            if not cond:
                raise DatasetError(f"{where}: {what}")

        need(T > 0, "has no frames")
        need(len(set(self.frame_names)) == T, "frame_names are not unique")
        expected = {
            "shape": (None,),
            "expr": (T, None),
            "pose": (T, POSE_DIM),
            "translation": (T, 3),
            "viewmats": (T, 4, 4),
            "Ks": (T, 3, 3),
        }
        for name, shp in expected.items():
            t = getattr(self, name)
            need(isinstance(t, Tensor) and t.is_floating_point(),
                 f"field {name} must be a float tensor, found {type(t).__name__}")
            ok = t.ndim == len(shp) and all(e is None or e == s for e, s in zip(shp, t.shape))
            need(ok, f"field {name} has shape {tuple(t.shape)}, expected "
                     f"{tuple('*' if e is None else e for e in shp)}")
            need(bool(torch.isfinite(t).all()), f"field {name} has NaN/Inf values")
            if t.dtype != torch.float32 or t.device.type != "cpu":
                setattr(self, name, t.detach().to("cpu", torch.float32))
        for name in ("image_paths", "mask_paths", "split"):
            need(len(getattr(self, name)) == T,
                 f"field {name} has {len(getattr(self, name))} entries for {T} frames")
        bad = sorted(set(self.split) - set(SPLITS))
        need(not bad, f"field split has values {bad}, expected {list(SPLITS)}")
        need(isinstance(self.width, int) and isinstance(self.height, int)
             and self.width > 0 and self.height > 0,
             f"width/height must be positive ints, found {self.width!r} x {self.height!r}")
        self.image_paths = [Path(p) for p in self.image_paths]
        self.mask_paths = [None if p is None else Path(p) for p in self.mask_paths]

    def __len__(self) -> int:
        return len(self.frame_names)

    def __repr__(self) -> str:
        return (f"Sequence(root={str(self.root)!r}, frames={len(self)} "
                f"(train={self.split.count('train')}, test={self.split.count('test')}), "
                f"size={self.width}x{self.height}, S={self.shape.shape[0]}, E={self.expr.shape[1]})")

    def indices(self, split: str) -> list[int]:
        """Frame indices of one split (``"train"`` or ``"test"``), in sequence order."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, found {split!r}")
        return [i for i, s in enumerate(self.split) if s == split]

    def camera(self, i: int) -> Camera:
        """The OpenCV camera of frame ``i`` (``width`` × ``height`` pixels)."""
        return Camera(self.viewmats[i].clone(), self.Ks[i].clone(), self.width, self.height)

    @property
    def source_size(self) -> tuple[int, int]:
        """(width, height) of the image files in pixels."""
        return self.file_size if self.file_size is not None else (self.width, self.height)

    def load_image(self, i: int, background: tuple[float, float, float] = (1.0, 1.0, 1.0)
                   ) -> tuple[Tensor, Tensor]:
        """Decodes frame ``i`` and composites it over ``background``.

        Args:
            i: frame index.
            background: RGB in [0, 1] (encoded values, like the image).
        Returns:
            (image ``[H, W, 3]`` float32 in [0, 1], the stored encoded (sRGB) values
            composited as ``rgb · m + bg · (1 − m)``; mask ``[H, W, 1]`` float32 in
            [0, 1]), with H = ``height``, W = ``width`` (resized when :meth:`resized`
            was used).
        Raises:
            DatasetError: missing/undecodable file, wrong size or channel count, no mask.
        """
        rgb, mask = self.load_straight(i)
        return composite(rgb, mask, background), mask

    def load_straight(self, i: int) -> tuple[Tensor, Tensor]:
        """Frame ``i`` before compositing: (rgb ``[H, W, 3]``, mask ``[H, W, 1]``) float32."""
        from engine.io.images import ImageIOError, read_image

        path = self.image_paths[i]
        sw, sh = self.source_size
        try:
            img = read_image(path)
        except ImageIOError as e:
            raise DatasetError(f"frame {self.frame_names[i]!r}: image: {e}") from e
        if img.shape[:2] != (sh, sw):
            raise DatasetError(f"{path}: image is {img.shape[1]}x{img.shape[0]} px, "
                               f"expected {sw}x{sh} (w x h)")
        if img.shape[2] == 4:
            rgb, mask = img[:, :, :3], img[:, :, 3:4]
        elif img.shape[2] == 3:
            rgb = img
            mpath = self.mask_paths[i]
            if mpath is None:
                raise DatasetError(f"{path}: image has no alpha channel and frame "
                                   f"{self.frame_names[i]!r} has no mask file")
            try:
                m = read_image(mpath)
            except ImageIOError as e:
                raise DatasetError(f"frame {self.frame_names[i]!r}: mask: {e}") from e
            if m.shape[:2] != (sh, sw):
                raise DatasetError(f"{mpath}: mask is {m.shape[1]}x{m.shape[0]} px, "
                                   f"expected {sw}x{sh} (w x h)")
            mask = m[:, :, :1]
        else:
            raise DatasetError(f"{path}: image has {img.shape[2]} channels, expected 3 (RGB) "
                               "or 4 (RGBA)")
        rgb_t = torch.from_numpy(np.ascontiguousarray(rgb))
        mask_t = torch.from_numpy(np.ascontiguousarray(mask))
        if (sw, sh) != (self.width, self.height):
            rgb_t = resize_image(rgb_t, self.width, self.height)
            mask_t = resize_image(mask_t, self.width, self.height).clamp(0.0, 1.0)
        return rgb_t, mask_t

    def subset(self, indices: Iterable[int]) -> "Sequence":
        """A new sequence holding frames ``indices`` (in that order); ``shape`` is shared."""
        idx = [int(i) for i in indices]
        for i in idx:
            if not -len(self) <= i < len(self):
                raise IndexError(f"frame index {i} out of range for {len(self)} frames")
        it = torch.tensor(idx, dtype=torch.long)
        return Sequence(
            root=self.root,
            frame_names=[self.frame_names[i] for i in idx],
            shape=self.shape.clone(),
            expr=self.expr[it].clone(),
            pose=self.pose[it].clone(),
            translation=self.translation[it].clone(),
            viewmats=self.viewmats[it].clone(),
            Ks=self.Ks[it].clone(),
            width=self.width,
            height=self.height,
            image_paths=[self.image_paths[i] for i in idx],
            mask_paths=[self.mask_paths[i] for i in idx],
            split=[self.split[i] for i in idx],
            file_size=self.file_size,
        )

    def resized(self, width: int, height: int) -> "Sequence":
        """The same sequence delivered at ``width`` × ``height`` pixels.

        Intrinsics scale with the image (``fx, cx`` by ``width / source width``,
        ``fy, cy`` by ``height / source height``; exact for the pixel-centre-at-0.5
        convention); :meth:`load_image` resizes (:func:`resize_image`).
        """
        if width <= 0 or height <= 0:
            raise ValueError(f"resized: size must be positive, found {width}x{height}")
        sx, sy = width / self.width, height / self.height
        out = copy.copy(self)
        Ks = self.Ks.clone()
        Ks[:, 0, :] *= sx
        Ks[:, 1, :] *= sy
        out.Ks = Ks
        out.file_size = self.source_size
        out.width, out.height = int(width), int(height)
        if out.file_size == (out.width, out.height):
            out.file_size = None
        return out


def composite(rgb: Tensor, mask: Tensor, background: tuple[float, float, float]) -> Tensor:
    """``rgb · m + bg · (1 − m)`` (straight alpha).

    Args:
        rgb: encoded colours in [0, 1]. [H, W, 3]
        mask: coverage in [0, 1]. [H, W, 1]
        background: RGB in [0, 1]. [3]
    Returns:
        composited image. [H, W, 3] float32
    """
    bg = torch.as_tensor(background, dtype=rgb.dtype).reshape(1, 1, 3)
    if bg.numel() != 3:
        raise ValueError(f"background must have 3 values, found {background!r}")
    return rgb * mask + bg * (1.0 - mask)


def resize_image(img: Tensor, width: int, height: int) -> Tensor:
    """Resizes an ``[H, W, C]`` float image to ``[height, width, C]``.

    Shrinking uses area averaging (for an integer factor k, the mean of each k×k block);
    enlarging uses bilinear interpolation (pixel centres at +0.5, ``align_corners=False``).
    """
    x = img.permute(2, 0, 1)[None]
    if height <= img.shape[0] and width <= img.shape[1]:
        x = F.interpolate(x, size=(height, width), mode="area")
    else:
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    return x[0].permute(1, 2, 0).contiguous()


# --------------------------------------------------------------------------------------
# Checks shared by the readers (messages name the file and the field).


# --------------------------------------------------------------------------------------


