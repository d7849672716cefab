"""Start-up benchmark: how long a pod's process takes to be useful (issue 22).

    python bench/startup.py [--runs 3] [--code DIR]

On the embedded stack (a Temporal dev server and the S3 server, started once), it starts,
--runs times each:
- a GPU worker (`worker.py`, LONGTALK_WORKER_ROLES=gpu, comfyui backend) beside a ComfyUI that
  already answers (the stand-in, run as its own process: `python -m tests.comfy_standin`; a
  real ComfyUI's own start and model load are apart): from
  the process's start to its first poll, i.e. Temporal lists it as a poller of the GPU queue;
  also to its READY line and to /readyz answering 200;
- a CPU worker: start to first poll of the render queue;
- the API (`python -m api`): start to its first answer (/livez 200) and to /readyz 200.

--code DIR runs the workers of another checkout (for a before/after: a git worktree of the
older commit). Prints a table and a last line `BENCH_JSON {...}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from longtalk.settings import Settings  # noqa: E402
from longtalk.stack import READY_LINE, free_port  # noqa: E402
from longtalk.testing import KEY_A, s3_process, standin_process, temporal_process  # noqa: E402


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


async def pollers(client, queue: str, activity: bool) -> set[str]:
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    kind = TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY if activity else TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
    resp = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
        namespace=client.namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind))
    return {p.identity for p in resp.pollers}


async def milestones(argv: list[str], env: dict, cwd: Path, log: Path, checks: dict, limit_s: float) -> dict:
    """Start `argv` and poll every 20 ms until each of `checks` (name -> async predicate of the
    process) has held once, or `limit_s` passes: seconds from the start to each."""
    with open(log, "ab") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    got: dict = {}
    try:
        while len(got) < len(checks) and time.monotonic() - t0 < limit_s:
            now = time.monotonic() - t0
            for name, check in checks.items():
                if name not in got and await check(proc):
                    got[name] = now
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[-1]} exited: {log.read_text()[-2000:]}")
            await asyncio.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait(30)
    return got


async def time_worker(client, settings: Settings, code: Path, roles: str, env: dict, log: Path) -> dict:
    """Seconds from the process's start to: the READY line, /readyz 200, the first poll."""
    health = free_port()
    queue = settings.gpu_queue if roles == "gpu" else settings.render_queue
    full = {**os.environ, **settings.to_env(), "LONGTALK_WORKER_ROLES": roles,
            "LONGTALK_HEALTH_PORT": str(health), **env}

    async def ready_line(proc):
        return READY_LINE in log.read_text(errors="replace")

    async def readyz(proc):
        return status(f"http://127.0.0.1:{health}/readyz") == 200

    async def first_poll(proc):
        return any(f"-{proc.pid}@" in p for p in await pollers(client, queue, roles == "gpu"))

    got = await milestones([sys.executable, str(code / "worker.py")], full, code, log,
                           {"ready_line": ready_line, "readyz": readyz, "first_poll": first_poll}, 300)
    got.setdefault("readyz", None)  # an older worker has no probes
    return got


async def time_api(settings: Settings, log: Path) -> dict:
    port = free_port()
    env = {**os.environ, **settings.to_env(), "LONGTALK_API_ADDRESS": f"127.0.0.1:{port}",
           "LONGTALK_API_KEYS": f"bench:{KEY_A}"}

    async def answers(path: str):
        async def check(proc):
            return status(f"http://127.0.0.1:{port}{path}") == 200
        return check

    return await milestones([sys.executable, "-m", "api"], env, ROOT, log,
                            {"first_answer": await answers("/livez"), "readyz": await answers("/readyz")}, 120)


def summary(runs: list[dict]) -> dict:
    keys = sorted({k for r in runs for k, v in r.items() if v is not None})
    return {k: {"median_s": round(statistics.median(r[k] for r in runs), 2),
                "max_s": round(max(r[k] for r in runs), 2)} for k in keys}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--code", type=Path, default=ROOT, help="the checkout whose worker.py runs")
    args = ap.parse_args()
    from temporalio.client import Client

    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        d = Path(tmp)
        settings = Settings(data_dir=d / "data", temporal_address=f"127.0.0.1:{free_port()}",
                            s3_endpoint=f"127.0.0.1:{free_port()}", bucket="startup")
        temporal, s3 = temporal_process(settings, d), s3_process(settings, d)
        comfy_port = free_port()
        standin = standin_process("tests.comfy_standin", comfy_port, d, "--root", str(d / "comfy"))
        try:
            client = await Client.connect(settings.temporal_address)
            comfy_env = {"LONGTALK_BACKEND": "comfyui", "LONGTALK_COMFY_URL": f"http://127.0.0.1:{comfy_port}"}
            results = {"gpu_worker": [], "cpu_worker": [], "api": []}
            for i in range(args.runs):
                results["gpu_worker"].append(await time_worker(client, settings, args.code.resolve(), "gpu",
                                                               comfy_env, d / f"gpu-{i}.log"))
                results["cpu_worker"].append(await time_worker(client, settings, args.code.resolve(), "cpu",
                                                               {}, d / f"cpu-{i}.log"))
                results["api"].append(await time_api(settings, d / f"api-{i}.log"))
                print(f"run {i + 1}: " + json.dumps({k: v[-1] for k, v in results.items()}), file=sys.stderr, flush=True)
        finally:
            standin.stop()
            s3.stop()
            temporal.stop()
    out = {name: summary(runs) for name, runs in results.items()}
    print(f"{'process':12} {'milestone':14} {'median s':>9} {'max s':>7}   ({args.runs} runs, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f})")
    for name, milestones in out.items():
        for k, v in milestones.items():
            print(f"{name:12} {k:14} {v['median_s']:>9} {v['max_s']:>7}")
    print("BENCH_JSON " + json.dumps({"startup": out, "runs": args.runs, "code": str(args.code)}))


if __name__ == "__main__":
    asyncio.run(main())
