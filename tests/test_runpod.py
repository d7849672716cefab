"""Renders on RunPod Serverless (issue 20), end to end on the embedded stack: the dispatcher
(activities/runpod.py, worker role "runpod") submits each window to the RunPod stand-in
(tests/runpod_standin), which starts real handler processes (`python -m longtalk.serverless`:
the SDK's own `runpod.serverless.start` loop) with the preview backend; they read and write
the real S3 server through presigned URLs only."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from longtalk.errors import InputError
from longtalk.fleet import read_fleet, record_key
from longtalk.guard import Guard
from longtalk.inputs.job import parse_job
from longtalk import av_io
from longtalk.payloads import clip_key, window_meta_key, window_prefix, window_quality_key
from longtalk.serverless.protocol import guard_input, parse_guard
from longtalk.windows import window_count
from tests.faults import start_worker, until
from tests.helpers import run_starter, write_job
from tests.media import EXAMPLES, frame_checksums
from tests.runpod_standin.server import start_runpod_standin
from worker import build_workers, shutdown

pytestmark = pytest.mark.timeout(180)
SIZE = 64
API_KEY = "rp-test-key"


def job_file(tmp_path: Path, max_frame: int, **fields) -> str:
    return write_job(tmp_path, image_path=EXAMPLES / "portrait.png", wav_path=EXAMPLES / "speech.ogg",
                     width=SIZE, height=SIZE, max_frame=max_frame, **fields)


def test_a_job_chooses_its_pool(settings):
    """`gpu_pool` in the job overrides LONGTALK_GPU_POOL; another value names the field."""
    job = {"image_path": str(EXAMPLES / "portrait.png"), "wav_path": str(EXAMPLES / "speech.ogg")}
    local = dataclasses.replace(settings, runpod_queue="rp-q")
    assert local.window_queue(parse_job({**job, "gpu_pool": "runpod"}, local).gpu_pool) == "rp-q"
    assert local.window_queue(parse_job(job, local).gpu_pool) == settings.gpu_queue
    pooled = dataclasses.replace(local, gpu_pool="runpod")
    assert pooled.window_queue(parse_job({**job, "gpu_pool": "local"}, pooled).gpu_pool) == settings.gpu_queue
    with pytest.raises(InputError) as refused:
        parse_job({**job, "gpu_pool": "lambda"}, local)
    assert refused.value.field == "gpu_pool"


def test_a_jobs_guard_settings_are_checked(settings):
    """The job's "guard" (the dispatcher's LONGTALK_QUALITY_* settings) becomes the handler's
    Guard; a wrong one fails the job naming the field; none (an earlier dispatcher) means
    no guard."""
    own = dataclasses.replace(settings, quality_retries=1, quality_bounds="delta_e=9", quality_max_carry_s=30.0)
    assert parse_guard(guard_input(own)) == Guard.from_settings(own)
    assert parse_guard(None) is None
    for bad in ({"retries": -1}, {"bounds": "nope=1"}, {"reanchor": "yes"}, {"max_carry_s": "x"}, {"other": 1}, "on"):
        with pytest.raises(InputError) as refused:
            parse_guard(bad)
        assert refused.value.field == "guard", bad


@pytest.fixture
async def runpod(settings, s3_server, tmp_path):
    """A RunPod endpoint (the stand-in) of up to 3 workers, and Settings that use it."""
    handler_env = {"LONGTALK_BACKEND": "preview", "LONGTALK_DATA_DIR": str(tmp_path / "handler")}
    server = await start_runpod_standin("ep-test", API_KEY, handler_env, max_workers=3, cold_start_s=0.3,
                                        idle_timeout_s=3.0, log_dir=tmp_path / "runpod-logs")
    rp = dataclasses.replace(settings, gpu_pool="runpod", runpod_queue=f"runpod-{uuid.uuid4().hex[:6]}",
                             runpod_endpoint_id="ep-test", runpod_api_key=API_KEY,
                             runpod_base_url=server.api_url, runpod_poll_s=0.2)
    yield server, rp
    await server.close()


async def dispatcher(temporal_client, settings, store, roles: str = "runpod"):
    """The dispatcher worker (role runpod; `roles` may add cpu) in this process; returns
    (workers, tasks)."""
    own = dataclasses.replace(settings, worker_roles=roles, fleet_heartbeat_s=0.5)
    ws = build_workers(temporal_client, own, store, identity="dispatch")
    # as worker.run does: the endpoint's record in the fleet registry, kept fresh
    beats = [asyncio.create_task(w.longtalk_fleet.run()) for w in ws if getattr(w, "longtalk_fleet", None)]
    return ws, beats + [asyncio.create_task(w.run()) for w in ws]


async def stop(ws, tasks):
    """As worker.run stops: the workers, their records' writers, the records (a worker that
    stops cleanly leaves the fleet page) and the dispatcher's session to the endpoint."""
    records = sum(1 for w in ws if getattr(w, "longtalk_fleet", None))
    beats, runs = tasks[:records], tasks[records:]
    await shutdown(ws, beats)
    await asyncio.gather(*runs, return_exceptions=True)


