"""The "timed" render backend: the preview renderer plus a fixed time per window, standing in
for GPU time, so tests and benchmarks can run several "GPU" workers on one small machine.

A real window takes tens of seconds on a GPU (a 4090: ~80 s for 81 frames at 480p with a
4-step LoRA) and none of that time is spent on the host's CPU. This backend reproduces that
shape: the window takes LONGTALK_TIMED_WINDOW_S seconds of wall time, spent in an asyncio
sleep (no core held), while the preview renderer draws the frames in a thread beside it. A
window therefore takes max(window_s, preview time): with a small picture (64x64, a few ms
per frame) the preview is far shorter, and G workers on two cores behave like G GPUs.

Selected with LONGTALK_BACKEND=timed (the worker then serves "preview" and "timed"; a render
asks for it by its backend name, e.g. `starter.py --backend timed`).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from .base import ProgressFn, WindowJob
from .preview import render_preview


class TimedBackend:
    name = "timed"

    def __init__(self, window_s: float) -> None:
        if window_s < 0:
            raise ValueError(f"LONGTALK_TIMED_WINDOW_S: must be >= 0, got {window_s}")
        self.window_s = window_s
        self.calls = 0

    async def render_window(self, job: WindowJob, progress: ProgressFn | None = None) -> np.ndarray:
        self.calls += 1
        started = time.monotonic()
        frames = asyncio.create_task(asyncio.to_thread(render_preview, job))
        # report progress while "the GPU" works, as a sampler's steps would (the activity
        # wrapper heartbeats on its own; this only makes the heartbeat details move)
        while (left := self.window_s - (time.monotonic() - started)) > 0:
            await asyncio.sleep(min(left, 1.0))
            if progress is not None:
                progress("render", min(1.0, (time.monotonic() - started) / max(self.window_s, 1e-9)))
        result = await frames
        if progress is not None:
            progress("render", 1.0)
        return result

    def heartbeat_details(self) -> dict:
        """Its "GPU" by name: the fleet page and the estimate's GPU kinds show it."""
        return {"device": f"timed GPU stand-in ({self.window_s:g} s a window)"}

    async def close(self) -> None:
        return None
