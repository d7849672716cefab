"""The RunPod Serverless benchmark: one render on 3 local GPU workers, then the same render
on 3 simulated serverless workers (the RunPod stand-in of tests/runpod_standin, run as its own
process: `python -m tests.runpod_standin`; it starts real `python -m longtalk.serverless`
handler processes in the SDK's own loop), first cold (the
endpoint scaled to zero) and then warm (its workers still up).

Both "GPUs" are the timed backend: every window takes --window-seconds of wall time beside
a 64x64 preview render. The stack is real (Temporal dev server, S3 server, CPU worker in this
process). Prints per run: wall (the workflow's start to close), windows per hour, and the
overhead per window: how much longer a window's render_window activity took than its render
(local: meta.json render_s; RunPod: the job's executionTime, so the overhead holds the
submission, RunPod's queue and job-take, the status polling and the presigned transfers).

    .venv/bin/python bench/runpod.py [--windows 46] [--window-seconds 3] [--poll-s 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from longtalk.settings import Settings  # noqa: E402
from longtalk.stack import Process, Service, free_port, wait_worker_ready  # noqa: E402
from longtalk.testing import EXAMPLES, s3_process, standin_process, temporal_process, transcode  # noqa: E402


def log(msg: str) -> None:
    print(f"[runpod {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _ts(event) -> float:
    return event.event_time.seconds + event.event_time.nanos / 1e9


async def activity_spans(client, render_id: str, chains: int) -> dict[int, float]:
    """Window index -> seconds from its render_window activity's start to its completion."""
    from temporalio.api.enums.v1 import EventType

    from workflows.render import chain_workflow_id

    spans: dict[int, float] = {}
    for c in range(chains):
        events = (await client.get_workflow_handle(chain_workflow_id(render_id, c)).fetch_history()).events
        scheduled, started = {}, {}
        for e in events:
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attrs = e.activity_task_scheduled_event_attributes
                if attrs.activity_type.name == "render_window":
                    payload = json.loads(attrs.input.payloads[0].data)
                    scheduled[e.event_id] = payload["index"]
            elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                started[e.activity_task_started_event_attributes.scheduled_event_id] = _ts(e)
            elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                sid = e.activity_task_completed_event_attributes.scheduled_event_id
                if sid in scheduled:
                    spans[scheduled[sid]] = _ts(e) - started[sid]
    return spans