def submissions(standin) -> dict[int, int]:
    """/run calls per window index."""
    counts: dict[int, int] = {}
    for job in standin.jobs.values():
        k = job.input["window"]["index"]
        counts[k] = counts.get(k, 0) + 1
    return counts


async def api(server, method: str, path: str, body=None, key: str = API_KEY):
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as s:
        async with s.request(method, f"{server.api_url}/ep-test{path}", json=body) as r:
            return r.status, await r.json(content_type=None)


def timed_render(temporal_client, server, rp, tmp_path: Path, prefix: str, **worker_env) -> tuple[str, asyncio.Task]:
    """Start a 160-frame render on the RunPod workers with the timed backend and `worker_env`;
    returns its id and the starter's task."""
    server.standin.worker_env.update(LONGTALK_BACKEND="timed", **worker_env)
    rid = f"{prefix}-{uuid.uuid4().hex[:8]}"
    render = asyncio.create_task(run_starter(temporal_client, rp, job_file(tmp_path, 160), "--id", rid,
                                             "--backend", "timed"))
    return rid, render


async def test_handler_answers_a_bad_job_with_the_field(runpod):
    """A job without a window fails on the worker with an error naming the field; the
    endpoint API answers 404 for an unknown id and 401 for a wrong key; an idle endpoint
    scales its workers back to zero."""
    server, _ = runpod
    status, answer = await api(server, "POST", "/run", {"input": {"get": {}, "put": {}}})
    assert status == 200 and answer["status"] == "IN_QUEUE"
    job_id = answer["id"]

    async def ended():
        _, s = await api(server, "GET", f"/status/{job_id}")
        return s if s["status"] in ("COMPLETED", "FAILED") else None

    final = await until(ended, timeout=60, every=0.2)
    assert final["status"] == "FAILED" and "window" in final["error"], final
    assert final["delayTime"] >= 300  # the cold start: no worker was running
    assert (await api(server, "GET", "/status/no-such-job"))[0] == 404
    assert (await api(server, "GET", "/health", key="wrong"))[0] == 401
    _, health = await api(server, "GET", "/health")
    assert health["jobs"]["failed"] == 1 and health["jobs"]["inQueue"] == 0

    async def scaled_to_zero():
        _, h = await api(server, "GET", "/health")
        return sum(h["workers"].values()) == 0
    await until(scaled_to_zero, timeout=30, every=0.2)


async def test_serverless_render_has_the_frames_of_a_local_render(temporal_client, settings, store, workers,
                                                                  runpod, tmp_path):
    """The same job on local GPU workers and on 3 serverless workers, at the same time:
    frame-identical outputs, one RunPod job per window, windows spread over several workers.
    The remote render asks for parallel_chains 0: one chain per GPU, and the endpoint's
    record in the fleet registry counts as its max jobs (3)."""
    server, rp = runpod
    ws, tasks = await dispatcher(temporal_client, rp, store)

    async def endpoint_record():
        records = await asyncio.to_thread(read_fleet, store)
        return next((r for r in records if r["task_queue"] == rp.runpod_queue and r.get("endpoint")), None)
    record = await until(endpoint_record, timeout=30, every=0.2)
    assert record["slots"] == 3 and record["healthy"] and record["device"].startswith("RunPod endpoint")
    try:
        job = job_file(tmp_path, 700)
        local_id, remote_id = f"rl-{uuid.uuid4().hex[:8]}", f"rr-{uuid.uuid4().hex[:8]}"
        local = asyncio.create_task(run_starter(temporal_client, dataclasses.replace(settings, parallel_chains=3),
                                                job, "--id", local_id, "--output", str(tmp_path / "local.mp4")))
        remote = asyncio.create_task(run_starter(temporal_client, dataclasses.replace(rp, parallel_chains=0),
                                                 job, "--id", remote_id, "--output", str(tmp_path / "remote.mp4")))
        (rc_l, res_l, err_l), (rc_r, res_r, err_r) = await asyncio.gather(local, remote)
    finally:
        await stop(ws, tasks)
    assert rc_l == 0, err_l
    assert rc_r == 0, err_r
    n = res_r["windows"]
    assert n == res_l["windows"] and n >= 6
    # 3 GPUs found (the endpoint's slots); 10 windows make 2 chains of at least 5
    assert "3 found" in store.get_json(f"renders/{remote_id}/plan.json")["chain_plan"]["reason"]
    assert frame_checksums(tmp_path / "remote.mp4") == frame_checksums(tmp_path / "local.mp4")
    for k in range(n):
        assert store.get_bytes(clip_key(remote_id, k)) == store.get_bytes(clip_key(local_id, k)), k
        record = store.get_json(window_prefix(remote_id, k) + "runpod.json")
        assert record["status"] == "COMPLETED" and record["executionTime"] >= 0 and record["delayTime"] >= 0
    assert submissions(server.standin) == {k: 1 for k in range(n)}
    # what RunPod bills: the jobs' executionTime, summed in the result (a local render has none)
    execution_ms = sum(j.as_status()["executionTime"] for j in server.standin.jobs.values())
    assert res_r["runpod_execution_s"] == pytest.approx(execution_ms / 1000, abs=0.01 * n)
    assert "runpod_execution_s" not in res_l
    assert len({job.worker for job in server.standin.jobs.values()}) >= 2  # the chains ran side by side


