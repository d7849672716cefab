"""DeliverWebhook: wait for a render to end, then POST its /status body to the job's webhook.

Started by the HTTP API beside the render (id `<render id>/webhook`) and run by the API's
own worker, so RenderVideo's commands stay as they are: a delivery never blocks or fails a
render. The webhook URL is not in this history (it is read from the bucket), nor any key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError


@dataclass
class WebhookInput:
    render_id: str
    run_id: str  # the render's run this delivery reports (a retry is a new run, a new delivery)
    retry_s: float = 24 * 3600.0  # deliveries are retried this long
    backoff_s: float = 5.0  # first retry interval; doubles up to 10 minutes


def webhook_workflow_id(render_id: str) -> str:
    return f"{render_id}/webhook"


@workflow.defn(name="DeliverWebhook")
class DeliverWebhook:
    @workflow.run
    async def run(self, inp: WebhookInput) -> str:
        status = await workflow.execute_activity(
            "await_render", inp, result_type=str,
            start_to_close_timeout=timedelta(days=60), heartbeat_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)))
        try:
            await workflow.execute_activity(
                "deliver_webhook", inp,
                start_to_close_timeout=timedelta(seconds=60),
                schedule_to_close_timeout=timedelta(seconds=inp.retry_s),
                retry_policy=RetryPolicy(initial_interval=timedelta(seconds=inp.backoff_s), backoff_coefficient=2.0,
                                         maximum_interval=timedelta(minutes=10),
                                         non_retryable_error_types=["InputError"]))
        except ActivityError as exc:
            workflow.logger.warning("webhook of %s not delivered: %s", inp.render_id, exc.cause)
            return f"{status}: not delivered"
        return f"{status}: delivered"
