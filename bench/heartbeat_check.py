"""Do the sync activities' background heartbeats reach Temporal?

    python bench/heartbeat_check.py

Starts a Temporal dev server (like tests/conftest.py) and a worker configured as
worker.build_workers configures the CPU worker (sync activities on a ThreadPoolExecutor),
then runs two activities that each work 5 s under a 2 s heartbeat timeout:

  shipped   wraps its body in activities.common.heartbeating(every_s=0.5), unchanged
  copy_ctx  the same loop, but the thread runs inside contextvars.copy_context()

temporalio finds the current activity through a contextvar; a plain threading.Thread
starts with an empty context, so activity.heartbeat() raises there ("Not in activity
context") and heartbeating() swallows the error. Expected output while that is so:
shipped FAILS with a heartbeat timeout, copy_ctx completes. Exit status 1 if shipped fails.
"""

from __future__ import annotations

import asyncio
import contextvars
import shutil
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from temporalio import activity, workflow  # noqa: E402
from temporalio.client import Client, WorkflowFailureError  # noqa: E402
from temporalio.common import RetryPolicy  # noqa: E402
from temporalio.worker import UnsandboxedWorkflowRunner, Worker  # noqa: E402

from activities.common import heartbeating  # noqa: E402
from longtalk.converter import DATA_CONVERTER  # noqa: E402
from longtalk.settings import Settings  # noqa: E402
from longtalk.stack import Process, free_port, temporal_service  # noqa: E402

WORK_S, HEARTBEAT_TIMEOUT_S, EVERY_S = 5.0, 2.0, 0.5


@activity.defn(name="shipped")
def shipped() -> str:
    with heartbeating(every_s=EVERY_S):
        time.sleep(WORK_S)
    return "completed"


@activity.defn(name="copy_ctx")
def copy_ctx() -> str:
    stop = threading.Event()

    def beat():
        while not stop.wait(EVERY_S):
            activity.heartbeat()

    activity.heartbeat()
    thread = threading.Thread(target=contextvars.copy_context().run, args=(beat,), daemon=True)
    thread.start()
    try:
        time.sleep(WORK_S)
    finally:
        stop.set()
        thread.join(timeout=1)
    return "completed"


@workflow.defn(name="HeartbeatCheck")
class HeartbeatCheck:
    @workflow.run
    async def run(self, name: str) -> str:
        return await workflow.execute_activity(
            name, start_to_close_timeout=timedelta(seconds=60),
            heartbeat_timeout=timedelta(seconds=HEARTBEAT_TIMEOUT_S), retry_policy=RetryPolicy(maximum_attempts=1))


async def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="longtalk-hbcheck-"))
    settings = Settings(temporal_address=f"127.0.0.1:{free_port()}")
    server = Process(temporal_service(settings, db_file=tmp / "temporal.db", headless=True), tmp / "run", tmp / "logs")
    server.start()
    results = {}
    try:
        server.wait_ready(90)
        client = await Client.connect(settings.temporal_address, data_converter=DATA_CONVERTER)
        queue = f"hb-{uuid.uuid4().hex[:6]}"
        async with Worker(client, task_queue=queue, workflows=[HeartbeatCheck], activities=[shipped, copy_ctx],
                          activity_executor=ThreadPoolExecutor(max_workers=4),
                          workflow_runner=UnsandboxedWorkflowRunner()):
            for name in ("shipped", "copy_ctx"):
                try:
                    results[name] = await client.execute_workflow(
                        HeartbeatCheck.run, name, id=f"{name}-{uuid.uuid4().hex[:6]}", task_queue=queue)
                except WorkflowFailureError as exc:
                    cause = exc.cause
                    while getattr(cause, "cause", None) is not None:
                        cause = cause.cause
                    results[name] = f"FAILED: {type(cause).__name__}: {cause}"
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{WORK_S:g} s of work, heartbeat timeout {HEARTBEAT_TIMEOUT_S:g} s, a beat every {EVERY_S:g} s:")
    for name, outcome in results.items():
        print(f"  {name:9s} {outcome}")
    return 0 if results.get("shipped") == "completed" else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