async def test_serverless_worker_killed_mid_window(temporal_client, settings, store, workers, runpod, tmp_path):
    """SIGKILL the worker process that renders a window: RunPod fails the job, the window's
    activity retries it as a new job, and the render ends frame-identical to a local one."""
    server, rp = runpod
    server.standin.worker_env["LONGTALK_BACKEND"] = "timed"  # 2 s a window: time to kill one mid-way
    server.standin.worker_env["LONGTALK_TIMED_WINDOW_S"] = "1.5"
    ws, tasks = await dispatcher(temporal_client, rp, store)
    try:
        job = job_file(tmp_path, 400)
        rid = f"rk-{uuid.uuid4().hex[:8]}"
        render = asyncio.create_task(run_starter(temporal_client, rp, job, "--id", rid, "--backend", "timed",
                                                 "--output", str(tmp_path / "remote.mp4")))

        async def window_running():
            if not await asyncio.to_thread(store.exists, window_meta_key(rid, 0)):
                return None
            return next((j for j in server.standin.jobs.values()
                         if j.status == "IN_PROGRESS" and j.input["window"]["index"] == 1), None)

        victim = await until(window_running, timeout=90, every=0.05)
        killed = server.standin.kill_worker_of(victim.id)
        rc, result, err = await render
        local_id = f"rkl-{uuid.uuid4().hex[:8]}"
        rc_l, _, err_l = await run_starter(temporal_client, settings, job, "--id", local_id,
                                           "--output", str(tmp_path / "local.mp4"))
    finally:
        await stop(ws, tasks)
    assert rc == 0, err
    assert rc_l == 0, err_l
    assert victim.status == "FAILED" and killed.id in victim.error
    counts = submissions(server.standin)
    assert counts == {k: 2 if k == 1 else 1 for k in range(result["windows"])}, counts
    assert frame_checksums(tmp_path / "remote.mp4") == frame_checksums(tmp_path / "local.mp4")


