"""Background heartbeats really reach Temporal's activity context (sync and async)."""

import asyncio
import time
from datetime import timedelta

from temporalio.testing import ActivityEnvironment

from activities.common import heartbeating, heartbeating_async


def _env() -> tuple[ActivityEnvironment, list]:
    env = ActivityEnvironment()
    env.info = env.info.__class__(**{**env.info.__dict__, "heartbeat_timeout": timedelta(seconds=0.9)})
    beats: list = []
    env.on_heartbeat = lambda *d: beats.append(d)
    return env, beats


def test_sync_activity_heartbeats_while_it_works():
    env, beats = _env()

    def slow_activity():
        with heartbeating(lambda: {"step": "working"}):
            time.sleep(1.6)

    env.run(slow_activity)
    # one at the start, then one every 0.3 s (a third of the timeout) from the background thread
    assert len(beats) >= 4, beats
    assert ({"step": "working"},) in beats


async def test_async_activity_heartbeats_while_it_waits():
    env, beats = _env()

    async def slow_activity():
        async with heartbeating_async(lambda: {"step": "waiting"}):
            await asyncio.sleep(1.6)

    await env.run(slow_activity)
    assert len(beats) >= 4, beats
