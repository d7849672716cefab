"""One window's inputs read from storage and its outputs written back: the code that the GPU
activity (activities/gpu.py, with the bucket) and the RunPod handler (longtalk/serverless,
with presigned URLs) share.

`store` is anything with the ObjectStore methods used here (get_bytes with a byte range,
size, download, put_bytes, put_file): the ObjectStore itself, or
longtalk.serverless.presigned.PresignedStore. Outputs, under the window's prefix:

    windows/{k:05d}/clip.mp4      the frames this window keeps (H.264 at crf 10: stitch encodes the output from it)
    windows/{k:05d}/tail_XX.png   its last M frames, lossless, for window k+1
    windows/{k:05d}/meta.json     written last: the window is done once this exists
"""

from __future__ import annotations

import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from cachetools import LRUCache

from . import av_io
from .backends.base import WindowJob
from .errors import OutputMismatch, TransientError
from .payloads import RenderContext, clip_key, tail_keys, window_meta_key
from .windows import window


def output_keys(ctx: RenderContext, k: int) -> list[str]:
    """What a window writes, meta.json last."""
    return [clip_key(ctx.render_id, k), *tail_keys(ctx.render_id, k, ctx.window_params.motion),
            window_meta_key(ctx.render_id, k)]


def input_keys(ctx: RenderContext, k: int, chain_first: int) -> list[str]:
    """What a window reads: the reference, the previous window's tail (none at a chain's
    start), the audio tracks, the V2V source."""
    keys = [ctx.reference_key]
    if k != chain_first:
        keys += tail_keys(ctx.render_id, k - 1, ctx.window_params.motion)
    keys += list(ctx.audio_keys)
    if ctx.source_key:
        keys.append(ctx.source_key)
    return keys


def check_frames(ctx: RenderContext, frames: np.ndarray) -> None:
    """OutputMismatch unless the backend returned the window's frames at the render's size."""
    expected = (ctx.window_params.window, ctx.spec.height, ctx.spec.width, 3)
    if frames.shape != expected or frames.dtype != np.uint8:
        raise OutputMismatch(f"backend returned frames {frames.shape} {frames.dtype}, expected {expected} uint8")


class WindowIO:
    """Reads a window's inputs and writes its outputs; caches what never changes (the
    reference, object sizes, the V2V source file: keys are per render)."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self._references: LRUCache[str, np.ndarray] = LRUCache(4)  # reference PNG key -> picture
        self._sizes: dict[str, int] = {}
        # a window's small objects (M tail PNGs in, M out, the audio slices) move in parallel:
        # one after the other they cost a round trip each, between two windows on the GPU
        self._io = ThreadPoolExecutor(max_workers=8, thread_name_prefix="window-io")

    # ---- inputs --------------------------------------------------------------------
    def audio(self, store, ctx: RenderContext, k: int) -> list[np.ndarray]:
        """Window k's slice of each speech track (by byte range)."""
        w = window(k, ctx.total_frames, ctx.window_params)

        def slice_of(key: str) -> np.ndarray:
            offset, length = av_io.wav16_range(w.audio_start, w.audio_samples)
            length = min(length, self._size(store, key) - offset)  # the last window runs past the end: silence
            data = store.get_bytes(key, offset=offset, length=length) if length > 0 else b""
            return av_io.pcm16_to_float(data, w.audio_samples)

        return list(self._io.map(slice_of, ctx.audio_keys))

    def load(self, store, ctx: RenderContext, k: int, chain_first: int, *, audio: list[np.ndarray] | None = None,
             from_reference: bool | None = None) -> WindowJob:
        """Window k's job. It starts from the reference at its chain's first window, or where
        `from_reference` says so (a re-anchor), else from the previous window's tail."""
        params = ctx.window_params
        w = window(k, ctx.total_frames, params)
        reference = self._reference(store, ctx.reference_key)
        if from_reference is None:
            from_reference = k == chain_first
        if from_reference:
            tail = np.repeat(reference[None], params.motion, axis=0)
        else:
            keys = tail_keys(ctx.render_id, k - 1, params.motion)
            tail = np.stack(list(self._io.map(lambda key: self._tail_frame(store, key), keys)))
        if audio is None:
            audio = self.audio(store, ctx, k)
        source = None
        if ctx.source_key:
            local = self._cached(store, ctx.source_key)
            idx = [av_io.source_index(f, ctx.source_frames) for f in range(w.start, w.end)]
            decoded = av_io.read_frames(local, idx)
            source = np.stack([decoded[i] for i in idx])
            reference = source[0]
        return WindowJob(render_id=ctx.render_id, index=k, spec=ctx.spec, frame_start=w.start, reference=reference,
                         tail=tail, audio=audio, source=source, chain_start=from_reference)

    def _size(self, store, key: str) -> int:
        if key not in self._sizes:
            size = store.size(key)
            if size is None:
                raise TransientError(f"{key} is missing from the object store")
            self._sizes[key] = size
        return self._sizes[key]

    @staticmethod
    def _tail_frame(store, key: str) -> np.ndarray:
        try:
            return av_io.decode_png(store.get_bytes(key))
        except ValueError as exc:
            raise TransientError(f"tail frame {key} unreadable: {exc}") from None

    def _reference(self, store, key: str) -> np.ndarray:
        picture = self._references.get(key)
        if picture is None:
            picture = self._references[key] = av_io.decode_png(store.get_bytes(key))
        return picture

    def _cached(self, store, key: str) -> Path:
        path = self.cache_dir / key
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(path.suffix + ".part")
            store.download(key, partial)
            partial.replace(path)
        return path

    # ---- outputs -------------------------------------------------------------------
    def save(self, store, ctx: RenderContext, k: int, frames: np.ndarray, render_s: float, stamp: dict,
             busy_since: float | None = None) -> dict:
        """Store the window's clip and tail, then meta.json (with `stamp`: attempt, worker,
        activity and workflow ids); returns the meta."""
        params = ctx.window_params
        check_frames(ctx, frames)
        w = window(k, ctx.total_frames, params)
        kept = frames[w.keep_offset : w.keep_offset + w.kept]
        marker = {"attempt": str(stamp.get("attempt", 0)), "worker": str(stamp.get("worker", ""))}

        def put_tail(i_key: tuple[int, str]) -> None:
            i, key = i_key
            store.put_bytes(key, av_io.encode_png(frames[params.window - params.motion + i]), "image/png")

        # the tails are encoded and stored while the clip encodes; meta.json only after both
        tails = [self._io.submit(put_tail, item) for item in enumerate(tail_keys(ctx.render_id, k, params.motion))]
        with tempfile.TemporaryDirectory(prefix="window-") as tmp:
            clip = Path(tmp) / "clip.mp4"
            av_io.encode_clip(kept, clip, params.fps)
            store.put_file(clip_key(ctx.render_id, k), clip, "video/mp4", metadata=marker)
        for done in tails:
            done.result()
        meta = {
            "index": k, "clip_key": clip_key(ctx.render_id, k), "frames": w.kept,
            "keep_start": w.keep_start, "keep_end": w.keep_end, "backend": ctx.backend,
            "render_s": round(render_s, 3), **stamp,
            "rendered_at": datetime.now(timezone.utc).isoformat(),
        }
        if busy_since is not None:  # what the window cost: its worker was held from busy_since
            meta["busy_s"] = round(time.monotonic() - busy_since, 3)  # (time.monotonic) to here
        store.put_bytes(window_meta_key(ctx.render_id, k), json.dumps(meta, indent=2).encode(), "application/json")
        return meta
