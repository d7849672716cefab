"""Start (or re-attach to) a render and wait for it.

    python starter.py JOB.json                      the RunPod-style job {"input": {...}}
    python starter.py --image face.png --audio talk.wav [--audio2 other.wav] [--id my-render]
    python starter.py JOB.json --no-wait            print the render id and return
    python starter.py JOB.json --output out.mp4     also download the video
    python starter.py JOB.json --estimate           what it would take (GPU seconds, ETA, cost); starts nothing

Inputs are checked and copied into the bucket before the workflow starts (URL inputs are
checked here and downloaded by the workflow's ingest activity); the workflow history only
ever sees object keys. Paths given with --image/--video/--audio/--audio2 are the operator's
own files (`~` expanded, not confined to LONGTALK_INPUT_ROOTS); paths inside a job file are
confined. The same render id (given, or derived from the job's content) attaches to the
running or finished render instead of starting a second one. Parsing, staging and starting
are longtalk.inputs (parse_job, submit), which an HTTP API calls the same way.
Prints the result JSON on stdout, progress (and the submission's warnings) on stderr.
Exit status: 0 done, 1 the render failed or was cancelled, 2 the job was refused before
anything started, 3 nothing started because Temporal or the object store is not reachable.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import sys
from pathlib import Path

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import CancelledError
from temporalio.service import RPCError, RPCStatusCode

from longtalk.errors import FieldError, InputError
from longtalk.estimate import estimate
from longtalk.inputs import check_render_id, load_job_file, parse_job, submit
from longtalk.inputs.rerender import start_rerender
from longtalk.payloads import Progress, RenderResult
from longtalk.outcome import cancelled_output, failure_message, result_output
from longtalk import temporal_connect
from longtalk.settings import Settings
from longtalk.stack import port_open, split_host_port
from longtalk.store import ObjectStore
from workflows.render import RenderVideo


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="starter.py", description="Render a talking-head video.")
    p.add_argument("job", nargs="?", help='job JSON file ({"input": {...}} or a bare input object)')
    p.add_argument("--image", help="portrait image: a path or an http(s) URL")
    p.add_argument("--video", help="source video for video-to-video: a path or URL")
    p.add_argument("--audio", help="speech track (speaker 1): a path or URL")
    p.add_argument("--audio2", help="second speaker's track (makes the job multi-person)")
    p.add_argument("--prompt")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--max-frame", type=int, dest="max_frame")
    p.add_argument("--seed", type=int, help="base seed: window k samples with seed + k (default: LONGTALK_DEFAULT_SEED)")
    p.add_argument("--id", dest="render_id", help="render id (default: derived from the job's content)")
    p.add_argument("--backend", help="preview or comfyui (default: LONGTALK_BACKEND)")
    p.add_argument("--estimate", action="store_true", help="print what the render would take (windows, GPU "
                   "seconds, wall time, cost) and start nothing")
    p.add_argument("--no-wait", action="store_true", help="print the render id and return")
    p.add_argument("--output", type=Path, help="download the finished video to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--rerender", metavar="ID", help="re-render windows of the finished render ID as a new "
                   "output version (with --windows; --prompt and --seed may change)")
    p.add_argument("--windows", metavar="K-M", help="with --rerender: the windows to redo, from 0 (K-M or K)")
    return p


def job_from_args(args: argparse.Namespace) -> tuple[dict, set[str]]:
    """The job (the file's, with the flags applied) and the *_path keys the flags gave: the
    operator's own files, which are not confined to LONGTALK_INPUT_ROOTS."""
    job: dict = load_job_file(args.job) if args.job else {}
    inp = dict(job.get("input", job)) if isinstance(job, dict) else job
    if not isinstance(inp, dict):
        raise InputError("input", "must be a JSON object")
    trusted: set[str] = set()

    def media(field: str, value: str | None) -> None:
        if value is None:
            return
        for form in ("path", "url", "base64"):  # a flag replaces what the file said
            inp.pop(field.replace("{form}", form), None)
        form = "url" if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", value) else "path"
        inp[field.replace("{form}", form)] = value
        if form == "path":
            trusted.add(field.replace("{form}", form))

    media("image_{form}", args.image)
    media("video_{form}", args.video)
    media("wav_{form}", args.audio)
    media("wav_{form}_2", args.audio2)
    if args.video:
        inp["input_type"] = "video"
    if args.audio2:
        inp["person_count"] = "multi"
    for name in ("prompt", "width", "height", "max_frame", "seed"):
        if getattr(args, name) is not None:
            inp[name] = getattr(args, name)
    return {"input": inp}, trusted


def default_render_id(job: dict) -> str:
    canonical = json.dumps(job, sort_keys=True, separators=(",", ":")).encode()
    return "r-" + hashlib.sha256(canonical).hexdigest()[:16]


def render_bar(p: Progress, width: int = 30) -> str:
    total = max(p.windows_total, 1)
    filled = int(width * p.windows_done / total) if p.windows_total else 0
    eta = f" ETA {int(p.eta_s // 60)}m{int(p.eta_s % 60):02d}s" if p.eta_s else ""
    return (f"\r{p.stage:<7} [{'#' * filled}{'.' * (width - filled)}] "
            f"{p.windows_done}/{p.windows_total} windows  {p.elapsed_s:6.1f}s{eta}   ")


async def result_surviving_outages(handle: WorkflowHandle, patience_s: float = 600.0) -> RenderResult:
    """handle.result(), riding out a Temporal server that is restarting or unreachable."""
    loop = asyncio.get_running_loop()
    down_since = None
    while True:
        try:
            return await handle.result()
        except RPCError as exc:
            if exc.status not in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED,
                                  RPCStatusCode.UNKNOWN, RPCStatusCode.INTERNAL):
                raise
            down_since = down_since or loop.time()
            if loop.time() - down_since > patience_s:
                raise
            await asyncio.sleep(1.0)


