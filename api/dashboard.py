"""The ops dashboard, served by the HTTP API at `/`: renders, one render, the GPU fleet.

    GET  /                  renders, newest first (filter by status, search by id)
    GET  /renders/{id}      one render: progress, window strip, live HLS preview, video, error
    GET  /fleet             GPU workers, queue depth, throughput, recent failures
    GET  /new               start a render: a form for the /run body, its estimate live (new_render.js)
    GET  /login, POST /login, POST /logout
    GET  /dashboard/api/... the JSON the pages poll (also with `Authorization: Bearer KEY`)

Logging in trades an API key for a signed session cookie (HttpOnly, SameSite=Strict, Secure
unless the API binds to loopback); the key itself is never stored in the cookie, a URL or a
log. Pages act through the same /v2 routes as every client (cancel, retry, rerender): with
the cookie, those routes also want the session's CSRF token in `X-CSRF-Token`
(`Dashboard.action_owner`, called by app.py's `owner_of`).

Lists and counts come from Temporal visibility only (the search attributes of
longtalk.visibility), never from listing the bucket; a key sees its own renders, a key named
in LONGTALK_API_ADMIN_NAMES sees all. Attributes a render does not carry (yet) read as
unknown ("—") rather than failing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import json
import logging
import re
import secrets
import tempfile
import time
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, TimeoutError as TemporalTimeout
from temporalio.service import RPCError

from longtalk import av_io, renders as render_texts
from longtalk.fleet import read_fleet
from workflows.render import chain_index
from longtalk.payloads import Progress, derived_keys, output_key, window_meta_key, window_prefix
from longtalk.settings import Settings
from longtalk.stack import split_host_port
from longtalk.visibility import (
    BACKEND_KEY, BASE, BASE_KEY, CANCELLED, IN_QUEUE, MODE_KEY, OWNER, OWNER_KEY, QUEUED_STAGES, QUEUED_WHERE, STAGE,
    STAGE_KEY, WINDOWS_DONE_KEY, WINDOWS_TOTAL_KEY, running_state,
)

from . import hls
from .auth import Keys

log = logging.getLogger("longtalk.dashboard")

STATIC = Path(__file__).resolve().parent / "static"
HLS_JS = "vendor/hls.js-1.6.19/hls.min.js"
COOKIE = "lt_session"
SESSION_S = 12 * 3600
PAGE_SIZE = 50
QUERY_TIMEOUT = timedelta(seconds=5)


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
SEARCH = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")  # render ids: UUIDs, <id>.v<n> re-renders, t-... in tests


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Signed session cookies: `b64(json{name, exp, fp}).b64(hmac)`. `fp` fingerprints the
    key the session was opened with, so replacing a key ends its sessions."""

    def __init__(self, secret: bytes, keys: Keys) -> None:
        self.secret, self.keys = secret, keys

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self.secret, text.encode(), hashlib.sha256).digest())

    def issue(self, name: str, now: float | None = None) -> str:
        exp = int((now or time.time()) + SESSION_S)
        payload = _b64(json.dumps({"n": name, "e": exp, "f": self.keys.fingerprint(name)}).encode())
        return f"{payload}.{self._sign(payload)}"

    def owner(self, cookie: str | None) -> str | None:
        if not cookie or cookie.count(".") != 1:
            return None
        payload, sig = cookie.split(".")
        if not hmac.compare_digest(sig, self._sign(payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
            name, exp, fp = data["n"], int(data["e"]), data["f"]
        except (ValueError, KeyError, TypeError):
            return None
        if exp < time.time() or fp is None or fp != self.keys.fingerprint(name):
            return None
        return name

    def csrf(self, cookie: str) -> str:
        return self._sign("csrf:" + cookie)

    def csrf_ok(self, cookie: str | None, token: str | None) -> bool:
        return bool(cookie and token) and hmac.compare_digest(token, self.csrf(cookie))


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(timezone.utc).isoformat() if t else None


NEWEST_SPANS = (timedelta(hours=1), timedelta(days=1), timedelta(days=7), timedelta(days=31), None)


def _vis_time(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _token(w) -> str:
    return _b64(json.dumps([_iso(w.start_time), w.id]).encode())


def _after(token: str | None) -> tuple | None:
    """(start time, id) of the last row of the page before, from its token."""
    if not token:
        return None
    try:
        start, rid = json.loads(_unb64(token))
        return datetime.fromisoformat(start), rid
    except (ValueError, TypeError):
        return None


def _running_status(stage: str | None, cancelling: bool) -> str:
    """The dashboard's name for a running render's state: what /status says, lower case."""
    state = CANCELLED if cancelling else running_state(stage)
    return {IN_QUEUE: "queued", CANCELLED: "cancelled"}.get(state, "running")


def _safe_next(target: str | None) -> str:
    """Only a path on this server (no //host, no scheme): no open redirect after login."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


class Dashboard:
    def __init__(self, settings: Settings, keys: Keys, state: dict) -> None:
        self.settings, self.keys, self.state = settings, keys, state
        self.admins = {n.strip() for n in settings.api_admin_names.split(",") if n.strip()}
        host = split_host_port(settings.api_address)[0]
        self.loopback = host in ("localhost", "::1", "[::1]") or host.startswith("127.")
        # one secret per process unless configured: a restart logs everybody out, and API
        # replicas behind one address need LONGTALK_API_SESSION_SECRET
        secret = settings.api_session_secret.encode() or secrets.token_bytes(32)
        self.sessions = Sessions(secret, keys)
        ids = [e.strip() for e in settings.api_endpoint_ids.split(",") if e.strip()]
        self.endpoint = ids[0] if ids else "dashboard"
        self._closed: OrderedDict[str, dict] = OrderedDict()  # closed run id -> what never changes again
        self._plans: OrderedDict[str, dict] = OrderedDict()  # render id -> plan.json
        self._thumbs: OrderedDict[tuple, bytes] = OrderedDict()
        self._failures: OrderedDict[str, dict] = OrderedDict()  # failed run id -> error
        self._seen: dict[str, set[str]] = {}  # render id -> its object keys known to exist
        self._requests: OrderedDict[str, dict] = OrderedDict()  # render id -> request.json params
        self._segment_locks: dict[str, asyncio.Lock] = {}
        self.router = self._routes()

    # ---- who is asking ---------------------------------------------------------------

    def is_admin(self, name: str | None) -> bool:
        return name is not None and name in self.admins

    def viewer(self, request: Request) -> str | None:
        """The key name behind a dashboard request: its session cookie, or an API key header."""
        return self.keys.owner(request.headers.get("authorization")) or \
            self.sessions.owner(request.cookies.get(COOKIE))

    def action_owner(self, request: Request) -> str | None:
        """For the /v2 routes: the session's key name when the cookie is valid AND the
        request carries its CSRF token (a page of this server sent it, not another site)."""
        cookie = request.cookies.get(COOKIE)
        name = self.sessions.owner(cookie)
        if name is None or not self.sessions.csrf_ok(cookie, request.headers.get("x-csrf-token")):
            return None
        return name

    def _need(self, request: Request) -> str:
        name = self.viewer(request)
        if name is None:
            raise _Unauthorized()
        return name

    def _scope(self, name: str) -> str | None:
        """The owner filter for `name`: None for an admin (everything)."""
        return None if self.is_admin(name) else name

    # ---- visibility ------------------------------------------------------------------

    @property
    def client(self):
        return self.state["renders"].client

    @property
    def store(self):
        return self.state["renders"].store

    def _query(self, owner: str | None, status: str = "", q: str = "") -> str:
        parts = ["WorkflowType = 'RenderVideo'"]
        if owner is not None:
            parts.append(f"{OWNER} = '{owner}'")  # key names are [A-Za-z0-9._-]: no quoting issue
        if status:
            parts.append(STATUS_FILTERS[status])
        if q:
            parts.append(f"WorkflowId STARTS_WITH '{q}'")
        return " AND ".join(parts)

    def _row(self, w, cancelling: set[tuple[str, str]]) -> dict:
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
            eta = elapsed / done * (total - done)  # rough: the queue time counts too
        thumb = None
        if done or status == "completed":  # the count in the URL: a new picture as windows finish
            thumb = f"/dashboard/api/renders/{w.id}/thumb?done={done or 0}"
        return {"id": w.id, "owner": sa.get(OWNER_KEY), "mode": sa.get(MODE_KEY), "backend": sa.get(BACKEND_KEY),
                "base": sa.get(BASE_KEY) or None, "status": status, "stage": stage, "windows_done": done,
                "windows_total": total, "eta_s": eta, "started": _iso(w.start_time),
                "closed": _iso(w.close_time), "elapsed_s": elapsed, "thumb": thumb}

    async def list_renders(self, name: str, status: str, q: str, token: str | None, limit: int) -> dict:
        """The newest `limit` renders by start time (stable: a render keeps its place when it
        ends), `token` continuing after the last row of an earlier page."""
        owner = self._scope(name)
        query = self._query(owner, status, q)
        (found, more), counts, cancelling = await asyncio.gather(
            self._newest(query, limit, _after(token)), self._counts(owner, q),
            asyncio.to_thread(self.state["renders"].cancels_pending))
        rows = [self._row(w, cancelling) for w in found]
        nxt = _token(found[-1]) if more and found else None
        return {"renders": rows, "next_page_token": nxt, "counts": counts,
                "viewer": name, "admin": self.is_admin(name)}

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
        from .service import NotFound

        try:
            return await self.state["renders"].describe(render_id, self._scope(name))
        except NotFound:
            raise _NotFound(f"render {render_id} not found") from None

    def _plan(self, render_id: str) -> dict | None:
        """plan.json (fps, windows, each window's frames): written once, so cached."""
        plan = self._plans.get(render_id)
        if plan is None:
            plan = self.store.get_json_or_none(derived_keys(render_id)["plan"])
            if plan is None:
                return None
            self._plans[render_id] = plan
            while len(self._plans) > 256:
                self._plans.popitem(last=False)
        return plan

    async def _progress(self, render_id: str, run_id: str) -> Progress | None:
        from workflows.render import RenderVideo

        try:
            return await self.client.get_workflow_handle(render_id, run_id=run_id).query(
                RenderVideo.progress, result_type=Progress, rpc_timeout=QUERY_TIMEOUT)
        except Exception:  # no worker to answer (yet): the page shows what visibility knows
            return None

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
        while len(self._failures) > 256:
            self._failures.popitem(last=False)
        return err

    def _objects(self, render_id: str) -> dict:
        """Presigned links to the render's objects that exist. An object, once written, stays
        (the page polls): only the missing ones are looked for again."""
        keys = derived_keys(render_id)
        seen = self._seen.setdefault(render_id, set())
        out = {}
        for name, key in (("output.mp4", output_key(render_id)), ("manifest.json", keys["manifest"]),
                          ("plan.json", keys["plan"]), ("request.json", keys["request"])):
            if key in seen or self.store.exists(key):
                seen.add(key)
                out[name] = self.store.presign(key, self.settings.presign_expiry_s)
        while len(self._seen) > 1024:
            self._seen.pop(next(iter(self._seen)))
        return out

    def _params(self, render_id: str) -> dict:
        """The job's parameters (request.json, written before the render starts: cached)."""
        if render_id not in self._requests:
            request = self.store.get_json_or_none(derived_keys(render_id)["request"])
            if request is None:
                return {}
            self._requests[render_id] = request.get("params", {})
            while len(self._requests) > 1024:
                self._requests.popitem(last=False)
        return self._requests[render_id]

    async def render_detail(self, render_id: str, name: str) -> dict:
        desc = await self.describe(render_id, name)
        sa = desc.typed_search_attributes
        running = desc.status == WorkflowExecutionStatus.RUNNING
        cached = None if running else self._closed.get(desc.run_id)
        if cached is not None:  # a closed run does not change; re-renders of it may appear
            return {**cached, "versions": await self._versions(render_id, name)}
        p = await self._progress(render_id, desc.run_id)
        plan = await asyncio.to_thread(self._plan, render_id)
        now = datetime.now(timezone.utc)
        stage = getattr(p, "stage", None) or sa.get(STAGE_KEY)
        cancelling = running and await asyncio.to_thread(
            self.state["renders"].cancel_requested, render_id, desc.run_id)
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
            "links": {"temporal": f"{self.settings.temporal_ui_url}/namespaces/{ns}/workflows/{render_id}",
                      "objects": await asyncio.to_thread(self._objects, render_id)},
            "params": await asyncio.to_thread(self._params, render_id),
            "actions": {"cancel": running and not cancelling, "retry": status in ("failed", "timed_out"),
                        "rerender": status == "completed"},
            "endpoint": self.endpoint, "versions": await self._versions(render_id, name),
        }
        if not running and (p is not None or status == "completed"):
            self._closed[desc.run_id] = out
            while len(self._closed) > 512:
                self._closed.popitem(last=False)
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
        if not SEARCH.match(render_id):  # it goes into a query: ids of other shapes have no versions
            return []
        query = self._query(self._scope(name)) + f" AND {BASE} = '{render_id}'"
        try:
            return [{"id": w.id, "status": CLOSED_STATUS.get(w.status, "running"), "started": _iso(w.start_time)}
                    async for w in self.client.list_workflows(query, limit=20)]
        except RPCError:
            return []

    def window_detail(self, render_id: str, base: str | None, k: int) -> dict:
        plan = self._plan(render_id) or {}
        frames = plan.get("frames") or []
        out: dict = {"index": k}
        fps = plan.get("fps") or self.settings.fps
        if k < len(frames):
            keep_start, keep_end = frames[k][2], frames[k][3]
            out.update(frames=keep_end - keep_start, keep_start=keep_start, keep_end=keep_end,
                       duration_s=round((keep_end - keep_start) / fps, 3))
        source = self._window_source(render_id, base, k)
        meta = self.store.get_json_or_none(window_meta_key(source, k)) if source else None
        attempts = list(self.store.list(window_prefix(source or render_id, k) + "attempts/"))
        out["attempts"] = len(attempts)
        if meta:
            out.update(attempt=meta.get("attempt"), worker=meta.get("worker"), render_s=meta.get("render_s"),
                       rendered_at=meta.get("rendered_at"), from_render=source if source != render_id else None)
        return out

    def _window_source(self, render_id: str, base: str | None, k: int) -> str | None:
        """The render whose bucket holds window k: this one, or (a re-render's window that was
        not rendered again) its base."""
        if self.store.exists(window_meta_key(render_id, k)):
            return render_id
        if base and self.store.exists(window_meta_key(base, k)):
            return base
        return None

    # ---- thumbnails and HLS ----------------------------------------------------------

    def thumbnail(self, render_id: str, base: str | None, k: int) -> bytes | None:
        """Window k's last frame, 160 px wide, as JPEG: from its tail PNG while the render
        runs (publish deletes the tails), else from its clip."""
        key = (render_id, k)
        if key in self._thumbs:
            self._thumbs.move_to_end(key)
            return self._thumbs[key]
        source = self._window_source(render_id, base, k)
        if source is None:
            return None
        tails = sorted(x for x in self.store.list(window_prefix(source, k)) if "/tail_" in x)
        image = None
        if tails:
            try:
                image = av_io.decode_png(self.store.get_bytes(tails[-1]))
            except ValueError:
                image = None
        if image is None:
            with tempfile.TemporaryDirectory(prefix="thumb-") as tmp:
                clip = self.store.download(window_prefix(source, k) + "clip.mp4", Path(tmp) / "clip.mp4")
                cap = cv2.VideoCapture(str(clip))
                frame = None
                while True:
                    ok, got = cap.read()
                    if not ok:
                        break
                    frame = got
                cap.release()
                if frame is None:
                    return None
                image = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        h, w = image.shape[:2]
        small = cv2.resize(image, (160, max(1, round(h * 160 / w))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            return None
        data = buf.tobytes()
        self._thumbs[key] = data
        while len(self._thumbs) > 1024:
            self._thumbs.popitem(last=False)
        return data

    async def hls_state(self, render_id: str, name: str) -> tuple:
        """(desc, plan, windows listed, ended) for the playlist and its segments."""
        desc = await self.describe(render_id, name)
        plan = await asyncio.to_thread(self._plan, render_id)
        if plan is None:
            return desc, None, 0, desc.status != WorkflowExecutionStatus.RUNNING
        total = plan["windows"]
        running = desc.status == WorkflowExecutionStatus.RUNNING
        if desc.status == WorkflowExecutionStatus.COMPLETED:
            finished = set(range(total))
        else:
            cached = self._closed.get(desc.run_id)
            if cached is not None:
                finished = {k for k, s in enumerate(cached["states"]) if s in "dt"}
            else:
                p = await self._progress(render_id, desc.run_id)
                finished = set(p.windows_finished) if p else set()
        count = hls.finished_prefix(finished, total)
        return desc, plan, count, (not running) or count == total

    # ---- fleet -----------------------------------------------------------------------

    async def queue_depth(self) -> dict:
        """Windows waiting on the GPU queue: Temporal's backlog count of the activity queue;
        where the server gives no stats, the running chains whose window is scheduled but not
        started."""
        from temporalio.api.enums.v1 import PendingActivityState, TaskQueueType
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

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

    async def fleet(self, name: str) -> dict:
        admin = self.is_admin(name)
        workers, queue = await asyncio.gather(asyncio.to_thread(read_fleet, self.store), self.queue_depth())
        mine = None if admin else {w.id async for w in self.client.list_workflows(
            self._query(name, "running"), limit=1000)}
        for w in workers:  # another owner's render id is not for a non-admin's eyes
            cur = w.get("current")
            if cur and mine is not None and cur.get("render_id") not in mine:
                cur["render_id"] = None
        since = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        owner = self._scope(name)
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

    # ---- HTTP ------------------------------------------------------------------------

    def _page(self, request: Request, name: str, page: str, title: str, extra: str = "") -> HTMLResponse:
        cookie = request.cookies.get(COOKIE)
        csrf = self.sessions.csrf(cookie) if cookie else ""
        nav = "".join(f'<a href="{href}"{" aria-current=page" if page == key else ""}>{label}</a>'
                      for key, href, label in (("renders", "/", "Renders"), ("fleet", "/fleet", "Fleet"),
                                                 ("new", "/new", "New render")))
        badge = ' <span class="badge">admin</span>' if self.is_admin(name) else ""
        body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{csrf}">
<meta name="endpoint" content="{html.escape(self.endpoint)}">
<title>{html.escape(title)} · longtalk</title>
<link rel="stylesheet" href="/dashboard/static/dashboard.css">
<link rel="icon" href="/dashboard/static/favicon.svg" type="image/svg+xml">
</head><body data-page="{page}" {extra}>
<header class="top"><a class="brand" href="/">longtalk</a><nav>{nav}</nav>
<div class="who"><span title="signed in as">{html.escape(name)}</span>{badge}
<form method="post" action="/logout"><input type="hidden" name="csrf" value="{csrf}">
<button class="link" type="submit">Log out</button></form></div></header>
<main id="main"><p class="muted">Loading…</p></main>
<dialog id="confirm"></dialog>
{f'<script src="/dashboard/static/{HLS_JS}"></script>' if page == "render" else ""}
<script src="/dashboard/static/dashboard.js"></script>
{'<script src="/dashboard/static/new_render.js"></script>' if page == "new" else ""}
</body></html>"""
        return HTMLResponse(body, headers={"Cache-Control": "no-store"})

    def _login_page(self, error: str = "", next_: str = "/", status: int = 200) -> HTMLResponse:
        msg = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
        body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in · longtalk</title><link rel="stylesheet" href="/dashboard/static/dashboard.css">
<link rel="icon" href="/dashboard/static/favicon.svg" type="image/svg+xml"></head>
<body class="login"><main><form method="post" action="/login" class="card login-card">
<h1>longtalk</h1><p class="muted">Renders and GPUs. Log in with your API key.</p>{msg}
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required autofocus>
<input type="hidden" name="next" value="{html.escape(_safe_next(next_))}">
<button type="submit" class="primary">Log in</button></form></main></body></html>"""
        return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    def _logged_in(self, name: str, target: str) -> RedirectResponse:
        resp = RedirectResponse(_safe_next(target), status_code=303)
        resp.set_cookie(COOKIE, self.sessions.issue(name), max_age=SESSION_S, httponly=True,
                        samesite="strict", secure=not self.loopback, path="/")
        return resp

    def _same_origin(self, request: Request) -> bool:
        """A form POST from a page of this server (browsers send Origin on POST)."""
        origin = request.headers.get("origin")
        if origin is None:  # not a browser (or a very old one): SameSite and the key itself guard it
            return True
        host = request.headers.get("host", "")
        return origin.split("://", 1)[-1] == host

    def _routes(self) -> APIRouter:
        r = APIRouter(include_in_schema=False)
        dash = self

        @r.get("/login")
        async def login_form(request: Request):
            key = request.query_params.get("key")
            if key is not None:
                # the embedded stack's printed link; only on loopback, where the link never
                # crosses a network. Redirect at once: the key leaves the address bar.
                name = dash.keys.owner(key) if dash.loopback else None
                if name is None:
                    return dash._login_page("That link does not log in here." if dash.loopback else
                                            "Links with a key only work when the API listens on loopback.",
                                            status=401)
                return dash._logged_in(name, "/")
            if dash.viewer(request):
                return RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
            return dash._login_page(next_=request.query_params.get("next", "/"))

        @r.post("/login")
        async def login(request: Request):
            form = await _form(request)
            if not dash._same_origin(request):
                return dash._login_page("Log in from this server's own page.", status=403)
            name = dash.keys.owner(form.get("key", ""))
            if name is None:
                await asyncio.sleep(0.5)  # slows down guessing; keys are 16+ random characters anyway
                return dash._login_page("That key is not valid.", form.get("next", "/"), status=401)
            log.info("dashboard login: %s", name)
            return dash._logged_in(name, form.get("next", "/"))

        @r.post("/logout")
        async def logout(request: Request):
            form = await _form(request)
            cookie = request.cookies.get(COOKIE)
            if cookie and not dash.sessions.csrf_ok(cookie, form.get("csrf") or request.headers.get("x-csrf-token")):
                return JSONResponse({"error": "csrf: missing or wrong token"}, status_code=403)
            resp = RedirectResponse("/login", status_code=303)
            resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=not dash.loopback)
            return resp

        def page(kind: str, title: str, extra=lambda request: ""):
            async def handler(request: Request):
                name = dash.viewer(request)
                if name is None:
                    from urllib.parse import quote

                    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
                return dash._page(request, name, kind, title, extra(request))
            return handler

        @r.get("/favicon.ico")
        async def favicon():  # what a browser asks for before it has read a page's <link rel=icon>
            return Response((STATIC / "favicon.svg").read_bytes(), media_type="image/svg+xml",
                            headers={"Cache-Control": "public, max-age=86400"})

        r.add_api_route("/", page("renders", "Renders"), methods=["GET"])
        r.add_api_route("/fleet", page("fleet", "Fleet"), methods=["GET"])
        r.add_api_route("/new", page("new", "New render"), methods=["GET"])  # static/new_render.js
        r.add_api_route("/renders/{render_id}", page(
            "render", "Render", lambda req: f'data-render="{html.escape(req.path_params["render_id"])}"'),
            methods=["GET"])

        @r.get("/dashboard/api/renders")
        async def renders_json(request: Request):
            name = dash._need(request)
            status = request.query_params.get("status", "")
            q = request.query_params.get("q", "").strip()
            if status and status not in STATUS_FILTERS:
                return JSONResponse({"error": f"status: one of {', '.join(STATUS_FILTERS)}"}, status_code=400)
            if q and not SEARCH.match(q):
                return JSONResponse({"error": "q: a render id or its beginning (letters, digits, '.', '-' and '_')"},
                                    status_code=400)
            try:
                limit = min(max(int(request.query_params.get("limit", PAGE_SIZE)), 1), 200)
            except ValueError:
                return JSONResponse({"error": "limit: an integer"}, status_code=400)
            token = request.query_params.get("page_token") or None
            return await dash.list_renders(name, status, q, token, limit)

        @r.get("/dashboard/api/renders/{render_id}")
        async def render_json(render_id: str, request: Request):
            return await dash.render_detail(render_id, dash._need(request))

        @r.get("/dashboard/api/renders/{render_id}/windows/{k}")
        async def window_json(render_id: str, k: int, request: Request):
            desc = await dash.describe(render_id, dash._need(request))
            base = desc.typed_search_attributes.get(BASE_KEY) or None
            return await asyncio.to_thread(dash.window_detail, render_id, base, k)

        @r.get("/dashboard/api/renders/{render_id}/thumb")
        async def thumb(render_id: str, request: Request):
            desc = await dash.describe(render_id, dash._need(request))
            base = desc.typed_search_attributes.get(BASE_KEY) or None
            k = request.query_params.get("k")
            if k is None or not k.isdigit():
                plan = await asyncio.to_thread(dash._plan, render_id)
                if desc.status == WorkflowExecutionStatus.COMPLETED and plan:
                    k = plan["windows"] - 1
                else:
                    p = await dash._progress(render_id, desc.run_id)
                    if not p or not p.windows_finished:
                        return Response(status_code=404)
                    latest = getattr(p, "latest_window", -1)  # the window that finished last
                    k = latest if latest is not None and latest >= 0 else max(p.windows_finished)
            data = await asyncio.to_thread(dash.thumbnail, render_id, base, int(k))
            if data is None:
                return Response(status_code=404)
            # a window's frames never change: the browser may keep it
            return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

        @r.get("/dashboard/api/renders/{render_id}/hls/index.m3u8")
        async def playlist(render_id: str, request: Request):
            _desc, plan, count, ended = await dash.hls_state(render_id, dash._need(request))
            if plan is None:
                text = hls.playlist([], dash.settings.fps, 0, ended, str)
            else:
                keep = [(f[2], f[3]) for f in plan["frames"]]
                text = hls.playlist(keep, plan["fps"], count, ended, lambda k: f"{k}.ts")
            return Response(text, media_type="application/vnd.apple.mpegurl", headers={"Cache-Control": "no-store"})

        @r.get("/dashboard/api/renders/{render_id}/hls/{k}.ts")
        async def segment(render_id: str, k: int, request: Request):
            desc, plan, count, _ = await dash.hls_state(render_id, dash._need(request))
            if plan is None or not 0 <= k < count:
                return JSONResponse({"error": f"segment {k} is not ready"}, status_code=404)
            base = desc.typed_search_attributes.get(BASE_KEY) or None
            lock = dash._segment_locks.setdefault(f"{render_id}/{k}", asyncio.Lock())
            async with lock:  # one build per segment, however many players ask at once
                data = await asyncio.to_thread(dash._segment, render_id, base, k, plan)
            dash._segment_locks.pop(f"{render_id}/{k}", None)
            return Response(data, media_type="video/mp2t", headers={"Cache-Control": "private, max-age=86400"})

        @r.get("/dashboard/api/fleet")
        async def fleet_json(request: Request):
            return await dash.fleet(dash._need(request))

        r.routes.append(_static_mount())
        return r

    def _segment(self, render_id: str, base: str | None, k: int, plan: dict) -> bytes:
        source = self._window_source(render_id, base, k) or render_id
        audio_from = render_id if self.store.exists(hls_audio_key(render_id)) or not base else base
        f = plan["frames"][k]
        return hls.make_segment(self.store, render_id, audio_from, k, (f[2], f[3]), plan["fps"], 2,
                                window_prefix(source, k) + "clip.mp4")


def hls_audio_key(render_id: str) -> str:
    from longtalk.payloads import audio_key

    return audio_key(render_id, 1)


def _static_mount():
    from starlette.routing import Mount

    return Mount("/dashboard/static", app=StaticFiles(directory=STATIC), name="dashboard-static")


async def _form(request: Request) -> dict:
    """A urlencoded form body (no python-multipart needed)."""
    from urllib.parse import parse_qs

    raw = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


class _Unauthorized(Exception):
    pass


class _NotFound(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def install(app, dashboard: Dashboard) -> None:
    """Mount the dashboard's routes and its two error answers on `app`."""
    app.include_router(dashboard.router)

    @app.exception_handler(_Unauthorized)
    async def _unauthorized(request: Request, exc: _Unauthorized):
        return JSONResponse({"error": "unauthorized: log in, or send an API key as `Authorization: Bearer KEY`"},
                            status_code=401)

    @app.exception_handler(_NotFound)
    async def _not_found(request: Request, exc: _NotFound):
        return JSONResponse({"error": exc.message}, status_code=404)
