"""The avatar folder: checkpoints, the trained avatar and its Blender-side export.

Layout and keys: docs/FORMATS.md. Tensors go to safetensors, everything Blender reads to
``.npz`` (numpy only, ``allow_pickle=False``) and JSON. Every file is written atomically (temp
file in the same folder, then ``os.replace``), so a crash or a cancel never leaves half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from engine.errors import AvatarError

if TYPE_CHECKING:  # pragma: no cover
    from engine.train import Avatar, Trainer

FORMAT = "fate-avatar"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------- atomic writes
@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temp path in ``path``'s folder; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, data: dict) -> None:
    """Atomic, pretty JSON."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Atomic safetensors write (tensors made contiguous and moved to CPU)."""
    data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(data, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})


def write_npz(path: Path, **arrays) -> None:
    """Atomic uncompressed .npz that ``np.load(allow_pickle=False)`` reads."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------- checkpoints
def _checkpoint_paths(out: Path) -> tuple[Path, Path]:
    return out / "checkpoints" / "last.safetensors", out / "checkpoints" / "last.json"


def has_checkpoint(out: Path) -> bool:
    t, j = _checkpoint_paths(Path(out))
    return t.exists() and j.exists()


def _named_parameters(trainer: "Trainer") -> dict[str, torch.nn.Parameter]:
    av = trainer.avatar
    named = {f"gaussians.{n}": getattr(av.gaussians, n) for n in av.gaussians.PARAMETERS}
    named.update({f"blendshapes.{n}": p for n, p in av.blendshapes.named_parameters()})
    named.update({f"tracking.{n}": p for n, p in av.tracking.named_parameters()})
    return named


def save_checkpoint(out: Path, trainer: "Trainer") -> Path:
    """Writes the resumable training state (model, Adam moments, densifier) atomically.

    Returns:
        the checkpoint's tensor file path.
    """
    tpath, jpath = _checkpoint_paths(Path(out))
    tensors: dict[str, torch.Tensor] = {}
    for name, p in _named_parameters(trainer).items():
        tensors[f"param/{name}"] = p.data
        state = trainer.optimizer.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq", "step"):
            if key in state:
                v = state[key]
                tensors[f"adam/{name}/{key}"] = v if torch.is_tensor(v) else torch.tensor(float(v))
    g = trainer.avatar.gaussians
    tensors["gaussians.face_idx"] = g.face_idx
    tensors["gaussians.bary"] = g.bary
    for k, v in trainer.densifier.state_dict().items():
        tensors[f"densifier/{k}"] = v
    write_safetensors(tpath, tensors)
    write_json(jpath, {"format": "fate-checkpoint", "format_version": 1, "step": trainer.step,
                       "num_gaussians": len(g), "rng": trainer.generator.get_state().tolist()})
    return tpath


def load_checkpoint(out: Path, trainer: "Trainer") -> int:
    """Restores a state written by :func:`save_checkpoint` into ``trainer``; returns the step.

    Raises:
        AvatarError: missing or inconsistent checkpoint files (named).
    """
    from engine.densify import reindex

    tpath, jpath = _checkpoint_paths(Path(out))
    try:
        meta = json.loads(jpath.read_text())
        tensors = load_file(str(tpath), device=str(trainer.device))
    except (OSError, ValueError) as exc:
        raise AvatarError(f"cannot read checkpoint {tpath}: {exc}") from exc
    g = trainer.avatar.gaussians
    n = int(meta["num_gaussians"])
    # resize the Gaussian set first (its parameters are replaced), then copy values
    src = torch.zeros(n, dtype=torch.long, device=trainer.device)
    reindex(g, trainer.optimizer, src, tensors["gaussians.face_idx"], tensors["gaussians.bary"],
            torch.ones(n, dtype=torch.bool, device=trainer.device))
    named = _named_parameters(trainer)
    for name, p in named.items():
        key = f"param/{name}"
        if key not in tensors or tensors[key].shape != p.shape:
            raise AvatarError(f"{tpath}: tensor {key} missing or of shape "
                              f"{tuple(tensors[key].shape) if key in tensors else None}, expected {tuple(p.shape)}")
        p.data.copy_(tensors[key])
        if f"adam/{name}/exp_avg" in tensors:
            trainer.optimizer.state[p] = {
                "step": tensors[f"adam/{name}/step"].cpu(),
                "exp_avg": tensors[f"adam/{name}/exp_avg"].clone(),
                "exp_avg_sq": tensors[f"adam/{name}/exp_avg_sq"].clone(),
            }
    trainer.densifier.load_state_dict({k.split("/", 1)[1]: v for k, v in tensors.items()
                                       if k.startswith("densifier/")})
    trainer.generator.set_state(torch.tensor(meta["rng"], dtype=torch.uint8))
    return int(meta["step"])


# ---------------------------------------------------------------------- avatar folder
def save_avatar(out: Path, avatar: "Avatar", seq, cfg, metrics: dict | None = None) -> None:
    """Writes avatar.json, gaussians/blendshapes safetensors, head_model.npz, tracking.npz and the
    Blender export (blender/head.npz, blender/bindings.npz). See docs/FORMATS.md."""
    from engine.config import to_dict

    out = Path(out)
    g = avatar.gaussians
    write_safetensors(out / "gaussians.safetensors", g.raw_state(), {"shell": g.shell})
    write_safetensors(out / "blendshapes.safetensors",
                      {k: v for k, v in avatar.blendshapes.state_dict().items()})
    avatar.head.save_npz(out / "head_model.npz")
    write_tracking(out / "tracking.npz", avatar, seq)
    export_blender(out, avatar, seq)
    write_json(out / "avatar.json", {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "head_model": {"name": avatar.head.name, "sha256": avatar.head.sha256()},
        "num_gaussians": len(g), "shell": g.shell,
        "config": to_dict(cfg), "dataset": str(getattr(cfg, "dataset", "")),
        "metrics": metrics or {},
    })


@torch.no_grad()
def write_tracking(path: Path, avatar: "Avatar", seq) -> None:
    """Per-frame FLAME parameters (tracking corrections applied) and cameras."""
    from engine.train import frame_inputs

    expr, pose, trans, views, Ks = [], [], [], [], []
    for i in range(len(seq)):
        _, e, p, t, cam = frame_inputs(avatar, seq, i, avatar.faces.device)
        expr.append(e.cpu().numpy()); pose.append(p.cpu().numpy()); trans.append(t.cpu().numpy())
        views.append(cam.viewmat.cpu().numpy()); Ks.append(cam.K.cpu().numpy())
    write_npz(path, shape=seq.shape.cpu().numpy().astype(np.float32),
              expr=np.stack(expr).astype(np.float32), pose=np.stack(pose).astype(np.float32),
              translation=np.stack(trans).astype(np.float32), viewmat=np.stack(views).astype(np.float32),
              K=np.stack(Ks).astype(np.float32), width=np.int32(seq.width), height=np.int32(seq.height),
              frame_names=np.array(seq.frame_names, dtype=np.str_),
              split=np.array([0 if s == "train" else 1 for s in seq.split], dtype=np.int8))


@torch.no_grad()
def export_blender(out: Path, avatar: "Avatar", seq) -> None:
    """blender/head.npz + blender/bindings.npz: the head with the subject's shape applied and the
    learnt ΔE, ΔP, Δ folded into its bases, so Blender's shape keys + armature reproduce the
    engine's deformation (docs/FORMATS.md)."""
    head, bs = avatar.head, avatar.blendshapes
    dev = avatar.faces.device
    n_expr = bs.delta_exprdirs.shape[-1]
    shape = seq.shape.to(dev)[None]
    zero_e = torch.zeros(1, n_expr, device=dev)
    zero_p = torch.zeros(1, head.num_joints * 3, device=dev)
    base, _ = avatar.flame(shape, zero_e, zero_p, delta_vertices=bs.delta_vertices)
    template, _ = avatar.flame(torch.zeros_like(shape), zero_e, zero_p)
    exprdirs = torch.as_tensor(head.exprdirs[:, :, :n_expr], device=dev) + bs.delta_exprdirs
    posedirs = torch.as_tensor(head.posedirs, device=dev) + bs.delta_posedirs
    uvs = head.uvs.astype(np.float32)
    write_npz(out / "blender" / "head.npz",
              name=np.array(head.name), v_template=base[0].cpu().numpy().astype(np.float32),
              shape_offset=(base[0] - template[0]).cpu().numpy().astype(np.float32),
              faces=head.faces_all.astype(np.int32), faces_uv=head.faces_uv_all.astype(np.int32),
              num_mouth_faces=np.int32(len(head.mouth_faces)), uvs=uvs,
              exprdirs=exprdirs.cpu().numpy().astype(np.float32),
              posedirs=posedirs.cpu().numpy().astype(np.float32),
              J_regressor=np.asarray(head.J_regressor, dtype=np.float32),
              parents=np.asarray(head.parents, dtype=np.int32),
              lbs_weights=np.asarray(head.lbs_weights, dtype=np.float32),
              joint_names=np.array(head.joint_names, dtype=np.str_))
    g = avatar.gaussians
    face_idx = g.face_idx.cpu().numpy()
    bary = g.bary.cpu().numpy().astype(np.float32)
    uv = (bary[:, :, None] * uvs[head.faces_uv_all[face_idx]]).sum(axis=1)
    write_npz(out / "blender" / "bindings.npz", face_idx=face_idx.astype(np.int32), bary=bary,
              uv=uv.astype(np.float32))


