"""What the routes do, apart from HTTP: a render's RunPod status, its owner, waiting, retrying,
purging and the endpoint's health. Also used by the webhook activities (the same body)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import OrderedDict
from datetime import datetime, timedelta, timezone

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from longtalk import renders
from longtalk.inputs import start_render
from longtalk.payloads import CANCEL_REQUESTS, Progress, RenderRequest, RenderResult, cancel_request_key
from longtalk.settings import Settings
from longtalk.store import ObjectStore
from longtalk import visibility as vis
from longtalk.fleet import read_fleet
from longtalk.visibility import OWNER, OWNER_KEY, RETRIES_KEY
from workflows.render import RenderVideo

from longtalk.visibility import IN_PROGRESS, IN_QUEUE, QUEUED_WHERE  # noqa: E402

COMPLETED, FAILED, CANCELLED, TIMED_OUT = "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"
TERMINAL = (COMPLETED, FAILED, CANCELLED, TIMED_OUT)
CLOSED = {
    WorkflowExecutionStatus.COMPLETED: COMPLETED,
    WorkflowExecutionStatus.FAILED: FAILED,
    WorkflowExecutionStatus.CANCELED: CANCELLED,
    WorkflowExecutionStatus.TERMINATED: CANCELLED,
    WorkflowExecutionStatus.TIMED_OUT: TIMED_OUT,
}
QUERY_TIMEOUT = timedelta(seconds=5)
PURGE_ANSWER_S = 2.5  # /purge-queue answers within this (RunPod's SDK gives it 3 s)


class NotFound(Exception):
    pass


def attributes(owner: str, retries: int = 0) -> TypedSearchAttributes:
    return TypedSearchAttributes([SearchAttributePair(OWNER_KEY, owner), SearchAttributePair(RETRIES_KEY, retries)])


def progress_output(p: Progress) -> dict:
    out = dataclasses.asdict(p)
    out.pop("windows_finished", None)  # can be long; windows_done says as much
    out.pop("warnings", None)  # the body's own "warnings" says them
    return out


def _merged(*lists) -> list[str]:
    """The warnings of every source once, in the order first said."""
    return list(dict.fromkeys(w for ws in lists for w in ws or ()))


def _ms(seconds: float) -> int:
    return max(0, int(round(seconds * 1000)))


def _timing(start: datetime, end: datetime, gpu_started_at: str | None) -> dict:
    """RunPod's delayTime (until a GPU began; fixed from then on) and executionTime (since)."""
    began = datetime.fromisoformat(gpu_started_at) if gpu_started_at else None
    if began is None:
        return {"delayTime": _ms((end - start).total_seconds()), "executionTime": 0}
    began = min(max(began, start), end)
    return {"delayTime": _ms((began - start).total_seconds()), "executionTime": _ms((end - began).total_seconds())}


def _ordered(body: dict) -> dict:
    """RunPod's key order (id, status, times first), then the rest."""
    first = ("id", "status", "delayTime", "executionTime")
    return {**{k: body[k] for k in first if k in body}, **{k: v for k, v in body.items() if k not in first}}