async def test_dispatcher_killed_mid_render_submits_no_window_twice(temporal_client, settings, store, workers,
                                                                    runpod, tmp_path):
    """Two dispatcher processes; SIGKILL the one whose window runs on RunPod: the window's
    retry on the other finds the job (heartbeat details, the bucket) and polls it."""
    server, rp = runpod
    server.standin.worker_env["LONGTALK_BACKEND"] = "timed"
    # a window outlasts the heartbeat timeout and the retry: the other dispatcher meets it running
    server.standin.worker_env["LONGTALK_TIMED_WINDOW_S"] = "12"
    rp = dataclasses.replace(rp, heartbeat_timeout_s=3, data_dir=tmp_path / "data")
    logs = tmp_path / "logs"
    procs = [await start_worker(rp, "runpod", logs / "dispatch-0.log"),
             await start_worker(rp, "runpod", logs / "dispatch-1.log")]
    try:
        job = job_file(tmp_path, 120)
        rid = f"rd-{uuid.uuid4().hex[:8]}"
        render = asyncio.create_task(run_starter(temporal_client, rp, job, "--id", rid, "--backend", "timed"))

        async def window_running():
            return next((j for j in server.standin.jobs.values() if j.status == "IN_PROGRESS"), None)
        running = await until(window_running, timeout=90, every=0.05)
        k = running.input["window"]["index"]
        owner = next(i for i in (0, 1) if f"window {k} of {rid}" in (logs / f"dispatch-{i}.log").read_text())
        procs[owner].kill(signal.SIGKILL)
        rc, result, err = await render
    finally:
        for proc in procs:
            proc.kill()
        for record in read_fleet(store):  # the killed processes' records (a clean stop removes its own)
            if record["task_queue"] == rp.runpod_queue:
                store.delete(record_key(record["identity"]))
    assert rc == 0, err
    assert running.status == "COMPLETED"  # the job that ran under the killed dispatcher finished the window
    # the handler's progress_update calls, about one a second of its 12 s render
    fractions = [p["fraction"] for p in running.progress if p["window"] == k and p["stage"] == "render"]
    assert len(fractions) >= 5 and fractions == sorted(fractions) and fractions[-1] == 1.0, running.progress
    assert submissions(server.standin) == {k: 1 for k in range(result["windows"])}
    for w in range(result["windows"]):  # one RunPod job, and so one attempt record, per window
        assert len(list(store.list(window_prefix(rid, w) + "attempts/"))) == 1
    assert f"window {k} of {rid}: resuming RunPod job {running.id}" in (logs / f"dispatch-{1 - owner}.log").read_text()


async def test_cancel_reaches_the_runpod_jobs(temporal_client, settings, store, workers, runpod, tmp_path):
    server, rp = runpod
    server.standin.worker_env["LONGTALK_BACKEND"] = "timed"
    server.standin.worker_env["LONGTALK_TIMED_WINDOW_S"] = "30"
    # a cancel reaches an activity with a heartbeat: the SDK sends one at most every 0.8 x timeout
    rp = dataclasses.replace(rp, heartbeat_timeout_s=3)
    ws, tasks = await dispatcher(temporal_client, rp, store)
    try:
        job = job_file(tmp_path, 700)
        rid = f"rc-{uuid.uuid4().hex[:8]}"
        render = asyncio.create_task(run_starter(temporal_client, dataclasses.replace(rp, parallel_chains=2), job,
                                                 "--id", rid, "--backend", "timed"))

        async def running():
            return [j for j in server.standin.jobs.values() if j.status == "IN_PROGRESS"]
        await until(running, timeout=90, every=0.1)
        started = time.monotonic()
        await temporal_client.get_workflow_handle(rid).cancel()

        async def all_cancelled():
            return server.standin.jobs and all(j.status == "CANCELLED" for j in server.standin.jobs.values())
        try:
            await until(all_cancelled, timeout=30, every=0.1)
        except TimeoutError:
            raise AssertionError({j.id: (j.status, j.input["window"]["index"]) for j in server.standin.jobs.values()})
        cancelled_in = time.monotonic() - started
        rc, _, _ = await render
    finally:
        await stop(ws, tasks)
    assert rc != 0
    assert cancelled_in < 15  # the jobs stopped long before their 30 s windows would end
    # the workers' handlers were stopped through the SDK's stop channel: nothing was stored
    assert not [k for k in store.list(f"renders/{rid}/windows/") if k.endswith("meta.json")]


async def test_comfyui_render_on_serverless(temporal_client, settings, store, workers, runpod, standin, tmp_path):
    """The handler with the comfyui backend against the ComfyUI stand-in: it waits for
    ComfyUI, the doctor check passes, and each window is one prompt with the carried tail.
    The job itself asks for the RunPod pool (the submitting settings say local)."""
    server, rp = runpod
    server.standin.worker_env.update(LONGTALK_BACKEND="comfyui", LONGTALK_COMFY_URL=standin.url)
    ws, tasks = await dispatcher(temporal_client, rp, store)
    try:
        rid = f"rq-{uuid.uuid4().hex[:8]}"
        job = job_file(tmp_path, 160, gpu_pool="runpod")
        rc, result, err = await run_starter(temporal_client, dataclasses.replace(rp, gpu_pool="local"), job, "--id", rid,
                                            "--backend", "comfyui", "--output", str(tmp_path / "out.mp4"))
    finally:
        await stop(ws, tasks)
    assert rc == 0, err
    n = result["windows"]
    assert n == window_count(result["frames"]) and n >= 2
    assert len(frame_checksums(tmp_path / "out.mp4")) == result["frames"]
    outputs = [j.output for j in server.standin.jobs.values()]
    assert sorted(o["index"] for o in outputs) == list(range(n))
    assert all(o["comfyui"] and o["frames"] > 0 and o["timings"]["render_s"] > 0 for o in outputs), outputs


