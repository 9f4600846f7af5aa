"""The avatar folder: every file name in it, and saving, loading and exporting an avatar.

Layout and keys: docs/FORMATS.md (the Blender side reads the same names from there, in
``addon/files``). Tensors go to safetensors; everything Blender reads goes to ``.npz`` (numpy only,
``allow_pickle=False``) and JSON. Every file is written through :mod:`engine.io.atomic`; the files
of one save are published together (:mod:`engine.io.publish`: staged, then moved into place with
``avatar.json`` last). ``avatar.json`` is the manifest: its ``files`` entry holds the sha256 of
every other file of the save, and :meth:`AvatarFolder.load` reads only files that match it (and
refuses a head model that is not the one trained with, an avatar format newer than this engine,
or NaN/Inf values) unless ``force`` is given.

Who writes what:

============================== ============================================ ======================
file                           content                                      written by
============================== ============================================ ======================
``avatar.json``                format, head-model hash, config, metrics     :meth:`AvatarFolder.save`
``gaussians.safetensors``      bindings + raw Gaussian attributes           :meth:`AvatarFolder.save`
``blendshapes.safetensors``    learnt ΔE, ΔP, Δ (FATE Eq. 5)                :meth:`AvatarFolder.save`
``appearance.safetensors``     the HeadGaS decoder (appearance "headgas")   :meth:`AvatarFolder.save`
``head_model.npz``             the head model trained with                  :meth:`AvatarFolder.save`
``tracking.npz``               per-frame FLAME parameters and cameras       :meth:`AvatarFolder.save`
``soft_binding.safetensors``   soft binding: network, unfolded Gaussians    :meth:`AvatarFolder.save`
``blender/head.npz``           head for Import Avatar (Δ folded in)         :meth:`AvatarFolder.save`
``blender/bindings.npz``       Gaussian face / barycentric / UV             :meth:`AvatarFolder.save`
``blender/gaussians.npz``      the Gaussians' activated attributes          :meth:`AvatarFolder.save`
``visibility.safetensors``     how much the training views saw each         ``engine.model.visibility``
                               Gaussian / face / vertex, [0, 1]
``maps_seen.safetensors``      the baked maps before full-head completion   ``engine.bake.pseudo_views``
``shading.safetensors``        pbr avatars: the learnt environment          :meth:`AvatarFolder.save`
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
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from engine.errors import AvatarError, DatasetError, DivergedError, HeadModelError
from engine.io.atomic import file_sha256, write_json, write_npz, write_safetensors
from engine.io.publish import COMMIT_DIR, publish, settle
from engine.io.readers import (
    check_finite_arrays,
    check_provenance,
    load_manifest,
    load_npz,
    load_safetensors,
    read_bytes,
)

if TYPE_CHECKING:  # pragma: no cover
    from engine.data.sequence import Sequence
    from engine.model.avatar import Avatar
    from engine.model.head_model import HeadModel

log = logging.getLogger(__name__)

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
    APPEARANCE = "appearance.safetensors"
    HEAD_MODEL = "head_model.npz"
    TRACKING = "tracking.npz"
    SOFT_BINDING = "soft_binding.safetensors"
    BLENDER_HEAD = "blender/head.npz"
    BLENDER_BINDINGS = "blender/bindings.npz"
    BLENDER_GAUSSIANS = "blender/gaussians.npz"
    SHADING = "shading.safetensors"
    BLENDER_ENVIRONMENT = "blender/environment.exr"
    MAPS = "maps"
    VISIBILITY = "visibility.safetensors"
    MAPS_SEEN = "maps_seen.safetensors"
    BAKENET = "bakenet.safetensors"
    MAPS_CHECKPOINT = "maps_checkpoint.safetensors"
    CHECKPOINT_TENSORS = "checkpoints/last.safetensors"
    CHECKPOINT_JSON = "checkpoints/last.json"
    PREVIEW = "previews/latest.png"
    RENDERS = "renders"
    REQUIRED = (AVATAR_JSON, GAUSSIANS, BLENDSHAPES, HEAD_MODEL, TRACKING)
    """Files :meth:`load` needs."""
    SAVED = (GAUSSIANS, BLENDSHAPES, HEAD_MODEL, TRACKING, BLENDER_HEAD, BLENDER_BINDINGS, AVATAR_JSON)
    """Files one :meth:`save` publishes together, in the order they are moved into place."""

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

    def check_exists(self) -> "AvatarFolder":
        """Raises unless the folder holds an ``avatar.json`` (before a job claims the folder).

        Raises:
            AvatarError: naming the folder.
        """
        if not self.path(self.AVATAR_JSON).is_file() and not (self.root / COMMIT_DIR).is_dir():
            what = "does not exist" if not self.root.exists() else "is not an avatar folder (no avatar.json)"
            raise AvatarError(f"{self.root} {what}: train an avatar first")
        return self

    def metrics_file(self, split: str, from_maps: bool = False) -> Path:
        """Default ``engine eval`` output: ``metrics_<split>[_maps].json``."""
        return self.root / f"metrics_{split}{'_maps' if from_maps else ''}.json"

    # ------------------------------------------------------------------ save
    def save(self, avatar: "Avatar", seq: "Sequence", config: Any, metrics: dict | None = None) -> None:
        """Publishes the trained avatar as one change: tensors, head model, tracking, the Blender
        export and, last, ``avatar.json`` (format, head-model hash, the resolved config, metrics,
        and the sha256 of every other file). A crash or a full disk leaves the previous avatar
        (if any) complete: :mod:`engine.io.publish`.

        Args:
            avatar: the trained model.
            seq: the sequence it was trained on (its tracking is written).
            config: the job's dataclass config (saved so the run is reproducible).
            metrics: training metrics for ``avatar.json``.
        Raises:
            DivergedError: the model holds NaN/Inf values (nothing is written).
            OutputError: the folder cannot be written (nothing is replaced).
        """
        from engine.jobs.config import to_dict

        live = avatar
        if avatar.soft_binding is not None:
            from engine.model.avatar import static_bake
            avatar = static_bake(avatar, seq, seq.indices("train"))
        g = avatar.gaussians
        state = g.raw_state()
        check_finite_arrays({**state, **dict(avatar.blendshapes.state_dict()),
                             **({} if avatar.appearance is None else
                                {f"appearance.{k}": v for k, v in avatar.appearance.state_dict().items()}),
                             **({} if avatar.shading is None else
                                {f"shading.{k}": v for k, v in avatar.shading.state_dict().items()})},
                            f"the trained avatar for {self.root}", DivergedError)
        with publish(self.root) as pub:
            write_safetensors(pub.path(self.GAUSSIANS), state, {"shell": g.shell})
            write_safetensors(pub.path(self.BLENDSHAPES), dict(avatar.blendshapes.state_dict()))
            if avatar.appearance is not None:
                write_safetensors(pub.path(self.APPEARANCE), dict(avatar.appearance.state_dict()),
                                  avatar.appearance.metadata())
            avatar.head.save_npz(pub.path(self.HEAD_MODEL))
            self._write_tracking(avatar, seq, pub.path(self.TRACKING))
            self._export_blender(avatar, seq, pub.path(self.BLENDER_HEAD), pub.path(self.BLENDER_BINDINGS),
                                 pub.path(self.BLENDER_GAUSSIANS))
            if live.soft_binding is not None:
                self._write_soft_binding(live, pub.path(self.SOFT_BINDING))
            if avatar.shading is not None:
                self._write_shading(avatar, pub.path(self.SHADING), pub.path(self.BLENDER_ENVIRONMENT))
            files = pub.hashes()
            write_json(pub.path(self.AVATAR_JSON), {
                "format": FORMAT, "format_version": FORMAT_VERSION,
                "head_model": {"name": avatar.head.name, "sha256": avatar.head.sha256()},
                "appearance": self._appearance_name(avatar),
                "num_gaussians": len(g), "shell": g.shell,
                "config": to_dict(config), "dataset": str(getattr(config, "dataset", "")),
                "metrics": metrics or {},
                "files": files,
            })
        if live.soft_binding is None:
            self.path(self.SOFT_BINDING).unlink(missing_ok=True)  # a stale one from an earlier soft training
        if avatar.appearance is None:
            self.path(self.APPEARANCE).unlink(missing_ok=True)  # a stale one from an earlier HeadGaS training
        if avatar.shading is None:  # stale ones from an earlier pbr training
            self.path(self.SHADING).unlink(missing_ok=True)
            self.path(self.BLENDER_ENVIRONMENT).unlink(missing_ok=True)

    @staticmethod
    def _appearance_name(avatar: "Avatar") -> str:
        """avatar.json's ``appearance``: "static", "headgas" (:attr:`Avatar.appearance`, in
        ``appearance.safetensors``) or "pbr" (:attr:`Avatar.shading`, in ``shading.safetensors``)."""
        if avatar.appearance is not None and avatar.shading is not None:
            raise ValueError("an avatar has either an expression-dependent appearance or a relightable shading")
        return "headgas" if avatar.appearance is not None else "pbr" if avatar.shading is not None else "static"

    def _write_soft_binding(self, avatar: "Avatar", path: Path) -> None:
        """``soft_binding.safetensors`` (soft binding only): the network and its fixed inputs
        (``SoftBinding.state`` keys) and the Gaussians before the static bake (``gaussians/<name>``).
        ``gaussians.safetensors`` holds the static bake (the mean offset over the training frames
        folded in), which baking and Blender use."""
        tensors = dict(avatar.soft_binding.state())
        tensors.update({f"gaussians/{k}": v for k, v in avatar.gaussians.raw_state().items()})
        write_safetensors(path, tensors, {"shell": avatar.gaussians.shell})

    @torch.no_grad()
    def _write_tracking(self, avatar: "Avatar", seq: "Sequence", path: Path) -> None:
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
        write_npz(path, shape=seq.shape.cpu().numpy().astype(np.float32),
                  expr=np.stack(expr).astype(np.float32), pose=np.stack(pose).astype(np.float32),
                  translation=np.stack(trans).astype(np.float32), viewmat=np.stack(views).astype(np.float32),
                  K=np.stack(Ks).astype(np.float32), width=np.int32(seq.width), height=np.int32(seq.height),
                  frame_names=np.array(seq.frame_names, dtype=np.str_),
                  split=np.array([0 if s == "train" else 1 for s in seq.split], dtype=np.int8))

    @torch.no_grad()
    def _export_blender(self, avatar: "Avatar", seq: "Sequence", head_path: Path, bindings_path: Path,
                        gaussians_path: Path) -> None:
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
        write_blender_head(head_path, head, base[0].cpu().numpy(),
                           (base[0] - template[0]).cpu().numpy(), exprdirs.cpu().numpy(),
                           posedirs.cpu().numpy())
        g = avatar.gaussians
        face_idx = g.face_idx.cpu().numpy()
        bary = g.bary.cpu().numpy().astype(np.float32)
        uvs = head.uvs.astype(np.float32)
        uv = (bary[:, :, None] * uvs[head.faces_uv_all[face_idx]]).sum(axis=1)
        write_npz(bindings_path, face_idx=face_idx.astype(np.int32), bary=bary,
                  uv=uv.astype(np.float32))
        attrs = g.activated()
        if avatar.shading is not None:  # colour = albedo; + roughness, f0
            attrs.update({k: v for k, v in avatar.shading.activated(g).items() if k != "albedo"})
        write_npz(gaussians_path, **{k: v.detach().cpu().numpy().astype(np.float32) for k, v in attrs.items()})

    @torch.no_grad()
    def _write_shading(self, avatar: "Avatar", shading_path: Path, environment_path: Path) -> None:
        """pbr avatars: ``shading.safetensors`` (the environment's raw map, ``environment.raw``
        [H, 2H, 3]) and ``blender/environment.exr`` (its radiance, linear RGB float32, lat-long in
        the room frame of :mod:`engine.model.environment`, row 0 = zenith)."""
        from engine.io.images import write_exr

        env = avatar.shading.environment
        write_safetensors(shading_path, {"environment.raw": env.raw.detach().cpu()},
                          {"appearance": "pbr", "frame": "room (camera right, forward, up)"})
        write_exr(environment_path, env.radiance().detach().cpu().numpy().astype(np.float32))

    # ------------------------------------------------------------------ load
    def read_meta(self) -> dict:
        """``avatar.json``, checked to be an avatar of this format and of a version this engine
        reads (an interrupted save is completed first: :func:`engine.io.publish.settle`).

        Raises:
            AvatarError: missing, unreadable, of another format or of a newer version (naming
                the file).
        """
        settle(self.root)
        meta_path = self.path(self.AVATAR_JSON)
        if not meta_path.exists():
            raise AvatarError(f"{self.root} is not an avatar folder: avatar.json is missing (train one first)")
        return load_manifest(meta_path, AvatarError, FORMAT, FORMAT_VERSION, "avatar.json")

    def expected_sha256(self, meta: dict, name: str, force: bool = False) -> str | None:
        """The sha256 ``avatar.json`` records for file ``name``, which its reader must match (None:
        nothing recorded). With ``force`` a mismatch is only logged (and None returned)."""
        files = meta.get("files")
        digest = str(files.get(name) or "") if isinstance(files, dict) else ""
        if not digest:
            return None
        if force:
            check_provenance(digest, file_sha256(self.path(name)), f"{self.path(name)} does not match avatar.json",
                             "", AvatarError, force=True)
            return None
        return digest

    def load(self, device: torch.device | str = "cpu", force: bool = False,
             soft_binding: bool = False) -> "LoadedAvatar":
        """Reads the avatar written by :meth:`save`.

        Every file must match the sha256 ``avatar.json`` records for it, the head model must be
        the one the avatar was trained with, and no value may be NaN/Inf.

        Args:
            device: where the model's tensors go.
            force: load files that do not match ``avatar.json`` (a replaced head model, files
                copied in from elsewhere) with a warning instead of an error — for experts.
            soft_binding: load the live soft binding (network + unfolded Gaussians from
                ``soft_binding.safetensors``) instead of its static bake.
        Raises:
            AvatarError: a missing, corrupt or truncated file, a format mismatch, a file that
                does not match avatar.json, a foreign head model or NaN/Inf values, naming the file.
        """
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
        sha = {name: self.expected_sha256(meta, name, force) for name in self.REQUIRED[1:]}
        if sha[self.HEAD_MODEL] is not None:
            read_bytes(self.path(self.HEAD_MODEL), AvatarError, sha[self.HEAD_MODEL], "head model")
        try:
            head = load_head_model(self.path(self.HEAD_MODEL))
        except HeadModelError as exc:
            raise AvatarError(str(exc)) from exc
        self._check_head_model(head, meta, force)
        flame = FlameLayer(head).to(device)
        faces = torch.as_tensor(head.faces_all, dtype=torch.long, device=device)
        g_state = load_safetensors(self.path(self.GAUSSIANS), AvatarError, str(device), sha[self.GAUSSIANS],
                                   "Gaussians")
        bs_state = load_safetensors(self.path(self.BLENDSHAPES), AvatarError, str(device), sha[self.BLENDSHAPES],
                                    "blendshapes")
        tracking = load_npz(self.path(self.TRACKING), AvatarError, sha[self.TRACKING], "tracking")
        for where, arrays in ((self.GAUSSIANS, g_state), (self.BLENDSHAPES, bs_state), (self.TRACKING, tracking)):
            check_finite_arrays(arrays, str(self.path(where)), AvatarError)
        try:
            g = UVGaussians.from_raw_state(g_state, shell=float(meta.get("shell", 0.01)))
            bs = LearnedBlendshapes(head.num_vertices, bs_state["delta_exprdirs"].shape[-1],
                                    bs_state["delta_posedirs"].shape[0]).to(device)
            bs.load_state_dict(bs_state)
            T = tracking["expr"].shape[0]
            tr = TrackingRefinement(T, tracking["expr"].shape[1], tracking["pose"].shape[1], enabled=False)
        except (KeyError, RuntimeError, IndexError, ValueError) as exc:
            raise AvatarError(f"{self.root}: the avatar's files do not fit together ({type(exc).__name__}: "
                              f"{exc}); retrain it") from exc
        if g.face_idx.numel() and (int(g.face_idx.min()) < 0 or int(g.face_idx.max()) >= faces.shape[0]):
            raise AvatarError(f"{self.path(self.GAUSSIANS)}: face_idx outside the head model's {faces.shape[0]} faces")
        av = Avatar(head, flame, faces, g.to(device), bs, tr.to(device),
                    appearance=self._load_appearance(device, meta, force),
                    shading=self._load_shading(meta, device, force))
        if soft_binding:
            av.gaussians, av.soft_binding = self._load_soft_binding(head, device, g.shell)
        return LoadedAvatar(av, meta, tracking, self)

    def _load_appearance(self, device: torch.device | str, meta: dict, force: bool = False):
        """The expression-dependent appearance model of ``appearance.safetensors``, or None
        (checked against the sha256 ``avatar.json`` records for it).

        Raises:
            AvatarError: the file is unreadable, does not match avatar.json, or is of an unknown kind.
        """
        path = self.path(self.APPEARANCE)
        if not path.exists():
            return None
        from safetensors.torch import load as safetensors_load

        from engine.model.headgas import headgas_from_state

        data = read_bytes(path, AvatarError, self.expected_sha256(meta, self.APPEARANCE, force), "appearance model")
        try:
            header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
            state = {k: v.to(device) for k, v in safetensors_load(data).items()}
            return headgas_from_state(state, dict(header.get("__metadata__") or {})).to(device)
        except Exception as exc:  # SafetensorError, a bad header or a state of another shape
            raise AvatarError(f"cannot read the appearance model {path}: {type(exc).__name__}: {exc}") from exc

    def _load_soft_binding(self, head: "HeadModel", device: torch.device | str, shell: float):
        """(unfolded UVGaussians, SoftBinding) from ``soft_binding.safetensors``."""
        from engine.model.gaussians import UVGaussians
        from engine.model.soft_binding import SoftBinding

        path = self.path(self.SOFT_BINDING)
        if not path.exists():
            raise AvatarError(f"{path} is missing: this avatar was trained with hard binding (--binding hard)")
        state = load_safetensors(path, AvatarError, str(device), self.expected_sha256(self.read_meta(), self.SOFT_BINDING),
                                "soft binding")
        g = UVGaussians.from_raw_state({k.split("/", 1)[1]: v for k, v in state.items()
                                        if k.startswith("gaussians/")}, shell=shell).to(device)
        sb = SoftBinding.from_state({k: v for k, v in state.items() if not k.startswith("gaussians/")},
                                    head.uvs, head.faces_uv_all, head.joint_names).to(device)
        return g, sb

    def _check_head_model(self, head: "HeadModel", meta: dict, force: bool) -> None:
        """Refuses a head model whose content hash differs from the one recorded at training."""
        recorded = meta["head_model"].get("sha256") if isinstance(meta.get("head_model"), dict) else None
        check_provenance(recorded, head.sha256(), f"{self.path(self.HEAD_MODEL)} is not the head model this "
                         "avatar was trained with", "restore it, retrain", AvatarError, force)

    def _load_shading(self, meta: dict, device: torch.device | str, force: bool = False):
        """The relightable shading of a pbr avatar (None for any other).

        Raises:
            AvatarError: avatar.json says pbr and shading.safetensors is missing, corrupt, does
                not match avatar.json's sha256 or holds NaN/Inf values.
        """
        if meta.get("appearance", "static") != "pbr":
            return None
        from engine.model.environment import Environment
        from engine.model.pbr import PBRAppearance

        path = self.path(self.SHADING)
        if not path.exists():
            raise AvatarError(f"{path} is missing (avatar.json says the avatar is relightable, 'pbr')")
        state = load_safetensors(path, AvatarError, "cpu", self.expected_sha256(meta, self.SHADING, force),
                                 "shading")
        check_finite_arrays(state, str(path), AvatarError)
        try:
            raw = state["environment.raw"]
            env = Environment(raw.shape[0])
            with torch.no_grad():
                env.raw.copy_(raw)
        except (KeyError, RuntimeError, IndexError) as exc:
            raise AvatarError(f"{path}: not a learnt environment ({type(exc).__name__}: {exc}); retrain it") from exc
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

    def frame_names(self) -> list[str]:
        """Names of the tracked frames, in tracking order."""
        return [str(n) for n in self.tracking.get("frame_names", [])]

    def dataset_indices(self, seq: "Sequence") -> list[int]:
        """For each tracked frame, the index of the frame with the same name in ``seq``
        (ground truth is matched by frame name, never by position).

        Raises:
            DatasetError: a tracked frame is not in ``seq`` (naming the first ones and the dataset).
        """
        names = self.frame_names()
        if not names:
            raise AvatarError(f"{self.folder.path(self.folder.TRACKING)}: no frame_names; retrain the avatar")
        where = {n: i for i, n in enumerate(seq.frame_names)}
        missing = [n for n in names if n not in where]
        if missing:
            raise DatasetError(f"{seq.root}: {len(missing)} of the avatar's {len(names)} frames are not in this "
                               f"dataset (first: {missing[:3]}); is it the dataset {self.folder.root} was trained on?")
        return [where[n] for n in names]

    def check_same_frames(self, seq: "Sequence") -> None:
        """Raises unless ``seq`` has exactly the avatar's frames in the same order (for jobs that
        index ground truth by tracking position, e.g. baking).

        Raises:
            DatasetError: naming the dataset and the first difference.
        """
        names = self.frame_names()
        if names and names != list(seq.frame_names):
            idx = next((i for i, (a, b) in enumerate(zip(names, seq.frame_names)) if a != b),
                       min(len(names), len(seq.frame_names)))
            raise DatasetError(f"{seq.root}: the dataset changed since {self.folder.root} was trained "
                               f"({len(seq.frame_names)} frames, the avatar has {len(names)}; first difference at "
                               f"frame {idx}); retrain, or restore the dataset")


def load_avatar(path: str | Path, device: torch.device | str = "cpu", force: bool = False,
                soft_binding: bool = False) -> LoadedAvatar:
    """``AvatarFolder(path).load(device, force, soft_binding)``."""
    return AvatarFolder(path).load(device, force, soft_binding)


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
