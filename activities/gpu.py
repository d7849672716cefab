"""The GPU activity (task queue "gpu"): render one window with frame carry-over.

Inputs come from the bucket (reference, the previous window's tail PNGs, the window's
audio slice by byte range); outputs go back to it under the window's prefix:

    windows/{k:05d}/clip.mp4      the frames this window keeps, encoded once (H.264)
    windows/{k:05d}/tail_XX.png   its last M frames, lossless, for window k+1
    windows/{k:05d}/meta.json     written last: the window is done once this exists

A retry or replay that finds meta.json returns it without rendering again.
"""

from __future__ import annotations

import asyncio
import json
import socket
import tempfile
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from temporalio import activity

from longtalk import av_io, metrics
from longtalk.backends.base import RenderBackend, WindowJob
from longtalk.payloads import (
    GpuStarted, RenderContext, RenderWindowInput, RenderWindowResult, clip_key, tail_keys, window_meta_key,
    window_prefix,
)
from longtalk.errors import InputError, OutputMismatch, TransientError
from longtalk.gpu_time import window_kind
from longtalk.store import ObjectStore
from longtalk.visibility import mode_of
from longtalk.windows import window

from .common import heartbeating_async, map_errors


class GpuActivities:
    def __init__(self, store: ObjectStore, backends: dict[str, RenderBackend], cache_dir: Path,
                 identity: str | None = None, build_id: str = "", fleet=None, own_queue: str = "") -> None:
        self.store = store
        self.backends = backends
        self.cache_dir = cache_dir
        self.identity = identity or socket.gethostname()
        self.build_id = build_id  # in every heartbeat: which code is rendering this window
        self._references: OrderedDict[str, np.ndarray] = OrderedDict()
        self._sizes: dict[str, int] = {}  # objects never change once written (keys are per render)
        # a window's small objects (M tail PNGs in, M out, the audio slices) move in parallel:
        # one after the other they cost a round trip each, between two windows on the GPU
        self._io = ThreadPoolExecutor(max_workers=8, thread_name_prefix="window-io")
        self.renders = 0  # backend calls made by this process (for tests and metrics)
        self.fleet = fleet  # longtalk.fleet.FleetRecord: what this worker is on, for the dashboard
        # chain affinity: this worker also takes windows from its own queue (chains whose last
        # window it rendered); a window from each queue may be accepted at once, and this lock
        # keeps the backend to one window at a time
        self.own_queue = own_queue
        self._gpu = asyncio.Lock()
        self._announced: dict[str, None] = {}  # renders this process told that a GPU began a window
        self._stored: OrderedDict[tuple[str, int], float] = OrderedDict()  # (render, window) -> when stored

    @activity.defn(name="render_window")
    @map_errors
    async def render_window(self, inp: RenderWindowInput) -> RenderWindowResult:
        ctx, k = inp.context, inp.index
        meta_key = window_meta_key(ctx.render_id, k)
        stored = await asyncio.to_thread(self.store.get_json_or_none, meta_key)
        if stored is not None:
            metrics.WINDOWS_REUSED.inc()
            return RenderWindowResult(index=k, clip_key=stored["clip_key"], frames=stored["frames"],
                                      rendered=False, render_s=0.0, attempt=int(stored.get("attempt", 0)),
                                      worker=str(stored.get("worker", "")))
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
            job = await asyncio.to_thread(self._window_job, ctx, k, inp.chain_first)
            state["stage"] = "waiting for the GPU"
            waiting = time.monotonic()
            async with self._gpu:
                taken += time.monotonic() - waiting  # the window's time excludes the wait for the GPU
                frames, render_s = await self._on_gpu(backend, ctx, k, job, state, progress)
            state["stage"] = "store"
            try:
                result, busy_s = await asyncio.to_thread(self._store_window, ctx, k, frames, render_s, taken)
            except BaseException:
                await self._fleet_end(False)
                raise
            # the worker counts busy until its window is stored; the window's times join its history
            spec = ctx.spec
            await self._fleet_end(True, window_kind(ctx.backend, mode_of(spec.input_type, spec.person_count),
                                                    spec.width, spec.height, spec.window),
                                  busy_s, render_s, None if previous is None else taken - previous)
            self._stored[(ctx.render_id, k)] = time.monotonic()
            while len(self._stored) > 64:
                self._stored.popitem(last=False)
        return result

    async def _fleet_end(self, ok: bool, kind: str = "", busy_s: float = 0.0, gpu_s: float = 0.0,
                         gap_s: float | None = None) -> None:
        if self.fleet is not None:
            self.fleet.end(ok, kind, busy_s, gpu_s, gap_s)
            await self.fleet.publish()

    async def _on_gpu(self, backend: RenderBackend, ctx: RenderContext, k: int, job: WindowJob, state: dict,
                      progress) -> tuple[np.ndarray, float]:
        await asyncio.to_thread(self._record_attempt, ctx.render_id, k)
        await self._announce(ctx.render_id, k)
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

    async def _announce(self, render_id: str, k: int) -> None:
        """Tell the render's workflow that a GPU began one of its windows (it leaves the queue:
        /status says IN_PROGRESS, and delayTime is fixed from then on). Once per render and
        worker process; best effort, a render that misses it reads as queued a while longer."""
        if render_id in self._announced:
            return
        self._announced[render_id] = None
        while len(self._announced) > 1024:
            self._announced.pop(next(iter(self._announced)))
        started = GpuStarted(at=activity.info().started_time.isoformat(), window=k, worker=self.identity)
        try:
            await activity.client().get_workflow_handle(render_id).signal("gpu_started", started)
        except Exception as exc:  # the render goes on; only its status reads queued longer
            activity.logger.warning("render %s: could not say that window %d started: %s", render_id, k, exc)

    # ---- inputs --------------------------------------------------------------------
    def _window_job(self, ctx: RenderContext, k: int, chain_first: int) -> WindowJob:
        params = ctx.window_params
        w = window(k, ctx.total_frames, params)
        reference = self._reference(ctx.reference_key)
        if k == chain_first:
            tail = np.repeat(reference[None], params.motion, axis=0)
        else:
            tail = np.stack(list(self._io.map(self._tail_frame, tail_keys(ctx.render_id, k - 1, params.motion))))

        def slice_of(key: str) -> np.ndarray:
            offset, length = av_io.wav16_range(w.audio_start, w.audio_samples)
            length = min(length, self._size(key) - offset)  # the last window runs past the end: silence
            data = self.store.get_bytes(key, offset=offset, length=length) if length > 0 else b""
            return av_io.pcm16_to_float(data, w.audio_samples)

        audio = list(self._io.map(slice_of, ctx.audio_keys))
        source = None
        if ctx.source_key:
            local = self._cached(ctx.source_key)
            idx = [av_io.source_index(f, ctx.source_frames) for f in range(w.start, w.end)]
            decoded = av_io.read_frames(local, idx)
            source = np.stack([decoded[i] for i in idx])
            reference = source[0]
        return WindowJob(render_id=ctx.render_id, index=k, spec=ctx.spec, frame_start=w.start, reference=reference,
                         tail=tail, audio=audio, source=source, chain_start=(k == chain_first))

    def _size(self, key: str) -> int:
        if key not in self._sizes:
            size = self.store.size(key)
            if size is None:
                raise TransientError(f"{key} is missing from the object store")
            self._sizes[key] = size
        return self._sizes[key]

    def _tail_frame(self, key: str) -> np.ndarray:
        try:
            return av_io.decode_png(self.store.get_bytes(key))
        except ValueError as exc:
            raise TransientError(f"tail frame {key} unreadable: {exc}") from None

    def _reference(self, key: str) -> np.ndarray:
        if key not in self._references:
            self._references[key] = av_io.decode_png(self.store.get_bytes(key))
            while len(self._references) > 4:
                self._references.popitem(last=False)
        self._references.move_to_end(key)
        return self._references[key]

    def _cached(self, key: str) -> Path:
        path = self.cache_dir / key
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(path.suffix + ".part")
            self.store.download(key, partial)
            partial.replace(path)
        return path

    def _record_attempt(self, render_id: str, k: int) -> None:
        """One small object per backend call, so a finished window's work can be told apart
        from a redone one (a call that starts after meta.json exists would be a duplicate)."""
        info = activity.info()
        key = f"{window_prefix(render_id, k)}attempts/{info.attempt:03d}-{uuid.uuid4().hex[:8]}.json"
        self.store.put_json(key, {"attempt": info.attempt, "worker": self.identity,
                                  "started_at": datetime.now(timezone.utc).isoformat()})

    # ---- outputs -------------------------------------------------------------------
    def _store_window(self, ctx: RenderContext, k: int, frames: np.ndarray, render_s: float,
                      taken: float) -> tuple[RenderWindowResult, float]:
        params = ctx.window_params
        expected = (params.window, ctx.spec.height, ctx.spec.width, 3)
        if frames.shape != expected or frames.dtype != np.uint8:
            raise OutputMismatch(f"backend returned frames {frames.shape} {frames.dtype}, expected {expected} uint8")
        w = window(k, ctx.total_frames, params)
        kept = frames[w.keep_offset : w.keep_offset + w.kept]
        info = activity.info()
        marker = {"attempt": str(info.attempt), "worker": self.identity}

        def put_tail(i_key: tuple[int, str]) -> None:
            i, key = i_key
            self.store.put_bytes(key, av_io.encode_png(frames[params.window - params.motion + i]), "image/png")

        # the tails are encoded and stored while the clip encodes; meta.json only after both
        tails = [self._io.submit(put_tail, item) for item in enumerate(tail_keys(ctx.render_id, k, params.motion))]
        with tempfile.TemporaryDirectory(prefix="window-") as tmp:
            clip = Path(tmp) / "clip.mp4"
            av_io.encode_clip(kept, clip, params.fps)
            self.store.put_file(clip_key(ctx.render_id, k), clip, "video/mp4", metadata=marker)
        for done in tails:
            done.result()
        meta = {
            "index": k, "clip_key": clip_key(ctx.render_id, k), "frames": w.kept,
            "keep_start": w.keep_start, "keep_end": w.keep_end, "backend": ctx.backend,
            "render_s": round(render_s, 3), "attempt": info.attempt, "worker": self.identity,
            "activity_id": info.activity_id, "workflow_id": info.workflow_id,
            "rendered_at": datetime.now(timezone.utc).isoformat(),
            # what the window cost: the worker was held from taking it to here (the render's
            # usage, longtalk.usage), on this GPU
            "busy_s": round(time.monotonic() - taken, 3),
            "device": self.fleet.device() if self.fleet is not None else "",
        }
        self.store.put_bytes(window_meta_key(ctx.render_id, k), json.dumps(meta, indent=2).encode(),
                             "application/json")
        result = RenderWindowResult(index=k, clip_key=meta["clip_key"], frames=w.kept, rendered=True,
                                    render_s=render_s, attempt=info.attempt, worker=self.identity,
                                    worker_queue=self.own_queue)
        return result, meta["busy_s"]
