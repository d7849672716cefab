"""What a GPU worker did over the last day, kept in its fleet record (longtalk.fleet) for the
dashboard's fleet charts: bounded, so the record stays a small object.

    "history": {"hours": [[hour_start, windows, busy_s, failures], ...],   at most HOURS + 1
                "queue": [[slot_start, waiting], ...]}                     at most a day of slots

- hours: per clock hour (UTC, epoch seconds of its start), the windows this worker stored, the
  windows that failed on it, and the seconds it was busy with windows (from taking a window to
  storing it, as busy_s in the window's meta.json; the overlap of a window still storing while
  the next renders counted once, so an hour is never more than 3600 s busy). A busy stretch
  across an hour's end is split between the hours.
- queue: the GPU queue's backlog (Temporal's approximate count of windows waiting on the
  activity queue, what the fleet page's tile shows), sampled by the worker every QUEUE_PROBE_S
  and kept per QUEUE_SLOT_S slot as the most seen in it. Every worker samples the same queue;
  the chart takes the most any worker saw in a slot.

A restarted worker with the same identity takes its earlier record's history back (`merge`).
"""

from __future__ import annotations

import math
from datetime import timedelta

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.service import RPCError

HOUR = 3600
HOURS = 24  # hours kept besides the current one
QUEUE_SLOT_S = 600  # one queue sample kept per 10 minutes
QUEUE_PROBE_S = 60.0  # how often a worker asks Temporal for the backlog
PROBE_TIMEOUT = timedelta(seconds=5)  # the worker publishes its record right after: not held long


class FleetHistory:
    def __init__(self) -> None:
        self.hours: dict[int, list] = {}  # hour start -> [windows, busy_s, failures]
        self.queue: dict[int, int] = {}  # slot start -> the most windows seen waiting
        self._busy_until = 0.0  # the end of the last busy stretch counted (no second count)

    def window(self, ok: bool, start: float, end: float) -> None:
        """A window ended at `end` (epoch s), stored (`ok`) or failed, after holding the worker
        since `start`."""
        row = self._hour(end)
        row[0 if ok else 2] += 1
        t = max(start, self._busy_until)
        while t < end:
            hour_end = (math.floor(t / HOUR) + 1) * HOUR
            piece = min(end, hour_end) - t
            self._hour(t)[1] += piece
            t += piece
        self._busy_until = max(self._busy_until, end)

    def queue_sample(self, waiting: int, now: float) -> None:
        slot = int(now // QUEUE_SLOT_S * QUEUE_SLOT_S)
        self.queue[slot] = max(self.queue.get(slot, 0), int(waiting))

    def _hour(self, t: float) -> list:
        return self.hours.setdefault(int(t // HOUR * HOUR), [0, 0.0, 0])

    def prune(self, now: float) -> None:
        oldest = (now // HOUR - HOURS) * HOUR
        for table in (self.hours, self.queue):
            for t in [t for t in table if t < oldest]:
                del table[t]

    def to_json(self, now: float) -> dict:
        self.prune(now)
        return {"hours": [[t, w, round(b, 1), f] for t, (w, b, f) in sorted(self.hours.items())],
                "queue": [[t, n] for t, n in sorted(self.queue.items())]}

    def merge(self, doc: dict | None, now: float) -> None:
        """Take back what an earlier record of this worker kept (a restart), adding to what this
        process has counted meanwhile."""
        doc = doc or {}
        for t, w, b, f in doc.get("hours") or []:
            row = self.hours.setdefault(int(t), [0, 0.0, 0])
            row[0], row[1], row[2] = row[0] + int(w), min(HOUR, row[1] + float(b)), row[2] + int(f)
        for t, n in doc.get("queue") or []:
            self.queue[int(t)] = max(self.queue.get(int(t), 0), int(n))
        self.prune(now)


async def queue_backlog(client, queue: str) -> int | None:
    """Windows waiting on the activity queue `queue` (Temporal's task queue stats); None where
    the server gives no stats."""
    try:
        resp = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
            namespace=client.namespace, task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY, report_stats=True), timeout=PROBE_TIMEOUT)
    except RPCError:
        return None
    return int(resp.stats.approximate_backlog_count) if resp.HasField("stats") else None
