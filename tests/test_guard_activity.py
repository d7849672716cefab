"""The GPU activity's quality guard against a real S3 server: a retried activity goes on
counting the re-renders an earlier try recorded in quality.json, and a re-render reaches the
backend as the next redo (the next seed)."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest
from temporalio.testing import ActivityEnvironment

from activities.gpu import GpuActivities
from longtalk import av_io
from longtalk.backends.faulty import FaultyBackend
from longtalk.backends.preview import PreviewBackend
from longtalk.guard import Guard
from longtalk.payloads import RenderContext, RenderWindowInput, window_meta_key, window_quality_key
from longtalk.spec import RenderSpec
from tests.media import EXAMPLES

SIZE = 96


class CrashOnce:
    """The faulty preview; its `crash_at`-th call raises (a worker lost mid-window), once."""

    name = "preview"

    def __init__(self, faults: str, crash_at: int) -> None:
        self.inner = FaultyBackend(PreviewBackend(), faults)
        self.crash_at = crash_at
        self.redos: list[int] = []

    async def render_window(self, job, progress=None):
        self.redos.append(job.redo)
        if len(self.redos) == self.crash_at:
            raise RuntimeError("worker lost")
        return await self.inner.render_window(job, progress)

    async def close(self) -> None:
        pass


def context(store, frames: int) -> RenderContext:
    rid = f"ga-{uuid.uuid4().hex[:8]}"
    portrait = av_io.fit_image(av_io.decode_image((EXAMPLES / "portrait.png").read_bytes(), "image"), SIZE, SIZE)
    store.put_bytes(f"renders/{rid}/reference.png", av_io.encode_png(portrait))
    speech = av_io.decode_audio_16k(EXAMPLES / "speech.ogg", "audio")[: frames * 640]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "track.wav"
        av_io.write_wav16(path, [speech])
        store.put_file(f"renders/{rid}/audio/track_1.wav", path)
    return RenderContext(render_id=rid, backend="preview", total_frames=frames,
                         reference_key=f"renders/{rid}/reference.png", audio_keys=[f"renders/{rid}/audio/track_1.wav"],
                         spec=RenderSpec(width=SIZE, height=SIZE))


async def test_a_retried_activity_goes_on_counting(store, tmp_path):
    ctx = context(store, 81 + 72)
    backend = CrashOnce("blank:0", crash_at=2)  # window 0 is blank on every attempt
    acts = GpuActivities(store, {"preview": backend}, tmp_path / "cache", guard=Guard(retries=2))
    inp = RenderWindowInput(context=ctx, index=0, chain_first=0)
    with pytest.raises(Exception, match="worker lost"):
        await ActivityEnvironment().run(acts.render_window, inp)
    record = store.get_json(window_quality_key(ctx.render_id, 0))
    assert [a["redo"] for a in record["attempts"]] == [0] and not record["done"]
    result = await ActivityEnvironment().run(acts.render_window, inp)
    assert result.rendered
    # the second try rendered redo 1 (again: it crashed) and 2, not 0 again, and stopped there
    assert backend.redos == [0, 1, 1, 2]
    record = store.get_json(window_quality_key(ctx.render_id, 0))
    assert [a["redo"] for a in record["attempts"]] == [0, 1, 2]
    assert record["done"] and record["flagged"] and record["rerendered"] == 2
    assert len({a["seed"] for a in record["attempts"]}) == 3
    assert store.get_json(window_meta_key(ctx.render_id, 0))["quality"]["flagged"]


async def test_a_passing_window_is_rendered_once(store, tmp_path):
    ctx = context(store, 81 + 72)
    backend = CrashOnce("blank:1@1", crash_at=0)
    acts = GpuActivities(store, {"preview": backend}, tmp_path / "cache")
    for k in (0, 1):
        await ActivityEnvironment().run(acts.render_window, RenderWindowInput(context=ctx, index=k, chain_first=0))
    assert backend.redos == [0, 0, 1], "window 1: blank at first, clean with the next seed"
    one = store.get_json(window_quality_key(ctx.render_id, 1))
    assert one["chosen"] == 1 and not one["flagged"] and one["rerendered"] == 1
    assert np.isfinite(one["attempts"][1]["measure_ms"])
