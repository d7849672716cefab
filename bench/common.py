"""What the benchmarks share (bench/run.py and bench/fleet.py): the progress line on stderr,
the text table of the reports, and spans read out of Temporal histories.

bench/run.py imports bench/fleet.py (its `fleet` command); both import this module, which
imports neither: no loop (tests/test_layers.py checks).
"""

from __future__ import annotations

import sys
import time


def log(msg: str, who: str = "bench") -> None:
    print(f"[{who} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def table(headers: list[str], rows: list[list], right: bool = True) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if j and right else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def event_time(event) -> float:
    """A history event's time, in seconds since the epoch."""
    return event.event_time.seconds + event.event_time.nanos / 1e9


def activity_spans(events) -> list[dict]:
    """Each activity of a history: name, scheduled, started, completed times."""
    from temporalio.api.enums.v1 import EventType

    acts: dict[int, dict] = {}
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            acts[e.event_id] = {"name": e.activity_task_scheduled_event_attributes.activity_type.name,
                                "scheduled": event_time(e)}
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            a = acts[e.activity_task_started_event_attributes.scheduled_event_id]
            a["started"] = event_time(e)
            a["attempt"] = e.activity_task_started_event_attributes.attempt
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            acts[e.activity_task_completed_event_attributes.scheduled_event_id]["completed"] = event_time(e)
    return list(acts.values())


def workflow_task_stats(events) -> dict:
    from temporalio.api.enums.v1 import EventType

    sched, started, n, queue_s, run_s = {}, {}, 0, 0.0, 0.0
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            sched[e.event_id] = event_time(e)
        elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            started[e.event_id] = event_time(e)
            queue_s += event_time(e) - sched[e.workflow_task_started_event_attributes.scheduled_event_id]
        elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            n += 1
            run_s += event_time(e) - started[e.workflow_task_completed_event_attributes.started_event_id]
    return {"count": n, "queue_s": queue_s, "run_s": run_s}


def signal_spans(events) -> list[tuple[float, float]]:
    from temporalio.api.enums.v1 import EventType

    init: dict[int, float] = {}
    out = []
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED:
            init[e.event_id] = event_time(e)
        elif e.event_type == EventType.EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_SIGNALED:
            i = e.external_workflow_execution_signaled_event_attributes.initiated_event_id
            out.append((init[i], event_time(e)))
    return out


async def workflow_span(client, render_id: str) -> tuple[float, float]:
    """Start and close of a (completed) workflow, from its history."""
    from temporalio.api.enums.v1 import EventType

    events = (await client.get_workflow_handle(render_id).fetch_history()).events
    start = next(event_time(e) for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED)
    end = next(event_time(e) for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED)
    return start, end
