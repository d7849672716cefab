"""Scaling out (issue 11): the chain planner on real speech, the per-job chain count, the
audio encoded once at ingest and muxed by stream copy at publish, and the timed backend."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from longtalk import audio, av_io
from longtalk.chains import (
    BALANCE_SLACK, GOOD_LEAD_FRAMES, MIN_WINDOWS_PER_CHAIN, PAUSE_BELOW_SPEECH_DB, chain_count, find_pauses,
    frame_db, plan_cuts,
)
from longtalk.errors import InputError
from longtalk.windows import WindowParams, window_count
from tests.helpers import check_video
from tests.media import EXAMPLES, cut_audio

pytestmark = pytest.mark.timeout(300)
PARAMS = WindowParams()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """The example generator's speech (scripts/make_example.py: espeak-ng sentences), at the
    loudness ingest gives it."""
    samples = av_io.decode_audio_16k(EXAMPLES / "speech.ogg", "audio")
    return np.clip(samples * audio.loudness_gain([samples]), -1.0, 1.0)


# ---- the planner -------------------------------------------------------------------------

def test_pauses_in_real_speech_are_found_and_are_quiet(speech):
    db = frame_db(speech, PARAMS.samples_per_frame)
    pauses = find_pauses(db)
    # espeak-ng leaves a gap between sentences and a shorter one at commas: ~45 s of speech
    # has many of both
    assert len(pauses) >= 8, pauses
    assert sum(1 for a, b in pauses if b - a >= 10) >= 4  # sentence gaps of 400 ms and more
    speech_level = float(np.median(db[db > -55]))
    for a, b in pauses:
        assert db[a:b].max() < speech_level - PAUSE_BELOW_SPEECH_DB + 1e-6
    # and no pause swallows speech: most of the track is outside them
    assert sum(b - a for a, b in pauses) < 0.6 * db.size


def test_cuts_are_balanced_and_inside_pauses(speech):
    """Ten minutes of the example speech, cut for 2, 4 and 8 GPUs: no chain is longer than the
    balanced length plus 3% (the render ends with its longest chain), and the joins lie in
    pauses: all of them for 2 and 4 chains; for 8 (26 windows a chain, and this speech pauses
    for a sentence every ~10 s) all but one, as the bound allows no more."""
    track = np.tile(speech, 13)[: 600 * 16_000]
    db = frame_db(track, PARAMS.samples_per_frame)
    n = window_count(db.size, PARAMS)
    pauses = find_pauses(db)
    for gpus in (2, 4, 8):
        count, why = chain_count(gpus, n)
        assert count == gpus and "asked" in why
        cuts = plan_cuts(db, n, count, PARAMS)
        bounds = [0, *[c.window for c in cuts], n]
        lengths = [b - a for a, b in zip(bounds, bounds[1:])]
        assert sum(lengths) == n and min(lengths) >= MIN_WINDOWS_PER_CHAIN
        balanced = -(-n // count)
        assert max(lengths) <= balanced + max(1, round(BALANCE_SLACK * balanced)), (gpus, lengths)
        in_pause = [c for c in cuts if c.pause is not None]
        assert len(in_pause) >= len(cuts) - (1 if gpus == 8 else 0), (gpus, cuts)
        for c in cuts:
            assert c.frame == c.window * PARAMS.stride + PARAMS.motion
        for c in in_pause:
            assert c.pause[0] < c.frame < c.pause[1], (gpus, c)
            assert c.pause in pauses and "pause" in c.reason


def _speech_with_pauses(n: int, pause_windows: list[tuple[int, int]]) -> np.ndarray:
    """Loudness of n windows of speech (-20 dBFS) with a pause (-70 dBFS) of `frames` frames
    ending 5 frames after window k's join frame, for each (k, frames)."""
    db = np.full(n * PARAMS.stride + PARAMS.window, -20.0)
    for k, frames in pause_windows:
        join = k * PARAMS.stride + PARAMS.motion
        db[join + 5 - frames: join + 5] = -70.0
    return db


