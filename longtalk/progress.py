"""A render's progress, kept by its RenderVideo workflow: pure bookkeeping, no Temporal calls.

The workflow holds one `RenderProgress`, tells it what happened (a stage began, windows
finished, a GPU began the first window) and asks it what to publish: whether a progress
upsert is due, the search-attribute values, the sentence for the Temporal UI, the `progress`
query's answer. Times come in as arguments (the workflow's clock), so this module is tested
like windows.py, without a server.

Rule (issue 16): nothing that decides a command may read the clock. A query that reaches a
worker while signals wait for their workflow task applies them at the workflow time of the task
before, and a replay applies them later; only the window count decides when progress is
upserted (`upsert_due`). The time-based rule of runs started before PROGRESS_BY_COUNT_PATCH
stays here for their histories (`by_count=False`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from . import visibility as vis
from .payloads import Progress, WindowDone

WAITING = "waiting"  # planned; no GPU has begun a window yet
RENDERING = ("render", WAITING)  # the stages in which windows finish


def eta_s(busy_s: float, done: int, total: int) -> float:
    """Seconds left for the `total - done` windows still to render, at the rate the `done`
    windows took in the `busy_s` seconds since a GPU began. The `progress` query and the API's
    /status (from visibility, without a worker) both answer with it."""
    return round(max(0.0, busy_s) / max(1, done) * (total - done), 1)


@dataclass
class RenderProgress:
    render_id: str = ""
    by_count: bool = True  # progress upserts follow the window count (runs before the patch: time too)
    stage: str = "queued"
    total: int = 0
    chains: list[list[int]] = field(default_factory=list)  # [first, last] window of each chain
    warnings: list[str] = field(default_factory=list)
    started: datetime | None = None  # the workflow's first task
    render_started: datetime | None = None  # the windows were planned
    gpu_started_at: str = ""  # a GPU began the first window (the gpu_started signal's time)
    gpu_started: datetime | None = None  # runs without that signal: the first finished window's start
    done: set[int] = field(default_factory=set)
    details: dict[int, WindowDone] = field(default_factory=dict)
    rendered: int = 0  # windows rendered by this run (the rest were found stored)
    current: int | None = None
    last_window: int = -1
    upserted_done: int = 0
    upserted_at: datetime | None = None

    # ---- what happened ------------------------------------------------------------
    def windows_finished(self, windows: list[WindowDone], now: datetime) -> None:
        """Finished windows from a chain (a window reported twice counts once)."""
        for w in windows:
            if w.index in self.done:
                continue
            self.done.add(w.index)
            self.details[w.index] = w
            if self.gpu_started is None and w.rendered:
                self.gpu_started = now - timedelta(seconds=w.render_s)
            self.last_window = w.index
            if w.rendered:
                self.rendered += 1
            self.current = w.index + 1 if w.index + 1 < self.total else None

    def upserted(self, now: datetime) -> None:
        """The workflow has just published these values."""
        self.upserted_done, self.upserted_at = len(self.done), now

    # ---- what to publish ----------------------------------------------------------
    def upsert_due(self, now: datetime) -> bool:
        """Whether finished windows call for a progress upsert: in a rendering stage, past the
        next multiple of the step (about 1% of the windows)."""
        if self.stage not in RENDERING:
            return False
        step = vis.progress_step(self.total)
        if self.by_count:
            return len(self.done) // step > self.upserted_done // step
        return (len(self.done) - self.upserted_done >= step and self.upserted_at is not None
                and now - self.upserted_at >= timedelta(seconds=vis.PROGRESS_UPSERT_S))

    def attributes(self) -> list:
        """The search-attribute updates that publish stage and window counts."""
        return [vis.STAGE_KEY.value_set(self.stage), vis.WINDOWS_DONE_KEY.value_set(len(self.done)),
                vis.WINDOWS_TOTAL_KEY.value_set(self.total)]

    def sentence(self) -> str:
        """The render in one sentence (the Temporal UI's current details)."""
        done, total = len(self.done), self.total
        if self.stage == "render":
            return f"Rendering: {done} of {total} windows done ({self.rendered} rendered by this run)."
        if self.stage == WAITING:
            return f"Waiting for a GPU: {done} of {total} windows done."
        if self.stage in ("stitch", "publish"):
            return f"All {total} windows rendered; {self.stage}ing the video."
        if self.stage == "done":
            return f"Done: {total} windows, the video is published."
        if self.stage in ("failed", "cancelled"):
            return f"{self.stage.capitalize()}, with {done} of {total} windows done."
        return f"{self.stage.capitalize()}: preparing the inputs."

    def gpu_began(self) -> datetime | None:
        """When a GPU began the first window: its own word (the gpu_started signal), else
        the first finished window's start; None before either."""
        return datetime.fromisoformat(self.gpu_started_at) if self.gpu_started_at else self.gpu_started

    def queued_s(self, workflow_start: datetime) -> float | None:
        """From the workflow's start to the first GPU work (RunPod's delayTime), if known."""
        began = self.gpu_began()
        if began is None:
            return None
        if not self.gpu_started_at:  # the window's own start is on the workflow's clock
            workflow_start = self.started or workflow_start
        return round(max(0.0, (began - workflow_start).total_seconds()), 3)

    def rendering(self) -> list[int]:
        """Each chain's first unfinished window, while windows render."""
        if self.stage != "render":
            return []
        out = []
        for first, last in self.chains:
            k = next((k for k in range(first, last + 1) if k not in self.done), None)
            if k is not None:
                out.append(k)
        return out

    def snapshot(self, now: datetime) -> Progress:
        """The `progress` query's answer."""
        elapsed = (now - self.started).total_seconds() if self.started else 0.0
        eta = None
        began = self.gpu_began() or self.render_started
        if self.stage == "render" and began and self.rendered:
            eta = eta_s((now - began).total_seconds(), len(self.done), self.total)
        elif self.stage == "done":
            eta = 0.0
        return Progress(
            render_id=self.render_id, stage=self.stage, windows_done=len(self.done), windows_total=self.total,
            current_window=self.current if self.stage == "render" else None,
            elapsed_s=round(elapsed, 3), eta_s=eta,
            windows_rendered=self.rendered, windows_finished=sorted(self.done),
            chains=[list(c) for c in self.chains], rendering=self.rendering(),
            windows_detail=[self.details[k] for k in sorted(self.details)],
            latest_window=self.last_window, warnings=list(self.warnings),
        )
