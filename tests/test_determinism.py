"""No command of ours depends on workflow time (issue 16).

A worker can apply a signal outside a workflow task: a query it answers while signals wait for
their task delivers them with the query, at the workflow time of the previous task, and the
task that follows brings nothing new (reproduced by scripts/repro_query_applies_signals.py).
A replay applies the same signals in that later task, at its own time. So a decision that
reads workflow.now() can differ between a run and its replay, and the run's history then
fails to replay: the render is stuck the next time a worker rebuilds it.

The test gives the workflows a clock that is wrong by a random few seconds whenever they run
live (never in replay), renders, and replays every history with the true clock. Commands that
follow workflow time come out different and the replay fails; ours must not. The second test
shows the check can fail: the same with the time-based rules of earlier releases.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import uuid
from datetime import timedelta

import pytest
from temporalio import workflow
from temporalio.worker import UnsandboxedWorkflowRunner

from longtalk.backends.preview import PreviewBackend
from longtalk.testing import EXAMPLES
from tests.helpers import replay_everything, run_starter, write_job
from worker import build_workers
from workflows import render

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def skewed_clock(monkeypatch):
    """workflow.now() as the workflows see it while running live: 0-8 s early, at random."""
    true_now = workflow.now
    rng = random.Random(16)

    def now():
        t = true_now()
        return t if workflow.unsafe.is_replaying() else t - timedelta(seconds=rng.uniform(0, 8))

    monkeypatch.setattr(render.workflow, "now", now)


async def render_with_own_workers(temporal_client, settings, store, tmp_path, parallel_chains: int):
    own = dataclasses.replace(settings, render_queue=f"det-render-{uuid.uuid4().hex[:6]}",
                              gpu_queue=f"det-gpu-{uuid.uuid4().hex[:6]}", parallel_chains=parallel_chains)
    ws = build_workers(temporal_client, own, store, backends={"preview": PreviewBackend()}, identity="det",
                       workflow_runner=UnsandboxedWorkflowRunner())
    tasks = [asyncio.create_task(w.run()) for w in ws]
    try:
        rid = f"det-{uuid.uuid4().hex[:8]}"
        job = write_job(tmp_path, image_path=EXAMPLES / "portrait.png", wav_path=EXAMPLES / "speech.ogg",
                        width=64, height=64, max_frame=700)
        rc, result, err = await run_starter(temporal_client, own, job, "--id", rid)
        assert rc == 0, err
        return await replay_everything(temporal_client, f"WorkflowId STARTS_WITH '{rid}'", tmp_path / "histories")
    finally:
        for w in ws:
            await w.shutdown()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_commands_do_not_follow_workflow_time(temporal_client, settings, store, tmp_path, skewed_clock):
    failures = await render_with_own_workers(temporal_client, settings, store, tmp_path, parallel_chains=2)
    assert failures == {}


async def test_the_check_catches_time_based_rules(temporal_client, settings, store, tmp_path, skewed_clock,
                                                  monkeypatch):
    """The same render with the time-based rules of the releases before the fix (their patches
    left out): its histories do not replay."""
    patched = render.workflow.patched
    old_rules = {render.PROGRESS_BY_COUNT_PATCH, render.REPORT_EVERY_WINDOW_PATCH}
    monkeypatch.setattr(render.workflow, "patched", lambda patch_id: patch_id not in old_rules and patched(patch_id))
    failures = await render_with_own_workers(temporal_client, settings, store, tmp_path, parallel_chains=2)
    assert failures and all("Nondeterminism" in why for why in failures.values()), failures
