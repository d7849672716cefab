"""python -m comfy_graphs: look at the per-window ComfyUI prompts without a GPU.

    python -m comfy_graphs show JOB.json --window K [--id RENDER_ID] [--uploads]
        the exact API-format prompt the comfyui backend would send for window K of the job
        (with the names its uploads would get); --uploads prints the upload plan instead
    python -m comfy_graphs list
        the modes and their binding points
    python -m comfy_graphs check [DIR]
        load every template (DIR: an override folder, default LONGTALK_COMFY_GRAPHS_DIR or
        the shipped graphs) and check its binding points
    python -m comfy_graphs doctor [--url URL] [--modes M,M] [--smoke [MODE ...]] [--tiny-weights DIR]
        check a running ComfyUI against the graphs (node classes, inputs, choices, model
        files; its Python, torch and devices); --smoke also renders two tiny windows per mode
        through the backend; --tiny-weights DIR first writes random-weight model files of the
        right architectures under the configured names into the models folder DIR (alone:
        write them and stop). Exit 0: all good; 1: problems (one FAIL line each); 2: usage
        or ComfyUI unreachable.

Model files and sampler settings come from LONGTALK_COMFY_* (see longtalk/comfy/config.py),
window size, motion frames, fps and a job's default seed from LONGTALK_WINDOW / _MOTION / _FPS /
_DEFAULT_SEED; both are read once, here. The graphs themselves are the JSON files beside
this one; the code that binds and checks them is longtalk.comfy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from longtalk import ffmpeg_bin
from longtalk.comfy.binder import (POINT_DOCS, WindowValues, check_templates, load_template, optional_points,
                                   required_points, template_path, upload_plan)
from longtalk.comfy.config import GraphConfig
from longtalk.comfy.modes import MODES, parse_modes
from longtalk.errors import ServiceError
from longtalk.settings import Settings
from longtalk.windows import WindowParams, total_frames, window_count

PLACEHOLDER_ID = "render-id"
SHOWN_NODES = 10  # slowest nodes listed per smoke window


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfy_graphs", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="print the prompt for one window of a job")
    show.add_argument("job", type=Path, help="job JSON file ({\"input\": {...}} or the bare input)")
    show.add_argument("--window", "-k", type=int, default=0, help="window index k (default 0)")
    show.add_argument("--id", dest="render_id", default=PLACEHOLDER_ID, help="render id used in upload names")
    show.add_argument("--graphs", type=Path, default=None, help="override folder (default LONGTALK_COMFY_GRAPHS_DIR)")
    show.add_argument("--uploads", action="store_true", help="print the upload plan instead of the prompt")
    sub.add_parser("list", help="print the modes and their binding points")
    check = sub.add_parser("check", help="load the templates and check their binding points")
    check.add_argument("dir", nargs="?", type=Path, default=None, help="override folder to check")
    doctor = sub.add_parser("doctor", help="check that a running ComfyUI can run the graphs")
    doctor.add_argument("--url", default=None, help="ComfyUI address (default LONGTALK_COMFY_URL)")
    doctor.add_argument("--modes", default=None,
                        help="comma-separated modes to check (default LONGTALK_COMFY_MODES, else all)")
    doctor.add_argument("--smoke", nargs="*", metavar="MODE", default=None,
                        help="also render windows 0 and 1 of each MODE (default: the checked modes) "
                             "with the smallest settings")
    doctor.add_argument("--steps", type=int, default=2, help="sampling steps of a smoke window (default 2)")
    doctor.add_argument("--timeout", type=float, default=1800.0, help="seconds a smoke window may take")
    doctor.add_argument("--tiny-weights", type=Path, default=None, metavar="DIR",
                        help="write random-weight model files into the ComfyUI models folder DIR")
    doctor.add_argument("--seed", type=int, default=0, help="seed of the tiny weights (default 0)")
    args = parser.parse_args(argv)

    try:
        if args.command == "list":
            return _list()
        # the entry point: the only place these commands read their environment
        settings, config = Settings.from_env(), GraphConfig.from_env()
        if args.command == "show":
            return _show(args, settings, config)
        if args.command == "doctor":
            return asyncio.run(_doctor(args, settings, config))
        return _check(args.dir, config)
    except (ServiceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _show(args, settings: Settings, config: GraphConfig) -> int:
    from longtalk.inputs import load_job_file, parse_job

    ffmpeg_bin.use(settings.ffmpeg)  # decodes a local audio track to count its windows
    job = parse_job(load_job_file(args.job), settings)
    params = job.spec.window_params
    k = args.window
    if k < 0:
        raise ValueError(f"--window must be >= 0, got {k}")
    windows = _window_count(job, params)
    if windows is not None and k >= windows:
        raise ValueError(f"window {k} does not exist: the job's audio gives {windows} window(s) "
                         f"(W={params.window}, M={params.motion})")
    sampler = config.sampler
    if args.uploads:
        plan = upload_plan(args.render_id, k, job.spec, speaker_masks=sampler.speaker_masks)
        print(json.dumps(plan, indent=2))
        return 0
    values = WindowValues.for_window(args.render_id, k, job.spec, speaker_masks=sampler.speaker_masks)
    template = load_template(values.mode, args.graphs if args.graphs is not None else config.graphs_dir)
    prompt = template.bind(values, config.models, sampler)
    print(json.dumps(prompt, indent=2, ensure_ascii=False))
    return 0


async def _doctor(args, settings: Settings, config: GraphConfig) -> int:
    from longtalk.comfy.client import ComfyClient
    from longtalk.comfy.doctor import check_server

    from .smoke import run_smoke

    modes = parse_modes(args.modes) if args.modes is not None else config.modes
    if args.tiny_weights is not None:
        from .tiny_weights import write_tiny_weights

        paths = write_tiny_weights(args.tiny_weights, config.models, seed=args.seed,
                                   progress=lambda text: print(f"weights  {text}", flush=True))
        print(f"weights  {len(paths)} model files under {args.tiny_weights}")
        if args.smoke is None and args.url is None:
            return 0
    smoke_modes = (parse_modes(",".join(args.smoke)) if args.smoke else modes) if args.smoke is not None else ()
    async with ComfyClient(args.url or settings.comfy_url, poll_interval_s=0.5) as client:
        report = await check_server(client, config, tuple(dict.fromkeys(modes + smoke_modes)))
        for line in report.lines():
            print(line, flush=True)
        if not report.ok or not smoke_modes:
            return 0 if report.ok else 1
        print(f"smoke    rendering windows 0 and 1 of {', '.join(smoke_modes)} ({args.steps} steps, "
              f"W=17, M=9, 64x64 / 128x64)", flush=True)
        results = await run_smoke(client, config, smoke_modes, steps=args.steps, timeout_s=args.timeout,
                                  on_window=_print_smoke_window)
        failed = sum(not r.ok for r in results)
        print("ok: every smoke window rendered" if not failed else f"{failed} smoke window(s) failed")
        return 1 if failed else 0


def _print_smoke_window(result) -> None:
    print(("smoke    " if result.ok else "FAIL     ") + result.line(), flush=True)
    if result.guard_line():
        print("guard    " + result.guard_line(), flush=True)
    for node in result.nodes[:SHOWN_NODES]:
        print(f"         {node.seconds:8.2f} s  node {node.node_id:>4} {node.class_type}", flush=True)
    rest = result.nodes[SHOWN_NODES:]
    if rest:
        print(f"         {sum(n.seconds for n in rest):8.2f} s  {len(rest)} more nodes", flush=True)


def _window_count(job, params: WindowParams) -> int | None:
    """Windows of the job when its audio is a local file; None when it cannot be known here."""
    from longtalk.av_io import decode_audio_16k

    tracks = [s for s in (job.audio, job.audio_2) if s is not None]
    if not all(s.form == "path" for s in tracks):
        return None
    samples = 0
    for source in tracks:
        path = Path(source.value)
        if not path.is_file():
            return None
        samples = max(samples, decode_audio_16k(path, source.key).size)
    frames = total_frames(samples, params, job.spec.max_frame)
    return window_count(frames, params) if frames > 0 else 0


def _list() -> int:
    for mode in MODES:
        print(f"{mode}  ({template_path(mode)})")
        for title in required_points(mode):
            print(f"  {title:<14} {POINT_DOCS[title]}")
        for title in optional_points(mode):
            print(f"  {title:<14} {POINT_DOCS[title]}  [optional]")
    return 0


def _check(directory: Path | None, config: GraphConfig) -> int:
    override = directory if directory is not None else config.graphs_dir
    if directory is not None and not directory.is_dir():
        raise ValueError(f"{directory} is not a folder")
    bad = 0
    for mode, error in check_templates(override).items():
        path = template_path(mode, override)
        if error is None:
            template = load_template(mode, override)
            print(f"ok     {mode}  {path}  ({len(template.prompt)} nodes)")
        else:
            bad += 1
            print(f"error  {mode}  {error}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
