"""/purge-queue: the answer comes at once, the cancels are a PurgeQueue workflow's (run by the
API's worker), which survives the API and resumes from its last page. Real Temporal and S3
servers; the renders go to a render queue no worker polls until the test starts one, so they
stay queued. (A render with its first window on a GPU: tests/test_api.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from datetime import datetime, timezone

import httpx
import pytest
from temporalio import workflow
from temporalio.client import WorkflowExecutionStatus

from api.app import api_worker
from api.purge import PurgeActivities
from api.service import Renders
from longtalk.testing import KEY_A, KEY_B, api_settings, purges
from tests.api_server import cancel_running, running_api
from tests.helpers import cancel_requested
from workflows.purge import PurgeInput, PurgeQueue

pytestmark = pytest.mark.timeout(300)
EP = "ep-purge"


@pytest.fixture(scope="module")
def idle_settings(settings):
    """The API's settings, with renders going to a render queue no worker polls (yet)."""
    return api_settings(settings, render_queue=f"idle-{uuid.uuid4().hex[:6]}")


@contextlib.asynccontextmanager
async def running(*workers):
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield
    finally:
        for w in workers:
            await w.shutdown()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def render_worker(client, settings, store, backend):
    """A CPU worker on the idle queue: it ends the cancelled renders (each records its manifest)."""
    from worker import build_workers

    async with running(*build_workers(client, dataclasses.replace(settings, worker_roles="cpu"), store,
                                      backends={"preview": backend}, identity="purge-test")):
        yield


@pytest.fixture
async def cleanup(idle_settings, temporal_client, store, backend):
    yield
    async with render_worker(temporal_client, idle_settings, store, backend):
        await cancel_running(temporal_client, ("alice", "bob"))


def job(media) -> dict:
    return {"input": {"image_path": str(media["portrait"]), "wav_path": str(media["speech_mp3"]),
                      "width": 128, "height": 128}}


async def submit(base: str, key: str, media, n: int) -> list[str]:
    async with httpx.AsyncClient(base_url=f"{base}/v2/{EP}", headers={"Authorization": f"Bearer {key}"},
                                 timeout=60) as c:
        return [(await c.post("/run", json=job(media))).json()["id"] for _ in range(n)]


async def listed(client, settings, owner: str, n: int) -> None:
    """Until visibility lists the owner's n queued renders (it lags their start a moment)."""
    query = Renders(client, settings, None).queued_query(owner)
    for _ in range(100):
        if (await client.count_workflows(query)).count == n:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"visibility does not list {n} queued renders of {owner}")


async def test_purge_outlives_the_api_and_touches_only_what_was_queued(
        idle_settings, temporal_client, store, backend, media, monkeypatch, cleanup):
    """The API answers and 'dies' (its worker never runs); the renders are not cancelled yet.
    A fresh API worker later cancels exactly the renders the owner had queued at the request:
    not those submitted after it, not another owner's. They end CANCELLED."""
    import runpod

    async with running_api(idle_settings, temporal_client, store, run_worker=False) as base:
        queued = await submit(base, KEY_A, media, 6)
        others = await submit(base, KEY_B, media, 2)
        await listed(temporal_client, idle_settings, "alice", 6)
        monkeypatch.setattr(runpod, "endpoint_url_base", f"{base}/v2")
        monkeypatch.setattr(runpod, "api_key", KEY_A)
        answer = await asyncio.to_thread(runpod.Endpoint(EP).purge_queue)  # the official SDK
        assert answer == {"removed": 6, "status": "completed"}, answer
        later = await submit(base, KEY_A, media, 2)
    # the API is gone; nothing has been cancelled yet, the purge waits in Temporal
    assert not any([await cancel_requested(temporal_client, r) for r in queued])
    purge = (await purges(temporal_client, "alice"))[0]
    assert purge.status == WorkflowExecutionStatus.RUNNING
    renders = Renders(temporal_client, idle_settings, store)
    async with running(api_worker(temporal_client, idle_settings, renders)):
        cancelled = await temporal_client.get_workflow_handle(purge.id).result()
    assert cancelled == 6
    assert all([await cancel_requested(temporal_client, r) for r in queued])
    assert not any([await cancel_requested(temporal_client, r) for r in later + others])
    async with render_worker(temporal_client, idle_settings, store, backend):
        for rid in queued:
            await renders.wait(rid, None, 60)
            body = await renders.status_body(rid, await renders.describe(rid, "alice"))
            assert body["status"] == "CANCELLED", body
    for rid in later + others:
        assert (await temporal_client.get_workflow_handle(rid).describe()).status == WorkflowExecutionStatus.RUNNING


