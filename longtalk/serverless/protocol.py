"""What a RunPod job of this service carries, both ways: the dispatcher builds its input
(`job_input`), the handler reads it (`WindowRequest.from_input`).

    {"window": {"context": RenderContext as JSON, "index": k, "chain_first": c},
     "get": {key: presigned GET URL, ...},     every object the window reads
     "put": {key: presigned PUT URL, ...},     clip, tail PNGs, meta.json
     "stamp": {"attempt": n, "worker": ..., "activity_id": ..., "workflow_id": ...}}

The output is small JSON: {"keys": [...], "frames": n, "timings": {...}, "gpu": ..., ...}.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from temporalio.converter import value_to_type

from ..errors import InputError
from ..payloads import RenderContext, RenderWindowInput
from ..window_io import input_keys, output_keys


def job_input(inp: RenderWindowInput, store, expiry_s: int, stamp: dict) -> dict:
    """The /run input for one window, with fresh presigned URLs from `store` (ObjectStore)."""
    ctx, k = inp.context, inp.index
    return {
        "window": {"context": dataclasses.asdict(ctx), "index": k, "chain_first": inp.chain_first},
        "get": {key: store.presign(key, expiry_s) for key in input_keys(ctx, k, inp.chain_first)},
        "put": {key: store.presign_put(key, expiry_s) for key in output_keys(ctx, k)},
        "stamp": stamp,
    }


@dataclass
class WindowRequest:
    context: RenderContext
    index: int
    chain_first: int
    get: dict[str, str]
    put: dict[str, str]
    stamp: dict

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
        missing = [k for k in output_keys(context, window["index"]) if k not in urls["put"]]
        if missing:
            raise InputError("put", f"no presigned URL for {missing[0]}")
        return cls(context=context, index=window["index"], chain_first=window["chain_first"],
                   get=urls["get"], put=urls["put"], stamp=dict(value.get("stamp") or {}))