def test_balance_comes_before_a_longer_pause():
    """A 3 s pause two windows off the split (in reach, and within the slack) loses to a
    0.6 s pause at the split, which holds the whole dissolve: the chains stay equal."""
    db = _speech_with_pauses(100, [(52, 75), (50, 15)])
    cuts = plan_cuts(db, 100, 2, PARAMS)
    assert [c.window for c in cuts] == [50], cuts
    assert "holds the whole dissolve" in cuts[0].reason
    assert cuts[0].frame - cuts[0].pause[0] >= GOOD_LEAD_FRAMES


def test_slack_is_spent_only_for_a_pause():
    """Two chains of 100 windows: balanced 50, and 3% slack allows 52. With the only pause at
    window 52 the cut goes there (chains of 52 and 48); with it at window 53 (a chain of 53,
    though within the search radius) the cut stays at the split and says no pause was in
    reach."""
    cuts = plan_cuts(_speech_with_pauses(100, [(52, 20)]), 100, 2, PARAMS)
    assert [c.window for c in cuts] == [52] and cuts[0].pause is not None
    cuts = plan_cuts(_speech_with_pauses(100, [(53, 20)]), 100, 2, PARAMS)
    assert [c.window for c in cuts] == [50] and cuts[0].pause is None and "no pause" in cuts[0].reason


