"""The quality guard on the embedded stack (real Temporal, S3 server, ffmpeg), rehearsed with
LONGTALK_PREVIEW_FAULTS: a blank or frozen window is caught and rendered again and no blank
frame reaches the output; a window that stays blank is kept, flagged and listed; a drifting
chain re-anchors and its colour stays bounded where without re-anchoring it keeps growing."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import cv2
import numpy as np
import pytest

from longtalk import av_io
from longtalk.backends import make_backends
from longtalk.payloads import derived_keys, window_meta_key, window_quality_key
from longtalk.quality import QualityBounds
from longtalk.windows import WindowParams, window, window_count
from tests.helpers import replay_everything, run_starter, write_job
from tests.media import EXAMPLES
from worker import build_workers

pytestmark = pytest.mark.timeout(240)
SIZE = 128


async def render(client, settings, store, tmp_path, faults: str, frames: int, **guard):
    """One render of the example speech (its first `frames` frames) by workers of their own
    whose preview backend spoils windows as `faults` says. Returns (result, render id, output)."""
    tag = uuid.uuid4().hex[:6]
    own = dataclasses.replace(settings, render_queue=f"guard-render-{tag}", gpu_queue=f"guard-gpu-{tag}",
                              preview_faults=faults, affinity_wait_s=0, **guard)
    backends = make_backends(own)  # LONGTALK_PREVIEW_FAULTS wraps the preview in the FaultyBackend
    ws = build_workers(client, own, store, backends=backends, identity=f"guard-{tag}")
    tasks = [asyncio.create_task(w.run()) for w in ws]
    try:
        rid = f"guard-{tag}"
        job = write_job(tmp_path, image_path=EXAMPLES / "portrait.png", wav_path=EXAMPLES / "speech.ogg",
                        width=SIZE, height=SIZE, max_frame=frames)
        out = tmp_path / f"{rid}.mp4"
        rc, result, err = await run_starter(client, own, job, "--id", rid, "--output", str(out))
        assert rc == 0, err
        assert await replay_everything(client, f"WorkflowId STARTS_WITH '{rid}'", tmp_path / "histories") == {}
        return result, rid, out
    finally:
        for w in ws:
            await w.shutdown()
        await asyncio.gather(*tasks, return_exceptions=True)


def output_frames(path) -> np.ndarray:
    n = av_io.count_video_frames(path)
    frames = av_io.read_frames(path, list(range(n)))
    return np.stack([frames[i] for i in range(n)])


async def test_blank_and_frozen_windows_are_rendered_again(temporal_client, settings, store, tmp_path):
    result, rid, out = await render(temporal_client, settings, store, tmp_path, "blank:1@1,frozen:2@1,blank:4", 430)
    q = result["quality"]
    assert q["rerendered"] == [1, 2, 4], q
    # window 4 is blank on every attempt: kept (the render completes), flagged and listed
    assert [f["window"] for f in q["flagged"]] == [4] and "blank" in q["flagged"][0]["hard"]
    assert q["worst_window"]["window"] == 4
    one = store.get_json(window_quality_key(rid, 1))
    assert [a["redo"] for a in one["attempts"]] == [0, 1] and "blank" in one["attempts"][0]["verdict"]["hard"]
    assert one["attempts"][1]["verdict"]["hard"] == [] and one["chosen"] == 1 and not one["flagged"]
    assert one["attempts"][0]["seed"] != one["attempts"][1]["seed"]
    assert store.get_json(window_quality_key(rid, 2))["attempts"][0]["verdict"]["hard"] == ["frozen"], "frozen alone"
    four = store.get_json(window_quality_key(rid, 4))
    assert len(four["attempts"]) == 1 + settings.quality_retries and four["flagged"]
    assert store.get_json(window_meta_key(rid, 4))["quality"]["flagged"] is True
    # no blank frame reaches the output, except from the window that stayed blank
    luma = output_frames(out).mean(axis=(1, 2, 3))
    p = WindowParams(81, 9, 25)
    w4 = window(4, result["frames"], p)
    dark = set(np.flatnonzero(luma < 12).tolist())
    assert dark and dark <= set(range(w4.keep_start, w4.keep_end)), sorted(dark)
    assert not dark & set(range(0, w4.keep_start)), "windows 1 and 2 came back clean"


async def test_clean_render_measured_without_alarm(temporal_client, settings, store, tmp_path):
    result, rid, _ = await render(temporal_client, settings, store, tmp_path, "", 430)
    q = result["quality"]
    assert q["windows_measured"] == result["windows"]
    assert (q["rerendered"], q["flagged"], q["drifted"], q["reanchors"]) == ([], [], [], []), q
    summary = store.get_json(derived_keys(rid)["quality"])
    assert [r["window"] for r in summary["windows"]] == list(range(result["windows"]))


def delta_e_per_window(path, reference: np.ndarray, total: int) -> list[float]:
    """The colour difference (CIE76, of the mean L*a*b*) between each window's last output frame
    and the reference, measured on the stored output."""
    frames = output_frames(path)
    ref = cv2.cvtColor(reference.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab).reshape(-1, 3).mean(0)
    out = []
    p = WindowParams(81, 9, 25)
    for k in range(window_count(total, p)):
        end = window(k, total, p).keep_end
        lab = cv2.cvtColor(frames[end - 1].astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab).reshape(-1, 3).mean(0)
        out.append(float(np.linalg.norm(lab - ref)))
    return out


async def test_drift_reanchors_and_stays_bounded(temporal_client, settings, store, tmp_path):
    frames = 900  # 36 s, 13 windows
    faults = "drift:0.01"
    guarded, rid, out = await render(temporal_client, settings, store, tmp_path, faults, frames)
    free, rid_free, out_free = await render(temporal_client, settings, store, tmp_path, faults, frames,
                                            quality_reanchor=False)
    reference = av_io.decode_png(store.get_bytes(derived_keys(rid)["reference"]))
    with_guard = delta_e_per_window(out, reference, frames)
    without = delta_e_per_window(out_free, reference, frames)
    reanchors = guarded["quality"]["reanchors"]
    print("Delta E per window, re-anchored:", [round(x, 2) for x in with_guard])
    print("Delta E per window, never re-anchored:", [round(x, 2) for x in without])
    print("re-anchors:", [(r["window"], r["reason"]) for r in reanchors])
    assert len(reanchors) >= 2 and all("drifted (colour" in r["reason"] for r in reanchors), reanchors
    assert free["quality"]["reanchors"] == [] and free["quality"]["drifted"]
    bound = QualityBounds().delta_e
    # without re-anchoring the cast grows window after window, past the bound
    assert all(b > a for a, b in zip(without[1:], without[2:])) and without[-1] > 2 * bound, without
    # with it the colour stays under the bound: every window as the guard measured it, and each
    # window's last frame in the stored output (within 5% for the codec, whose threads vary)
    series = store.get_json(derived_keys(rid)["quality"])["windows"]
    assert max(r["delta_e"] for r in series) < bound and not guarded["quality"]["drifted"], series
    assert max(with_guard) < 1.05 * bound, with_guard
    # the plan says where and why; the stitcher dissolved each re-anchor inside its pause
    plan = store.get_json(derived_keys(rid)["plan"])
    assert plan["reanchors"] == reanchors
    for r in reanchors:
        assert store.get_json(window_quality_key(rid, r["window"]))["anchor_frame"] == window(
            r["window"], frames, WindowParams(81, 9, 25)).start
