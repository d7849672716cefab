"""Re-rendering windows from..to of a finished render as a new output version: which windows
it would redo (GET), and doing it (POST)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request

from longtalk.errors import HttpError
from longtalk.inputs import rerender

from ..context import Api, api_of
from ..service import IN_QUEUE, OWNER_KEY, attributes
from .parse import json_body

log = logging.getLogger("longtalk.api")

router = APIRouter(prefix="/v2/{endpoint_id}")


async def window_range(api: Api, request: Request, render_id: str, owner: str, body: dict) -> tuple:
    await api.owned(render_id, owner)
    params = {**request.query_params, **body}
    for key in ("from", "to"):
        if key not in params:
            raise HttpError(400, f"{key}: required, a window index (from 0)")
    return params["from"], params["to"]


@router.get("/rerender/{render_id}", summary="Which windows a re-render of from..to would redo")
async def rerender_preview(endpoint_id: str, render_id: str, request: Request):
    api = api_of(request)
    owner = api.owner_of(request, endpoint_id)
    first, last = await window_range(api, request, render_id, owner, {})
    preview = await rerender.rerender_preview(api.renders.client, api.renders.store, render_id, first, last)
    return {"id": render_id, **preview.body()}


@router.post("/rerender/{render_id}", summary="Re-render windows from..to of a finished render as a new output version")
async def rerender_start(endpoint_id: str, render_id: str, request: Request):
    api = api_of(request)
    owner = api.owner_of(request, endpoint_id)
    body = await json_body(request, required=False)
    first, last = await window_range(api, request, render_id, owner, body)
    desc = await api.owned(render_id, owner)
    memo = await desc.memo()
    _handle, preview, new_id = await rerender.start_rerender(
        api.renders.client, api.settings, api.renders.store, render_id, first, last,
        prompt=body.get("prompt"), seed=body.get("seed"),
        # an admin's re-render belongs to the base render's owner
        search_attributes=attributes(desc.typed_search_attributes.get(OWNER_KEY) or owner),
        memo={**memo, "webhook": False})
    version = int(new_id.rsplit(".v", 1)[1])
    log.info("render %s: re-render %s of windows %d-%d for %s", render_id, new_id, preview.first,
             preview.last, owner)
    return {"id": new_id, "status": IN_QUEUE, "version": version, **preview.body()}