async def test_handler_answers_every_job_while_its_comfyui_fails_the_doctor(tmp_path, runpod):
    """A ComfyUI without a node class the graphs use: the handler does not render, and every
    job fails with the doctor's finding (the class named), at no cost to the bucket."""
    from tests.test_doctor import schema_standin

    server, _ = runpod
    broken = await schema_standin(tmp_path, lambda s: s.pop("MelBandRoFormerSampler"))
    server.standin.worker_env.update(LONGTALK_BACKEND="comfyui", LONGTALK_COMFY_URL=broken.url)
    try:
        ids = [(await api(server, "POST", "/run", {"input": {"anything": k}}))[1]["id"] for k in range(2)]

        async def ended():
            states = [(await api(server, "GET", f"/status/{i}"))[1] for i in ids]
            return states if all(s["status"] in ("COMPLETED", "FAILED") for s in states) else None
        states = await until(ended, timeout=90, every=0.2)
    finally:
        await broken.close()
    for s in states:
        assert s["status"] == "FAILED" and "doctor" in s["error"] and "MelBandRoFormerSampler" in s["error"], s


async def test_a_lost_job_is_a_failed_attempt(temporal_client, settings, store, workers, runpod, tmp_path):
    """RunPod forgets a running job (its status answers 404, as after its TTL): the window's
    attempt fails and its retry submits a new job; the render completes."""
    server, rp = runpod
    ws, tasks = await dispatcher(temporal_client, rp, store)
    try:
        rid, render = timed_render(temporal_client, server, rp, tmp_path, "rl", LONGTALK_TIMED_WINDOW_S="3")

        async def first_running():
            return next((j for j in server.standin.jobs.values() if j.status == "IN_PROGRESS"), None)
        lost = await until(first_running, timeout=90, every=0.05)
        del server.standin.jobs[lost.id]
        assert (await api(server, "GET", f"/status/{lost.id}"))[0] == 404
        rc, result, err = await render
    finally:
        await stop(ws, tasks)
    assert rc == 0, err
    k = lost.input["window"]["index"]
    counts = submissions(server.standin)  # the jobs RunPod still knows: the lost one is gone
    assert counts == {w: 1 for w in range(result["windows"])}, counts
    attempts = [store.get_json(key)["attempt"] for key in store.list(window_prefix(rid, k) + "attempts/")]
    assert sorted(attempts) == [1, 2]  # the lost job's attempt, and the retry's new job
    # the lost job's times are unknown: its record says so, the billed seconds are the others'
    row = next(r for r in result["usage"]["actual"]["per_gpu"] if r.get("pool") == "runpod")
    assert (row["jobs"], row["jobs_unreported"], row["jobs_failed"]) == (result["windows"] + 1, 1, 0), row
    known = sum(j.as_status()["executionTime"] for j in server.standin.jobs.values()) / 1000
    assert row["billed_s"] == pytest.approx(known, abs=0.01)


async def test_dispatcher_stop_closes_its_session(temporal_client, settings, store, runpod):
    """worker.shutdown closes the dispatcher's HTTP session to the endpoint (the fleet
    record's /health calls opened it): no "Unclosed client session" at exit."""
    _, rp = runpod
    ws, tasks = await dispatcher(temporal_client, rp, store)
    endpoint = ws[0].longtalk_fleet.endpoint

    async def asked_health():
        return ws[0].longtalk_fleet.health.get("workers") is not None
    await until(asked_health, timeout=30, every=0.1)
    session = endpoint._session  # noqa: SLF001
    assert session is not None and not session.closed
    await stop(ws, tasks)
    assert session.closed


