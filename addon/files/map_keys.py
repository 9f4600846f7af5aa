"""Reads an avatar's map shape keys: ``maps/dynamic/{color,opacity}.npz`` listed under ``"dynamic"``
in ``maps/maps.json`` (numpy + stdlib, no bpy; docs/FORMATS.md, the engine's ``engine/map_keys.py``).

Each key k is driven by the value of the head's shape key ``shape_keys[k]`` on one side
(``signs[k]`` = +1 or −1): ``w_k = max(sign_k · value, 0)``; the splat runtime adds
``Σ_k w_k · delta_k`` to the colour and opacity maps (:mod:`addon.splats.geometry`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MapsError

__all__ = ["MapKeysData", "read_map_keys", "KEYS_FORMAT"]

KEYS_FORMAT = "fate-map-keys"
_MAPS_JSON = Path("maps") / "maps.json"


@dataclass
class MapKeysData:
    """The map shape keys of an avatar folder.

    Attributes:
        shape_keys: the head shape key driving each key. [K] str
        signs: +1 (key for positive values) or −1 (negative values). [K] int8
        color: colour deltas, encoded (sRGB) units, **bottom row first** (``Image.pixels``
            order). [K, H, W, 3] float32
        opacity: opacity deltas, bottom row first. [K, H, W] float32
        source: what the engine fitted them from ("headgas", "dynamic_maps").
    """

    shape_keys: list[str]
    signs: np.ndarray
    color: np.ndarray
    opacity: np.ndarray
    source: str = ""

    def __len__(self) -> int:
        return len(self.shape_keys)


def read_map_keys(folder: Path) -> MapKeysData | None:
    """The map shape keys of an avatar folder, or None when ``maps.json`` lists none (a static
    avatar, or one not baked yet).

    Raises:
        MapsError: maps.json is unreadable, a listed file is missing, or the arrays disagree
            (naming the file and what was expected).
    """
    manifest = Path(folder) / _MAPS_JSON
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise MapsError(f"{manifest}: cannot read JSON ({exc})") from exc
    entry = data.get("dynamic") if isinstance(data, dict) else None
    if not entry:
        return None
    if entry.get("format") != KEYS_FORMAT:
        raise MapsError(f"{manifest}: 'dynamic' has format {entry.get('format')!r}, expected {KEYS_FORMAT!r}")
    arrays, names, signs = {}, None, None
    for m, ch in (("color", 3), ("opacity", 1)):
        try:
            path = manifest.parent / str(entry["maps"][m]["file"])
        except (KeyError, TypeError) as exc:
            raise MapsError(f"{manifest}: 'dynamic.maps.{m}.file' is missing") from exc
        try:
            with np.load(path, allow_pickle=False) as z:
                deltas = np.asarray(z["deltas"], np.float32)
                n, s = [str(x) for x in z["shape_keys"].tolist()], np.asarray(z["signs"], np.int8)
        except (OSError, KeyError, ValueError) as exc:
            raise MapsError(f"{path}: cannot read the map shape keys ({exc})") from exc
        if deltas.ndim != 4 or deltas.shape[-1] != ch or len(n) != len(deltas) or s.shape != (len(deltas),):
            raise MapsError(f"{path}: expected deltas [K, H, W, {ch}], shape_keys [K] and signs [K], found "
                            f"{deltas.shape}, {len(n)}, {s.shape}")
        if names is not None and (n != names or not np.array_equal(s, signs)):
            raise MapsError(f"{path}: its keys differ from the colour keys' {names}")
        names, signs = n, s
        arrays[m] = np.ascontiguousarray(deltas[:, ::-1])  # files: top row first; Blender: bottom row first
    return MapKeysData(names or [], signs, arrays["color"], arrays["opacity"][..., 0],
                       str(entry.get("source", "")))