def test_every_plan_keeps_its_bounds():
    """Random lengths, chain counts and loudness: every chain has MIN_WINDOWS_PER_CHAIN to
    balanced + slack windows, and the cuts cover the render exactly once."""
    rng = np.random.default_rng(11)
    for _ in range(60):
        n = int(rng.integers(10, 1500))
        count = chain_count(int(rng.integers(2, 65)), n)[0]
        db = rng.choice([-20.0, -70.0], size=n * PARAMS.stride + PARAMS.window, p=[0.9, 0.1])
        db = np.repeat(db[::8], 8)[: db.size]  # quiet runs of 8 frames: some pauses
        cuts = plan_cuts(db, n, count, PARAMS)
        bounds = [0, *[c.window for c in cuts], n]
        lengths = [b - a for a, b in zip(bounds, bounds[1:])]
        balanced = -(-n // count)
        assert len(lengths) == count and sum(lengths) == n, (n, count, lengths)
        assert min(lengths) >= MIN_WINDOWS_PER_CHAIN, (n, count, lengths)
        assert max(lengths) <= balanced + max(1, round(BALANCE_SLACK * balanced)), (n, count, lengths)


def test_no_pause_in_reach_falls_back_to_the_quietest_frame():
    """Speech everywhere, three chains of 100 windows (at most 34 each): the first cut may
    fall on windows 32..34 and takes the one with the softest join frame."""
    n = 100
    db = np.full(n * PARAMS.stride + PARAMS.window, -20.0)  # speech everywhere...
    db[32 * PARAMS.stride + PARAMS.motion] = -30.0  # ...with one softer frame, too short for a pause
    cuts = plan_cuts(db, n, 3, PARAMS)
    assert [c.window for c in cuts] == [32, 66] and cuts[0].pause is None
    assert "no pause" in cuts[0].reason and "at most 34" in cuts[0].reason


def test_never_more_chains_than_the_length_allows():
    assert chain_count(8, 3)[0] == 1  # a ten-second render stays one chain
    assert chain_count(8, 4 * MIN_WINDOWS_PER_CHAIN)[0] == 4
    count, why = chain_count(8, 100, gpus=3)
    assert count == 3 and "3 GPU" in why
    assert chain_count(0, 100)[0] == 1
    db = np.full(12 * PARAMS.stride + PARAMS.window, -60.0)  # all silence
    cuts = plan_cuts(db, 12, chain_count(4, 12)[0], PARAMS)
    assert len(cuts) == 1 and MIN_WINDOWS_PER_CHAIN <= cuts[0].window <= 12 - MIN_WINDOWS_PER_CHAIN


def test_the_job_sets_the_chain_count(settings):
    from longtalk.inputs import parse_job

    base = {"image_path": str(EXAMPLES / "portrait.png"), "wav_path": str(EXAMPLES / "speech.ogg")}
    assert parse_job({"input": base}, settings).parallel_chains is None
    assert parse_job({"input": {**base, "parallel_chains": 4}}, settings).parallel_chains == 4
    assert parse_job({"input": {**base, "parallel_chains": "0"}}, settings).parallel_chains == 0
    for bad in (-1, 65, "four", 2.5, True):
        with pytest.raises(InputError) as err:
            parse_job({"input": {**base, "parallel_chains": bad}}, settings)
        assert err.value.field == "parallel_chains"
    assert not parse_job({"input": {**base, "parallel_chains": 2}}, settings).warnings


async def test_plan_stores_where_and_why_it_cut(settings, store, render_id, tmp_path):
    """ingest + plan of 60 s of the example speech with parallel_chains 3 from the job: three
    chains, each join inside a pause, the reasons in plan.json; the output's audio is
    already encoded (T/25 s) when ingest returns."""
    from temporalio.testing import ActivityEnvironment

    from activities.cpu import CpuActivities
    from longtalk.inputs import parse_job, render_request, stage_inputs
    from longtalk.payloads import PlanInput, derived_keys

    wav = tmp_path / "speech60.wav"
    from tests.media import transcode
    transcode(EXAMPLES / "speech.ogg", wav, {"stream_loop": -1}, t="60", ac=1, ar=16000)
    job = parse_job({"input": {"image_path": str(EXAMPLES / "portrait.png"), "wav_path": str(wav),
                               "width": 64, "height": 64, "parallel_chains": 3}}, settings)
    req = render_request(job, stage_inputs(job, store, render_id, settings), render_id, "preview", settings)
    assert req.parallel_chains == 3
    acts = CpuActivities(store, settings)
    ingest = ActivityEnvironment().run(acts.ingest, req)
    plan = ActivityEnvironment().run(acts.plan, PlanInput(request=req, ingest=ingest))
    assert len(plan.chains) == 3
    stored = store.get_json(plan.plan_key)
    why = stored["chain_plan"]
    assert why["reason"].startswith("3 chain(s)") and len(why["cuts"]) == 2
    for cut, chain in zip(why["cuts"], plan.chains[1:]):
        assert cut["window"] == chain.first and "balanced split" in cut["reason"]
        if cut["pause"]:  # chains of 7 windows leave a cut only a window either way to find one
            assert cut["pause"][0] < cut["frame"] < cut["pause"][1] and " ms pause" in cut["reason"]
        else:
            assert "no pause in reach" in cut["reason"]
    assert any(cut["pause"] for cut in why["cuts"]), why
    final = derived_keys(render_id)["final_audio"]
    assert store.metadata(final)["frames"] == str(plan.total_frames)
    info = av_io.probe(store.download(final, tmp_path / "final.m4a"))
    assert info["audio"]["codec"] == "aac" and abs(info["audio"]["duration_s"] - plan.total_frames / 25) <= 1 / 25
    store.delete_prefix(f"renders/{render_id}/")


async def test_parallel_chains_0_means_one_chain_per_gpu_worker_in_the_fleet(settings, store, render_id, tmp_path):
    """parallel_chains 0: as many chains as healthy GPU workers of the render's queue have a
    fresh record in the fleet registry (workers of other queues and stale ones do not count)."""
    import dataclasses as dc
    from datetime import datetime, timedelta, timezone

    from temporalio.testing import ActivityEnvironment

    from activities.cpu import CpuActivities
    from longtalk.fleet import record_key
    from longtalk.inputs import parse_job, render_request, stage_inputs
    from longtalk.payloads import PlanInput
    from tests.media import transcode

    queue = f"gpu-fleet-{render_id}"
    here = dc.replace(settings, gpu_queue=queue)
    now = datetime.now(timezone.utc)
    records = {"a": (queue, now), "b": (queue, now), "c": (queue, now - timedelta(hours=1)), "d": ("other", now)}
    for name, (q, beat) in records.items():
        store.put_json(record_key(f"{render_id}-{name}"), {"identity": f"{render_id}-{name}", "task_queue": q,
                                                           "heartbeat_at": beat.isoformat(), "every_s": 10})
    wav = transcode(EXAMPLES / "speech.ogg", tmp_path / "speech60.wav", {"stream_loop": -1}, t="60", ac=1, ar=16000)
    job = parse_job({"input": {"image_path": str(EXAMPLES / "portrait.png"), "wav_path": str(wav),
                               "width": 64, "height": 64, "parallel_chains": 0}}, here)
    req = render_request(job, stage_inputs(job, store, render_id, here), render_id, "preview", here)
    acts = CpuActivities(store, here)
    try:
        ingest = ActivityEnvironment().run(acts.ingest, req)
        plan = ActivityEnvironment().run(acts.plan, PlanInput(request=req, ingest=ingest))
        assert len(plan.chains) == 2
        assert "one per GPU worker in the fleet registry, 2 found" in store.get_json(plan.plan_key)["chain_plan"]["reason"]
    finally:
        for name in records:
            store.delete(record_key(f"{render_id}-{name}"))
        store.delete_prefix(f"renders/{render_id}/")


# ---- the output's audio, encoded beside the windows ---------------------------------------

async def test_encode_audio_runs_beside_the_windows(workers, temporal_client, settings, store, media, tmp_path,
                                                    render_id):
    """A new render's ingest leaves the AAC alone (final_audio_beside), and encode_audio is
    scheduled in the same workflow task that starts the chains: the first window never
    waits for it (an hour of speech: ~80 s). The output still carries T/25 s of AAC."""
    from temporalio.api.enums.v1 import EventType
    from longtalk.converter import DATA_CONVERTER

    from longtalk.payloads import RenderRequest
    from tests.helpers import patch_ids, run_starter, write_job
    from workflows.render import AUDIO_BESIDE_PATCH

    out = tmp_path / "out.mp4"
    job = write_job(tmp_path, image_path=media["portrait"], wav_path=media["speech"], width=64, height=64)
    rc, result, err = await run_starter(temporal_client, settings, job, "--id", render_id, "--output", str(out))
    assert rc == 0, err
    check_video(out, result["frames"], 64, 64)
    events = (await temporal_client.get_workflow_handle(render_id).fetch_history()).events
    assert AUDIO_BESIDE_PATCH in patch_ids(events)
    scheduled = {e.activity_task_scheduled_event_attributes.activity_type.name: e.activity_task_scheduled_event_attributes
                 for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED}
    ingest = DATA_CONVERTER.payload_converter.from_payloads(scheduled["ingest"].input.payloads, [RenderRequest])[0]
    assert ingest.final_audio_beside
    chains = [e.start_child_workflow_execution_initiated_event_attributes for e in events
              if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED]
    assert chains and all(c.workflow_task_completed_event_id == scheduled["encode_audio"].workflow_task_completed_event_id
                          for c in chains)
    store.delete_prefix(f"renders/{render_id}/")


def test_ingest_leaves_the_audio_to_encode_audio(settings, store, render_id, tmp_path, monkeypatch):
    """ingest with final_audio_beside stores no AAC; encode_audio stores it (T/25 s, frames
    in its metadata) and, called again (a retry), finds it and encodes nothing."""
    import dataclasses as dc

    from temporalio.testing import ActivityEnvironment

    from activities.cpu import CpuActivities
    from longtalk.inputs import parse_job, render_request, stage_inputs
    from longtalk.payloads import EncodeAudioInput, PlanInput, derived_keys

    job = parse_job({"input": {"image_path": str(EXAMPLES / "portrait.png"), "wav_path": str(EXAMPLES / "speech.ogg"),
                               "width": 64, "height": 64}}, settings)
    req = render_request(job, stage_inputs(job, store, render_id, settings), render_id, "preview", settings)
    req = dc.replace(req, final_audio_beside=True)
    acts = CpuActivities(store, settings)
    final = derived_keys(render_id)["final_audio"]
    try:
        ingest = ActivityEnvironment().run(acts.ingest, req)
        assert not store.exists(final)
        plan = ActivityEnvironment().run(acts.plan, PlanInput(request=req, ingest=ingest))
        encodes = []
        real = av_io.encode_final_audio
        monkeypatch.setattr(av_io, "encode_final_audio", lambda *a: encodes.append(1) or real(*a))
        for _ in range(2):
            ActivityEnvironment().run(acts.encode_audio, EncodeAudioInput(request=req, total_frames=plan.total_frames))
        assert len(encodes) == 1
        assert store.metadata(final)["frames"] == str(plan.total_frames)
        info = av_io.probe(store.download(final, tmp_path / "final.m4a"))
        assert info["audio"]["codec"] == "aac"
        assert abs(info["audio"]["duration_s"] - plan.total_frames / 25) <= 1 / 25
    finally:
        store.delete_prefix(f"renders/{render_id}/")


# ---- publish: audio encoded at ingest, muxed by stream copy -------------------------------

@pytest.mark.parametrize("stored_audio", [True, False], ids=["stream-copy", "fallback-encode"])
async def test_publish_muxes_the_ingest_audio_by_stream_copy(stored_audio, settings, store, render_id, tmp_path,
                                                             monkeypatch):
    """With the AAC from ingest, publish never encodes audio; a render whose ingest stored
    none (started before the upgrade) still gets its audio, encoded then. Both come out
    exactly T frames with T/25 s of audio."""
    from temporalio.testing import ActivityEnvironment

    from activities.cpu import CpuActivities
    from longtalk.inputs import parse_job, render_request, stage_inputs
    from longtalk.payloads import PlanInput, PublishInput, derived_keys

    speech = cut_audio(EXAMPLES / "speech.ogg", tmp_path / "speech.wav", 1.0, 4.3)
    job = parse_job({"input": {"image_path": str(EXAMPLES / "portrait.png"), "wav_path": str(speech),
                               "width": 64, "height": 64}}, settings)
    req = render_request(job, stage_inputs(job, store, render_id, settings), render_id, "preview", settings)
    acts = CpuActivities(store, settings)
    ingest = ActivityEnvironment().run(acts.ingest, req)
    plan = ActivityEnvironment().run(acts.plan, PlanInput(request=req, ingest=ingest))
    total = plan.total_frames
    video = tmp_path / "video.mp4"
    av_io.encode_clip(np.full((total, 64, 64, 3), 90, np.uint8), video, 25)
    store.put_file(derived_keys(render_id)["video"], video, "video/mp4")
    encodes = []
    real_mux = av_io.mux_audio
    monkeypatch.setattr(av_io, "mux_audio", lambda *a, **k: encodes.append(1) or real_mux(*a, **k))
    if not stored_audio:
        store.delete(derived_keys(render_id)["final_audio"])
    result = ActivityEnvironment().run(acts.publish, PublishInput(
        request=req, video_key=derived_keys(render_id)["video"], total_frames=total, windows=plan.windows))
    assert len(encodes) == (0 if stored_audio else 1)
    out = store.download(result.video_key, tmp_path / "out.mp4")
    check_video(out, total, 64, 64)
    store.delete_prefix(f"renders/{render_id}/")


# ---- the timed backend --------------------------------------------------------------------

async def test_timed_backend_takes_its_time_without_holding_the_loop():
    from longtalk.backends import make_backends
    from longtalk.backends.base import WindowJob
    from longtalk.spec import RenderSpec
    from longtalk.backends.preview import render_preview
    from longtalk.settings import Settings

    backends = make_backends(Settings(backend="timed", timed_window_s=0.6))
    assert set(backends) == {"preview", "timed"}
    timed = backends["timed"]
    ref = av_io.fit_image(av_io.decode_image((EXAMPLES / "portrait.png").read_bytes(), "image"), 64, 64)
    job = WindowJob(render_id="r", index=0, spec=RenderSpec(width=64, height=64, window=81, motion=9, fps=25),
                    frame_start=0, reference=ref, tail=np.repeat(ref[None], 9, axis=0),
                    audio=[np.zeros(81 * 640, np.float32)], chain_start=True)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    seen: list[float] = []
    task = asyncio.create_task(ticker())
    started = time.monotonic()
    frames = await timed.render_window(job, lambda what, f: seen.append(f))
    took = time.monotonic() - started
    task.cancel()
    assert took >= 0.6 and took < 5
    assert ticks >= 8  # the event loop kept running (heartbeats go out meanwhile)
    assert seen and seen[-1] == 1.0
    assert np.array_equal(frames, render_preview(job))
    with pytest.raises(ValueError, match="LONGTALK_TIMED_WINDOW_S"):
        make_backends(Settings(backend="timed", timed_window_s=-1))


# ---- chain joins: a dissolve inside the pause ------------------------------------------------

def test_dissolve_spreads_the_jump_over_the_pause():
    from longtalk.chains import blend_frames, dissolve_into

    assert blend_frames({"frame": 100, "pause": [90, 120]}, 8) == 8
    assert blend_frames({"frame": 100, "pause": [97, 120]}, 8) == 2  # only frames inside the pause
    assert blend_frames({"frame": 100, "pause": None}, 8) == 0
    assert blend_frames({"frame": 100, "pause": [90, 120]}, 0) == 0
    frames = np.zeros((10, 4, 4, 3), np.uint8)
    target = np.full((4, 4, 3), 90, np.uint8)
    out = dissolve_into(frames, target, 8)
    steps = [int(out[i + 1, 0, 0, 0]) - int(out[i, 0, 0, 0]) for i in range(9)] + [90 - int(out[9, 0, 0, 0])]
    assert out[1, 0, 0, 0] == 0 and max(steps) <= 11 and min(steps[1:]) >= 9  # nine equal steps of 10


def test_stitch_dissolves_into_a_chain_join(settings, store, render_id, tmp_path):
    """Two chains whose pictures differ by 100 grey levels: a hard cut is one step of 100;
    stitch spreads it over the pause (steps of ~11), leaving every other frame alone."""
    import dataclasses as dc

    from temporalio.testing import ActivityEnvironment

    from activities.cpu import CpuActivities
    from longtalk.payloads import StitchInput, clip_key, derived_keys
    from longtalk.spec import RenderSpec
    from longtalk.windows import window, windows

    total = 81 + 3 * 72  # 4 windows; chain 1 starts at window 2
    spec = RenderSpec(width=64, height=64)
    join = window(2, total, PARAMS).keep_start
    for w in windows(total, PARAMS):
        grey = 50 if w.index < 2 else 150
        path = tmp_path / f"clip{w.index}.mp4"
        av_io.encode_clip(np.full((w.kept, 64, 64, 3), grey, np.uint8), path, 25)
        store.put_file(clip_key(render_id, w.index), path, "video/mp4")
    steps = {}
    for blend in (0, 8):
        store.put_json(derived_keys(render_id)["plan"], {"chain_plan": {"reason": "test", "cuts": [
            {"window": 2, "frame": join, "pause": [join - 12, join + 10]}]}})
        acts = CpuActivities(store, dc.replace(settings, join_blend_frames=blend))
        result = ActivityEnvironment().run(acts.stitch, StitchInput(render_id=render_id, windows=4,
                                                                    total_frames=total, spec=spec))
        video = store.download(result.video_key, tmp_path / f"out{blend}.mp4")
        store.delete(result.video_key)
        frames = av_io.read_frames(video, list(range(total)))
        means = np.array([frames[i].mean() for i in range(total)])
        steps[blend] = np.abs(np.diff(means))
    assert steps[0].max() > 90 and int(np.argmax(steps[0])) == join - 1  # the hard cut
    assert steps[8].max() < 15  # the same jump in nine steps
    assert np.abs(steps[8][: join - 10] ).max() < 2 and np.abs(steps[8][join + 1:]).max() < 2
    store.delete_prefix(f"renders/{render_id}/")
