"""The endpoint as a whole: its health (jobs and GPU workers) and purging its queue."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..context import api_of

router = APIRouter(prefix="/v2/{endpoint_id}")


@router.post("/purge-queue", summary="Cancel your renders that no GPU has started on (answers at once, "
                                     "the cancels follow)")
async def purge_queue(endpoint_id: str, request: Request):
    api = api_of(request)
    owner = api.owner_of(request, endpoint_id)
    return {"removed": await api.renders.purge_queue(owner), "status": "completed"}


@router.get("/health", summary="Jobs (from Temporal visibility) and GPU workers")
async def health(endpoint_id: str, request: Request):
    api = api_of(request)
    owner = api.owner_of(request, endpoint_id, public=api.settings.api_public_health)
    return await api.renders.health(owner)