async def test_a_job_past_its_execution_timeout_is_retried_and_billed(temporal_client, settings, store, runpod,
                                                                     tmp_path):
    """Each job carries policy.executionTimeout from the window's expected time (margin 20 s, for
    a fresh worker's first window on a loaded machine, + 3 x LONGTALK_TIMED_WINDOW_S 1 s = 23 s). The first worker's handler is slower than that:
    RunPod (the stand-in) ends the job TIMED_OUT and stops the worker; the window's attempt
    fails, its retry (on a fresh worker that renders in time) finishes the render. The result
    and the dashboard's render page bill every job, the timed-out one too."""
    from api.auth import Keys
    from api.context import Api
    from api.service import Renders
    from longtalk.testing import api_settings

    server, rp = runpod
    server.standin.max_workers = 1
    server.standin.worker_env.update(LONGTALK_BACKEND="timed", LONGTALK_TIMED_WINDOW_S="60")
    rp = dataclasses.replace(rp, runpod_max_jobs=1, timed_window_s=1.0, runpod_timeout_margin_s=20.0,
                             runpod_timeout_factor=3.0, quality_retries=0, runpod_idle_timeout_s=5.0, gpu_prices="runpod=0.001/s",
                             render_queue=f"render-{uuid.uuid4().hex[:6]}")
    # its own CPU worker: the result's cost is priced by the publishing worker's settings
    ws, tasks = await dispatcher(temporal_client, rp, store, roles="cpu,runpod")
    try:
        rid = f"rt-{uuid.uuid4().hex[:8]}"
        render = asyncio.create_task(run_starter(temporal_client, rp, job_file(tmp_path, 160), "--id", rid,
                                                 "--backend", "timed"))

        async def timed_out():
            return next((j for j in server.standin.jobs.values() if j.status == "TIMED_OUT"), None)
        late = await until(timed_out, timeout=90, every=0.05)
        server.standin.worker_env["LONGTALK_TIMED_WINDOW_S"] = "0.5"  # the next workers render in time
        rc, result, err = await render
        web = dataclasses.replace(api_settings(rp), api_admin_names="root")
        model = Api.from_settings(web, Keys.from_settings(web)).model
        model.renders = Renders(temporal_client, web, store)
        detail = await model.render_detail(rid, "root")
    finally:
        await stop(ws, tasks)
    assert rc == 0, err
    assert late.policy == {"executionTimeout": 23000}
    assert 23.0 <= late.as_status()["executionTime"] / 1000 < 30.0  # stopped at its limit, not at 60 s
    # RunPod stops the worker of a timed-out job: it took no other
    assert getattr(server.standin.workers.get(late.worker), "state", "gone") in ("stopping", "gone")
    assert [j.id for j in server.standin.jobs.values() if j.worker == late.worker] == [late.id]
    k, n = late.input["window"]["index"], result["windows"]
    assert submissions(server.standin) == {w: 2 if w == k else 1 for w in range(n)}, [(j.status, j.error, j.worker, j.as_status()) for j in server.standin.jobs.values()]
    billing = [store.get_json(key) for key in store.list(window_prefix(rid, k) + "runpod/")]
    assert sorted(b["status"] for b in billing) == ["COMPLETED", "TIMED_OUT"]
    attempts = [store.get_json(key)["attempt"] for key in store.list(window_prefix(rid, k) + "attempts/")]
    assert sorted(attempts) == [1, 2]
    # billed: every job's executionTime, the timed-out job's 23 s included
    rows = [r for r in result["usage"]["actual"]["per_gpu"] if r.get("pool") == "runpod"]
    assert len(rows) == 1, result["usage"]
    row = rows[0]
    billed = sum(j.as_status()["executionTime"] for j in server.standin.jobs.values()) / 1000
    assert row["jobs"] == n + 1 and row["jobs_failed"] == 1 and row["windows"] == n
    assert row["billed_s"] == pytest.approx(billed, abs=0.01) and row["billed_s"] >= 23.0
    assert result["runpod_execution_s"] == row["billed_s"]
    delays = sum(j.as_status()["delayTime"] for j in server.standin.jobs.values()) / 1000
    assert row["unseen_max_s"] == pytest.approx(delays + 5.0 * (n + 1), abs=0.01)
    assert row["cost"] == pytest.approx(row["billed_s"] * 0.001, abs=1e-4)
    assert row["cost_max"] == pytest.approx((row["billed_s"] + row["unseen_max_s"]) * 0.001, abs=1e-4)
    assert row["device"].startswith("RunPod timed GPU stand-in")
    assert result["usage"]["actual"]["cost"] == row["cost"]  # no local window: the RunPod row is the cost
    assert detail["usage"] == result["usage"]["actual"]  # the dashboard's render page shows the same


