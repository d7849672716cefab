"""The dashboard's read model: what its JSON routes answer, from Temporal visibility (lists,
counts), the render's `progress` query and its bucket (plan, parameters, objects).

Lists and counts come from Temporal visibility only (the search attributes of
longtalk.visibility), never from listing the bucket; a key sees its own renders, a key named
in LONGTALK_API_ADMIN_NAMES sees all. Attributes a render does not carry (yet) read as
unknown ("—") rather than failing. What never changes once written (plan.json, request.json,
a closed run's page, a failed run's error) is kept in small LRU caches (cachetools).
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timedelta, timezone

from cachetools import LRUCache
from temporalio.api.enums.v1 import PendingActivityState, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, TimeoutError as TemporalTimeout
from temporalio.service import RPCError

from longtalk import outcome as render_texts
from longtalk.errors import HttpError
from longtalk.fleet import read_fleet
from longtalk.payloads import Progress, derived_keys, output_key
from longtalk.progress import eta_s
from longtalk.settings import Settings
from longtalk.visibility import (
    BACKEND_KEY, BASE, BASE_KEY, CANCELLED, IN_QUEUE, LABELS, LABELS_KEY, MODE_KEY, NAME, NAME_KEY, OWNER, OWNER_KEY,
    QUEUED_STAGES, QUEUED_WHERE, STAGE,
    STAGE_KEY, WINDOWS_DONE_KEY, WINDOWS_TOTAL_KEY, running_state,
)
from workflows.render import chain_index

from .. import hls
from ..service import NotFound, Renders
from .sessions import Access, b64, unb64

PAGE_SIZE = 50

# the status filter of the renders page -> a visibility clause ("queued" and "running" split the
# running executions by stage, the rule of longtalk.visibility.running_state that /status uses)
STATUS_FILTERS = {
    "queued": f"ExecutionStatus = 'Running' AND {QUEUED_WHERE}",
    "running": f"ExecutionStatus = 'Running' AND {STAGE} NOT IN ({', '.join(repr(s) for s in QUEUED_STAGES)})",
    "completed": "ExecutionStatus = 'Completed'",
    "failed": "ExecutionStatus = 'Failed'",
    "cancelled": "(ExecutionStatus = 'Canceled' OR ExecutionStatus = 'Terminated')",
    "timed_out": "ExecutionStatus = 'TimedOut'",
}
CLOSED_STATUS = {
    WorkflowExecutionStatus.COMPLETED: "completed", WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.CANCELED: "cancelled", WorkflowExecutionStatus.TERMINATED: "cancelled",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out", WorkflowExecutionStatus.CONTINUED_AS_NEW: "running",
}
# the list's search: the beginning of a render id (UUIDs, <id>.v<n> re-renders, t-... in tests) or
# of a job's name, or one of its labels; no quote or backslash (it goes into a visibility query)
SEARCH = re.compile(r"""^[^'"\\\x00-\x1f]{1,80}$""")
SEARCH_ID = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(timezone.utc).isoformat() if t else None


NEWEST_SPANS = (timedelta(hours=1), timedelta(days=1), timedelta(days=7), timedelta(days=31), None)


def _vis_time(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _token(w) -> str:
    return b64(json.dumps([_iso(w.start_time), w.id]).encode())


def _after(token: str | None) -> tuple | None:
    """(start time, id) of the last row of the page before, from its token."""
    if not token:
        return None
    try:
        start, rid = json.loads(unb64(token))
        return datetime.fromisoformat(start), rid
    except (ValueError, TypeError):
        return None


def _running_status(stage: str | None, cancelling: bool) -> str:
    """The dashboard's name for a running render's state: what /status says, lower case."""
    state = CANCELLED if cancelling else running_state(stage)
    return {IN_QUEUE: "queued", CANCELLED: "cancelled"}.get(state, "running")


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def work_left_text(windows: int, renders: int, unplanned: int = 0) -> str:
    """The fleet page's words for the waiting work: "31 windows left in 2 renders"."""
    if not renders:
        return "0 windows left: no render running"
    text = f"{plural(windows, 'window')} left in {plural(renders, 'render')}"
    if unplanned:
        text += f" ({unplanned} not planned yet)" if renders > 1 else " (not planned yet)"
    return text


class ReadModel:
    """What the dashboard's JSON routes answer, for the key name `name` each method is given."""

    def __init__(self, settings: Settings, access: Access) -> None:
        self.settings, self.access = settings, access
        self.renders: Renders | None = None  # set when the app starts (its lifespan connects)
        ids = [e.strip() for e in settings.api_endpoint_ids.split(",") if e.strip()]
        self.endpoint = ids[0] if ids else "dashboard"
        self.closed: LRUCache[str, dict] = LRUCache(512)  # closed run id -> what never changes again
        self._plans: LRUCache[str, dict] = LRUCache(256)  # render id -> plan.json
        self._quality: LRUCache[str, dict] = LRUCache(256)  # render id -> quality.json's summary
        self._failures: LRUCache[str, dict] = LRUCache(256)  # failed run id -> error
        self._seen: LRUCache[str, set[str]] = LRUCache(1024)  # render id -> its object keys known to exist
        self._requests: LRUCache[str, dict] = LRUCache(1024)  # render id -> request.json params

    @property
    def client(self):
        return self.renders.client

    @property
    def store(self):
        return self.renders.store

    def _query(self, owner: str | None, status: str = "", q: str = "") -> str:
        parts = ["WorkflowType = 'RenderVideo'"]
        if owner is not None:
            parts.append(f"{OWNER} = '{owner}'")  # key names are [A-Za-z0-9._-]: no quoting issue
        if status:
            parts.append(STATUS_FILTERS[status])
        if q:  # an id or a name by its beginning, or a label
            parts.append(f"(WorkflowId STARTS_WITH '{q}' OR {NAME} STARTS_WITH '{q}' OR {LABELS} = '{q}')")
        return " AND ".join(parts)

    def _row(self, w, cancelling: set[tuple[str, str]], memo: dict) -> dict:
        """A list row from a visibility record: search attributes only, no worker asked."""
        sa = w.typed_search_attributes
        stage = sa.get(STAGE_KEY)
        done, total = sa.get(WINDOWS_DONE_KEY), sa.get(WINDOWS_TOTAL_KEY)
        now = datetime.now(timezone.utc)
        end = w.close_time or now
        elapsed = (end - w.start_time).total_seconds() if w.start_time else None
        if w.status == WorkflowExecutionStatus.RUNNING:
            status = _running_status(stage, (w.id, w.run_id) in cancelling)
        else:
            status = CLOSED_STATUS.get(w.status, "unknown")
            stage = stage or {"completed": "done", "failed": "failed", "cancelled": "cancelled",
                              "timed_out": "failed"}.get(status)
        eta = None
        if status == "running" and done and total and elapsed:
            began = memo.get("gpu_started_at")  # the rate since a GPU began, as /status gives it
            eta = eta_s((now - datetime.fromisoformat(began)).total_seconds() if began else elapsed, done, total)
        thumb = None
        if done or status == "completed":  # the count in the URL: a new picture as windows finish
            thumb = f"/dashboard/api/renders/{w.id}/thumb?done={done or 0}"
        return {"id": w.id, "owner": sa.get(OWNER_KEY), "mode": sa.get(MODE_KEY), "backend": sa.get(BACKEND_KEY),
                "base": sa.get(BASE_KEY) or None, "status": status, "stage": stage, "windows_done": done,
                "windows_total": total, "eta_s": eta, "started": _iso(w.start_time),
                "closed": _iso(w.close_time), "elapsed_s": elapsed, "thumb": thumb,
                "name": sa.get(NAME_KEY), "labels": sa.get(LABELS_KEY) or [], "prompt": memo.get("prompt")}

    async def list_renders(self, name: str, status: str, q: str, token: str | None, limit: int) -> dict:
        """The newest `limit` renders by start time (stable: a render keeps its place when it
        ends), `token` continuing after the last row of an earlier page."""
        owner = self.access.scope(name)
        query = self._query(owner, status, q)
        (found, more), counts, cancelling = await asyncio.gather(
            self._newest(query, limit, _after(token)), self._counts(owner, q),
            asyncio.to_thread(self.renders.cancels_pending))
        memos = await asyncio.gather(*(w.memo() for w in found))
        rows = [self._row(w, cancelling, memo) for w, memo in zip(found, memos)]
        nxt = _token(found[-1]) if more and found else None
        return {"renders": rows, "next_page_token": nxt, "counts": counts,
                "viewer": name, "admin": self.access.is_admin(name)}

    async def _newest(self, query: str, limit: int, after: tuple | None) -> tuple[list, bool]:
        """Visibility lists running executions first, then by close time, and SQL visibility
        takes no ORDER BY: so the newest by start time are found in growing windows of start
        time (an hour, a day, ...) and sorted here. Returns (rows, whether more exist)."""
        before = after[0] if after else None
        now = datetime.now(timezone.utc)
        for span in NEWEST_SPANS:
            clause = []
            if span is not None:
                clause.append(f"StartTime >= '{_vis_time((before or now) - span)}'")
            if before is not None:
                clause.append(f"StartTime <= '{_vis_time(before)}'")
            rows = [w async for w in self.client.list_workflows(" AND ".join([query, *clause]))]
            rows.sort(key=lambda w: (w.start_time, w.id), reverse=True)
            if after is not None:
                rows = [w for w in rows if (w.start_time, w.id) < after]
            if len(rows) > limit or span is None:
                return rows[:limit], len(rows) > limit
        return [], False

    async def _counts(self, owner: str | None, q: str) -> dict:
        """Renders per status filter: one GROUP BY count, and the queued among the running."""
        by = {"queued": 0, "running": 0, "completed": 0, "failed": 0, "cancelled": 0, "timed_out": 0}
        try:
            res, queued = await asyncio.gather(
                self.client.count_workflows(self._query(owner, "", q) + " GROUP BY ExecutionStatus"),
                self.client.count_workflows(self._query(owner, "queued", q)))
        except RPCError:  # a visibility store without GROUP BY: one count per status
            counts = await asyncio.gather(*(self.client.count_workflows(self._query(owner, s, q)) for s in by))
            by.update({s: c.count for s, c in zip(list(by), counts)})
            by["all"] = sum(by.values())
            return by
        by["running"] = -queued.count  # the running executions that are queued count as queued
        by["queued"] = queued.count
        for g in res.groups:
            value = g.group_values[0] if g.group_values else ""
            key = {"Running": "running", "Completed": "completed", "Failed": "failed", "Canceled": "cancelled",
                   "Terminated": "cancelled", "TimedOut": "timed_out"}.get(str(value))
            if key:
                by[key] += g.count
        by["all"] = res.count
        return by

    # ---- one render ------------------------------------------------------------------

    async def describe(self, render_id: str, name: str):
        try:
            return await self.renders.describe(render_id, self.access.scope(name))
        except NotFound:
            raise HttpError(404, f"render {render_id} not found") from None

    def plan(self, render_id: str) -> dict | None:
        """plan.json (fps, windows, each window's frames): written once, so cached once there."""
        plan = self._plans.get(render_id)
        if plan is None:
            plan = self.store.get_json_or_none(derived_keys(render_id)["plan"])
            if plan is not None:
                self._plans[render_id] = plan
        return plan

    def quality(self, render_id: str) -> dict | None:
        """The quality guard's summary of a stitched render (its quality.json): written once, so
        cached once there."""
        summary = self._quality.get(render_id)
        if summary is None:
            doc = self.store.get_json_or_none(derived_keys(render_id)["quality"])
            if doc is None:
                return None
            summary = self._quality[render_id] = doc.get("summary") or {}
        return summary

    def usage(self, render_id: str) -> dict | None:
        """What a finished render used (its manifest's usage.actual: GPU seconds and cost per
        GPU kind; RunPod's billed seconds over every job, and their bound)."""
        manifest = self.store.get_json_or_none(derived_keys(render_id)["manifest"]) or {}
        return (manifest.get("usage") or {}).get("actual")

    async def progress(self, render_id: str, run_id: str) -> Progress | None:
        """The run's `progress` query; None without a worker to answer (yet): the page shows
        what visibility knows."""
        return await self.renders.progress(render_id, run_id)

    async def _failure(self, render_id: str, run_id: str) -> dict:
        """The classified error of a failed run: type, field (input errors), the activity
        that failed, the chain it failed in, and the innermost message."""
        if run_id in self._failures:
            return self._failures[run_id]
        handle = self.client.get_workflow_handle(render_id, run_id=run_id)
        err = {"type": "WorkflowFailure", "field": None, "activity": None, "chain": None, "window": None,
               "message": "render failed"}
        try:
            await handle.result(follow_runs=False)
        except WorkflowFailureError as exc:
            err["message"] = render_texts.failure_message(exc)
            cause = exc.cause
            while cause is not None:
                if isinstance(cause, ChildWorkflowError):
                    err["chain"] = chain_index(cause.workflow_id or "")
                elif isinstance(cause, ActivityError):
                    err["activity"] = cause.activity_type
                elif isinstance(cause, ApplicationError):
                    err["type"] = cause.type or "ApplicationError"
                    details = cause.details[0] if cause.details else None
                    if isinstance(details, dict) and details.get("field"):
                        err["field"] = details["field"]
                elif isinstance(cause, TemporalTimeout):
                    err["type"] = "ActivityTimeout"
                cause = cause.cause
        except Exception as exc:  # not failed after all, or history unreadable
            err["message"] = str(exc) or err["message"]
        self._failures[run_id] = err
        return err

    def _objects(self, render_id: str) -> dict:
        """Presigned links to the render's objects that exist. An object, once written, stays
        (the page polls): only the missing ones are looked for again."""
        keys = derived_keys(render_id)
        seen = self._seen.get(render_id) or set()
        self._seen[render_id] = seen
        out = {}
        for name, key in (("output.mp4", output_key(render_id)), ("manifest.json", keys["manifest"]),
                          ("plan.json", keys["plan"]), ("request.json", keys["request"])):
            if key in seen or self.store.exists(key):
                seen.add(key)
                out[name] = self.store.presign(key, self.settings.presign_expiry_s)
        return out

    def _params(self, render_id: str) -> dict:
        """The job's parameters (request.json, written before the render starts: cached)."""
        if render_id not in self._requests:
            request = self.store.get_json_or_none(derived_keys(render_id)["request"])
            if request is None:
                return {}
            self._requests[render_id] = request.get("params", {})
        return self._requests[render_id]

    async def render_detail(self, render_id: str, name: str) -> dict:
        desc = await self.describe(render_id, name)
        sa = desc.typed_search_attributes
        running = desc.status == WorkflowExecutionStatus.RUNNING
        cached = None if running else self.closed.get(desc.run_id)
        if cached is not None:  # a closed run does not change; re-renders of it may appear
            return {**cached, "versions": await self._versions(render_id, name)}
        p = await self.progress(render_id, desc.run_id)
        plan = await asyncio.to_thread(self.plan, render_id)
        now = datetime.now(timezone.utc)
        stage = getattr(p, "stage", None) or sa.get(STAGE_KEY)
        cancelling = running and await asyncio.to_thread(
            self.renders.cancel_requested, render_id, desc.run_id)
        if running:  # the rule /status uses, on the same attribute
            status = _running_status(sa.get(STAGE_KEY), cancelling)
        else:
            status = CLOSED_STATUS.get(desc.status, "unknown")
        total = (p.windows_total if p and p.windows_total else None) or sa.get(WINDOWS_TOTAL_KEY) or \
            (plan or {}).get("windows") or 0
        finished = set(p.windows_finished) if p else set()
        if not p and status == "completed":
            finished = set(range(total))
        details = {d.index: d for d in getattr(p, "windows_detail", None) or []}
        rendering = set(getattr(p, "rendering", None) or [])
        if running and not rendering and p and p.current_window is not None and stage == "render":
            rendering = {p.current_window}
        error = None
        if status == "failed":
            error = await self._failure(render_id, desc.run_id)
            if error["activity"] == "render_window" and plan:
                chains = plan.get("chains") or [{"index": 0, "first": 0, "last": total - 1}]
                chain = next((c for c in chains if c["index"] == (error["chain"] or 0)), None)
                if chain:
                    missing = [k for k in range(chain["first"], chain["last"] + 1) if k not in finished]
                    error["window"] = missing[0] if missing else None
        elif status == "timed_out":
            memo = await desc.memo()
            limit = memo.get("execution_timeout_s")
            error = {"type": "ExecutionTimeout", "field": "policy.executionTimeout" if limit else None,
                     "window": None, "activity": None, "chain": None,
                     "message": f"the render ran past its execution timeout{f' of {limit} s' if limit else ''}"}
        states = []
        for k in range(total):
            d = details.get(k)
            if k in finished:
                states.append("t" if d is not None and getattr(d, "attempt", 0) > 1 else "d")
            elif error and error.get("window") == k:
                states.append("f")
            elif k in rendering:
                states.append("r")
            else:
                states.append("w")
        fps = (plan or {}).get("fps") or self.settings.fps
        prefix = hls.finished_prefix(finished, total)
        video = None
        if status == "completed":
            key = output_key(render_id)
            video = {"url": self.store.presign(key, self.settings.presign_expiry_s),
                     "download_url": await asyncio.to_thread(self._presign_download, key, render_id)}
        done = len(finished) if p else (sa.get(WINDOWS_DONE_KEY) or (total if status == "completed" else 0))
        elapsed = ((desc.close_time or now) - desc.start_time).total_seconds()
        base = sa.get(BASE_KEY) or None
        ns = self.client.namespace
        out = {
            "id": render_id, "run_id": desc.run_id, "owner": sa.get(OWNER_KEY), "mode": sa.get(MODE_KEY),
            "backend": sa.get(BACKEND_KEY), "base": base, "status": status, "stage": stage or
            {"completed": "done", "cancelled": "cancelled", "failed": "failed"}.get(status),
            "started": _iso(desc.start_time), "closed": _iso(desc.close_time), "elapsed_s": elapsed,
            "eta_s": p.eta_s if p and running else (0 if status == "completed" else None),
            "windows_total": total, "windows_done": done, "states": "".join(states),
            "chains": getattr(p, "chains", None) or [[c["first"], c["last"]] for c in (plan or {}).get("chains", [])],
            "fps": fps, "frames_total": (plan or {}).get("total_frames"),
            "hls": {"url": f"/dashboard/api/renders/{render_id}/hls/index.m3u8", "segments": prefix,
                    "ended": (not running) or (total > 0 and prefix == total)},
            "thumb": f"/dashboard/api/renders/{render_id}/thumb" if finished else None,
            "video": video, "error": error,
            # the quality guard's summary: the strip marks re-rendered, flagged and re-anchored windows
            "quality": await asyncio.to_thread(self.quality, render_id) if status == "completed" else None,
            "usage": await asyncio.to_thread(self.usage, render_id) if status == "completed" else None,
            "links": {"temporal": f"{self.settings.temporal_ui_url}/namespaces/{ns}/workflows/{render_id}",
                      "objects": await asyncio.to_thread(self._objects, render_id)},
            "params": await asyncio.to_thread(self._params, render_id),
            "actions": {"cancel": running and not cancelling, "retry": status in ("failed", "timed_out"),
                        "resume": not running and status == "cancelled",
                        "rerender": status == "completed"},
            "endpoint": self.endpoint, "versions": await self._versions(render_id, name),
        }
        memo = await desc.memo()
        out.update(name=memo.get("name"), labels=memo.get("labels") or [])
        if not running and (p is not None or status == "completed"):
            self.closed[desc.run_id] = out
        return out

    def _presign_download(self, key: str, render_id: str) -> str:
        try:
            return self.store.public_client.presigned_get_object(
                self.store.bucket, key, expires=timedelta(seconds=self.settings.presign_expiry_s),
                response_headers={"response-content-disposition": f'attachment; filename="{render_id}.mp4"'})
        except Exception:
            return self.store.presign(key, self.settings.presign_expiry_s)

    async def _versions(self, render_id: str, name: str) -> list[dict]:
        """Re-renders derived from this render (their LongtalkBase is its id), newest first."""
        if not SEARCH_ID.match(render_id):  # it goes into a query: ids of other shapes have no versions
            return []
        query = self._query(self.access.scope(name)) + f" AND {BASE} = '{render_id}'"
        try:
            return [{"id": w.id, "status": CLOSED_STATUS.get(w.status, "running"), "started": _iso(w.start_time)}
                    async for w in self.client.list_workflows(query, limit=20)]
        except RPCError:
            return []

    # ---- fleet -----------------------------------------------------------------------

    async def queue_depth(self) -> dict:
        """Windows waiting on the GPU queue: Temporal's backlog count of the activity queue;
        where the server gives no stats, the running chains whose window is scheduled but not
        started."""
        try:
            resp = await self.client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
                namespace=self.client.namespace, task_queue=TaskQueue(name=self.settings.gpu_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY, report_stats=True))
            if resp.HasField("stats"):
                return {"waiting": int(resp.stats.approximate_backlog_count), "source": "task queue stats",
                        "pollers": len(resp.pollers)}
        except RPCError:
            pass
        waiting = 0
        async for w in self.client.list_workflows("WorkflowType = 'RenderChain' AND ExecutionStatus = 'Running'",
                                                  limit=500):
            try:
                d = await self.client.get_workflow_handle(w.id).describe()
            except RPCError:
                continue
            waiting += sum(1 for a in d.raw_description.pending_activities
                           if a.state == PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED)
        return {"waiting": waiting, "source": "scheduled windows of running chains", "pollers": None}

    async def work_left(self) -> dict:
        """The windows not finished yet in the running renders (every owner's: the GPUs are
        shared), from their visibility attributes; a render not planned yet counts as a render
        whose windows are not known."""
        windows = renders = unplanned = 0
        async for w in self.client.list_workflows(self._query(None, "") + " AND ExecutionStatus = 'Running'"):
            sa = w.typed_search_attributes
            total, done = sa.get(WINDOWS_TOTAL_KEY) or 0, sa.get(WINDOWS_DONE_KEY) or 0
            renders += 1
            unplanned += not total
            windows += max(0, total - done)
        return {"windows": windows, "renders": renders, "unplanned": unplanned,
                "text": work_left_text(windows, renders, unplanned)}

    async def fleet(self, name: str) -> dict:
        admin = self.access.is_admin(name)
        workers, queue, left = await asyncio.gather(asyncio.to_thread(read_fleet, self.store), self.queue_depth(),
                                                    self.work_left())
        queue["left"] = left
        mine = None if admin else {w.id async for w in self.client.list_workflows(
            self._query(name, "running"), limit=1000)}
        for w in workers:  # another owner's render id is not for a non-admin's eyes
            cur = w.get("current")
            if cur and mine is not None and cur.get("render_id") not in mine:
                cur["render_id"] = None
        since = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        owner = self.access.scope(name)
        done_hour = (await self.client.count_workflows(
            self._query(owner, "completed") + f" AND CloseTime > '{since}'")).count
        failures = []
        async for w in self.client.list_workflows(self._query(owner, "failed"), limit=10):
            err = await self._failure(w.id, w.run_id)
            failures.append({"id": w.id, "closed": _iso(w.close_time), "type": err["type"],
                             "field": err["field"], "message": err["message"]})
        return {"workers": workers, "queue": queue,
                "throughput": {"windows_last_hour": sum(w.get("windows_last_hour") or 0 for w in workers),
                               "window_failures_last_hour": sum(w.get("failures_last_hour") or 0 for w in workers),
                               "renders_completed_last_hour": done_hour},
                "failures": failures, "viewer": name, "admin": admin}
