"""RenderVideo: ingest -> plan -> render windows (chains) -> stitch -> publish.

Deterministic and small: no I/O here. Windows of one chain run in order in a child
workflow (RenderChain) that continues-as-new every `windows_per_run` windows, so an hour
of audio (about 1250 windows) stays far from Temporal's history limits. Chains report
each finished window to the parent with a signal, which feeds the `progress` query; the
bookkeeping (counts, stage sentence, when to publish) is `longtalk.progress.RenderProgress`.

Versioning (README, "Upgrading"): every change of the commands is a `workflow.patched` id
below; ids that every supported release has taken are `deprecate_patch`ed, their old branch
gone. No command depends on workflow time (issue 16, see longtalk.progress).
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError, ApplicationError, CancelledError, ChildWorkflowError, TimeoutType,
)
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from activities.cpu import CpuActivities
    from activities.gpu import GpuActivities
    from longtalk import activity_options as options
    from longtalk.activity_options import ActivityOptions
    from longtalk.payloads import (
        CancelledInput, ChainInput, ChainResult, DiscardInput, EncodeAudioInput, GpuStarted, IngestResult, Plan,
        PlanInput, Progress, PublishInput, RenderContext, RenderRequest, RenderResult, RenderWindowInput,
        RenderWindowResult, StitchInput, StitchResult, WindowDone, WindowsDone,
    )
    from longtalk.errors import InputError
    from longtalk.progress import WAITING, RenderProgress
    from longtalk.windows import window_count


REPORT_EVERY = timedelta(seconds=1)  # runs before REPORT_EVERY_WINDOW_PATCH: chain reports batched by time
# ---- workflow.patched ids still in use --------------------------------------------------------
CHAIN_CANCEL_PATCH = "chain-cancel-v1"  # RenderChain: a cancel that met a finishing window stops the chain
# RenderVideo: the output's AAC is encoded by its own activity beside the windows, not by ingest
AUDIO_BESIDE_PATCH = "audio-beside-windows-v1"
# RenderVideo: after plan the stage is "waiting" (for a GPU) until a GPU worker says it began a
# window (signal gpu_started); then "render", and the memo records when (RunPod's delayTime)
GPU_START_PATCH = "gpu-start-v1"
# No command may depend on workflow time (issue 16): progress upserts follow the window count
# (RenderVideo) and a chain reports every window (RenderChain)
PROGRESS_BY_COUNT_PATCH = "progress-by-count-v1"  # RenderVideo
REPORT_EVERY_WINDOW_PATCH = "report-every-window-v1"  # RenderChain
# ---- deprecated: taken by every release the policy supports (their old branch is gone) --------
VISIBILITY_PATCH = "visibility-v1"  # RenderVideo: search attributes, summaries, current details
WINDOW_SUMMARY_PATCH = "window-summary-v1"  # RenderChain: "window k/n" activity summaries


def _is_input_error(exc: BaseException) -> bool:
    cause = exc.cause if isinstance(exc, ActivityError) else None
    return isinstance(cause, ApplicationError) and cause.type == InputError.__name__


def chain_workflow_id(render_id: str, chain: int) -> str:
    return f"{render_id}/chain-{chain:03d}"


def chain_index(workflow_id: str) -> int | None:
    """The chain number of a chain's workflow id (chain_workflow_id's inverse), else None."""
    _, sep, tail = workflow_id.rpartition("/chain-")
    return int(tail) if sep and tail.isdigit() else None


def _activity(method, arg, opts: ActivityOptions, queue: str, summary: str | None = None):
    """An activity by method reference (its name and result type come from the method), with
    typed options."""
    return workflow.execute_activity_method(
        method, arg, task_queue=queue, start_to_close_timeout=opts.start_to_close,
        schedule_to_close_timeout=opts.schedule_to_close, schedule_to_start_timeout=opts.schedule_to_start,
        heartbeat_timeout=opts.heartbeat, retry_policy=opts.retry_policy, cancellation_type=opts.cancellation,
        summary=summary)


@workflow.defn(name="RenderVideo")
class RenderVideo:
    def __init__(self) -> None:
        self._progress = RenderProgress()
        self._gpu_signal = False  # this run waits in stage "waiting" for the gpu_started signal
        self._queue = ""

    def _cpu(self, method, arg, req: RenderRequest, summary: str):
        return _activity(method, arg, options.cpu(method.__name__, req.timeouts), self._queue, summary)

    @workflow.run
    async def run(self, req: RenderRequest) -> RenderResult:
        self._queue = workflow.info().task_queue
        p = self._progress
        p.render_id, p.started = req.render_id, workflow.now()
        # decided once, before the first command (a run of an older release replays them False)
        workflow.deprecate_patch(options.ACTIVITY_OPTIONS_PATCH)
        workflow.deprecate_patch(VISIBILITY_PATCH)
        self._gpu_signal = workflow.patched(GPU_START_PATCH)
        p.by_count = workflow.patched(PROGRESS_BY_COUNT_PATCH)
        try:
            return await self._run(req)
        except ActivityError as exc:
            if isinstance(exc.cause, CancelledError):  # cancelled while ingesting or stitching
                await self._record_cancelled(req)
                raise
            stage = p.stage
            self._set_stage("failed")
            if stage in ("ingest", "plan") and _is_input_error(exc):
                # bad input found while decoding: drop what this render stored, so a refused
                # job costs nothing (the error, with the field's name, goes to the caller)
                await self._cpu(CpuActivities.discard, DiscardInput(render_id=req.render_id, reason=str(exc.cause)),
                                req, None)
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
        current details all say it."""
        self._progress.stage = stage
        self._publish()

    def _publish(self) -> None:
        p = self._progress
        workflow.upsert_search_attributes(p.attributes())
        p.upserted(workflow.now())
        workflow.set_current_details(p.sentence())

    async def _record_cancelled(self, req: RenderRequest) -> None:
        """The manifest of a cancelled render says which windows were finished; they stay
        stored, so submitting the same id again resumes after them."""
        p = self._progress
        stage = p.stage
        self._set_stage("cancelled")
        await self._cpu(CpuActivities.record_cancelled,
                        CancelledInput(render_id=req.render_id, windows_total=p.total,
                                       windows_finished=sorted(p.done), stage=stage), req, None)

    async def _run(self, req: RenderRequest) -> RenderResult:
        p = self._progress
        # decided before the first command: runs started earlier encode the audio in ingest
        audio_beside = workflow.patched(AUDIO_BESIDE_PATCH)
        if audio_beside:
            req = dataclasses.replace(req, final_audio_beside=True)
        p.warnings = list(req.warnings)
        self._set_stage("ingest")
        ingest: IngestResult = await self._cpu(CpuActivities.ingest, req, req,
                                               "ingest: fetch, check and decode the inputs")
        if ingest.warnings:  # the result says them too (an activity input: no command changes)
            p.warnings += ingest.warnings
            req = dataclasses.replace(req, warnings=list(p.warnings))
        self._set_stage("plan")
        plan: Plan = await self._cpu(CpuActivities.plan, PlanInput(request=req, ingest=ingest), req,
                                     "plan: windows and chains")
        p.total = plan.windows
        p.chains = [[c.first, c.last] for c in plan.chains]
        context = RenderContext(
            render_id=req.render_id, backend=req.backend, spec=req.spec,
            total_frames=plan.total_frames, reference_key=ingest.reference_key,
            audio_keys=ingest.audio_keys, source_key=ingest.source_key,
            source_frames=ingest.source_frames,
        )
        p.render_started = workflow.now()
        self._set_stage(WAITING if self._gpu_signal and not p.gpu_started_at else "render")
        # the output's AAC, encoded while the GPUs render (started after plan: a render that
        # plan refuses leaves nothing behind); stitch needs it, so it is awaited with the chains
        beside = [self._cpu(CpuActivities.encode_audio, EncodeAudioInput(request=req, total_frames=plan.total_frames),
                            req, "encode the output's audio (AAC)")] if audio_beside else []
        await asyncio.gather(*beside, *[
            workflow.execute_child_workflow(
                RenderChain.run,
                ChainInput(context=context, chain=chain, next_window=chain.first,
                           parent_id=workflow.info().workflow_id,
                           windows_per_run=req.windows_per_run, gpu_queue=req.gpu_queue,
                           timeouts=req.timeouts),
                id=chain_workflow_id(req.render_id, chain.index), task_queue=self._queue,
                static_summary=f"Chain {chain.index + 1} of {len(plan.chains)} of render {req.render_id}: "
                               f"windows {chain.first + 1}-{chain.last + 1} of {plan.windows}, in order",
            )
            for chain in plan.chains
        ])
        self._set_stage("stitch")
        stitched: StitchResult = await self._cpu(
            CpuActivities.stitch, StitchInput(render_id=req.render_id, windows=plan.windows,
                                              total_frames=plan.total_frames, spec=req.spec),
            req, f"stitch {plan.windows} windows into {plan.total_frames} frames")
        self._set_stage("publish")
        result: RenderResult = await self._cpu(
            CpuActivities.publish, PublishInput(request=req, video_key=stitched.video_key,
                                                total_frames=plan.total_frames, windows=plan.windows),
            req, "publish: mux the audio, store the video")
        self._set_stage("done")
        queued_s = p.queued_s(workflow.info().workflow_start_time)
        return result if queued_s is None else dataclasses.replace(result, queued_s=queued_s)

    @workflow.signal(name="gpu_started")
    def gpu_started(self, started: GpuStarted) -> None:
        """A GPU worker began one of this render's windows: it has left the queue. Runs that
        wait for this signal (GPU_START_PATCH) record the first one; others ignore it (a new
        GPU worker may send it to a run started by an older release)."""
        p = self._progress
        if not self._gpu_signal or p.gpu_started_at:
            return
        p.gpu_started_at = started.at
        workflow.upsert_memo({"gpu_started_at": started.at})
        if p.stage == WAITING:
            self._set_stage("render")

    @workflow.signal(name="windows_done")
    def windows_done(self, batch: WindowsDone) -> None:
        p = self._progress
        p.windows_finished(batch.windows, workflow.now())
        if p.upsert_due(workflow.now()):
            self._publish()

    @workflow.query(name="progress")
    def progress(self) -> Progress:
        return self._progress.snapshot(workflow.now())


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
                sending.append(asyncio.create_task(parent.signal(RenderVideo.windows_done, WindowsDone(list(pending)))))
                pending.clear()

        # decided before the first command
        workflow.deprecate_patch(options.WINDOW_OPTIONS_PATCH)
        workflow.deprecate_patch(WINDOW_SUMMARY_PATCH)
        every_window = workflow.patched(REPORT_EVERY_WINDOW_PATCH)
        workflow.deprecate_patch(options.CHAIN_AFFINITY_PATCH)
        window_options = options.render_window(inp.timeouts)
        affinity = inp.timeouts.affinity_s > 0
        affinity_queue = inp.affinity_queue if affinity else ""
        windows_total = window_count(inp.context.total_frames, inp.context.window_params)
        ran = 0
        for k in range(inp.next_window, inp.chain.last + 1):
            if ran >= inp.windows_per_run:
                report()
                await asyncio.gather(*sending)
                workflow.continue_as_new(dataclasses.replace(inp, next_window=k, affinity_queue=affinity_queue))
            window_input = RenderWindowInput(context=inp.context, index=k, chain_first=inp.chain.first)
            summary = f"window {k + 1}/{windows_total}"
            try:
                result = None
                if affinity_queue:
                    result = await self._on_last_worker(window_input, affinity_queue, inp.timeouts.affinity_s,
                                                        window_options, summary)
                if result is None:
                    result = await _activity(GpuActivities.render_window, window_input, window_options,
                                             inp.gpu_queue, summary)
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
                              window_options: ActivityOptions, summary: str) -> RenderWindowResult | None:
        """The window on the worker that rendered the chain's previous window (its own task
        queue), whose ComfyUI still holds this render's models and reference; None when that
        worker does not take it within `wait_s` (gone, or busy): then any worker will."""
        try:
            return await _activity(GpuActivities.render_window, window_input,
                                   dataclasses.replace(window_options, schedule_to_start=timedelta(seconds=wait_s)),
                                   queue, summary)
        except ActivityError as exc:
            cause = exc.cause
            if isinstance(cause, ActivityTimeout) and cause.type == TimeoutType.SCHEDULE_TO_START:
                return None
            raise
