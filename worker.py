"""Worker process: the CPU worker (workflows + CPU activities on task queue "render") and/or
a GPU worker (render activities, one at a time, on task queue "gpu") and/or the RunPod
dispatcher (render activities submitted to a RunPod Serverless endpoint, task queue "runpod").

    python worker.py                 cpu and gpu, from LONGTALK_ settings
    LONGTALK_WORKER_ROLES=gpu python worker.py    only the GPU worker (one per GPU/ComfyUI)
    LONGTALK_WORKER_ROLES=cpu,runpod python worker.py    windows on RunPod (LONGTALK_GPU_POOL=runpod)

Stops gracefully on SIGINT/SIGTERM: it stops polling, running activities get time to finish
(LONGTALK_GPU_SHUTDOWN_GRACE_S, LONGTALK_CPU_SHUTDOWN_GRACE_S), then it exits 0.
Probes (LONGTALK_HEALTH_PORT): GET /livez and /readyz (longtalk/health.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities.cpu import CpuActivities
from activities.gpu import GpuActivities
from activities.runpod import RunPodDispatcher
from longtalk.comfy.config import GraphConfig
from longtalk import ffmpeg_bin, metrics
from longtalk.backends import make_backends
from longtalk.guard import Guard
from longtalk.build import build_id as compute_build_id
from longtalk.fleet import EndpointRecord, FleetRecord
from longtalk.fleet_history import queue_backlog
from longtalk.health import Health
from longtalk.visibility import register_search_attributes
from longtalk import temporal_connect
from longtalk.settings import Settings
from longtalk.stack import READY_LINE
from longtalk.store import ObjectStore
from workflows.render import RenderChain, RenderVideo

log = logging.getLogger("longtalk.worker")


def worker_build_id(settings: Settings) -> str:
    """LONGTALK_BUILD_ID, or computed: short git commit (+ "-dirty"), else the package version.
    `run` computes it once and passes it on in the settings (git is asked once per process)."""
    return compute_build_id(settings.build_id)


def build_workers(client: Client, settings: Settings, store: ObjectStore,
                  backends=None, identity: str | None = None,
                  graph_config: GraphConfig | None = None, **workflow_options) -> list[Worker]:
    """The composition root: every worker this process runs, built from settings (and the
    ComfyUI graph config, which the comfyui backend needs).

    Every worker carries the build id (Temporal's `build_id`, and the end of its identity:
    `<host>-<pid>@<build>-cpu`); worker versioning stays off, it is identity only.
    `workflow_options` go to the workflow worker (tests: a workflow runner, interceptors)."""
    roles = worker_roles(settings)
    unknown = roles - {"cpu", "gpu", "runpod"}
    if unknown or not roles:
        raise ValueError(f"LONGTALK_WORKER_ROLES: use cpu, gpu, runpod or a list of them, got {settings.worker_roles!r}")
    build = worker_build_id(settings)
    identity = f"{identity or f'{socket.gethostname()}-{os.getpid()}'}@{build}"
    workers = []
    if "cpu" in roles:
        cpu = CpuActivities(store, settings)
        workers.append(Worker(
            client, task_queue=settings.render_queue, workflows=[RenderVideo, RenderChain],
            activities=[cpu.ingest, cpu.plan, cpu.encode_audio, cpu.stitch, cpu.publish, cpu.discard,
                        cpu.record_cancelled],
            activity_executor=ThreadPoolExecutor(max_workers=4),
            max_concurrent_activities=4,
            max_cached_workflows=settings.workflow_cache_size,
            sticky_queue_schedule_to_start_timeout=timedelta(seconds=settings.sticky_schedule_to_start_s),
            graceful_shutdown_timeout=timedelta(seconds=settings.cpu_shutdown_grace_s),
            identity=f"{identity}-cpu", build_id=build, **workflow_options,
        ))
    if "gpu" in roles:
        if backends is None:
            backends = make_backends(settings, graph_config)
        fleet = FleetRecord(store, f"{identity}-gpu", build, settings.gpu_queue, backends,
                            every_s=settings.fleet_heartbeat_s)
        fleet.queue_probe = functools.partial(queue_backlog, client, settings.gpu_queue)  # the fleet charts
        own_queue = own_gpu_queue(settings, identity) if settings.affinity_wait_s > 0 else ""
        render = GpuActivities(store, backends, settings.data_dir / "cache", identity=f"{identity}-gpu",
                               build_id=build, fleet=fleet, own_queue=own_queue, guard=Guard.from_settings(settings))
        for queue in filter(None, (settings.gpu_queue, own_queue)):
            workers.append(Worker(
                client, task_queue=queue, activities=[render.render_window],
                # a stopping GPU worker finishes the window it renders (LONGTALK_GPU_SHUTDOWN_GRACE_S)
                max_concurrent_activities=1,
                graceful_shutdown_timeout=timedelta(seconds=settings.gpu_shutdown_grace_s),
                identity=f"{identity}-gpu", build_id=build,
            ))
        workers[-1].longtalk_fleet = fleet  # run() keeps the record fresh between windows
    if "runpod" in roles:
        # no GPU here: as many windows in flight as the endpoint runs jobs at once
        dispatcher = RunPodDispatcher(store, settings, identity=f"{identity}-runpod", build_id=build)
        workers.append(Worker(
            client, task_queue=settings.runpod_queue, activities=[dispatcher.render_window],
            max_concurrent_activities=settings.runpod_max_jobs,
            graceful_shutdown_timeout=timedelta(seconds=settings.cpu_shutdown_grace_s),
            identity=f"{identity}-runpod", build_id=build,
        ))
        workers[-1].longtalk_fleet = EndpointRecord(
            store, f"{identity}-runpod", build, settings.runpod_queue, dispatcher.endpoint,
            slots=settings.runpod_max_jobs, every_s=settings.fleet_heartbeat_s)
        dispatcher.fleet = workers[-1].longtalk_fleet
    return workers


def worker_roles(settings: Settings) -> set[str]:
    """The roles LONGTALK_WORKER_ROLES names (cpu, gpu, runpod)."""
    return {r.strip() for r in settings.worker_roles.split(",") if r.strip()}


def own_gpu_queue(settings: Settings, identity: str) -> str:
    """A GPU worker's own task queue: its chains' next windows ask it first (chain affinity)."""
    return f"{settings.gpu_queue}@{identity}"


EXIT_BACKEND_UNFIT = 3


def refuse_unless_healthy(name: str, report) -> None:
    """Print the backend's doctor report; exit without polling when it found a problem, so a
    broken image is seen at once instead of failing every window through its retries."""
    for line in report.lines():
        print(f"{name} doctor: {line}", flush=True)
    if not report.ok:
        print(f"GPU worker NOT polling: the {name} backend at {report.url} fails {len(report.problems)} "
              f"check(s) above; fix them (python -m comfy_graphs doctor --url {report.url}) and start "
              f"the worker again", flush=True)
        raise SystemExit(EXIT_BACKEND_UNFIT)


async def run(settings: Settings, graph_config: GraphConfig) -> None:
    settings = dataclasses.replace(settings, build_id=worker_build_id(settings))
    health = Health()  # the probes answer from the start: alive while it waits for ComfyUI
    if settings.health_port:
        await health.serve(settings.health_host, settings.health_port)
        log.info("probes on http://%s:%d/livez and /readyz", settings.health_host, settings.health_port)
    log.info("ffmpeg: %s", ffmpeg_bin.use(settings.ffmpeg))
    if settings.metrics_port:
        metrics.serve(settings.metrics_port, settings.metrics_host)
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    roles = worker_roles(settings)
    store = ObjectStore.from_settings(settings)
    await asyncio.to_thread(store.ensure_bucket)
    client = await temporal_connect.connect(settings)
    # the workflows upsert these: a server that lacks one would fail every render's first task
    await register_search_attributes(client)
    backends = make_backends(settings, graph_config) if "gpu" in roles else {}
    for backend in backends.values():
        wait_ready = getattr(backend, "wait_ready", None)
        if wait_ready is not None:  # a GPU worker polls Temporal only once its ComfyUI answers
            log.info("waiting for the %s backend", backend.name)
            health.set(f"waiting for {backend.name}")
            device = await wait_ready()
            log.info("%s ready: %s", backend.name, device)
        check = getattr(backend, "check", None)
        if check is not None and settings.comfy_doctor:
            health.set(f"doctor checks {backend.name}")
            refuse_unless_healthy(backend.name, await check())
    workers = build_workers(client, settings, store, backends=backends or None, graph_config=graph_config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(w.run()) for w in workers]
    records = [w.longtalk_fleet for w in workers if getattr(w, "longtalk_fleet", None) is not None]
    beats = [asyncio.create_task(r.run()) for r in records]
    print(f"{READY_LINE}: queues {', '.join(w.task_queue for w in workers)} build {settings.build_id}",
          flush=True)
    health.set("polling", ready=True)
    done, _ = await asyncio.wait([asyncio.create_task(stop.wait()), *tasks],
                                 return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        if task in done and task.exception():
            raise task.exception()
    log.info("shutting down")
    health.set("stopping")  # no longer ready; alive until the windows in flight are done
    await shutdown(workers, beats)


async def shutdown(workers: list[Worker], beats: list[asyncio.Task]) -> None:
    """Stop the workers (the windows in flight get their grace), then their fleet records'
    writers; a worker that stops cleanly leaves the fleet page at once, and the RunPod
    dispatcher's HTTP session to the endpoint is closed."""
    await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
    for beat in beats:
        beat.cancel()
    await asyncio.gather(*beats, return_exceptions=True)
    for w in workers:
        record = getattr(w, "longtalk_fleet", None)
        if record is not None:
            await asyncio.to_thread(record.remove)
        endpoint = getattr(record, "endpoint", None)
        if endpoint is not None:
            await endpoint.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # the composition root: the only place a worker reads its environment
    asyncio.run(run(Settings.from_env(), GraphConfig.from_env()))


if __name__ == "__main__":
    main()
