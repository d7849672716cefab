"""Kubernetes probes, without a key: /livez while the process answers (with its pid: which of
the API's processes did); /readyz once the app has connected (its lifespan) and Temporal's
frontend answers its health check."""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..context import api_of

router = APIRouter()


@router.get("/livez", include_in_schema=False)
async def livez():
    return {"live": True, "pid": os.getpid()}


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request):
    renders = api_of(request).model.renders
    ok = False
    if renders is not None:
        with contextlib.suppress(Exception):
            ok = await renders.client.service_client.check_health(timeout=timedelta(seconds=3))
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)
