"""The API's one door to input handling: a job dict in, a started render out.

Everything the API knows about parsing jobs and staging their inputs goes through `accept`,
so it can be re-pointed when input handling moves (URL inputs fetched by ingest) without
touching the routes.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from temporalio.client import Client

from longtalk.errors import InputError
from longtalk.estimate import estimate
from longtalk.inputs import parse_job, submit
from longtalk.settings import Settings
from longtalk.store import ObjectStore

from .service import attributes


def new_render_id() -> str:
    """RunPod's job ids are UUIDs; the render id is one too (a valid Temporal workflow id)."""
    return str(uuid.uuid4())


async def accept(client: Client, job: dict, settings: Settings, store: ObjectStore, owner: str, *,
                 execution_timeout: timedelta | None = None,
                 memo: dict | None = None) -> tuple[str, str, list[str]]:
    """Check `job` ({"input": {...}}), stage its inputs and start the render owned by `owner`
    (the API key's name, a search attribute); return the render id, its run id and the
    warnings the answer must carry (fields ignored, a picture cropped).

    Raises InputError (naming the field) before anything is stored when the job is refused."""
    parsed = await asyncio.to_thread(parse_job, job, settings)
    render_id = new_render_id()
    submission = await submit(client, settings, parsed, render_id, settings.backend, store, log=lambda _m: None,
                              fresh=True, execution_timeout=execution_timeout,
                              search_attributes=attributes(owner), memo=memo)
    return render_id, submission.handle.result_run_id, submission.warnings


async def estimate_body(client: Client, store: ObjectStore, settings: Settings, body: dict) -> dict:
    """/estimate: what the /run body `body` would take (longtalk.estimate); nothing is started
    or stored. InputError (naming the field) for what /run would refuse."""
    inp = body.get("input")
    if not isinstance(inp, dict):
        raise InputError("input", "required, a JSON object (the job)")
    job = await asyncio.to_thread(parse_job, {"input": inp}, settings)
    return await estimate(client, store, settings, job, settings.backend)
