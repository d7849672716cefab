"""The HTTP API (api/): RunPod's routes, driven by the official runpod SDK and by plain HTTP,
against the real Temporal and S3 servers and in-process workers (preview backend)."""

from __future__ import annotations

import asyncio
import base64
import http.server as http_server
import json
import threading
from functools import partial

import httpx
import pytest

from tests.api_server import KEY_A, KEY_B, api_settings, running_api
from tests.media import EXAMPLES

pytestmark = pytest.mark.timeout(300)
EP = "ep-test"


@pytest.fixture(scope="module")
def own_settings(settings):
    # heartbeats reach Temporal every 0.8 x this timeout: short, so a cancel lands within a
    # (slow, 8 s) window, as it does within a real GPU's window of minutes
    return api_settings(settings, heartbeat_timeout_s=4)


@pytest.fixture(scope="module")
async def api(own_settings, temporal_client, store, workers):
    async with running_api(own_settings, temporal_client, store) as base:
        yield base


@pytest.fixture
async def http(api):
    async with httpx.AsyncClient(base_url=f"{api}/v2/{EP}", headers={"Authorization": f"Bearer {KEY_A}"},
                                 timeout=120) as c:
        yield c


@pytest.fixture
def sdk(api, monkeypatch):
    """The official runpod SDK, unchanged, pointed at our server."""
    import runpod

    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", f"{api}/v2")
    monkeypatch.setattr(runpod, "endpoint_url_base", f"{api}/v2")
    monkeypatch.setattr(runpod, "api_key", KEY_A)
    return runpod


def short_job(media, **extra) -> dict:
    return {"input": {"image_path": str(media["portrait"]), "wav_path": str(media["speech_mp3"]),
                      "width": 128, "height": 128, **extra}}


def long_job(media) -> dict:
    return {"input": {"image_path": str(EXAMPLES / "portrait.png"), "wav_path": str(EXAMPLES / "speech.ogg"),
                      "width": 512, "height": 512}}  # 17 windows of a few tenths of a second each


def check_completed_output(out: dict, frames_at_least: int = 1) -> None:
    assert out["status"] == "completed" and out["frames"] >= frames_at_least
    assert out["video"].startswith("data:video/mp4;base64,")
    assert base64.b64decode(out["video"].split(",", 1)[1])[4:8] == b"ftyp"
    assert out["video_url"].startswith("http")


async def test_sdk_run_status_output(sdk, media):
    endpoint = sdk.Endpoint(EP)
    job = await asyncio.to_thread(endpoint.run, short_job(media))
    assert await asyncio.to_thread(job.status) in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    out = await asyncio.to_thread(job.output, 120)
    check_completed_output(out)
    assert await asyncio.to_thread(job.status) == "COMPLETED"


async def test_sdk_run_sync(sdk, media):
    out = await asyncio.to_thread(sdk.Endpoint(EP).run_sync, short_job(media), 120)
    check_completed_output(out)


async def test_sdk_stream_to_the_end(sdk, media):
    job = await asyncio.to_thread(sdk.Endpoint(EP).run, short_job(media, wav_path=str(media["speech"])))
    chunks = await asyncio.to_thread(lambda: list(job.stream()))
    assert chunks, "no stream updates"
    progress = [c for c in chunks if "stage" in c]
    assert all(c["windows_done"] <= c["windows_total"] or c["windows_total"] == 0 for c in progress)
    check_completed_output(chunks[-1])


@pytest.fixture
def slow_windows(backend, monkeypatch):
    """Windows of the render ids in the returned set take 8 s more, like a GPU's (a cancel
    reaches a window through its heartbeats, every few seconds)."""
    slow: set[str] = set()
    render = backend.render_window

    async def render_window(job, progress=None):
        if job.render_id in slow:
            await asyncio.sleep(8)
        return await render(job, progress)

    monkeypatch.setattr(backend, "render_window", render_window)
    return slow


async def test_sdk_cancel_stops_the_gpu(sdk, media, backend, http, slow_windows, monkeypatch):
    import uuid

    from api import jobs

    rid = str(uuid.uuid4())
    slow_windows.add(rid)
    monkeypatch.setattr(jobs, "new_render_id", lambda: rid)
    job = await asyncio.to_thread(sdk.Endpoint(EP).run, long_job(media))
    assert job.job_id == rid
    for _ in range(600):  # until a window is on the GPU
        if (await http.get(f"/status/{rid}")).json()["status"] == "IN_PROGRESS":
            break
        await asyncio.sleep(0.1)
    assert await asyncio.to_thread(job.cancel) == {"id": rid, "status": "CANCELLED"}
    status = (await http.get(f"/status-sync/{rid}?wait=60000")).json()
    assert status["status"] == "CANCELLED", status
    assert status["output"]["status"] == "cancelled" and status["output"]["windows"] == 17
    assert len(status["output"]["windows_finished"]) < 17
    calls = [c for c in backend.calls if c[0] == rid]
    await asyncio.sleep(2)
    assert [c for c in backend.calls if c[0] == rid] == calls  # the GPU stopped
    assert len(calls) < 17
    # the SDK's job.stream() ends on a cancelled render too (its last update, then 410)
    import requests

    got = []

    def stream():
        for chunk in job.stream():
            got.append(chunk)

    with pytest.raises(requests.HTTPError) as err:
        await asyncio.to_thread(stream)
    assert err.value.response.status_code == 410
    assert got and got[-1]["status"] == "cancelled"