async def wait(handle: WorkflowHandle, show: bool, err=sys.stderr) -> RenderResult:
    result_task = asyncio.create_task(result_surviving_outages(handle))
    last = ""
    while not result_task.done():
        if show:
            try:
                p = await handle.query(RenderVideo.progress, result_type=Progress)
                line = render_bar(p)
                if line != last:
                    err.write(line)
                    err.flush()
                    last = line
            except RPCError:
                pass  # no worker has picked the workflow up yet
        await asyncio.wait([result_task], timeout=0.5)
    if show and last:
        err.write("\n")
    return result_task.result()


def finish_result(result: RenderResult, settings: Settings, store: ObjectStore, output: Path | None) -> dict:
    """The result JSON as the old worker returned it: `video` inline when small enough."""
    return result_output(result, settings, store, output)


EXIT_DONE, EXIT_FAILED, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3


def not_reachable(what: str, address: str) -> str:
    return f"{what} is not reachable at {address}; start the stack with `make up`"


async def main(argv: list[str] | None = None, client: Client | None = None,
               settings: Settings | None = None, stdout=sys.stdout, stderr=sys.stderr) -> int:
    args = build_parser().parse_args(argv)
    # the client is a composition root too: a job without a seed gets the deployment's
    # LONGTALK_DEFAULT_SEED, decided here once for every window of the render
    settings = settings or Settings.from_env()
    log = lambda msg: print(msg, file=stderr, flush=True)  # noqa: E731
    if args.rerender or args.windows:
        return await rerender_main(args, client, settings, stdout, stderr, log)
    try:
        job_dict, trusted = job_from_args(args)
        job = parse_job(job_dict, settings, trusted=trusted)
        render_id = check_render_id(args.render_id or default_render_id(job_dict))
    except FieldError as exc:
        log(f"error: {exc}")
        return 2
    backend = args.backend or settings.backend
    client, store = await connect(client, settings, log)
    if client is None:
        return EXIT_UNREACHABLE
    if args.estimate:
        try:
            answer = await estimate(client, store, settings, job, backend)
        except FieldError as exc:
            log(f"error: {exc}")
            return 2
        print(json.dumps(answer, indent=2), file=stdout, flush=True)
        return 0
    try:
        submission = await submit(client, settings, job, render_id, backend, store, log=log)
    except FieldError as exc:
        log(f"error: {exc}")
        return 2
    for warning in submission.warnings:  # before waiting: --no-wait users see them too
        log(f"warning: {warning}")
    log(f"render {render_id}: {settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}"
        f"/workflows/{render_id}")
    return await finish(submission.handle, render_id, args, settings, store, stdout, stderr, log)


