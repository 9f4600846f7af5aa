"""The short commands of ``python -m engine``: each prints JSON (or an error line) and returns an
exit code (0 ok, 1 failed, 2 bad arguments). Imports of the engine happen inside each command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def configure_logging() -> None:
    """Log lines on stderr for the short commands (jobs configure their own in ``run_job``)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def fail(message: str, code: int = 1) -> int:
    """Prints ``error: message`` on stderr and returns ``code``."""
    print(f"error: {message}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------- model-info
def model_info_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="FLAME folder, .pkl or .npz, or 'demo'")


def model_info(args: argparse.Namespace) -> int:
    """Prints a head model's counts and dimensions (:func:`engine.model.head_model.model_info`)."""
    from engine.errors import FateError
    from engine.model.head_model import model_info as info_of
    from engine.model.resolve import resolve_head_model

    try:
        info = info_of(resolve_head_model(args.path))
    except FateError as exc:
        return fail(str(exc))
    print(json.dumps(info, indent=2))
    return 0


# ---------------------------------------------------------------------- demo-head
def demo_head_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path)


def demo_head(args: argparse.Namespace) -> int:
    """Writes the procedural demo head (not FLAME) as a head-model ``.npz``."""
    from engine.model.demo_head import write_demo_head

    write_demo_head(args.out)
    print(json.dumps({"written": str(args.out)}))
    return 0


# ---------------------------------------------------------------------- check
def check(args: argparse.Namespace) -> int:
    """Prints torch's version, the device and the rasteriser the engine would use."""
    import torch

    from engine.raster import available_backends, default_backend
    from engine.raster.gsplat_status import gsplat_status

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(json.dumps({
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "CPU",
        "rasterizer": default_backend(torch.device(device)),
        "backends": available_backends(),
        "gsplat": gsplat_status().as_dict(),
        "python": sys.version.split()[0],
    }))
    return 0


# ---------------------------------------------------------------------- schema
def schema_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=None, help="write the schema here (default: print it)")


def schema(args: argparse.Namespace) -> int:
    """Writes the job config schema (:func:`engine.jobs.schema.job_schema`)."""
    from engine.io.atomic import write_json
    from engine.jobs.schema import job_schema

    data = job_schema()
    if args.out is None:
        print(json.dumps(data, indent=2))
    else:
        write_json(args.out, data)
        print(json.dumps({"written": str(args.out)}))
    return 0


# ---------------------------------------------------------------------- edit
def edit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--avatar", required=True, type=Path, help="baked avatar folder")
    p.add_argument("--sticker", required=True, type=Path, help="RGBA (or RGB) image")
    p.add_argument("--uv-box", required=True, help="u0,v0,u1,v1 in [0,1], UV origin bottom-left")


def edit(args: argparse.Namespace) -> int:
    """Sticker edit: composites the image into ``maps/color.exr``, keeping a copy of the previous map."""
    import shutil
    import time

    import torch

    from engine.avatar_folder import AvatarFolder
    from engine.errors import FateError
    from engine.io.images import read_image, write_exr, write_png
    from engine.maps import apply_sticker, load_maps

    try:
        box = tuple(float(x) for x in args.uv_box.split(","))
        if len(box) != 4:
            raise ValueError
    except ValueError:
        return fail(f"--uv-box expects four numbers u0,v0,u1,v1, found {args.uv_box!r}", 2)
    maps_dir = AvatarFolder(args.avatar).maps_dir
    try:
        maps, _ = load_maps(maps_dir, names=("color",))
        sticker = torch.from_numpy(read_image(args.sticker)).float()
        edited = apply_sticker(maps["color"], sticker, box)
        backup = maps_dir / f"color.{time.strftime('%Y%m%d-%H%M%S')}.bak.exr"
        shutil.copy2(maps_dir / "color.exr", backup)
        write_exr(maps_dir / "color.exr", edited.numpy())
        write_png(maps_dir / "color.png", edited.clamp(0, 1).numpy())
    except FateError as exc:
        return fail(str(exc))
    print(json.dumps({"edited": str(maps_dir / "color.exr"), "backup": str(backup)}))
    return 0


# ---------------------------------------------------------------------- landmarks
def landmarks_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--head_model", "--head-model", dest="head_model", default="demo",
                   help="'demo' or a FLAME folder / .pkl / .npz")
    p.add_argument("--output", required=True, type=Path, help="embedding file to write (.npz)")


def demo_albedo(head):
    """The demo head's own albedo texture (its construction; developer checkout only), else None:
    the landmark embedding then renders the template in a uniform skin tone."""
    from engine.model.demo_head import DEMO_HEAD_NAME

    if head.name != DEMO_HEAD_NAME:
        return None
    try:
        from engine.demo.texture import albedo_texture
    except ModuleNotFoundError:
        return None
    return albedo_texture(head, 512)


def landmarks(args: argparse.Namespace) -> int:
    """Computes and writes a head model's landmark embedding (:mod:`engine.track.embedding`)."""
    from engine.errors import FateError
    from engine.model.resolve import resolve_head_model
    from engine.track.embedding import compute_embedding

    try:
        head = resolve_head_model(args.head_model)
        albedo = demo_albedo(head)
        emb = compute_embedding(head.v_template, head.faces, albedo, head.uvs if albedo is not None else None,
                                head.faces_uv if albedo is not None else None)
        emb.save(args.output)
    except FateError as exc:
        return fail(str(exc))
    print(json.dumps({"written": str(args.output), "landmarks": len(emb), "head_model": head.name}))
    return 0