async def measure(client, settings, store, job: dict, tmp: Path, label: str, runpod: bool) -> dict:
    from fleet import render  # bench/fleet.py's: starter.main with the timed backend
    from longtalk.payloads import window_meta_key, window_prefix

    rid = f"bench-{label}-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    await render(client, settings, job, tmp, rid)
    client_wall = time.monotonic() - t0
    plan = store.get_json(f"renders/{rid}/plan.json")
    n, chains = plan["windows"], len(plan["chains"])
    spans = await activity_spans(client, rid, chains)
    overheads, billed, delays = [], 0.0, []
    for k in range(n):
        if runpod:
            rec = store.get_json(window_prefix(rid, k) + "runpod.json")
            busy = rec["executionTime"] / 1000
            billed += busy
            delays.append(rec["delayTime"] / 1000)
        else:
            busy = store.get_json(window_meta_key(rid, k))["render_s"]
        overheads.append(spans[k] - busy)
    handle = client.get_workflow_handle(rid)
    desc = await handle.describe()
    wall = (desc.close_time - desc.start_time).total_seconds()
    res = {"label": label, "windows": n, "chains": chains, "wall_s": round(wall, 1),
           "client_wall_s": round(client_wall, 1), "windows_per_hour": round(n / wall * 3600),
           "overhead_per_window_s": round(sum(overheads) / n, 3),
           "overhead_median_s": round(sorted(overheads)[n // 2], 3)}
    if runpod:
        res.update(billed_gpu_s=round(billed, 1), delay_max_s=round(max(delays), 2),
                   delay_median_s=round(sorted(delays)[n // 2], 3))
    log(json.dumps(res))
    store.delete_prefix(f"renders/{rid}/")
    return res


async def main_async(args, settings, tmp: Path) -> list[dict]:
    from longtalk import temporal_connect
    from longtalk.store import ObjectStore
    from worker import build_workers

    store = ObjectStore.from_settings(settings)
    store.ensure_bucket()
    client = await temporal_connect.connect(settings)
    frames = args.windows * (settings.window - settings.motion) + settings.motion
    speech = tmp / "speech.ogg"
    transcode(EXAMPLES / "speech.ogg", speech, {"stream_loop": -1}, t=f"{frames / settings.fps + 1:.3f}",
              **{"c:a": "libopus", "b:a": "32k"}, ac=1)
    job = {"image_path": str(EXAMPLES / "portrait.png"), "wav_path": str(speech), "width": 64, "height": 64,
           "max_frame": frames, "parallel_chains": 3}
    running = []

    def start(ws):
        running.extend((w, asyncio.create_task(w.run())) for w in ws)

    start(build_workers(client, dataclasses.replace(settings, worker_roles="cpu"), store, identity="bench"))
    # three GPU worker processes (one worker per queue and process), as bench/fleet.py starts them
    timed = {"LONGTALK_BACKEND": "timed", "LONGTALK_TIMED_WINDOW_S": str(args.window_seconds)}
    gpus = [Process(Service(f"gpu-{g}", [sys.executable, str(ROOT / "worker.py")], None, cwd=ROOT,
                            env={**settings.to_env(), "LONGTALK_WORKER_ROLES": "gpu", **timed}),
                    tmp / "run", tmp / "logs") for g in range(3)]
    port = free_port()
    handler_env = [f"--env={k}={v}" for k, v in {**timed, "LONGTALK_DATA_DIR": str(tmp / "handler")}.items()]
    server = None  # the stand-in's process
    rp = dataclasses.replace(settings, gpu_pool="runpod", runpod_endpoint_id="ep-bench", runpod_api_key="bench-key",
                             runpod_base_url=f"http://127.0.0.1:{port}/v2", runpod_poll_s=args.poll_s,
                             runpod_max_jobs=3)
    start(build_workers(client, dataclasses.replace(rp, worker_roles="runpod"), store, identity="bench-dispatch"))
    results = []
    try:
        for proc in gpus:
            proc.start()
        server = await asyncio.to_thread(
            standin_process, "tests.runpod_standin", port, tmp, "--endpoint", "ep-bench", "--api-key", "bench-key",
            *handler_env, "--max-workers", "3", "--cold-start-s", str(args.cold_start_s), "--idle-timeout-s", "60",
            "--log-dir", str(tmp / "runpod-logs"))
        for proc in gpus:
            await asyncio.to_thread(wait_worker_ready, proc.log_file, proc)
        results.append(await measure(client, settings, store, job, tmp, "local3", runpod=False))
        results.append(await measure(client, rp, store, job, tmp, "runpod3-cold", runpod=True))
        results.append(await measure(client, rp, store, job, tmp, "runpod3-warm", runpod=True))
        results.append(await measure(client, settings, store, job, tmp, "local3-again", runpod=False))  # order effects
    finally:
        for w, _ in running:
            await w.shutdown()
        await asyncio.gather(*(t for _, t in running), return_exceptions=True)
        for proc in [*gpus, server] if server is not None else gpus:
            proc.stop()
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--windows", type=int, default=46)
    p.add_argument("--window-seconds", type=float, default=3.0)
    p.add_argument("--poll-s", type=float, default=0.5, help="LONGTALK_RUNPOD_POLL_S of the dispatcher")
    p.add_argument("--cold-start-s", type=float, default=5.0, help="the stand-in's delay before a worker starts")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-runpod-"))
    settings = Settings(data_dir=tmp, temporal_address=f"127.0.0.1:{free_port()}",
                        s3_endpoint=f"127.0.0.1:{free_port()}", bucket="bench", input_roots="*",
                        render_queue=f"render-{uuid.uuid4().hex[:6]}", gpu_queue=f"gpu-{uuid.uuid4().hex[:6]}",
                        runpod_queue=f"runpod-{uuid.uuid4().hex[:6]}")
    os.environ.setdefault("LONGTALK_DATA_DIR", str(tmp))
    s3, temporal = s3_process(settings, tmp), temporal_process(settings, tmp)
    try:
        results = asyncio.run(main_async(args, settings, tmp))
    finally:
        s3.stop()
        temporal.stop()
    print(f"{'run':<14} {'windows':>7} {'wall s':>7} {'win/h':>6} {'overhead/win s':>15} {'billed GPU s':>12}")
    for r in results:
        print(f"{r['label']:<14} {r['windows']:>7} {r['wall_s']:>7} {r['windows_per_hour']:>6} "
              f"{r['overhead_per_window_s']:>15} {r.get('billed_gpu_s', ''):>12}")
    cold, warm = results[1], results[2]
    print(f"cold start cost to the render: {cold['wall_s'] - warm['wall_s']:.1f} s "
          f"(first job's delay {cold['delay_max_s']} s, stand-in cold start {args.cold_start_s} s)")
    print("BENCH_JSON " + json.dumps({"runpod": results, "args": vars(args)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
