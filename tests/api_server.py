"""The HTTP API in the test process: uvicorn on a free loopback port, as a task of the
session's event loop, against the session Temporal/S3 servers and in-process workers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid

import uvicorn

from api.app import create_app
from longtalk.stack import free_port

KEY_A = "key-a-" + uuid.uuid4().hex  # two API keys: two owners
KEY_B = "key-b-" + uuid.uuid4().hex
WEBHOOK_SECRET = "whsec_" + "c2VjcmV0LWZvci10aGUtd2ViaG9vay10ZXN0cw=="


def api_settings(settings, **overrides):
    return dataclasses.replace(
        settings, api_keys=f"alice:{KEY_A},bob:{KEY_B}", api_webhook_secret=WEBHOOK_SECRET,
        api_queue=f"api-{uuid.uuid4().hex[:6]}", api_webhook_backoff_s=0.3,
        api_address=f"127.0.0.1:{free_port()}", **overrides)


@contextlib.asynccontextmanager
async def running_api(settings, client, store, run_worker: bool = True):
    app = create_app(settings, client=client, store=store, run_worker=run_worker)
    host, port = settings.api_address.rsplit(":", 1)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=int(port), log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    try:
        yield f"http://{settings.api_address}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def cancel_running(client, owners: tuple[str, ...]) -> None:
    """Cancel the renders of these key names still running and wait for them to end: no render
    of one test module may still run when the next module counts its renders."""
    from longtalk.visibility import OWNER

    names = ", ".join(f"'{o}'" for o in owners)
    running = [w.id async for w in client.list_workflows(
        f"WorkflowType = 'RenderVideo' AND ExecutionStatus = 'Running' AND {OWNER} IN ({names})")]
    for rid in running:
        handle = client.get_workflow_handle(rid)
        await handle.cancel()
        try:
            await asyncio.wait_for(handle.result(), 120)
        except Exception:
            pass


@contextlib.asynccontextmanager
async def running_api_with_fleet(settings, client, store, workers, owners: tuple[str, ...] = ("alice",)):
    """running_api, with the in-process GPU worker's fleet record kept fresh as worker.py keeps
    it (the estimate counts healthy GPU workers from it); the owners' renders are cancelled after."""
    beats = [asyncio.create_task(w.longtalk_fleet.run()) for w in workers if getattr(w, "longtalk_fleet", None)]
    try:
        async with running_api(settings, client, store) as base:
            yield base
        await cancel_running(client, owners)
    finally:
        for beat in beats:
            beat.cancel()
