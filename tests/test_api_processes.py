"""The API in several processes (LONGTALK_API_PROCESSES=2, `python -m api`, uvicorn's
workers on one address): nothing a client sees depends on which process answers. A /stream
goes on from where any process left it (the cursor is in the bucket), a dashboard session
opened on one process holds on the other (one signing secret). Real Temporal and S3 servers;
renders go to a queue no worker polls, so they stay queued."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from longtalk.stack import Process, Service, split_host_port
from longtalk.testing import KEY_A, api_settings

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parent.parent
EP = "ep-procs"


@pytest.fixture
def api_two(settings, temporal_server, s3_server, tmp_path):
    conf = api_settings(settings, render_queue=f"idle-{uuid.uuid4().hex[:6]}")
    proc = Process(Service("api", [sys.executable, "-m", "api"], split_host_port(conf.api_address), cwd=ROOT),
                   tmp_path / "run", tmp_path / "logs")
    proc.start(extra_env={**conf.to_env(), "LONGTALK_API_PROCESSES": "2", "LONGTALK_API_SESSION_SECRET": ""})
    try:
        proc.wait_ready(90)
        yield f"http://{conf.api_address}"
    finally:
        proc.stop()


async def one_connection(base: str, *calls):
    """Each call on ONE fresh connection (so one process answers them all), then that
    process's pid; the answers and the pid."""
    async with httpx.AsyncClient(base_url=base, timeout=60, headers={"Authorization": f"Bearer {KEY_A}"},
                                 limits=httpx.Limits(max_connections=1)) as c:
        answers = [await call(c) for call in calls]
        return answers, (await c.get("/livez")).json()["pid"]


async def test_stream_and_sessions_hold_across_processes(api_two, media, temporal_client):
    base = api_two
    pids: set[int] = set()
    for _ in range(100):  # the kernel hands connections to both processes (wait until both answer)
        (ready,), pid = await one_connection(base, lambda c: c.get("/readyz"))
        if ready.status_code == 200:
            pids.add(pid)
        if len(pids) == 2:
            break
        await asyncio.sleep(0.1)
    assert len(pids) == 2, pids
    job = {"input": {"image_path": str(media["portrait"]), "wav_path": str(media["speech_mp3"]),
                     "width": 128, "height": 128}}
    (run,), _ = await one_connection(base, lambda c: c.post(f"/v2/{EP}/run", json=job))
    rid = run.json()["id"]
    chunks, served_by = [], set()
    for _ in range(200):
        (answer,), pid = await one_connection(base, lambda c: c.get(f"/v2/{EP}/stream/{rid}"))
        body = answer.json()
        assert body["status"] == "IN_QUEUE", body
        chunks += body["stream"]
        served_by.add(pid)
        if len(served_by) == 2 and len(chunks) and _ > 10:
            break
    assert served_by == pids  # both processes answered /stream
    assert [c["output"]["stage"] for c in chunks] == ["queued"], chunks  # said once, by whichever first

    # a session cookie from one process is good on the other
    (login,), pid_login = await one_connection(base, lambda c: c.post("/login", data={"key": KEY_A, "next": "/"}))
    assert login.status_code in (302, 303), login.text
    cookie = login.cookies
    for _ in range(100):
        async with httpx.AsyncClient(base_url=base, timeout=60, cookies=cookie,
                                     limits=httpx.Limits(max_connections=1)) as c:
            listed = await c.get("/dashboard/api/renders")
            pid = (await c.get("/livez")).json()["pid"]
        assert listed.status_code == 200, listed.text
        if pid != pid_login:
            assert rid in listed.text
            break
    else:
        pytest.fail("no request reached the other process")
    await temporal_client.get_workflow_handle(rid).terminate("test over")  # no worker polls its queue
