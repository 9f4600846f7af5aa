"""UV attribute maps ↔ Gaussians (FATE §3.3): the editable form of a baked avatar.

A map is an image over the head model's UV layout, stored top row first (row 0 ↔ v≈1; the UV
origin is bottom-left, docs/ARCHITECTURE.md). Values are *activated* attributes:

========== ==== ============================================= ===========
map        ch.  value                                          colour space
========== ==== ============================================= ===========
color      3    encoded (sRGB) colour in [0, 1]                sRGB
opacity    1    opacity in [0, 1]                              Non-Color
scale      3    multiple of the face scale k_f (world σ = k_f·s) Non-Color
rotation   3    axis-angle in the face frame, radians          Non-Color
offset     1    meters along the unit face normal               Non-Color
========== ==== ============================================= ===========

A relightable avatar (``appearance = "pbr"``) has ``albedo`` in place of ``color`` plus
``roughness`` and ``f0`` (:data:`PBR_MAP_SPECS`).

A Gaussian takes the bilinearly interpolated (clamp-to-edge) value at its UV coordinate.
Files: one float32 OpenEXR per map, an 8-bit PNG preview, and ``maps.json``, published together
(:mod:`engine.io.publish`, ``maps.json`` last). Re-baking first copies the previous maps into
``maps/backups/<YYYYmmdd-HHMMSS>/`` (at most ``keep_backups`` sets are kept), so maps an artist
painted and synced from Blender are never lost.

Besides the five attribute maps, a bake writes the ``visibility`` map (1 channel, Non-Color,
[0, 1]: how well the training views saw that part of the surface, ``engine.model.visibility``;
0 = invented by the full-head completion). It is for artists and never feeds the splats
(:data:`AUX_MAP_SPECS`).

Maps read back are checked: NaN/Inf, channel counts, and the ranges the re-splat relies on
(opacity in [0, 1], scale > 0, |offset| ≤ the avatar's shell) are errors naming the file; colour
outside [0, 1] is clamped with a warning.

Re-splat density: the maps can be re-splatted onto the trained Gaussians' own bindings ("as
trained") or onto one Gaussian per (k-th) covered texel sized to the texel ("per texel",
:func:`texel_bindings`), so detail painted finer than the trained Gaussians' spacing survives.
The Blender splat runtime does the same (``addon/splats/texels.py``).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from engine.errors import MapsError

log = logging.getLogger(__name__)

MAPS_FORMAT = "fate-maps"
MAPS_FORMAT_VERSION = 1
BACKUPS_DIR = "backups"
"""Sub-folder of ``maps/`` holding one folder of previous maps per re-bake."""

TEXEL_SIGMA = 0.6
"""Standard deviation of a per-texel Gaussian, in texel blocks (the Blender runtime's
``addon.splats.texels.TEXEL_SIGMA``: covers the surface without holes, keeps a one-texel line)."""
TEXEL_THICKNESS = 0.1
"""Normal standard deviation of a per-texel Gaussian, as a fraction of its smaller in-plane one."""


@dataclass(frozen=True)
class MapSpec:
    """What one attribute map holds."""

    name: str
    channels: int
    colorspace: str
    units: str
    preview_range: tuple[float, float]


MAP_SPECS: dict[str, MapSpec] = {
    "color": MapSpec("color", 3, "sRGB", "encoded colour, [0, 1]", (0.0, 1.0)),
    "opacity": MapSpec("opacity", 1, "Non-Color", "opacity, [0, 1]", (0.0, 1.0)),
    "scale": MapSpec("scale", 3, "Non-Color", "multiple of the face scale (mean edge length)", (0.0, 1.5)),
    "rotation": MapSpec("rotation", 3, "Non-Color", "axis-angle in the face frame, radians", (-math.pi, math.pi)),
    "offset": MapSpec("offset", 1, "Non-Color", "meters along the face normal", (-0.01, 0.01)),
}

PBR_MAP_SPECS: dict[str, MapSpec] = {
    "albedo": MapSpec("albedo", 3, "sRGB", "encoded albedo, [0, 1]", (0.0, 1.0)),
    "roughness": MapSpec("roughness", 1, "Non-Color", "roughness o, [0.5, 1] as trained", (0.0, 1.0)),
    "f0": MapSpec("f0", 1, "Non-Color", "Fresnel base reflectance F0, [0.04, 0.15] as trained", (0.0, 0.2)),
}
"""The maps of a relightable (``appearance = "pbr"``) avatar: ``albedo`` takes the place of
``color`` (same units and colour space), ``roughness`` and ``f0`` are added (engine.model.pbr);
``maps.json`` then says ``"appearance": "pbr"`` and lists the learnt environment."""

AUX_MAP_SPECS: dict[str, MapSpec] = {
    "visibility": MapSpec("visibility", 1, "Non-Color", "how well the training views saw it, [0, 1]", (0.0, 1.0)),
}
"""Maps written next to the attribute maps that do not drive the Gaussians."""

SPLAT_MAP_SPECS: dict[str, MapSpec] = {**MAP_SPECS, **PBR_MAP_SPECS}
"""Every map that drives the Gaussians, of either appearance model."""

ALL_MAP_SPECS: dict[str, MapSpec] = {**SPLAT_MAP_SPECS, **AUX_MAP_SPECS}


def map_spec(name: str) -> MapSpec:
    """The spec of any known map (attribute, relightable or auxiliary).

    Raises:
        MapsError: an unknown map name.
    """
    spec = ALL_MAP_SPECS.get(name)
    if spec is None:
        raise MapsError(f"unknown map {name!r}; known: {sorted(ALL_MAP_SPECS)}")
    return spec


def sample_maps(maps: dict[str, Tensor], uv: Tensor) -> dict[str, Tensor]:
    """Bilinear, clamp-to-edge lookup of every map at UV coordinates.

    Args:
        maps: name → map [H, W, C] (row 0 = top = v≈1).
        uv: OBJ-convention UV coordinates (origin bottom-left). [N, 2]
    Returns:
        name → values [N, C] (opacity and offset [N]).
    """
    out = {}
    for name, m in maps.items():
        vals = sample_map(m, uv)
        spec = ALL_MAP_SPECS.get(name)
        out[name] = vals[:, 0] if spec is not None and spec.channels == 1 else vals
    return out


def sample_map(m: Tensor, uv: Tensor) -> Tensor:
    """Bilinear, clamp-to-edge lookup of one map [H, W, C] at uv [N, 2] → [N, C].

    Texel (row r, col c) has its centre at uv ((c + 0.5) / W, 1 − (r + 0.5) / H).
    """
    grid = torch.stack([2.0 * uv[:, 0] - 1.0, 1.0 - 2.0 * uv[:, 1]], dim=-1).to(m.dtype)
    img = m.permute(2, 0, 1)[None]
    vals = F.grid_sample(img, grid[None, None], mode="bilinear", padding_mode="border", align_corners=False)
    return vals[0, :, 0, :].T


def gaussian_uvs(face_idx: Tensor, bary: Tensor, uvs: np.ndarray, faces_uv: np.ndarray) -> Tensor:
    """UV coordinate of each Gaussian from its binding. [N, 2] (OBJ convention)."""
    tri = torch.as_tensor(uvs, dtype=torch.float32, device=bary.device)[
        torch.as_tensor(faces_uv, dtype=torch.long, device=bary.device)[face_idx]]
    return (bary[..., None] * tri).sum(dim=-2)


# ---------------------------------------------------------------------- maps -> Gaussians
@dataclass
class TexelBindings:
    """Per-texel Gaussians of a map resolution: where they sit and their texel-sized shape.

    Attributes:
        face_idx: face containing the texel centre, int64. [N]
        bary: barycentric coordinates of the centre. [N, 3]
        uv: the texel centre, OBJ convention. [N, 2]
        scale: standard deviations as multiples of the face scale k_f. [N, 3]
        local_rot: rotations in the face frame (about the normal). [N, 3, 3]
    """

    face_idx: Tensor
    bary: Tensor
    uv: Tensor
    scale: Tensor
    local_rot: Tensor

    def __len__(self) -> int:
        return int(self.face_idx.shape[0])


def texel_bindings(rest_verts: Tensor, faces: Tensor, uvs: np.ndarray, faces_uv: np.ndarray, resolution: int,
                   stride: int = 1, sigma: float = TEXEL_SIGMA) -> TexelBindings:
    """One Gaussian per ``stride``-th covered texel of a ``resolution``² map, sized to the texel.

    The texels used are those with column ``c = k·j + k//2`` and row from the bottom
    ``H − 1 − row = k·i + k//2`` (so the Blender runtime picks the same ones); each takes its face
    and barycentric from :func:`engine.geometry.uv.sample_uv_texels`. Shape: with the face's UV →
    surface Jacobian ``J = [p1 − p0, p2 − p0] · [t1 − t0, t2 − t0]⁻¹`` on the rest mesh, a texel
    block spans ``a = J[:, 0]·k/R`` and ``b = J[:, 1]·k/R``; an isotropic Gaussian of ``sigma``
    blocks mapped by ``[a | b]`` has tangent covariance ``σ²(a aᵀ + b bᵀ)``, whose eigenvectors
    and eigenvalues give the rotation about the face normal and the two in-plane standard
    deviations (normal: :data:`TEXEL_THICKNESS` of the smaller), stored relative to the face frame
    and ``k_f`` like any FATE Gaussian (Eq. 2–3).

    Args:
        rest_verts: rest vertices, meters, FLAME canonical. [V, 3]
        faces: mesh + mouth faces, int64. [F, 3]
        uvs: [T, 2] OBJ convention; faces_uv: [F, 3] int64 (the same faces' UV corners).
        resolution: map side, texels.
        stride: k ≥ 1.
        sigma: standard deviation in texel blocks.
    Returns:
        :class:`TexelBindings`.
    Raises:
        MapsError: a non-positive stride.
    """
    from engine.geometry.mesh_ops import face_frames
    from engine.geometry.uv import sample_uv_texels

    k, res = int(stride), int(resolution)
    if k < 1:
        raise MapsError(f"texel stride must be >= 1, found {stride}")
    s = sample_uv_texels(uvs, faces_uv, res)
    keep = ((s.texel[:, 1] - k // 2) % k == 0) & ((res - 1 - s.texel[:, 0] - k // 2) % k == 0)
    face_idx = torch.as_tensor(s.face_idx[keep], dtype=torch.long)
    bary = torch.as_tensor(s.bary[keep])
    v = rest_verts.double()
    tri = v[faces[face_idx]]  # [N, 3, 3]
    t = torch.as_tensor(np.asarray(uvs, np.float64)[np.asarray(faces_uv)[face_idx.numpy()]])  # [N, 3, 2]
    dP = torch.stack([tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]], -1)
    dT = torch.stack([t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]], -1)
    step = dP @ torch.linalg.inv(dT) * (k / res * sigma)  # [N, 3, 2], meters
    R_f, k_f, _ = face_frames(rest_verts.float(), faces)
    R_f, k_f = R_f[face_idx].double(), k_f[face_idx].double()
    local = (R_f.transpose(-1, -2) @ step)[:, :2]  # in-plane, face frame [N, 2, 2]
    C = local @ local.transpose(-1, -2)
    theta = 0.5 * torch.atan2(2.0 * C[:, 0, 1], C[:, 0, 0] - C[:, 1, 1])
    mean, half = 0.5 * (C[:, 0, 0] + C[:, 1, 1]), 0.5 * (C[:, 0, 0] - C[:, 1, 1])
    rad = torch.sqrt(half ** 2 + C[:, 0, 1] ** 2)
    s1, s2 = (mean + rad).clamp_min(0).sqrt(), (mean - rad).clamp_min(0).sqrt()
    scale = torch.stack([s1, s2, TEXEL_THICKNESS * s2], -1) / k_f.clamp_min(1e-12)[:, None]
    c, sn = torch.cos(theta), torch.sin(theta)
    z, o = torch.zeros_like(c), torch.ones_like(c)
    rot = torch.stack([torch.stack([c, -sn, z], -1), torch.stack([sn, c, z], -1), torch.stack([z, z, o], -1)], -2)
    return TexelBindings(face_idx, bary, torch.as_tensor(s.uv[keep]), scale.float(), rot.float())


def gaussians_from_maps(maps: dict[str, Tensor], verts: Tensor, faces: Tensor, face_idx: Tensor | None = None,
                        bary: Tensor | None = None, uv: Tensor | None = None, *,
                        texels: TexelBindings | None = None):
    """Re-splat: (edited) maps + bindings + posed mesh → world Gaussians (FATE §3.3).

    This is the engine's reference for the Blender splat runtime (``addon/splats/runtime.py``).

    Args:
        maps: name → [H, W, C] activated maps (all five), row 0 = top (v≈1).
        verts: posed vertices, meters. [V, 3]
        faces: mesh + mouth faces, int64. [F, 3]
        face_idx: int64 [N]; bary: [N, 3]; uv: the bindings' UVs (OBJ convention). [N, 2] —
            the "as trained" density (the trained Gaussians' bindings).
        texels: "per texel" density instead (:func:`texel_bindings`): the Gaussians sit at the
            texels, colour/opacity/offset come from the maps, scale and rotation from the texels.
    Returns:
        :class:`engine.model.gaussians.WorldGaussians`.
    Raises:
        MapsError: a map is missing, or neither bindings nor ``texels`` were given.
    """
    from engine.geometry.rotations import axis_angle_to_matrix
    from engine.model.gaussians import place_gaussians

    if "color" not in maps and "albedo" in maps:  # a relightable avatar: placed with its albedo
        maps = {**maps, "color": maps["albedo"]}
    missing = sorted(set(MAP_SPECS) - set(maps))
    if missing:
        raise MapsError(f"re-splatting needs all maps; missing: {missing}")
    if texels is not None:
        v = sample_maps({m: maps[m] for m in ("color", "opacity", "offset")}, texels.uv)
        return place_gaussians(verts, faces, texels.face_idx, texels.bary, v["color"], v["opacity"],
                               texels.scale, texels.local_rot, v["offset"])
    if face_idx is None or bary is None or uv is None:
        raise MapsError("gaussians_from_maps needs the bindings (face_idx, bary, uv) or texels")
    v = sample_maps(maps, uv)
    return place_gaussians(verts, faces, face_idx, bary, v["color"], v["opacity"], v["scale"],
                           axis_angle_to_matrix(v["rotation"]), v["offset"])


@torch.no_grad()
def set_gaussians_from_maps(gaussians, maps: dict[str, Tensor], uv: Tensor) -> None:
    """Overwrites a :class:`engine.model.gaussians.UVGaussians`' attributes with the maps' values at their
    UVs (inverse activations of engine.model.gaussians), e.g. to render an edited avatar."""
    from engine.geometry.rotations import axis_angle_to_quaternion
    from engine.model.gaussians import SH_C0, inverse_sigmoid

    vals = sample_maps({k: v.to(uv.device) for k, v in maps.items() if k in SPLAT_MAP_SPECS}, uv)
    g = gaussians
    if "albedo" in vals:  # a relightable avatar's colour parameter is its albedo
        vals["color"] = vals.pop("albedo")
    if "roughness_raw" in g.parameter_names():
        from engine.model.pbr import PBRAppearance

        PBRAppearance.set_values(g, vals)
    if "color" in vals:
        g.sh0.data = (vals["color"].clamp(0, 1) - 0.5) / SH_C0
    if "opacity" in vals:
        g.opacity_logit.data = inverse_sigmoid(vals["opacity"])
    if "scale" in vals:
        g.scale_log.data = torch.log(vals["scale"].clamp_min(1e-8))
    if "rotation" in vals:
        g.rotation.data = axis_angle_to_quaternion(vals["rotation"])
    if "offset" in vals:
        ratio = (vals["offset"] / g.shell).clamp(-0.999999, 0.999999)
        g.offset_raw.data = torch.atanh(ratio)


def texel_gaussians(maps: dict[str, Tensor], rest_verts: Tensor, head, resolution: int, stride: int = 1,
                    shell: float = 0.01):
    """Per-texel :class:`engine.model.gaussians.UVGaussians` (:func:`texel_bindings`) with the maps'
    colour, opacity and offset at the texels, e.g. to render or evaluate at "per texel" density.

    Args:
        maps: name → activated map [R, R, C], row 0 = top.
        rest_verts: the subject's rest vertices (shape and learnt Δ applied), meters. [V, 3]
        head: the :class:`engine.model.head_model.HeadModel` (faces, UVs, mouth faces).
        resolution: map side R, texels.
        stride: one Gaussian per ``stride``-th texel.
        shell: maximum |normal offset| of the Gaussians, meters (offsets beyond it are clamped).
    """
    from engine.geometry.rotations import matrix_to_quaternion
    from engine.model.gaussians import UVGaussians

    faces = torch.as_tensor(head.faces_all, dtype=torch.long, device=rest_verts.device)
    tb = texel_bindings(rest_verts.detach().cpu(), faces.cpu(), head.uvs, head.faces_uv_all, resolution, stride)
    g = UVGaussians.from_bindings(tb.face_idx, tb.bary, rest_verts.detach().cpu(), faces.cpu(), shell=shell)
    names = ("color", "opacity", "offset")
    if "albedo" in maps:  # relightable: albedo, roughness and F0 per texel too
        from engine.model.pbr import PBRAppearance

        PBRAppearance.add_parameters(g)
        names = ("albedo", "opacity", "offset", "roughness", "f0")
    set_gaussians_from_maps(g, {m: maps[m] for m in names}, tb.uv)
    with torch.no_grad():
        g.scale_log.data = torch.log(tb.scale.clamp_min(1e-12))
        g.rotation.data = matrix_to_quaternion(tb.local_rot)
    return g.to(rest_verts.device)


def total_variation(m: Tensor, mask: np.ndarray | Tensor) -> float:
    """Mean L1 difference between horizontally and vertically adjacent texels that are both inside
    ``mask`` (the UV islands): the continuity measure of FATE Fig. 4.

    Args:
        m: map [R, R, C] (summed over channels).
        mask: bool [R, R], True inside the islands (``engine.geometry.uv.island_mask``).
    Returns:
        the mean, in the map's units (e.g. colour in [0, 1] per channel, summed over RGB).
    """
    mk = torch.as_tensor(mask, dtype=torch.bool)
    dx = (m[:, 1:] - m[:, :-1]).abs().sum(-1)[mk[:, 1:] & mk[:, :-1]]
    dy = (m[1:] - m[:-1]).abs().sum(-1)[mk[1:] & mk[:-1]]
    return float(torch.cat([dx, dy]).mean())


def outside_islands(uv: Tensor, island: np.ndarray) -> Tensor:
    """Gaussians whose UV's nearest texel is not covered by any UV face (bool [N])."""
    h, w = island.shape
    col = (uv[:, 0] * w).floor().clamp(0, w - 1).long().cpu()
    row = ((1 - uv[:, 1]) * h).floor().clamp(0, h - 1).long().cpu()
    return ~torch.as_tensor(island)[row, col]


def load_maps_into(gaussians, maps_dir: Path, head) -> dict[str, Tensor]:
    """Reads (validated) maps from ``maps_dir`` and re-splats ``gaussians`` from them.

    Warns (once, with the count) about Gaussians whose UV lies outside every UV island: they
    take the clamped border value of the nearest texel instead of NaNs.

    Returns:
        the maps that were applied.
    """
    from engine.geometry.uv import island_mask

    maps, manifest = load_maps(maps_dir)
    check_map_ranges(maps, float(gaussians.shell), Path(maps_dir))
    uv = gaussian_uvs(gaussians.face_idx, gaussians.bary, head.uvs, head.faces_uv_all)
    res = manifest["resolution"]
    outside = outside_islands(uv, island_mask(head.uvs, head.faces_uv_all, res))
    if outside.any():
        log.warning("%d of %d Gaussians have UVs outside every UV island of %s; they use the "
                    "nearest texel's value", int(outside.sum()), len(uv), maps_dir)
    set_gaussians_from_maps(gaussians, maps, uv)
    return maps


# ---------------------------------------------------------------------- files
def check_map_ranges(maps: dict[str, Tensor], shell: float, maps_dir: Path) -> None:
    """Checks the values the re-splat relies on (module doc): opacity in [0, 1], scale > 0,
    |offset| ≤ ``shell`` meters (0.1 % tolerance for float round-off); warns about colour outside
    [0, 1] (it is clamped).

    Raises:
        MapsError: naming the map file, the rule and the value found.
    """
    def bad(name: str, rule: str, found: float) -> MapsError:
        return MapsError(f"{Path(maps_dir) / (name + '.exr')}: the {name} map must be {rule}, found {found:.6g}; "
                         "repaint it or re-bake")

    if "opacity" in maps:
        lo, hi = float(maps["opacity"].min()), float(maps["opacity"].max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise bad("opacity", "in [0, 1]", lo if lo < -1e-3 else hi)
    if "scale" in maps and float(maps["scale"].min()) <= 0:
        raise bad("scale", "> 0 (a multiple of the face size)", float(maps["scale"].min()))
    if "offset" in maps:
        worst = float(maps["offset"].abs().max())
        if worst > shell * (1 + 1e-3):
            raise bad("offset", f"within ±{shell} m (the avatar's shell)", worst)
    for name in ("color", "albedo"):  # albedo: a relightable avatar's colour
        if name in maps:
            lo, hi = float(maps[name].min()), float(maps[name].max())
            if lo < 0 or hi > 1:
                log.warning("%s: colour values in [%.3g, %.3g] are clamped to [0, 1]",
                            Path(maps_dir) / f"{name}.exr", lo, hi)


def write_maps(maps_dir: Path, maps: dict[str, Tensor], extra: dict | None = None, keep_backups: int = 5,
               exr_files: dict[str, np.ndarray] | None = None,
               npz_files: dict[str, dict[str, np.ndarray]] | None = None) -> Path:
    """Publishes maps as float32 EXR + PNG previews + maps.json, as one change (module doc).

    If ``maps_dir`` already holds maps, they are first copied into
    ``maps/backups/<YYYYmmdd-HHMMSS>/`` and the oldest backup sets beyond ``keep_backups`` are
    deleted (0: no backup).

    ``exr_files`` (file name → float32 array [H, W, C]) are published in the same change, e.g. a
    relightable avatar's ``environment.exr`` (``extra`` then names it in maps.json); so are
    ``npz_files`` (path relative to ``maps_dir`` → the arrays of one .npz), e.g. the map shape keys
    ``dynamic/color.npz`` (:func:`engine.map_keys.map_key_files`).

    Returns:
        maps.json's path.
    Raises:
        MapsError: a wrong channel count or NaN/Inf values (nothing is written).
        OutputError: the folder cannot be written (the previous maps are intact).
    """
    from engine.io.atomic import write_json, write_npz
    from engine.io.images import write_exr, write_png
    from engine.io.publish import publish

    maps_dir = Path(maps_dir)
    arrays = {}
    for name, m in maps.items():
        spec = map_spec(name)
        arr = m.detach().cpu().float().numpy()
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.shape[-1] != spec.channels:
            raise MapsError(f"map {name}: expected {spec.channels} channels, found {arr.shape[-1]}")
        if not np.isfinite(arr).all():
            raise MapsError(f"map {name} for {maps_dir}: {int((~np.isfinite(arr)).sum())} NaN/Inf value(s); "
                            "nothing was written")
        arrays[name] = arr.astype(np.float32)
    others = {}
    for fname, arr in (exr_files or {}).items():
        if Path(fname).name != fname or not fname.endswith(".exr") or fname[:-4] in arrays:
            raise MapsError(f"{maps_dir}: {fname!r} cannot be published with the maps (a plain .exr name "
                            "that is not a map's)")
        if not np.isfinite(arr).all():
            raise MapsError(f"{maps_dir / fname}: {int((~np.isfinite(arr)).sum())} NaN/Inf value(s); "
                            "nothing was written")
        others[fname] = np.asarray(arr, dtype=np.float32)
    for rel, arrays_of in (npz_files or {}).items():
        parts = Path(rel).parts
        if not rel.endswith(".npz") or len(parts) > 2 or ".." in parts or Path(rel).is_absolute():
            raise MapsError(f"{maps_dir}: {rel!r} cannot be published with the maps (an .npz in the maps "
                            "folder or one sub-folder of it)")
        bad = [k for k, a in arrays_of.items() if np.asarray(a).dtype.kind == "f" and not np.isfinite(a).all()]
        if bad:
            raise MapsError(f"{maps_dir / rel}: NaN/Inf values in {bad}; nothing was written")
    entries = {}
    res = None
    if keep_backups > 0 and (maps_dir / "maps.json").exists():
        backup_maps(maps_dir)
    with publish(maps_dir.parent) as pub:
        for name, arr in arrays.items():
            spec = ALL_MAP_SPECS[name]
            res = arr.shape[0]
            write_exr(pub.path(f"{maps_dir.name}/{name}.exr"), arr)
            lo, hi = spec.preview_range
            prev = np.clip((arr - lo) / (hi - lo), 0, 1)
            write_png(pub.path(f"{maps_dir.name}/{name}.png"), prev if spec.channels != 1 else prev[..., 0])
            entries[name] = {"file": f"{name}.exr", "preview": f"{name}.png", "channels": spec.channels,
                             "colorspace": spec.colorspace, "units": spec.units,
                             "min": float(arr.min()), "max": float(arr.max())}
        for fname, arr in others.items():
            write_exr(pub.path(f"{maps_dir.name}/{fname}"), arr)
        for rel, arrays_of in (npz_files or {}).items():
            write_npz(pub.path(f"{maps_dir.name}/{rel}"), **arrays_of)
        manifest = {"format": MAPS_FORMAT, "format_version": MAPS_FORMAT_VERSION, "resolution": res,
                    "uv_origin": "bottom-left; files store the top row (v=1) first", "maps": entries}
        manifest.update(extra or {})
        write_json(pub.path(f"{maps_dir.name}/maps.json"), manifest)
    prune_backups(maps_dir, keep_backups)
    return maps_dir / "maps.json"


BACKED_UP_SUBDIRS = ("dynamic",)
"""Sub-folders of ``maps/`` a backup copies with the maps (the map shape keys, engine.map_keys)."""


def backup_maps(maps_dir: Path, stamp: str | None = None) -> Path:
    """Copies the current maps (every file directly in ``maps_dir`` except Sync Maps' ``*.bak.*``
    copies, and the :data:`BACKED_UP_SUBDIRS`) into ``maps_dir/backups/<stamp>/``; the folder
    appears whole (one rename).

    Returns:
        the backup folder.
    Raises:
        OutputError: the copy failed (nothing was overwritten yet).
    """
    from engine.errors import OutputError
    from engine.io.atomic import uninterruptible

    maps_dir = Path(maps_dir)
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    root = maps_dir / BACKUPS_DIR
    dest, n = root / stamp, 1
    while dest.exists():
        dest, n = root / f"{stamp}-{n}", n + 1
    tmp = root / f".{dest.name}.tmp"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in sorted(maps_dir.iterdir()):
            if f.is_file() and not f.name.startswith(".") and ".bak." not in f.name:
                shutil.copy2(f, tmp / f.name)
        for sub in BACKED_UP_SUBDIRS:  # the map shape keys belong to the maps they were fitted on
            if (maps_dir / sub).is_dir():
                shutil.copytree(maps_dir / sub, tmp / sub)
        tmp.rename(dest)
    except BaseException as exc:  # a failed or cancelled copy leaves no partial backup
        with uninterruptible():
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot back up the previous maps of {maps_dir} to {dest} "
                              f"({exc.strerror or exc}); nothing was overwritten") from exc
        raise
    log.info("previous maps of %s backed up to %s", maps_dir, dest)
    return dest


def prune_backups(maps_dir: Path, keep: int) -> list[Path]:
    """Deletes the oldest backup sets of ``maps_dir/backups`` beyond the newest ``keep``; returns them."""
    root = Path(maps_dir) / BACKUPS_DIR
    if not root.is_dir():
        return []
    sets = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)
    old = sets[:max(len(sets) - keep, 0)]
    for d in old:
        shutil.rmtree(d, ignore_errors=True)
    return old


def load_maps(maps_dir: Path, names=None) -> tuple[dict[str, Tensor], dict]:
    """Reads and validates maps written by :func:`write_maps` (possibly edited elsewhere).

    A map whose resolution differs from maps.json's is resampled (bilinear) with a warning.

    Raises:
        MapsError: missing manifest or file, wrong channel count, NaN/Inf values (naming the file).
    """
    from engine.io.images import ImageIOError, read_image
    from engine.io.publish import settle
    from engine.io.readers import load_manifest

    maps_dir = Path(maps_dir)
    settle(maps_dir.parent)
    mpath = maps_dir / "maps.json"
    if not mpath.exists():
        raise MapsError(f"{mpath} is missing: bake the avatar first (python -m engine bake)")
    manifest = load_manifest(mpath, MapsError, MAPS_FORMAT, MAPS_FORMAT_VERSION, "maps manifest")
    try:
        res = int(manifest["resolution"])
        listed = {str(k): dict(v) for k, v in manifest["maps"].items()}
        for entry in listed.values():
            str(entry["file"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MapsError(f"{mpath}: malformed manifest ({type(exc).__name__}: {exc})") from exc
    out = {}
    for name, entry in listed.items():
        if names is not None and name not in names:
            continue
        spec = ALL_MAP_SPECS.get(name)
        if spec is None:
            raise MapsError(f"{mpath}: unknown map {name!r}; known: {sorted(ALL_MAP_SPECS)}")
        fpath = maps_dir / entry["file"]
        if not fpath.exists():
            raise MapsError(f"{fpath} is missing (listed in {mpath})")
        try:
            arr = np.asarray(read_image(fpath), dtype=np.float32)
        except ImageIOError as exc:
            raise MapsError(f"{fpath}: cannot read the {name} map ({exc})") from exc
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.shape[-1] == 4 and spec.channels == 3:
            arr = arr[..., :3]
        if arr.shape[-1] != spec.channels:
            raise MapsError(f"{fpath}: expected {spec.channels} channel(s) for the {name} map, "
                            f"found {arr.shape[-1]}")
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise MapsError(f"{fpath}: {bad} NaN/Inf value(s) in the {name} map")
        t = torch.from_numpy(np.ascontiguousarray(arr))
        if t.shape[0] != res or t.shape[1] != res:
            log.warning("%s is %dx%d, maps.json says %d²: resampling", fpath, t.shape[1], t.shape[0], res)
            t = F.interpolate(t.permute(2, 0, 1)[None], size=(res, res), mode="bilinear",
                              align_corners=False)[0].permute(1, 2, 0)
        out[name] = t
    return out, manifest


# ---------------------------------------------------------------------- editing
def apply_sticker(color_map: Tensor, sticker: Tensor, uv_box: tuple[float, float, float, float]) -> Tensor:
    """Alpha-composites an RGBA image into a UV rectangle of the colour map (FATE's sticker edit).

    Args:
        color_map: [H, W, 3] encoded colour, row 0 = top (v≈1).
        sticker: [h, w, 4] (or [h, w, 3] = opaque) in [0, 1], row 0 = top.
        uv_box: (u0, v0, u1, v1) with u0 < u1, v0 < v1 in [0, 1], OBJ convention (v up).
    Returns:
        the edited map (a new tensor). [H, W, 3]
    Raises:
        MapsError: an empty or out-of-range box.
    """
    u0, v0, u1, v1 = uv_box
    if not (0 <= u0 < u1 <= 1 and 0 <= v0 < v1 <= 1):
        raise MapsError(f"uv box must satisfy 0 <= u0 < u1 <= 1 and 0 <= v0 < v1 <= 1, found {uv_box}")
    H, W, _ = color_map.shape
    c0, c1 = int(round(u0 * W)), int(round(u1 * W))
    r0, r1 = int(round((1 - v1) * H)), int(round((1 - v0) * H))
    if c1 <= c0 or r1 <= r0:
        raise MapsError(f"uv box {uv_box} covers no texel of a {W}x{H} map")
    if sticker.shape[-1] == 3:
        sticker = torch.cat([sticker, torch.ones_like(sticker[..., :1])], dim=-1)
    patch = F.interpolate(sticker.permute(2, 0, 1)[None].float(), size=(r1 - r0, c1 - c0),
                          mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    out = color_map.clone()
    a = patch[..., 3:4].clamp(0, 1)
    out[r0:r1, c0:c1] = patch[..., :3] * a + out[r0:r1, c0:c1] * (1 - a)
    return out
