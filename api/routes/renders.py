"""One render, RunPod's routes: start it (/run, /runsync; /estimate says what it would take), read it (/status, /status-sync,
/stream), stop it (/cancel) and start it again (/retry)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from fastapi import APIRouter, Request

from longtalk.errors import HttpError
from longtalk.payloads import render_prefix

from .. import jobs
from ..context import Api, api_of
from ..service import CANCELLED, FAILED, IN_PROGRESS, IN_QUEUE, TERMINAL, TIMED_OUT
from ..webhooks import check_url, start_delivery, webhook_key
from .parse import json_body, policy, wait_s

log = logging.getLogger("longtalk.api")

router = APIRouter(prefix="/v2/{endpoint_id}")


async def run_job(api: Api, request: Request, owner: str) -> tuple[str, list[str]]:
    body = await json_body(request)
    inp = body.get("input")
    if not isinstance(inp, dict):
        raise HttpError(400, "input: required, a JSON object (the job)")
    execution_s, ttl_s, low = policy(body, api.settings)
    webhook = body.get("webhook")
    renders = api.renders
    if webhook is not None:
        await asyncio.to_thread(check_url, webhook, api.settings)
    render_id, run_id, warnings = await jobs.accept(
        renders.client, {"input": inp}, api.settings, renders.store, owner,
        execution_timeout=timedelta(seconds=execution_s) if execution_s else None,
        memo={"ttl_s": ttl_s, "execution_timeout_s": execution_s, "low_priority": low,
              "webhook": webhook is not None})
    if webhook is not None:
        await asyncio.to_thread(renders.store.put_json, webhook_key(render_id), {"url": webhook})
        await start_delivery(renders.client, api.settings, render_id, run_id)
    log.info("render %s accepted for %s", render_id, owner)
    return render_id, warnings


@router.post("/run", summary="Start a render (asynchronous)")
async def run(endpoint_id: str, request: Request):
    api = api_of(request)
    owner = api.owner_of(request, endpoint_id)
    render_id, warnings = await run_job(api, request, owner)
    return {"id": render_id, "status": IN_QUEUE, "warnings": warnings}


@router.post("/estimate", summary="What a /run body would take: windows, GPU seconds, wall time, cost "
                                 "(nothing is started or stored)")
async def estimate(endpoint_id: str, request: Request):
    api = api_of(request)
    api.owner_of(request, endpoint_id)
    return await jobs.estimate_body(api.renders.client, api.renders.store, api.settings, await json_body(request))


@router.post("/runsync", summary="Start a render and wait up to `wait` ms for it")
async def runsync(endpoint_id: str, request: Request):
    api = api_of(request)
    owner = api.owner_of(request, endpoint_id)
    seconds = wait_s(request)
    render_id, _warnings = await run_job(api, request, owner)  # /status repeats them (the memo)
    await api.renders.wait(render_id, None, seconds)
    return await api.renders.status_body(render_id, await api.owned(render_id, owner))


@router.api_route("/status/{render_id}", methods=["GET", "POST"], summary="A render's status and output")
async def status(endpoint_id: str, render_id: str, request: Request):
    api = api_of(request)
    owner = api.owner_of(request, endpoint_id)
    return await api.renders.status_body(render_id, await api.owned(render_id, owner))


@router.api_route("/status-sync/{render_id}", methods=["GET", "POST"],
                  summary="A render's status, waiting up to `wait` ms for it to end")
async def status_sync(endpoint_id: str, render_id: str, request: Request):
    api = api_of(request)
    owner = api.owner_of(request, endpoint_id)
    seconds = wait_s(request)
    desc = await api.owned(render_id, owner)
    if desc.close_time is None:
        await api.renders.wait(render_id, desc.run_id, seconds)
        desc = await api.owned(render_id, owner)
    return await api.renders.status_body(render_id, desc)


@router.api_route("/stream/{render_id}", methods=["GET", "POST"], summary="Progress since the last call, then the result")
async def stream(endpoint_id: str, render_id: str, request: Request):
    """The progress updates since the last call, then the result. The official SDK's
    job.stream() ends only on COMPLETED, FAILED or TIMED_OUT: after a cancelled render's
    last update this answers 410, which ends it too."""
    api = api_of(request)
    owner = api.owner_of(request, endpoint_id)
    desc = await api.owned(render_id, owner)
    store = api.renders.store
    body, said = await asyncio.gather(api.renders.status_body(render_id, desc),
                                      asyncio.to_thread(store.get_json_or_none, cursor_key(render_id, desc.run_id)))
    mark = None
    chunks = []
    if body["status"] in TERMINAL:
        if said == ["end"]:
            if body["status"] == CANCELLED:
                raise HttpError(410, f"render {render_id} was cancelled; its stream has ended")
        else:
            mark = ["end"]
            final = body.get("output") if body["status"] != FAILED and body["status"] != TIMED_OUT else None
            chunks.append({"output": final if final is not None else
                           {"status": body["status"], "error": body.get("error")}})
    elif "output" in body:
        out = body["output"]
        progress = [out["stage"], out["windows_done"], out["windows_total"]]
        if said != progress:
            mark = progress
            chunks.append({"output": out})
    if mark is not None:
        await asyncio.to_thread(store.put_json, cursor_key(render_id, desc.run_id), mark)
    return {"id": render_id, "status": body["status"], "stream": chunks}


def cursor_key(render_id: str, run_id: str) -> str:
    """What /stream last gave of the render's run, kept in the bucket (not in one API
    process's memory), so any of the API's processes goes on from it."""
    return f"{render_prefix(render_id)}stream/{run_id}.json"


@router.post("/cancel/{render_id}", summary="Cancel a render (the GPU stops its window)")
async def cancel(endpoint_id: str, render_id: str, request: Request):
    api = api_of(request)
    owner = api.owner_of(request, endpoint_id)
    desc = await api.owned(render_id, owner)
    if desc.close_time is None:
        await api.renders.cancel(render_id, desc)
        return {"id": render_id, "status": CANCELLED}
    return {"id": render_id, "status": (await api.renders.status_body(render_id, desc))["status"]}


@router.post("/retry/{render_id}", summary="Start a FAILED, TIMED_OUT or CANCELLED render again (same id)")
async def retry(endpoint_id: str, render_id: str, request: Request):
    """RunPod retries FAILED and TIMED_OUT jobs; a CANCELLED render is resumed the same way (the
    dashboard's Resume): its stored windows are kept."""
    api = api_of(request)
    owner = api.owner_of(request, endpoint_id)
    desc = await api.owned(render_id, owner)
    renders = api.renders
    current = (await renders.status_body(render_id, desc))["status"] if desc.close_time else IN_PROGRESS
    if current not in (FAILED, TIMED_OUT, CANCELLED):
        raise HttpError(400, f"id: only FAILED, TIMED_OUT or CANCELLED renders can be retried; {render_id} is {current}")
    handle = await renders.retry(render_id, desc, owner)
    if (await desc.memo()).get("webhook"):
        new = await handle.describe()
        await start_delivery(renders.client, api.settings, render_id, new.run_id)
    return {"id": render_id, "status": IN_QUEUE}
