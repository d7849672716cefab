"""Submitting a job: parse -> stage -> start, for the CLI (starter.py) and an HTTP API alike.

    job = parse_job(obj, settings)      # pure checks (job.py)
    handle = await submit(client, settings, job, render_id, backend)

`submit` attaches to a render that already has this id (running or finished); otherwise it
stages the inputs (staging.stage_inputs), stores the job's parameters next to them
(`request.json`) and starts the RenderVideo workflow. It waits for nothing else: URL inputs
are downloaded by the workflow's ingest activity, so an API request returns at once.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from collections.abc import Callable
from datetime import timedelta

from temporalio.client import Client, WorkflowHandle
from temporalio.common import Priority, SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from ..activity_options import timeouts_from_settings
from ..gpu_time import affinity_wait_s
from ..payloads import RenderRequest, RenderResult, derived_keys
from ..settings import Settings
from ..store import ObjectStore
from ..text import shorten
from .. import visibility as vis
from .framing import crop_notice, pending_notice
from .job import Job, check_render_id
from .tags import tag_attributes, tag_memo
from .staging import StagedInput, stage_inputs

RENDER_WORKFLOW = "RenderVideo"  # workflows.render.RenderVideo's name
ATTACHABLE = ("RUNNING", "COMPLETED", "CONTINUED_AS_NEW")


@dataclass(frozen=True)
class Submission:
    """A submitted job: the render's handle and what the submitter must hear before it waits
    (warnings: fields ignored, a picture cropped ...). `attached`: the id was running or
    finished already, and this is that render (its own warnings)."""

    handle: WorkflowHandle
    warnings: list[str]
    attached: bool = False


async def _describe(client: Client, render_id: str):
    try:
        return await client.get_workflow_handle(render_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def existing_status(client: Client, render_id: str) -> str | None:
    """The Temporal status name of the render with this id, or None when there is none."""
    desc = await _describe(client, render_id)
    return desc.status.name if desc is not None and desc.status else None


def framing_warnings(job: Job, staged: dict[str, StagedInput], settings: Settings) -> list[str]:
    """What the frame cuts off the portrait or source video, when their shapes differ."""
    field = "video" if job.spec.input_type == "video" else "image"
    what = "source video" if field == "video" else "portrait"
    item = staged.get(field)
    if item is None:
        return []
    spec = job.spec
    if item.fetched_by_ingest:  # its size is known once ingest has downloaded it
        return [pending_notice(item.source_key, what, spec.width, spec.height)] if job.default_size else []
    if not item.width or not item.height:
        return []
    notice = crop_notice(item.source_key, what, item.width, item.height, spec.width, spec.height,
                         job.default_size, settings.min_dimension, settings.max_dimension)
    return [notice] if notice else []


def render_request(job: Job, staged: dict[str, StagedInput], render_id: str, backend: str,
                   settings: Settings) -> RenderRequest:
    """The workflow input: object keys and the job's parameters, never media or URLs."""
    urls = {f: s.object_key for f, s in staged.items() if s.fetched_by_ingest}
    return RenderRequest(
        render_id=render_id,
        inputs={f: s.object_key for f, s in staged.items() if not s.fetched_by_ingest},
        input_names={f: s.source_key for f, s in staged.items()},
        input_urls=urls,
        input_formats={f: s.format for f, s in staged.items() if not s.fetched_by_ingest},
        spec=job.spec, backend=backend,
        windows_per_run=settings.windows_per_run, parallel_chains=settings.parallel_chains if job.parallel_chains is None else job.parallel_chains,
        gpu_queue=settings.window_queue(job.gpu_pool),
        timeouts=timeouts_from_settings(settings, url_inputs=len(set(urls.values())),
                                        affinity_s=affinity_wait_s(settings, backend, job.spec)),
        warnings=list(job.warnings) + framing_warnings(job, staged, settings),
    )


PRIORITY_NORMAL, PRIORITY_LOW = 3, 4  # Temporal's priority keys: 1 (first) .. 5, default 3


def render_priority(render_id: str, low: bool = False) -> Priority:
    """Every task of a render (its chains and windows inherit it) carries the render as its
    fairness key: the GPU queue hands windows out round-robin between renders, so a short
    render's windows do not wait behind a long render's backlog. policy.lowPriority renders
    go after every normal one."""
    key = render_id if len(render_id.encode()) <= 64 else hashlib.sha256(render_id.encode()).hexdigest()[:32]
    return Priority(priority_key=PRIORITY_LOW if low else PRIORITY_NORMAL, fairness_key=key)


