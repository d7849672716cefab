"""The GPU activity (task queue "gpu"): render one window with frame carry-over.

Inputs come from the bucket (reference, the previous window's tail PNGs, the window's
audio slice by byte range); outputs go back to it under the window's prefix:

    windows/{k:05d}/clip.mp4      the frames this window keeps, encoded once (H.264)
    windows/{k:05d}/tail_XX.png   its last M frames, lossless, for window k+1
    windows/{k:05d}/quality.json  the quality guard's record (longtalk.guard), after each attempt
    windows/{k:05d}/meta.json     written last: the window is done once this exists

Every attempt's new frames are measured (longtalk.quality); a hard failure renders the window
again with the next seed, at most LONGTALK_QUALITY_RETRIES times, counting the attempts an
earlier try recorded; the best attempt is kept (flagged if it still fails). A chain that
drifted or carried its tail too long starts again from the reference at a pause (a re-anchor,
decided here from the previous window's quality.json: no workflow command changes).

A retry or replay that finds meta.json returns it without rendering again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from cachetools import LRUCache
from temporalio import activity

from longtalk import av_io, guard as quality_guard, metrics
from longtalk.backends.base import RenderBackend, WindowJob
from longtalk.guard import Anchor, Guard
from longtalk.payloads import (
    GpuStarted, RenderContext, RenderWindowInput, RenderWindowResult, clip_key, tail_keys, window_meta_key,
    window_prefix, window_quality_key,
)
from longtalk.quality import ReferenceStats, classify, measure_window
from longtalk.errors import InputError, OutputMismatch, TransientError
from longtalk.store import ObjectStore
from longtalk.windows import Window, window

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
        self._references: LRUCache[str, np.ndarray] = LRUCache(4)  # reference PNG key -> picture
        self._reference_stats: LRUCache[tuple, ReferenceStats] = LRUCache(4)
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
            job, anchor, recorded = await asyncio.to_thread(self._window_job, ctx, k, inp.chain_first)
            state["stage"] = "waiting for the GPU"
            async with self._gpu:
                frames, render_s, doc = await self._render_guarded(backend, ctx, job, anchor, recorded, state,
                                                                   progress)
            state["stage"] = "store"
            result = await asyncio.to_thread(self._store_window, ctx, k, frames, render_s, doc)
        return result

    async def _render_guarded(self, backend: RenderBackend, ctx: RenderContext, job: WindowJob, anchor: Anchor,
                              recorded: list[dict], state: dict, progress) -> tuple[np.ndarray, float, dict]:
        """Render, measure, and render again with the next seed while a hard failure remains
        and retries are left; quality.json records every attempt as it is measured, so a
        retried activity goes on from there. Returns the kept frames, the render time of all
        attempts and the window's final quality record."""
        k, retries = job.index, self.guard.retries
        w = window(k, ctx.total_frames, ctx.window_params)
        redo = quality_guard.next_redo(recorded, retries)
        kept: tuple[int, np.ndarray] | None = None  # the best attempt of this try: (index, frames)
        total_s = 0.0
        while True:
            state["redo"] = redo
            frames, render_s = await self._on_gpu(backend, ctx, k, dataclasses.replace(job, redo=redo), state,
                                                  progress)
            total_s += render_s
            expected = (ctx.spec.window, ctx.spec.height, ctx.spec.width, 3)
            if frames.shape != expected or frames.dtype != np.uint8:
                raise OutputMismatch(f"backend returned frames {frames.shape} {frames.dtype}, expected {expected} uint8")
            state["stage"] = "quality"
            recorded.append(await asyncio.to_thread(self._measure, ctx, job, w, frames, redo))
            index = len(recorded) - 1
            if kept is None or quality_guard.best([kept[0], index], recorded) == index:
                kept = (index, frames)
            state["quality"] = [{"redo": r["redo"], "hard": r["verdict"]["hard"]} for r in recorded]
            await asyncio.to_thread(self.store.put_json, window_quality_key(ctx.render_id, k),
                                    quality_guard.window_doc(w, anchor, recorded, None))
            if not quality_guard.more(recorded, retries):
                break
            metrics.WINDOW_FAILURES.labels(ctx.backend, "quality:" + "+".join(recorded[-1]["verdict"]["hard"])).inc()
            redo = max(r["redo"] for r in recorded) + 1
        return kept[1], total_s, quality_guard.window_doc(w, anchor, recorded, kept[0])

    def _measure(self, ctx: RenderContext, job: WindowJob, w: Window, frames: np.ndarray, redo: int) -> dict:
        """One attempt's record: its new frames (those the output keeps, at least two) measured
        against the reference (V2V: the window's source frames) and classified."""
        params = ctx.window_params
        end = min(params.window, max(params.motion + 2, w.keep_offset + w.kept))
        audio = [a[: end * params.samples_per_frame] for a in job.audio]
        started = time.thread_time()
        if job.source is not None:
            q = measure_window(frames[:end], params.motion, job.source[:end], audio, params.fps)
        else:
            stats = self._stats_of(ctx.reference_key, job.reference, len(audio))
            q = measure_window(frames[:end], params.motion, job.reference, audio, params.fps, stats)
        verdict = classify(q, self.guard.bounds)
        return quality_guard.attempt_record(redo, job.spec.seed_for(job.index, redo), q, verdict,
                                            time.thread_time() - started)

    def _stats_of(self, key: str, reference: np.ndarray, people: int) -> ReferenceStats:
        """The reference's numbers, once per render (and worker process)."""
        ident = (key, people)
        if ident not in self._reference_stats:
            self._reference_stats[ident] = ReferenceStats.of(reference, people)
        return self._reference_stats[ident]

    async def _on_gpu(self, backend: RenderBackend, ctx: RenderContext, k: int, job: WindowJob, state: dict,
                      progress) -> tuple[np.ndarray, float]:
        await asyncio.to_thread(self._record_attempt, ctx.render_id, k)
        await self._announce(ctx.render_id, k)
        if self.fleet is not None:
            self.fleet.begin(ctx.render_id, k)
            await self.fleet.publish()
        ok = False
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
            ok = True
        finally:
            if self.fleet is not None:
                self.fleet.end(ok)
                await self.fleet.publish()
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
    def _window_job(self, ctx: RenderContext, k: int, chain_first: int) -> tuple[WindowJob, Anchor, list[dict]]:
        """The window's job, where it starts from (the previous window's tail, or the reference:
        a chain start or a re-anchor) and the attempts an earlier try of this activity recorded."""
        params = ctx.window_params
        w = window(k, ctx.total_frames, params)
        reference = self._reference(ctx.reference_key)
        keys = [window_quality_key(ctx.render_id, i) for i in ((k, k - 1) if k != chain_first else (k,))]
        own, previous = [*self._io.map(self.store.get_json_or_none, keys), None][:2]

        def slice_of(key: str) -> np.ndarray:
            offset, length = av_io.wav16_range(w.audio_start, w.audio_samples)
            length = min(length, self._size(key) - offset)  # the last window runs past the end: silence
            data = self.store.get_bytes(key, offset=offset, length=length) if length > 0 else b""
            return av_io.pcm16_to_float(data, w.audio_samples)

        audio = list(self._io.map(slice_of, ctx.audio_keys))
        anchor = quality_guard.anchor_for(w, chain_first, previous, audio, params, self.guard)
        if anchor.from_reference:
            tail = np.repeat(reference[None], params.motion, axis=0)
        else:
            tail = np.stack(list(self._io.map(self._tail_frame, tail_keys(ctx.render_id, k - 1, params.motion))))
        recorded = list(own["attempts"]) if own and own.get("version") == quality_guard.QUALITY_VERSION else []
        source = None
        if ctx.source_key:
            local = self._cached(ctx.source_key)
            idx = [av_io.source_index(f, ctx.source_frames) for f in range(w.start, w.end)]
            decoded = av_io.read_frames(local, idx)
            source = np.stack([decoded[i] for i in idx])
            reference = source[0]
        job = WindowJob(render_id=ctx.render_id, index=k, spec=ctx.spec, frame_start=w.start, reference=reference,
                        tail=tail, audio=audio, source=source, chain_start=anchor.from_reference)
        return job, anchor, recorded

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
        picture = self._references.get(key)
        if picture is None:
            picture = self._references[key] = av_io.decode_png(self.store.get_bytes(key))
        return picture

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
                      quality: dict) -> RenderWindowResult:
        params = ctx.window_params
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
            "quality": {"verdict": quality_guard.chosen(quality)["verdict"], "rerendered": quality["rerendered"],
                        "flagged": quality["flagged"], "reanchor": quality["reanchor"]},
        }
        self.store.put_json(window_quality_key(ctx.render_id, k), quality)
        self.store.put_bytes(window_meta_key(ctx.render_id, k), json.dumps(meta, indent=2).encode(),
                             "application/json")
        return RenderWindowResult(index=k, clip_key=meta["clip_key"], frames=w.kept, rendered=True,
                                  render_s=render_s, attempt=info.attempt, worker=self.identity,
                                  worker_queue=self.own_queue)
