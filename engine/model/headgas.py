"""HeadGaS appearance (Dhamo et al., ECCV 2024, §3.2): expression-blended per-Gaussian features
decoded by a small MLP into colour and opacity (issue 19).

Each Gaussian i carries a feature basis ``F_i ∈ R^{D×f}`` and a bias ``f0_i ∈ R^f``; a frame's
driving vector ``d ∈ R^D`` (:mod:`engine.model.appearance_drivers`: the first B expression
coefficients, plus the jaw's pose feature) blends them (HeadGaS Eq. 3)::

    f_i(d) = f0_i + Σ_b d_b F_i,b

and an MLP ``g`` reads ``[f_i, ψ(μ_i)]`` with ``ψ`` a NeRF positional encoding of the Gaussian's
canonical position μ_i (HeadGaS Eq. 4; two hidden layers of 64). HeadGaS decodes colour and
opacity from ``g`` directly. Here ``g`` decodes a *residual* on top of FATE's static attributes,
measured from the neutral face::

    sh0_i(d)   = sh0_i   + Δc_i(d),      Δ(d) = g(f_i(d), ψ(μ_i)) − g(f0_i, ψ(μ_i))
    logit_i(d) = logit_i + Δα_i(d)

with ``g``'s outputs bounded (``Δc = tanh(·)/C0``, ``Δα = 6 tanh(·)``). So the neutral face
(d = 0) renders FATE's static avatar exactly, which is what baking writes into the paintable
base maps, and zero feature bases reduce the model to the static avatar for every expression.
Motion is modelled by opacity change, not displacement (HeadGaS §3.2): positions, scales and
rotations stay FATE's. Deviations from HeadGaS (docs/FATE_DEVIATIONS.md): the residual form
above, SH degree 0 (the project's maps are view-independent RGB; HeadGaS uses degree 3), and the
jaw's pose feature in the blending vector.

The per-Gaussian tensors live on :class:`~engine.model.gaussians.UVGaussians` as extra
parameters (:data:`BASIS`, :data:`BIAS`), so densification, pruning and checkpoints carry them
like every other attribute; the MLP is this module.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from engine.geometry.mesh_ops import barycentric_points
from engine.model.appearance_drivers import AppearanceDrivers
from engine.model.gaussians import SH_C0, UVGaussians

BASIS = "hg_basis"
"""UVGaussians extra parameter: the feature bases F, [N, D, f] (HeadGaS: initialised to zero)."""
BIAS = "hg_bias"
"""UVGaussians extra parameter: the feature bias f0, [N, f]."""
OPACITY_RANGE = 6.0
"""Bound of the decoded opacity-logit residual (before the neutral face is subtracted)."""
KIND = "headgas"
"""``appearance`` value of a TrainConfig / appearance.safetensors for this model."""


def positional_encoding(x: Tensor, num_freqs: int) -> Tensor:
    """NeRF positional encoding ``[x, sin(2^k π x), cos(2^k π x)]_{k<L}`` (HeadGaS Eq. 4's ψ).

    Args:
        x: positions normalised to about [-1, 1]. [N, 3]
        num_freqs: L.
    Returns:
        [N, 3 + 6L]
    """
    parts = [x]
    for k in range(num_freqs):
        w = (2.0 ** k) * math.pi
        parts += [torch.sin(w * x), torch.cos(w * x)]
    return torch.cat(parts, dim=-1)


class HeadGaSAppearance(nn.Module):
    """The shared decoder and the blending of the per-Gaussian features (module doc).

    Args:
        drivers: the driving vector's definition (D entries).
        feature_dim: f (HeadGaS: 32).
        hidden: MLP width (HeadGaS: 64, two hidden layers).
        pe_freqs: positional-encoding frequencies L of the canonical position.
        rest_verts: the subject's canonical vertices (shape applied, no expression), meters,
            FLAME frame; ψ(μ) reads the Gaussians' positions on it. [V, 3]
        faces: mesh + mouth faces, int64. [F, 3]
    """

    def __init__(self, drivers: AppearanceDrivers, feature_dim: int, hidden: int, pe_freqs: int,
                 rest_verts: Tensor, faces: Tensor):
        super().__init__()
        self.drivers = drivers
        self.feature_dim = int(feature_dim)
        self.hidden = int(hidden)
        self.pe_freqs = int(pe_freqs)
        rest = rest_verts.detach().float()
        lo, hi = rest.min(0).values, rest.max(0).values
        self.register_buffer("rest_verts", rest.clone())
        self.register_buffer("faces", faces.long().clone())
        self.register_buffer("centre", 0.5 * (lo + hi))
        self.register_buffer("half_extent", (0.5 * (hi - lo)).max().clamp_min(1e-6))
        n_in = self.feature_dim + 3 + 6 * self.pe_freqs
        self.mlp = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 4))

    # ------------------------------------------------------------------ per-Gaussian parameters
    def init_gaussians(self, gaussians: UVGaussians) -> None:
        """Adds zero feature bases F [N, D, f] and zero biases f0 [N, f] to ``gaussians``
        (HeadGaS initialises F to zero; with F = 0 the model is the static avatar)."""
        n, dev = len(gaussians), gaussians.sh0.device
        gaussians.add_per_gaussian(BASIS, torch.zeros(n, self.drivers.size, self.feature_dim, device=dev))
        gaussians.add_per_gaussian(BIAS, torch.zeros(n, self.feature_dim, device=dev))

    # ------------------------------------------------------------------ decoding
    def encoded_positions(self, gaussians: UVGaussians) -> Tensor:
        """ψ(μ) of each Gaussian's canonical position (normalised by the head's bounding box). [N, 3 + 6L]"""
        mu = barycentric_points(self.rest_verts, self.faces, gaussians.face_idx, gaussians.bary)
        return positional_encoding((mu - self.centre) / self.half_extent, self.pe_freqs)

    def decode(self, features: Tensor, encoded: Tensor) -> tuple[Tensor, Tensor]:
        """g: bounded raw residuals of the SH-0 colour and the opacity logit.

        Args:
            features: blended features f. [N, f]
            encoded: ψ(μ). [N, 3 + 6L]
        Returns:
            Δsh0 in [−1/C0, 1/C0] [N, 3] (at most ±1 of encoded colour), Δlogit in [−6, 6] [N].
        """
        out = self.mlp(torch.cat([features, encoded], dim=-1))
        return torch.tanh(out[:, :3]) / SH_C0, OPACITY_RANGE * torch.tanh(out[:, 3])

    def residuals(self, gaussians: UVGaussians, d: Tensor) -> tuple[Tensor, Tensor]:
        """Δ(d) = g(f(d)) − g(f0): the change of raw colour and opacity logit from the neutral face.

        Args:
            gaussians: carries F and f0.
            d: driving vector. [D]
        Returns:
            Δsh0 [N, 3], Δlogit [N]; exactly zero where F_i = 0 or d = 0.
        """
        F, f0 = getattr(gaussians, BASIS), getattr(gaussians, BIAS)
        enc = self.encoded_positions(gaussians)
        fe = f0 + torch.einsum("d,ndf->nf", d.to(F.dtype), F)
        c_e, a_e = self.decode(fe, enc)
        c_0, a_0 = self.decode(f0, enc)
        return c_e - c_0, a_e - a_0

    def forward(self, gaussians: UVGaussians, expr: Tensor, pose: Tensor) -> tuple[Tensor, Tensor]:
        """Colour and opacity of every Gaussian for one frame.

        Args:
            gaussians: the avatar's Gaussians (static sh0 / opacity logit, F, f0).
            expr: the frame's expression coefficients. [E]
            pose: its joint rotations, axis-angle, radians. [J·3]
        Returns:
            encoded (sRGB) colour in [0, 1] [N, 3], opacity in [0, 1] [N].
        """
        dc, da = self.residuals(gaussians, self.drivers.values(expr, pose))
        self.last_residuals = (dc, da)
        colors = (0.5 + SH_C0 * (gaussians.sh0 + dc)).clamp(0.0, 1.0)
        return colors, torch.sigmoid(gaussians.opacity_logit + da)

    def residual_penalty(self) -> Tensor:
        """Mean absolute change from the neutral face of the last :meth:`forward`, in colour units
        (encoded colour, and opacity through the logistic's largest slope 1/4): the training
        regulariser ``headgas.lambda_residual`` (an L1 form of Animatable Gaussians' ‖ΔO‖², which
        keeps a Gaussian's appearance where it is unless an expression consistently needs a change)."""
        dc, da = self.last_residuals
        return (SH_C0 * dc).abs().mean() + 0.25 * da.abs().mean()

    # ------------------------------------------------------------------ persistence
    def metadata(self) -> dict[str, str]:
        """What :func:`headgas_from_state` needs besides the tensors (safetensors metadata)."""
        return {"kind": KIND, "num_expr": str(self.drivers.num_expr), "jaw_joint": str(self.drivers.jaw_joint),
                "names": ",".join(self.drivers.names), "feature_dim": str(self.feature_dim),
                "hidden": str(self.hidden), "pe_freqs": str(self.pe_freqs)}


def headgas_from_state(state: dict[str, Tensor], meta: dict[str, str]) -> HeadGaSAppearance:
    """Inverse of ``module.state_dict()`` + :meth:`HeadGaSAppearance.metadata`.

    Raises:
        ValueError: the metadata is not a HeadGaS appearance's.
    """
    if meta.get("kind") != KIND:
        raise ValueError(f"appearance kind {meta.get('kind')!r}, expected {KIND!r}")
    drivers = AppearanceDrivers(int(meta["num_expr"]), int(meta["jaw_joint"]), tuple(meta["names"].split(",")))
    model = HeadGaSAppearance(drivers, int(meta["feature_dim"]), int(meta["hidden"]), int(meta["pe_freqs"]),
                              state["rest_verts"], state["faces"])
    model.load_state_dict(state)
    return model


def attach_headgas(avatar, shape: Tensor, num_expr: int, use_jaw: bool, feature_dim: int, hidden: int,
                   pe_freqs: int) -> HeadGaSAppearance:
    """Gives an :class:`~engine.model.avatar.Avatar` the HeadGaS appearance (zero feature bases).

    Args:
        avatar: the avatar (its Gaussians get F and f0; ``avatar.appearance`` is set).
        shape: the subject's shape coefficients (the canonical mesh of ψ(μ)). [S]
        num_expr: B, expression coefficients blended (HeadGaS: 52; at most the avatar's count).
        use_jaw: also blend the jaw's pose feature (:mod:`engine.model.appearance_drivers`).
        feature_dim, hidden, pe_freqs: see :class:`HeadGaSAppearance`.
    Returns:
        the appearance model (on the avatar's device).
    """
    from engine.model.appearance_drivers import make_drivers

    dev = avatar.faces.device
    n_expr = min(int(num_expr), int(avatar.blendshapes.delta_exprdirs.shape[-1]))
    with torch.no_grad():
        rest, _ = avatar.flame(shape.to(dev)[None], torch.zeros(1, n_expr, device=dev),
                               torch.zeros(1, avatar.head.num_joints * 3, device=dev))
    model = HeadGaSAppearance(make_drivers(avatar.head, n_expr, use_jaw), feature_dim, hidden, pe_freqs,
                              rest[0], avatar.faces).to(dev)
    model.init_gaussians(avatar.gaussians)
    avatar.appearance = model
    return model
