"""RenderProgress: the bookkeeping of RenderVideo, tested without a server (like windows.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from longtalk import visibility as vis
from longtalk.payloads import WindowDone
from longtalk.progress import WAITING, RenderProgress, eta_s
from workflows.render import chain_index, chain_workflow_id

T0 = datetime(2026, 12, 6, 17, 30, tzinfo=timezone.utc)


def done(*ks, rendered=True, render_s=2.0):
    return [WindowDone(index=k, rendered=rendered, render_s=render_s) for k in ks]


def progress(total=46, **kw) -> RenderProgress:
    p = RenderProgress(render_id="r", total=total, stage="render", started=T0, render_started=T0, **kw)
    p.chains = [[0, total - 1]]
    p.upserted(T0)
    return p


def test_a_window_reported_twice_counts_once():
    p = progress()
    p.windows_finished(done(0, 1), T0)
    p.windows_finished(done(1, 2), T0)
    assert p.done == {0, 1, 2} and p.rendered == 3 and p.last_window == 2 and p.current == 3
    p.windows_finished(done(3, rendered=False), T0)  # found stored: done, not rendered by this run
    assert p.rendered == 3 and len(p.done) == 4


@pytest.mark.parametrize("total", [5, 46, 100, 1250, 3000])
def test_upserts_follow_the_count_whatever_the_clock(total):
    """The decision never reads the clock (issue 16): the same windows give the same upserts
    at any time, one per multiple of the step passed."""
    step = vis.progress_step(total)
    for clock in (T0, T0 + timedelta(hours=5), T0 - timedelta(days=1)):
        p = progress(total)
        decisions = []
        for k in range(total):
            p.windows_finished(done(k), clock)
            due = p.upsert_due(clock)
            decisions.append(due)
            if due:
                p.upserted(clock)
        assert sum(decisions) == total // step
        assert [k for k, d in enumerate(decisions) if d] == [m * step - 1 for m in range(1, total // step + 1)]


def test_no_progress_upsert_outside_the_rendering_stages():
    p = progress()
    p.stage = "stitch"
    p.windows_finished(done(0, 1, 2), T0)
    assert not p.upsert_due(T0)
    p.stage = WAITING  # windows found stored while no GPU has begun
    assert p.upsert_due(T0)


def test_the_time_rule_of_older_runs_still_decides_their_replays():
    p = progress(by_count=False)
    p.windows_finished(done(0), T0 + timedelta(seconds=1))
    assert not p.upsert_due(T0 + timedelta(seconds=1))  # under PROGRESS_UPSERT_S
    assert p.upsert_due(T0 + timedelta(seconds=vis.PROGRESS_UPSERT_S))


def test_snapshot_sentence_and_queue_time():
    p = progress(total=4)
    p.chains = [[0, 1], [2, 3]]
    p.windows_finished(done(0, 2), T0 + timedelta(seconds=10))
    snap = p.snapshot(T0 + timedelta(seconds=20))
    assert (snap.windows_done, snap.windows_total, snap.rendering, snap.elapsed_s) == (2, 4, [1, 3], 20.0)
    # the rate since a GPU began (the first finished window started at T0 + 8 s): 6 s per
    # window, two to go; the API's /status says the same from visibility (api.service)
    assert snap.eta_s == 12.0 == eta_s(12.0, 2, 4)
    assert p.sentence() == "Rendering: 2 of 4 windows done (2 rendered by this run)."
    assert p.queued_s(T0) == 8.0  # the first finished window began 2 s before it was reported
    p.gpu_started_at = (T0 + timedelta(seconds=3)).isoformat()
    assert p.queued_s(T0) == 3.0  # the GPU's own word wins
    assert p.snapshot(T0 + timedelta(seconds=20)).eta_s == 17.0  # for the ETA too: 8.5 s per window
    p.stage = "done"
    assert p.snapshot(T0).eta_s == 0.0 and p.rendering() == []


def test_chain_index_reads_back_chain_workflow_id():
    for k in (0, 7, 123):
        assert chain_index(chain_workflow_id("r-1/x", k)) == k
    assert chain_index("r-1") is None and chain_index("r/chain-x") is None


def test_activities_are_registered_under_their_method_names():
    """The workflows call activities by method reference and look their options up by the
    method's name: the name Temporal knows must be that name."""
    from activities.cpu import CpuActivities
    from activities.gpu import GpuActivities

    found = {}
    for cls in (CpuActivities, GpuActivities):
        for name, fn in vars(cls).items():
            defn = getattr(fn, "__temporal_activity_definition", None)
            if defn is not None:
                found[name] = defn.name
    assert {"ingest", "plan", "encode_audio", "stitch", "publish", "discard", "record_cancelled",
            "render_window"} <= set(found), found
    assert all(name == wire for name, wire in found.items()), found
