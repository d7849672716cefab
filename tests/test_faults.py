"""Renders survive the faults an operator meets: each test kills or stops a real process
(worker, Temporal server, S3 server, ComfyUI stand-in) in the middle of a render, and the
render must still end with a correct MP4: exact frame count, every window once, and no GPU
render of a window after it was stored."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import Client

from longtalk.comfy.binder import upload_subfolder
from longtalk.payloads import Progress, window_meta_key, window_prefix
from longtalk.settings import Settings
from longtalk.stack import Process, free_port
from longtalk.store import ObjectStore
from longtalk.testing import s3_process, temporal_process
from longtalk.windows import window_count
from tests.media import ROOT
from tests.faults import SlowProxy, StandinProcess, start_worker, until
from tests.media import samples_16k
from workflows.render import RenderVideo
from tests.helpers import check_video, replay_everything, run_starter, write_job

pytestmark = pytest.mark.timeout(240)
SIZE = 128
LEDGER: list[str] = []  # faults injected and survived, for the summary line


@dataclasses.dataclass
class FaultStack:
    settings: Settings
    temporal: Process
    s3: Process
    root: Path


@pytest.fixture(scope="module")
async def fstack(tmp_path_factory):
    import os
    import tempfile

    d = tmp_path_factory.mktemp("faults")
    settings = Settings(
        data_dir=d, temporal_address=f"127.0.0.1:{free_port()}", s3_endpoint=f"127.0.0.1:{free_port()}",
        bucket="faults", heartbeat_timeout_s=3, comfy_prompt_timeout_s=6.0,
        input_roots=os.pathsep.join([str(ROOT), tempfile.gettempdir()]),
    )
    temporal, s3 = temporal_process(settings, d), s3_process(settings, d)
    yield FaultStack(settings, temporal, s3, d)
    for proc in (s3, temporal):
        proc.stop()
    print("\nfaults injected and survived: " + ", ".join(LEDGER))


@pytest.fixture
async def env(fstack, tmp_path):
    """Fresh task queues, a client and a store for one test; every process it starts is killed.
    At the end every workflow the test started (parents, chains, each continue-as-new run)
    must replay on this code: a render that finished despite a fault but whose history does
    not replay would be stuck the next time a worker rebuilds it."""
    settings = dataclasses.replace(fstack.settings, render_queue=f"render-{uuid.uuid4().hex[:6]}",
                                   gpu_queue=f"gpu-{uuid.uuid4().hex[:6]}", data_dir=tmp_path / "data")
    client = await Client.connect(settings.temporal_address)
    procs: list = []
    yield settings, client, ObjectStore.from_settings(settings), procs, tmp_path
    for p in procs:
        p.kill()
    failures = await replay_everything(client, f"TaskQueue = '{settings.render_queue}'", tmp_path / "histories")
    assert not failures, f"histories that do not replay on this code: {failures}"


async def standin(procs, tmp_path, delay_s: float = 0.0) -> StandinProcess:
    s = StandinProcess(tmp_path / "comfy", free_port(), tmp_path / "logs" / "standin.log")
    procs.append(s.start())
    await s.ready()
    if delay_s:
        await s.control("/standin/faults", {"delay_s": delay_s})
    return s


async def workers(settings, procs, tmp_path, comfy: StandinProcess | None, name: str = "w"):
    gpu_env = {"LONGTALK_BACKEND": "comfyui", "LONGTALK_COMFY_URL": comfy.url} if comfy else {}
    cpu = await start_worker(settings, "cpu", tmp_path / "logs" / f"{name}-cpu.log")
    gpu = await start_worker(settings, "gpu", tmp_path / "logs" / f"{name}-gpu.log", **gpu_env)
    procs += [cpu, gpu]
    return cpu, gpu


def job(tmp_path, media) -> str:
    return write_job(tmp_path, image_path=media["portrait"], wav_path=media["speech"], width=SIZE, height=SIZE)


def start_render(client, settings, tmp, media, rid: str, out: Path | None, comfy: StandinProcess | None):
    """starter.main in a task: the same path a user's `python starter.py` takes; and, as a
    progress bar or a dashboard would, the `progress` query every few tenths of a second
    while it runs (a query that meets a fault can reach a worker by another road: issue 16)."""
    args = [job(tmp, media), "--id", rid] + (["--output", str(out)] if out else [])
    args += ["--backend", "comfyui" if comfy else "preview"]

    async def watched():
        render = asyncio.create_task(run_starter(client, settings, *args))
        while not render.done():
            try:
                await client.get_workflow_handle(rid).query(RenderVideo.progress, result_type=Progress,
                                                           rpc_timeout=timedelta(seconds=5))
            except Exception:  # not started yet, no worker, the server restarting
                pass
            await asyncio.wait([render], timeout=0.3)
        return render.result()

    return asyncio.create_task(watched())


async def check_render(rc, result, err, store, media, out: Path, render_id: str, comfy: StandinProcess | None):
    assert rc == 0, err
    total = samples_16k(media["speech"]) // 640
    n = window_count(total)
    assert result["frames"] == total and result["windows"] == n
    check_video(out, total, SIZE, SIZE)
    for k in range(n):  # no window was rendered again once it was stored
        meta = store.get_json(window_meta_key(render_id, k))
        for key in store.list(window_prefix(render_id, k) + "attempts/"):
            assert store.get_json(key)["started_at"] <= meta["rendered_at"], f"window {k} rendered after it was stored"
    if comfy is not None:
        stats = await comfy.control("/standin/stats")
        assert stats["succeeded"] == n, stats  # one successful GPU render per window
        per_window = {}
        for k in range(n):
            folder = comfy.log.parent.parent / "comfy" / "output" / upload_subfolder(render_id, k)
            per_window[k] = len(list(folder.glob("frame_*.png"))) if folder.exists() else 0
        assert all(v == 81 for v in per_window.values()), per_window
    return n


async def window_running(store, comfy, render_id: str, k: int):
    """True once window k-1 is stored and ComfyUI is busy with a prompt (window k's)."""
    async def ready():
        stored = await asyncio.to_thread(store.exists, window_meta_key(render_id, k - 1))
        return stored and (await comfy.control("/standin/stats"))["running_prompt"]
    return await until(ready, timeout=60)


async def test_gpu_worker_killed_mid_window(env, media):
    settings, client, store, procs, tmp = env
    comfy = await standin(procs, tmp, delay_s=1.5)
    cpu, gpu = await workers(settings, procs, tmp, comfy)
    rid, out = f"f-gpu-{uuid.uuid4().hex[:6]}", tmp / "out.mp4"
    render = start_render(client, settings, tmp, media, rid, out, comfy)
    running = await window_running(store, comfy, rid, 1)
    gpu.kill(signal.SIGKILL)  # mid-window: ComfyUI keeps rendering window 1
    procs.append(await start_worker(settings, "gpu", tmp / "logs" / "gpu-2.log",
                                    LONGTALK_BACKEND="comfyui", LONGTALK_COMFY_URL=comfy.url))
    rc, result, err = await render
    await check_render(rc, result, err, store, media, out, rid, comfy)
    stats = await comfy.control("/standin/stats")
    # the new worker re-attached to the prompt that was running: nothing was queued twice
    assert stats["prompts_received"] == result["windows"], stats
    assert running  # the kill really happened while a prompt ran
    LEDGER.append("gpu worker SIGKILL")


async def test_cpu_worker_killed_during_stitch_and_mux(env, media):
    settings, client, store, procs, tmp = env
    host, port = settings.s3_endpoint.rsplit(":", 1)
    proxy = await SlowProxy(int(port), delay_s=0.4).start()  # the CPU worker reaches S3 over a slow link
    slow = dataclasses.replace(settings, s3_endpoint=f"127.0.0.1:{proxy.port}")
    try:
        procs.append(await start_worker(slow, "cpu", tmp / "logs" / "cpu-1.log"))
        procs.append(await start_worker(settings, "gpu", tmp / "logs" / "gpu.log"))
        rid, out = f"f-cpu-{uuid.uuid4().hex[:6]}", tmp / "out.mp4"
        render = start_render(client, settings, tmp, media, rid, out, None)
        handle = client.get_workflow_handle(rid)
        killed = []
        for activity_type in ("stitch", "publish"):
            async def running(kind=activity_type):
                try:
                    desc = await handle.describe()
                except Exception:
                    return False
                return any(p.activity_type.name == kind and p.state == 2  # STARTED
                           for p in desc.raw_description.pending_activities)
            await until(running, timeout=120, every=0.02)
            procs[0].kill(signal.SIGKILL)
            killed.append(activity_type)
            procs[0] = await start_worker(slow, "cpu", tmp / "logs" / f"cpu-{len(killed) + 1}.log")
        rc, result, err = await render
        await check_render(rc, result, err, store, media, out, rid, None)
        assert killed == ["stitch", "publish"]
        LEDGER.append("cpu worker SIGKILL during stitch")
        LEDGER.append("cpu worker SIGKILL during mux")
    finally:
        await proxy.close()


async def test_temporal_server_restarted_mid_render(env, fstack, media):
    settings, client, store, procs, tmp = env
    comfy = await standin(procs, tmp, delay_s=1.0)
    await workers(settings, procs, tmp, comfy)
    rid, out = f"f-tmp-{uuid.uuid4().hex[:6]}", tmp / "out.mp4"
    render = start_render(client, settings, tmp, media, rid, out, comfy)
    await window_running(store, comfy, rid, 1)
    fstack.temporal.stop()  # SIGTERM, then the same database file comes back
    await asyncio.sleep(2)
    fstack.temporal.start()
    fstack.temporal.wait_ready(90)
    rc, result, err = await render
    await check_render(rc, result, err, store, media, out, rid, comfy)
    LEDGER.append("temporal server restart")


async def test_temporal_server_killed_mid_render(env, fstack, media):
    """SIGKILL, not a clean stop: the workflow task in flight may be lost with the server."""
    settings, client, store, procs, tmp = env
    comfy = await standin(procs, tmp, delay_s=1.0)
    await workers(settings, procs, tmp, comfy)
    rid, out = f"f-tk-{uuid.uuid4().hex[:6]}", tmp / "out.mp4"
    render = start_render(client, settings, tmp, media, rid, out, comfy)
    await window_running(store, comfy, rid, 1)
    fstack.temporal.stop(sig=signal.SIGKILL)
    await asyncio.sleep(1)
    fstack.temporal.start()
    fstack.temporal.wait_ready(90)
    rc, result, err = await render
    await check_render(rc, result, err, store, media, out, rid, comfy)
    LEDGER.append("temporal server SIGKILL")


async def test_worker_temporal_and_store_killed_in_one_render(env, fstack, media):
    """The chaos of one long render: its worker SIGKILLed and replaced, then the Temporal
    server SIGKILLed and restarted, then the object store SIGKILLed for a while."""
    settings, client, store, procs, tmp = env
    comfy = await standin(procs, tmp, delay_s=0.3)
    await workers(settings, procs, tmp, comfy)
    rid, out = f"f-chaos-{uuid.uuid4().hex[:6]}", tmp / "out.mp4"
    long = {**media, "speech": ROOT / "examples" / "speech.ogg"}  # 17 windows
    render = start_render(client, settings, tmp, long, rid, out, comfy)

    async def stored(k):
        await until(lambda: asyncio.to_thread(store.exists, window_meta_key(rid, k)), timeout=120)

    await stored(3)
    for p in procs[1:]:  # the CPU and GPU workers (procs[0] is the ComfyUI stand-in)
        p.kill(signal.SIGKILL)
    await workers(settings, procs, tmp, comfy, name="w2")
    await stored(7)
    fstack.temporal.stop(sig=signal.SIGKILL)
    await asyncio.sleep(2)
    fstack.temporal.start()
    fstack.temporal.wait_ready(90)
    await stored(10)
    fstack.s3.stop(sig=signal.SIGKILL)
    await asyncio.sleep(6)
    fstack.s3.start()
    fstack.s3.wait_ready(30)
    rc, result, err = await render
    await check_render(rc, result, err, store, long, out, rid, comfy)
    LEDGER.append("worker, temporal and store killed in one render")


async def test_a_worker_that_keeps_one_run_in_memory(env, media):
    """Two renders of two chains each on a worker whose workflow cache holds one run: every
    workflow task of the other five is rebuilt from its history. Both finish; every history
    replays (the fixture checks); nothing rendered twice."""
    settings, client, store, procs, tmp = env
    comfy = await standin(procs, tmp, delay_s=0.2)
    procs.append(await start_worker(settings, "cpu", tmp / "logs" / "cpu.log", LONGTALK_WORKFLOW_CACHE_SIZE="1"))
    procs.append(await start_worker(settings, "gpu", tmp / "logs" / "gpu.log", LONGTALK_BACKEND="comfyui",
                                    LONGTALK_COMFY_URL=comfy.url))
    two = dataclasses.replace(settings, parallel_chains=2)
    long = {**media, "speech": ROOT / "examples" / "speech.ogg"}
    renders = []
    for name in ("a", "b"):
        rid, out = f"f-evict-{name}-{uuid.uuid4().hex[:6]}", tmp / f"{name}.mp4"
        (tmp / name).mkdir()
        renders.append((rid, out, start_render(client, two, tmp / name, long, rid, out, comfy)))
    for rid, out, render in renders:
        rc, result, err = await render
        assert rc == 0, err
        assert len(store.get_json(f"renders/{rid}/plan.json")["chains"]) == 2
        check_video(out, result["frames"], SIZE, SIZE)
        for k in range(result["windows"]):
            meta = store.get_json(window_meta_key(rid, k))
            for key in store.list(window_prefix(rid, k) + "attempts/"):
                assert store.get_json(key)["started_at"] <= meta["rendered_at"]
    LEDGER.append("workflow cache of one run")


async def test_object_store_stopped_for_a_while(env, fstack, media):
    settings, client, store, procs, tmp = env
    comfy = await standin(procs, tmp, delay_s=0.8)
    await workers(settings, procs, tmp, comfy)
    rid, out = f"f-s3-{uuid.uuid4().hex[:6]}", tmp / "out.mp4"
    render = start_render(client, settings, tmp, media, rid, out, comfy)
    await window_running(store, comfy, rid, 1)
    fstack.s3.stop()
    await asyncio.sleep(5)  # window 1 finishes on ComfyUI meanwhile; storing it fails and retries
    fstack.s3.start()
    fstack.s3.wait_ready(30)
    rc, result, err = await render
    await check_render(rc, result, err, store, media, out, rid, comfy)
    LEDGER.append("object store down 5 s")


@pytest.mark.parametrize("fault", ["execution_error", "oom", "drop_ws", "hang", "restart"])
async def test_comfyui_faults(env, media, fault):
    settings, client, store, procs, tmp = env
    comfy = await standin(procs, tmp, delay_s=0.6)
    await workers(settings, procs, tmp, comfy)
    rid, out = f"f-{fault.replace('_', '')}-{uuid.uuid4().hex[:6]}", tmp / "out.mp4"
    render = start_render(client, settings, tmp, media, rid, out, comfy)
    if fault == "restart":
        await window_running(store, comfy, rid, 1)
        await comfy.control("/standin/faults", {"restart": True})
    else:
        await until(lambda: asyncio.to_thread(store.exists, window_meta_key(rid, 0)), timeout=60)
        await comfy.control("/standin/faults", {fault: True})  # hits window 1 (hang: past the prompt timeout)
    rc, result, err = await render
    await check_render(rc, result, err, store, media, out, rid, comfy)
    stats = await comfy.control("/standin/stats")
    if fault in ("execution_error", "oom"):
        assert stats["failed"] >= 1
    elif fault == "hang":
        assert stats["interrupted"] >= 1  # the hung prompt was interrupted, then redone
    elif fault == "drop_ws":
        assert stats["ws_dropped"] >= 1
    LEDGER.append(f"comfyui {fault}")


async def test_cancel_mid_window_interrupts_comfyui(env, media):
    settings, client, store, procs, tmp = env
    comfy = await standin(procs, tmp, delay_s=0.6)
    await workers(settings, procs, tmp, comfy)
    rid = f"f-cancel-{uuid.uuid4().hex[:6]}"
    render = start_render(client, settings, tmp, media, rid, None, comfy)
    await until(lambda: asyncio.to_thread(store.exists, window_meta_key(rid, 0)), timeout=60)
    await comfy.control("/standin/faults", {"hang": True})
    await until(lambda: comfy.control("/standin/stats"), timeout=5)
    await window_running(store, comfy, rid, 1)
    await client.get_workflow_handle(rid).cancel()
    rc, result, err = await render
    assert rc == 1 and result["status"] == "cancelled", (result, err)
    assert result["windows_finished"] == [0] and result["windows"] == 3
    assert (await client.get_workflow_handle(rid).describe()).status.name == "CANCELED"
    stats = await until(lambda: _interrupted(comfy), timeout=30)
    assert stats["interrupted"] == 1
    manifest = store.get_json(f"renders/{rid}/manifest.json")
    assert manifest["status"] == "cancelled" and manifest["windows_finished"] == [0]
    LEDGER.append("cancel mid-window")


async def _interrupted(comfy):
    stats = await comfy.control("/standin/stats")
    return stats if stats["interrupted"] >= 1 else None


async def test_same_id_submitted_twice_concurrently(env, media):
    settings, client, store, procs, tmp = env
    comfy = await standin(procs, tmp, delay_s=0.3)
    await workers(settings, procs, tmp, comfy)
    rid = f"f-twice-{uuid.uuid4().hex[:6]}"
    (a, b) = await asyncio.gather(start_render(client, settings, tmp, media, rid, tmp / "a.mp4", comfy),
                                  start_render(client, settings, tmp, media, rid, tmp / "b.mp4", comfy))
    for rc, result, err in (a, b):
        await check_render(rc, result, err, store, media, tmp / ("a.mp4" if result is a[1] else "b.mp4"), rid, comfy)
    runs = [w async for w in client.list_workflows(f"WorkflowId = '{rid}'")]
    assert len(runs) == 1
    assert (await comfy.control("/standin/stats"))["prompts_received"] == a[1]["windows"]
    LEDGER.append("same id submitted twice at once")


async def test_gpu_worker_waits_for_comfyui_before_polling(env):
    """A GPU worker does not take windows while its ComfyUI is down; it starts when it answers."""
    from longtalk.stack import READY_LINE
    from tests.faults import worker

    settings, client, store, procs, tmp = env
    port, health = free_port(), free_port()
    gpu = worker(settings, "gpu", tmp / "logs" / "gpu.log", LONGTALK_BACKEND="comfyui",
                 LONGTALK_COMFY_URL=f"http://127.0.0.1:{port}", LONGTALK_HEALTH_PORT=str(health)).start()
    procs.append(gpu)
    await asyncio.sleep(4)
    assert gpu.alive() and READY_LINE not in gpu.log.read_text()
    # the probes: alive, not ready (a rollout waits for it, a Service would send it nothing)
    async def waiting():
        return await probe(health, "/livez") == (200, {"ready": False, "state": "waiting for comfyui"})
    assert await until(waiting, timeout=30)
    assert (await probe(health, "/readyz"))[0] == 503
    comfy = StandinProcess(tmp / "comfy", port, tmp / "logs" / "standin.log")
    procs.append(comfy.start())
    await gpu.wait_for_line(READY_LINE, timeout=60)
    assert "comfyui ready: {'device': 'cuda:0" in gpu.log.read_text()
    assert "doctor: " in gpu.log.read_text()  # ready only after the doctor check passed
    assert await until(lambda: probe_status(health, "/readyz", 200), timeout=10)
    assert (await probe(health, "/readyz"))[1] == {"ready": True, "state": "polling"}
    assert (await probe(health, "/nothing"))[0] == 404


async def probe(port: int, path: str) -> tuple[int, dict]:
    """GET a worker's probe: (status, JSON body), as the kubelet sees it."""
    import json
    import urllib.error
    import urllib.request

    def get():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())
        except urllib.error.URLError:
            return 0, {}  # not listening (yet)
    return await asyncio.to_thread(get)


