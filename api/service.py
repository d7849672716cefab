"""What the routes do, apart from HTTP: a render's RunPod status, its owner, waiting, retrying,
purging and the endpoint's health. Also used by the webhook activities (the same body)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import OrderedDict
from datetime import datetime, timedelta, timezone

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from longtalk import renders
from longtalk.inputs import start_render
from longtalk.payloads import Progress, RenderRequest, RenderResult
from longtalk.settings import Settings
from longtalk.store import ObjectStore
from longtalk import visibility as vis
from longtalk.fleet import read_fleet
from longtalk.visibility import OWNER, OWNER_KEY, RETRIES_KEY
from workflows.purge import TIME_FORMAT, PurgeInput, PurgeQueue, purge_workflow_id
from workflows.render import RenderVideo, chain_workflow_id

IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED, TIMED_OUT = (
    "IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
TERMINAL = (COMPLETED, FAILED, CANCELLED, TIMED_OUT)
CLOSED = {
    WorkflowExecutionStatus.COMPLETED: COMPLETED,
    WorkflowExecutionStatus.FAILED: FAILED,
    WorkflowExecutionStatus.CANCELED: CANCELLED,
    WorkflowExecutionStatus.TERMINATED: CANCELLED,
    WorkflowExecutionStatus.TIMED_OUT: TIMED_OUT,
}
QUERY_TIMEOUT = timedelta(seconds=5)
# a running render no GPU has finished a window of (renders of older releases carry no stage):
# one in a queued stage for certain, one in stage render unless its first window is on a GPU
IN_QUEUED_STAGE = f"{vis.STAGE} IN ({', '.join(repr(s) for s in vis.QUEUED_STAGES)})"
NO_WINDOW_YET = f"({vis.STAGE} = 'render' AND {vis.WINDOWS_DONE} = 0)"
QUEUED_WHERE = f"({IN_QUEUED_STAGE} OR {NO_WINDOW_YET})"
PURGE_TIMEOUT = timedelta(days=7)  # a PurgeQueue no API worker ran by then is dropped
PURGE_CHECK_S = 0.5  # /purge-queue checks renders in stage render on the server this long at most


class NotFound(Exception):
    pass


def attributes(owner: str, retries: int = 0) -> TypedSearchAttributes:
    return TypedSearchAttributes([SearchAttributePair(OWNER_KEY, owner), SearchAttributePair(RETRIES_KEY, retries)])


def progress_output(p: Progress) -> dict:
    out = dataclasses.asdict(p)
    out.pop("windows_finished", None)  # can be long; windows_done says as much
    return out


def _ms(seconds: float) -> int:
    return max(0, int(round(seconds * 1000)))


class Renders:
    """The API's view of renders: Temporal for state, the bucket for outputs."""

    def __init__(self, client: Client, settings: Settings, store: ObjectStore) -> None:
        self.client, self.settings, self.store = client, settings, store
        self._outputs: OrderedDict[str, dict] = OrderedDict()  # run id -> COMPLETED output (a few)

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

    async def gpu_started(self, render_id: str) -> bool:
        """Whether the render's first chain has a window on a GPU right now."""
        try:
            desc = await self.client.get_workflow_handle(chain_workflow_id(render_id, 0)).describe()
        except RPCError:
            return False
        return any(a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                   for a in desc.raw_description.pending_activities)

    async def running_state(self, render_id: str, desc=None) -> tuple[str, Progress | None]:
        """IN_QUEUE until a GPU started on the render (queued, ingest and plan are queue time
        too). Decided from the server's description where it can (no worker involved: the
        render's worker may be busy); the progress query only once windows may be rendering."""
        if desc is None:
            desc = await self.client.get_workflow_handle(render_id).describe()
        raw = desc.raw_description
        activities = {a.activity_type.name for a in raw.pending_activities}
        if not raw.pending_children:
            if activities & {"ingest", "plan"}:
                return IN_QUEUE, None
            if not activities and raw.workflow_execution_info.history_length <= 3:
                return IN_QUEUE, None  # no worker has picked it up yet
        p = await self._progress(render_id)
        if p is None or p.stage in ("queued", "ingest", "plan"):
            return IN_QUEUE, p
        if p.stage == "render" and p.windows_done == 0 and not await self.gpu_started(render_id):
            return IN_QUEUE, p
        return IN_PROGRESS, p

    async def status_body(self, render_id: str, desc) -> dict:
        """RunPod's /status body for the run `desc` describes."""
        status = CLOSED.get(desc.status)
        now = datetime.now(timezone.utc)
        body: dict = {"id": render_id}
        if status is None:  # running
            status, p = await self.running_state(render_id, desc)
            waited = (now - desc.start_time).total_seconds()
            elapsed = p.elapsed_s if p is not None else 0.0
            body.update(status=status, delayTime=_ms(waited - elapsed), executionTime=_ms(elapsed))
            if p is not None:
                body["output"] = progress_output(p)
            return body
        total_s = ((desc.close_time or now) - desc.start_time).total_seconds()
        body.update(status=status, delayTime=0, executionTime=_ms(total_s))
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
            queued = out.get("queued_s")
            if queued is not None:  # renders of this release say when the first GPU began
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
            memo = await desc.memo()
            limit = memo.get("execution_timeout_s")
            body["error"] = (f"policy.executionTimeout: the render ran past {limit} s" if limit
                             else "the render ran past its execution timeout")
        return body

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

    def queued_query(self, owner: str | None, started_before: str | None = None) -> str:
        """The owner's running renders no GPU has finished a window of (started at or before
        `started_before`, RFC 3339, if given)."""
        q = self._query(owner, "Running") + " AND " + QUEUED_WHERE
        return q + f" AND StartTime <= '{started_before}'" if started_before else q

    async def cancel_if_queued(self, w) -> int:
        """Cancel the listed render `w` (a WorkflowExecution) unless its first window is on a
        GPU: 1 if a cancel was requested."""
        if w.typed_search_attributes.get(vis.STAGE_KEY) not in vis.QUEUED_STAGES and await self.gpu_started(w.id):
            return 0
        try:
            await self.client.get_workflow_handle(w.id, run_id=w.run_id).cancel()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:  # it ended meanwhile
                return 0
            raise  # the server: the purge's activity is retried from its last page
        return 1

    async def purge_queue(self, owner: str) -> int:
        """Hand the cancels of the owner's queued renders to Temporal (a PurgeQueue workflow,
        run by the API's worker: api/purge.py) and answer how many there are, without waiting
        for them: renders in a queued stage are counted by one visibility count; those in stage
        render with no window done yet are checked on the server (is the first window on a
        GPU?) for PURGE_CHECK_S at most, and counted as queued if not checked by then."""
        started_before = datetime.now(timezone.utc).strftime(TIME_FORMAT)
        query = self.queued_query(owner, started_before)
        sure, maybe = await asyncio.gather(
            self.client.count_workflows(query + " AND " + IN_QUEUED_STAGE),
            self._listed(query + " AND " + NO_WINDOW_YET))
        removed = sure.count + len(maybe)
        if maybe:
            gate = asyncio.Semaphore(32)

            async def on_gpu(render_id: str) -> bool:
                async with gate:
                    return await self.gpu_started(render_id)
            checks = [asyncio.ensure_future(on_gpu(w.id)) for w in maybe]
            done, pending = await asyncio.wait(checks, timeout=PURGE_CHECK_S)
            for task in pending:
                task.cancel()
            removed -= sum(1 for task in done if task.result())
        if sure.count or maybe:
            inp = PurgeInput(owner=owner, started_before=started_before)
            await self.client.start_workflow(
                PurgeQueue.run, inp, id=purge_workflow_id(inp), task_queue=self.settings.api_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING, execution_timeout=PURGE_TIMEOUT)
        return removed

    async def _listed(self, query: str) -> list:
        return [w async for w in self.client.list_workflows(query)]

    async def health(self, owner: str | None) -> dict:
        """Counts from visibility queries alone (stage and windows are search attributes):
        queued = running renders still in ingest/plan or with no window finished yet;
        the GPU workers from the fleet registry (Temporal's pollers for workers without one)."""
        async def count(q: str) -> int:
            return (await self.client.count_workflows(q)).count

        completed, failed, timed_out, retried, running, queued, fleet = await asyncio.gather(
            count(self._query(owner, "Completed")), count(self._query(owner, "Failed")),
            count(self._query(owner, "TimedOut")), count(self._query(owner) + f" AND {vis.RETRIES} > 0"),
            count(self._query(owner, "Running")), count(self.queued_query(owner)),
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
