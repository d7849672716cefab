"""The ASGI app: RunPod's serverless routes under /v2/{endpoint_id}, OpenAPI docs at /docs.

    create_app(settings)   the app; its lifespan connects to Temporal and the object store,
                           registers the search attributes and runs the API's own worker
                           (webhook deliveries, purges: api_worker) unless told otherwise
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import timedelta

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import Client
from temporalio.worker import Worker

from longtalk import ffmpeg_bin, temporal_connect
from longtalk.errors import FieldError
from longtalk.inputs import rerender
from longtalk.settings import Settings
from longtalk.store import ObjectStore
from longtalk.visibility import register_search_attributes
from workflows.purge import PurgeQueue
from workflows.webhook import DeliverWebhook

from . import jobs
from .auth import Keys
from .dashboard import Dashboard, install as install_dashboard
from .purge import PurgeActivities
from .service import (
    CANCELLED, FAILED, IN_PROGRESS, IN_QUEUE, OWNER_KEY, TERMINAL, TIMED_OUT, NotFound, Renders, attributes,
)
from .webhooks import WebhookActivities, check_url, start_delivery, webhook_key

log = logging.getLogger("longtalk.api")

WAIT_DEFAULT_MS, WAIT_MIN_MS, WAIT_MAX_MS = 90_000, 1_000, 300_000


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class BodyLimit:
    """413 for a body over `limit` bytes: by Content-Length at once, else while it streams."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = (f"request body over {self.limit} bytes: give large media as URL or path inputs "
                   f"(*_url, *_path) instead of base64")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await JSONResponse({"error": message}, status_code=413)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise ApiError(413, message)
            return msg

        try:
            await self.app(scope, limited, send)
        except ApiError as exc:
            await JSONResponse({"error": exc.message}, status_code=exc.status)(scope, receive, send)


def _wait_s(request: Request) -> float:
    raw = request.query_params.get("wait")
    if raw is None:
        return WAIT_DEFAULT_MS / 1000
    try:
        ms = int(raw)
    except ValueError:
        raise ApiError(400, f"wait: must be an integer number of milliseconds, got {raw!r}") from None
    if not WAIT_MIN_MS <= ms <= WAIT_MAX_MS:
        raise ApiError(400, f"wait: must be from {WAIT_MIN_MS} to {WAIT_MAX_MS} ms, got {ms}")
    return ms / 1000


