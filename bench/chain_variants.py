"""Benchmark-only variants of RenderChain, to measure a proposed change without touching
workflows/render.py. Registered under the same workflow type name ("RenderChain"), so the
shipped RenderVideo parent starts them unchanged.

nowait: one progress signal per window (no batching), sent without waiting for its delivery
before the next window's activity is scheduled. The shipped chain does the same but batches
the reports to at most one a second; this variant measures what the batching saves.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from longtalk.payloads import ChainInput, ChainResult, RenderWindowInput, RenderWindowResult, WindowDone, WindowsDone
    from longtalk.activity_options import GPU_RETRY


@workflow.defn(name="RenderChain")
class RenderChainNoWait:
    @workflow.run
    async def run(self, inp: ChainInput) -> ChainResult:
        parent = workflow.get_external_workflow_handle(inp.parent_id)
        ran = 0
        pending: list[asyncio.Future] = []
        for k in range(inp.next_window, inp.chain.last + 1):
            if ran >= inp.windows_per_run:
                await asyncio.gather(*pending)
                workflow.continue_as_new(dataclasses.replace(inp, next_window=k))
            result: RenderWindowResult = await workflow.execute_activity(
                "render_window",
                RenderWindowInput(context=inp.context, index=k, chain_first=inp.chain.first),
                result_type=RenderWindowResult, task_queue=inp.gpu_queue,
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=timedelta(seconds=inp.timeouts.heartbeat_s),
                retry_policy=GPU_RETRY,
            )
            ran += 1
            for f in [f for f in pending if f.done()]:
                f.result()  # a failed signal fails the run, as the awaited one would
                pending.remove(f)
            pending.append(asyncio.ensure_future(parent.signal(
                "windows_done", WindowsDone([WindowDone(index=k, rendered=result.rendered)]))))
        await asyncio.gather(*pending)
        return ChainResult(chain=inp.chain.index, windows=inp.chain.last - inp.chain.first + 1)


VARIANTS = {"nowait": RenderChainNoWait}