@dataclass
class LoadedAvatar:
    """An avatar folder read back: the model for rendering plus its tracking and metadata."""

    avatar: "Avatar"
    meta: dict
    tracking: dict


def load_avatar(path: Path, device: torch.device | str = "cpu") -> LoadedAvatar:
    """Reads an avatar folder written by :func:`save_avatar`.

    Raises:
        AvatarError: a missing file or a format mismatch, naming the file.
    """
    from engine.blendshapes import LearnedBlendshapes
    from engine.gaussians import UVGaussians
    from engine.head_model import FlameLayer, load_head_model
    from engine.train import Avatar, TrackingRefinement

    path = Path(path)
    meta_path = path / "avatar.json"
    if not meta_path.exists():
        raise AvatarError(f"{path} is not an avatar folder: avatar.json is missing (train one first)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise AvatarError(f"{meta_path}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    for name in ("gaussians.safetensors", "blendshapes.safetensors", "head_model.npz", "tracking.npz"):
        if not (path / name).exists():
            raise AvatarError(f"{path / name} is missing")
    head = load_head_model(path / "head_model.npz")
    flame = FlameLayer(head).to(device)
    faces = torch.as_tensor(head.faces_all, dtype=torch.long, device=device)
    g = UVGaussians.from_raw_state(load_file(str(path / "gaussians.safetensors"), device=str(device)),
                                   shell=float(meta.get("shell", 0.01)))
    bs_state = load_file(str(path / "blendshapes.safetensors"), device=str(device))
    bs = LearnedBlendshapes(head.num_vertices, bs_state["delta_exprdirs"].shape[-1],
                            bs_state["delta_posedirs"].shape[0]).to(device)
    bs.load_state_dict(bs_state)
    with np.load(path / "tracking.npz", allow_pickle=False) as z:
        tracking = {k: z[k] for k in z.files}
    T = tracking["expr"].shape[0]
    tr = TrackingRefinement(T, tracking["expr"].shape[1], tracking["pose"].shape[1], enabled=False)
    av = Avatar(head, flame, faces, g.to(device), bs, tr.to(device))
    return LoadedAvatar(av, meta, tracking)
