"""The ASGI app: RunPod's serverless routes under /v2/{endpoint_id}, OpenAPI docs at /docs,
the ops dashboard at /.

    create_app(settings)   the app; its lifespan connects to Temporal and the object store,
                           registers the search attributes and runs the API's own worker
                           (webhook deliveries, purges: api_worker) unless told otherwise

The routes are in api/routes/ (one module per resource), what they share in api/context.py,
and how a refusal becomes a response in api/errors.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI
from temporalio.client import Client
from temporalio.worker import Worker

from longtalk import ffmpeg_bin, temporal_connect
from longtalk.errors import HttpError
from longtalk.settings import Settings
from longtalk.store import ObjectStore
from longtalk.visibility import register_search_attributes
from workflows.purge import PurgeQueue
from workflows.webhook import DeliverWebhook

from . import errors
from .auth import Keys
from .context import Api
from .purge import PurgeActivities
from .routes import ROUTERS
from .service import Renders
from .webhooks import WebhookActivities


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
            return await errors.error_response(413, message)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise HttpError(413, message)
            return msg

        try:
            await self.app(scope, limited, send)
        except HttpError as exc:  # raised outside the app's own handlers (errors.install)
            await errors.error_response(exc.status, exc.message)(scope, receive, send)


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
    ffmpeg_bin.use(settings.ffmpeg)  # the HLS preview's audio segments
    api = Api.from_settings(settings, keys)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        # The routes' bucket reads run in the loop's default executor (asyncio.to_thread), whose
        # threads mostly wait on the S3 server. Python's default is cpu_count + 4 threads (6 on 2
        # cores), and 20 clients' /status calls (2 reads each) queued for them; as many threads
        # as the store keeps connections.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=ObjectStore.CONNECTIONS, thread_name_prefix="api-io"))
        c = client or await temporal_connect.connect(settings)
        s = store or ObjectStore.from_settings(settings)
        await asyncio.to_thread(s.ensure_bucket)
        await register_search_attributes(c)
        api.model.renders = renders = Renders(c, settings, s)
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
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.state.api = api
    return app
