"""The HTTP API (api/): RunPod's routes, driven by the official runpod SDK and by plain HTTP,
against the real Temporal and S3 servers and in-process workers (preview backend)."""

from __future__ import annotations

import asyncio
import os
import base64
import http.server as http_server
import json
import threading
from functools import partial

import httpx
import pytest

from longtalk.testing import EXAMPLES, KEY_A, KEY_B, api_settings
from tests.api_server import cancel_running, running_api

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
    await cancel_running(temporal_client, ('alice', 'bob'))


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
    """Windows of the render ids in the returned dict take that many seconds more, like a
    GPU's (a cancel reaches a window through its heartbeats, every few seconds)."""
    slow: dict[str, float] = {}
    render = backend.render_window

    async def render_window(job, progress=None):
        if job.render_id in slow:
            await asyncio.sleep(slow[job.render_id])
        return await render(job, progress)

    monkeypatch.setattr(backend, "render_window", render_window)
    return slow


async def test_sdk_cancel_stops_the_gpu(sdk, media, backend, http, slow_windows, monkeypatch):
    import uuid

    from api import jobs

    rid = str(uuid.uuid4())
    slow_windows[rid] = 8
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


async def test_purge_leaves_a_render_on_a_gpu(http, media, temporal_client, slow_windows, monkeypatch):
    """A render whose first window is on a GPU (no window done yet) is not queued any more:
    /purge-queue neither counts it nor (in its PurgeQueue workflow) cancels it, whether its
    visibility stage has left "waiting" yet or not (the purge asks the render itself then)."""
    import uuid

    from api import jobs
    from longtalk.testing import purges
    from tests.helpers import cancel_requested

    rid = str(uuid.uuid4())
    slow_windows[rid] = 8
    monkeypatch.setattr(jobs, "new_render_id", lambda: rid)
    assert (await http.post("/run", json=long_job(media))).json()["id"] == rid
    for _ in range(600):  # until a window is on the GPU
        if (await http.get(f"/status/{rid}")).json()["status"] == "IN_PROGRESS":
            break
        await asyncio.sleep(0.1)
    earlier = {w.id for w in await purges(temporal_client, "alice")}
    assert (await http.post("/purge-queue")).json() == {"removed": 0, "status": "completed"}
    await asyncio.sleep(1)  # a PurgeQueue run starts only where the count found renders
    for purge in [w for w in await purges(temporal_client, "alice") if w.id not in earlier]:
        assert await temporal_client.get_workflow_handle(purge.id).result() == 0
    assert not await cancel_requested(temporal_client, rid)
    await http.post(f"/cancel/{rid}")
    assert (await http.get(f"/status-sync/{rid}?wait=60000")).json()["status"] == "CANCELLED"


async def test_status_shapes_and_errors(http, media):
    r = await http.post("/runsync?wait=60000", json=short_job(media, network_volume=True))
    body = r.json()
    assert r.status_code == 200 and body["status"] == "COMPLETED", body
    assert {"id", "status", "delayTime", "executionTime", "output"} <= set(body)
    # queue time (ingest, plan, waiting for a GPU) apart from the time on GPUs and after
    assert body["delayTime"] == round(1000 * body["output"]["queued_s"]) > 0 and body["executionTime"] > 0
    assert body["output"]["video_path"].endswith(f"renders/{body['id']}/output.mp4")
    assert "video" not in body["output"]
    quality = body["output"]["quality"]  # the quality guard's summary
    assert quality["windows_measured"] == body["output"]["windows"] and quality["flagged"] == []
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


