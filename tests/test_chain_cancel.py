"""A cancel that reaches a chain while its window is finishing (the window completes before
the activity sees the cancel: shorter than a heartbeat interval) still stops the chain; the
window that finished is kept and reported."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import WorkflowFailureError

from longtalk.testing import EXAMPLES
from tests.helpers import write_job

pytestmark = pytest.mark.timeout(300)


async def test_cancel_during_a_short_window_stops_the_chain(workers, temporal_client, settings, backend, tmp_path,
                                                           render_id, monkeypatch):
    import starter

    render = backend.render_window

    async def slow(job, progress=None):
        if job.render_id == render_id:
            await asyncio.sleep(1.5)  # far shorter than the heartbeat interval (0.8 x 60 s)
        return await render(job, progress)

    monkeypatch.setattr(backend, "render_window", slow)
    job = write_job(tmp_path, image_path=EXAMPLES / "portrait.png", wav_path=EXAMPLES / "speech.ogg",
                    width=64, height=64)
    rc = await starter.main([job, "--id", render_id, "--no-wait", "--quiet"], client=temporal_client,
                            settings=settings, stdout=open(tmp_path / "out", "w"), stderr=open(tmp_path / "err", "w"))
    assert rc == 0
    while len([c for c in backend.calls if c[0] == render_id]) < 2:
        await asyncio.sleep(0.05)
    handle = temporal_client.get_workflow_handle(render_id)
    await handle.cancel()
    at_cancel = len([c for c in backend.calls if c[0] == render_id])
    with pytest.raises(WorkflowFailureError):
        await asyncio.wait_for(handle.result(), 60)
    rendered = len([c for c in backend.calls if c[0] == render_id])
    assert rendered <= at_cancel + 1, (at_cancel, rendered)  # 17 windows without the fix