async def start(client: Client, settings: Settings, request: RenderRequest, *,
                execution_timeout: timedelta | None = None,
                search_attributes: TypedSearchAttributes | None = None,
                memo: dict | None = None, low_priority: bool | None = None) -> WorkflowHandle:
    """Start RenderVideo for `request` under its render id (a failed, cancelled or timed-out
    run of that id is started again; a running one is attached to)."""
    if low_priority is None:
        low_priority = bool((memo or {}).get("low_priority"))
    extra: dict = {"search_attributes": initial_attributes(request, search_attributes),
                   "static_summary": render_summary(request),
                   "priority": render_priority(request.render_id, low_priority)}
    if execution_timeout is not None:
        extra["execution_timeout"] = execution_timeout
    memo = {**(memo or {}), "url_inputs": bool(request.input_urls)}  # /status reads ingest's warnings only then
    if request.warnings:  # every /status answer repeats what the submission said
        memo["warnings"] = list(request.warnings)
    extra["memo"] = memo
    return await client.start_workflow(
        RENDER_WORKFLOW, request, id=request.render_id, task_queue=settings.render_queue,
        result_type=RenderResult,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY, **extra,
    )


def initial_attributes(request: RenderRequest, given: TypedSearchAttributes | None) -> TypedSearchAttributes:
    """What visibility knows of a render from its start (owner, retries: `given`); the
    workflow keeps stage and windows current from there."""
    spec = request.spec
    pairs = {p.key.name: p for p in (given or TypedSearchAttributes.empty)}
    for key, value in ((vis.STAGE_KEY, "queued"), (vis.WINDOWS_DONE_KEY, 0), (vis.WINDOWS_TOTAL_KEY, 0), (vis.BACKEND_KEY, request.backend),
                       (vis.MODE_KEY, vis.mode_of(spec.input_type, spec.person_count)),
                       (vis.BASE_KEY, request.base)):
        pairs.setdefault(key.name, SearchAttributePair(key, value))
    return TypedSearchAttributes(list(pairs.values()))


def render_summary(request: RenderRequest) -> str:
    """The render as one line in the Temporal UI."""
    spec = request.spec
    what = (f"Re-render of {request.base}, windows {request.rerender_first + 1}-{request.rerender_last + 1}"
            if request.base else "Render")
    source = "a source video" if spec.input_type == "video" else "a portrait"
    people = "two speakers" if spec.multi else "one speaker"
    return (f"{what}: {source} with {people}, {spec.width}x{spec.height}, {request.backend} backend, "
            f"prompt \"{shorten(spec.prompt, 60)}\"")


def with_tags(job: Job, start_options: dict) -> dict:
    """`start_options` with the job's name, labels and prompt snippet added to the memo and its
    name and labels to the search attributes (tags.py)."""
    memo = {**tag_memo(job.name, job.labels, job.spec.prompt), **(start_options.get("memo") or {})}
    given = start_options.get("search_attributes")
    pairs = [*(given or TypedSearchAttributes.empty), *tag_attributes(job.name, job.labels)]
    return {**start_options, "memo": memo, "search_attributes": TypedSearchAttributes(pairs) if pairs else given}


def attach(client: Client, render_id: str) -> WorkflowHandle:
    return client.get_workflow_handle(render_id, result_type=RenderResult)


async def submit(client: Client, settings: Settings, job: Job, render_id: str, backend: str,
                 store: ObjectStore | None = None,
                 log: Callable[[str], None] = print, fresh: bool = False, **start_options) -> Submission:
    """Stage inputs and start the workflow, or attach to the render that has this id.
    InputError when the job's inputs are refused (nothing is left behind then).
    `fresh`: the caller has just made `render_id` (a new UUID) and ensured the bucket (the
    HTTP API, at startup), so neither is looked up: two round trips fewer per job.
    `start_options`: see `start` (execution timeout, search attributes, memo)."""
    check_render_id(render_id)
    if not fresh:
        desc = await _describe(client, render_id)
        status = desc.status.name if desc is not None and desc.status else None
        if status in ATTACHABLE:
            log(f"render {render_id} already exists ({status.lower()}): attaching")
            memo = await desc.memo()
            return Submission(attach(client, render_id), list(memo.get("warnings", job.warnings)), attached=True)
    store = store or ObjectStore.from_settings(settings)
    if not fresh:
        await asyncio.to_thread(store.ensure_bucket)
    staged = await asyncio.to_thread(stage_inputs, job, store, render_id, settings, fresh)
    request = render_request(job, staged, render_id, backend, settings)
    await asyncio.to_thread(store.put_json, derived_keys(render_id)["request"],
                            {"params": job.params(), "inputs": request.inputs,
                             "input_urls": request.input_urls, "warnings": request.warnings})
    start_options = with_tags(job, start_options)
    try:
        return Submission(await start(client, settings, request, **start_options), list(request.warnings))
    except WorkflowAlreadyStartedError:
        log(f"render {render_id} finished meanwhile: attaching")
        return Submission(attach(client, render_id), list(request.warnings), attached=True)
