"""When renders finish on a fleet of GPU workers: a small event simulation of the GPU queue.

Each render is a set of chains; a chain's windows run one after the other (the next one can be
taken `dispatch_s` after the previous one is stored: the chain's workflow task and the
activity's dispatch, as the workers measure it, else DISPATCH_S). A worker, too, takes its next
window `dispatch_s` after storing one: it completes the activity and polls again in that time,
whatever chain the next window is of (on the embedded stack with 4 workers and renders queued
ahead, counting that gap for the chain alone came out 12% short; bench/RESULTS.md).

A worker that is free takes a ready window from the render it has served least so far, as the
GPU queue's fairness keys do (one key per render: a short render is not stuck behind a long
one's backlog), and from that render the chain with the most windows left. A window holds the
worker for that worker's time for the render's kind of window.

Chain affinity (LONGTALK_AFFINITY_WAIT_S): a chain's next window is offered first to the worker
of its previous window; any other worker may take it only `affinity_s` after it was ready. With
more chains than workers that leaves workers idle while ready windows wait for a busy one (on the
embedded stack with 4 workers behind 2 renders the estimate came out 26% short without it).

Pure arithmetic, no I/O.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

# a chain's next window is taken this long after the previous one is stored, when no worker has
# measured it (longtalk.gpu_time.dispatch_gap): the embedded stack's, bench/estimate.py
DISPATCH_S = 0.15


@dataclass
class SimRender:
    name: str
    chains: list[int]  # windows left in each chain
    window_s: list[float]  # per worker: seconds one window holds it
    start_s: float = 0.0  # its first window can be taken this long from now
    done_s: float = 0.0  # out: when its last window is stored
    on_worker: list[int] = field(default_factory=list)  # out: windows each worker rendered


def simulate(renders: list[SimRender], workers: int, dispatch_s: float = DISPATCH_S,
             affinity_s: float = 0.0) -> None:
    """Fill in each render's done_s and on_worker (windows per worker), all workers free now."""
    if workers < 1:
        raise ValueError("at least one worker")
    left = [list(r.chains) for r in renders]
    ready = [[r.start_s] * len(r.chains) for r in renders]
    last = [[-1] * len(r.chains) for r in renders]  # the worker of each chain's previous window
    served = [0] * len(renders)
    for r in renders:
        r.done_s, r.on_worker = r.start_s, [0] * workers
    free = [(0.0, w) for w in range(workers)]
    heapq.heapify(free)
    remaining = sum(sum(c) for c in left)
    while remaining:
        t, w = heapq.heappop(free)
        best = None
        soonest = None
        for i, chains in enumerate(left):
            for c, n in enumerate(chains):
                if not n:
                    continue
                # when this worker may take it: at once if it is the chain's own worker (or the
                # chain has none yet), else once the chain's worker had its affinity wait
                mine = last[i][c] in (-1, w)
                at = ready[i][c] if mine else ready[i][c] + affinity_s
                if at > t:
                    soonest = at if soonest is None else min(soonest, at)
                    continue
                rank = (served[i], i, -n)
                if best is None or rank < best[0]:
                    best = (rank, i, c)
        if best is None:  # nothing ready: this worker waits for the next chain to be ready
            heapq.heappush(free, (soonest, w))
            continue
        _, i, c = best
        end = t + renders[i].window_s[w]
        left[i][c] -= 1
        remaining -= 1
        served[i] += 1
        ready[i][c] = end + dispatch_s
        last[i][c] = w
        renders[i].done_s = max(renders[i].done_s, end)
        renders[i].on_worker[w] += 1
        heapq.heappush(free, (end + dispatch_s, w))