async def probe_status(port: int, path: str, status: int) -> bool:
    return (await probe(port, path))[0] == status


async def exited(handle, timeout: float) -> float:
    """Seconds until the process exits (at most `timeout`)."""
    import time

    start = time.monotonic()
    await until(lambda: asyncio.sleep(0, not handle.alive()), timeout=timeout, every=0.05)
    assert not handle.alive(), f"still running {timeout} s after SIGTERM"
    return time.monotonic() - start


async def test_sigterm_lets_the_gpu_worker_finish_its_window_and_serves_metrics(env, media):
    """Graceful shutdown: SIGTERM mid-window, the window still completes on that worker
    (first attempt), the process exits; a new worker renders the rest. Its /metrics counts."""
    import urllib.request

    settings, client, store, procs, tmp = env
    comfy = await standin(procs, tmp, delay_s=2.0)
    procs.append(await start_worker(settings, "cpu", tmp / "logs" / "cpu.log"))
    metrics_port, health = free_port(), free_port()
    gpu = await start_worker(settings, "gpu", tmp / "logs" / "gpu.log", LONGTALK_BACKEND="comfyui",
                             LONGTALK_COMFY_URL=comfy.url, LONGTALK_METRICS_PORT=str(metrics_port),
                             LONGTALK_HEALTH_PORT=str(health))
    procs.append(gpu)
    rid, out = f"f-term-{uuid.uuid4().hex[:6]}", tmp / "out.mp4"
    render = start_render(client, settings, tmp, media, rid, out, comfy)
    await window_running(store, comfy, rid, 1)
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    assert 'longtalk_windows_rendered_total{backend="comfyui"} 1.0' in text
    assert (await probe(health, "/readyz"))[0] == 200
    os.killpg(gpu.proc.pid, signal.SIGTERM)  # as the kubelet does on scale-down
    # while it finishes the window: alive (the kubelet must not kill it), no longer ready
    assert await probe(health, "/readyz") == (503, {"ready": False, "state": "stopping"})
    assert (await probe(health, "/livez"))[0] == 200
    took = await exited(gpu, settings.gpu_shutdown_grace_s)
    assert gpu.proc.returncode == 0 and took < settings.gpu_shutdown_grace_s
    meta = store.get_json(window_meta_key(rid, 1))
    assert meta["attempt"] == 1  # finished by the worker that was asked to stop, not retried
    procs.append(await start_worker(settings, "gpu", tmp / "logs" / "gpu-2.log", LONGTALK_BACKEND="comfyui",
                                    LONGTALK_COMFY_URL=comfy.url))
    rc, result, err = await render
    await check_render(rc, result, err, store, media, out, rid, comfy)
    assert (await comfy.control("/standin/stats"))["prompts_received"] == result["windows"]
    LEDGER.append("gpu worker SIGTERM (graceful)")


