"""Every activity's options (timeouts, retries, cancellation), built in this one place.

The client turns its Settings into `ActivityTimeouts` (`timeouts_from_settings`) and puts them
into the workflow input; the workflows build each activity's options from those with
`cpu(name, timeouts)` and `render_window(timeouts)`, typed (`ActivityOptions`), so workflow code
reads no settings and passes no loose keyword dicts.

Deterministic (no I/O): imported by workflow code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityCancellationType

from .payloads import ActivityTimeouts
from .errors import NON_RETRYABLE_TYPES

# workflow.patched ids of earlier releases, deprecated (workflow.deprecate_patch): every run the
# versioning policy supports took their new branch (README, "Upgrading")
ACTIVITY_OPTIONS_PATCH = "activity-options-v2"  # RenderVideo: the CPU activities' options below
WINDOW_OPTIONS_PATCH = "render-window-options-v2"  # RenderChain: render_window's options below
CHAIN_AFFINITY_PATCH = "chain-affinity-v1"  # RenderChain: a window first asks its chain's last worker

WINDOW_MARGIN_S = 600  # render_window beyond its ComfyUI prompt: inputs, uploads, downloads, encoding, storing

# start-to-close of the CPU activities (seconds); those in HEARTBEATING also heartbeat
CPU_START_TO_CLOSE_S: dict[str, int] = {
    "ingest": 30 * 60,
    "plan": 10 * 60,
    "stitch": 2 * 3600,
    "encode_audio": 2 * 3600,  # the output's AAC, beside the windows (an hour: ~80 s on 2 cores)
    "publish": 2 * 3600,
    "discard": 5 * 60,
    "record_cancelled": 5 * 60,
}
HEARTBEATING = frozenset({"ingest", "stitch", "publish", "encode_audio"})



def _cpu_retry(non_retryable: list[str]) -> RetryPolicy:
    return RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                       maximum_interval=timedelta(seconds=30), maximum_attempts=20,
                       non_retryable_error_types=non_retryable)


def _gpu_retry(non_retryable: list[str]) -> RetryPolicy:
    return RetryPolicy(initial_interval=timedelta(seconds=2), backoff_coefficient=2.0,
                       maximum_interval=timedelta(seconds=60), maximum_attempts=30,
                       non_retryable_error_types=non_retryable)


CPU_RETRY = _cpu_retry(NON_RETRYABLE_TYPES)
GPU_RETRY = _gpu_retry(NON_RETRYABLE_TYPES)


def timeouts_from_settings(settings, url_inputs: int = 0, affinity_s: int | None = None) -> ActivityTimeouts:
    """The time limits a render gets, from the client's Settings; `url_inputs`: how many
    URL inputs its ingest downloads (each may take LONGTALK_DOWNLOAD_TOTAL_S); `affinity_s`:
    the chain affinity wait for this render (gpu_time.affinity_wait_s; None: the setting's)."""
    window_s = math.ceil(settings.comfy_prompt_timeout_s) + WINDOW_MARGIN_S
    ingest_s = CPU_START_TO_CLOSE_S["ingest"] + url_inputs * math.ceil(settings.download_total_s)
    longest = max(window_s, ingest_s, *CPU_START_TO_CLOSE_S.values())
    if settings.activity_schedule_to_close_s < longest:
        raise ValueError(f"LONGTALK_ACTIVITY_SCHEDULE_TO_CLOSE_S: must be at least {longest} (the longest "
                         f"activity's own time limit), got {settings.activity_schedule_to_close_s}")
    return ActivityTimeouts(heartbeat_s=settings.heartbeat_timeout_s, window_s=window_s,
                            schedule_to_close_s=settings.activity_schedule_to_close_s,
                            ingest_s=ingest_s,
                            affinity_s=max(0, settings.affinity_wait_s if affinity_s is None else affinity_s))


@dataclass(frozen=True)
class ActivityOptions:
    """What an activity call is given besides its input (the fields of execute_activity)."""

    start_to_close: timedelta
    retry_policy: RetryPolicy
    schedule_to_close: timedelta | None = None
    heartbeat: timedelta | None = None
    schedule_to_start: timedelta | None = None
    cancellation: ActivityCancellationType = ActivityCancellationType.TRY_CANCEL


def cpu(name: str, timeouts: ActivityTimeouts) -> ActivityOptions:
    """The options of CPU activity `name` (ingest, plan, encode_audio, stitch, publish, discard,
    record_cancelled). Ingest's own limit travels in the timeouts: payloads without it (and
    renders without URL inputs) get CPU_START_TO_CLOSE_S["ingest"], so their commands replay
    unchanged."""
    seconds = timeouts.ingest_s if name == "ingest" else CPU_START_TO_CLOSE_S[name]
    return ActivityOptions(
        start_to_close=timedelta(seconds=seconds), retry_policy=CPU_RETRY,
        schedule_to_close=timedelta(seconds=timeouts.schedule_to_close_s),
        heartbeat=timedelta(seconds=timeouts.heartbeat_s) if name in HEARTBEATING else None)


def render_window(timeouts: ActivityTimeouts) -> ActivityOptions:
    """The options of render_window: longer than the ComfyUI prompt timeout (a hung prompt is
    interrupted by the worker first), and a cancel waits until the worker has stopped the GPU
    work, so the cancelled render's manifest is written after it."""
    return ActivityOptions(
        start_to_close=timedelta(seconds=timeouts.window_s), retry_policy=GPU_RETRY,
        schedule_to_close=timedelta(seconds=timeouts.schedule_to_close_s),
        heartbeat=timedelta(seconds=timeouts.heartbeat_s),
        cancellation=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED)
