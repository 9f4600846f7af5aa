"""The sRGB transfer function (IEC 61966-2-1), numpy only: the one copy on the Blender side.

Gaussian colours and the colour map hold *encoded* (sRGB) values in [0, 1], like the training
images; Blender's float buffers and render passes are scene linear. Convert only at those
boundaries.
"""

from __future__ import annotations

import numpy as np

__all__ = ["srgb_to_linear", "linear_to_srgb"]


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB transfer function, encoded → linear (IEC 61966-2-1). [...] float32"""
    x = np.asarray(x, dtype=np.float32)
    return np.where(x <= 0.04045, x / 12.92, ((np.maximum(x, 0.04045) + 0.055) / 1.055) ** 2.4
                    ).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """sRGB transfer function, linear → encoded (IEC 61966-2-1). [...] float32"""
    x = np.asarray(x, dtype=np.float32)
    return np.where(x <= 0.0031308, x * 12.92,
                    1.055 * np.maximum(x, 0.0031308) ** (1.0 / 2.4) - 0.055).astype(np.float32)