async def test_status_of_a_queued_render_needs_no_worker(idle_settings, temporal_client, store, media, cleanup):
    """/status reads what the workflow published (visibility) and the bucket: with no worker
    polling the render's queue it still answers with the render's progress (a worker query
    would have waited out its timeout and answered without it)."""
    async with running_api(idle_settings, temporal_client, store, run_worker=False) as base:
        (rid,) = await submit(base, KEY_A, media, 1)
        async with httpx.AsyncClient(base_url=f"{base}/v2/{EP}", timeout=60,
                                     headers={"Authorization": f"Bearer {KEY_A}"}) as c:
            body = (await c.get(f"/status/{rid}")).json()
    assert body["status"] == "IN_QUEUE", body
    out = body["output"]
    assert (out["render_id"], out["stage"], out["windows_done"], out["windows_total"], out["eta_s"]) == \
        (rid, "queued", 0, 0, None), body
    assert out["elapsed_s"] >= 0 and body["executionTime"] == 0 and body["delayTime"] >= 0, body


async def test_nothing_queued_starts_no_purge(idle_settings, temporal_client, store, cleanup):
    async with running_api(idle_settings, temporal_client, store) as base:
        async with httpx.AsyncClient(base_url=f"{base}/v2/{EP}", timeout=60,
                                     headers={"Authorization": f"Bearer {KEY_B}"}) as c:
            before = len(await purges(temporal_client, "bob"))
            assert (await c.post("/purge-queue")).json() == {"removed": 0, "status": "completed"}
    assert len(await purges(temporal_client, "bob")) == before


async def test_a_retried_purge_goes_on_from_its_last_page(idle_settings, temporal_client, store, media,
                                                          monkeypatch, cleanup):
    """The activity's first attempt is lost after its first page (its heartbeat); the second,
    given that heartbeat, cancels only the renders the first did not."""
    from temporalio.client import WorkflowHandle
    from temporalio.testing import ActivityEnvironment

    async with running_api(idle_settings, temporal_client, store, run_worker=False) as base:
        queued = await submit(base, KEY_A, media, 5)
    inp = PurgeInput(owner="alice", started_before=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                     page_size=2)
    sent: list[str] = []
    cancel = WorkflowHandle.cancel

    async def counted(self, *args, **kwargs):
        sent.append(self.id)
        return await cancel(self, *args, **kwargs)
    monkeypatch.setattr(WorkflowHandle, "cancel", counted)
    acts = PurgeActivities(Renders(temporal_client, idle_settings, store))
    beats: list = []

    class Lost(Exception):
        pass

    def beat(*details):
        beats.append(details[0])
        if details[0]["cancelled"]:
            raise Lost  # the worker is gone right after its first page's heartbeat

    env = ActivityEnvironment()
    env.on_heartbeat = beat
    with pytest.raises(Lost):
        await env.run(acts.purge_queued, inp)
    first = list(sent)
    assert len(first) == 2 and beats[-1]["cancelled"] == 2 and beats[-1]["token"]
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=2, heartbeat_details=[beats[-1]])
    assert await env.run(acts.purge_queued, inp) == 5
    assert sorted(sent[len(first):]) == sorted(set(queued) - set(first))  # none twice


# ---- the new workflow type replays ---------------------------------------------------------
@workflow.defn(name="PurgeQueue", sandboxed=False)
class TimerFirstPurgeQueue(PurgeQueue):
    @workflow.run
    async def run(self, inp: PurgeInput) -> int:
        from datetime import timedelta

        await workflow.sleep(timedelta(seconds=1))
        return await super().run(inp)


async def test_a_purge_history_replays(idle_settings, temporal_client, store, media, cleanup):
    """A finished PurgeQueue's history replays against this code, and would not against a
    reordered PurgeQueue (the replay check can fail)."""
    from tests.test_replay import replay

    async with running_api(idle_settings, temporal_client, store) as base:
        await submit(base, KEY_B, media, 3)
        await listed(temporal_client, idle_settings, "bob", 3)
        async with httpx.AsyncClient(base_url=f"{base}/v2/{EP}", timeout=60,
                                     headers={"Authorization": f"Bearer {KEY_B}"}) as c:
            assert (await c.post("/purge-queue")).json()["removed"] == 3
        purge = (await purges(temporal_client, "bob"))[0]  # the newest first
        handle = temporal_client.get_workflow_handle(purge.id)
        assert await handle.result() == 3
    history = await handle.fetch_history()
    assert await replay([history], PurgeQueue) == {}
    failures = await replay([history], TimerFirstPurgeQueue, sandboxed=False)
    assert isinstance(failures.get(purge.run_id), workflow.NondeterminismError), failures
