"""The GPU fleet's registry: every GPU worker writes a small record to the bucket every
LONGTALK_FLEET_HEARTBEAT_S seconds; the API's /health and the dashboard's fleet page read
them (a handful of objects, one per worker).

    fleet/workers/<worker>.json   {"identity", "build_id", "backends", "device", "vram_free",
                                   "vram_total", "task_queue", "current": {"render_id",
                                   "window", "started_at"} | null, "windows_last_hour",
                                   "failures_last_hour", "started_at", "heartbeat_at",
                                   "timings": {kind: {"n", "busy_s", "gpu_s", "gap_s"}},
                                   "history": {"hours": [...], "queue": [...]}}

"timings" are the worker's recent window times by kind of window (longtalk.gpu_time): the
history the estimate (longtalk.estimate) reads. "history" is the last day's windows, busy
seconds and failures per hour and the GPU queue's backlog (longtalk.fleet_history): what the
dashboard's fleet charts draw.

A record older than STALE_AFTER_S (or three heartbeats) reads as stale: the worker is gone or
hung. Records of workers gone for a day are removed by the next reader.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import time
from datetime import datetime, timezone

from .fleet_history import QUEUE_PROBE_S, FleetHistory
from .gpu_time import WindowTimes
from .store import ObjectStore

PREFIX = "fleet/workers/"
FORGET_AFTER_S = 24 * 3600
log = logging.getLogger("longtalk.fleet")


def record_key(identity: str) -> str:
    return PREFIX + re.sub(r"[^A-Za-z0-9._@-]", "_", identity)[:200] + ".json"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


class FleetRecord:
    """What one GPU worker says about itself; `run` writes it until cancelled."""

    def __init__(self, store: ObjectStore, identity: str, build_id: str, task_queue: str,
                 backends: dict, every_s: float = 10.0) -> None:
        self.store, self.identity, self.build_id, self.task_queue = store, identity, build_id, task_queue
        self.backends = backends
        self.every_s = every_s
        self.started = time.time()
        self.current: dict | None = None
        self.finished: collections.deque[float] = collections.deque()
        self.failed: collections.deque[float] = collections.deque()
        self.times = WindowTimes()
        self.history = FleetHistory()
        self.queue_probe = None  # async () -> windows waiting on the GPU queue (worker.py sets it)
        self._probed = 0.0
        self._merged = False  # an earlier record's history taken back (on the first write)
        self._began = time.time()

    def begin(self, render_id: str, window: int) -> None:
        self._began = time.time()
        self.current = {"render_id": render_id, "window": window, "started_at": _iso(self._began)}

    def end(self, ok: bool, kind: str = "", busy_s: float = 0.0, gpu_s: float = 0.0,
            gap_s: float | None = None) -> None:
        """The window is over (stored, or failed); a stored one adds its times to the history."""
        self.current = None
        now = time.time()
        (self.finished if ok else self.failed).append(now)
        self.history.window(ok, now - busy_s if ok and busy_s else self._began, now)
        if ok and kind:
            self.times.add(kind, busy_s, gpu_s, gap_s)

    def device(self) -> str:
        """The GPU's name, as the backends report it."""
        return self._device_details().get("device") or "CPU (preview backend)"

    def _device_details(self) -> dict:
        device: dict = {}
        for backend in self.backends.values():
            details = getattr(backend, "heartbeat_details", None)
            if details is not None:
                device.update(details() or {})
        return device

    def snapshot(self) -> dict:
        now = time.time()
        for q in (self.finished, self.failed):
            while q and q[0] < now - 3600:
                q.popleft()
        device = self._device_details()
        return {"identity": self.identity, "build_id": self.build_id, "task_queue": self.task_queue,
                "backends": sorted(self.backends), "device": device.get("device") or "CPU (preview backend)",
                "vram_free": device.get("vram_free"), "vram_total": device.get("vram_total"),
                "current": self.current, "windows_last_hour": len(self.finished),
                "failures_last_hour": len(self.failed), "every_s": self.every_s,
                "started_at": _iso(self.started), "heartbeat_at": _iso(now),
                "timings": self.times.summary(), "history": self.history.to_json(now)}

    def write(self) -> None:
        if not self._merged:  # a restart: the day this worker had before goes on
            earlier = self.store.get_json_or_none(record_key(self.identity)) or {}
            self.history.merge(earlier.get("history"), time.time())
            self._merged = True
        self.store.put_json(record_key(self.identity), self.snapshot())

    async def probe_queue(self) -> None:
        """Sample the GPU queue's backlog into the history, at most every QUEUE_PROBE_S."""
        now = time.time()
        if self.queue_probe is None or now - self._probed < QUEUE_PROBE_S:
            return
        self._probed = now
        try:
            waiting = await self.queue_probe()
        except Exception as exc:  # the record is written without it
            log.warning("GPU queue backlog not read: %s", exc)
            return
        if waiting is not None:
            self.history.queue_sample(waiting, now)

    async def publish(self) -> None:
        """Write the record now (a window began or ended); a failure only logs: the worker
        keeps rendering while the object store is away. The queue's backlog is sampled first
        (at most every QUEUE_PROBE_S)."""
        await self.probe_queue()
        try:
            await asyncio.to_thread(self.write)
        except Exception as exc:
            log.warning("fleet record not written: %s", exc)

    async def run(self) -> None:
        while True:
            await self.publish()
            await asyncio.sleep(self.every_s)

    def remove(self) -> None:
        try:
            self.store.delete(record_key(self.identity))
        except Exception:
            pass


