"""Rendering an avatar's frames: its own tracking, or another sequence's (cross-reenactment)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterator

import torch

from engine.avatar_folder import LoadedAvatar, load_avatar
from engine.data import load_sequence
from engine.device import resolve_device
from engine.errors import ConfigError
from engine.evaluate.config import RenderConfig
from engine.geometry.cameras import Camera
from engine.map_keys import attach_map_keys
from engine.maps import load_maps, load_maps_into, texel_gaussians

log = logging.getLogger(__name__)


def load_for_rendering(avatar_dir: str | Path, device: torch.device, from_maps: bool,
                       texel_stride: int = 0, map_keys: bool = True) -> LoadedAvatar:
    """Loads an avatar; with ``from_maps`` its Gaussian attributes are replaced by those
    re-splatted from its baked (possibly edited) maps (FATE §3.3): onto the trained Gaussians'
    bindings (``texel_stride`` 0) or onto one Gaussian per ``texel_stride``-th covered texel
    (:func:`engine.maps.texel_gaussians`), and, with ``map_keys``, their colour and opacity follow
    the map shape keys of ``maps/dynamic`` as in Blender (:mod:`engine.map_keys`; a HeadGaS model
    is replaced by them, without keys the maps are static)."""
    loaded = load_avatar(avatar_dir, device)
    if from_maps:
        loaded.avatar.appearance = None
    if from_maps and texel_stride > 0:
        av = loaded.avatar
        maps, manifest = load_maps(loaded.folder.maps_dir)
        shape = torch.as_tensor(loaded.tracking["shape"], device=device)[None]
        n_expr = av.blendshapes.delta_exprdirs.shape[-1]
        with torch.no_grad():
            rest, _ = av.posed_vertices(shape, torch.zeros(1, n_expr, device=device),
                                        torch.zeros(1, av.head.num_joints * 3, device=device), None)
        av.gaussians = texel_gaussians({k: v.to(device) for k, v in maps.items()}, rest[0], av.head,
                                       int(manifest["resolution"]), texel_stride, av.gaussians.shell)
    elif from_maps:
        load_maps_into(loaded.avatar.gaussians, loaded.folder.maps_dir, loaded.avatar.head)
    if from_maps and map_keys:
        attach_map_keys(loaded.avatar, loaded.folder.maps_dir, load_maps(loaded.folder.maps_dir, names=())[1])
    return loaded


def iter_frames(loaded: LoadedAvatar, split: str, driver: str = "", device: torch.device | str = "cpu"
                ) -> Iterator[tuple[int, str, torch.Tensor, torch.Tensor, torch.Tensor, Camera]]:
    """Frames to render: (index, name, expr [E], pose [J·3], translation [3], camera).

    From the avatar's own ``tracking.npz`` (``split`` = train/test/all) or, with ``driver``, from
    another dataset's FLAME parameters and cameras (cross-reenactment; expressions beyond the
    avatar's expression dimension are dropped, missing ones are zero).
    """
    n_expr = loaded.avatar.blendshapes.delta_exprdirs.shape[-1]
    if driver:
        seq = load_sequence(Path(driver))
        idx = seq.indices(split) if split != "all" else list(range(len(seq)))
        for i in idx:
            e = torch.zeros(n_expr)
            k = min(n_expr, seq.expr.shape[1])
            e[:k] = seq.expr[i, :k]
            yield i, seq.frame_names[i], e.to(device), seq.pose[i].to(device), seq.translation[i].to(device), \
                seq.camera(i).to(device)
        return
    tr = loaded.tracking
    want = {"train": 0, "test": 1}.get(split)
    if split not in ("train", "test", "all"):
        raise ConfigError(f"split must be train, test or all, found {split!r}")
    for i in range(tr["expr"].shape[0]):
        if want is not None and int(tr["split"][i]) != want:
            continue
        cam = Camera(torch.as_tensor(tr["viewmat"][i]), torch.as_tensor(tr["K"][i]),
                     int(tr["width"]), int(tr["height"]))
        yield (i, str(tr["frame_names"][i]), torch.as_tensor(tr["expr"][i]).to(device),
               torch.as_tensor(tr["pose"][i]).to(device), torch.as_tensor(tr["translation"][i]).to(device),
               cam.to(device))


@torch.no_grad()
def render_frames(loaded: LoadedAvatar, split: str, driver: str, background, device,
                  progress: Callable[[int, int], None] | None = None):
    """Yields (index, name, image [H, W, 3] float in [0, 1] on CPU) for each frame."""
    frames = list(iter_frames(loaded, split, driver, device))
    av = loaded.avatar
    shape = torch.as_tensor(loaded.tracking["shape"]).to(device)
    bg = torch.tensor(background, dtype=torch.float32, device=device)
    for k, (i, name, expr, pose, trans, cam) in enumerate(frames):
        out = av.render(shape, expr, pose, trans, cam, bg)
        if progress:
            progress(k + 1, len(frames))
        yield i, name, out.image.clamp(0, 1).cpu()


def run_render(cfg: RenderConfig, sink=None) -> dict:
    """Renders frames to PNG files; returns {"out": folder, "frames": count}."""
    from engine.io.images import write_png

    device = resolve_device(cfg.device)
    loaded = load_for_rendering(cfg.avatar, device, cfg.from_maps, cfg.texel_stride, cfg.map_keys)
    out = Path(cfg.out) if cfg.out else loaded.folder.renders_dir(cfg.split, reenact=bool(cfg.driver))
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    prog = (lambda s, t: sink.progress("render", s, t)) if sink else None
    for _, name, img in render_frames(loaded, cfg.split, cfg.driver, cfg.background, device, prog):
        write_png(out / f"{name}.png", img.numpy())
        n += 1
    return {"out": str(out), "frames": n}


