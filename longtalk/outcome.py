"""A render's outcome as clients show it: what starter.py and the HTTP API share (starting a
render is `longtalk.inputs.submit`; running one is the workflow, workflows/render.py).

    result_output(...)     a RenderResult as the seed worker's output (`video` inline when small)
    cancelled_output(...)  what a cancelled render kept (its manifest's finished windows)
    failure_message(exc)   the innermost message of a failed render (names the field)
"""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

from .payloads import RenderResult, derived_keys
from .settings import Settings
from .store import ObjectStore


def result_output(result: RenderResult, settings: Settings, store: ObjectStore, output: Path | None = None) -> dict:
    """The result JSON as the old worker returned it: `video` inline when small enough
    (`output`: also download the video to this file)."""
    out = dataclasses.asdict(result)
    for optional in ("video_path", "runpod_execution_s"):  # only where they say something
        if out.get(optional) is None:
            out.pop(optional, None)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        store.download(result.video_key, output)
        out["output_file"] = str(output)
    if not result.video_path:
        if result.size_bytes <= settings.inline_video_max_bytes:
            data = output.read_bytes() if output is not None else store.get_bytes(result.video_key)
            out["video"] = "data:video/mp4;base64," + base64.b64encode(data).decode()
        else:
            out["video_omitted"] = (f"video is {result.size_bytes} bytes, over the inline limit of "
                                    f"{settings.inline_video_max_bytes}; use video_url")
    return out


def cancelled_output(store: ObjectStore, render_id: str) -> dict:
    """A cancelled render's summary: its windows, and those finished (kept: resubmitting resumes)."""
    manifest = store.get_json_or_none(derived_keys(render_id)["manifest"]) or {}
    return {"render_id": render_id, "status": "cancelled",
            "windows": manifest.get("windows"), "windows_finished": manifest.get("windows_finished", [])}


def failure_message(exc: BaseException) -> str:
    parts = []
    while exc is not None:
        msg = getattr(exc, "message", None) or str(exc)
        if msg and msg not in parts:
            parts.append(msg)
        exc = exc.__cause__
    return parts[-1] if parts else "render failed"