async def test_a_short_render_is_not_queued_behind_a_long_one(temporal_client, settings, store, workers, runpod,
                                                              tmp_path):
    """Fairness on the RunPod pool: a long render of 6 chains keeps 4 windows waiting behind
    the endpoint's 2 slots (LONGTALK_RUNPOD_MAX_JOBS = max workers). A short render submitted
    after it gets each of its windows onto RunPod within the next free slot or two (the
    dispatcher's queue hands tasks out round robin between renders), not after the 4 waiting
    ones (first in, first out), and it finishes while most of the long render is still to do."""
    from longtalk.testing import transcode
    from workflows.render import chain_workflow_id

    server, rp = runpod
    server.standin.max_workers = 2
    server.standin.worker_env.update(LONGTALK_BACKEND="timed", LONGTALK_TIMED_WINDOW_S="1")
    rp = dataclasses.replace(rp, runpod_max_jobs=2)
    frames = 30 * (rp.window - rp.motion) + rp.motion
    speech = transcode(EXAMPLES / "speech.ogg", tmp_path / "long.ogg", {"stream_loop": -1},
                       t=f"{frames / rp.fps + 1:.3f}", **{"c:a": "libopus", "b:a": "32k"}, ac=1)
    long_job = write_job(tmp_path, image_path=EXAMPLES / "portrait.png", wav_path=speech, width=SIZE, height=SIZE,
                         max_frame=frames, parallel_chains=6)
    (tmp_path / "long.json").write_text(Path(long_job).read_text())
    ws, tasks = await dispatcher(temporal_client, rp, store)
    long_id, short_id = f"fl-{uuid.uuid4().hex[:8]}", f"fs-{uuid.uuid4().hex[:8]}"
    clock = time.time() - time.monotonic()  # the stand-in's monotonic times -> wall clock
    try:
        long_run = asyncio.create_task(run_starter(temporal_client, rp, str(tmp_path / "long.json"), "--id", long_id,
                                                   "--backend", "timed"))

        async def long_started():
            return len(server.standin.taken) >= 4
        await until(long_started, timeout=120, every=0.1)
        short = await run_starter(temporal_client, rp, job_file(tmp_path, 160), "--id", short_id, "--backend", "timed")
        long_done_then = sum(1 for k in store.list(f"renders/{long_id}/windows/") if k.endswith("/meta.json"))
        rc_l, res_l, err_l = await long_run
    finally:
        await stop(ws, tasks)
    rc_s, res_s, err_s = short
    assert rc_s == 0, err_s
    assert rc_l == 0, err_l
    assert len(store.get_json(f"renders/{long_id}/plan.json")["chains"]) == 6
    jobs = list(server.standin.jobs.values())
    render_of = {j.id: j.input["window"]["context"]["render_id"] for j in jobs}
    started = {j.id: clock + j.started for j in jobs}
    history = await temporal_client.get_workflow_handle(chain_workflow_id(short_id, 0)).fetch_history()
    scheduled = [e.event_time.ToDatetime().timestamp() for e in history.events
                 if e.HasField("activity_task_scheduled_event_attributes")]
    short_jobs = [j for j in server.standin.taken if render_of[j] == short_id]
    assert len(short_jobs) == len(scheduled) == res_s["windows"] >= 2
    for queued_at, job_id in zip(scheduled, short_jobs):
        # the long render's jobs that went to RunPod while this short window waited for a slot
        ahead = [j for j in server.standin.taken
                 if render_of[j] == long_id and queued_at < started[j] < started[job_id]]
        assert len(ahead) <= 2, (len(ahead), [render_of[j][:2] for j in server.standin.taken])
    # the short render was done before the long one had rendered half its windows
    assert long_done_then <= res_l["windows"] // 2, (long_done_then, res_l["windows"])


async def test_a_job_that_ended_unwatched_is_still_billed(temporal_client, settings, store, workers, runpod,
                                                          tmp_path):
    """A dispatcher killed after /run leaves the job's records without an end; the job
    finishes the window meanwhile. The window's next attempt finds meta.json stored and
    submits nothing, but asks RunPod for that job's end and records it for the bill."""
    from temporalio.testing import ActivityEnvironment

    from activities.runpod import RunPodDispatcher, job_billing_key, job_record_key
    from longtalk.payloads import RenderWindowInput
    from longtalk.serverless.protocol import WindowRequest

    server, rp = runpod
    ws, tasks = await dispatcher(temporal_client, rp, store)
    try:
        rid = f"ru-{uuid.uuid4().hex[:8]}"
        rc, _, err = await run_starter(temporal_client, rp, job_file(tmp_path, 160), "--id", rid)
    finally:
        await stop(ws, tasks)
    assert rc == 0, err
    job = next(j for j in server.standin.jobs.values() if j.input["window"]["index"] == 0)
    unfinished = {"job": job.id, "attempt": 1, "dispatcher": "killed"}  # what _submit had written
    store.put_json(job_record_key(rid, 0), unfinished)
    store.put_json(job_billing_key(rid, 0, job.id), unfinished)
    req = WindowRequest.from_input(job.input)
    again = RunPodDispatcher(store, rp, identity="retry")
    runs = server.standin.runs
    try:
        result = await ActivityEnvironment().run(again.render_window,
                                                 RenderWindowInput(req.context, req.index, req.chain_first))
    finally:
        await again.endpoint.close()
    assert result.index == 0 and not result.rendered and server.standin.runs == runs  # nothing submitted
    billing = store.get_json(job_billing_key(rid, 0, job.id))
    assert billing["status"] == "COMPLETED" and billing["attempt"] == 1
    assert billing["executionTime"] == job.as_status()["executionTime"]



