"""The command line of the engine: ``python -m engine <verb> ...``, one table of verbs.

Long jobs (track, train, bake, render, eval, synth, bench, demo) take ``--config job.json`` and/or one
flag per config field, and ``--events jsonl|tqdm|none`` (jsonl for the Blender add-on: one JSON
event per stdout line, docs/PROTOCOL.md; tqdm progress bars for people, the default on a
terminal). They run under :func:`engine.jobs.protocol.run_job`. Short commands (model-info,
demo-head, check, edit, schema, landmarks) print JSON and return an exit code.

Adding a verb is one entry in :data:`VERBS`. Importing this module imports no torch: job configs
are torch-free dataclasses and each runner imports its job when it is called.

The developer verbs (``demo``, ``synth``, ``bench``) live in ``engine/demo`` and ``engine/bench``,
which the Blender extension does not ship; without them those verbs say so.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.bake.config import BakeConfig
from engine.evaluate.config import EvalConfig, RenderConfig
from engine.jobs import commands
from engine.jobs.config import add_arguments, apply_arguments, load_json
from engine.track.config import TrackConfig
from engine.train.config import TrainConfig

DEV_ONLY_MESSAGE = ("'{verb}' is a developer command: it needs the repository checkout (engine/demo and "
                    "engine/bench are not part of the Blender extension)")


@dataclass(frozen=True)
class JobVerb:
    """A long job: a config dataclass and a runner ``run(cfg, args, sink, cancel) -> dict``.

    Attributes:
        name: the verb.
        help: one line for ``--help``.
        config: the job's config dataclass (flags and JSON keys are its fields).
        run: the job; ``args`` carries the verb's extra arguments.
        extra_arguments: adds arguments that are not config fields (paths of outputs).
        events: default ``--events`` mode; None = tqdm on a terminal, else none.
    """

    name: str
    help: str
    config: type
    run: Callable[[Any, argparse.Namespace, Any, Any], dict]
    extra_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    events: str | None = None


@dataclass(frozen=True)
class CommandVerb:
    """A short command: ``add_arguments(parser)`` and ``run(args) -> exit code``."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# ---------------------------------------------------------------------- runners
def _train(cfg, args, sink, cancel) -> dict:
    from engine.train.trainer import train
    return train(cfg, sink, cancel)


def _bake(cfg, args, sink, cancel) -> dict:
    from engine.bake.baker import bake
    return bake(cfg, sink, cancel)


def _render(cfg, args, sink, cancel) -> dict:
    from engine.evaluate.render import run_render
    return run_render(cfg, sink, cancel)


def _eval(cfg, args, sink, cancel) -> dict:
    import json

    from engine.evaluate.evaluate import run_eval
    metrics = run_eval(cfg, sink, cancel)
    print(json.dumps(metrics), file=sys.stderr)
    return metrics


def _track(cfg, args, sink, cancel) -> dict:
    from engine.track.pipeline import run_track
    return run_track(cfg, sink, cancel, albedo_for=commands.demo_albedo)


def _synth(cfg, args, sink, cancel) -> dict:
    from engine.demo.synthetic import write_synthetic_dataset
    from engine.model.resolve import resolve_head_model
    return {"dataset": str(write_synthetic_dataset(args.out, resolve_head_model(args._head), cfg))}


def _synth_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="dataset folder to write")
    p.add_argument("--head-model", dest="_head", default="demo", help="'demo' or a FLAME path")


def _bench(cfg, args, sink, cancel) -> dict:
    from engine.bench.suites import run_bench
    return run_bench(cfg, sink)


def _demo(cfg, args, sink, cancel) -> dict:
    from engine.demo.run import run_demo
    return run_demo(cfg, sink, cancel)


