"""The dashboard's pictures and video of one render: a window's details, its thumbnail (a
JPEG of its last frame) and the live HLS preview (a playlist of the finished windows, one
MPEG-TS segment per window, built on demand). Built on the read model (plan, progress)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import cv2
from cachetools import LRUCache
from temporalio.client import WorkflowExecutionStatus

from longtalk import av_io
from longtalk.payloads import audio_key, window_meta_key, window_prefix
from longtalk.visibility import BASE_KEY

from .. import hls
from .read_model import ReadModel


class Media:
    def __init__(self, model: ReadModel) -> None:
        self.model = model
        self._thumbs: LRUCache[tuple, bytes] = LRUCache(1024)  # (render id, window) -> JPEG
        self._segment_locks: dict[str, asyncio.Lock] = {}

    @property
    def store(self):
        return self.model.store

    def window_detail(self, render_id: str, base: str | None, k: int) -> dict:
        plan = self.model.plan(render_id) or {}
        frames = plan.get("frames") or []
        out: dict = {"index": k}
        fps = plan.get("fps") or self.model.settings.fps
        if k < len(frames):
            keep_start, keep_end = frames[k][2], frames[k][3]
            out.update(frames=keep_end - keep_start, keep_start=keep_start, keep_end=keep_end,
                       duration_s=round((keep_end - keep_start) / fps, 3))
        source = self._window_source(render_id, base, k)
        meta = self.store.get_json_or_none(window_meta_key(source, k)) if source else None
        attempts = list(self.store.list(window_prefix(source or render_id, k) + "attempts/"))
        out["attempts"] = len(attempts)
        if meta:
            out.update(quality=meta.get("quality"))
            out.update(attempt=meta.get("attempt"), worker=meta.get("worker"), render_s=meta.get("render_s"),
                       rendered_at=meta.get("rendered_at"), from_render=source if source != render_id else None)
        return out

    def _window_source(self, render_id: str, base: str | None, k: int) -> str | None:
        """The render whose bucket holds window k: this one, or (a re-render's window that was
        not rendered again) its base."""
        if self.store.exists(window_meta_key(render_id, k)):
            return render_id
        if base and self.store.exists(window_meta_key(base, k)):
            return base
        return None

    # ---- thumbnails ------------------------------------------------------------------

    async def thumb(self, render_id: str, name: str, k: str | None) -> bytes | None:
        """Window k's thumbnail; without k, the last window of a completed render, else the
        window that finished last."""
        desc = await self.model.describe(render_id, name)
        base = desc.typed_search_attributes.get(BASE_KEY) or None
        if k is None or not k.isdigit():
            plan = await asyncio.to_thread(self.model.plan, render_id)
            if desc.status == WorkflowExecutionStatus.COMPLETED and plan:
                k = plan["windows"] - 1
            else:
                p = await self.model.progress(render_id, desc.run_id)
                if not p or not p.windows_finished:
                    return None
                latest = getattr(p, "latest_window", -1)  # the window that finished last
                k = latest if latest is not None and latest >= 0 else max(p.windows_finished)
        return await asyncio.to_thread(self.thumbnail, render_id, base, int(k))

    def thumbnail(self, render_id: str, base: str | None, k: int) -> bytes | None:
        """Window k's last frame, 160 px wide, as JPEG: from its tail PNG while the render
        runs (publish deletes the tails), else from its clip."""
        key = (render_id, k)
        data = self._thumbs.get(key)
        if data is None:
            data = self._thumbnail(render_id, base, k)
            if data is not None:
                self._thumbs[key] = data
        return data

    def _thumbnail(self, render_id: str, base: str | None, k: int) -> bytes | None:
        source = self._window_source(render_id, base, k)
        if source is None:
            return None
        tails = sorted(x for x in self.store.list(window_prefix(source, k)) if "/tail_" in x)
        image = None
        if tails:
            try:
                image = av_io.decode_png(self.store.get_bytes(tails[-1]))
            except ValueError:
                image = None
        if image is None:
            with tempfile.TemporaryDirectory(prefix="thumb-") as tmp:
                clip = self.store.download(window_prefix(source, k) + "clip.mp4", Path(tmp) / "clip.mp4")
                cap = cv2.VideoCapture(str(clip))
                frame = None
                while True:
                    ok, got = cap.read()
                    if not ok:
                        break
                    frame = got
                cap.release()
                if frame is None:
                    return None
                image = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        h, w = image.shape[:2]
        small = cv2.resize(image, (160, max(1, round(h * 160 / w))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
        return buf.tobytes() if ok else None

    # ---- HLS -------------------------------------------------------------------------

    async def hls_state(self, render_id: str, name: str) -> tuple:
        """(desc, plan, windows listed, ended) for the playlist and its segments."""
        desc = await self.model.describe(render_id, name)
        plan = await asyncio.to_thread(self.model.plan, render_id)
        if plan is None:
            return desc, None, 0, desc.status != WorkflowExecutionStatus.RUNNING
        total = plan["windows"]
        running = desc.status == WorkflowExecutionStatus.RUNNING
        if desc.status == WorkflowExecutionStatus.COMPLETED:
            finished = set(range(total))
        else:
            cached = self.model.closed.get(desc.run_id)
            if cached is not None:
                finished = {k for k, s in enumerate(cached["states"]) if s in "dt"}
            else:
                p = await self.model.progress(render_id, desc.run_id)
                finished = set(p.windows_finished) if p else set()
        count = hls.finished_prefix(finished, total)
        return desc, plan, count, (not running) or count == total

    async def playlist(self, render_id: str, name: str) -> str:
        _desc, plan, count, ended = await self.hls_state(render_id, name)
        if plan is None:
            return hls.playlist([], self.model.settings.fps, 0, ended, str)
        keep = [(f[2], f[3]) for f in plan["frames"]]
        return hls.playlist(keep, plan["fps"], count, ended, lambda k: f"{k}.ts")

    async def segment(self, render_id: str, name: str, k: int) -> bytes | None:
        """Segment k (window k's picture and its audio), None while it is not ready; one build
        per segment, however many players ask at once."""
        desc, plan, count, _ = await self.hls_state(render_id, name)
        if plan is None or not 0 <= k < count:
            return None
        base = desc.typed_search_attributes.get(BASE_KEY) or None
        lock = self._segment_locks.setdefault(f"{render_id}/{k}", asyncio.Lock())
        async with lock:
            data = await asyncio.to_thread(self._segment, render_id, base, k, plan)
        self._segment_locks.pop(f"{render_id}/{k}", None)
        return data

    def _segment(self, render_id: str, base: str | None, k: int, plan: dict) -> bytes:
        source = self._window_source(render_id, base, k) or render_id
        audio_from = render_id if self.store.exists(audio_key(render_id, 1)) or not base else base
        f = plan["frames"][k]
        return hls.make_segment(self.store, render_id, audio_from, k, (f[2], f[3]), plan["fps"], 2,
                                window_prefix(source, k) + "clip.mp4")
