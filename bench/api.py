"""HTTP API benchmark: /run latency under load, /status latency with many renders in
visibility, and the API process's memory; with --purge, /purge-queue with long queues.

    .venv/bin/python bench/api.py [--runs 500] [--clients 20] [--visibility 1000] [--status 200] [--processes 1]
    .venv/bin/python bench/api.py --purge 1000,5000 [--clients 20]

Starts its own Temporal dev server and S3 server (longtalk.stack, free loopback ports, one
temporary folder removed at the end), ONE worker process (CPU + GPU roles, preview backend)
and the API as its own process (`python -m api`). Then:

1. `/run`: `--runs` jobs (a 3 s speech clip + the example portrait at 128x128, as path
   inputs: the API hashes and uploads them) from `--clients` concurrent clients, while the
   renders queue behind the one worker. Prints p50/p95/p99/max, the rate and the API
   process's CPU per request (all its threads).
2. `/status`: more jobs until `--visibility` renders exist, then `--status` GETs of random
   ids from 20 clients (mostly queued renders: each answer queries the render's progress).
3. `/health` (5 calls) and `/purge-queue` with all those renders in visibility.
4. The API process's RSS now and its peak (VmHWM).
The stack and its renders are thrown away at the end.

With --purge N,M,...: no worker at first, so every render stays queued. For each N (and once
more for the first N with the official runpod SDK's Endpoint.purge_queue(), which gives the
server 3 s): N renders through /run, then `/purge-queue` is timed (the answer), then the time
until its PurgeQueue workflow has sent every cancel request (from the request), then a CPU
worker is started and the time until all N are CANCELLED (from its start: each cancelled
render runs its record_cancelled activity) is printed; the worker is stopped again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from longtalk.settings import Settings  # noqa: E402
from longtalk.stack import Process, Service, free_port, port_open, split_host_port, wait_worker_ready  # noqa: E402
from longtalk.testing import cut_audio, s3_process, temporal_process  # noqa: E402

KEY = "bench-" + uuid.uuid4().hex


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def summary(name: str, ms: list[float], wall: float) -> str:
    return (f"{name:8s} n={len(ms):4d}  p50 {pct(ms, 50):7.1f} ms  p95 {pct(ms, 95):7.1f} ms  "
            f"p99 {pct(ms, 99):7.1f} ms  max {max(ms):7.1f} ms  mean {statistics.mean(ms):7.1f} ms  "
            f"{len(ms) / wall:6.1f} req/s")


def family(pid: int) -> list[int]:
    """The process and its children (the API's worker processes with --processes > 1)."""
    kids = Path(f"/proc/{pid}/task/{pid}/children")
    return [pid] + [k for c in (kids.read_text().split() if kids.exists() else []) for k in family(int(c))]


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) the process and its children have used:
    steadier than latency on a shared machine."""
    total = 0
    for p in family(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def pause(pid: int, stop: bool) -> None:
    """Stop (SIGSTOP) or continue the process and its children: the worker's ffmpeg too."""
    for p in family(pid):
        try:
            os.kill(p, signal.SIGSTOP if stop else signal.SIGCONT)
        except ProcessLookupError:
            pass