async def test_policy_execution_timeout_then_retry_reuses_windows(http, media, temporal_client, backend,
                                                                  slow_windows, monkeypatch):
    """policy.executionTimeout ends the render TIMED_OUT mid-render; /retry starts it again
    under the same id and renders only the windows not stored yet."""
    import uuid

    from api import jobs

    rid = str(uuid.uuid4())
    slow_windows[rid] = 2.0  # 17 windows take 40 s or more: the 20 s limit ends it mid-render
    monkeypatch.setattr(jobs, "new_render_id", lambda: rid)
    r = await http.post("/run", json={**long_job(media), "policy": {"executionTimeout": 20000}})
    assert r.json()["id"] == rid
    body = (await http.get(f"/status-sync/{rid}?wait=60000")).json()
    assert body["status"] == "TIMED_OUT" and "executionTimeout" in body["error"], body
    await asyncio.sleep(3)  # the window on the GPU when the time ran out is finished and stored
    before = [k for r_, k in backend.calls if r_ == rid]
    assert 0 < len(before) < 17, before  # it timed out mid-render
    del slow_windows[rid]
    timeouts = 1
    for _ in range(6):  # the retry keeps the 20 s limit: on a loaded machine it may run out again,
        # and each retry goes on from the windows stored so far
        retried = await http.post(f"/retry/{rid}")
        assert retried.json() == {"id": rid, "status": "IN_QUEUE"}
        body = (await http.get(f"/status-sync/{rid}?wait=120000")).json()
        if body["status"] != "TIMED_OUT":
            break
        timeouts += 1
        await asyncio.sleep(3)
    assert body["status"] == "COMPLETED", body
    assert body["output"]["windows"] == 17
    calls = [k for r_, k in backend.calls if r_ == rid]
    after = calls[len(before):]
    assert sorted(set(calls)) == list(range(17))
    assert len(after) < 17 and not set(after) & set(before[:-1])  # stored windows were not rendered again
    # at most the window on the GPU when each limit ran out is rendered twice
    assert len(calls) - len(set(calls)) <= timeouts, calls
    health = (await http.get("/health")).json()
    assert health["jobs"]["retried"] >= 1


async def test_policy_ttl(http, media, temporal_client):
    # ttl: after it the render is not retrievable
    r = await http.post("/run", json={**short_job(media), "policy": {"ttl": 1000}})
    rid = r.json()["id"]
    await asyncio.sleep(1.5)
    assert (await http.get(f"/status/{rid}")).status_code == 404
    await temporal_client.get_workflow_handle(rid).result()  # (it still renders: let it end)


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


# ---- webhooks -------------------------------------------------------------------------