async def test_sdk_health_and_purge_queue(sdk, media, http):
    endpoint = sdk.Endpoint(EP)
    assert (await http.post("/runsync", json=short_job(media))).json()["status"] == "COMPLETED"
    ids = [(await http.post("/run", json=long_job(media))).json()["id"] for _ in range(3)]
    purged = await asyncio.to_thread(endpoint.purge_queue)
    assert purged["status"] == "completed" and purged["removed"] >= 1, purged
    health = await asyncio.to_thread(endpoint.health)
    assert set(health["jobs"]) == {"completed", "failed", "inProgress", "inQueue", "retried"}
    assert set(health["workers"]) == {"idle", "running", "initializing", "ready", "throttled", "unhealthy"}
    assert health["jobs"]["completed"] >= 1 and health["workers"]["ready"] >= 1, health
    for rid in ids:  # what was not purged is cancelled here, so later tests do not wait behind it
        await http.post(f"/cancel/{rid}")
    states = [(await http.get(f"/status-sync/{rid}?wait=60000")).json()["status"] for rid in ids]
    assert set(states) == {"CANCELLED"}, states


async def test_status_shapes_and_errors(http, media):
    r = await http.post("/runsync?wait=60000", json=short_job(media, network_volume=True))
    body = r.json()
    assert r.status_code == 200 and body["status"] == "COMPLETED", body
    assert {"id", "status", "delayTime", "executionTime", "output"} <= set(body)
    assert body["output"]["video_path"].endswith(f"renders/{body['id']}/output.mp4")
    assert "video" not in body["output"]
    for method in ("GET", "POST"):
        again = await http.request(method, f"/status/{body['id']}")
        assert again.status_code == 200 and again.json()["status"] == "COMPLETED"
    assert (await http.get("/status/no-such-render")).status_code == 404
    assert "error" in (await http.get("/status/no-such-render")).json()
    bad = await http.post("/run", json={"input": {"image_path": str(media["portrait"]),
                                                  "wav_path": str(media["speech_mp3"]), "width": 250}})
    assert bad.status_code == 400 and bad.json()["error"].startswith("width")
    assert (await http.post("/run", json={"nope": 1})).json()["error"].startswith("input")
    assert (await http.post("/run", content=b"{not json")).status_code == 400
    assert (await http.post("/runsync?wait=5", json=short_job(media))).json()["error"].startswith("wait")
    r = await http.post("/run", json={**short_job(media), "policy": {"ttl": "soon"}})
    assert r.status_code == 400 and r.json()["error"].startswith("policy.ttl")
    retry = await http.post(f"/retry/{body['id']}")
    assert retry.status_code == 400 and "FAILED" in retry.json()["error"]


async def test_policy_execution_timeout_and_ttl_then_retry(http, media):
    r = await http.post("/run", json={**long_job(media), "policy": {"executionTimeout": 1000}})
    rid = r.json()["id"]
    body = (await http.get(f"/status-sync/{rid}?wait=30000")).json()
    assert body["status"] == "TIMED_OUT" and "executionTimeout" in body["error"], body
    retried = await http.post(f"/retry/{rid}")
    assert retried.json() == {"id": rid, "status": "IN_QUEUE"}
    await http.post(f"/cancel/{rid}")
    # ttl: after it the render is not retrievable
    r = await http.post("/run", json={**short_job(media), "policy": {"ttl": 1000}})
    rid = r.json()["id"]
    await asyncio.sleep(1.5)
    assert (await http.get(f"/status/{rid}")).status_code == 404


async def test_seed_readme_examples(http, media, tmp_path):
    """The requests of the seed worker's README (wlsdml1114/Infinitetalk_Runpod_hub), with its
    URLs pointed at a local server, sizes made small and the inputs short; the outputs are the
    ones it describes: `video` as a data URI, `video_path` with network_volume, `error`."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "portrait.png").write_bytes(media["portrait"].read_bytes())
    (www / "audio.mp3").write_bytes(media["speech_mp3"].read_bytes())
    (www / "input_video.mp4").write_bytes(media["video"].read_bytes())
    server = http_server.ThreadingHTTPServer(("127.0.0.1", 0), partial(
        http_server.SimpleHTTPRequestHandler, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        i2v = {"input_type": "image", "person_count": "single", "prompt": "A person is talking in a natural way.",
               "image_url": f"{url}/portrait.png", "wav_url": f"{url}/audio.mp3", "width": 128, "height": 128}
        v2v_paths = {"input_type": "video", "person_count": "single", "prompt": "A person is talking in a natural way.",
                     "video_path": str(media["video"]), "wav_path": str(media["speech_mp3"]),
                     "width": 128, "height": 128}
        b64 = {"input_type": "image", "person_count": "single", "prompt": "A person is talking in a natural way.",
               "image_base64": "data:image/png;base64," + base64.b64encode(media["portrait"].read_bytes()).decode(),
               "wav_base64": "data:audio/mpeg;base64," + base64.b64encode(media["speech_mp3"].read_bytes()).decode(),
               "width": 128, "height": 128}
        for job in (i2v, v2v_paths, b64):
            body = (await http.post("/runsync?wait=120000", json={"input": job})).json()
            assert body["status"] == "COMPLETED", body
            check_completed_output(body["output"])
        body = (await http.post("/runsync?wait=120000", json={"input": {**i2v, "network_volume": True}})).json()
        assert body["status"] == "COMPLETED" and body["output"]["video_path"] and "video" not in body["output"]
        # the README's own base64 example: its WAV has no samples -> an error naming the field
        seed_wav = "data:audio/wav;base64,UklGRiQAAABXQVZFZm10IBAAAAABAAEARKwAAIhYAQACABAAZGF0YQAAAAA="
        r = await http.post("/run", json={"input": {**b64, "wav_base64": seed_wav}})
        assert r.status_code == 400 and r.json()["error"].startswith("wav_base64"), r.json()
    finally:
        server.shutdown()