def _dev_verbs() -> list[JobVerb | CommandVerb]:
    """demo, synth and bench where their packages are present, else verbs that explain why not."""
    try:
        from engine.bench.config import BenchConfig
        from engine.demo.config import DemoConfig, SyntheticConfig
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith(("engine.demo", "engine.bench")):
            raise
        return [CommandVerb(v, "developer command (repository checkout only)",
                            lambda p: p.add_argument("rest", nargs=argparse.REMAINDER),
                            lambda args, v=v: commands.fail(DEV_ONLY_MESSAGE.format(verb=v)))
                for v in ("demo", "synth", "bench")]
    return [
        JobVerb("synth", "write a synthetic ground-truth dataset (INSTA layout)", SyntheticConfig, _synth,
                _synth_arguments),
        JobVerb("bench", "speed/quality benchmarks (tables for docs/benchmarks.md)", BenchConfig, _bench),
        JobVerb("demo", "the main job: Cycles-rendered demo subject → train → bake → Blender (outputs in --out: "
                "metrics.json, contact_sheet.png, turntable.mp4, demo.blend)", DemoConfig, _demo,
                events="tqdm"),  # progress bars by default, also when stderr is not a terminal (CI logs)
    ]


VERBS: list[JobVerb | CommandVerb] = [
    CommandVerb("model-info", "print a head model's dimensions as JSON", commands.model_info_arguments,
                commands.model_info),
    CommandVerb("demo-head", "write the procedural demo head (not FLAME) as .npz", commands.demo_head_arguments,
                commands.demo_head),
    CommandVerb("check", "print torch version, device and rasteriser as JSON", lambda p: None, commands.check),
    CommandVerb("schema", "write the job config schema the Blender add-on checks itself against",
                commands.schema_arguments, commands.schema),
    JobVerb("track", "track a portrait video (or a folder of frames) into a FLAME dataset (INSTA layout)",
            TrackConfig, _track),
    CommandVerb("landmarks", "write the MediaPipe landmark embedding of a head model (.npz)",
                commands.landmarks_arguments, commands.landmarks),
    JobVerb("train", "train an avatar on a tracked dataset", TrainConfig, _train),
    JobVerb("render", "render an avatar's frames (or cross-reenact another dataset)", RenderConfig, _render),
    JobVerb("eval", "PSNR/SSIM(/LPIPS) on a split → metrics JSON", EvalConfig, _eval),
    JobVerb("bake", "neural baking of a trained avatar into UV maps (FATE §3.3)", BakeConfig, _bake),
    CommandVerb("edit", "alpha-composite a sticker image into the colour map", commands.edit_arguments,
                commands.edit),
    *_dev_verbs(),
]
"""Every verb of ``python -m engine``, in ``--help`` order."""

JOB_CONFIGS: dict[str, type] = {v.name: v.config for v in VERBS if isinstance(v, JobVerb)}
"""Verb → config dataclass of every long job."""


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every verb in :data:`VERBS`."""
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for verb in VERBS:
        p = sub.add_parser(verb.name, help=verb.help, description=verb.help)
        p.set_defaults(_verb=verb)
        if isinstance(verb, CommandVerb):
            verb.add_arguments(p)
            continue
        p.add_argument("--config", type=Path, default=None, help="job config JSON (flags override it)")
        p.add_argument("--events", default=None, choices=["jsonl", "tqdm", "none"],
                       help="progress events: jsonl (add-on), tqdm (people; default on a terminal), none")
        add_arguments(p, verb.config)
        if verb.extra_arguments is not None:
            verb.extra_arguments(p)
    return parser


def _config_from(args: argparse.Namespace, cls: type):
    cfg = load_json(cls, args.config) if args.config else cls()
    flags = argparse.Namespace(**{k: v for k, v in vars(args).items()
                                  if k not in ("config", "events", "command") and not k.startswith("_")})
    return apply_arguments(cfg, flags)


def _events_mode(args: argparse.Namespace, verb: JobVerb) -> str:
    if args.events:
        return args.events
    if verb.events:
        return verb.events
    return "tqdm" if sys.stderr.isatty() else "none"


def main(argv: list[str] | None = None) -> int:
    """Parses ``argv`` (default ``sys.argv[1:]``), runs the verb, returns the exit code."""
    args = build_parser().parse_args(argv)
    verb = args._verb
    if isinstance(verb, CommandVerb):
        commands.configure_logging()
        return verb.run(args)
    from engine.jobs.protocol import run_job

    def job(sink, cancel):  # the config is read inside the job: a bad one is an `error` event
        return verb.run(_config_from(args, verb.config), args, sink, cancel)

    return run_job(verb.name, job, _events_mode(args, verb))
