"""Starting a render and reading its outcome: what every client (starter.py, the HTTP API)
shares.

    submit(...)            stage a parsed job's inputs and start RenderVideo (or attach)
    result_output(...)     a RenderResult as the seed worker's output (`video` inline when small)
    cancelled_output(...)  what a cancelled render kept (its manifest's finished windows)
    failure_message(exc)   the innermost message of a failed render (names the field)
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client, WorkflowHandle
from temporalio.common import TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from .activity_options import timeouts_from_settings
from .contracts import RenderRequest, RenderResult, derived_keys
from .jobs import Job
from .settings import Settings
from .staging import stage_inputs
from .store import ObjectStore

FINISHED_OK = "COMPLETED"


async def existing_status(client: Client, render_id: str) -> str | None:
    """The Temporal status name of the render's latest run, None when there is none."""
    try:
        desc = await client.get_workflow_handle(render_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return desc.status.name if desc.status else None


def build_request(job: Job, staged: dict, render_id: str, backend: str, settings: Settings) -> RenderRequest:
    return RenderRequest(
        render_id=render_id,
        inputs={f: s.object_key for f, s in staged.items()},
        input_names={f: s.source_key for f, s in staged.items()},
        spec=job.spec, backend=backend,
        windows_per_run=settings.windows_per_run, parallel_chains=settings.parallel_chains,
        gpu_queue=settings.gpu_queue, timeouts=timeouts_from_settings(settings),
        warnings=list(job.warnings),
    )


async def start(client: Client, settings: Settings, request: RenderRequest, *,
                execution_timeout: timedelta | None = None,
                search_attributes: TypedSearchAttributes | None = None,
                memo: dict | None = None) -> WorkflowHandle:
    """Start RenderVideo for `request` under its render id (a failed, cancelled or timed-out
    run of that id is started again; a running one is attached to)."""
    from workflows.render import RenderVideo

    extra = {}
    if execution_timeout is not None:
        extra["execution_timeout"] = execution_timeout
    if search_attributes is not None:
        extra["search_attributes"] = search_attributes
    if memo:
        extra["memo"] = memo
    return await client.start_workflow(
        RenderVideo.run, request, id=request.render_id, task_queue=settings.render_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY, **extra,
    )


async def submit(client: Client, settings: Settings, job: Job, render_id: str, backend: str,
                 store: ObjectStore | None = None, log=print, **start_options) -> WorkflowHandle:
    """Stage inputs and start the workflow, or attach to the render that has this id.
    `start_options`: see `start` (execution timeout, search attributes, memo)."""
    from workflows.render import RenderVideo

    status = await existing_status(client, render_id)
    if status in ("RUNNING", FINISHED_OK, "CONTINUED_AS_NEW"):
        log(f"render {render_id} already exists ({status.lower()}): attaching")
        return client.get_workflow_handle_for(RenderVideo.run, render_id)
    store = store or ObjectStore.from_settings(settings)
    await asyncio.to_thread(store.ensure_bucket)
    staged = await asyncio.to_thread(stage_inputs, job, store, render_id, settings)
    request = build_request(job, staged, render_id, backend, settings)
    await asyncio.to_thread(store.put_json, derived_keys(render_id)["request"],
                            {"params": job.params(), "inputs": request.inputs, "warnings": request.warnings})
    try:
        return await start(client, settings, request, **start_options)
    except WorkflowAlreadyStartedError:
        log(f"render {render_id} finished meanwhile: attaching")
        return client.get_workflow_handle_for(RenderVideo.run, render_id)


def result_output(result: RenderResult, settings: Settings, store: ObjectStore, output: Path | None = None) -> dict:
    """The result JSON as the old worker returned it: `video` inline when small enough
    (`output`: also download the video to this file)."""
    out = dataclasses.asdict(result)
    if out.get("video_path") is None:
        out.pop("video_path", None)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        store.download(result.video_key, output)
        out["output_file"] = str(output)
    if not result.video_path:
        if result.size_bytes <= settings.inline_video_max_bytes:
            data = output.read_bytes() if output is not None else store.get_bytes(result.video_key)
            out["video"] = "data:video/mp4;base64," + base64.b64encode(data).decode()
        else:
            out["video_omitted"] = (f"video is {result.size_bytes} bytes, over the inline limit of "
                                    f"{settings.inline_video_max_bytes}; use video_url")
    return out


def cancelled_output(store: ObjectStore, render_id: str) -> dict:
    """A cancelled render's summary: its windows, and those finished (kept: resubmitting resumes)."""
    manifest = store.get_json_or_none(derived_keys(render_id)["manifest"]) or {}
    return {"render_id": render_id, "status": "cancelled",
            "windows": manifest.get("windows"), "windows_finished": manifest.get("windows_finished", [])}


def failure_message(exc: BaseException) -> str:
    parts = []
    while exc is not None:
        msg = getattr(exc, "message", None) or str(exc)
        if msg and msg not in parts:
            parts.append(msg)
        exc = exc.__cause__
    return parts[-1] if parts else "render failed"
