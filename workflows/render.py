"""RenderVideo: ingest -> plan -> render windows (chains) -> stitch -> publish.

Deterministic and small: no I/O here. Windows of one chain run in order in a child
workflow (RenderChain) that continues-as-new every `windows_per_run` windows, so an hour
of audio (about 1250 windows) stays far from Temporal's history limits. Chains report
each finished window to the parent with a signal, which feeds the `progress` query.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError, ApplicationError, CancelledError, ChildWorkflowError, TimeoutType,
)
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from longtalk import activity_options as options
    from longtalk.activity_options import CPU_RETRY, GPU_RETRY  # noqa: F401 - re-exported (bench)
    from longtalk.payloads import (
        CancelledInput, ChainInput, ChainResult, DiscardInput, EncodeAudioInput, GpuStarted, IngestResult, Plan,
        PlanInput, Progress, PublishInput,
        RenderContext, RenderRequest, RenderResult, RenderWindowInput, RenderWindowResult,
        StitchInput, StitchResult, WindowDone, WindowsDone,
    )
    from longtalk.errors import InputError
    from longtalk import visibility as vis
    from longtalk.windows import window_count


REPORT_EVERY = timedelta(seconds=1)  # progress signals from a chain, batched at most this often
# workflow.patched ids of the visibility release: search attributes, summaries, details
VISIBILITY_PATCH = "visibility-v1"  # RenderVideo
WINDOW_SUMMARY_PATCH = "window-summary-v1"  # RenderChain
CHAIN_CANCEL_PATCH = "chain-cancel-v1"  # RenderChain: a cancel that met a finishing window stops the chain
# RenderVideo: the output's AAC is encoded by its own activity beside the windows, not by ingest
AUDIO_BESIDE_PATCH = "audio-beside-windows-v1"
# RenderVideo: after plan the stage is "waiting" (for a GPU) until a GPU worker says it began a
# window (signal gpu_started); then "render", and the memo records when (RunPod's delayTime)
GPU_START_PATCH = "gpu-start-v1"
WAITING = "waiting"
# No command may depend on workflow time (issue 16): a query that a worker answers while
# signals wait for their workflow task applies those signals at once, at the workflow time
# of the previous task, and the task that follows carries nothing new; a replay applies them
# in that task, at its own time. Decisions that read workflow.now() then differ between the
# run and its replay. So progress upserts follow the window count (RenderVideo) and a chain
# reports every window (RenderChain), in runs started from these patches on.
PROGRESS_BY_COUNT_PATCH = "progress-by-count-v1"  # RenderVideo
REPORT_EVERY_WINDOW_PATCH = "report-every-window-v1"  # RenderChain


def _is_input_error(exc: BaseException) -> bool:
    cause = exc.cause if isinstance(exc, ActivityError) else None
    return isinstance(cause, ApplicationError) and cause.type == InputError.__name__


def chain_workflow_id(render_id: str, chain: int) -> str:
    return f"{render_id}/chain-{chain:03d}"


@workflow.defn(name="RenderVideo")
class RenderVideo:
    def __init__(self) -> None:
        self._render_id = ""
        self._stage = "queued"
        self._total = 0
        self._done: set[int] = set()
        self._rendered = 0
        self._current: int | None = None
        self._started = None
        self._render_started = None
        self._new_options = True
        self._visible = False  # keeps its search attributes, summaries and details current
        self._chains: list[list[int]] = []
        self._details: dict[int, WindowDone] = {}
        self._last_window = -1
        self._upserted_at = None
        self._upserted_done = 0
        self._gpu_started = None  # when the first finished window began on a GPU
        self._warnings: list[str] = []  # the submission's, then what ingest found
        self._gpu_signal = False  # this run waits in stage "waiting" for the gpu_started signal
        self._by_count = False  # progress upserts follow the window count, not workflow time
        self._gpu_started_at = ""  # when the first GPU began one of its windows (the signal's time)

    def _activity(self, name: str, req: RenderRequest) -> dict:
        """The options of CPU activity `name`: release de3015c's for the runs it started."""
        if self._new_options:
            return options.cpu(name, req.timeouts)
        return options.legacy_cpu(name, req.timeouts.heartbeat_s)

    @workflow.run
    async def run(self, req: RenderRequest) -> RenderResult:
        self._render_id = req.render_id
        self._started = workflow.now()
        # decided once, before the first command: a de3015c history replays it as False
        self._new_options = workflow.patched(options.ACTIVITY_OPTIONS_PATCH)
        self._visible = workflow.patched(VISIBILITY_PATCH)
        self._gpu_signal = self._visible and workflow.patched(GPU_START_PATCH)
        self._by_count = self._visible and workflow.patched(PROGRESS_BY_COUNT_PATCH)
        try:
            return await self._run(req)
        except ActivityError as exc:
            if isinstance(exc.cause, CancelledError):  # cancelled while ingesting or stitching
                await self._record_cancelled(req)
                raise
            stage = self._stage
            self._set_stage("failed")
            if stage in ("ingest", "plan") and _is_input_error(exc):
                # bad input found while decoding: drop what this render stored, so a refused
                # job costs nothing (the error, with the field's name, goes to the caller)
                await workflow.execute_activity(
                    "discard", DiscardInput(render_id=req.render_id, reason=str(exc.cause)),
                    task_queue=workflow.info().task_queue, **self._activity("discard", req))
            raise
        except ChildWorkflowError as exc:
            if isinstance(exc.cause, CancelledError):  # the cancel reached us through a chain
                await self._record_cancelled(req)
            else:
                self._set_stage("failed")
            raise
        except ApplicationError:
            self._set_stage("failed")
            raise
        except asyncio.CancelledError:
            await self._record_cancelled(req)
            raise

    def _set_stage(self, stage: str) -> None:
        """A stage change: the progress query, the search attributes and the Temporal UI's
        current details all say it (the last two in renders started by this release on)."""
        self._stage = stage
        if self._visible:
            self._upsert_progress()

    def _summary(self, text: str) -> dict:
        return {"summary": text} if self._visible else {}

    def _upsert_progress(self) -> None:
        workflow.upsert_search_attributes([
            vis.STAGE_KEY.value_set(self._stage), vis.WINDOWS_DONE_KEY.value_set(len(self._done)),
            vis.WINDOWS_TOTAL_KEY.value_set(self._total)])
        self._upserted_at, self._upserted_done = workflow.now(), len(self._done)
        workflow.set_current_details(self._sentence())

    def _sentence(self) -> str:
        done, total = len(self._done), self._total
        if self._stage == "render":
            return f"Rendering: {done} of {total} windows done ({self._rendered} rendered by this run)."
        if self._stage == WAITING:
            return f"Waiting for a GPU: {done} of {total} windows done."
        if self._stage in ("stitch", "publish"):
            return f"All {total} windows rendered; {self._stage}ing the video."
        if self._stage == "done":
            return f"Done: {total} windows, the video is published."
        if self._stage in ("failed", "cancelled"):
            return f"{self._stage.capitalize()}, with {done} of {total} windows done."
        return f"{self._stage.capitalize()}: preparing the inputs."

    async def _record_cancelled(self, req: RenderRequest) -> None:
        """The manifest of a cancelled render says which windows were finished; they stay
        stored, so submitting the same id again resumes after them."""
        stage = self._stage
        self._set_stage("cancelled")
        await workflow.execute_activity(
            "record_cancelled",
            CancelledInput(render_id=req.render_id, windows_total=self._total,
                           windows_finished=sorted(self._done), stage=stage),
            task_queue=workflow.info().task_queue, **self._activity("record_cancelled", req))

    async def _run(self, req: RenderRequest) -> RenderResult:
        queue = workflow.info().task_queue
        # decided before the first command: runs started earlier encode the audio in ingest
        audio_beside = workflow.patched(AUDIO_BESIDE_PATCH)
        if audio_beside:
            req = dataclasses.replace(req, final_audio_beside=True)
        self._warnings = list(req.warnings)
        self._set_stage("ingest")
        ingest: IngestResult = await workflow.execute_activity(
            "ingest", req, result_type=IngestResult, task_queue=queue, **self._activity("ingest", req),
            **self._summary("ingest: fetch, check and decode the inputs"))
        if ingest.warnings:  # the result says them too (an activity input: no command changes)
            self._warnings += ingest.warnings
            req = dataclasses.replace(req, warnings=list(self._warnings))
        self._set_stage("plan")
        plan: Plan = await workflow.execute_activity(
            "plan", PlanInput(request=req, ingest=ingest), result_type=Plan, task_queue=queue,
            **self._activity("plan", req), **self._summary("plan: windows and chains"))
        self._total = plan.windows
        self._chains = [[c.first, c.last] for c in plan.chains]
        context = RenderContext(
            render_id=req.render_id, backend=req.backend, spec=req.spec,
            total_frames=plan.total_frames, reference_key=ingest.reference_key,
            audio_keys=ingest.audio_keys, source_key=ingest.source_key,
            source_frames=ingest.source_frames,
        )
        self._render_started = workflow.now()
        self._set_stage(WAITING if self._gpu_signal and not self._gpu_started_at else "render")
        # the output's AAC, encoded while the GPUs render (started after plan: a render that
        # plan refuses leaves nothing behind); stitch needs it, so it is awaited with the chains
        beside = [workflow.execute_activity(
            "encode_audio", EncodeAudioInput(request=req, total_frames=plan.total_frames), task_queue=queue,
            **self._activity("encode_audio", req), **self._summary("encode the output's audio (AAC)"))
        ] if audio_beside else []
        await asyncio.gather(*beside, *[
            workflow.execute_child_workflow(
                RenderChain.run,
                ChainInput(context=context, chain=chain, next_window=chain.first,
                           parent_id=workflow.info().workflow_id,
                           windows_per_run=req.windows_per_run, gpu_queue=req.gpu_queue,
                           timeouts=req.timeouts),
                id=chain_workflow_id(req.render_id, chain.index), task_queue=queue,
                **({"static_summary": f"Chain {chain.index + 1} of {len(plan.chains)} of render "
                                      f"{req.render_id}: windows {chain.first + 1}-{chain.last + 1} "
                                      f"of {plan.windows}, in order"} if self._visible else {}),
            )
            for chain in plan.chains
        ])
        self._set_stage("stitch")
        stitched: StitchResult = await workflow.execute_activity(
            "stitch", StitchInput(render_id=req.render_id, windows=plan.windows,
                                  total_frames=plan.total_frames, spec=req.spec),
            result_type=StitchResult, task_queue=queue, **self._activity("stitch", req),
            **self._summary(f"stitch {plan.windows} windows into {plan.total_frames} frames"))
        self._set_stage("publish")
        result: RenderResult = await workflow.execute_activity(
            "publish", PublishInput(request=req, video_key=stitched.video_key,
                                    total_frames=plan.total_frames, windows=plan.windows),
            result_type=RenderResult, task_queue=queue, **self._activity("publish", req),
            **self._summary("publish: mux the audio, store the video"))
        self._set_stage("done")
        if self._gpu_started_at:
            started = datetime.fromisoformat(self._gpu_started_at) - workflow.info().workflow_start_time
            result = dataclasses.replace(result, queued_s=round(max(0.0, started.total_seconds()), 3))
        elif self._visible and self._gpu_started is not None:
            result = dataclasses.replace(
                result, queued_s=round(max(0.0, (self._gpu_started - self._started).total_seconds()), 3))
        return result

    @workflow.signal(name="gpu_started")
    def gpu_started(self, started: GpuStarted) -> None:
        """A GPU worker began one of this render's windows: it has left the queue. Runs that
        wait for this signal (GPU_START_PATCH) record the first one; others ignore it (a new
        GPU worker may send it to a run started by an older release)."""
        if not self._gpu_signal or self._gpu_started_at:
            return
        self._gpu_started_at = started.at
        workflow.upsert_memo({"gpu_started_at": started.at})
        if self._stage == WAITING:
            self._set_stage("render")

    @workflow.signal(name="windows_done")
    def windows_done(self, batch: WindowsDone) -> None:
        for done in batch.windows:
            if done.index in self._done:
                continue
            self._done.add(done.index)
            self._details[done.index] = done
            if self._gpu_started is None and done.rendered:
                self._gpu_started = workflow.now() - timedelta(seconds=done.render_s)
            self._last_window = done.index
            if done.rendered:
                self._rendered += 1
            self._current = done.index + 1 if done.index + 1 < self._total else None
        if self._visible and self._stage in ("render", WAITING) and self._progress_due():
            self._upsert_progress()

    def _progress_due(self) -> bool:
        """Whether the finished windows have moved far enough for a progress upsert: past the
        next multiple of the step (about 1% of the windows). Runs of releases before
        PROGRESS_BY_COUNT_PATCH also waited PROGRESS_UPSERT_S of workflow time (their
        histories replay only with that rule)."""
        step = vis.progress_step(self._total)
        if self._by_count:
            return len(self._done) // step > self._upserted_done // step
        return (len(self._done) - self._upserted_done >= step
                and workflow.now() - self._upserted_at >= timedelta(seconds=vis.PROGRESS_UPSERT_S))

    @workflow.query(name="progress")
    def progress(self) -> Progress:
        now = workflow.now()
        elapsed = (now - self._started).total_seconds() if self._started else 0.0
        eta = None
        remaining = self._total - len(self._done)
        if self._stage == "render" and self._render_started and self._rendered:
            per_window = (now - self._render_started).total_seconds() / max(1, len(self._done))
            eta = remaining * per_window
        elif self._stage in ("stitch", "publish", "done"):
            eta = 0.0 if self._stage == "done" else None
        return Progress(
            render_id=self._render_id, stage=self._stage, windows_done=len(self._done),
            windows_total=self._total,
            current_window=self._current if self._stage == "render" else None,
            elapsed_s=round(elapsed, 3), eta_s=None if eta is None else round(eta, 1),
            windows_rendered=self._rendered, windows_finished=sorted(self._done),
            chains=[list(c) for c in self._chains], rendering=self._rendering(),
            windows_detail=[self._details[k] for k in sorted(self._details)],
            latest_window=self._last_window, warnings=list(self._warnings),
        )

    def _rendering(self) -> list[int]:
        """Each chain's first unfinished window, while windows render."""
        if self._stage != "render":
            return []
        out = []
        for first, last in self._chains:
            k = next((k for k in range(first, last + 1) if k not in self._done), None)
            if k is not None:
                out.append(k)
        return out


