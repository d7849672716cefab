"""The HTTP API in the test process: uvicorn on a free loopback port, as a task of the
session's event loop, against the session Temporal/S3 servers and in-process workers."""

from __future__ import annotations

import asyncio
import contextlib

from api.app import create_app
from longtalk.testing import serving


@contextlib.asynccontextmanager
async def running_api(settings, client, store, run_worker: bool = True):
    """The API of `settings` (longtalk.testing.api_settings) until the block ends; yields its URL."""
    async with serving(create_app(settings, client=client, store=store, run_worker=run_worker),
                       settings.api_address) as base:
        yield base


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
