"""The avatar folder: every file name in it, and saving, loading and exporting an avatar.

Layout and keys: docs/FORMATS.md (the Blender side reads the same names from there, in
``addon/files``). Tensors go to safetensors; everything Blender reads goes to ``.npz`` (numpy only,
``allow_pickle=False``) and JSON. Every file is written through :mod:`engine.io.atomic`.

Who writes what:

============================== ============================================ ======================
file                           content                                      written by
============================== ============================================ ======================
``avatar.json``                format, head-model hash, config, metrics     :meth:`AvatarFolder.save`
``gaussians.safetensors``      bindings + raw Gaussian attributes           :meth:`AvatarFolder.save`
``blendshapes.safetensors``    learnt ΔE, ΔP, Δ (FATE Eq. 5)                :meth:`AvatarFolder.save`
``head_model.npz``             the head model trained with                  :meth:`AvatarFolder.save`
``tracking.npz``               per-frame FLAME parameters and cameras       :meth:`AvatarFolder.save`
``blender/head.npz``           head for Import Avatar (Δ folded in)         :meth:`AvatarFolder.save`
``blender/bindings.npz``       Gaussian face / barycentric / UV             :meth:`AvatarFolder.save`
``blender/gaussians.npz``      the Gaussians' activated attributes          :meth:`AvatarFolder.save`
``appearance.safetensors``     pbr avatars: the learnt environment          :meth:`AvatarFolder.save`
``blender/environment.exr``    pbr avatars: it as a lat-long radiance map   :meth:`AvatarFolder.save`
``checkpoints/last.*``         resumable training state                     ``engine.train.checkpoint``
``maps/``                      baked UV maps + ``maps.json``                ``engine.maps.write_maps``
``bakenet.safetensors``        BakeNet weights and input                    ``engine.bake``
``maps_checkpoint.safetensors`` resumable bake state                        ``engine.bake``
``metrics_<split>[_maps].json`` evaluation                                  ``engine.evaluate``
``renders/<split>/``           rendered PNGs                                ``engine.evaluate``
``previews/latest.png``        ground truth | render during training        ``engine.train``
============================== ============================================ ======================
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from engine.errors import AvatarError
from engine.io.atomic import write_json, write_npz, write_safetensors

if TYPE_CHECKING:  # pragma: no cover
    from engine.data.sequence import Sequence
    from engine.model.avatar import Avatar
    from engine.model.head_model import HeadModel

FORMAT = "fate-avatar"
FORMAT_VERSION = 1


class AvatarFolder:
    """One avatar folder on disk (it need not exist yet).

    Args:
        root: the folder.
    """

    AVATAR_JSON = "avatar.json"
    GAUSSIANS = "gaussians.safetensors"
    BLENDSHAPES = "blendshapes.safetensors"
    HEAD_MODEL = "head_model.npz"
    TRACKING = "tracking.npz"
    BLENDER_HEAD = "blender/head.npz"
    BLENDER_BINDINGS = "blender/bindings.npz"
    BLENDER_GAUSSIANS = "blender/gaussians.npz"
    APPEARANCE = "appearance.safetensors"
    BLENDER_ENVIRONMENT = "blender/environment.exr"
    MAPS = "maps"
    BAKENET = "bakenet.safetensors"
    MAPS_CHECKPOINT = "maps_checkpoint.safetensors"
    CHECKPOINT_TENSORS = "checkpoints/last.safetensors"
    CHECKPOINT_JSON = "checkpoints/last.json"
    PREVIEW = "previews/latest.png"
    RENDERS = "renders"
    REQUIRED = (AVATAR_JSON, GAUSSIANS, BLENDSHAPES, HEAD_MODEL, TRACKING)
    """Files :meth:`load` needs."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"AvatarFolder({str(self.root)!r})"

    def path(self, name: str) -> Path:
        """``root / name`` for one of the class's file names."""
        return self.root / name

    @property
    def maps_dir(self) -> Path:
        """Folder of the baked maps (layout: ``engine.maps``)."""
        return self.root / self.MAPS

    def renders_dir(self, split: str, reenact: bool = False) -> Path:
        """Default folder of ``engine render`` output for a split (``reenact_<split>`` when driven
        by another dataset)."""
        return self.root / self.RENDERS / (("reenact_" if reenact else "") + split)

    def metrics_file(self, split: str, from_maps: bool = False) -> Path:
        """Default ``engine eval`` output: ``metrics_<split>[_maps].json``."""
        return self.root / f"metrics_{split}{'_maps' if from_maps else ''}.json"

    # ------------------------------------------------------------------ save
    def save(self, avatar: "Avatar", seq: "Sequence", config: Any, metrics: dict | None = None) -> None:
        """Writes the trained avatar: tensors, head model, tracking, the Blender export and, last,
        ``avatar.json`` (format, head-model hash, the resolved config, metrics).

        Args:
            avatar: the trained model.
            seq: the sequence it was trained on (its tracking is written).
            config: the job's dataclass config (saved so the run is reproducible).
            metrics: training metrics for ``avatar.json``.
        """
        from engine.jobs.config import to_dict

        g = avatar.gaussians
        write_safetensors(self.path(self.GAUSSIANS), g.raw_state(), {"shell": g.shell})
        write_safetensors(self.path(self.BLENDSHAPES), dict(avatar.blendshapes.state_dict()))
        avatar.head.save_npz(self.path(self.HEAD_MODEL))
        self._write_tracking(avatar, seq)
        self._export_blender(avatar, seq)
        if avatar.appearance is not None:
            self._write_appearance(avatar)
        write_json(self.path(self.AVATAR_JSON), {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "head_model": {"name": avatar.head.name, "sha256": avatar.head.sha256()},
            "appearance": "static" if avatar.appearance is None else "pbr",
            "num_gaussians": len(g), "shell": g.shell,
            "config": to_dict(config), "dataset": str(getattr(config, "dataset", "")),
            "metrics": metrics or {},
        })

    @torch.no_grad()
    def _write_tracking(self, avatar: "Avatar", seq: "Sequence") -> None:
        """``tracking.npz``: per-frame FLAME parameters (tracking corrections applied), OpenCV
        world→camera ``viewmat`` [T, 4, 4], intrinsics ``K`` [T, 3, 3] (pixels), frame names and
        split (0 train, 1 test)."""
        from engine.model.avatar import frame_inputs

        expr, pose, trans, views, Ks = [], [], [], [], []
        for i in range(len(seq)):
            _, e, p, t, cam = frame_inputs(avatar, seq, i, avatar.faces.device)
            expr.append(e.cpu().numpy())
            pose.append(p.cpu().numpy())
            trans.append(t.cpu().numpy())
            views.append(cam.viewmat.cpu().numpy())
            Ks.append(cam.K.cpu().numpy())
        write_npz(self.path(self.TRACKING), shape=seq.shape.cpu().numpy().astype(np.float32),
                  expr=np.stack(expr).astype(np.float32), pose=np.stack(pose).astype(np.float32),
                  translation=np.stack(trans).astype(np.float32), viewmat=np.stack(views).astype(np.float32),
                  K=np.stack(Ks).astype(np.float32), width=np.int32(seq.width), height=np.int32(seq.height),
                  frame_names=np.array(seq.frame_names, dtype=np.str_),
                  split=np.array([0 if s == "train" else 1 for s in seq.split], dtype=np.int8))

    @torch.no_grad()
    def _export_blender(self, avatar: "Avatar", seq: "Sequence") -> None:
        """``blender/head.npz`` + ``blender/bindings.npz`` + ``blender/gaussians.npz``: the head with
        the subject's shape applied and the learnt ΔE, ΔP, Δ folded into its bases, so Blender's
        shape keys + armature reproduce the engine's deformation, where each Gaussian sits, and its
        activated attributes in the maps' units, which Blender renders until the avatar is baked
        (docs/FORMATS.md)."""
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
        write_blender_head(self.path(self.BLENDER_HEAD), head, base[0].cpu().numpy(),
                           (base[0] - template[0]).cpu().numpy(), exprdirs.cpu().numpy(),
                           posedirs.cpu().numpy())
        g = avatar.gaussians
        face_idx = g.face_idx.cpu().numpy()
        bary = g.bary.cpu().numpy().astype(np.float32)
        uvs = head.uvs.astype(np.float32)
        uv = (bary[:, :, None] * uvs[head.faces_uv_all[face_idx]]).sum(axis=1)
        write_npz(self.path(self.BLENDER_BINDINGS), face_idx=face_idx.astype(np.int32), bary=bary,
                  uv=uv.astype(np.float32))
        attrs = g.activated()
        if avatar.appearance is not None:  # colour = albedo; + roughness, f0
            attrs.update({k: v for k, v in avatar.appearance.activated(g).items() if k != "albedo"})
        write_npz(self.path(self.BLENDER_GAUSSIANS),
                  **{k: v.detach().cpu().numpy().astype(np.float32) for k, v in attrs.items()})

    @torch.no_grad()
    def _write_appearance(self, avatar: "Avatar") -> None:
        """pbr avatars: ``appearance.safetensors`` (the environment's raw map, ``environment.raw``
        [H, 2H, 3]) and ``blender/environment.exr`` (its radiance, linear RGB float32, lat-long in
        the room frame of :mod:`engine.model.environment`, row 0 = zenith)."""
        from engine.io.images import write_exr

        env = avatar.appearance.environment
        write_safetensors(self.path(self.APPEARANCE), {"environment.raw": env.raw.detach().cpu()},
                          {"appearance": "pbr", "frame": "room (camera right, forward, up)"})
        write_exr(self.path(self.BLENDER_ENVIRONMENT), env.radiance().detach().cpu().numpy().astype(np.float32))

    # ------------------------------------------------------------------ load
    def read_meta(self) -> dict:
        """``avatar.json``, checked to be an avatar of this format.

        Raises:
            AvatarError: missing, unreadable or of another format (naming the file).
        """
        meta_path = self.path(self.AVATAR_JSON)
        if not meta_path.exists():
            raise AvatarError(f"{self.root} is not an avatar folder: avatar.json is missing (train one first)")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise AvatarError(f"cannot read {meta_path}: {exc}") from exc
        if meta.get("format") != FORMAT:
            raise AvatarError(f"{meta_path}: format is {meta.get('format')!r}, expected {FORMAT!r}")
        return meta

    def load(self, device: torch.device | str = "cpu") -> "LoadedAvatar":
        """Reads the avatar written by :meth:`save`.

        Args:
            device: where the model's tensors go.
        Raises:
            AvatarError: a missing file or a format mismatch, naming the file.
        """
        from safetensors.torch import load_file

        from engine.model.avatar import Avatar
        from engine.model.blendshapes import LearnedBlendshapes
        from engine.model.flame_layer import FlameLayer
        from engine.model.gaussians import UVGaussians
        from engine.model.head_model import load_head_model
        from engine.model.tracking import TrackingRefinement

        meta = self.read_meta()
        for name in self.REQUIRED:
            if not self.path(name).exists():
                raise AvatarError(f"{self.path(name)} is missing")
        head = load_head_model(self.path(self.HEAD_MODEL))
        flame = FlameLayer(head).to(device)
        faces = torch.as_tensor(head.faces_all, dtype=torch.long, device=device)
        g = UVGaussians.from_raw_state(load_file(str(self.path(self.GAUSSIANS)), device=str(device)),
                                       shell=float(meta.get("shell", 0.01)))
        bs_state = load_file(str(self.path(self.BLENDSHAPES)), device=str(device))
        bs = LearnedBlendshapes(head.num_vertices, bs_state["delta_exprdirs"].shape[-1],
                                bs_state["delta_posedirs"].shape[0]).to(device)
        bs.load_state_dict(bs_state)
        with np.load(self.path(self.TRACKING), allow_pickle=False) as z:
            tracking = {k: z[k] for k in z.files}
        T = tracking["expr"].shape[0]
        tr = TrackingRefinement(T, tracking["expr"].shape[1], tracking["pose"].shape[1], enabled=False)
        av = Avatar(head, flame, faces, g.to(device), bs, tr.to(device), self._load_appearance(meta, device))
        return LoadedAvatar(av, meta, tracking, self)

    def _load_appearance(self, meta: dict, device: torch.device | str):
        """The relightable appearance of a pbr avatar (None for a static one).

        Raises:
            AvatarError: avatar.json says pbr and appearance.safetensors is missing.
        """
        if meta.get("appearance", "static") != "pbr":
            return None
        from safetensors.torch import load_file

        from engine.model.environment import Environment
        from engine.model.pbr import PBRAppearance

        path = self.path(self.APPEARANCE)
        if not path.exists():
            raise AvatarError(f"{path} is missing (avatar.json says the avatar is relightable, 'pbr')")
        raw = load_file(str(path))["environment.raw"]
        env = Environment(raw.shape[0])
        with torch.no_grad():
            env.raw.copy_(raw)
        return PBRAppearance(env).to(device)


