"""What a RunPod job of this service carries, both ways: the dispatcher builds its input
(`job_input`), the handler reads it (`WindowRequest.from_input`).

    {"window": {"context": RenderContext as JSON, "index": k, "chain_first": c},
     "get": {key: presigned GET URL, ...},     every object the window reads, and the quality.json
                                               of the window (an earlier try's) and of the one before
     "put": {key: presigned PUT URL, ...},     clip, tail PNGs, quality.json, meta.json
     "stamp": {"attempt": n, "worker": ..., "activity_id": ..., "workflow_id": ...},
     "guard": {"bounds": "...", "retries": n, "reanchor": true, "max_carry_s": x}}

"guard" is the dispatcher's LONGTALK_QUALITY_* settings: the handler measures the window and
acts on it as the GPU activity does (longtalk.guarded), with the operator's settings of the
dispatcher, not the RunPod worker's. A job without it (a dispatcher of an earlier release) is
rendered without the guard.

The output is small JSON: {"keys": [...], "frames": n, "timings": {...}, "gpu": ..., ...}.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from temporalio.converter import value_to_type

from ..errors import InputError
from ..guard import Guard, parse_bounds
from ..guarded import quality_keys
from ..payloads import RenderContext, RenderWindowInput
from ..window_io import input_keys, output_keys


def guard_input(settings) -> dict:
    """The job's "guard": the dispatcher's LONGTALK_QUALITY_* settings."""
    return {"bounds": settings.quality_bounds, "retries": settings.quality_retries,
            "reanchor": settings.quality_reanchor, "max_carry_s": settings.quality_max_carry_s}


def job_input(inp: RenderWindowInput, store, expiry_s: int, stamp: dict, guard: dict) -> dict:
    """The /run input for one window, with fresh presigned URLs from `store` (ObjectStore)."""
    ctx, k = inp.context, inp.index
    reads, writes = quality_keys(ctx, k, inp.chain_first)
    return {
        "window": {"context": dataclasses.asdict(ctx), "index": k, "chain_first": inp.chain_first},
        "get": {key: store.presign(key, expiry_s) for key in [*input_keys(ctx, k, inp.chain_first), *reads]},
        "put": {key: store.presign_put(key, expiry_s) for key in [*output_keys(ctx, k), writes]},
        "stamp": stamp,
        "guard": guard,
    }


def parse_guard(value) -> Guard | None:
    """The job's "guard", or an InputError naming the field."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InputError("guard", f"must be an object, got {type(value).__name__}")
    unknown = set(value) - {"bounds", "retries", "reanchor", "max_carry_s"}
    if unknown:
        raise InputError("guard", f"unknown field {sorted(unknown)[0]!r}")
    try:
        defaults = Guard()
        reanchor = value.get("reanchor", defaults.reanchor)
        if not isinstance(reanchor, bool):
            raise ValueError(f"reanchor: must be true or false, got {reanchor!r}")
        carry = value.get("max_carry_s", defaults.max_carry_s)
        if isinstance(carry, bool) or not isinstance(carry, (int, float)):
            raise ValueError(f"max_carry_s: must be a number, got {carry!r}")
        return Guard(bounds=parse_bounds(str(value.get("bounds") or "")), retries=value.get("retries", defaults.retries),
                     reanchor=reanchor, max_carry_s=float(carry))
    except ValueError as exc:
        raise InputError("guard", str(exc)) from None


@dataclass
class WindowRequest:
    context: RenderContext
    index: int
    chain_first: int
    get: dict[str, str]
    put: dict[str, str]
    stamp: dict
    guard: Guard | None = None  # None: render without the guard (a dispatcher of an earlier release)

    @classmethod
    def from_input(cls, value) -> "WindowRequest":
        """The job's input, or an InputError naming the field that is missing or wrong."""
        if not isinstance(value, dict):
            raise InputError("input", f"must be an object, got {type(value).__name__}")
        window = value.get("window")
        if not isinstance(window, dict):
            raise InputError("window", "missing: the job carries no window")
        try:
            context = value_to_type(RenderContext, window.get("context"))
        except Exception as exc:
            raise InputError("window.context", f"not a render context: {exc}") from None
        for name in ("index", "chain_first"):
            if not isinstance(window.get(name), int) or window[name] < 0:
                raise InputError(f"window.{name}", f"must be a non-negative integer, got {window.get(name)!r}")
        urls = {}
        for name in ("get", "put"):
            if not isinstance(value.get(name), dict):
                raise InputError(name, "must be an object of object key -> presigned URL")
            urls[name] = value[name]
        guard = parse_guard(value.get("guard"))
        writes = output_keys(context, window["index"])
        if guard is not None:
            writes.append(quality_keys(context, window["index"], window["chain_first"])[1])
        missing = [k for k in writes if k not in urls["put"]]
        if missing:
            raise InputError("put", f"no presigned URL for {missing[0]}")
        return cls(context=context, index=window["index"], chain_first=window["chain_first"],
                   get=urls["get"], put=urls["put"], stamp=dict(value.get("stamp") or {}), guard=guard)