def read_fleet(store: ObjectStore, now: float | None = None) -> list[dict]:
    """Every worker's record, with `age_s` and `healthy` (heartbeat within three periods)."""
    now = time.time() if now is None else now
    out = []
    for key in store.list(PREFIX):
        rec = store.get_json_or_none(key)
        if not rec:
            continue
        try:
            beat = datetime.fromisoformat(rec["heartbeat_at"]).timestamp()
        except (KeyError, ValueError):
            continue
        age = max(0.0, now - beat)
        if age > FORGET_AFTER_S:
            try:
                store.delete(key)
            except Exception:
                pass
            continue
        rec["age_s"] = round(age, 1)
        rec["healthy"] = age <= 3 * float(rec.get("every_s") or 10) + 5
        out.append(rec)
    return sorted(out, key=lambda r: r["identity"])


class EndpointRecord(FleetRecord):
    """A RunPod Serverless endpoint as one record of the registry, written by the dispatcher
    (worker role runpod): the endpoint's /health in `endpoint` and, for the fleet page, in
    `device`; `slots` (LONGTALK_RUNPOD_MAX_JOBS) is how many windows it renders at once,
    which a job's parallel_chains 0 counts as that many GPUs."""

    def __init__(self, store: ObjectStore, identity: str, build_id: str, task_queue: str, endpoint,
                 slots: int, every_s: float = 10.0) -> None:
        super().__init__(store, identity, build_id, task_queue, {}, every_s)
        self.endpoint, self.slots = endpoint, slots  # longtalk.runpod_api.RunPodEndpoint
        self.health: dict = {}

    def snapshot(self) -> dict:
        rec = super().snapshot()
        workers, jobs = self.health.get("workers") or {}, self.health.get("jobs") or {}
        device = (f"RunPod endpoint: {workers.get('running', 0)} running, {workers.get('idle', 0)} idle, "
                  f"{workers.get('initializing', 0)} starting; {jobs.get('inQueue', 0)} jobs queued")
        if "error" in self.health:
            device = f"RunPod endpoint: /health failed: {self.health['error']}"
        rec.update(backends=["runpod"], device=device, endpoint=self.health, slots=self.slots)
        return rec

    async def run(self) -> None:
        while True:
            try:
                self.health = await self.endpoint.health()
            except Exception as exc:  # the record still says the dispatcher lives
                self.health = {"error": str(exc)[:200]}
            await self.publish()
            await asyncio.sleep(self.every_s)

def healthy_on_queue(records: list[dict], queue: str, backend: str | None = None) -> list[dict]:
    """The healthy workers' records serving `queue` (and `backend`, if given)."""
    return [r for r in records if r.get("healthy") and r.get("task_queue") == queue
            and (backend is None or backend in (r.get("backends") or []))]
