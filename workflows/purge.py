"""PurgeQueue: cancel an owner's queued renders after /purge-queue has answered.

Started by the HTTP API (api/service.py, Renders.purge_queue) and run by the API's own worker
on its queue, like DeliverWebhook, so the route answers at once and the cancels are Temporal's
to finish: one activity (api/purge.py) pages through the renders that were queued when the
request came (a visibility query: renders started later are not touched), cancels them and
heartbeats its place, so a lost API process or worker hands the rest to the next attempt.
The history holds the owner's name and a time, no key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

PURGE_HEARTBEAT = timedelta(seconds=30)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # started_before, in UTC


@dataclass
class PurgeInput:
    owner: str  # the API key's name
    # RFC 3339 (UTC): renders started at or before this instant, the request's by the API's clock
    # (compared with start times by the Temporal server's: the two clocks are kept in sync)
    started_before: str
    page_size: int = 200  # renders per visibility page; the place is heartbeaten after each


def purge_workflow_id(inp: PurgeInput) -> str:
    """One per request: the same request started twice is one purge."""
    return f"purge-queue/{inp.owner}/{inp.started_before}"


@workflow.defn(name="PurgeQueue")
class PurgeQueue:
    @workflow.run
    async def run(self, inp: PurgeInput) -> int:
        """The number of renders cancelled."""
        return await workflow.execute_activity(
            "purge_queued", inp, result_type=int,
            start_to_close_timeout=timedelta(hours=1), heartbeat_timeout=PURGE_HEARTBEAT,
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)))