def _policy(body: dict, settings: Settings) -> tuple[int, int, bool]:
    """(execution timeout s (0 = none), ttl s, low priority) from the body's policy."""
    policy = body.get("policy")
    if policy is None:
        policy = {}
    if not isinstance(policy, dict):
        raise ApiError(400, "policy: must be an object")

    def ms(key: str, default_s: int) -> int:
        value = policy.get(key)
        if value is None:
            return default_s
        if isinstance(value, bool) or not isinstance(value, int) or value < 1000:
            raise ApiError(400, f"policy.{key}: must be an integer of at least 1000 (ms), got {value!r}")
        return -(-value // 1000)

    low = policy.get("lowPriority", False)
    if not isinstance(low, bool):
        raise ApiError(400, f"policy.lowPriority: must be true or false, got {low!r}")
    return ms("executionTimeout", settings.api_execution_timeout_s), ms("ttl", settings.api_ttl_s), low


def api_worker(client: Client, settings: Settings, renders: Renders) -> Worker:
    """The API's own worker: webhook deliveries and purges."""
    hooks, purges = WebhookActivities(renders), PurgeActivities(renders)
    return Worker(client, task_queue=settings.api_queue, workflows=[DeliverWebhook, PurgeQueue],
                  activities=[hooks.await_render, hooks.deliver_webhook, purges.purge_queued],
                  max_concurrent_activities=200)


def create_app(settings: Settings, client: Client | None = None, store: ObjectStore | None = None,
               run_worker: bool = True) -> FastAPI:
    keys = Keys.from_settings(settings)
    if not len(keys):
        raise ValueError("no API keys: set LONGTALK_API_KEYS (name:key,...) or LONGTALK_API_KEYS_FILE")
    endpoint_ids = {e.strip() for e in settings.api_endpoint_ids.split(",") if e.strip()}
    ffmpeg_bin.use(settings.ffmpeg)  # the HLS preview's audio segments
    state: dict = {}
    cursors: dict[str, tuple] = {}  # render run -> what /stream sent last
    dashboard = Dashboard(settings, keys, state)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        c = client or await temporal_connect.connect(settings)
        s = store or ObjectStore.from_settings(settings)
        await asyncio.to_thread(s.ensure_bucket)
        await register_search_attributes(c)
        state["renders"] = renders = Renders(c, settings, s)
        worker_task = None
        if run_worker:
            worker = api_worker(c, settings, renders)
            worker_task = asyncio.create_task(worker.run())
        try:
            yield
        finally:
            if worker_task is not None:
                await worker.shutdown()
                await asyncio.gather(worker_task, return_exceptions=True)

    app = FastAPI(title="longtalk", version="0.1.0", lifespan=lifespan,
                  description="RunPod-compatible serverless API for long talking-head renders. "
                              "Every route needs `Authorization: Bearer KEY` (or the raw key).")
    app.add_middleware(BodyLimit, limit=settings.api_max_body_bytes)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    def owner_of(request: Request, endpoint_id: str, public: bool = False) -> str | None:
        if endpoint_ids and endpoint_id not in endpoint_ids:
            raise ApiError(404, f"endpoint {endpoint_id} not found")
        owner = keys.owner(request.headers.get("authorization"))
        if owner is None:  # the dashboard's pages: a session cookie with its CSRF token
            owner = dashboard.action_owner(request)
        if owner is None and not public:
            raise ApiError(401, "unauthorized: send an API key as `Authorization: Bearer KEY`")
        return owner

    async def json_body(request: Request, required: bool = True) -> dict:
        raw = await request.body()
        if not raw.strip():
            if required:
                raise ApiError(400, "body: a JSON object is required")
            return {}
        try:
            body = json.loads(raw) if len(raw) < 1 << 20 else await asyncio.to_thread(json.loads, raw)
        except (ValueError, RecursionError):
            raise ApiError(400, "body: not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "body: must be a JSON object")
        return body

    async def owned(render_id: str, owner: str):
        try:
            return await state["renders"].describe(render_id, None if dashboard.is_admin(owner) else owner)
        except NotFound:
            raise ApiError(404, f"render {render_id} not found") from None

    async def run_job(request: Request, owner: str) -> tuple[str, list[str]]:
        body = await json_body(request)
        inp = body.get("input")
        if not isinstance(inp, dict):
            raise ApiError(400, "input: required, a JSON object (the job)")
        execution_s, ttl_s, low = _policy(body, settings)
        webhook = body.get("webhook")
        renders: Renders = state["renders"]
        try:
            if webhook is not None:
                await asyncio.to_thread(check_url, webhook, settings)
            render_id, warnings = await jobs.accept(
                renders.client, {"input": inp}, settings, renders.store, owner,
                execution_timeout=timedelta(seconds=execution_s) if execution_s else None,
                memo={"ttl_s": ttl_s, "execution_timeout_s": execution_s, "low_priority": low,
                      "webhook": webhook is not None})
        except FieldError as exc:
            raise ApiError(400, str(exc)) from None
        if webhook is not None:
            await asyncio.to_thread(renders.store.put_json, webhook_key(render_id), {"url": webhook})
            desc = await renders.client.get_workflow_handle(render_id).describe()
            await start_delivery(renders.client, settings, render_id, desc.run_id)
        log.info("render %s accepted for %s", render_id, owner)
        return render_id, warnings

    base = "/v2/{endpoint_id}"

    @app.post(base + "/run", summary="Start a render (asynchronous)")
    async def run(endpoint_id: str, request: Request):
        owner = owner_of(request, endpoint_id)
        render_id, warnings = await run_job(request, owner)
        return {"id": render_id, "status": IN_QUEUE, "warnings": warnings}

    @app.post(base + "/estimate", summary="What a /run body would take: windows, GPU seconds, wall time, cost "
                                          "(nothing is started or stored)")
    async def estimate(endpoint_id: str, request: Request):
        owner_of(request, endpoint_id)
        renders: Renders = state["renders"]
        try:
            return await jobs.estimate_body(renders.client, renders.store, settings, await json_body(request))
        except FieldError as exc:
            raise ApiError(400, str(exc)) from None

    @app.post(base + "/runsync", summary="Start a render and wait up to `wait` ms for it")
    async def runsync(endpoint_id: str, request: Request):
        owner = owner_of(request, endpoint_id)
        wait_s = _wait_s(request)
        render_id, _warnings = await run_job(request, owner)  # /status repeats them (the memo)
        renders: Renders = state["renders"]
        await renders.wait(render_id, None, wait_s)
        return await renders.status_body(render_id, await owned(render_id, owner))

    async def status(endpoint_id: str, render_id: str, request: Request):
        owner = owner_of(request, endpoint_id)
        desc = await owned(render_id, owner)
        return await state["renders"].status_body(render_id, desc)

    async def status_sync(endpoint_id: str, render_id: str, request: Request):
        owner = owner_of(request, endpoint_id)
        wait_s = _wait_s(request)
        desc = await owned(render_id, owner)
        renders: Renders = state["renders"]
        if desc.close_time is None:
            await renders.wait(render_id, desc.run_id, wait_s)
            desc = await owned(render_id, owner)
        return await renders.status_body(render_id, desc)

    async def stream(endpoint_id: str, render_id: str, request: Request):
        """The progress updates since the last call, then the result. The official SDK's
        job.stream() ends only on COMPLETED, FAILED or TIMED_OUT: after a cancelled render's
        last update this answers 410, which ends it too."""
        owner = owner_of(request, endpoint_id)
        desc = await owned(render_id, owner)
        body = await state["renders"].status_body(render_id, desc)
        key = f"{render_id}/{desc.run_id}"
        chunks = []
        if body["status"] in TERMINAL:
            if cursors.get(key) == ("end",):
                if body["status"] == CANCELLED:
                    raise ApiError(410, f"render {render_id} was cancelled; its stream has ended")
            else:
                cursors[key] = ("end",)
                final = body.get("output") if body["status"] != FAILED and body["status"] != TIMED_OUT else None
                chunks.append({"output": final if final is not None else
                               {"status": body["status"], "error": body.get("error")}})
        elif "output" in body:
            out = body["output"]
            mark = (out["stage"], out["windows_done"], out["windows_total"])
            if cursors.get(key) != mark:
                cursors[key] = mark
                chunks.append({"output": out})
        while len(cursors) > 10_000:
            cursors.pop(next(iter(cursors)))
        return {"id": render_id, "status": body["status"], "stream": chunks}

    for path, fn, summary in ((f"{base}/status/{{render_id}}", status, "A render's status and output"),
                              (f"{base}/status-sync/{{render_id}}", status_sync,
                               "A render's status, waiting up to `wait` ms for it to end"),
                              (f"{base}/stream/{{render_id}}", stream, "Progress since the last call, then the result")):
        app.add_api_route(path, fn, methods=["GET", "POST"], summary=summary)

    @app.post(base + "/cancel/{render_id}", summary="Cancel a render (the GPU stops its window)")
    async def cancel(endpoint_id: str, render_id: str, request: Request):
        owner = owner_of(request, endpoint_id)
        desc = await owned(render_id, owner)
        renders: Renders = state["renders"]
        if desc.close_time is None:
            await renders.cancel(render_id, desc)
            return {"id": render_id, "status": CANCELLED}
        return {"id": render_id, "status": (await renders.status_body(render_id, desc))["status"]}

    @app.post(base + "/retry/{render_id}", summary="Start a FAILED or TIMED_OUT render again (same id)")
    async def retry(endpoint_id: str, render_id: str, request: Request):
        owner = owner_of(request, endpoint_id)
        desc = await owned(render_id, owner)
        renders: Renders = state["renders"]
        current = (await renders.status_body(render_id, desc))["status"] if desc.close_time else IN_PROGRESS
        if current not in (FAILED, TIMED_OUT):
            raise ApiError(400, f"id: only FAILED or TIMED_OUT renders can be retried; {render_id} is {current}")
        handle = await renders.retry(render_id, desc, owner)
        if (await desc.memo()).get("webhook"):
            new = await handle.describe()
            await start_delivery(renders.client, settings, render_id, new.run_id)
        return {"id": render_id, "status": IN_QUEUE}

    async def rerender_args(request: Request, render_id: str, owner: str, body: dict) -> tuple:
        await owned(render_id, owner)
        params = {**request.query_params, **body}
        for key in ("from", "to"):
            if key not in params:
                raise ApiError(400, f"{key}: required, a window index (from 0)")
        return params["from"], params["to"]

    @app.get(base + "/rerender/{render_id}", summary="Which windows a re-render of from..to would redo")
    async def rerender_preview(endpoint_id: str, render_id: str, request: Request):
        owner = owner_of(request, endpoint_id)
        first, last = await rerender_args(request, render_id, owner, {})
        renders: Renders = state["renders"]
        try:
            preview = await rerender.rerender_preview(renders.client, renders.store, render_id, first, last)
        except FieldError as exc:
            raise ApiError(400, str(exc)) from None
        return {"id": render_id, **preview.body()}

    @app.post(base + "/rerender/{render_id}",
              summary="Re-render windows from..to of a finished render as a new output version")
    async def rerender_start(endpoint_id: str, render_id: str, request: Request):
        owner = owner_of(request, endpoint_id)
        body = await json_body(request, required=False)
        first, last = await rerender_args(request, render_id, owner, body)
        renders: Renders = state["renders"]
        desc = await owned(render_id, owner)
        memo = await desc.memo()
        try:
            _handle, preview, new_id = await rerender.start_rerender(
                renders.client, settings, renders.store, render_id, first, last,
                prompt=body.get("prompt"), seed=body.get("seed"),
                # an admin's re-render belongs to the base render's owner
                search_attributes=attributes(desc.typed_search_attributes.get(OWNER_KEY) or owner),
                memo={**memo, "webhook": False})
        except FieldError as exc:
            raise ApiError(400, str(exc)) from None
        version = int(new_id.rsplit(".v", 1)[1])
        log.info("render %s: re-render %s of windows %d-%d for %s", render_id, new_id, preview.first,
                 preview.last, owner)
        return {"id": new_id, "status": IN_QUEUE, "version": version, **preview.body()}

    @app.post(base + "/purge-queue", summary="Cancel your renders that no GPU has started on (answers at once, "
                                             "the cancels follow)")
    async def purge_queue(endpoint_id: str, request: Request):
        owner = owner_of(request, endpoint_id)
        return {"removed": await state["renders"].purge_queue(owner), "status": "completed"}

    @app.get(base + "/health", summary="Jobs (from Temporal visibility) and GPU workers")
    async def health(endpoint_id: str, request: Request):
        owner = owner_of(request, endpoint_id, public=settings.api_public_health)
        return await state["renders"].health(owner)

    install_dashboard(app, dashboard)
    app.state.keys = keys
    return app
