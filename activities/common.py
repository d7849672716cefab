"""What every activity shares: error mapping to Temporal and background heartbeats."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import threading
from contextlib import asynccontextmanager, contextmanager

from temporalio import activity

from longtalk.errors import ServiceError, to_application_error

HEARTBEAT_EVERY_S = 5.0
log = logging.getLogger(__name__)


def heartbeat_interval(default: float = HEARTBEAT_EVERY_S) -> float:
    """Often enough that a third of the activity's heartbeat timeout always sees a beat."""
    timeout = activity.info().heartbeat_timeout
    if timeout is None:
        return default
    return max(0.2, min(default, timeout.total_seconds() / 3))


def map_errors(fn):
    """Raise our ServiceErrors as ApplicationErrors (non-retryable where they must be)."""
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def async_wrapper(*args, **kwargs):
            try:
                return await fn(*args, **kwargs)
            except ServiceError as exc:
                raise to_application_error(exc) from exc
        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ServiceError as exc:
            raise to_application_error(exc) from exc
    return wrapper


@contextmanager
def heartbeating(details_fn=lambda: None, every_s: float | None = None):
    """For sync activities: heartbeat from a background thread while the body runs, so long
    decodes and uploads that report nothing still prove the worker is alive."""
    stop = threading.Event()
    every_s = every_s or heartbeat_interval()

    def beat():
        while not stop.wait(every_s):
            try:
                details = details_fn()
                activity.heartbeat(*(() if details is None else (details,)))
            except Exception:  # never let a heartbeat failure kill the work
                log.warning("heartbeat failed", exc_info=True)

    activity.heartbeat()
    # activity.heartbeat() finds its activity through context variables: run the beater in a
    # copy of this thread's context, or every beat raises (and the activity times out)
    thread = threading.Thread(target=contextvars.copy_context().run, args=(beat,), daemon=True,
                              name="heartbeat")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=1)


@asynccontextmanager
async def heartbeating_async(details_fn=lambda: None, every_s: float | None = None):
    """For async activities: a heartbeat task beside the body (keeps cancellation delivery
    working while the body waits on a renderer that reports nothing)."""

    every_s = every_s or heartbeat_interval()

    async def beat():
        while True:
            details = details_fn()
            activity.heartbeat(*(() if details is None else (details,)))
            await asyncio.sleep(every_s)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
