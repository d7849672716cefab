"""The API's one door to input handling: a job dict in, a started render out.

Everything the API knows about parsing jobs and staging their inputs goes through `accept`,
so it can be re-pointed when input handling moves (URL inputs fetched by ingest) without
touching the routes.
"""

from __future__ import annotations

import asyncio
import uuid

from temporalio.client import Client

from comfy_graphs.config import GraphConfig
from longtalk.jobs import parse_job
from longtalk.renders import submit
from longtalk.settings import Settings
from longtalk.store import ObjectStore


def new_render_id() -> str:
    """RunPod's job ids are UUIDs; the render id is one too (a valid Temporal workflow id)."""
    return str(uuid.uuid4())


async def accept(client: Client, job: dict, settings: Settings, store: ObjectStore, owner: str, *,
                 graph_config: GraphConfig | None = None, check=None, **start_options) -> str:
    """Check `job` ({"input": {...}}), stage its inputs and start the render; return its id.

    Raises InputError (naming the field) before anything is stored when the job is refused;
    `check(job)`, when given, runs after parsing and before staging (the webhook's guard).
    `owner` is the API key's name; `start_options` go to longtalk.renders.start."""
    seed = (graph_config or GraphConfig.from_env()).sampler.seed
    parsed = await asyncio.to_thread(parse_job, job, settings, seed)
    if check is not None:
        await asyncio.to_thread(check, parsed)
    render_id = new_render_id()
    await submit(client, settings, parsed, render_id, settings.backend, store, log=lambda _m: None,
                 **start_options)
    return render_id
