"""End to end through starter.main, a real Temporal dev server, a real S3 server, real ffmpeg
and in-process workers running the preview backend."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import math

import pytest
from temporalio.client import Client

import starter
from activities.gpu import GpuActivities
from longtalk.payloads import Progress, window_meta_key, window_quality_key
from longtalk.inputs import existing_status
from longtalk.testing import EXAMPLES, cut_audio
from longtalk.windows import window_count
from tests.helpers import CountingPreview, check_video, patch_ids, run_starter, write_job
from tests.media import MediaServer, samples_16k
from workflows.render import RenderVideo, chain_workflow_id

pytestmark = pytest.mark.timeout(300)


async def check_activity_options(client: Client, settings, render_id: str, seed: int) -> None:
    """A new render's activities get the options built from the client's settings (behind the
    patch markers that keep the previous release's histories replaying), and every window of
    every chain gets the job's seed in its RenderSpec."""
    from temporalio.api.enums.v1 import EventType
    from longtalk.converter import DATA_CONVERTER

    from longtalk.activity_options import ACTIVITY_OPTIONS_PATCH, WINDOW_OPTIONS_PATCH, WINDOW_MARGIN_S
    from longtalk.payloads import RenderWindowInput

    async def events(workflow_id: str):
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        return history.events

    parent = await events(render_id)
    assert ACTIVITY_OPTIONS_PATCH in patch_ids(parent), patch_ids(parent)
    for e in parent:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            a = e.activity_task_scheduled_event_attributes
            assert a.schedule_to_close_timeout.ToSeconds() == settings.activity_schedule_to_close_s, a.activity_type
    chain = await events(chain_workflow_id(render_id, 1))
    assert WINDOW_OPTIONS_PATCH in patch_ids(chain), patch_ids(chain)
    scheduled = [e.activity_task_scheduled_event_attributes for e in chain
                 if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert scheduled
    for a in scheduled:
        assert a.start_to_close_timeout.ToSeconds() == settings.comfy_prompt_timeout_s + WINDOW_MARGIN_S
        assert a.schedule_to_close_timeout.ToSeconds() == settings.activity_schedule_to_close_s
        inp = DATA_CONVERTER.payload_converter.from_payloads(a.input.payloads, [RenderWindowInput])[0]
        assert inp.context.spec.seed == seed


@pytest.mark.parametrize("mode", ["image-single", "image-multi", "video-single", "video-multi"])
async def test_end_to_end_modes(mode, workers, temporal_client, settings, store, media, tmp_path, render_id):
    input_type, people = mode.split("-")
    fields = {"input_type": input_type, "person_count": people, "wav_path": media["speech"],
              "width": 256, "height": 192}
    if input_type == "image":
        fields["image_path"] = media["portrait"]
    else:
        fields["video_path"] = media["video"]
    if people == "multi":
        fields["wav_path_2"] = media["speech_2"]
    out_file = tmp_path / "out.mp4"
    rc, result, err = await run_starter(temporal_client, settings, write_job(tmp_path, **fields),
                                        "--id", render_id, "--output", str(out_file))
    assert rc == 0, err
    total = samples_16k(media["speech"]) // 640
    if people == "multi":
        total = max(total, samples_16k(media["speech_2"]) // 640)
    assert result["status"] == "completed" and result["render_id"] == render_id
    assert result["frames"] == total and result["fps"] == 25
    assert result["windows"] == window_count(total)
    assert math.isclose(result["duration_s"], total / 25)
    assert (result["width"], result["height"], result["backend"]) == (256, 192, "preview")
    assert result["video_key"] == f"renders/{render_id}/output.mp4"
    assert base64.b64decode(result["video"].split(",", 1)[1]) == out_file.read_bytes()
    assert result["video"].startswith("data:video/mp4;base64,")
    check_video(out_file, total, 256, 192)
    # the quality guard measured every window and raised no alarm on this clean render
    q = result["quality"]
    assert q["windows_measured"] == result["windows"] and q["max_delta_e"] is not None
    assert (q["rerendered"], q["flagged"], q["drifted"], q["reanchors"]) == ([], [], [], []), (
        q, [store.get_json(window_quality_key(render_id, f["window"]))["attempts"][0]["quality"] for f in q["flagged"]])
    # every window was rendered exactly once
    metas = [store.get_json(window_meta_key(render_id, k)) for k in range(result["windows"])]
    assert [m["index"] for m in metas] == list(range(result["windows"]))
    # the tails only served the next window: a finished render does not keep them
    assert not [k for k in store.list(f"renders/{render_id}/windows/") if "/tail_" in k]
    # the audio was encoded beside the windows and stitch wrote the output directly (stream copy):
    # no intermediate stitched video
    assert store.exists(f"renders/{render_id}/audio/final.m4a")
    assert not store.exists(f"renders/{render_id}/video.mp4")


async def test_multi_without_second_track_warns(workers, temporal_client, settings, media, tmp_path, render_id):
    job = write_job(tmp_path, person_count="multi", image_path=media["portrait"],
                    wav_path=media["speech_mp3"], network_volume=True, width=128, height=128)
    rc, result, err = await run_starter(temporal_client, settings, job, "--id", render_id)
    assert rc == 0, err
    assert any("second" in w.lower() for w in result["warnings"]), result["warnings"]
    assert result["video_path"] == f"{settings.bucket}/renders/{render_id}/output.mp4"
    assert "video" not in result  # network_volume returns the path, not the bytes


async def test_resubmit_attaches_and_renders_nothing_twice(workers, temporal_client, settings, backend, media,
                                                          tmp_path, render_id):
    job = write_job(tmp_path, image_path=media["portrait"], wav_path=media["speech_mp3"], width=128, height=128)
    first = await run_starter(temporal_client, settings, job, "--id", render_id)
    calls = [c for c in backend.calls if c[0] == render_id]
    assert first[0] == 0 and len(calls) == first[1]["windows"]
    second = await run_starter(temporal_client, settings, job, "--id", render_id)
    assert second[0] == 0 and "attaching" in second[2]
    assert second[1]["video_key"] == first[1]["video_key"] and second[1]["frames"] == first[1]["frames"]
    assert [c for c in backend.calls if c[0] == render_id] == calls


async def test_render_activity_is_idempotent(workers, temporal_client, settings, store, media, tmp_path, render_id):
    """Running a window's activity again finds meta.json and does no second render."""
    from temporalio.testing import ActivityEnvironment

    job = write_job(tmp_path, image_path=media["portrait"], wav_path=media["speech_mp3"], width=128, height=128)
    rc, result, _ = await run_starter(temporal_client, settings, job, "--id", render_id)
    assert rc == 0
    history = await temporal_client.get_workflow_handle(chain_workflow_id(render_id, 0)).fetch_history()
    scheduled = [e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")]
    payload = scheduled[0].activity_task_scheduled_event_attributes.input.payloads[0]
    from longtalk.payloads import RenderWindowInput
    inp = temporal_client.data_converter.payload_converter.from_payloads([payload], [RenderWindowInput])[0]
    counting = CountingPreview()
    acts = GpuActivities(store, {"preview": counting}, tmp_path / "cache")
    before = store.get_json(window_meta_key(render_id, inp.index))
    again = await ActivityEnvironment().run(acts.render_window, inp)
    assert again.rendered is False and counting.calls == [] and acts.renders == 0
    assert store.get_json(window_meta_key(render_id, inp.index)) == before
    # and with the marker gone the same activity really renders (so the check above can fail)
    store.delete(window_meta_key(render_id, inp.index))
    redo = await ActivityEnvironment().run(acts.render_window, inp)
    assert redo.rendered is True and counting.calls == [(render_id, inp.index)]


async def test_continue_as_new_keeps_long_chains_short(workers, temporal_client, settings, store, media,
                                                       tmp_path, render_id):
    small = dataclasses.replace(settings, windows_per_run=2)
    job = write_job(tmp_path, image_path=media["portrait"], wav_path=media["speech"], width=128, height=128)
    rc, result, err = await run_starter(temporal_client, small, job, "--id", render_id)
    assert rc == 0, err
    n = result["windows"]
    assert n >= 3
    runs = [w async for w in temporal_client.list_workflows(f"WorkflowId = '{chain_workflow_id(render_id, 0)}'")]
    assert len(runs) == math.ceil(n / 2)  # one run per two windows
    assert sum(r.status.name == "CONTINUED_AS_NEW" for r in runs) == len(runs) - 1
    progress = await temporal_client.get_workflow_handle(render_id).query(RenderVideo.progress, result_type=Progress)
    assert (progress.stage, progress.windows_done, progress.windows_total) == ("done", n, n)


async def test_progress_while_rendering(workers, temporal_client, settings, media, tmp_path, render_id):
    job = write_job(tmp_path, image_path=media["portrait"], wav_path=media["speech"], width=128, height=128)
    rc, rid, _ = await run_starter(temporal_client, settings, job, "--id", render_id, "--no-wait")
    assert rc == 0
    handle = temporal_client.get_workflow_handle(render_id)
    seen = []
    while True:
        try:
            p = await handle.query(RenderVideo.progress, result_type=Progress)
            seen.append(p)
        except Exception:
            pass
        desc = await handle.describe()
        if desc.status.name != "RUNNING":
            break
        await asyncio.sleep(0.05)
    final = await handle.query(RenderVideo.progress, result_type=Progress)
    assert final.stage == "done" and final.windows_done == final.windows_total > 0
    done_counts = [p.windows_done for p in seen]
    assert done_counts == sorted(done_counts)  # never goes backwards
    assert all(p.elapsed_s >= 0 for p in seen)


@pytest.mark.parametrize("audio, reason", [("header", "cannot be decoded as audio"),
                                           ("20ms", "is shorter than one video frame (40 ms)")])
async def test_undecodable_audio_fails_fast_naming_the_field(workers, temporal_client, settings, store,
                                                             render_id, backend, audio, reason):
    """What only decoding finds (here: inputs put into the bucket by another client, past the
    starter's checks: an Ogg header without its pages, a track shorter than one frame) fails
    the workflow at once, not retried, naming the field, and the render's objects are
    discarded."""
    import numpy as np
    from temporalio.client import WorkflowFailureError

    from longtalk import av_io
    from longtalk.payloads import RenderRequest, RenderSpec

    prefix = f"renders/{render_id}/"
    store.put_bytes(prefix + "inputs/image-x.png", (EXAMPLES / "portrait.png").read_bytes())
    data = ((EXAMPLES / "speech.ogg").read_bytes()[:120] if audio == "header"
            else av_io.wav16_bytes(np.full(320, 0.1, np.float32)))
    store.put_bytes(prefix + "inputs/audio-x", data)
    req = RenderRequest(render_id=render_id, inputs={"image": prefix + "inputs/image-x.png",
                                                     "audio": prefix + "inputs/audio-x"},
                        input_names={"image": "image_path", "audio": "wav_url"}, gpu_queue=settings.gpu_queue,
                        spec=RenderSpec())
    calls = len(backend.calls)
    with pytest.raises(WorkflowFailureError) as err:
        await temporal_client.execute_workflow(RenderVideo.run, req, id=render_id, task_queue=settings.render_queue)
    message = starter.failure_message(err.value)
    assert "wav_url" in message and reason in message, message
    history = await temporal_client.get_workflow_handle(render_id).fetch_history()
    failed = [e for e in history.events if e.HasField("activity_task_failed_event_attributes")]
    assert len(failed) == 1  # non-retryable: one attempt, no retries
    assert list(store.list(prefix)) == []  # discarded: a refused render costs nothing
    assert len(backend.calls) == calls  # no window was rendered


async def test_bad_job_is_refused_before_anything_starts(temporal_client, settings, store, tmp_path, render_id):
    job = write_job(tmp_path, image_path=str(EXAMPLES / "portrait.png"), wav_path=str(EXAMPLES / "speech.ogg"),
                    width=250)
    rc, _, err = await run_starter(temporal_client, settings, job, "--id", render_id)
    assert rc == 2 and "width" in err
    assert list(store.list(f"renders/{render_id}/")) == []
    with pytest.raises(Exception):
        await temporal_client.get_workflow_handle(render_id).describe()


async def test_ingest_checks_an_image_that_bypassed_the_client(workers, temporal_client, settings, store,
                                                              render_id, media, tmp_path):
    """Defence in depth: an extreme aspect ratio put straight into the bucket is refused by ingest."""
    import cv2
    import numpy as np
    from temporalio.client import WorkflowFailureError

    from longtalk.payloads import RenderRequest, RenderSpec

    ok, png = cv2.imencode(".png", np.full((100, 800, 3), 128, np.uint8))
    prefix = f"renders/{render_id}/"
    store.put_bytes(prefix + "inputs/image-x.png", png.tobytes())
    store.put_bytes(prefix + "inputs/audio-x.mp3", media["speech_mp3"].read_bytes())
    req = RenderRequest(render_id=render_id, inputs={"image": prefix + "inputs/image-x.png",
                                                     "audio": prefix + "inputs/audio-x.mp3"},
                        input_names={"image": "image_base64", "audio": "wav_path"}, gpu_queue=settings.gpu_queue,
                        spec=RenderSpec())
    with pytest.raises(WorkflowFailureError) as err:
        await temporal_client.execute_workflow(RenderVideo.run, req, id=render_id, task_queue=settings.render_queue)
    message = starter.failure_message(err.value)
    assert "image_base64" in message and "aspect" in message
    assert list(store.list(prefix)) == []


async def test_parallel_chains_render_a_correct_video(workers, temporal_client, settings, store, media,
                                                       tmp_path, render_id):
    """Cut into independent chains (one per GPU), the render still has every frame exactly once.
    30 s of speech: 11 windows, long enough for two chains of at least 5 windows (7 s would
    stay one chain)."""
    two = dataclasses.replace(settings, parallel_chains=2)
    out = tmp_path / "chains.mp4"
    speech = cut_audio(EXAMPLES / "speech.ogg", tmp_path / "speech30.wav", 0.0, 30.0)
    job = write_job(tmp_path, image_path=media["portrait"], wav_path=speech, width=128, height=128,
                    seed=1234)
    rc, result, err = await run_starter(temporal_client, two, job, "--id", render_id, "--output", str(out))
    assert rc == 0, err
    await check_activity_options(temporal_client, two, render_id, seed=1234)
    plan = store.get_json(f"renders/{render_id}/plan.json")
    assert len(plan["chains"]) == 2 and plan["chains"][0]["first"] == 0
    assert plan["chains"][1]["first"] == plan["chains"][0]["last"] + 1 and plan["chains"][1]["last"] == result["windows"] - 1
    runs = [w async for w in temporal_client.list_workflows(f"WorkflowId = '{chain_workflow_id(render_id, 1)}'")]
    assert runs and runs[0].status.name == "COMPLETED"
    assert plan["chain_plan"]["reason"].startswith("2 chain(s)")
    assert plan["chain_plan"]["cuts"][0]["window"] == plan["chains"][1]["first"]
    check_video(out, samples_16k(speech) // 640, 128, 128)


# ---- URL inputs: fetched by the ingest activity ------------------------------------------------

@pytest.fixture
def web(media):
    srv = MediaServer({"portrait.png": media["portrait"].read_bytes(),
                       "speech.mp3": media["speech_mp3"].read_bytes()},
                      redirects={"metadata": "http://169.254.169.254/latest/meta-data/"})
    yield srv
    srv.close()


async def ingest_attempts(client: Client, render_id: str) -> list:
    """The ingest activity's started events (their attempt numbers) and failures."""
    history = await client.get_workflow_handle(render_id).fetch_history()
    names = {e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
             for e in history.events if e.HasField("activity_task_scheduled_event_attributes")}
    started = [e.activity_task_started_event_attributes for e in history.events
               if e.HasField("activity_task_started_event_attributes")
               and names[e.activity_task_started_event_attributes.scheduled_event_id] == "ingest"]
    return started


async def test_url_input_is_fetched_by_ingest(workers, temporal_client, settings, store, media, web,
                                              tmp_path, render_id, monkeypatch):
    """The client checks the URL and records it; ingest downloads it through the network guard,
    checks it and stores it content-addressed; publish muxes the original. Each input is
    sniffed once: the path by the client, the URL by ingest."""
    from longtalk.inputs import formats
    from longtalk.inputs.staging import url_record_key, url_ref_key

    sniffed: list[int] = []
    real_sniff = formats.sniff
    monkeypatch.setattr(formats, "sniff", lambda head: sniffed.append(len(head)) or real_sniff(head))
    job = write_job(tmp_path, image_path=media["portrait"], wav_url=web.url("/files/speech.mp3?token=t0k"),
                    width=128, height=128)
    rc, result, err = await run_starter(temporal_client, settings, job, "--id", render_id)
    assert rc == 0, err
    assert result["frames"] == samples_16k(media["speech_mp3"]) // 640
    assert len(sniffed) == 2  # two inputs, each sniffed once
    assert web.requests == ["/files/speech.mp3"]  # downloaded once, by ingest
    ref = url_ref_key(render_id, "audio")
    record = store.get_json(url_record_key(ref))
    assert store.get_bytes(record["object_key"]) == media["speech_mp3"].read_bytes()
    assert record["object_key"].startswith(f"renders/{render_id}/inputs/audio-") and record["format"] == "mp3"
    request = store.get_json(f"renders/{render_id}/request.json")
    assert request["input_urls"] == {"audio": ref} and "audio" not in request["inputs"]
    assert [a.attempt for a in await ingest_attempts(temporal_client, render_id)] == [1]


async def test_url_download_that_breaks_off_is_retried(workers, temporal_client, settings, store, media, web,
                                                       tmp_path, render_id):
    """The server hangs up halfway through the first download: ingest fails retryably, stores
    nothing of it, and its next attempt downloads the input again and the render completes."""
    job = write_job(tmp_path, image_path=media["portrait"], wav_url=web.url("/flaky/speech.mp3"),
                    width=128, height=128)
    rc, result, err = await run_starter(temporal_client, settings, job, "--id", render_id)
    assert rc == 0, err
    assert web.requests == ["/flaky/speech.mp3", "/flaky/speech.mp3"]
    assert [a.attempt for a in await ingest_attempts(temporal_client, render_id)] == [2]
    audio = [k for k in store.list(f"renders/{render_id}/inputs/") if "/audio-" in k and k.endswith(".mp3")]
    assert len(audio) == 1 and store.get_bytes(audio[0]) == media["speech_mp3"].read_bytes()


@pytest.mark.parametrize("what", ["bad content", "redirect to a refused address"])
async def test_url_input_refused_by_ingest_names_the_field_and_leaves_nothing(
        what, workers, temporal_client, settings, store, media, web, tmp_path, render_id, backend):
    """What only the download shows fails the render at once (not retried), naming the field,
    and the render's objects are discarded, as for any input error ingest finds."""
    from temporalio.client import WorkflowFailureError

    if what == "bad content":
        fields = {"image_path": media["portrait"], "wav_url": web.url("/files/portrait.png?token=t0k")}
        key, reason = "wav_url", "got PNG image"
    else:  # the client checks the URL it is given; ingest checks every hop again
        fields = {"image_url": web.url("/redirect/metadata?token=t0k"), "wav_path": media["speech_mp3"]}
        key, reason = "image_url", "after redirect: http://169.254.169.254/latest/meta-data/ refused"
    calls = len(backend.calls)
    job = write_job(tmp_path, width=128, height=128, **fields)
    rc, result, err = await run_starter(temporal_client, settings, job, "--id", render_id, "--no-wait")
    assert rc == 0, err
    with pytest.raises(WorkflowFailureError) as failure:
        await temporal_client.get_workflow_handle(render_id).result()
    message = starter.failure_message(failure.value)
    assert message.startswith(f"{key}: ") and reason in message, message
    assert "t0k" not in message
    assert [a.attempt for a in await ingest_attempts(temporal_client, render_id)] == [1]  # not retried
    assert list(store.list(f"renders/{render_id}/")) == []  # discarded
    assert len(backend.calls) == calls


async def test_command_line_paths_are_the_operators_own(workers, temporal_client, settings, store, media,
                                                        tmp_path, render_id, monkeypatch):
    """`starter.py --image ~/face.png --audio /elsewhere/talk.mp3`: files outside
    LONGTALK_INPUT_ROOTS given on the command line are accepted (`~` expanded); the same paths
    inside a job file are refused, naming the field, before anything starts."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "face.png").write_bytes(media["portrait"].read_bytes())
    (home / "talk.mp3").write_bytes(media["speech_mp3"].read_bytes())
    monkeypatch.setenv("HOME", str(home))
    confined = dataclasses.replace(settings, input_roots=str(EXAMPLES))  # tmp_path is outside
    rc, result, err = await run_starter(temporal_client, confined, "--image", "~/face.png",
                                        "--audio", str(home / "talk.mp3"), "--width", "128", "--height", "128",
                                        "--id", render_id)
    assert rc == 0, err
    assert result["status"] == "completed"

    other = render_id + "-job"
    job = write_job(tmp_path, image_path=home / "face.png", wav_path=home / "talk.mp3", width=128, height=128)
    rc, _, err = await run_starter(temporal_client, confined, job, "--id", other)
    assert rc == 2
    assert "error: image_path: " in err and "outside the allowed input folders (LONGTALK_INPUT_ROOTS)" in err
    assert await existing_status(temporal_client, other) is None
    assert list(store.list(f"renders/{other}/")) == []


async def test_a_download_that_keeps_breaking_off_ends_as_an_input_error(settings, store, media, render_id):
    """Retryable while attempts are left; on the last one an InputError like any other, so the
    workflow fails naming the field and discards the render."""
    from temporalio.exceptions import ApplicationError
    from temporalio.testing import ActivityEnvironment

    from activities.cpu import URL_FETCH_ATTEMPTS, CpuActivities
    from longtalk.payloads import RenderRequest
    from longtalk.inputs import parse_job, render_request, stage_inputs
    from longtalk.stack import free_port

    job = parse_job({"input": {"image_path": str(media["portrait"]),
                               "wav_url": f"http://127.0.0.1:{free_port()}/talk.wav?token=t0k"}}, settings)
    req: RenderRequest = render_request(job, stage_inputs(job, store, render_id, settings), render_id,
                                        "preview", settings)
    acts = CpuActivities(store, settings)
    for attempt, kind, retryable in ((1, "DownloadFailed", True), (URL_FETCH_ATTEMPTS, "InputError", False)):
        env = ActivityEnvironment()
        env.info = dataclasses.replace(env.info, attempt=attempt)
        with pytest.raises(ApplicationError) as err:
            await env.run(acts.ingest, req)
        assert (err.value.type, err.value.non_retryable) == (kind, not retryable)
        assert err.value.message.startswith("wav_url: ") and "connection refused" in err.value.message
        assert "t0k" not in err.value.message
    store.delete_prefix(f"renders/{render_id}/")
