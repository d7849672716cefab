"""The RunPod dispatcher (worker role "runpod", task queue LONGTALK_RUNPOD_QUEUE): the same
`render_window` activity as the GPU worker's, but it holds no GPU. It submits the window as
one job to a RunPod Serverless endpoint (longtalk/serverless/handler.py renders it there)
and polls the job's status while it heartbeats.

Exactly once: the job's id goes into the heartbeat details and into the bucket
(windows/{k}/runpod.json) as soon as /run answers; a retried or restarted activity finds it
there and polls that job again instead of submitting another. A window whose meta.json is
stored is done. A job that fails, times out, is cancelled on RunPod's side or is lost (404:
its result expired) is a failed attempt, retried like any other, with a new job and fresh
presigned URLs. Cancelling the activity (the render is cancelled) cancels the job.

Billing: every job also has a record of its own, windows/{k}/runpod/{job}.json, which gets the
job's final status, delayTime and executionTime (RunPod bills failed and timed-out jobs too);
the finished render sums them (longtalk.usage). A job carries policy.executionTimeout, from
the window's expected time (execution_timeout_s): RunPod ends a job past it TIMED_OUT.
The quality guard runs in the handler (longtalk.guarded, where the frames are); the job
carries this worker's LONGTALK_QUALITY_* settings and presigned URLs for the window's
quality.json (and the previous window's), and may render the window 1 + retries times.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from temporalio import activity

from longtalk import runpod_api, visibility as vis
from longtalk.gpu_time import default_window_s
from longtalk.errors import TransientError
from longtalk.payloads import RenderContext, RenderWindowInput, RenderWindowResult, window_meta_key, window_prefix
from longtalk.runpod_api import RunPodEndpoint
from longtalk.serverless.protocol import guard_input, job_input
from longtalk.settings import Settings
from longtalk.store import ObjectStore

from .common import heartbeating_async, map_errors
from .gpu import StartAnnouncer, record_attempt, stored_result

log = logging.getLogger(__name__)


def job_record_key(render_id: str, k: int) -> str:
    """The window's RunPod job: id, and once it ended, its status, delayTime and executionTime."""
    return window_prefix(render_id, k) + "runpod.json"


def job_billing_key(render_id: str, k: int, job_id: str) -> str:
    """One job of the window (every attempt's): what RunPod reported of it once it ended."""
    return f"{window_prefix(render_id, k)}runpod/{job_id}.json"


def execution_timeout_s(ctx: RenderContext, settings: Settings) -> int:
    """The job's policy.executionTimeout: LONGTALK_RUNPOD_TIMEOUT_MARGIN_S + LONGTALK_RUNPOD_TIMEOUT_FACTOR
    x the window's expected time (the estimate's default figure for its backend, mode, size and
    frames) x the renders the quality guard may make of it (1 + LONGTALK_QUALITY_RETRIES); at
    least RunPod's minimum of 5 s."""
    spec = ctx.spec
    expected = default_window_s("", ctx.backend, vis.mode_of(spec.input_type, spec.person_count), spec.width,
                                spec.height, ctx.window_params.window, settings.timed_window_s).busy_s
    renders = 1 + max(0, settings.quality_retries)
    return max(5, math.ceil(settings.runpod_timeout_margin_s + settings.runpod_timeout_factor * expected * renders))


