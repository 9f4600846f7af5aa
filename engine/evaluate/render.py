"""Rendering an avatar's frames: its own tracking, or another sequence's (cross-reenactment).

The job holds its output folder's lock and stages the frames (:mod:`engine.io.publish`): a
cancelled or failed render leaves the previous frames as they were, a finished one publishes all
of its frames at once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterator

import torch

from engine.avatar_folder import AvatarFolder, LoadedAvatar, load_avatar
from engine.data import load_sequence
from engine.device import resolve_device
from engine.errors import ConfigError, MapsError
from engine.evaluate.config import RenderConfig
from engine.geometry.cameras import Camera
from engine.io.atomic import file_sha256
from engine.io.output import claim_output
from engine.io.publish import publish
from engine.io.readers import check_provenance, load_json
from engine.jobs.config import require
from engine.map_keys import attach_map_keys
from engine.maps import check_map_ranges, load_maps, load_maps_into, texel_gaussians

log = logging.getLogger(__name__)


def load_for_rendering(avatar_dir: str | Path, device: torch.device, from_maps: bool,
                       texel_stride: int = 0, force: bool = False, map_keys: bool = True) -> LoadedAvatar:
    """Loads an avatar; with ``from_maps`` its Gaussian attributes are replaced by those
    re-splatted from its baked (possibly edited) maps (FATE §3.3): onto the trained Gaussians'
    bindings (``texel_stride`` 0) or onto one Gaussian per ``texel_stride``-th covered texel
    (:func:`engine.maps.texel_gaussians`), and, with ``map_keys``, their colour and opacity follow
    the map shape keys of ``maps/dynamic`` as in Blender (:mod:`engine.map_keys`; a HeadGaS model
    is replaced by them, without keys the maps are static).

    Args:
        force: accept files that do not match the avatar's records (AvatarFolder.load) and maps
            baked from another state of the avatar, with a warning.
        map_keys: blend the map shape keys (``from_maps`` only).
    Raises:
        AvatarError: see :meth:`engine.avatar_folder.AvatarFolder.load`.
        MapsError: the maps are invalid, or were baked from other Gaussians than the avatar's
            (maps.json ``source_avatar_sha256``) and ``force`` is not set.
    """
    loaded = load_avatar(avatar_dir, device, force)
    if from_maps:
        loaded.avatar.appearance = None
    if from_maps and texel_stride > 0:
        av = loaded.avatar
        maps, manifest = load_maps(loaded.folder.maps_dir)
        check_map_ranges(maps, float(av.gaussians.shell), loaded.folder.maps_dir)
        check_maps_source(loaded.folder, force)
        shape = torch.as_tensor(loaded.tracking["shape"], device=device)[None]
        n_expr = av.blendshapes.delta_exprdirs.shape[-1]
        with torch.no_grad():
            rest, _ = av.posed_vertices(shape, torch.zeros(1, n_expr, device=device),
                                        torch.zeros(1, av.head.num_joints * 3, device=device), None)
        av.gaussians = texel_gaussians({k: v.to(device) for k, v in maps.items()}, rest[0], av.head,
                                       int(manifest["resolution"]), texel_stride, av.gaussians.shell)
    elif from_maps:
        load_maps_into(loaded.avatar.gaussians, loaded.folder.maps_dir, loaded.avatar.head)
        check_maps_source(loaded.folder, force)
    if from_maps and map_keys:
        attach_map_keys(loaded.avatar, loaded.folder.maps_dir, load_maps(loaded.folder.maps_dir, names=())[1])
    return loaded


def check_maps_source(folder: AvatarFolder, force: bool) -> None:
    """Refuses maps baked from other Gaussians than the avatar's (re-trained after baking, or maps
    copied from another avatar): maps.json's ``source_avatar_sha256`` against gaussians.safetensors.

    Raises:
        MapsError: naming both digests, unless ``force``.
    """
    manifest = load_json(folder.maps_dir / "maps.json", MapsError, "maps manifest")
    recorded = manifest.get("source_avatar_sha256") if isinstance(manifest, dict) else None
    check_provenance(recorded, file_sha256(folder.path(folder.GAUSSIANS)),
                     f"{folder.maps_dir / 'maps.json'}: the maps were baked from other Gaussians than "
                     f"{folder.path(folder.GAUSSIANS)} (the avatar was re-trained, or the maps copied in)", "re-bake",
                     MapsError, force)


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


def run_render(cfg: RenderConfig, sink=None, cancel=None) -> dict:
    """Renders frames to PNG files; returns {"out": folder, "frames": count}.

    Holds the output folder's lock; the frames are staged and published together when all are
    rendered. ``cancel`` is checked after every frame (and a cancel interrupts the job at once
    under ``run_job``); nothing is published then.

    Raises:
        CancelledError: on a cancel request (the previous frames in the folder are untouched).
    """
    from engine.io.images import write_png

    folder = AvatarFolder(require(cfg, "avatar", "render")).check_exists()
    out = Path(cfg.out) if cfg.out else folder.renders_dir(cfg.split, reenact=bool(cfg.driver))
    with claim_output(out, "render") as output:
        device = resolve_device(cfg.device)
        loaded = load_for_rendering(cfg.avatar, device, cfg.from_maps, cfg.texel_stride, cfg.force, cfg.map_keys)
        frames = len(list(iter_frames(loaded, cfg.split, cfg.driver)))
        output.require_space(frames * int(loaded.tracking["width"]) * int(loaded.tracking["height"]) * 4 + (1 << 20))
        n = 0
        prog = (lambda s, t: sink.progress("render", s, t)) if sink else None
        with publish(out) as pub:
            for _, name, img in render_frames(loaded, cfg.split, cfg.driver, cfg.background, device, prog):
                write_png(pub.path(f"{name}.png"), img.numpy())
                n += 1
                if cancel is not None:
                    cancel.raise_if_requested()
    return {"out": str(out), "frames": n}


