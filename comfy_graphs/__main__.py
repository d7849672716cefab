"""python -m comfy_graphs: look at the per-window ComfyUI prompts without a GPU.

    python -m comfy_graphs show JOB.json --window K [--id RENDER_ID] [--uploads]
        the exact API-format prompt the comfyui backend would send for window K of the job
        (with the names its uploads would get); --uploads prints the upload plan instead
    python -m comfy_graphs list
        the modes and their binding points
    python -m comfy_graphs check [DIR]
        load every template (DIR: an override folder, default LONGTALK_COMFY_GRAPHS_DIR or
        the shipped graphs) and check its binding points

Model files and sampler settings come from LONGTALK_COMFY_* (see comfy_graphs/config.py),
window size, motion frames and fps from LONGTALK_WINDOW / _MOTION / _FPS.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from longtalk.errors import ServiceError
from longtalk.settings import Settings
from longtalk.windows import WindowParams, total_frames, window_count

from .binder import (MODES, POINT_DOCS, WindowValues, check_templates, load_template,
                     mode_for, optional_points, required_points, template_path, upload_plan)
from .config import GraphConfig

PLACEHOLDER_ID = "render-id"


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
    args = parser.parse_args(argv)

    try:
        if args.command == "show":
            return _show(args)
        if args.command == "list":
            return _list()
        return _check(args.dir)
    except (ServiceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _show(args) -> int:
    from longtalk.jobs import load_job_file, parse_job

    settings = Settings.from_env()
    config = GraphConfig.from_env()
    job = parse_job(load_job_file(args.job), settings)
    mode = mode_for(job.input_type, job.person_count)
    params = WindowParams(settings.window, settings.motion, settings.fps)
    k = args.window
    if k < 0:
        raise ValueError(f"--window must be >= 0, got {k}")
    windows = _window_count(job, params)
    if windows is not None and k >= windows:
        raise ValueError(f"window {k} does not exist: the job's audio gives {windows} window(s) "
                         f"(W={params.window}, M={params.motion})")
    sampler = config.sampler
    if args.uploads:
        plan = upload_plan(args.render_id, k, mode, params.motion, speaker_masks=sampler.speaker_masks)
        print(json.dumps(plan, indent=2))
        return 0
    values = WindowValues.for_window(
        args.render_id, k, mode, width=job.width, height=job.height, prompt=job.prompt,
        num_frames=params.window, motion=params.motion, fps=params.fps,
        force_offload=job.force_offload, speaker_masks=sampler.speaker_masks)
    template = load_template(mode, args.graphs if args.graphs is not None else config.graphs_dir)
    prompt = template.bind(values, config.models, sampler)
    print(json.dumps(prompt, indent=2, ensure_ascii=False))
    return 0


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
    frames = total_frames(samples, params, job.max_frame)
    return window_count(frames, params) if frames > 0 else 0


def _list() -> int:
    for mode in MODES:
        print(f"{mode}  ({template_path(mode)})")
        for title in required_points(mode):
            print(f"  {title:<14} {POINT_DOCS[title]}")
        for title in optional_points(mode):
            print(f"  {title:<14} {POINT_DOCS[title]}  [optional]")
    return 0


def _check(directory: Path | None) -> int:
    override = directory if directory is not None else GraphConfig.from_env().graphs_dir
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
