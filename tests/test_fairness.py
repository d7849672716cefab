"""Fairness between renders on one GPU queue: every render's tasks carry the render as their
fairness key, and the server hands a backlogged queue's tasks out round robin between keys,
so a short render does not wait behind a long render's backlog of windows."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.worker import Worker

from longtalk.inputs.submit import PRIORITY_LOW, PRIORITY_NORMAL, render_priority
from tests.helpers import run_starter, write_job

pytestmark = pytest.mark.timeout(300)

def test_priority_of_a_render():
    p = render_priority("r-1")
    assert (p.priority_key, p.fairness_key) == (PRIORITY_NORMAL, "r-1")
    assert render_priority("r-1", low=True).priority_key == PRIORITY_LOW > PRIORITY_NORMAL
    long_id = "x" * 128  # fairness keys are at most 64 bytes
    assert len(render_priority(long_id).fairness_key) <= 64
    assert render_priority(long_id).fairness_key != render_priority("y" * 128).fairness_key


@activity.defn(name="fair_work")
async def fair_work(tag: str) -> str:
    await asyncio.sleep(0.05)
    return tag


@workflow.defn(name="FairBacklog", sandboxed=False)
class FairBacklog:
    """n activities at once on `queue`: a backlog, like a long render's many chains."""

    @workflow.run
    async def run(self, tag: str, n: int, queue: str) -> None:
        await asyncio.gather(*[workflow.execute_activity(fair_work, f"{tag}{i}", task_queue=queue,
                                                         start_to_close_timeout=timedelta(seconds=30))
                               for i in range(n)])


async def test_the_gpu_queue_hands_out_tasks_round_robin_between_renders(temporal_client):
    """The embedded server runs with task-queue fairness: a render that arrives behind another
    render's backlog of 20 tasks gets every other task, not the 21st (first in, first out)."""
    tag = uuid.uuid4().hex[:6]
    queue, wf_queue = f"fair-gpu-{tag}", f"fair-wf-{tag}"
    order: list[str] = []

    @activity.defn(name="fair_work")
    async def work(t: str) -> str:
        order.append(t)
        await asyncio.sleep(0.05)
        return t

    async with Worker(temporal_client, task_queue=wf_queue, workflows=[FairBacklog]):
        long_run = await temporal_client.start_workflow(
            FairBacklog.run, args=["L", 20, queue], id=f"fair-long-{tag}", task_queue=wf_queue,
            priority=render_priority(f"fair-long-{tag}"))
        await asyncio.sleep(1.0)  # the long render's 20 tasks wait in the queue
        short_run = await temporal_client.start_workflow(
            FairBacklog.run, args=["S", 3, queue], id=f"fair-short-{tag}", task_queue=wf_queue,
            priority=render_priority(f"fair-short-{tag}"))
        await asyncio.sleep(1.0)
        async with Worker(temporal_client, task_queue=queue, activities=[work], max_concurrent_activities=1):
            await asyncio.wait_for(asyncio.gather(long_run.result(), short_run.result()), 120)
    last_short = max(i for i, t in enumerate(order) if t.startswith("S"))
    assert last_short <= 8, order  # round robin: S by the 6th task or so; FIFO: the 21st to 23rd


async def test_a_render_carries_its_fairness_key(workers, temporal_client, settings, media, tmp_path, render_id):
    job = write_job(tmp_path, image_path=media["portrait"], wav_path=media["speech_mp3"], width=64, height=64)
    rc, _, err = await run_starter(temporal_client, settings, job, "--id", render_id)
    assert rc == 0, err
    events = (await temporal_client.get_workflow_handle(render_id).fetch_history()).events
    priority = events[0].workflow_execution_started_event_attributes.priority
    assert priority.fairness_key == render_id and priority.priority_key == PRIORITY_NORMAL
