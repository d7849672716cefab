"""Chain affinity: a chain's next window goes to the GPU worker that rendered its previous one
(that worker's own task queue, where its ComfyUI still caches the render's reference and
models), and to any worker once that one does not take it within LONGTALK_AFFINITY_WAIT_S."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest
from temporalio.client import Client

from longtalk.payloads import window_meta_key
from longtalk.testing import EXAMPLES
from tests.helpers import CountingPreview, run_starter, write_job
from worker import build_workers

pytestmark = pytest.mark.timeout(300)


class SlowPreview(CountingPreview):
    async def render_window(self, job, progress=None):
        await asyncio.sleep(0.15)  # long enough for the idle worker to be polling
        return await super().render_window(job, progress)


def worker_changes(store, render_id: str, n: int) -> tuple[int, list[str]]:
    workers = [store.get_json(window_meta_key(render_id, k))["worker"] for k in range(n)]
    return sum(1 for a, b in zip(workers, workers[1:]) if a != b), workers


async def _fleet(temporal_client, settings, store, tag: str, names: list[str], affinity_s: int):
    own = dataclasses.replace(settings, render_queue=f"render-{tag}", gpu_queue=f"gpu-{tag}",
                              affinity_wait_s=affinity_s)
    backends, workers = {}, {}
    cpu = build_workers(temporal_client, dataclasses.replace(own, worker_roles="cpu"), store, identity=f"cpu-{tag}")
    for name in names:
        backends[name] = SlowPreview()
        # a client per GPU worker, as on separate machines (one client polls a queue once)
        client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
        workers[name] = build_workers(client, dataclasses.replace(own, worker_roles="gpu"), store,
                                      backends={"preview": backends[name]}, identity=f"{name}-{tag}")
    tasks = {name: [asyncio.create_task(w.run()) for w in ws] for name, ws in {"cpu": cpu, **workers}.items()}
    return own, backends, {"cpu": cpu, **workers}, tasks


async def _stop(workers, tasks) -> None:
    for ws in workers:
        await asyncio.gather(*(w.shutdown() for w in ws), return_exceptions=True)
    await asyncio.gather(*(t for ts in tasks for t in ts), return_exceptions=True)


@pytest.mark.parametrize("affinity_s", [5, 0])
async def test_a_chain_stays_on_its_worker(affinity_s, temporal_client, settings, store, tmp_path):
    tag = uuid.uuid4().hex[:6]
    own, backends, workers, tasks = await _fleet(temporal_client, settings, store, tag, ["g1", "g2"], affinity_s)
    render_id = f"affinity-{affinity_s}-{tag}"
    try:
        job = write_job(tmp_path, image_path=EXAMPLES / "portrait.png", wav_path=EXAMPLES / "speech.ogg",
                        width=64, height=64)
        rc, result, err = await run_starter(temporal_client, own, job, "--id", render_id)
        assert rc == 0, err
    finally:
        await _stop(workers.values(), tasks.values())
    n = result["windows"]
    changes, names = worker_changes(store, render_id, n)
    if affinity_s:
        assert changes == 0, names  # one chain, two idle workers: every window on the first one's
    else:
        assert changes >= 1, names  # without affinity the idle worker takes windows too


async def test_a_chain_moves_on_when_its_worker_leaves(temporal_client, settings, store, tmp_path):
    tag = uuid.uuid4().hex[:6]
    own, backends, workers, tasks = await _fleet(temporal_client, settings, store, tag, ["g1", "g2"], 2)
    render_id = f"affinity-leave-{tag}"
    try:
        job = write_job(tmp_path, image_path=EXAMPLES / "portrait.png", wav_path=EXAMPLES / "speech.ogg",
                        width=64, height=64)
        run = asyncio.create_task(run_starter(temporal_client, own, job, "--id", render_id))
        while sum(len(b.calls) for b in backends.values()) < 3:
            await asyncio.sleep(0.05)
        first = next(name for name, b in backends.items() if b.calls)
        other = "g2" if first == "g1" else "g1"
        await asyncio.gather(*(w.shutdown() for w in workers[first]))  # finishes its window, then leaves
        rc, result, err = await asyncio.wait_for(run, 120)
        assert rc == 0, err
    finally:
        await _stop(workers.values(), tasks.values())
    assert backends[other].calls, "the other worker never took the chain over"
    changes, names = worker_changes(store, render_id, result["windows"])
    assert changes == 1, names
