"""The VGG16 convolutional stack, loadable from user-supplied weights (no torchvision).

The perceptual loss (FATE §3.5, Eq. 12, ``L_vgg``) and the LPIPS metric both run images
through the ``features`` part of VGG16 (Simonyan & Zisserman 2015). torchvision is not a
dependency, so the stack is built here with the *same layer indices* as torchvision's
``vgg16().features``: a torchvision ``vgg16`` state dict (``features.N.weight`` /
``features.N.bias``, ``classifier.*`` ignored) loads as is.

Layer indices (conv ``k`` is followed by its ReLU at ``k + 1``, ``M`` = 2×2 max pool)::

    0 conv 3→64    2 conv 64→64     4 M
    5 conv 64→128  7 conv 128→128   9 M
    10 conv 128→256  12 conv 256→256  14 conv 256→256  16 M
    17 conv 256→512  19 conv 512→512  21 conv 512→512  23 M
    24 conv 512→512  26 conv 512→512  28 conv 512→512  30 M

The named taps (:data:`RELU_TAPS`) are the ReLU outputs ``relu1_2`` (3), ``relu2_2`` (8),
``relu3_3`` (15), ``relu4_3`` (22) and ``relu5_3`` (29). Weights are never downloaded:
the user supplies the file (see :func:`load_vgg16_state_dict`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from engine.errors import ConfigError

logger = logging.getLogger(__name__)

# Output channels per conv, "M" = max pool; the torchvision "D" configuration.
_VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)

RELU_TAPS: dict[str, int] = {
    "relu1_2": 3,
    "relu2_2": 8,
    "relu3_3": 15,
    "relu4_3": 22,
    "relu5_3": 29,
}
"""Layer index (torchvision ``features`` numbering) of each named ReLU output."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Per-channel mean of ImageNet RGB in [0, 1], the input normalisation VGG16 was trained with."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel standard deviation of ImageNet RGB in [0, 1]."""


def _layer_specs() -> list[tuple[str, int, int]]:
    """(kind, in_channels, out_channels) per torchvision ``features`` index; kind in conv/relu/pool."""
    specs: list[tuple[str, int, int]] = []
    c_in = 3
    for item in _VGG16_CFG:
        if item == "M":
            specs.append(("pool", c_in, c_in))
        else:
            specs.append(("conv", c_in, int(item)))
            specs.append(("relu", int(item), int(item)))
            c_in = int(item)
    return specs


def conv_shapes(last_layer: int = 30) -> dict[str, tuple[int, ...]]:
    """Expected parameter shapes of the conv layers with index ≤ ``last_layer``.

    Args:
        last_layer: last torchvision ``features`` index kept (inclusive), 0..30.
    Returns:
        ``{"N.weight": (out, in, 3, 3), "N.bias": (out,)}`` for each conv index N.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for idx, (kind, c_in, c_out) in enumerate(_layer_specs()[: last_layer + 1]):
        if kind == "conv":
            shapes[f"{idx}.weight"] = (c_out, c_in, 3, 3)
            shapes[f"{idx}.bias"] = (c_out,)
    return shapes


class VGG16Features(nn.Module):
    """VGG16 ``features`` stack truncated after ``last_layer``; state-dict keys ``features.N.*``.

    The module is a plain ``nn.Module`` (trainable by default); :func:`load_vgg16_features`
    returns a frozen copy in eval mode for losses and metrics.

    Args:
        last_layer: last torchvision ``features`` index kept (inclusive), 0..30. 22 stops at
            ``relu4_3`` (perceptual loss), 29 at ``relu5_3`` (LPIPS).
    """

    def __init__(self, last_layer: int = 30) -> None:
        super().__init__()
        if not 0 <= last_layer <= 30:
            raise ValueError(f"last_layer must be in 0..30, got {last_layer}")
        layers: list[nn.Module] = []
        for kind, c_in, c_out in _layer_specs()[: last_layer + 1]:
            if kind == "conv":
                layers.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1))
            elif kind == "relu":
                # Not in-place: tapped activations must stay intact for the caller.
                layers.append(nn.ReLU(inplace=False))
            else:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.last_layer = last_layer
        self.features = nn.Sequential(*layers)

    def forward(self, x: Tensor, taps: Sequence[int]) -> list[Tensor]:
        """Runs the stack and returns the activations after the layers in ``taps``.

        Args:
            x: images already normalised for the network. [B, 3, H, W]
            taps: layer indices (≤ ``last_layer``), e.g. ``[RELU_TAPS["relu1_2"], ...]``.
        Returns:
            one activation per tap, in the order of ``taps``. [B, C_k, H / 2^p, W / 2^p] each
        """
        wanted = {int(t): i for i, t in enumerate(taps)}
        if any(t > self.last_layer or t < 0 for t in wanted):
            raise ValueError(f"taps {list(taps)} outside 0..{self.last_layer}")
        out: list[Tensor | None] = [None] * len(taps)
        last = max(wanted)
        for idx, layer in enumerate(self.features):
            x = layer(x)
            if idx in wanted:
                out[wanted[idx]] = x
            if idx >= last:
                break
        return [o for o in out if o is not None]