class Renders:
    """The API's view of renders: Temporal for state, the bucket for outputs."""

    def __init__(self, client: Client, settings: Settings, store: ObjectStore) -> None:
        self.client, self.settings, self.store = client, settings, store
        self._outputs: OrderedDict[str, dict] = OrderedDict()  # run id -> COMPLETED output (a few)
        self._purges: set[asyncio.Future] = set()  # cancel requests still being sent

    # ---- ownership ----------------------------------------------------------

    async def describe(self, render_id: str, owner: str | None):
        """The render's latest run, if `owner` (None: anyone) may see it and its ttl holds."""
        try:
            desc = await self.client.get_workflow_handle(render_id).describe()
        except RPCError as exc:
            if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                raise NotFound(render_id) from None
            raise
        if desc.workflow_type != "RenderVideo":
            raise NotFound(render_id)
        if owner is not None and desc.typed_search_attributes.get(OWNER_KEY) != owner:
            raise NotFound(render_id)  # another key's render: as if it did not exist
        memo = await desc.memo()
        ttl_s = memo.get("ttl_s", self.settings.api_ttl_s)
        if desc.start_time and datetime.now(timezone.utc) > desc.start_time + timedelta(seconds=ttl_s):
            raise NotFound(render_id)
        return desc

    # ---- status -------------------------------------------------------------

    async def _progress(self, render_id: str) -> Progress | None:
        try:
            return await self.client.get_workflow_handle(render_id).query(
                RenderVideo.progress, result_type=Progress, rpc_timeout=QUERY_TIMEOUT)
        except (RPCError, asyncio.TimeoutError, Exception):  # no worker has picked it up yet
            return None

    # ---- cancel: read your own writes ------------------------------------------

    async def cancel(self, render_id: str, desc) -> None:
        """Ask the run `desc` to cancel, and record that it was asked: every /status answer
        after this one reads CANCELLED, though the workflow takes a moment to stop (its
        record_cancelled activity removes the record)."""
        key = cancel_request_key(render_id, desc.run_id)
        await asyncio.to_thread(self.store.put_json, key, {"at": datetime.now(timezone.utc).isoformat()})
        try:  # asked before the workflow can answer it, so its answer always removes the record
            await self.client.get_workflow_handle(render_id, run_id=desc.run_id).cancel()
        except BaseException:
            await asyncio.to_thread(self.store.delete, key)
            raise

    def cancel_requested(self, render_id: str, run_id: str) -> bool:
        return self.store.exists(cancel_request_key(render_id, run_id))

    def cancels_pending(self) -> set[tuple[str, str]]:
        """(render id, run id) of every cancel asked whose workflow has not answered yet."""
        return {tuple(key[len(CANCEL_REQUESTS):].split("/", 1)) for key in self.store.list(CANCEL_REQUESTS)}

    # ---- status -------------------------------------------------------------

    async def running_state(self, render_id: str, desc) -> str:
        """A running render's status: CANCELLED once a cancel was asked through this API,
        else IN_QUEUE or IN_PROGRESS from its stage attribute (visibility.running_state, the
        same rule the dashboard's list and counts use)."""
        if await asyncio.to_thread(self.cancel_requested, render_id, desc.run_id):
            return CANCELLED
        return vis.running_state(desc.typed_search_attributes.get(vis.STAGE_KEY))

    async def status_body(self, render_id: str, desc) -> dict:
        """RunPod's /status body for the run `desc` describes.

        delayTime is the time from submission until a GPU began the render's first window
        (the `gpu_started_at` the workflow records in its memo), fixed from then on;
        executionTime the time since, growing until the render ends, then final. Until a GPU
        began, delayTime grows and executionTime is 0."""
        status = CLOSED.get(desc.status)
        now = datetime.now(timezone.utc)
        memo = await desc.memo()
        said = memo.get("warnings", [])  # what the submission said
        body: dict = {"id": render_id}
        end = desc.close_time or now
        if status is None:  # running
            status = await self.running_state(render_id, desc)
            p = await self._progress(render_id)
            if p is not None:
                body["output"] = progress_output(p)
            body["warnings"] = _merged(said, p.warnings if p is not None else [])
            if status == CANCELLED:
                body["output"] = {**await asyncio.to_thread(renders.cancelled_output, self.store, render_id),
                                  **({"windows": p.windows_total, "windows_finished": p.windows_finished}
                                     if p is not None else {})}
            body.update(status=status, **_timing(desc.start_time, end, memo.get("gpu_started_at")))
            return _ordered(body)
        body.update(status=status, warnings=said, **_timing(desc.start_time, end, memo.get("gpu_started_at")))
        handle = self.client.get_workflow_handle_for(RenderVideo.run, render_id, run_id=desc.run_id)
        if status == COMPLETED:
            out = self._outputs.get(desc.run_id)
            if out is None:
                result: RenderResult = await handle.result(follow_runs=False)
                out = await asyncio.to_thread(renders.result_output, result, self.settings, self.store)
                self._outputs[desc.run_id] = out
                while len(self._outputs) > 4:
                    self._outputs.popitem(last=False)
            body["output"] = out
            body["warnings"] = _merged(said, out.get("warnings"))
            queued = out.get("queued_s")
            if "gpu_started_at" not in memo and queued is not None:  # a run of an older release
                total_s = (end - desc.start_time).total_seconds()
                body.update(delayTime=_ms(queued), executionTime=_ms(max(0.0, total_s - queued)))
        elif status == FAILED:
            try:
                await handle.result(follow_runs=False)
                body["error"] = "render failed"
            except WorkflowFailureError as exc:
                body["error"] = renders.failure_message(exc)
        elif status == CANCELLED:
            body["output"] = await asyncio.to_thread(renders.cancelled_output, self.store, render_id)
            if desc.status == WorkflowExecutionStatus.TERMINATED:
                body["error"] = "render was terminated"
        else:  # TIMED_OUT
            limit = memo.get("execution_timeout_s")
            body["error"] = (f"policy.executionTimeout: the render ran past {limit} s" if limit
                             else "the render ran past its execution timeout")
        return _ordered(body)

    async def wait(self, render_id: str, run_id: str | None, seconds: float) -> None:
        """Until the render ends or `seconds` pass."""
        handle = self.client.get_workflow_handle(render_id, run_id=run_id)
        task = asyncio.ensure_future(handle.result(follow_runs=False))
        try:
            await asyncio.wait_for(asyncio.shield(task), seconds)
        except BaseException:  # timeout, failure, cancel: the caller reads the status
            pass
        finally:
            if not task.done():
                task.cancel()

    # ---- retry, purge, health ----------------------------------------------

    async def retry(self, render_id: str, desc, owner: str):
        """Start a FAILED or TIMED_OUT render again under its id, with its first request:
        every window already stored is found and kept."""
        history = await self.client.get_workflow_handle(render_id, run_id=desc.run_id).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        request = self.client.data_converter.payload_converter.from_payloads(
            started.input.payloads, [RenderRequest])[0]
        memo = await desc.memo()
        owner = desc.typed_search_attributes.get(OWNER_KEY) or owner  # an admin's retry keeps the owner
        retries = (desc.typed_search_attributes.get(RETRIES_KEY) or 0) + 1
        timeout = memo.get("execution_timeout_s")
        return await start_render(self.client, self.settings, request,
                                   execution_timeout=timedelta(seconds=timeout) if timeout else None,
                                   search_attributes=attributes(owner, retries), memo=memo)

    def _query(self, owner: str | None, status: str | None = None) -> str:
        q = "WorkflowType = 'RenderVideo'"
        if owner is not None:
            q += f" AND {OWNER} = '{owner}'"
        if status:
            q += f" AND ExecutionStatus = '{status}'"
        return q

    async def _running_ids(self, owner: str | None, where: str = "") -> list[str]:
        return [w.id async for w in self.client.list_workflows(self._query(owner, "Running") + where)]

    async def purge_queue(self, owner: str, answer_within_s: float = PURGE_ANSWER_S) -> int:
        """Cancel the owner's renders that no GPU has started on, found by their stage in the
        visibility listing itself; one in stage render with no window done yet is checked on
        the server first (its first window may be on a GPU right now). Answers with the count
        after at most `answer_within_s` (RunPod's SDK waits 3 s); cancel requests still being
        sent then go on in this process (a long queue takes a while on a small server)."""
        gate = asyncio.Semaphore(32)

        async def one(rid: str, run_id: str | None, stage: str | None) -> int:
            async with gate:
                try:
                    await self.client.get_workflow_handle(rid, run_id=run_id).cancel()
                    return 1
                except RPCError:
                    return 0

        listed = [(w.id, w.run_id, w.typed_search_attributes.get(vis.STAGE_KEY))
                  async for w in self.client.list_workflows(self._query(owner, "Running") + " AND " + QUEUED_WHERE)]
        sure = sum(1 for _, _, stage in listed if stage in vis.QUEUED_STAGES)
        work = asyncio.ensure_future(asyncio.gather(*(one(*item) for item in listed)))
        self._purges.add(work)
        work.add_done_callback(self._purges.discard)
        try:
            return sum(await asyncio.wait_for(asyncio.shield(work), answer_within_s))
        except asyncio.TimeoutError:
            # still sending: renders in a queued stage are cancelled for certain, those in
            # stage render are counted once checked
            return sure

    async def health(self, owner: str | None) -> dict:
        """Counts from visibility queries alone (stage and windows are search attributes):
        queued = running renders still in ingest/plan or with no window finished yet;
        the GPU workers from the fleet registry (Temporal's pollers for workers without one)."""
        async def count(q: str) -> int:
            return (await self.client.count_workflows(q)).count

        completed, failed, timed_out, retried, running, queued, fleet = await asyncio.gather(
            count(self._query(owner, "Completed")), count(self._query(owner, "Failed")),
            count(self._query(owner, "TimedOut")), count(self._query(owner) + f" AND {vis.RETRIES} > 0"),
            count(self._query(owner, "Running")), count(self._query(owner, "Running") + " AND " + QUEUED_WHERE),
            self._fleet())
        ready, busy, unhealthy = fleet
        return {
            "jobs": {"completed": completed, "failed": failed + timed_out, "inProgress": running - queued,
                     "inQueue": queued, "retried": retried},
            "workers": {"idle": max(ready - busy, 0), "running": busy, "initializing": 0, "ready": ready,
                        "throttled": 0, "unhealthy": unhealthy},
        }

    async def _fleet(self) -> tuple[int, int, int]:
        """(ready, running, unhealthy) GPU workers."""
        records = await asyncio.to_thread(read_fleet, self.store)
        if not records:
            ready = await self._gpu_workers()
            return ready, 0, 0
        healthy = [r for r in records if r["healthy"]]
        return len(healthy), sum(1 for r in healthy if r.get("current")), len(records) - len(healthy)

    async def _gpu_workers(self) -> int:
        """GPU workers that polled the GPU queue lately (Temporal's poller list)."""
        from temporalio.api.enums.v1 import TaskQueueType
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

        try:
            resp = await self.client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
                namespace=self.client.namespace, task_queue=TaskQueue(name=self.settings.gpu_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY))
        except RPCError:
            return 0
        cutoff = time.time() - 120
        return len({p.identity for p in resp.pollers if p.last_access_time.seconds >= cutoff})
