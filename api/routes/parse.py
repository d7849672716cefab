"""Reading a request: its JSON or form body and the query parameters several routes share.
A bad value is an HttpError(400) naming the field."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs

from fastapi import Request

from longtalk.errors import HttpError
from longtalk.settings import Settings

WAIT_DEFAULT_MS, WAIT_MIN_MS, WAIT_MAX_MS = 90_000, 1_000, 300_000


async def json_body(request: Request, required: bool = True) -> dict:
    raw = await request.body()
    if not raw.strip():
        if required:
            raise HttpError(400, "body: a JSON object is required")
        return {}
    try:
        body = json.loads(raw) if len(raw) < 1 << 20 else await asyncio.to_thread(json.loads, raw)
    except (ValueError, RecursionError):
        raise HttpError(400, "body: not valid JSON") from None
    if not isinstance(body, dict):
        raise HttpError(400, "body: must be a JSON object")
    return body


async def form(request: Request) -> dict:
    """A urlencoded form body (no python-multipart needed)."""
    raw = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def wait_s(request: Request) -> float:
    raw = request.query_params.get("wait")
    if raw is None:
        return WAIT_DEFAULT_MS / 1000
    try:
        ms = int(raw)
    except ValueError:
        raise HttpError(400, f"wait: must be an integer number of milliseconds, got {raw!r}") from None
    if not WAIT_MIN_MS <= ms <= WAIT_MAX_MS:
        raise HttpError(400, f"wait: must be from {WAIT_MIN_MS} to {WAIT_MAX_MS} ms, got {ms}")
    return ms / 1000


def policy(body: dict, settings: Settings) -> tuple[int, int, bool]:
    """(execution timeout s (0 = none), ttl s, low priority) from the body's policy."""
    given = body.get("policy")
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise HttpError(400, "policy: must be an object")

    def ms(key: str, default_s: int) -> int:
        value = given.get(key)
        if value is None:
            return default_s
        if isinstance(value, bool) or not isinstance(value, int) or value < 1000:
            raise HttpError(400, f"policy.{key}: must be an integer of at least 1000 (ms), got {value!r}")
        return -(-value // 1000)

    low = given.get("lowPriority", False)
    if not isinstance(low, bool):
        raise HttpError(400, f"policy.lowPriority: must be true or false, got {low!r}")
    return ms("executionTimeout", settings.api_execution_timeout_s), ms("ttl", settings.api_ttl_s), low
