"""The RunPod Serverless handler: one window per job, with the code the GPU activity uses
(longtalk.window_io + the backend), over presigned URLs (longtalk.serverless.presigned).

At start (`prepare`) the comfyui backend waits for its ComfyUI and runs the doctor check
once; while that check fails every job is answered with its problems (`error`), not
rendered. The preview and timed backends need nothing (tests, rehearsals).

The quality guard runs here, on the RunPod worker that holds the frames (longtalk.guarded,
the same code as the GPU activity's): measuring needs the frames, which exist only here (the
dispatcher would have to download and decode the stored clip, a lossy copy, and could no
longer have the window rendered again within the same job). Its record (quality.json) goes
out through a presigned PUT after every attempt, like meta.json; a retried job reads it back
and goes on from the recorded redo.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from cachetools import LRUCache

from ..backends import make_backends
from ..errors import ServiceError
from ..guarded import GuardedWindow, meta_quality
from ..settings import Settings
from ..window_io import WindowIO, output_keys
from .presigned import PresignedStore
from .protocol import WindowRequest

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 1.0  # progress_update costs a thread and a POST: not more often than this


class WindowHandler:
    def __init__(self, settings: Settings, backends: dict, progress_update=None, worker_id: str = "") -> None:
        self.settings = settings
        self.worker_id = worker_id  # RunPod's worker (RUNPOD_POD_ID): meta.json's "worker"
        self.backends = backends
        self.window_io = WindowIO(settings.data_dir / "cache")
        self.progress_update = progress_update  # runpod.serverless.progress_update (None: not sent)
        self.unfit = ""  # the doctor's problems: every job answers this while it is set
        self.device: dict = {}
        self.server = ""  # the ComfyUI version line
        self._guarded: LRUCache = LRUCache(2)  # Guard -> GuardedWindow (its reference numbers, per render)

    @classmethod
    def from_env(cls, progress_update=None) -> "WindowHandler":
        """The composition root of a worker container: LONGTALK_ settings, the graph config,
        and the worker id RunPod gives it."""
        settings = Settings.from_env()
        graph_config = None
        if settings.backend == "comfyui":
            from ..comfy.config import GraphConfig

            graph_config = GraphConfig.from_env()
        return cls(settings, make_backends(settings, graph_config), progress_update,
                   worker_id=os.environ.get("RUNPOD_POD_ID", ""))

    @property
    def backend(self):
        return self.backends[self.settings.backend]

    async def prepare(self) -> None:
        """Wait for the backend (ComfyUI) and check it once; a failed check is kept in `unfit`."""
        wait_ready = getattr(self.backend, "wait_ready", None)
        if wait_ready is not None:
            self.device = await wait_ready()
        check = getattr(self.backend, "check", None)
        if check is not None and self.settings.comfy_doctor:
            report = await check()
            for line in report.lines():
                log.info("doctor: %s", line)
            self.server = str(report.server.get("system", {}).get("comfyui_version", "")) if report.server else ""
            if not report.ok:
                self.unfit = (f"the {self.backend.name} backend fails {len(report.problems)} doctor check(s): "
                              + "; ".join(report.problems))
        close = getattr(self.backend, "close", None)
        if close is not None:  # its HTTP session belonged to this loop; the job loop opens its own
            await close()

    async def handle(self, job: dict) -> dict:
        """runpod.serverless.start's handler: {"error": ...} or the window's small result."""
        if self.unfit:
            return {"error": self.unfit}
        try:
            request = WindowRequest.from_input(job.get("input"))
            return await self._render(job, request)
        except ServiceError as exc:
            kind = "input" if not exc.retryable else "transient"
            return {"error": f"{type(exc).__name__} ({kind}): {exc}"}

    async def _render(self, job: dict, req: WindowRequest) -> dict:
        ctx, k = req.context, req.index
        backend = self.backends.get(ctx.backend)
        if backend is None:
            return {"error": f"backend: {ctx.backend!r} is not served by this endpoint "
                             f"(it serves {', '.join(sorted(self.backends))})"}
        store = PresignedStore(req.get, req.put)
        stamp = {**req.stamp, "worker": self.worker_id or f"runpod job {job.get('id', '')}", "job": job.get("id", "")}
        progress = self._progress(job, k)

        async def render_one(window_job) -> tuple:
            began = time.monotonic()
            frames = await backend.render_window(window_job, progress)
            return frames, time.monotonic() - began

        started = time.monotonic()
        out: dict = {}
        if req.guard is None:  # a dispatcher of an earlier release
            window_job = await asyncio.to_thread(self.window_io.load, store, ctx, k, req.chain_first)
            loaded = time.monotonic()
            frames, render_s = await render_one(window_job)
        else:
            guarded = self._guarded.get(req.guard) or self._guarded.setdefault(req.guard, GuardedWindow(req.guard))
            window_job, anchor, recorded = await asyncio.to_thread(guarded.start, store, self.window_io, ctx, k,
                                                                   req.chain_first)
            loaded = time.monotonic()
            frames, render_s, doc = await guarded.render(store, ctx, window_job, anchor, recorded, render_one,
                                                         int(req.stamp.get("attempt") or 0))
            stamp["quality"] = out["quality"] = meta_quality(doc)
        rendered = time.monotonic()
        meta = await asyncio.to_thread(self.window_io.save, store, ctx, k, frames, render_s, stamp)
        device = getattr(backend, "heartbeat_details", lambda: {})()
        return {
            "index": k, "keys": output_keys(ctx, k), "frames": meta["frames"],
            "timings": {"inputs_s": round(loaded - started, 3), "render_s": round(render_s, 3),
                        "store_s": round(time.monotonic() - rendered, 3)},
            "gpu": device.get("device") or self.device.get("device") or "",
            "comfyui": self.server, **out,
        }

    def _progress(self, job: dict, k: int):
        last = [0.0]

        def progress(stage: str, fraction: float) -> None:
            now = time.monotonic()
            if self.progress_update is None or (now - last[0] < PROGRESS_EVERY_S and fraction < 1):
                return
            last[0] = now
            self.progress_update(job, {"window": k, "stage": stage, "fraction": round(fraction, 3)})

        return progress


def main() -> None:
    """The container's entry point: `python -m longtalk.serverless`."""
    import runpod

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = WindowHandler.from_env(runpod.serverless.progress_update)
    Path(handler.settings.data_dir).mkdir(parents=True, exist_ok=True)
    asyncio.run(handler.prepare())
    runpod.serverless.start({"handler": handler.handle})
