"""The GPU activity (task queue "gpu"): render one window with frame carry-over.

Inputs come from the bucket (reference, the previous window's tail PNGs, the window's
audio slice by byte range); outputs go back to it under the window's prefix:

    windows/{k:05d}/clip.mp4      the frames this window keeps (H.264 at crf 10: stitch encodes the output from it)
    windows/{k:05d}/tail_XX.png   its last M frames, lossless, for window k+1
    windows/{k:05d}/quality.json  the quality guard's record (longtalk.guard), after each attempt
    windows/{k:05d}/meta.json     written last: the window is done once this exists

Every attempt's new frames are measured (longtalk.quality); a hard failure renders the window
again with the next seed, at most LONGTALK_QUALITY_RETRIES times, counting the attempts an
earlier try recorded; the best attempt is kept (flagged if it still fails). A chain that
drifted or carried its tail too long starts again from the reference at a pause (a re-anchor,
decided here from the previous window's quality.json: no workflow command changes). The
guard's loop is longtalk.guarded's, which the RunPod handler runs too.

A retry or replay that finds meta.json returns it without rendering again.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from temporalio import activity

from cachetools import LRUCache

from longtalk import metrics
from longtalk.backends.base import RenderBackend, WindowJob
from longtalk.guard import Guard
from longtalk.guarded import GuardedWindow, meta_quality
from longtalk.payloads import GpuStarted, RenderContext, RenderWindowInput, RenderWindowResult, window_meta_key, window_prefix
from longtalk.errors import InputError
from longtalk.gpu_time import window_kind
from longtalk.store import ObjectStore
from longtalk.visibility import mode_of
from longtalk.window_io import WindowIO

from .common import heartbeating_async, map_errors


class GpuActivities:
    def __init__(self, store: ObjectStore, backends: dict[str, RenderBackend], cache_dir: Path,
                 identity: str | None = None, build_id: str = "", fleet=None, own_queue: str = "",
                 guard: Guard | None = None) -> None:
        self.store = store
        self.guard = guard or Guard()  # LONGTALK_QUALITY_*: bounds, re-renders, re-anchoring
        self.backends = backends
        self.cache_dir = cache_dir
        self.identity = identity or socket.gethostname()
        self.build_id = build_id  # in every heartbeat: which code is rendering this window
        self.window_io = WindowIO(cache_dir)  # reads the window's inputs, writes its outputs
        self.guarded = GuardedWindow(self.guard)  # the guard's loop, shared with the RunPod handler
        self.renders = 0  # backend calls made by this process (for tests and metrics)
        self.fleet = fleet  # longtalk.fleet.FleetRecord: what this worker is on, for the dashboard
        # chain affinity: this worker also takes windows from its own queue (chains whose last
        # window it rendered); a window from each queue may be accepted at once, and this lock
        # keeps the backend to one window at a time
        self.own_queue = own_queue
        self._gpu = asyncio.Lock()
        self.announcer = StartAnnouncer(self.identity)
        self._stored: LRUCache[tuple[str, int], float] = LRUCache(64)  # (render, window) -> when stored here

    @activity.defn(name="render_window")
    @map_errors
    async def render_window(self, inp: RenderWindowInput) -> RenderWindowResult:
        ctx, k = inp.context, inp.index
        stored = await asyncio.to_thread(stored_result, self.store, ctx.render_id, k)
        if stored is not None:
            return stored
        backend = self.backends.get(ctx.backend)
        if backend is None:
            raise InputError("backend", f"{ctx.backend!r} is not served by this worker "
                                        f"(it serves {', '.join(sorted(self.backends))})")
        state = {"window": k, "stage": "inputs", "fraction": 0.0}

        def progress(stage: str, fraction: float) -> None:
            state["stage"], state["fraction"] = stage, round(fraction, 3)

        def details() -> dict:
            device = getattr(backend, "heartbeat_details", None)
            return {**state, **(device() if device else {}), **({"build_id": self.build_id} if self.build_id else {})}

        async with heartbeating_async(details):
            taken = time.monotonic()
            # the chain's previous window stored here: the time between is the chain's dispatch gap
            previous = self._stored.pop((ctx.render_id, k - 1), None)
            job, anchor, recorded = await asyncio.to_thread(self.guarded.start, self.store, self.window_io, ctx, k,
                                                            inp.chain_first)
            state["stage"] = "waiting for the GPU"
            waiting = time.monotonic()
            async with self._gpu:
                gpu_wait = time.monotonic() - waiting
                taken += gpu_wait  # the window's time excludes the wait for the GPU
                frames, render_s, doc = await self.guarded.render(
                    self.store, ctx, job, anchor, recorded,
                    lambda attempt: self._on_gpu(backend, ctx, k, attempt, state, progress),
                    activity.info().attempt, state)
            state["stage"] = "store"
            try:
                result, busy_s = await asyncio.to_thread(self._store_window, ctx, k, frames, render_s, doc, taken,
                                                         queue_wait_s(activity.info(), gpu_wait))
            except BaseException:
                await self._fleet_end(False)
                raise
            # the worker counts busy until its window is stored; the window's times join its history
            spec = ctx.spec
            await self._fleet_end(True, window_kind(ctx.backend, mode_of(spec.input_type, spec.person_count),
                                                    spec.width, spec.height, spec.window),
                                  busy_s, render_s, None if previous is None else taken - previous)
            self._stored[(ctx.render_id, k)] = time.monotonic()
        return result

    async def _fleet_end(self, ok: bool, kind: str = "", busy_s: float = 0.0, gpu_s: float = 0.0,
                         gap_s: float | None = None) -> None:
        if self.fleet is not None:
            self.fleet.end(ok, kind, busy_s, gpu_s, gap_s)
            await self.fleet.publish()

    async def _on_gpu(self, backend: RenderBackend, ctx: RenderContext, k: int, job: WindowJob, state: dict,
                      progress) -> tuple[np.ndarray, float]:
        await asyncio.to_thread(record_attempt, self.store, self.identity, ctx.render_id, k)
        await self.announcer.announce(ctx.render_id, k)
        if self.fleet is not None:
            self.fleet.begin(ctx.render_id, k)
            await self.fleet.publish()
        try:
            state["stage"] = "render"
            started = time.monotonic()
            self.renders += 1
            try:
                frames = await backend.render_window(job, progress)
            except Exception as exc:
                metrics.WINDOW_FAILURES.labels(ctx.backend, type(exc).__name__).inc()
                raise
            render_s = time.monotonic() - started
        except BaseException:
            await self._fleet_end(False)
            raise
        metrics.WINDOWS_RENDERED.labels(ctx.backend).inc()
        metrics.RENDER_SECONDS.labels(ctx.backend).observe(render_s)
        return frames, render_s

    # ---- outputs -------------------------------------------------------------------
    def _store_window(self, ctx: RenderContext, k: int, frames: np.ndarray, render_s: float,
                      quality: dict, taken: float, queue_s: float) -> tuple[RenderWindowResult, float]:
        """Store the window (clip, tail, then meta.json: quality.json is stored); the result and how
        long the worker was held for it, from taking it (`taken`, time.monotonic) to meta.json.
        `queue_s`: how long the window waited for a GPU (the render page's chart)."""
        info = activity.info()
        meta = self.window_io.save(self.store, ctx, k, frames, render_s, {
            "attempt": info.attempt, "worker": self.identity,
            "activity_id": info.activity_id, "workflow_id": info.workflow_id,
            "quality": meta_quality(quality),
            # on which GPU (the render's usage, longtalk.usage)
            "device": self.fleet.device() if self.fleet is not None else "",
            "queue_s": queue_s,
        }, busy_since=taken)
        result = RenderWindowResult(index=k, clip_key=meta["clip_key"], frames=meta["frames"], rendered=True,
                                    render_s=render_s, attempt=info.attempt, worker=self.identity,
                                    worker_queue=self.own_queue)
        return result, meta["busy_s"]


def queue_wait_s(info: activity.Info, gpu_wait: float) -> float:
    """How long a window waited for a GPU: from Temporal scheduling this attempt to a worker
    starting it (both the server's clock), plus the wait for this worker's GPU (a window taken
    from the worker's own queue while another renders)."""
    on_queue = (info.started_time - info.current_attempt_scheduled_time).total_seconds()
    return round(max(0.0, on_queue) + gpu_wait, 3)


def stored_result(store: ObjectStore, render_id: str, k: int) -> RenderWindowResult | None:
    """The result of a window whose meta.json is stored (it is done: nothing to render)."""
    stored = store.get_json_or_none(window_meta_key(render_id, k))
    if stored is None:
        return None
    metrics.WINDOWS_REUSED.inc()
    return RenderWindowResult(index=k, clip_key=stored["clip_key"], frames=stored["frames"],
                              rendered=False, render_s=0.0, attempt=int(stored.get("attempt", 0)),
                              worker=str(stored.get("worker", "")))


def record_attempt(store: ObjectStore, identity: str, render_id: str, k: int) -> None:
    """One small object per backend call (or RunPod submission), so a finished window's work
    can be told apart from a redone one (a call that starts after meta.json exists would be
    a duplicate)."""
    info = activity.info()
    key = f"{window_prefix(render_id, k)}attempts/{info.attempt:03d}-{uuid.uuid4().hex[:8]}.json"
    store.put_json(key, {"attempt": info.attempt, "worker": identity,
                         "started_at": datetime.now(timezone.utc).isoformat()})


class StartAnnouncer:
    """Tells a render's workflow that a GPU began one of its windows (it leaves the queue:
    /status says IN_PROGRESS, and delayTime is fixed from then on). Once per render and
    process; best effort, a render that misses it reads as queued a while longer."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self._announced: LRUCache[str, None] = LRUCache(1024)  # renders told already

    async def announce(self, render_id: str, k: int) -> None:
        if render_id in self._announced:
            return
        self._announced[render_id] = None
        started = GpuStarted(at=activity.info().started_time.isoformat(), window=k, worker=self.identity)
        try:
            await activity.client().get_workflow_handle(render_id).signal("gpu_started", started)
        except Exception as exc:  # the render goes on; only its status reads queued longer
            activity.logger.warning("render %s: could not say that window %d started: %s", render_id, k, exc)
