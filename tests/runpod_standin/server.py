"""A stand-in for RunPod Serverless's control plane: one endpoint, its queue and its workers.

It speaks the two protocols of the official `runpod` SDK (read from its source, 1.12):

Public endpoint API (what `runpod.Endpoint` and the dispatcher call; `Authorization:
Bearer <api key>`):
- ``POST /v2/{endpoint}/run`` ``{"input", "policy"?: {"executionTimeout" ms, "ttl" ms}}``
  -> ``{"id", "status": "IN_QUEUE"}``;
- ``GET|POST /v2/{endpoint}/status/{id}`` -> ``{"id", "status", "delayTime", "executionTime",
  "workerId", "output"?, "error"?}``; while IN_PROGRESS ``output`` is the last
  progress_update; 404 for an id it does not know (never submitted, or its result expired
  after ``status_ttl_s``);
- ``POST /v2/{endpoint}/cancel/{id}`` -> ``{"id", "status": "CANCELLED"}`` (a running job is
  stopped on its worker through the stop channel);
- ``GET /v2/{endpoint}/health`` -> ``{"jobs": {"completed", "failed", "inProgress",
  "inQueue", "retried"}, "workers": {"idle", "initializing", "ready", "running",
  "throttled", "unhealthy"}}``.
Statuses: IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED, TIMED_OUT.

Worker protocol (what `runpod.serverless.start`'s loop calls, with the env vars RunPod
sets; `Authorization: <RUNPOD_AI_API_KEY>`):
- ``GET /v2/{endpoint}/job-take/{worker}?gpu=..&job_in_progress=0|1`` (RUNPOD_WEBHOOK_GET_JOB):
  long-polls; 204 when no job came, else ``{"id", "input"}``;
- ``GET /v2/{endpoint}/job-stop/{worker}?..`` (derived by the SDK from the job-take URL):
  long-polls; 204, or ``{"jobsToStop": [ids]}``;
- ``POST /v2/{endpoint}/job-done/{worker}/{id}?..&isStream=false`` (RUNPOD_WEBHOOK_POST_OUTPUT):
  a JSON body; ``{"status": "IN_PROGRESS", "output"}`` is a progress_update, else the
  result: ``{"output"}`` or ``{"error"}`` (and ``stopPod``);
- ``POST /v2/{endpoint}/job-stream/{worker}/{id}?..`` (RUNPOD_WEBHOOK_POST_STREAM);
- ``GET /v2/{endpoint}/ping/{worker}?job_id=..&runpod_version=..`` (RUNPOD_WEBHOOK_PING).

Scale to zero: a worker process (`python -m longtalk.serverless`, the real SDK loop) is
started when jobs wait and no idle or starting worker will take them, after
``cold_start_s``, up to ``max_workers``; a worker idle for ``idle_timeout_s`` gets SIGTERM.
A worker process that exits while it holds a job fails that job (``error``: worker lost).

Execution timeout (RunPod's docs, "Endpoint settings" and "Send requests": execution
policies): a job may run ``policy.executionTimeout`` ms once a worker took it, else the
endpoint's own execution timeout (``execution_timeout_s``, RunPod's default 600 s); past it
the job ends TIMED_OUT and its worker is stopped.

Test controls: ``standin.workers`` (pid, state, job), ``standin.jobs`` (each with its
``progress`` updates), ``standin.taken``
(every job id a worker took, in order), ``kill_worker_of(job_id)``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Job:
    id: str
    input: object
    submitted: float
    policy: dict = field(default_factory=dict)
    status: str = "IN_QUEUE"
    started: float | None = None
    finished: float | None = None
    output: object = None
    error: str | None = None
    worker: str = ""
    streamed: list = field(default_factory=list)
    progress: list = field(default_factory=list)  # every progress_update, in order

    def as_status(self) -> dict:
        now = time.monotonic()
        out = {"id": self.id, "status": self.status,
               "delayTime": int(((self.started or now) - self.submitted) * 1000)}
        if self.started is not None:
            out["executionTime"] = int(((self.finished or now) - self.started) * 1000)
            out["workerId"] = self.worker
        if self.output is not None:
            out["output"] = self.output
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class Worker:
    id: str
    state: str = "initializing"  # -> idle <-> running -> stopping
    proc: asyncio.subprocess.Process | None = None
    job: str | None = None
    idle_since: float = field(default_factory=time.monotonic)
    stop: list[str] = field(default_factory=list)
    log: Path | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


class RunPodStandIn:
    def __init__(self, endpoint_id: str, api_key: str, worker_env: dict[str, str], *, max_workers: int = 3,
                 cold_start_s: float = 0.5, idle_timeout_s: float = 5.0, status_ttl_s: float = 1800.0,
                 poll_s: float = 2.0, execution_timeout_s: float = 600.0, log_dir: Path | None = None) -> None:
        self.endpoint_id, self.api_key = endpoint_id, api_key
        self.worker_env = worker_env  # the handler's LONGTALK_ settings (backend, data dir, ...)
        self.max_workers, self.cold_start_s, self.idle_timeout_s = max_workers, cold_start_s, idle_timeout_s
        self.status_ttl_s, self.poll_s, self.execution_timeout_s = status_ttl_s, poll_s, execution_timeout_s
        self.log_dir = log_dir
        self.jobs: dict[str, Job] = {}
        self.queue: list[str] = []
        self.workers: dict[str, Worker] = {}
        self.taken: list[str] = []
        self.started_workers = 0
        self.runs = 0  # /run calls
        self.retried = 0
        self.base_url = ""
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self.app = self._app()

    # ---- public endpoint API ---------------------------------------------------------
    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        p = "/v2/{endpoint}"
        app.router.add_post(p + "/run", self.run)
        app.router.add_route("*", p + "/status/{id}", self.status)
        app.router.add_post(p + "/cancel/{id}", self.cancel)
        app.router.add_get(p + "/health", self.health)
        app.router.add_get(p + "/job-take/{worker}", self.job_take)
        app.router.add_get(p + "/job-stop/{worker}", self.job_stop)
        app.router.add_post(p + "/job-done/{worker}/{id}", self.job_done)
        app.router.add_post(p + "/job-stream/{worker}/{id}", self.job_stream)
        app.router.add_get(p + "/ping/{worker}", self.ping)
        return app

    def _public(self, request: web.Request) -> None:
        if request.match_info["endpoint"] != self.endpoint_id:
            raise web.HTTPNotFound(text=json.dumps({"error": "endpoint not found"}), content_type="application/json")
        if request.headers.get("Authorization", "").removeprefix("Bearer ").strip() != self.api_key:
            raise web.HTTPUnauthorized(text=json.dumps({"error": "Unauthorized"}), content_type="application/json")

    def _job(self, request: web.Request) -> Job:
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            raise web.HTTPNotFound(text=json.dumps({"error": "request does not exist"}), content_type="application/json")
        return job

    async def run(self, request: web.Request) -> web.Response:
        self._public(request)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        if not isinstance(body, dict) or "input" not in body:
            return web.json_response({"error": "input: missing"}, status=400)
        job = Job(id=f"{uuid.uuid4()}-u1", input=body["input"], submitted=time.monotonic(),
                  policy=body.get("policy") or {})
        self.jobs[job.id] = job
        self.queue.append(job.id)
        self.runs += 1
        self._changed.set()
        return web.json_response({"id": job.id, "status": job.status})

    async def status(self, request: web.Request) -> web.Response:
        self._public(request)
        return web.json_response(self._job(request).as_status())

    async def cancel(self, request: web.Request) -> web.Response:
        self._public(request)
        job = self._job(request)
        self._end(job, "CANCELLED")
        return web.json_response({"id": job.id, "status": job.status})

    async def health(self, request: web.Request) -> web.Response:
        self._public(request)
        states = [w.state for w in self.workers.values()]
        count = lambda *names: sum(1 for j in self.jobs.values() if j.status in names)  # noqa: E731
        return web.json_response({
            "jobs": {"completed": count("COMPLETED"), "failed": count("FAILED", "TIMED_OUT"),
                     "inProgress": count("IN_PROGRESS"), "inQueue": count("IN_QUEUE"), "retried": self.retried},
            "workers": {"idle": states.count("idle"), "initializing": states.count("initializing"),
                        "ready": states.count("idle"), "running": states.count("running"),
                        "throttled": 0, "unhealthy": 0},
        })

    def _end(self, job: Job, status: str, error: str | None = None) -> None:
        """A job leaves the queue or its worker for good (a final status is never changed)."""
        if job.status in FINAL:
            return
        if job.id in self.queue:
            self.queue.remove(job.id)
        if job.status == "IN_PROGRESS" and job.worker in self.workers:
            worker = self.workers[job.worker]
            if worker.job == job.id:
                worker.stop.append(job.id)  # the SDK's stop channel cancels the handler's task
                worker.job, worker.state, worker.idle_since = None, "idle", time.monotonic()
        job.status, job.finished = status, time.monotonic()
        if error is not None:
            job.error = error
        self._changed.set()

    # ---- worker protocol ---------------------------------------------------------------
    def _worker(self, request: web.Request) -> Worker:
        worker = self.workers.get(request.match_info["worker"])
        if worker is None or request.headers.get("Authorization") != self.api_key:
            raise web.HTTPUnauthorized()
        return worker

    async def _wait_change(self, until: float) -> bool:
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), max(0.0, until - time.monotonic()))
            return True
        except asyncio.TimeoutError:
            return False

    async def job_take(self, request: web.Request) -> web.Response:
        worker = self._worker(request)
        if worker.state == "initializing":
            worker.state, worker.idle_since = "idle", time.monotonic()
        until = time.monotonic() + self.poll_s
        while True:
            if worker.state == "idle" and worker.job is None and self.queue:
                job = self.jobs[self.queue.pop(0)]
                job.status, job.started, job.worker = "IN_PROGRESS", time.monotonic(), worker.id
                worker.job, worker.state = job.id, "running"
                self.taken.append(job.id)
                return web.json_response({"id": job.id, "input": job.input})
            if worker.state == "stopping" or time.monotonic() >= until:
                return web.Response(status=204)
            await self._wait_change(until)

    async def job_stop(self, request: web.Request) -> web.Response:
        worker = self._worker(request)
        until = time.monotonic() + self.poll_s
        while not worker.stop and time.monotonic() < until:
            await self._wait_change(until)
        if not worker.stop:
            return web.Response(status=204)
        ids, worker.stop = list(worker.stop), []
        return web.json_response({"jobsToStop": ids})

    async def job_done(self, request: web.Request) -> web.Response:
        worker = self._worker(request)
        job = self._job(request)
        data = json.loads(await request.text())  # sent as form-urlencoded, but the body is JSON
        if job.status != "IN_PROGRESS" or job.worker != worker.id:
            return web.json_response({})  # cancelled or timed out meanwhile: the result is dropped
        if data.get("status") == "IN_PROGRESS":
            job.output = data.get("output")
            job.progress.append(job.output)
            return web.json_response({})
        job.output = data.get("output")
        if data.get("error"):
            self._end(job, "FAILED", str(data["error"]))
        else:
            self._end(job, "COMPLETED")
        if data.get("stopPod"):
            self._stop(worker)
        return web.json_response({})

    async def job_stream(self, request: web.Request) -> web.Response:
        self._worker(request)
        self._job(request).streamed.append(json.loads(await request.text()).get("output"))
        return web.json_response({})

    async def ping(self, request: web.Request) -> web.Response:
        self._worker(request)
        return web.json_response({})

    # ---- scaling --------------------------------------------------------------------------
    async def scale_loop(self) -> None:
        while True:
            now = time.monotonic()
            for job in list(self.jobs.values()):
                limit_s = job.policy.get("executionTimeout", self.execution_timeout_s * 1000) / 1000
                if job.status == "IN_PROGRESS" and now - job.started > limit_s:
                    worker = self.workers.get(job.worker)
                    self._end(job, "TIMED_OUT", f"execution timeout of {limit_s:g} s exceeded")
                    if worker is not None:
                        self._stop(worker)
                if job.status in FINAL and now - job.finished > self.status_ttl_s:
                    del self.jobs[job.id]
            live = [w for w in self.workers.values() if w.state != "stopping"]
            free = sum(1 for w in live if w.state in ("initializing", "idle") and w.job is None)
            for _ in range(min(len(self.queue) - free, self.max_workers - len(live))):
                self._start_worker()
            for w in live:
                if w.state == "idle" and w.job is None and now - w.idle_since > self.idle_timeout_s:
                    self._stop(w)
            await asyncio.sleep(0.1)

    def _start_worker(self) -> None:
        self.started_workers += 1
        worker = Worker(id=f"w{self.started_workers}-{uuid.uuid4().hex[:6]}")
        self.workers[worker.id] = worker
        task = asyncio.create_task(self._run_worker(worker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def runpod_env(self, worker_id: str) -> dict[str, str]:
        """The variables RunPod gives a worker container (the SDK substitutes $ID and
        $RUNPOD_POD_ID itself)."""
        base = f"{self.base_url}/v2/{self.endpoint_id}"
        query = "?gpu=standin"
        return {
            "RUNPOD_POD_ID": worker_id, "RUNPOD_ENDPOINT_ID": self.endpoint_id, "RUNPOD_AI_API_KEY": self.api_key,
            "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID{query}",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID{query}",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID{query}",
            "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID{query}",
            "RUNPOD_PING_INTERVAL": "2000",
            # the SDK's fitness checks look for a GPU and CUDA: this machine has none
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true", "RUNPOD_SKIP_GPU_CHECK": "true",
            "RUNPOD_LOG_LEVEL": "INFO",
        }

    async def _run_worker(self, worker: Worker) -> None:
        await asyncio.sleep(self.cold_start_s)  # the machine and image starting (FlashBoot off)
        env = {**os.environ, **self.worker_env, **self.runpod_env(worker.id)}
        out = asyncio.subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            worker.log = self.log_dir / f"{worker.id}.log"
            out = worker.log.open("wb")
        # a session of its own: a kill reaches the SDK's ping process too, as a container stop does
        worker.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "longtalk.serverless", cwd=str(ROOT), env=env, stdout=out, stderr=out,
            start_new_session=True)
        code = await worker.proc.wait()
        if worker.job is not None:
            job = self.jobs.get(worker.job)
            if job is not None:
                self._end(job, "FAILED", f"worker {worker.id} lost (exit {code})")
        worker.state, worker.job = "stopping", None
        self.workers.pop(worker.id, None)
        self._changed.set()

    def _stop(self, worker: Worker) -> None:
        worker.state = "stopping"
        self._changed.set()
        if worker.proc is not None and worker.proc.returncode is None:
            os.killpg(worker.proc.pid, signal.SIGTERM)

    def kill_worker_of(self, job_id: str) -> Worker:
        """SIGKILL the worker (its whole process group) that runs `job_id`."""
        worker = next(w for w in self.workers.values() if w.job == job_id)
        os.killpg(worker.proc.pid, signal.SIGKILL)
        return worker

    async def close(self) -> None:
        for worker in list(self.workers.values()):
            if worker.proc is not None and worker.proc.returncode is None:
                try:
                    os.killpg(worker.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for task in list(self._tasks):
            try:
                await asyncio.wait_for(task, 10)
            except (asyncio.TimeoutError, asyncio.CancelledError, Exception):
                task.cancel()


class StandInServer:
    def __init__(self, standin: RunPodStandIn, runner: web.AppRunner, scaler: asyncio.Task) -> None:
        self.standin, self.runner, self.scaler = standin, runner, scaler

    @property
    def api_url(self) -> str:
        """What LONGTALK_RUNPOD_BASE_URL is set to (RunPod's: https://api.runpod.ai/v2)."""
        return self.standin.base_url + "/v2"

    async def close(self) -> None:
        self.scaler.cancel()
        await self.standin.close()
        await self.runner.cleanup()


async def start_runpod_standin(*args, host: str = "127.0.0.1", port: int = 0, **kwargs) -> StandInServer:
    """Start the stand-in in the running event loop on `port` (0: a free one)."""
    standin = RunPodStandIn(*args, **kwargs)
    runner = web.AppRunner(standin.app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
    standin.base_url = f"http://{host}:{port}"
    return StandInServer(standin, runner, asyncio.create_task(standin.scale_loop()))