def dark_frames(path: Path) -> list[int]:
    """The output's frames whose mean luma is black (a blank window's)."""
    frames = av_io.read_frames(path, list(range(av_io.count_video_frames(path))))
    return [i for i, f in sorted(frames.items()) if f.mean() < 12]


async def test_the_guard_renders_a_blank_runpod_window_again(temporal_client, settings, store, workers, runpod,
                                                             tmp_path):
    """LONGTALK_PREVIEW_FAULTS on the RunPod workers blanks window 1's first attempt and freezes
    window 2's: the handler measures every window (quality.json next to its frames, through a
    presigned PUT), renders those two again with the next seed within the same job, and the
    render's quality summary counts every RunPod window and lists the two; no blank frame
    reaches the output."""
    server, rp = runpod
    server.standin.worker_env["LONGTALK_PREVIEW_FAULTS"] = "blank:1@1,frozen:2@1"
    ws, tasks = await dispatcher(temporal_client, rp, store)
    try:
        rid = f"rq-{uuid.uuid4().hex[:8]}"
        job = write_job(tmp_path, image_path=EXAMPLES / "portrait.png", wav_path=EXAMPLES / "speech.ogg",
                        width=128, height=128, max_frame=430)
        rc, result, err = await run_starter(temporal_client, rp, job, "--id", rid, "--output", str(tmp_path / "q.mp4"))
    finally:
        await stop(ws, tasks)
    assert rc == 0, err
    q, n = result["quality"], result["windows"]
    assert q["windows_measured"] == n and q["rerendered"] == [1, 2] and q["flagged"] == [], q
    assert submissions(server.standin) == {k: 1 for k in range(n)}  # re-rendered inside the window's job
    one = store.get_json(window_quality_key(rid, 1))
    assert [a["redo"] for a in one["attempts"]] == [0, 1] and "blank" in one["attempts"][0]["verdict"]["hard"]
    assert one["chosen"] == 1 and one["attempts"][0]["seed"] != one["attempts"][1]["seed"]
    assert store.get_json(window_quality_key(rid, 2))["attempts"][0]["verdict"]["hard"] == ["frozen"]
    assert store.get_json(window_meta_key(rid, 1))["quality"]["rerendered"] == 1
    assert dark_frames(tmp_path / "q.mp4") == []


async def test_a_killed_runpod_job_goes_on_from_the_recorded_redo(temporal_client, settings, store, workers,
                                                                  runpod, tmp_path):
    """Window 1 is blank on every attempt. Its worker is killed while it renders the window
    again (redo 1): the retried job reads quality.json back and renders redos 1 and 2 only,
    so the window has 1 + LONGTALK_QUALITY_RETRIES attempts in all; it is kept, flagged and
    listed."""
    server, rp = runpod
    ws, tasks = await dispatcher(temporal_client, rp, store)
    try:
        rid, render = timed_render(temporal_client, server, rp, tmp_path, "rr", LONGTALK_TIMED_WINDOW_S="1.5",
                                   LONGTALK_PREVIEW_FAULTS="blank:1")

        async def second_attempt_running():
            doc = await asyncio.to_thread(store.get_json_or_none, window_quality_key(rid, 1))
            if not doc or len(doc["attempts"]) != 1:
                return None
            return next((j for j in server.standin.jobs.values()
                         if j.status == "IN_PROGRESS" and j.input["window"]["index"] == 1), None)

        victim = await until(second_attempt_running, timeout=90, every=0.05)
        server.standin.kill_worker_of(victim.id)
        rc, result, err = await render
    finally:
        await stop(ws, tasks)
    assert rc == 0, err
    assert submissions(server.standin)[1] == 2
    one = store.get_json(window_quality_key(rid, 1))
    assert [a["redo"] for a in one["attempts"]] == [0, 1, 2] and one["flagged"]
    # redo 0 by the killed job (the activity's first try), redos 1 and 2 by the retry's job
    assert [a["activity_attempt"] for a in one["attempts"]] == [1, 2, 2], one["attempts"]
    assert [f["window"] for f in result["quality"]["flagged"]] == [1]
