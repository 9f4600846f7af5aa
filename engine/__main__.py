"""Command line of the engine: ``python -m engine <command> ...``.

Long jobs (train, bake, render, eval, synth, bench) take ``--config job.json`` and/or one flag per
config field, and ``--events jsonl|tqdm|none`` (jsonl for the Blender add-on: one JSON event per
stdout line, docs/PROTOCOL.md; tqdm progress bars for people, the default on a terminal).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from engine.config import add_arguments, apply_arguments, load_json


def _job_parser(sub, name: str, cls, help_: str):
    p = sub.add_parser(name, help=help_, description=help_)
    p.add_argument("--config", type=Path, default=None, help="job config JSON (flags override it)")
    p.add_argument("--events", default=None, choices=["jsonl", "tqdm", "none"],
                   help="progress events: jsonl (add-on), tqdm (people; default on a terminal), none")
    add_arguments(p, cls)
    p.set_defaults(_cls=cls)
    return p


def _config_from(args, cls):
    cfg = load_json(cls, args.config) if args.config else cls()
    ns = argparse.Namespace(**{k: v for k, v in vars(args).items()
                               if k not in ("config", "events", "command") and not k.startswith("_")})
    return apply_arguments(cfg, ns)


def _events_mode(args) -> str:
    if args.events:
        return args.events
    return "tqdm" if sys.stderr.isatty() else "none"


def main(argv: list[str] | None = None) -> int:
    from engine.bench import BenchConfig
    from engine.evaluate import EvalConfig, RenderConfig
    from engine.synthetic import SyntheticConfig
    from engine.train import TrainConfig

    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("model-info", help="print a head model's dimensions as JSON")
    p.add_argument("path", help="FLAME folder, .pkl or .npz, or 'demo'")
    p = sub.add_parser("demo-head", help="write the procedural demo head (not FLAME) as .npz")
    p.add_argument("out", type=Path)
    sub.add_parser("check", help="print torch version, device and rasteriser as JSON")

    _job_parser(sub, "train", TrainConfig, "train an avatar on a tracked dataset")
    _job_parser(sub, "render", RenderConfig, "render an avatar's frames (or cross-reenact another dataset)")
    _job_parser(sub, "eval", EvalConfig, "PSNR/SSIM(/LPIPS) on a split → metrics JSON")
    sp = _job_parser(sub, "synth", SyntheticConfig, "write a synthetic ground-truth dataset (INSTA layout)")
    sp.add_argument("out", type=Path, help="dataset folder to write")
    sp.add_argument("--head-model", dest="_head", default="demo", help="'demo' or a FLAME path")
    _job_parser(sub, "bench", BenchConfig, "speed/quality benchmarks (tables for docs/benchmarks.md)")
    from engine.bake import BakeConfig
    _job_parser(sub, "bake", BakeConfig, "neural baking of a trained avatar into UV maps (FATE §3.3)")
    from engine.demo import DemoConfig
    _job_parser(sub, "demo", DemoConfig, "the main job: Cycles-rendered demo subject → train → bake → Blender "
                "(outputs in --out: metrics.json, contact_sheet.png, turntable.mp4, demo.blend)")
    p = sub.add_parser("edit", help="alpha-composite a sticker image into the colour map")
    p.add_argument("--avatar", required=True, type=Path, help="baked avatar folder")
    p.add_argument("--sticker", required=True, type=Path, help="RGBA (or RGB) image")
    p.add_argument("--uv-box", required=True, help="u0,v0,u1,v1 in [0,1], UV origin bottom-left")

    args = parser.parse_args(argv)
    if args.command in ("model-info", "demo-head", "check", "edit"):
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

    if args.command == "model-info":
        return _model_info(args.path)
    if args.command == "demo-head":
        from engine.demo_head import write_demo_head
        write_demo_head(args.out)
        print(json.dumps({"written": str(args.out)}))
        return 0
    if args.command == "check":
        return _check()
    if args.command == "edit":
        return _edit(args)

    from engine.protocol import run_job

    cfg = _config_from(args, args._cls)
    mode = _events_mode(args)
    if args.command == "train":
        from engine.train import train
        return run_job("train", lambda sink, cancel: train(cfg, sink, cancel), mode)
    if args.command == "render":
        from engine.evaluate import run_render
        return run_job("render", lambda sink, cancel: run_render(cfg, sink), mode)
    if args.command == "eval":
        from engine.evaluate import run_eval

        def _eval(sink, cancel):
            m = run_eval(cfg, sink)
            print(json.dumps(m), file=sys.stderr)
            return m
        return run_job("eval", _eval, mode)
    if args.command == "synth":
        from engine.synthetic import write_synthetic_dataset
        from engine.train import resolve_head_model

        def _synth(sink, cancel):
            head = resolve_head_model(args._head)
            return {"dataset": str(write_synthetic_dataset(args.out, head, cfg))}
        return run_job("synth", _synth, mode)
    if args.command == "bake":
        from engine.bake import bake
        return run_job("bake", lambda sink, cancel: bake(cfg, sink, cancel), mode)
    if args.command == "demo":
        from engine.demo import run_demo
        # progress bars by default, also when stderr is not a terminal (CI logs)
        return run_job("demo", lambda sink, cancel: run_demo(cfg, sink, cancel), args.events or "tqdm")
    if args.command == "bench":
        from engine.bench import run_bench
        return run_job("bench", lambda sink, cancel: run_bench(cfg, sink), mode)
    parser.error(f"unknown command {args.command}")
    return 2


def _edit(args) -> int:
    """Sticker edit: composites the image into maps/color.exr, keeping a copy of the previous map."""
    import shutil
    import time

    import torch

    from engine.errors import FateError
    from engine.image_io import read_image, write_exr, write_png
    from engine.maps import apply_sticker, load_maps

    try:
        box = tuple(float(x) for x in args.uv_box.split(","))
        if len(box) != 4:
            raise ValueError
    except ValueError:
        print(f"error: --uv-box expects four numbers u0,v0,u1,v1, found {args.uv_box!r}", file=sys.stderr)
        return 2
    try:
        maps_dir = args.avatar / "maps"
        maps, _ = load_maps(maps_dir, names=("color",))
        sticker = torch.from_numpy(read_image(args.sticker)).float()
        edited = apply_sticker(maps["color"], sticker, box)
        backup = maps_dir / f"color.{time.strftime('%Y%m%d-%H%M%S')}.bak.exr"
        shutil.copy2(maps_dir / "color.exr", backup)
        write_exr(maps_dir / "color.exr", edited.numpy())
        write_png(maps_dir / "color.png", edited.clamp(0, 1).numpy())
    except FateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"edited": str(maps_dir / "color.exr"), "backup": str(backup)}))
    return 0


def _model_info(path: str) -> int:
    from engine.errors import FateError
    from engine.head_model import model_info
    from engine.train import resolve_head_model

    try:
        info = model_info(resolve_head_model(path))
    except FateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=2))
    return 0


def _check() -> int:
    import torch

    from engine.raster import available_backends, default_backend

    device = "cuda" if torch.cuda.is_available() else "cpu"
    info = {
        "torch": torch.__version__,
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "CPU",
        "rasterizer": default_backend(torch.device(device)),
        "backends": available_backends(),
        "python": sys.version.split()[0],
    }
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