async def connect(client: Client | None, settings: Settings, log) -> tuple[Client | None, ObjectStore | None]:
    """Temporal (unless given) and the object store; (None, None) after saying which one is
    not reachable."""
    if client is None:
        try:
            client = await temporal_connect.connect(settings)
        except temporal_connect.TemporalUnreachable:
            log(not_reachable("Temporal", settings.temporal_address))
            return None, None
    if not await asyncio.to_thread(port_open, *split_host_port(settings.s3_endpoint), 5.0):
        log(not_reachable("The object store (S3)", settings.s3_endpoint))
        return None, None
    return client, ObjectStore.from_settings(settings)


async def finish(handle: WorkflowHandle, render_id: str, args: argparse.Namespace, settings: Settings,
                 store: ObjectStore, stdout, stderr, log, extra: dict | None = None) -> int:
    """--no-wait prints the id; else wait with the progress bar and print the result JSON
    (with `extra`), the cancelled render's summary, or the failure."""
    if args.no_wait:
        print(render_id, file=stdout, flush=True)
        return 0
    try:
        result = await wait(handle, show=not args.quiet, err=stderr)
    except WorkflowFailureError as exc:
        if isinstance(exc.cause, CancelledError):
            summary = await asyncio.to_thread(cancelled_output, store, render_id)
            finished = summary["windows_finished"]
            log(f"render {render_id} was cancelled; {len(finished)} windows were finished and are kept")
            print(json.dumps(summary), file=stdout)
            return 1
        message = failure_message(exc)
        log(f"error: render {render_id} failed: {message}")
        print(json.dumps({"render_id": render_id, "status": "failed", "error": message}), file=stdout)
        return 1
    out = await asyncio.to_thread(finish_result, result, settings, store, args.output)
    print(json.dumps({**out, **(extra or {})}, indent=2), file=stdout, flush=True)
    return 0


async def rerender_main(args: argparse.Namespace, client: Client | None, settings: Settings, stdout, stderr,
                        log) -> int:
    """starter.py --rerender ID --windows K-M [--prompt P] [--seed S] [--output F]"""
    if not (args.rerender and args.windows):
        log("error: --rerender ID and --windows K-M go together")
        return 2
    first, _, last = args.windows.partition("-")
    client, store = await connect(client, settings, log)
    if client is None:
        return EXIT_UNREACHABLE
    try:
        handle, preview, render_id = await start_rerender(
            client, settings, store, args.rerender, first, last or first, prompt=args.prompt, seed=args.seed)
    except FieldError as exc:
        log(f"error: {exc}")
        return 2
    log(f"render {render_id}: re-renders windows {preview.first}-{preview.last} of {args.rerender} "
        f"({preview.windows} of {preview.windows_total}; the rest are copied)")
    return await finish(handle, render_id, args, settings, store, stdout, stderr, log,
                        extra={"base": args.rerender, "rerendered": [preview.first, preview.last]})


def run_cli() -> None:
    """Exit without tearing the interpreter down: after a failed connect, the Temporal
    client's native runtime can crash (SIGSEGV) while Python finalises, turning a clean
    "not reachable" exit 3 into a crash. Everything the CLI writes is flushed first."""
    code = asyncio.run(main())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    run_cli()