def cpu_split(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process (with its children); "bench" is this one."""
    out = {name: cpu_s(pid) for name, pid in pids.items() if pid}
    out["bench"] = sum(os.times()[:2])
    return out


def cpu_line(before: dict[str, float], after: dict[str, float], n: int) -> str:
    """Where the machine's CPU went in a phase, per request: what the API's share competes with."""
    parts = [f"{name} {1000 * (after[name] - before[name]) / n:.1f}" for name in before]
    return "         CPU ms per request: " + ", ".join(parts)


def rss_kb(pid: int) -> tuple[int, int]:
    """(RSS now, peak RSS) in kB, summed over the process and its children."""
    now = peak = 0
    for p in family(pid):
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{p}/status").read_text().splitlines() if ":" in line)
        now, peak = now + int(fields["VmRSS"].split()[0]), peak + int(fields["VmHWM"].split()[0])
    return now, peak


async def load(client: httpx.AsyncClient, n: int, clients: int, request) -> tuple[list[float], list, float]:
    latencies, answers = [], []
    todo = iter(range(n))
    started = time.perf_counter()

    async def one_client():
        for i in todo:
            t = time.perf_counter()
            r = await request(client, i)
            latencies.append((time.perf_counter() - t) * 1000)
            answers.append(r)
    await asyncio.gather(*(one_client() for _ in range(clients)))
    return latencies, answers, time.perf_counter() - started


async def bench(args, base: str, api_pid: int, folder: Path, worker_pid: int | None = None,
                others: dict[str, int] | None = None) -> None:
    audio = cut_audio(ROOT / "examples" / "speech.ogg", folder / "speech.wav", 1.0, 3.0)
    job = {"input": {"image_path": str(ROOT / "examples" / "portrait.png"), "wav_path": str(audio),
                     "width": 128, "height": 128}}
    ids: list[str] = []

    async def run(client, i):
        r = await client.post("/run", json=job)
        r.raise_for_status()
        ids.append(r.json()["id"])
        return r.json()["status"]

    async with httpx.AsyncClient(base_url=f"{base}/v2/bench", headers={"Authorization": f"Bearer {KEY}"},
                                 timeout=300, limits=httpx.Limits(max_connections=args.clients)) as client:
        await run(client, -1)  # warm-up (imports, first connection)
        pids = {"api": api_pid, "worker": worker_pid, **(others or {})}
        cpu, split = cpu_s(api_pid), cpu_split(pids)
        if args.pause_worker and worker_pid:  # the API and its stores alone, as on a host of their own
            pause(worker_pid, True)
        try:
            run_ms, answers, run_wall = await load(client, args.runs, args.clients, run)
        finally:
            if args.pause_worker and worker_pid:
                pause(worker_pid, False)
        run_cpu = cpu_s(api_pid) - cpu
        run_split = cpu_line(split, cpu_split(pids), args.runs)
        rss_after_runs = rss_kb(api_pid)
        print(summary("/run", run_ms, run_wall), flush=True)
        print(f"         API process CPU {1000 * run_cpu / args.runs:.1f} ms per request", flush=True)
        print(run_split, flush=True)
        print(f"         statuses: {sorted(set(answers))}", flush=True)
        more = max(0, args.visibility - len(ids))
        if more:
            t = time.perf_counter()
            await load(client, more, args.clients, run)
            print(f"         {more} more renders submitted in {time.perf_counter() - t:.1f} s "
                  f"({len(ids)} renders in visibility)", flush=True)

        async def status(client, i):
            r = await client.get(f"/status/{random.choice(ids)}")
            r.raise_for_status()
            return r.json()["status"]
        cpu, split = cpu_s(api_pid), cpu_split(pids)
        if args.pause_worker and worker_pid:  # the /status phase without the worker's CPU use beside it
            pause(worker_pid, True)
        try:
            status_ms, states, status_wall = await load(client, args.status, 20, status)
        finally:
            if args.pause_worker and worker_pid:
                pause(worker_pid, False)
        status_cpu = cpu_s(api_pid) - cpu
        print(summary("/status", status_ms, status_wall), flush=True)
        print(f"         API process CPU {1000 * status_cpu / args.status:.1f} ms per request", flush=True)
        print(cpu_line(split, cpu_split(pids), args.status), flush=True)
        print(f"         statuses seen: { {s: states.count(s) for s in set(states)} }", flush=True)
        health_ms = []
        for _ in range(5):
            t = time.perf_counter()
            health = (await client.get("/health")).json()
            health_ms.append(1000 * (time.perf_counter() - t))
        print(f"/health  median {statistics.median(health_ms):.0f} ms, max {max(health_ms):.0f} ms of 5, with "
              f"{len(ids)} renders: {health}", flush=True)
        t = time.perf_counter()
        purged = (await client.post("/purge-queue")).json()
        print(f"/purge-queue {1000 * (time.perf_counter() - t):.0f} ms: {purged}", flush=True)
        rss, hwm = rss_kb(api_pid)
        print(f"API RSS  {rss / 1024:.0f} MB now, {rss_after_runs[0] / 1024:.0f} MB after the /run phase, "
              f"peak {hwm / 1024:.0f} MB", flush=True)


async def bench_purge(args, base: str, settings, folder: Path, worker: Process, env: dict) -> None:
    from temporalio.client import Client

    from longtalk.testing import purges

    audio = cut_audio(ROOT / "examples" / "speech.ogg", folder / "speech.wav", 1.0, 3.0)
    job = {"input": {"image_path": str(ROOT / "examples" / "portrait.png"), "wav_path": str(audio),
                     "width": 128, "height": 128}}
    temporal = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
    running = "WorkflowType = 'RenderVideo' AND ExecutionStatus = 'Running'"
    sizes = [int(n) for n in args.purge.split(",")]
    rounds = [(sizes[0], "http"), (sizes[0], "sdk")] + [(n, "http") for n in sizes[1:]]

    async def run(client, i):
        r = await client.post("/run", json=job)
        r.raise_for_status()

    async with httpx.AsyncClient(base_url=f"{base}/v2/bench", headers={"Authorization": f"Bearer {KEY}"},
                                 timeout=300, limits=httpx.Limits(max_connections=args.clients)) as client:
        for n, via in rounds:
            t = time.perf_counter()
            await load(client, n, args.clients, run)
            queued = (await client.get("/health")).json()["jobs"]["inQueue"]
            print(f"{n} renders queued in {time.perf_counter() - t:.0f} s (/health inQueue {queued})", flush=True)
            t = time.perf_counter()
            if via == "sdk":
                answer, seconds = await asyncio.to_thread(sdk_purge, base)
                t = time.perf_counter() - seconds
            else:
                answer = (await client.post("/purge-queue")).json()
            answer_ms = 1000 * (time.perf_counter() - t)
            print(f"/purge-queue ({via}) {answer_ms:.0f} ms: {answer}", flush=True)
            purge = (await purges(temporal, "bench"))[0]
            sent = await temporal.get_workflow_handle(purge.id).result()
            print(f"  all {sent} cancel requests sent {1000 * (time.perf_counter() - t):.0f} ms after the "
                  f"request (PurgeQueue done)", flush=True)
            after = worker.log_file.stat().st_size if worker.log_file.exists() else 0
            t = time.perf_counter()
            worker.start(extra_env={**env, "LONGTALK_WORKER_ROLES": "cpu"})
            wait_worker_ready(worker.log_file, worker, timeout=120, after=after)
            ready = shown = time.perf_counter()
            while left := (await temporal.count_workflows(running)).count:
                if time.perf_counter() - shown >= 60:  # a rate, should the run be cut short
                    shown = time.perf_counter()
                    print(f"  {left} of {n} still running {shown - ready:.0f} s after the worker started", flush=True)
                await asyncio.sleep(0.2)
            cancelled = (await temporal.count_workflows(
                "WorkflowType = 'RenderVideo' AND ExecutionStatus = 'Canceled'")).count
            print(f"  all CANCELLED {1000 * (time.perf_counter() - ready):.0f} ms after a CPU worker started "
                  f"({ready - t:.0f} s to start it; {cancelled} cancelled renders in all)", flush=True)
            worker.stop()


def sdk_purge(base: str) -> tuple[dict, float]:
    """The official SDK, unchanged, pointed at this API (imported before the clock starts: that
    takes seconds); a ReadTimeout is what it raises after its 3 s. (answer, seconds)"""
    import logging

    import requests
    import runpod

    logging.getLogger("httpx").setLevel(logging.WARNING)  # importing runpod logs every request
    runpod.endpoint_url_base, runpod.api_key = f"{base}/v2", KEY
    endpoint = runpod.Endpoint("bench")
    t = time.perf_counter()
    try:
        answer = endpoint.purge_queue()
    except requests.exceptions.ReadTimeout as exc:
        answer = {"ReadTimeout": str(exc)}
    return answer, time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--visibility", type=int, default=1000)
    p.add_argument("--status", type=int, default=200)
    p.add_argument("--processes", type=int, default=1, help="API processes (LONGTALK_API_PROCESSES)")
    p.add_argument("--pause-worker", action="store_true",
                   help="stop the worker (SIGSTOP) during the /run and /status phases: what the API costs "
                        "without a busy worker on the same cores (a deployment's GPU workers run elsewhere)")
    p.add_argument("--purge", help="N,M,...: queue N renders (no worker), time /purge-queue and the cancels")
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="longtalk-bench-api-"))
    settings = Settings(
        data_dir=folder, temporal_address=f"127.0.0.1:{free_port()}", s3_endpoint=f"127.0.0.1:{free_port()}",
        api_address=f"127.0.0.1:{free_port()}", api_keys=f"bench:{KEY}",
        input_roots=os.pathsep.join([str(ROOT), str(folder)]))
    procs: list[Process] = []
    try:
        procs.append(temporal_process(settings, folder))
        procs.append(s3_process(settings, folder))
        env = {**settings.to_env(), "LONGTALK_WORKER_ROLES": "cpu,gpu"}
        worker = Process(Service("worker", [sys.executable, str(ROOT / "worker.py")], None, cwd=ROOT),
                         folder / "run", folder / "logs")
        procs.append(worker)
        if not args.purge:
            worker.start(extra_env=env)
            wait_worker_ready(folder / "logs" / "worker.log", worker, timeout=120)
        api = Process(Service("api", [sys.executable, "-m", "api"], split_host_port(settings.api_address), cwd=ROOT),
                      folder / "run", folder / "logs")
        api.start(extra_env={**env, "LONGTALK_API_PROCESSES": str(args.processes)})
        procs.append(api)
        api.wait_ready(60)
        while not port_open(*split_host_port(settings.api_address)):
            time.sleep(0.2)
        if args.purge:
            print(f"no worker, API pid {api.pid()} on {settings.api_address}; {os.cpu_count()} CPUs", flush=True)
            asyncio.run(bench_purge(args, f"http://{settings.api_address}", settings, folder, worker, env))
            return 0
        print(f"one worker (preview), API pid {api.pid()} ({args.processes} process(es)) on {settings.api_address}; "
              f"{os.cpu_count()} CPUs", flush=True)
        asyncio.run(bench(args, f"http://{settings.api_address}", api.pid(), folder, worker.pid(),
                          {"temporal": procs[0].pid(), "s3": procs[1].pid()}))
    finally:
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