class Receiver:
    """A webhook receiver on loopback: records every POST; answers 500 `fail` times first."""

    def __init__(self, fail: int = 0) -> None:
        self.posts: list[tuple[dict, bytes]] = []
        self.fail = fail
        receiver = self

        class Handler(http_server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                code = 500 if len(receiver.posts) <= receiver.fail else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http_server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=abc"

    def close(self) -> None:
        self.server.shutdown()


def verify(headers: dict, body: bytes, secret: str) -> bool:
    """A receiver's Standard Webhooks check, written from the spec (not with our signer)."""
    import hashlib
    import hmac

    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(sig == f"v1,{expected}" for sig in headers["webhook-signature"].split())


async def until(predicate, timeout: float = 60.0, every: float = 0.1):
    for _ in range(int(timeout / every)):
        if predicate():
            return
        await asyncio.sleep(every)
    raise AssertionError("condition not met in time")


async def test_webhook_exactly_one_signed_delivery(http, media):
    from longtalk.testing import WEBHOOK_SECRET

    receiver = Receiver()
    try:
        rid = (await http.post("/run", json={**short_job(media), "webhook": receiver.url})).json()["id"]
        await until(lambda: receiver.posts)
        await asyncio.sleep(2)  # and no second one
        assert len(receiver.posts) == 1
        headers, body = receiver.posts[0]
        assert verify(headers, body, WEBHOOK_SECRET)
        assert abs(int(headers["webhook-timestamp"]) - __import__("time").time()) < 60
        delivered = json.loads(body)
        status = (await http.get(f"/status/{rid}")).json()
        assert delivered["id"] == rid and delivered["status"] == "COMPLETED"
        assert delivered["output"] == status["output"]  # the /status body
        # with the quality guard's summary: every window measured
        assert delivered["output"]["quality"]["windows_measured"] == delivered["output"]["windows"]
        assert not verify(headers, body + b" ", WEBHOOK_SECRET)
    finally:
        receiver.close()


async def test_webhook_retried_while_it_answers_500(http, media):
    receiver = Receiver(fail=3)
    try:
        await http.post("/run", json={**short_job(media), "webhook": receiver.url})
        await until(lambda: len(receiver.posts) >= 4)
        await asyncio.sleep(3)
        assert len(receiver.posts) == 4  # three 500s, one 200, then nothing more
        assert len({h["webhook-id"] for h, _ in receiver.posts}) == 1  # the same message each time
    finally:
        receiver.close()


async def test_webhook_of_a_render_that_fails_at_ingest(http, media):
    """A URL input that is gone when ingest fetches it: the render FAILS with the field named,
    and the webhook gets that /status body once."""
    from tests.media import MediaServer

    files = MediaServer({"portrait.png": media["portrait"].read_bytes()})
    receiver = Receiver()
    try:
        job = {"input": {"image_url": files.url("/files/portrait.png"), "wav_url": files.url("/files/gone.wav"),
                         "width": 128, "height": 128}, "webhook": receiver.url}
        rid = (await http.post("/run", json=job)).json()["id"]
        await until(lambda: receiver.posts, timeout=120)
        await asyncio.sleep(2)
        assert len(receiver.posts) == 1
        delivered = json.loads(receiver.posts[0][1])
        assert delivered["id"] == rid and delivered["status"] == "FAILED", delivered
        assert delivered["error"].startswith("wav_url:") and "404" in delivered["error"], delivered["error"]
        assert delivered == (await http.get(f"/status/{rid}")).json()
    finally:
        receiver.close()
        files.close()


# ---- security -------------------------------------------------------------------------

async def history_text(client, workflow_id: str) -> str:
    from google.protobuf.json_format import MessageToJson

    history = await client.get_workflow_handle(workflow_id).fetch_history()
    text = "\n".join(MessageToJson(e) for e in history.events)
    import re

    return text + "\n".join(base64.b64decode(m).decode("utf-8", "replace")
                            for m in re.findall(r'"data": "([^"]+)"', text))


async def test_keys_owners_and_limits(api, http, media, temporal_client, store, caplog, own_settings):
    import logging

    caplog.set_level(logging.DEBUG)
    base = f"{api}/v2/{EP}"
    async with httpx.AsyncClient(base_url=base, timeout=60) as anon:
        for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": KEY_A[:-1]}):
            r = await anon.get("/health", headers=headers)
            assert r.status_code == 401 and "error" in r.json()
            assert (await anon.post("/run", json=short_job(media), headers=headers)).status_code == 401
        r = await anon.get("/health", headers={"Authorization": KEY_A})  # the raw key: RunPod's curl form
        assert r.status_code == 200
        # another key's render is not there
        receiver = Receiver()
        rid = (await http.post("/run", json={**short_job(media), "webhook": receiver.url})).json()["id"]
        bob = {"Authorization": f"Bearer {KEY_B}"}
        for method, path in (("GET", "status"), ("POST", "status"), ("GET", "stream"), ("POST", "cancel"),
                             ("POST", "retry"), ("GET", "status-sync")):
            r = await anon.request(method, f"/{path}/{rid}", headers=bob)
            assert r.status_code == 404 and "error" in r.json(), (path, r.text)
        assert (await anon.post("/purge-queue", headers=bob)).json()["removed"] == 0
        done = (await http.get(f"/status-sync/{rid}?wait=120000")).json()
        assert done["status"] == "COMPLETED"
        await until(lambda: receiver.posts)
        receiver.close()
        # the webhook guard: no metadata, no private address unless allow-listed
        for url in ("http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/hook", "file:///etc/passwd"):
            r = await http.post("/run", json={**short_job(media), "webhook": url})
            assert r.status_code == 400 and r.json()["error"].startswith("webhook"), r.text
        # keys never in workflow history (render, chain, webhook) nor in the logs
        from workflows.render import chain_workflow_id
        from workflows.webhook import webhook_workflow_id

        text = "".join([await history_text(temporal_client, w) for w in
                        (rid, chain_workflow_id(rid, 0), webhook_workflow_id(rid))])
        assert "alice" in text  # the owner's name is there (a search attribute), the key is not
        for secret in (KEY_A, KEY_B, own_settings.api_webhook_secret, "token=abc"):
            assert secret not in text, secret
            assert secret not in caplog.text, secret


async def test_oversize_bodies_answer_413(own_settings, temporal_client, store, media):
    import dataclasses

    from longtalk.testing import api_settings

    small = api_settings(dataclasses.replace(own_settings, api_keys=""), api_max_body_bytes=4096)
    async with running_api(small, temporal_client, store) as base:
        async with httpx.AsyncClient(base_url=f"{base}/v2/{EP}", timeout=60,
                                     headers={"Authorization": f"Bearer {KEY_A}"}) as c:
            big = {"input": {**short_job(media)["input"], "image_base64": "A" * 5000}}
            r = await c.post("/run", json=big)
            assert r.status_code == 413 and "URL" in r.json()["error"]

            async def chunks():  # no Content-Length: counted while it streams
                for _ in range(10):
                    yield b" " * 1000
            r = await c.post("/run", content=chunks())
            assert r.status_code == 413
            ok = await c.post("/runsync", json=short_job(media))
            assert ok.status_code == 200 and ok.json()["status"] == "COMPLETED"


async def test_rerender_over_http(api, http, media):
    """GET says what a re-render would redo; POST starts the new version (its own id), which
    ends with exactly the base's frames; another key's render is not there; bad ranges name
    the field."""
    done = (await http.post("/runsync?wait=120000", json=short_job(media, wav_path=str(media["speech"])))).json()
    assert done["status"] == "COMPLETED", done
    rid, frames, n = done["id"], done["output"]["frames"], done["output"]["windows"]
    preview = (await http.get(f"/rerender/{rid}?from=1&to=1")).json()
    assert preview == {"id": rid, "base": rid, "first": 1, "last": n - 1, "requested_last": 1,
                       "windows": n - 1, "windows_total": n}, preview
    r = await http.post(f"/rerender/{rid}", json={"from": 0, "to": 1, "seed": 7})
    body = r.json()
    assert r.status_code == 200 and body["id"] == f"{rid}.v2" and body["version"] == 2 and body["windows"] == n
    out = (await http.get(f"/status-sync/{body['id']}?wait=120000")).json()
    assert out["status"] == "COMPLETED" and out["output"]["frames"] == frames, out
    for query, field in (("from=0", "to"), (f"from={n}&to={n}", "from"), ("from=1&to=0", "to")):
        r = await http.get(f"/rerender/{rid}?{query}")
        assert r.status_code == 400 and r.json()["error"].startswith(field), (query, r.text)
    async with httpx.AsyncClient(base_url=f"{api}/v2/{EP}", headers={"Authorization": f"Bearer {KEY_B}"}) as bob:
        assert (await bob.post(f"/rerender/{rid}", json={"from": 0, "to": 0})).status_code == 404


# ---- what a submission says: the answer to /run, every /status -----------------------------
async def test_unknown_keys_are_warned_at_submission_and_misspellings_refused(http, media, temporal_client):
    r = await http.post("/run", json=short_job(media, steps=30, cfg=1.5))
    body = r.json()
    assert r.status_code == 200 and body["status"] == "IN_QUEUE", body
    said = ["unknown input keys ignored: cfg, steps"]
    assert body["warnings"] == said  # in the answer to /run: --no-wait clients see it
    assert (await http.get(f"/status/{body['id']}")).json()["warnings"] == said  # while it runs
    done = (await http.get(f"/status-sync/{body['id']}?wait=60000")).json()
    assert done["status"] == "COMPLETED" and done["warnings"] == said
    assert done["output"]["warnings"] == said
    r = await http.post("/runsync?wait=60000", json=short_job(media, lora="x"))
    assert r.json()["warnings"] == ["unknown input keys ignored: lora"]

    before = [w.id async for w in temporal_client.list_workflows("WorkflowType = 'RenderVideo'")]
    r = await http.post("/run", json=short_job(media, widht=768))
    assert r.status_code == 400 and r.json() == {"error": "widht: unknown field; did you mean width?"}
    after = [w.id async for w in temporal_client.list_workflows("WorkflowType = 'RenderVideo'")]
    assert len(after) == len(before)  # refused before anything started


@pytest.fixture(scope="module")
def odd_shapes(tmp_path_factory):
    """A 768x512 source video (two people side by side) and a 3:4 portrait."""
    import cv2

    from tests.media import make_video

    d = tmp_path_factory.mktemp("shapes")
    portrait = cv2.imread(str(EXAMPLES / "portrait.png"))
    cv2.imwrite(str(d / "tall.png"), cv2.resize(portrait, (384, 512)))
    return {"wide_video": make_video(d / "wide.mp4", 2.0, size="768x512"), "tall": d / "tall.png"}


async def test_a_crop_is_said_at_submission(http, media, odd_shapes):
    """A source of another shape than the frame is cut: the answer to /run says what is cut
    and how to keep the whole picture, and the video comes back at the size asked."""
    from longtalk import av_io

    wide = {"input": {"input_type": "video", "person_count": "multi", "video_path": str(odd_shapes["wide_video"]),
                      "wav_path": str(media["speech_mp3"]), "wav_path_2": str(media["speech_2"]),
                      "max_frame": 40}}
    body = (await http.post("/run", json=wide)).json()
    crop = [w for w in body["warnings"] if w.startswith("video_path:")]
    assert len(crop) == 1, body
    assert "768x512" in crop[0] and "512x512" in crop[0] and "256 of its 768 columns (33%)" in crop[0]
    assert "default size" in crop[0] and "width 624 and height 416" in crop[0]
    done = (await http.get(f"/status-sync/{body['id']}?wait=60000")).json()
    assert done["status"] == "COMPLETED" and crop[0] in done["warnings"]
    assert (done["output"]["width"], done["output"]["height"]) == (512, 512)

    tall = short_job(media)
    tall["input"].update(image_path=str(odd_shapes["tall"]))
    body = (await http.post("/run", json=tall)).json()
    assert any("384x512 (3:4)" in w and "top and bottom" in w and "default size" not in w
               for w in body["warnings"]), body
    same = short_job(media, width=384, height=512)  # the source's own shape: nothing is cut
    same["input"].update(image_path=str(odd_shapes["tall"]))
    body = (await http.post("/run", json=same)).json()
    assert body["warnings"] == []
    done = (await http.get(f"/status-sync/{body['id']}?wait=60000")).json()
    info = await asyncio.to_thread(av_io.probe, _download(done["output"]["video_url"]))
    assert (info["video"]["width"], info["video"]["height"]) == (384, 512)


def _download(url: str):
    import tempfile
    import urllib.request

    path = tempfile.mktemp(suffix=".mp4")
    urllib.request.urlretrieve(url, path)
    return path


async def test_a_url_picture_is_measured_by_ingest_and_status_says_the_crop(http, media, odd_shapes, tmp_path,
                                                                            slow_windows):
    """A URL input is downloaded by ingest, so the answer to /run can only say that its shape
    is checked then; once ingest has it, /status (read from visibility and the bucket while the
    render runs, then the result) says what is cut."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "tall.png").write_bytes(odd_shapes["tall"].read_bytes())
    server = http_server.ThreadingHTTPServer(("127.0.0.1", 0), partial(
        http_server.SimpleHTTPRequestHandler, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        job = {"input": {"image_url": f"http://127.0.0.1:{server.server_address[1]}/tall.png",
                         "wav_path": str(media["speech_mp3"]), "max_frame": 30}}
        body = (await http.post("/run", json=job)).json()
        pending = [w for w in body["warnings"] if w.startswith("image_url:")]
        assert len(pending) == 1 and "known once it is downloaded" in pending[0], body
        slow_windows[body["id"]] = 1.0  # its windows take a while: /status is seen while it renders
        for _ in range(300):
            running = (await http.get(f"/status/{body['id']}")).json()
            if running["status"] in ("COMPLETED", "FAILED") or running["output"]["stage"] not in ("queued", "ingest"):
                break
            await asyncio.sleep(0.1)
        assert running["status"] in ("IN_QUEUE", "IN_PROGRESS"), running
        assert running["output"]["windows_total"] > 0 or running["output"]["stage"] == "plan", running
        assert any("384x512 (3:4)" in w for w in running["warnings"]), running
        done = (await http.get(f"/status-sync/{body['id']}?wait=60000")).json()
        assert done["status"] == "COMPLETED", done
        measured = [w for w in done["warnings"] if "384x512 (3:4)" in w]
        assert len(measured) == 1 and measured[0].startswith("image_url:") and "128 of its 512 rows (25%)" in measured[0]
        assert measured[0] in done["output"]["warnings"]
    finally:
        server.shutdown()


# ---- status that does not contradict itself ------------------------------------------------
async def test_status_times_are_monotonic_and_final(http, media, slow_windows, monkeypatch):
    """delayTime is fixed from the moment a GPU begins the first window, executionTime never
    goes down, and both are final once the render has ended (RunPod's meaning: time in the
    queue, then time on the workers)."""
    import uuid

    from api import jobs

    rid = str(uuid.uuid4())
    slow_windows[rid] = 0.4
    monkeypatch.setattr(jobs, "new_render_id", lambda: rid)
    assert (await http.post("/run", json=long_job(media))).json()["id"] == rid
    seen = []
    while True:
        body = (await http.get(f"/status/{rid}")).json()
        seen.append((body["status"], body["delayTime"], body["executionTime"]))
        if body["status"] == "COMPLETED":
            break
        await asyncio.sleep(0.15)
    for _ in range(3):
        body = (await http.get(f"/status/{rid}")).json()
        seen.append((body["status"], body["delayTime"], body["executionTime"]))
    states = [s for s, _, _ in seen]
    assert "IN_QUEUE" in states and "IN_PROGRESS" in states, states
    assert states.index("IN_PROGRESS") > max(i for i, s in enumerate(states) if s == "IN_QUEUE")  # no way back
    queued = [(d, e) for s, d, e in seen if s == "IN_QUEUE"]
    assert all(e == 0 for _, e in queued) and [d for d, _ in queued] == sorted(d for d, _ in queued)
    after = [(d, e) for s, d, e in seen if s != "IN_QUEUE"]
    assert len({d for d, _ in after}) == 1, after  # fixed once the first window began
    # while queued it counts up; the GPU's start time arrives by a signal, so the last queued
    # answer may run ahead of it by that signal's latency (well under a second), never more
    assert after[0][0] >= queued[-1][0] - 500, (after[0], queued[-1])
    executions = [e for _, e in after]
    assert executions == sorted(executions) and executions[-1] > 0, executions
    finals = [(d, e) for s, d, e in seen if s == "COMPLETED"]
    assert len(set(finals)) == 1, finals  # final at the terminal status
    assert abs(after[0][0] - round(1000 * body["output"]["queued_s"])) <= 1


async def test_every_answer_after_a_cancel_reads_cancelled(http, media, slow_windows, monkeypatch, temporal_client):
    import uuid

    from api import jobs

    rid = str(uuid.uuid4())
    slow_windows[rid] = 3.0
    monkeypatch.setattr(jobs, "new_render_id", lambda: rid)
    assert (await http.post("/run", json=long_job(media))).json()["id"] == rid
    while (await http.get(f"/status/{rid}")).json()["status"] != "IN_PROGRESS":
        await asyncio.sleep(0.1)
    assert (await http.post(f"/cancel/{rid}")).json() == {"id": rid, "status": "CANCELLED"}
    answers = []
    handle = temporal_client.get_workflow_handle(rid)
    while True:  # until the workflow itself has ended, and a little after
        answers.append((await http.get(f"/status/{rid}")).json()["status"])
        if (await handle.describe()).close_time is not None:
            answers.append((await http.get(f"/status/{rid}")).json()["status"])
            break
    assert set(answers) == {"CANCELLED"}, answers
    assert len(answers) >= 2


async def test_probes_answer_without_a_key(api):
    """Kubernetes' probes: /livez while the process answers, /readyz once Temporal answers;
    no key, no endpoint id (the kubelet sends neither)."""
    async with httpx.AsyncClient(base_url=api, timeout=30) as c:
        live, ready = await c.get("/livez"), await c.get("/readyz")
        assert live.status_code == 200 and live.json() == {"live": True, "pid": os.getpid()}  # served in this process
        assert ready.status_code == 200 and ready.json() == {"ready": True}
        assert (await c.get(f"/v2/{EP}/health")).status_code == 401  # the rest still needs a key