async def test_sigterm_past_the_grace_hands_the_window_back(env, media):
    """A stopping GPU worker whose window outlasts LONGTALK_GPU_SHUTDOWN_GRACE_S (a pod's
    terminationGracePeriodSeconds is near): it interrupts the window, hands it back and exits 0
    within the grace; another worker renders it once, and the video is frame for frame the
    one an undisturbed render makes."""
    from longtalk.av_io import count_video_frames, read_frames

    settings, client, store, procs, tmp = env
    # a window (5 s) far longer than the grace, shorter than the stack's prompt timeout (6 s)
    comfy = await standin(procs, tmp, delay_s=5.0)
    procs.append(await start_worker(settings, "cpu", tmp / "logs" / "cpu.log"))
    grace = 0.5
    gpu = await start_worker(settings, "gpu", tmp / "logs" / "gpu.log", LONGTALK_BACKEND="comfyui",
                             LONGTALK_COMFY_URL=comfy.url, LONGTALK_GPU_SHUTDOWN_GRACE_S=str(grace))
    procs.append(gpu)
    rid, out = f"f-back-{uuid.uuid4().hex[:6]}", tmp / "out.mp4"
    render = start_render(client, settings, tmp, media, rid, out, comfy)
    await window_running(store, comfy, rid, 1)
    os.killpg(gpu.proc.pid, signal.SIGTERM)
    took = await exited(gpu, grace + 15)
    assert gpu.proc.returncode == 0, gpu.log.read_text()[-2000:]
    assert not store.exists(window_meta_key(rid, 1))  # not finished: handed back
    await comfy.control("/standin/faults", {"delay_s": 0.0})
    procs.append(await start_worker(settings, "gpu", tmp / "logs" / "gpu-2.log", LONGTALK_BACKEND="comfyui",
                                    LONGTALK_COMFY_URL=comfy.url))
    rc, result, err = await render
    n = await check_render(rc, result, err, store, media, out, rid, comfy)  # each window stored once
    # rendered by the other worker: the chain's next window asked the stopped worker's own queue
    # first (chain affinity), which nobody polls any more, and moved on to the GPU queue
    assert not store.get_json(window_meta_key(rid, 1))["worker"].split("@")[0].endswith(f"-{gpu.proc.pid}")
    # the same job again, undisturbed: the same frames
    ref_id, ref = f"f-ref-{uuid.uuid4().hex[:6]}", tmp / "ref.mp4"
    rc, ref_result, err = await start_render(client, settings, tmp, media, ref_id, ref, comfy)
    assert rc == 0, err
    frames = count_video_frames(out)
    assert frames == count_video_frames(ref) == result["frames"]
    a, b = read_frames(out, list(range(frames))), read_frames(ref, list(range(frames)))
    different = [i for i in range(frames) if not (a[i] == b[i]).all()]
    assert not different, f"frames {different[:10]} differ from the undisturbed render"
    assert n == ref_result["windows"]
    LEDGER.append(f"gpu worker SIGTERM past its grace (exited in {took:.1f} s, window handed back)")