@workflow.defn(name="RenderChain")
class RenderChain:
    """Windows first..last of one chain, in order; continues-as-new every N windows."""

    @workflow.run
    async def run(self, inp: ChainInput) -> ChainResult:
        parent = workflow.get_external_workflow_handle(inp.parent_id)
        pending: list[WindowDone] = []
        sending: list[asyncio.Task] = []
        last_report = workflow.now()

        def report() -> None:
            # the signal goes out beside the next window's activity, not before it
            if pending:
                sending.append(asyncio.create_task(parent.signal("windows_done", WindowsDone(list(pending)))))
                pending.clear()

        # decided before the first command: a run that release de3015c started keeps its options
        if workflow.patched(options.WINDOW_OPTIONS_PATCH):
            window_options = options.render_window(inp.timeouts)
        else:
            window_options = options.legacy_render_window(inp.timeouts.heartbeat_s)
        summaries = workflow.patched(WINDOW_SUMMARY_PATCH)
        every_window = workflow.patched(REPORT_EVERY_WINDOW_PATCH)
        affinity = workflow.patched(options.CHAIN_AFFINITY_PATCH) and inp.timeouts.affinity_s > 0
        affinity_queue = inp.affinity_queue if affinity else ""
        windows_total = window_count(inp.context.total_frames, inp.context.window_params)
        ran = 0
        for k in range(inp.next_window, inp.chain.last + 1):
            if ran >= inp.windows_per_run:
                report()
                await asyncio.gather(*sending)
                workflow.continue_as_new(dataclasses.replace(inp, next_window=k, affinity_queue=affinity_queue))
            window_input = RenderWindowInput(context=inp.context, index=k, chain_first=inp.chain.first)
            extra = {"summary": f"window {k + 1}/{windows_total}"} if summaries else {}
            try:
                result = None
                if affinity_queue:
                    result = await self._on_last_worker(window_input, affinity_queue, inp.timeouts.affinity_s,
                                                        {**window_options, **extra})
                if result is None:
                    result = await workflow.execute_activity(
                        "render_window", window_input, result_type=RenderWindowResult, task_queue=inp.gpu_queue,
                        **window_options, **extra)
            except (asyncio.CancelledError, ActivityError):
                report()  # what is finished still reaches the parent's progress
                await asyncio.gather(*sending, return_exceptions=True)
                raise
            ran += 1
            if affinity:
                affinity_queue = result.worker_queue
            pending.append(WindowDone(index=k, rendered=result.rendered, attempt=result.attempt,
                                      worker=result.worker, render_s=round(result.render_s, 3),
                                      frames=result.frames))
            # a cancel that arrived while the window was finishing: the window's result came
            # back instead of the cancel (the activity completed first); stop here all the same
            cancelling = asyncio.current_task().cancelling() > 0
            if cancelling and workflow.patched(CHAIN_CANCEL_PATCH):
                report()
                await asyncio.gather(*sending, return_exceptions=True)
                raise asyncio.CancelledError()
            # every window (the time-batched reports of older runs read workflow time)
            if every_window or workflow.now() - last_report >= REPORT_EVERY:
                report()
                last_report = workflow.now()
        report()
        await asyncio.gather(*sending)
        return ChainResult(chain=inp.chain.index, windows=inp.chain.last - inp.chain.first + 1)

    @staticmethod
    async def _on_last_worker(window_input: RenderWindowInput, queue: str, wait_s: int,
                              window_options: dict) -> RenderWindowResult | None:
        """The window on the worker that rendered the chain's previous window (its own task
        queue), whose ComfyUI still holds this render's models and reference; None when that
        worker does not take it within `wait_s` (gone, or busy): then any worker will."""
        try:
            return await workflow.execute_activity(
                "render_window", window_input, result_type=RenderWindowResult, task_queue=queue,
                schedule_to_start_timeout=timedelta(seconds=wait_s), **window_options)
        except ActivityError as exc:
            cause = exc.cause
            if isinstance(cause, ActivityTimeout) and cause.type == TimeoutType.SCHEDULE_TO_START:
                return None
            raise
