"""One window rendered under the quality guard, with its I/O: the code that the GPU activity
(activities/gpu.py, with the bucket) and the RunPod handler (longtalk/serverless/handler.py,
with presigned URLs) share, so a window is measured and acted on the same way on either pool.

`store` is anything with get_json_or_none and put_json (the ObjectStore, or
longtalk.serverless.presigned.PresignedStore). The decisions are longtalk.guard's (pure);
the measuring is longtalk.quality's. Here:

- `start`: the window's job, where it starts from (the previous window's tail or the
  reference: longtalk.guard.anchor_for, from the previous window's quality.json) and the
  attempts an earlier try recorded in its own quality.json;
- `render`: render, measure, and render again with the next seed (spec.seed_for(k, redo))
  while a hard failure remains and retries are left; quality.json is stored after every
  attempt (the last one with the kept attempt chosen), so a retried activity (or RunPod job)
  goes on from the recorded redo;
- `meta_quality`: the verdict meta.json carries.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Awaitable, Callable

import numpy as np
from cachetools import LRUCache

from . import guard as quality_guard, metrics
from .backends.base import WindowJob
from .guard import Anchor, Guard
from .payloads import RenderContext, window_quality_key
from .quality import ReferenceStats, classify, measure_window
from .window_io import WindowIO, check_frames
from .windows import Window, window

RenderOne = Callable[[WindowJob], Awaitable[tuple[np.ndarray, float]]]  # one attempt: (frames, render_s)


def quality_keys(ctx: RenderContext, k: int, chain_first: int) -> tuple[list[str], str]:
    """The quality.json objects a window reads (its own, from an earlier try; the previous
    window's, unless it starts a chain) and the one it writes."""
    own = window_quality_key(ctx.render_id, k)
    return ([own] if k == chain_first else [own, window_quality_key(ctx.render_id, k - 1)]), own


class GuardedWindow:
    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self._reference_stats: LRUCache[tuple, ReferenceStats] = LRUCache(4)

    def start(self, store, window_io: WindowIO, ctx: RenderContext, k: int,
              chain_first: int) -> tuple[WindowJob, Anchor, list[dict]]:
        """The window's job, where it starts from and the attempts an earlier try recorded."""
        w = window(k, ctx.total_frames, ctx.window_params)
        reads, _ = quality_keys(ctx, k, chain_first)
        own, previous = [*map(store.get_json_or_none, reads), None][:2]
        audio = window_io.audio(store, ctx, k)
        anchor = quality_guard.anchor_for(w, chain_first, previous, audio, ctx.window_params, self.guard)
        job = window_io.load(store, ctx, k, chain_first, audio=audio, from_reference=anchor.from_reference)
        recorded = list(own["attempts"]) if own and own.get("version") == quality_guard.QUALITY_VERSION else []
        return job, anchor, recorded

    async def render(self, store, ctx: RenderContext, job: WindowJob, anchor: Anchor, recorded: list[dict],
                     render_one: RenderOne, activity_attempt: int, state: dict | None = None,
                     ) -> tuple[np.ndarray, float, dict]:
        """The kept frames, the render time of all attempts and the window's final quality
        record (stored: the caller stores the window and meta.json after it). Each attempt's
        record says which try of the window's activity (RunPod: its job's) rendered it."""
        state = {} if state is None else state
        k, retries = job.index, self.guard.retries
        w = window(k, ctx.total_frames, ctx.window_params)
        key = window_quality_key(ctx.render_id, k)
        redo = quality_guard.next_redo(recorded, retries)
        kept: tuple[int, np.ndarray] | None = None  # the best attempt of this try: (index, frames)
        total_s = 0.0
        while True:
            state["redo"] = redo
            frames, render_s = await render_one(dataclasses.replace(job, redo=redo))
            total_s += render_s
            check_frames(ctx, frames)  # before it is measured
            state["stage"] = "quality"
            record = await asyncio.to_thread(self.measure, ctx, job, w, frames, redo)
            recorded.append({**record, "activity_attempt": activity_attempt})
            index = len(recorded) - 1
            if kept is None or quality_guard.best([kept[0], index], recorded) == index:
                kept = (index, frames)
            state["quality"] = [{"redo": r["redo"], "hard": r["verdict"]["hard"]} for r in recorded]
            if not quality_guard.more(recorded, retries):
                break  # the final record below holds this attempt too
            await asyncio.to_thread(store.put_json, key, quality_guard.window_doc(w, anchor, recorded, None))
            metrics.WINDOW_FAILURES.labels(ctx.backend, "quality:" + "+".join(recorded[-1]["verdict"]["hard"])).inc()
            redo = max(r["redo"] for r in recorded) + 1
        doc = quality_guard.window_doc(w, anchor, recorded, kept[0])
        await asyncio.to_thread(store.put_json, key, doc)
        return kept[1], total_s, doc

    def measure(self, ctx: RenderContext, job: WindowJob, w: Window, frames: np.ndarray, redo: int) -> dict:
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
        """The reference's numbers, once per render (and process)."""
        ident = (key, people)
        if ident not in self._reference_stats:
            self._reference_stats[ident] = ReferenceStats.of(reference, people)
        return self._reference_stats[ident]


def meta_quality(doc: dict) -> dict:
    """What meta.json says of the window's quality record."""
    return {"verdict": quality_guard.chosen(doc)["verdict"], "rerendered": doc["rerendered"],
            "flagged": doc["flagged"], "reanchor": doc["reanchor"]}
