"""Map shape keys: expression-dependent colour and opacity as a linear basis of UV map deltas that
Blender blends with the mesh's own shape-key weights (issue 19).

Blender has no torch, so a dynamic appearance model (the HeadGaS MLP, :mod:`engine.model.headgas`,
or the expression-conditioned BakeNet, :mod:`engine.bake.dynamic`) reaches it linearised. With the
frame's driving vector d (:mod:`engine.model.appearance_drivers`: expression coefficients and the
jaw's pose feature, each the value of a shape key), every component gets one key for its positive
and one for its negative half ("split" features, so a wrinkle that shows only when a brow rises is
not averaged with the lowered brow)::

    w_k = max(s_k · d[j_k], 0)                         (key k: shape key j_k, sign s_k = ±1)
    colour(uv)  = clip(colour_base(uv)  + Σ_k w_k ΔC_k(uv), 0, 1)
    opacity(uv) = clip(opacity_base(uv) + Σ_k w_k ΔA_k(uv), 0, 1)

The base maps are the baked (and painted) ``color`` / ``opacity`` maps, so an artist's edit of
the base is kept under every expression, and zero weights reproduce the base exactly (no clip:
:meth:`MapKeyAppearance.__call__` returns the base values untouched). The deltas ΔC_k, ΔA_k are a
ridge least-squares fit (:class:`KeyFit`) of the dynamic model's change from the neutral face over
the training frames. The Blender twin of the blend is ``addon/splats/runtime.py``.

Files (docs/FORMATS.md): ``maps/dynamic/color.npz`` and ``maps/dynamic/opacity.npz``, each with
``deltas`` float16 [K, R, R, C] (row 0 = top, v≈1, like the EXR maps), ``shape_keys`` [K] str and
``signs`` [K] int8, listed under ``"dynamic"`` in ``maps.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from engine.errors import MapsError
from engine.model.appearance_drivers import AppearanceDrivers

log = logging.getLogger(__name__)

KEYS_FORMAT = "fate-map-keys"
KEYS_FORMAT_VERSION = 1
DYNAMIC_DIR = "dynamic"
"""Sub-folder of ``maps/`` holding the key files."""
KEY_MAPS = {"color": 3, "opacity": 1}
"""The maps that have shape keys, and their channels."""
BLEND_RULE = ("w_k = max(sign_k * value(shape_keys[k]), 0); map = clip(base + sum_k w_k * deltas[k], 0, 1); "
              "all w_k = 0: map = base")
"""The blend, as written into maps.json for other readers."""


@dataclass(frozen=True)
class KeySpec:
    """One map shape key: the shape key whose value drives it and the half it covers."""

    shape_key: str
    sign: int

    @property
    def name(self) -> str:
        """``<shape key>+`` or ``<shape key>-``."""
        return f"{self.shape_key}{'+' if self.sign > 0 else '-'}"


def split_specs(drivers: AppearanceDrivers) -> list[KeySpec]:
    """Both halves of every driver, in :func:`split_features` order ([d0+, d0−, d1+, …])."""
    return [KeySpec(n, s) for n in drivers.names for s in (1, -1)]


def split_features(d: Tensor) -> Tensor:
    """φ(d) = [max(d0, 0), max(−d0, 0), max(d1, 0), …]. [..., D] → [..., 2D]"""
    return torch.stack([d.clamp_min(0.0), (-d).clamp_min(0.0)], dim=-1).flatten(-2)


# ---------------------------------------------------------------------- fitting
class KeyFit:
    """Ridge least squares of per-frame deltas on the split features, one frame at a time.

    Minimises ``Σ_t ‖y_t − Σ_k φ_tk D_k‖² + λ ‖D‖²`` over D [K, M] for frames with features
    φ_t [K] and targets y_t [M] (the same features for every column, so one K×K system serves
    all M columns: M = N Gaussians × 4 or R² texels × 4). λ = ``ridge`` · mean diagonal of ΦᵀΦ,
    ``ridge`` chosen from :data:`RIDGES` by cross-validation over ``folds`` contiguous blocks of
    frames (held-out blocks of a smooth sequence are what the test split looks like; neighbouring
    frames would not penalise over-fitting), scored on up to :data:`CV_COLUMNS` random columns.

    Args:
        specs: the K candidate keys (:func:`split_specs`).
        columns: M.
        device: where the M-wide accumulator lives.
        folds: cross-validation blocks (< 2: no cross-validation, ``ridge`` as given to solve).
        seed: of the cross-validation columns.
    """

    RIDGES = (1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)
    CV_COLUMNS = 16384

    def __init__(self, specs: list[KeySpec], columns: int, device: torch.device | str = "cpu", folds: int = 5,
                 seed: int = 0):
        self.specs = list(specs)
        K = len(self.specs)
        self.gram = torch.zeros(K, K, dtype=torch.float64)
        self.rhs = torch.zeros(K, columns, device=device)
        self.peak = torch.zeros(K, dtype=torch.float64)
        self.frames = 0
        self.target_power = 0.0
        self.folds = int(folds)
        gen = torch.Generator().manual_seed(seed)
        self.cv_cols = torch.randperm(columns, generator=gen)[: self.CV_COLUMNS].to(device)
        F = max(self.folds, 1)
        self.cv_gram = torch.zeros(F, K, K, dtype=torch.float64)
        self.cv_rhs = torch.zeros(F, K, len(self.cv_cols), dtype=torch.float64)
        self.cv_power = torch.zeros(F, dtype=torch.float64)

    @torch.no_grad()
    def add(self, phi: Tensor, y: Tensor, fold: int = 0) -> None:
        """One frame: features φ [K], target deltas y [M], its cross-validation block."""
        p = phi.detach().double().cpu()
        y = y.detach().reshape(-1)
        self.gram += p[:, None] * p[None, :]
        self.peak = torch.maximum(self.peak, p.abs())
        self.rhs += phi.detach().to(self.rhs)[:, None] * y[None, :].to(self.rhs)
        self.target_power += float(y.double().square().sum())
        self.frames += 1
        f = min(max(int(fold), 0), max(self.folds, 1) - 1)
        yc = y[self.cv_cols.to(y.device)].double().cpu()
        self.cv_gram[f] += p[:, None] * p[None, :]
        self.cv_rhs[f] += p[:, None] * yc[None, :]
        self.cv_power[f] += float(yc.square().sum())

    def _cv_ridge(self, keep: Tensor) -> tuple[float, dict]:
        """The ridge of :data:`RIDGES` with the least held-out error (and the errors)."""
        G, B = self.cv_gram[:, keep][:, :, keep], self.cv_rhs[:, keep]
        Gs, Bs = G.sum(0), B.sum(0)
        scale = float(Gs.diagonal().mean())
        errors = {}
        for r in self.RIDGES:
            err = 0.0
            for f in range(G.shape[0]):
                Gt = Gs - G[f]
                D = torch.linalg.solve(Gt + r * scale * torch.eye(len(keep), dtype=Gt.dtype), Bs - B[f])
                err += float(self.cv_power[f] - 2.0 * (D * B[f]).sum() + (D * (G[f] @ D)).sum())
            errors[r] = err / max(float(self.cv_power.sum()), 1e-30)
        return min(errors, key=errors.get), errors

    @torch.no_grad()
    def solve(self, ridge: float | None = None, min_peak: float = 1e-4) -> tuple[list[KeySpec], Tensor, dict]:
        """The fitted keys.

        Keys whose feature never exceeded ``min_peak`` over the frames have no data and are left
        out.

        Args:
            ridge: relative ridge weight; None = cross-validated (class doc; 1e-2 without folds).
            min_peak: see above.
        Returns:
            the kept specs [K'], their deltas [K', M] (float32) and fit statistics: ``frames``,
            ``ridge``, ``explained`` (the fraction of Σ_t ‖y_t‖² the fit reproduces on the fitted
            frames: 1 − residual / total) and, cross-validated, ``cv_unexplained`` (held-out
            residual / total per ridge tried).
        Raises:
            MapsError: no frame was added.
        """
        if self.frames == 0:
            raise MapsError("map shape keys: no frames to fit")
        keep = torch.nonzero(self.peak > min_peak).squeeze(1)
        if keep.numel() == 0:
            return [], self.rhs.new_zeros(0, self.rhs.shape[1]), {"frames": self.frames, "explained": 0.0}
        stats: dict = {"frames": self.frames}
        if ridge is None:
            if self.folds >= 2 and self.frames >= self.folds:
                ridge, errors = self._cv_ridge(keep)
                stats["cv_unexplained"] = {f"{r:g}": round(e, 4) for r, e in errors.items()}
            else:
                ridge = 1e-2
        G = self.gram[keep][:, keep]
        lam = ridge * float(G.diagonal().mean())
        inv = torch.linalg.inv(G + lam * torch.eye(len(keep), dtype=G.dtype)).to(self.rhs)
        rhs = self.rhs[keep.to(self.rhs.device)]
        D = inv @ rhs
        # Σ‖y − Φ D‖² = Σ‖y‖² − 2 tr(Dᵀ Φᵀ Y) + tr(Dᵀ Φᵀ Φ D)
        fitted = 2.0 * float((D.double() * rhs.double()).sum()) - float(
            (D.double() * (G.to(D.device) @ D.double())).sum())
        stats["ridge"] = ridge
        stats["explained"] = round(fitted / self.target_power, 4) if self.target_power > 0 else 1.0
        return [self.specs[int(i)] for i in keep], D, stats


# ---------------------------------------------------------------------- files
@dataclass
class MapKeys:
    """The map shape keys of an avatar (module doc).

    Attributes:
        specs: the K keys.
        color: colour deltas, encoded (sRGB) units. [K, R, R, 3]
        opacity: opacity deltas. [K, R, R, 1]
        source: what they were fitted from ("headgas" or "dynamic_maps").
    """

    specs: list[KeySpec]
    color: Tensor
    opacity: Tensor
    source: str = ""

    def __len__(self) -> int:
        return len(self.specs)


def map_key_files(keys: MapKeys, fit: dict | None = None) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """The files of ``maps/dynamic/`` for ``keys`` (float16 deltas) and their ``maps.json`` entry,
    for :func:`engine.maps.write_maps` to publish in the same change as the maps (a reader never
    sees new maps with old keys, or a manifest without its files).

    Args:
        keys: the keys.
        fit: fit statistics to record (e.g. the explained fraction), JSON-ready.
    Returns:
        ({path relative to ``maps/`` → the .npz's arrays}, the ``"dynamic"`` entry of maps.json).
    """
    names = np.array([s.shape_key for s in keys.specs], dtype=np.str_)
    signs = np.array([s.sign for s in keys.specs], dtype=np.int8)
    files, entries = {}, {}
    for m, ch in KEY_MAPS.items():
        arr = getattr(keys, m).detach().cpu().float().numpy().reshape(len(keys), *getattr(keys, m).shape[1:3], ch)
        rel = f"{DYNAMIC_DIR}/{m}.npz"
        files[rel] = {"deltas": arr.astype(np.float16), "shape_keys": names, "signs": signs}
        entries[m] = {"file": rel, "channels": ch, "max_abs": float(np.abs(arr).max(initial=0.0))}
    entry = {"format": KEYS_FORMAT, "format_version": KEYS_FORMAT_VERSION, "source": keys.source,
             "keys": [s.name for s in keys.specs], "blend": BLEND_RULE, "maps": entries, "fit": fit or {}}
    return files, entry


def load_map_keys(maps_dir: Path, manifest: dict) -> MapKeys | None:
    """Reads the keys listed in ``manifest["dynamic"]`` (None when it lists none).

    Raises:
        MapsError: a listed file is missing or its arrays disagree (naming the file).
    """
    entry = manifest.get("dynamic")
    if not entry:
        return None
    out, specs = {}, None
    for m, ch in KEY_MAPS.items():
        path = Path(maps_dir) / entry["maps"][m]["file"]
        if not path.exists():
            raise MapsError(f"{path} is missing (listed in {Path(maps_dir) / 'maps.json'})")
        with np.load(path, allow_pickle=False) as z:
            deltas, names, signs = z["deltas"].astype(np.float32), z["shape_keys"], z["signs"]
        if deltas.ndim != 4 or deltas.shape[-1] != ch or len(names) != len(deltas) or len(signs) != len(deltas):
            raise MapsError(f"{path}: expected deltas [K, R, R, {ch}] with K shape_keys and signs, found "
                            f"{deltas.shape}, {len(names)}, {len(signs)}")
        s = [KeySpec(str(n), int(g)) for n, g in zip(names, signs)]
        if specs is not None and s != specs:
            raise MapsError(f"{path}: its keys differ from the colour keys")
        specs, out[m] = s, torch.from_numpy(deltas)
    return MapKeys(specs or [], out["color"], out["opacity"], str(entry.get("source", "")))


# ---------------------------------------------------------------------- blending
class MapKeyAppearance:
    """The map shape keys blended per frame at the Gaussians' UVs (the Blender runtime's blend).

    An ``Avatar.appearance`` (:class:`engine.model.avatar.Avatar`): the Gaussians' own (map)
    colour and opacity are the base.

    Args:
        keys: the map shape keys.
        drivers: the avatar's driving vector; must name every key's shape key.
        uv: the Gaussians' UVs, OBJ convention. [N, 2]
    Raises:
        MapsError: a key's shape key is not one of the drivers.
    """

    def __init__(self, keys: MapKeys, drivers: AppearanceDrivers, uv: Tensor):
        from engine.maps import sample_map

        missing = [s.shape_key for s in keys.specs if s.shape_key not in drivers.names]
        if missing:
            raise MapsError(f"map shape keys driven by unknown shape keys {missing}; known: {list(drivers.names)}")
        self.drivers = drivers
        self.index = torch.tensor([drivers.names.index(s.shape_key) for s in keys.specs], dtype=torch.long)
        self.signs = torch.tensor([float(s.sign) for s in keys.specs])
        K = len(keys)
        stack = torch.cat([keys.color, keys.opacity], dim=-1).permute(1, 2, 0, 3).reshape(
            keys.color.shape[1], keys.color.shape[2], K * 4).to(uv.device)
        vals = sample_map(stack, uv).reshape(-1, K, 4).permute(1, 0, 2)  # [K, N, 4]
        self.d_color, self.d_opacity = vals[..., :3].contiguous(), vals[..., 3].contiguous()

    def weights(self, expr: Tensor, pose: Tensor) -> Tensor:
        """w [K] of one frame (module doc)."""
        d = self.drivers.values(expr, pose).to(self.signs.device)
        return (self.signs * d[self.index]).clamp_min(0.0)

    def blend(self, colors: Tensor, opacities: Tensor, expr: Tensor, pose: Tensor) -> tuple[Tensor, Tensor]:
        """The blend of the module doc on base values.

        Args:
            colors: base colours (the colour map at the UVs), encoded. [N, 3]
            opacities: base opacities. [N]
            expr: the frame's expression coefficients [E]; pose: its joint rotations [J·3].
        Returns:
            colours [N, 3], opacities [N]: the inputs themselves where all weights are zero.
        """
        w = self.weights(expr, pose).to(colors)
        if not bool((w != 0).any()):
            return colors, opacities
        return ((colors + torch.einsum("k,knc->nc", w, self.d_color)).clamp(0.0, 1.0),
                (opacities + torch.einsum("k,kn->n", w, self.d_opacity)).clamp(0.0, 1.0))

    def __call__(self, gaussians, expr: Tensor, pose: Tensor) -> tuple[Tensor, Tensor]:
        """Colour [N, 3] and opacity [N] of the frame from the Gaussians' own (map) values."""
        return self.blend(gaussians.colors(), gaussians.opacities(), expr, pose)


def attach_map_keys(avatar, maps_dir: Path, manifest: dict) -> MapKeys | None:
    """Sets ``avatar.appearance`` to the map shape keys of ``maps_dir`` (replacing a HeadGaS model:
    the baked avatar renders what Blender renders), when the maps have keys.

    Returns:
        the keys, or None (the avatar is left as it is).
    """
    from engine.maps import gaussian_uvs
    from engine.model.appearance_drivers import make_drivers

    keys = load_map_keys(maps_dir, manifest)
    if keys is None or len(keys) == 0:
        return None
    g = avatar.gaussians
    uv = gaussian_uvs(g.face_idx, g.bary, avatar.head.uvs, avatar.head.faces_uv_all)
    drivers = make_drivers(avatar.head, int(avatar.blendshapes.delta_exprdirs.shape[-1]), use_jaw=True)
    avatar.appearance = MapKeyAppearance(keys, drivers, uv)
    return keys