class RunPodDispatcher:
    def __init__(self, store: ObjectStore, settings: Settings, identity: str, build_id: str = "",
                 endpoint: RunPodEndpoint | None = None) -> None:
        self.store = store
        self.settings = settings
        self.identity = identity
        self.build_id = build_id
        self.endpoint = endpoint or RunPodEndpoint(settings.runpod_base_url, settings.runpod_endpoint_id,
                                                   settings.runpod_api_key)
        self.announcer = StartAnnouncer(identity)
        self.submitted = 0  # /run calls made by this process (tests, metrics)
        self.fleet = None  # longtalk.fleet.EndpointRecord: counts the windows done and failed

    @activity.defn(name="render_window")
    @map_errors
    async def render_window(self, inp: RenderWindowInput) -> RenderWindowResult:
        """The window's stored result, or the window rendered by a RunPod job."""
        stored = await asyncio.to_thread(stored_result, self.store, inp.context.render_id, inp.index)
        if stored is None:
            return await self._dispatch(inp)
        record = await asyncio.to_thread(self.store.get_json_or_none, job_record_key(inp.context.render_id, inp.index))
        if record and record.get("job") and not record.get("status"):
            await self._find_job(inp.context.render_id, inp.index)  # its job's billing, not recorded yet
        return stored

    async def _dispatch(self, inp: RenderWindowInput) -> RenderWindowResult:
        ctx, k = inp.context, inp.index
        state: dict = {"window": k, "stage": "submit", "runpod_job": "", "pool": "runpod",
                       **({"build_id": self.build_id} if self.build_id else {})}
        async with heartbeating_async(lambda: state, every_s=min(self.settings.runpod_poll_s, 5.0)):
            job_id, status = await self._find_job(ctx.render_id, k)
            if job_id:
                log.info("window %d of %s: resuming RunPod job %s (%s)", k, ctx.render_id, job_id, status["status"])
            else:
                # a job of an earlier attempt may have finished the window since the first look
                stored = await asyncio.to_thread(stored_result, self.store, ctx.render_id, k)
                if stored is not None:
                    return stored
                job_id = await self._submit(inp)
            state["runpod_job"] = job_id
            activity.heartbeat(state)
            try:
                status = await self._wait(ctx.render_id, k, job_id, state)
            except asyncio.CancelledError:
                await asyncio.shield(self._cancel(job_id))
                raise
            except Exception:
                if self.fleet is not None:
                    self.fleet.end(ok=False)
                raise
            if self.fleet is not None:
                self.fleet.end(ok=True)
        meta = await asyncio.to_thread(self.store.get_json_or_none, window_meta_key(ctx.render_id, k))
        if meta is None:
            raise TransientError(f"RunPod job {job_id} completed but window {k}'s meta.json is not stored")
        return RenderWindowResult(index=k, clip_key=meta["clip_key"], frames=meta["frames"], rendered=True,
                                  render_s=float(meta.get("render_s", 0.0)), attempt=activity.info().attempt,
                                  worker=str(status.get("workerId") or meta.get("worker", "")))

    async def _find_job(self, render_id: str, k: int) -> tuple[str, dict]:
        """The window's job of an earlier attempt or process that RunPod still runs or queues
        (heartbeat details first, then the bucket's record); ("", {}) when there is none."""
        candidates = []
        for details in activity.info().heartbeat_details:
            if isinstance(details, dict) and details.get("runpod_job"):
                candidates.append(str(details["runpod_job"]))
        record = await asyncio.to_thread(self.store.get_json_or_none, job_record_key(render_id, k))
        if record and record.get("job") and record.get("job") not in candidates:
            candidates.append(str(record["job"]))
        for job_id in candidates:
            status = await self.endpoint.status(job_id)
            if status is not None and status.get("status") in (runpod_api.IN_QUEUE, runpod_api.IN_PROGRESS):
                return job_id, status
            if status is not None and status.get("status") in runpod_api.FINAL:
                # it ended while no dispatcher polled it (one was killed): still billed
                billing = await asyncio.to_thread(self.store.get_json_or_none, job_billing_key(render_id, k, job_id))
                if not (billing or {}).get("status"):
                    await self._record_end(render_id, k, job_id, status, (billing or {}).get("attempt", 0),
                                           current=False)
        return "", {}

    async def _submit(self, inp: RenderWindowInput) -> str:
        ctx, k = inp.context, inp.index
        info = activity.info()
        stamp = {"attempt": info.attempt, "worker": "", "activity_id": info.activity_id,
                 "workflow_id": info.workflow_id}
        body = await asyncio.to_thread(job_input, inp, self.store, self.settings.runpod_url_expiry_s, stamp,
                                       guard_input(self.settings))
        await asyncio.to_thread(record_attempt, self.store, self.identity, ctx.render_id, k)
        started = time.monotonic()
        job_id = await self.endpoint.run(body, execution_timeout_s=execution_timeout_s(ctx, self.settings))
        self.submitted += 1
        # in the bucket at once: a dispatcher killed before its next heartbeat reaches the
        # server still leaves the job findable
        await self._record(ctx.render_id, k, job_id, {"job": job_id, "attempt": info.attempt,
                                                      "dispatcher": self.identity})
        log.info("window %d of %s: RunPod job %s submitted in %.3f s", k, ctx.render_id, job_id,
                 time.monotonic() - started)
        return job_id

    async def _wait(self, render_id: str, k: int, job_id: str, state: dict) -> dict:
        """Poll the job until it ends; a COMPLETED status, else a TransientError (the window's
        attempt failed: Temporal retries it)."""
        while True:
            status = await self.endpoint.status(job_id)
            if status is None:
                raise TransientError(f"RunPod job {job_id} of window {k} is lost (404: unknown or expired)")
            name = status.get("status")
            state["stage"] = {runpod_api.IN_QUEUE: "queued on RunPod", runpod_api.IN_PROGRESS: "render"}.get(name, name)
            if name == runpod_api.IN_PROGRESS:
                await self.announcer.announce(render_id, k)
                progress = status.get("output")
                if isinstance(progress, dict) and "fraction" in progress:
                    state["fraction"] = progress["fraction"]
            if name in runpod_api.FINAL:
                await self._record_end(render_id, k, job_id, status, activity.info().attempt)
                state.update(delayTime=status.get("delayTime"), executionTime=status.get("executionTime"))
                if name != runpod_api.COMPLETED:
                    raise TransientError(f"RunPod job {job_id} of window {k}: {name}: "
                                         f"{str(status.get('error') or '')[:500]}")
                return status
            await asyncio.sleep(self.settings.runpod_poll_s)

    async def _record(self, render_id: str, k: int, job_id: str, record: dict, current: bool = True) -> None:
        """The job's own record (billing) and, for the window's current job, runpod.json."""
        keys = [job_billing_key(render_id, k, job_id)] + ([job_record_key(render_id, k)] if current else [])
        await asyncio.gather(*(asyncio.to_thread(self.store.put_json, key, record) for key in keys))

    async def _record_end(self, render_id: str, k: int, job_id: str, status: dict, attempt: int,
                          current: bool = True) -> None:
        output = status.get("output") if isinstance(status.get("output"), dict) else {}
        await self._record(render_id, k, job_id, current=current, record={
            "job": job_id, "status": status.get("status"), "attempt": attempt, "dispatcher": self.identity,
            "worker": status.get("workerId", ""), "gpu": output.get("gpu", ""),
            "delayTime": status.get("delayTime"), "executionTime": status.get("executionTime")})

    async def _cancel(self, job_id: str) -> None:
        try:
            await self.endpoint.cancel(job_id)
        except Exception as exc:  # the activity is cancelled either way; the job may run on
            log.warning("could not cancel RunPod job %s: %s", job_id, exc)
