"""What the routes do, apart from HTTP: a render's RunPod status, its owner, waiting, retrying,
purging and the endpoint's health. Also used by the webhook activities (the same body)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

from cachetools import LRUCache
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from longtalk import outcome
from longtalk.inputs import start_render
from longtalk.inputs.tags import tag_attributes
from longtalk.payloads import CANCEL_REQUESTS, Progress, RenderRequest, RenderResult, cancel_request_key, derived_keys
from longtalk.settings import Settings
from longtalk.store import ObjectStore
from longtalk import visibility as vis
from longtalk.fleet import read_fleet
from longtalk.visibility import OWNER, OWNER_KEY, RETRIES_KEY
from workflows.purge import TIME_FORMAT, PurgeInput, PurgeQueue, purge_workflow_id
from workflows.render import RenderVideo, chain_workflow_id

from longtalk.progress import WAITING, eta_s  # noqa: E402
from longtalk.visibility import IN_PROGRESS, IN_QUEUE, QUEUED_WHERE  # noqa: E402

COMPLETED, FAILED, CANCELLED, TIMED_OUT = "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"
PURGE_REQUESTS = "purge-requests/"  # <owner>/<started_before>: one per /purge-queue that removed renders


def purge_request_key(owner: str, started_before: str) -> str:
    return f"{PURGE_REQUESTS}{owner}/{started_before}"
TERMINAL = (COMPLETED, FAILED, CANCELLED, TIMED_OUT)
CLOSED = {
    WorkflowExecutionStatus.COMPLETED: COMPLETED,
    WorkflowExecutionStatus.FAILED: FAILED,
    WorkflowExecutionStatus.CANCELED: CANCELLED,
    WorkflowExecutionStatus.TERMINATED: CANCELLED,
    WorkflowExecutionStatus.TIMED_OUT: TIMED_OUT,
}
QUERY_TIMEOUT = timedelta(seconds=5)
PURGE_TIMEOUT = timedelta(days=7)  # a PurgeQueue no API worker ran by then is dropped


class NotFound(Exception):
    pass


def attributes(owner: str, retries: int = 0) -> TypedSearchAttributes:
    return TypedSearchAttributes([SearchAttributePair(OWNER_KEY, owner), SearchAttributePair(RETRIES_KEY, retries)])


def visible_progress(render_id: str, desc, gpu_started_at: str | None, now: datetime) -> dict:
    """A running render's progress as its workflow publishes it to visibility: the stage and
    the window counts (updated with each stage and about every 1% of the windows,
    visibility.progress_step), the time since it started and an ETA from the windows done
    since a GPU began. No worker is asked, so /status stays fast however busy the workers
    are; the dashboard asks the workflow for each window's detail."""
    sa = desc.typed_search_attributes
    stage = sa.get(vis.STAGE_KEY) or "queued"
    done, total = sa.get(vis.WINDOWS_DONE_KEY) or 0, sa.get(vis.WINDOWS_TOTAL_KEY) or 0
    elapsed = (now - desc.start_time).total_seconds() if desc.start_time else 0.0
    eta = None
    if stage == "render" and gpu_started_at and 0 < done < total:
        eta = eta_s((now - datetime.fromisoformat(gpu_started_at)).total_seconds(), done, total)
    return {"render_id": render_id, "stage": stage, "windows_done": done, "windows_total": total,
            "elapsed_s": round(max(0.0, elapsed), 3), "eta_s": eta}


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
        self._outputs: LRUCache[str, dict] = LRUCache(4)  # run id -> COMPLETED output (a few)

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

    async def progress(self, render_id: str, run_id: str | None = None) -> Progress | None:
        """The `progress` query of the render's run `run_id` (None: its latest run); None when
        no worker answers in QUERY_TIMEOUT."""
        try:
            return await self.client.get_workflow_handle(render_id, run_id=run_id).query(
                RenderVideo.progress, result_type=Progress, rpc_timeout=QUERY_TIMEOUT)
        except (RPCError, asyncio.TimeoutError, Exception):  # no worker has picked it up yet
            return None

    async def ingest_warnings(self, render_id: str, desc, memo: dict) -> list[str]:
        """What ingest found that the submission could not say (the framing of a URL input):
        read from the render's ingest.json once ingest is done, for runs whose memo says they
        had URL inputs (runs started before that memo entry: read whenever ingest is done)."""
        stage = desc.typed_search_attributes.get(vis.STAGE_KEY)
        if not memo.get("url_inputs", True) or stage in (None, "queued", "ingest"):
            return []
        record = await asyncio.to_thread(self.store.get_json_or_none, derived_keys(render_id)["ingest"])
        return list((record or {}).get("warnings") or [])

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
        state = vis.running_state(desc.typed_search_attributes.get(vis.STAGE_KEY))
        owner = desc.typed_search_attributes.get(OWNER_KEY)
        asked, purged = await asyncio.gather(  # two bucket reads at once, not one after the other
            asyncio.to_thread(self.cancel_requested, render_id, desc.run_id),
            asyncio.to_thread(self.purged, owner, desc.start_time) if state == IN_QUEUE else asyncio.sleep(0, False))
        return CANCELLED if asked or purged else state

    async def gpu_started(self, render_id: str) -> bool:
        """Whether the render's first chain has a window on a GPU right now (a render still
        "waiting" may have just begun: the GPU's signal takes a moment)."""
        try:
            desc = await self.client.get_workflow_handle(chain_workflow_id(render_id, 0)).describe()
        except RPCError:
            return False
        return any(a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                   for a in desc.raw_description.pending_activities)

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
        body: dict = {"id": render_id, **{k: memo[k] for k in ("name", "labels") if k in memo}}  # extensions, if given
        end = desc.close_time or now
        if status is None:  # running
            # no worker is asked: the stage and window counts the workflow publishes to
            # visibility (describe has them), what ingest found from the bucket
            status, found = await asyncio.gather(self.running_state(render_id, desc),
                                                 self.ingest_warnings(render_id, desc, memo))
            body["output"] = visible_progress(render_id, desc, memo.get("gpu_started_at"), now)
            body["warnings"] = _merged(said, found)
            if status == CANCELLED:  # rare (asked, not yet answered): the worker says which windows it kept
                p = await self.progress(render_id)
                body["output"] = {**await asyncio.to_thread(outcome.cancelled_output, self.store, render_id),
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
                out = await asyncio.to_thread(outcome.result_output, result, self.settings, self.store)
                self._outputs[desc.run_id] = out
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
                body["error"] = outcome.failure_message(exc)
        elif status == CANCELLED:
            body["output"] = await asyncio.to_thread(outcome.cancelled_output, self.store, render_id)
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
        tags = tag_attributes(memo.get("name"), memo.get("labels"))  # the job's name and labels stay
        return await start_render(self.client, self.settings, request,
                                   execution_timeout=timedelta(seconds=timeout) if timeout else None,
                                   search_attributes=TypedSearchAttributes([*attributes(owner, retries), *tags]),
                                   memo=memo)

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
        """The owner's running renders in a queued stage (IN_QUEUE; started at or before
        `started_before`, RFC 3339, if given)."""
        q = self._query(owner, "Running") + " AND " + QUEUED_WHERE
        return q + f" AND StartTime <= '{started_before}'" if started_before else q

    async def cancel_if_queued(self, w) -> int:
        """Cancel the listed render `w` (a WorkflowExecution) unless a GPU has begun its first
        window meanwhile (its stage may still say "waiting" for a moment): 1 if a cancel was
        requested."""
        if w.typed_search_attributes.get(vis.STAGE_KEY) == WAITING and await self.gpu_started(w.id):
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
        run by the API's worker: api/purge.py) and answer how many there are (one visibility
        count), without waiting for them. The purge is recorded first, so a /status of a
        render it covers reads CANCELLED from this answer on (`purged`)."""
        started_before = datetime.now(timezone.utc).strftime(TIME_FORMAT)
        removed = (await self.client.count_workflows(self.queued_query(owner, started_before))).count
        if removed:
            await asyncio.to_thread(self.store.put_json, purge_request_key(owner, started_before),
                                    {"started_before": started_before})
            inp = PurgeInput(owner=owner, started_before=started_before)
            await self.client.start_workflow(
                PurgeQueue.run, inp, id=purge_workflow_id(inp), task_queue=self.settings.api_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING, execution_timeout=PURGE_TIMEOUT)
        return removed

    def purged(self, owner: str | None, started: datetime) -> bool:
        """Whether a purge of `owner`'s queue covers a render started then (it is cancelled,
        or will be within moments)."""
        if owner is None:
            return False
        for key in self.store.list(f"{PURGE_REQUESTS}{owner}/"):
            cutoff = datetime.strptime(key.rsplit("/", 1)[1], TIME_FORMAT).replace(tzinfo=timezone.utc)
            if started <= cutoff and datetime.now(timezone.utc) - cutoff < PURGE_TIMEOUT:
                return True
        return False

    async def _listed(self, query: str) -> list:
        return [w async for w in self.client.list_workflows(query)]

    async def health(self, owner: str | None) -> dict:
        """Counts from visibility queries alone (stage and windows are search attributes), by
        the rule /status uses: queued = running renders in a queued stage; a render being
        cancelled (asked through this API, covered by a purge, or in stage cancelled while it
        records what it kept) counts in neither. The GPU workers from the fleet registry
        (Temporal's pollers for workers without one)."""
        async def count(q: str) -> int:
            return (await self.client.count_workflows(q)).count

        running_q = self._query(owner, "Running")
        cutoff = await asyncio.to_thread(self._last_purge, owner)
        completed, failed, timed_out, retried, running, queued, stopping, purged, fleet, asked = await asyncio.gather(
            count(self._query(owner, "Completed")), count(self._query(owner, "Failed")),
            count(self._query(owner, "TimedOut")), count(self._query(owner) + f" AND {vis.RETRIES} > 0"),
            count(running_q), count(self.queued_query(owner)), count(running_q + f" AND {vis.STAGE} = 'cancelled'"),
            count(self.queued_query(owner, cutoff)) if cutoff else asyncio.sleep(0, 0),
            self._fleet(), self._cancels_asked(owner))
        asked_queued, asked_running = asked
        ready, busy, unhealthy = fleet
        return {
            "jobs": {"completed": completed, "failed": failed + timed_out,
                     "inProgress": max(0, running - queued - stopping - asked_running),
                     "inQueue": max(0, queued - purged - asked_queued), "retried": retried},
            "workers": {"idle": max(ready - busy, 0), "running": busy, "initializing": 0, "ready": ready,
                        "throttled": 0, "unhealthy": unhealthy},
        }

    def _last_purge(self, owner: str | None) -> str | None:
        """The latest cutoff of a live purge of `owner`'s queue (TIME_FORMAT), if any."""
        if owner is None:
            return None
        cutoffs = [key.rsplit("/", 1)[1] for key in self.store.list(f"{PURGE_REQUESTS}{owner}/")]
        return max(cutoffs) if cutoffs else None

    async def _cancels_asked(self, owner: str | None) -> tuple[int, int]:
        """(queued, in progress) of the still-running renders a cancel was asked for through
        this API (their workflow has not taken it yet): few, each described."""
        queued = in_progress = 0
        for render_id, run_id in await asyncio.to_thread(self.cancels_pending):
            try:
                desc = await self.client.get_workflow_handle(render_id, run_id=run_id).describe()
            except RPCError:
                continue
            if desc.close_time is not None or desc.workflow_type != "RenderVideo":
                continue
            if owner is not None and desc.typed_search_attributes.get(OWNER_KEY) != owner:
                continue
            stage = desc.typed_search_attributes.get(vis.STAGE_KEY)
            if stage == "cancelled":
                continue  # counted by stage already
            if vis.running_state(stage) == IN_QUEUE:
                queued += 1
            else:
                in_progress += 1
        return queued, in_progress

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