@dataclass
class LoadedAvatar:
    """An avatar folder read back: the model for rendering, its tracking and its metadata.

    Attributes:
        avatar: the model (on the device it was loaded to).
        meta: ``avatar.json``.
        tracking: ``tracking.npz`` as name → numpy array (keys: docs/FORMATS.md).
        folder: where it was read from.
    """

    avatar: "Avatar"
    meta: dict
    tracking: dict
    folder: AvatarFolder


def load_avatar(path: str | Path, device: torch.device | str = "cpu") -> LoadedAvatar:
    """``AvatarFolder(path).load(device)``."""
    return AvatarFolder(path).load(device)


def expression_names(head: "HeadModel", count: int) -> list[str] | None:
    """Names of a head model's first ``count`` expression components, when it has names.

    The demo head names its blendshapes (:data:`engine.model.demo_head.DEMO_EXPRESSION_NAMES`);
    FLAME's components are unnamed principal components (None).
    """
    from engine.model.demo_head import DEMO_EXPRESSION_NAMES, DEMO_HEAD_NAME

    if head.name == DEMO_HEAD_NAME and count <= len(DEMO_EXPRESSION_NAMES):
        return list(DEMO_EXPRESSION_NAMES[:count])
    return None


def write_blender_head(path: Path, head: "HeadModel", v_template: np.ndarray, shape_offset: np.ndarray,
                       exprdirs: np.ndarray, posedirs: np.ndarray) -> None:
    """Writes ``blender/head.npz`` (docs/FORMATS.md): what Import Avatar builds the rig from.

    Args:
        path: destination.
        head: the head model (faces, UVs, joints, skinning, mouth faces; expression names when
            it has them, :func:`expression_names`).
        v_template: rest vertices with the subject's shape (and Δ) applied, meters, FLAME frame. [V, 3]
        shape_offset: ``v_template`` minus the model's zero-shape template, meters. [V, 3]
        exprdirs: expression basis with ΔE folded in, meters per unit coefficient. [V, 3, E]
        posedirs: pose correctives with ΔP folded in, smplx layout. [(J-1)·9, V·3]
    """
    names = expression_names(head, np.shape(exprdirs)[2])
    extra = {"expression_names": np.array(names, dtype=np.str_)} if names else {}
    write_npz(path, name=np.array(head.name), v_template=np.asarray(v_template, np.float32),
              shape_offset=np.asarray(shape_offset, np.float32),
              faces=head.faces_all.astype(np.int32), faces_uv=head.faces_uv_all.astype(np.int32),
              num_mouth_faces=np.int32(len(head.mouth_faces)), uvs=head.uvs.astype(np.float32),
              exprdirs=np.asarray(exprdirs, np.float32), posedirs=np.asarray(posedirs, np.float32),
              J_regressor=np.asarray(head.J_regressor, dtype=np.float32),
              parents=np.asarray(head.parents, dtype=np.int32),
              lbs_weights=np.asarray(head.lbs_weights, dtype=np.float32),
              joint_names=np.array(head.joint_names, dtype=np.str_), **extra)