def read_tensor_file(path: Path) -> dict[str, Tensor]:
    """Reads a ``.safetensors`` file or a ``torch.save``d state dict (``weights_only=True``)."""
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(path), device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except ConfigError:
        raise
    except Exception as exc:  # unreadable / unsafe pickle / truncated file
        raise ConfigError(f"cannot read weights file {path}: {type(exc).__name__}: {exc}") from exc
    if isinstance(data, Mapping) and "state_dict" in data and isinstance(data["state_dict"], Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping) or not all(isinstance(v, Tensor) for v in data.values()):
        raise ConfigError(
            f"weights file {path}: expected a state dict of tensors, found {type(data).__name__}"
        )
    return dict(data)


def load_vgg16_state_dict(path: Path | str, last_layer: int = 30) -> dict[str, Tensor]:
    """Reads VGG16 ``features`` weights from a user-supplied file.

    Accepted: torchvision's ``vgg16`` state dict saved with ``torch.save`` (``.pth``, loaded with
    ``weights_only=True``, so no code runs) or a ``.safetensors`` file with the same keys. Keys
    are ``features.N.weight`` / ``features.N.bias`` (a ``module.`` prefix is tolerated, and a
    features-only dict with bare ``N.weight`` keys is accepted); other keys are ignored.

    Args:
        path: the weights file.
        last_layer: only convs with index ≤ this are required and returned.
    Returns:
        ``{"N.weight", "N.bias"}`` float32 tensors for the convs up to ``last_layer``.
    Raises:
        ConfigError: the file is missing or unreadable, or a required key is absent, has a
            wrong shape or NaN/Inf values (the message names the file, the key, expected and
            found shapes).
    """
    path = Path(path)
    raw = read_tensor_file(path)
    stripped: dict[str, Tensor] = {}
    for key, value in raw.items():
        k = key.removeprefix("module.")
        if k.startswith("features."):
            stripped[k.removeprefix("features.")] = value
    if not stripped:  # a features-only state dict
        stripped = {k.removeprefix("module."): v for k, v in raw.items()}
    out: dict[str, Tensor] = {}
    for key, shape in conv_shapes(last_layer).items():
        if key not in stripped:
            some = ", ".join(sorted(raw)[:6])
            raise ConfigError(
                f"VGG16 weights {path}: missing key 'features.{key}' (expected shape {list(shape)}); "
                f"the file holds {len(raw)} keys, e.g. {some}"
            )
        value = stripped[key]
        if tuple(value.shape) != shape:
            raise ConfigError(
                f"VGG16 weights {path}: key 'features.{key}' has shape {list(value.shape)}, "
                f"expected {list(shape)}"
            )
        if not bool(torch.isfinite(value).all()):
            raise ConfigError(f"VGG16 weights {path}: key 'features.{key}' has NaN/Inf values")
        out[key] = value.float()
    return out


def load_vgg16_features(path: Path | str, last_layer: int) -> VGG16Features:
    """A frozen :class:`VGG16Features` (eval mode, ``requires_grad=False``) from a weights file.

    Args:
        path: torchvision ``vgg16`` state dict (``.pth``) or ``.safetensors`` with its keys.
        last_layer: last ``features`` index kept (22 = ``relu4_3``, 29 = ``relu5_3``).
    Raises:
        ConfigError: see :func:`load_vgg16_state_dict`.
    """
    net = VGG16Features(last_layer)
    state = load_vgg16_state_dict(path, last_layer)
    net.features.load_state_dict(state, strict=True)
    net.requires_grad_(False)
    net.eval()
    logger.debug("loaded VGG16 features 0..%d from %s", last_layer, path)
    return net
