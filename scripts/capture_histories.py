"""Capture the workflow histories of one release, for the replay test (tests/test_replay.py).

    .venv/bin/python scripts/capture_histories.py [RELEASE]      (make histories)

Starts its own embedded stack (Temporal dev server + S3 server, longtalk.stack) on free
loopback ports in a temporary folder, runs real workers (in-process, and GPU workers as
subprocesses where one must be killed), renders one small job per workflow shape with the
preview backend, and writes the history of every finished workflow run (RenderVideo, each
RenderChain child, every continued run of a chain, and the purge shape's PurgeQueue) to

    tests/histories/<RELEASE>/<shape>/<workflow-id-sanitised>[.run-N].json
    tests/histories/<RELEASE>/MANIFEST.json

RELEASE defaults to the short git commit of HEAD. Run it BEFORE changing workflow code:
the histories of a release are what its workflows did, and every later workflow change must
replay them (tests/test_replay.py). The S3 credentials are random per capture and never go
through Temporal; the script checks that the secret appears in no stored file.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import datetime as dt
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import temporalio  # noqa: E402
from temporalio.client import Client, WorkflowFailureError  # noqa: E402

from longtalk.backends.preview import PreviewBackend  # noqa: E402
from longtalk.converter import DATA_CONVERTER  # noqa: E402
from longtalk.settings import Settings  # noqa: E402
from longtalk.stack import READY_LINE, Process, free_port, s3_service, temporal_service  # noqa: E402
from tests.media import cut_audio  # noqa: E402  (real speech cut by ffmpeg-python)

HISTORIES = ROOT / "tests" / "histories"
# what decides how a workflow replays: if these differ from the release commit, the
# histories would not be the release's (the script refuses unless --allow-dirty)
WORKFLOW_SOURCES = ["workflows", "longtalk/payloads.py", "longtalk/spec.py", "longtalk/activity_options.py",
                    "longtalk/windows.py", "longtalk/errors.py"]
SIZE = 64  # px: the smallest allowed picture
WINDOW, MOTION = 17, 9  # W = 4k+1, 0 < M < W: stride 8 frames, so a few windows need ~2 s of audio

SHAPES = {
    "single": "one chain, completes: ingest, plan, one RenderChain child, render_window per window, "
              "windows_done signals to the parent, stitch, publish",
    "parallel": "parallel_chains=2: the plan cuts the windows at a speech pause into two chains; two "
                "RenderChain children run at once and both signal the parent",
    "continue_as_new": "windows_per_run=2 with 5 windows: the chain continues as new twice (three runs); "
                       "the parent sees one child",
    "cancelled": "the render is cancelled while window 1 renders: the cancel reaches the chain and its "
                 "render_window activity, the chain ends cancelled, RenderVideo runs record_cancelled "
                 "and ends cancelled",
    "input_error": "undecodable audio put into the bucket past the client's checks: ingest fails with a "
                   "non-retryable InputError naming the field (wav_url), RenderVideo runs discard and fails",
    "worker_crash": "the GPU worker process is SIGKILLed mid-window and another one starts: the "
                    "render_window attempt times out on heartbeats (heartbeat_timeout_s=3) and is retried "
                    "on the new worker (attempt 2); the render completes",
    "purge": "a render queued on a queue no worker polls; /purge-queue's path (Renders.purge_queue) starts "
             "PurgeQueue, whose purge_queued activity (the API's worker) cancels it; a CPU worker then ends "
             "it cancelled (record_cancelled)",
}


# ---- helpers -------------------------------------------------------------------------
def git(*args: str) -> str:
    return subprocess.run(["git", "--no-optional-locks", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def sanitise(workflow_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", workflow_id)


class SlowPreview(PreviewBackend):
    """The real preview renderer, made slow (a sleep per window) so a test can act mid-window."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    async def render_window(self, job, progress=None):
        await asyncio.sleep(self.delay_s)  # cancellable: a cancel arrives through heartbeats
        return await super().render_window(job, progress)


async def until(predicate, timeout: float = 120.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(every)
    raise TimeoutError("condition not reached")


def exists(store, key: str):
    return lambda: asyncio.to_thread(store.exists, key)


def attempt_started(store, render_id: str, k: int):
    from longtalk.payloads import window_prefix

    async def check():
        return bool(await asyncio.to_thread(lambda: list(store.list(window_prefix(render_id, k) + "attempts/"))))
    return check


# ---- a GPU worker subprocess (for the crash) ------------------------------------------
async def gpu_worker_main(delay_s: float, identity: str) -> None:
    """`capture_histories.py --gpu-worker`: a GPU worker with the slow preview backend,
    settings from LONGTALK_ variables, the same ready line as worker.py."""
    from longtalk.store import ObjectStore
    from worker import build_workers

    settings = Settings.from_env()
    client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace,
                                  identity=identity, data_converter=DATA_CONVERTER)
    store = ObjectStore.from_settings(settings)
    workers = build_workers(client, settings, store, backends={"preview": SlowPreview(delay_s)}, identity=identity)
    tasks = [asyncio.create_task(w.run()) for w in workers]
    print(f"{READY_LINE}: queues {', '.join(w.task_queue for w in workers)}", flush=True)
    await asyncio.gather(*tasks)


class WorkerProcess:
    def __init__(self, settings: Settings, log: Path, delay_s: float, identity: str) -> None:
        env = {**os.environ, **settings.to_env(), "LONGTALK_WORKER_ROLES": "gpu"}
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--gpu-worker", "--delay", str(delay_s),
                 "--identity", identity], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)

    async def ready(self, timeout: float = 60.0) -> "WorkerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY_LINE in self.log.read_text(errors="replace"):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"GPU worker exited: {self.log.read_text(errors='replace')[-3000:]}")
            await asyncio.sleep(0.1)
        raise TimeoutError(f"GPU worker not ready after {timeout}s ({self.log})")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=20)


# ---- histories -------------------------------------------------------------------------
async def runs_of(client: Client, render_id: str) -> list[tuple[str, str, str, object]]:
    """(workflow type, workflow id, run id, history) of RenderVideo and every run of each of
    its chains, found through the histories themselves (child started -> continued as new)."""
    parent = await client.get_workflow_handle(render_id).fetch_history()
    parent_run = parent.events[0].workflow_execution_started_event_attributes.original_execution_run_id
    out = [("RenderVideo", render_id, parent_run, parent)]
    for event in parent.events:
        if not event.HasField("child_workflow_execution_started_event_attributes"):
            continue
        execution = event.child_workflow_execution_started_event_attributes.workflow_execution
        run_id = execution.run_id
        while run_id:
            history = await client.get_workflow_handle(execution.workflow_id, run_id=run_id).fetch_history()
            out.append(("RenderChain", execution.workflow_id, run_id, history))
            last = history.events[-1]
            run_id = (last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
                      if last.HasField("workflow_execution_continued_as_new_event_attributes") else "")
    return out


def closed(history) -> bool:
    last = history.events[-1]
    return any(last.HasField(f"workflow_execution_{kind}_event_attributes") for kind in
               ("completed", "failed", "canceled", "terminated", "timed_out", "continued_as_new"))


async def save_shape(client: Client, release_dir: Path, shape: str, render_id: str,
                     others: list[tuple[str, str]] = ()) -> list[dict]:
    """The render's histories and those of `others` ((workflow type, id): one run each)."""
    found = await runs_of(client, render_id)
    for wf_type, wid in others:
        history = await client.get_workflow_handle(wid).fetch_history()
        run_id = history.events[0].workflow_execution_started_event_attributes.original_execution_run_id
        found.append((wf_type, wid, run_id, history))
    per_id: dict[str, int] = {}
    for _, wid, _, _ in found:
        per_id[wid] = per_id.get(wid, 0) + 1
    folder = release_dir / shape
    folder.mkdir(parents=True, exist_ok=True)
    entries, seen = [], {}
    for wf_type, wid, run_id, history in found:
        if not closed(history):
            raise RuntimeError(f"{shape}: {wid} run {run_id} is still open")
        seen[wid] = seen.get(wid, 0) + 1
        name = sanitise(wid) + (f".run-{seen[wid]}" if per_id[wid] > 1 else "") + ".json"
        text = history.to_json()
        (folder / name).write_text(text + "\n")
        entries.append({"file": f"{shape}/{name}", "workflow_type": wf_type, "workflow_id": wid,
                        "run_id": run_id, "events": len(history.events), "bytes": len(text) + 1,
                        "ends_with": history.events[-1].WhichOneof("attributes")
                        .removeprefix("workflow_execution_").removesuffix("_event_attributes")})
    return entries


def check_no_secret(release_dir: Path, secret: str) -> None:
    for path in release_dir.rglob("*.json"):
        text = path.read_text()
        decoded = "\n".join(base64.b64decode(m).decode("utf-8", "replace")
                            for m in re.findall(r'"data": "([^"]+)"', text))
        if secret in text or secret in decoded:
            raise RuntimeError(f"the S3 secret key is in {path}: not storing these histories")


def events_with(entries: list[dict], release_dir: Path, kind: str, wf_type: str | None = None) -> list[dict]:
    """Every event of this kind (e.g. "activity_task_started") in the shape's histories, as dicts."""
    out = []
    for e in entries:
        if wf_type and e["workflow_type"] != wf_type:
            continue
        for ev in json.loads((release_dir / e["file"]).read_text())["events"]:
            key = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), kind) + "EventAttributes"
            if key in ev:
                out.append(ev[key])
    return out


# ---- the shapes ------------------------------------------------------------------------
@dataclasses.dataclass
class Env:
    settings: Settings
    client: Client
    store: object
    tmp: Path
    media: dict


async def render(env: Env, render_id: str, audio: Path, gpu_queue: str, start_options: dict | None = None,
                 **overrides):
    """longtalk.inputs.submit, the path a user's job takes; returns the handle."""
    from longtalk.inputs import parse_job, submit

    settings = dataclasses.replace(env.settings, gpu_queue=gpu_queue, **overrides)
    job = parse_job({"input": {"image_path": str(env.media["portrait"]), "wav_path": str(audio),
                               "width": SIZE, "height": SIZE}}, settings)
    return (await submit(env.client, settings, job, render_id, "preview", env.store, log=lambda m: None,
                         **(start_options or {}))).handle


async def running_until(workers: list, awaitable):
    """Run these workers until `awaitable` is done; its result."""
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        return await awaitable
    finally:
        for w in workers:
            await asyncio.wait_for(w.shutdown(), 30)
        await asyncio.gather(*tasks, return_exceptions=True)


async def shape_single(env: Env, rid: str) -> None:
    await (await render(env, rid, env.media["3w"], "gpu")).result()


async def shape_parallel(env: Env, rid: str) -> None:
    await (await render(env, rid, env.media["11w"], "gpu", parallel_chains=2)).result()
    chains = env.store.get_json(f"renders/{rid}/plan.json")["chains"]
    assert len(chains) == 2, chains


async def shape_continue_as_new(env: Env, rid: str) -> None:
    await (await render(env, rid, env.media["5w"], "gpu", windows_per_run=2)).result()


async def shape_cancelled(env: Env, rid: str) -> None:
    from longtalk.payloads import window_meta_key

    handle = await render(env, rid, env.media["3w"], "gpu-slow")
    await until(exists(env.store, window_meta_key(rid, 0)))
    await until(attempt_started(env.store, rid, 1))
    await asyncio.sleep(0.5)
    await handle.cancel()
    try:
        await handle.result()
    except WorkflowFailureError as exc:
        assert type(exc.cause).__name__ == "CancelledError", exc.cause
    else:
        raise AssertionError("the render was not cancelled")
    manifest = env.store.get_json(f"renders/{rid}/manifest.json")
    assert manifest["status"] == "cancelled", manifest


async def shape_input_error(env: Env, rid: str) -> None:
    from longtalk.payloads import ActivityTimeouts, RenderRequest, RenderSpec
    from workflows.render import RenderVideo

    s = env.settings
    prefix = f"renders/{rid}/"
    env.store.put_bytes(prefix + "inputs/image-x.png", Path(env.media["portrait"]).read_bytes())
    env.store.put_bytes(prefix + "inputs/audio-x.ogg", (ROOT / "examples" / "speech.ogg").read_bytes()[:120])
    req = RenderRequest(render_id=rid, inputs={"image": prefix + "inputs/image-x.png",
                                               "audio": prefix + "inputs/audio-x.ogg"},
                        input_names={"image": "image_path", "audio": "wav_url"},
                        spec=RenderSpec(width=SIZE, height=SIZE, window=s.window, motion=s.motion, fps=s.fps),
                        windows_per_run=s.windows_per_run, gpu_queue="gpu",
                        timeouts=ActivityTimeouts(heartbeat_s=s.heartbeat_timeout_s))
    try:
        await env.client.execute_workflow(RenderVideo.run, req, id=rid, task_queue=s.render_queue)
    except WorkflowFailureError as exc:
        import starter
        assert "wav_url" in starter.failure_message(exc), starter.failure_message(exc)
    else:
        raise AssertionError("the render with undecodable audio did not fail")
    assert list(env.store.list(prefix)) == [], "discard did not run"


async def shape_worker_crash(env: Env, rid: str) -> None:
    from longtalk.payloads import window_meta_key

    queue = "gpu-crash"
    worker_settings = dataclasses.replace(env.settings, gpu_queue=queue)
    logs = env.tmp / "logs"
    first = await WorkerProcess(worker_settings, logs / "gpu-crash-1.log", 4.0, "capture-crash-1").ready()
    second = None
    try:
        handle = await render(env, rid, env.media["3w"], queue)
        await until(exists(env.store, window_meta_key(rid, 0)))
        await until(attempt_started(env.store, rid, 1))
        await asyncio.sleep(1.0)
        first.kill(signal.SIGKILL)  # mid-window 1: its heartbeats stop
        second = await WorkerProcess(worker_settings, logs / "gpu-crash-2.log", 0.0, "capture-crash-2").ready()
        await handle.result()
    finally:
        first.kill()
        if second is not None:
            second.kill(signal.SIGTERM)


async def shape_purge(env: Env, rid: str) -> list[tuple[str, str]]:
    from api.app import api_worker
    from api.service import Renders, attributes
    from tests.helpers import purges
    from worker import build_workers

    owner, idle = "capture", "render-idle"
    handle = await render(env, rid, env.media["3w"], "gpu", {"search_attributes": attributes(owner)},
                          render_queue=idle)
    renders = Renders(env.client, env.settings, env.store)
    for _ in range(100):  # visibility lists a new render within moments
        if (await env.client.count_workflows(renders.queued_query(owner))).count:
            break
        await asyncio.sleep(0.1)
    assert await renders.purge_queue(owner) == 1
    purge = (await purges(env.client, owner))[0]
    cancelled = await running_until([api_worker(env.client, env.settings, renders)],
                                    env.client.get_workflow_handle(purge.id).result())
    assert cancelled == 1, cancelled
    cpu = build_workers(env.client, dataclasses.replace(env.settings, render_queue=idle, worker_roles="cpu"),
                        env.store, backends={"preview": PreviewBackend()}, identity="capture-idle")
    try:
        await running_until(cpu, handle.result())
    except WorkflowFailureError as exc:
        assert type(exc.cause).__name__ == "CancelledError", exc.cause
    else:
        raise AssertionError("the purged render was not cancelled")
    return [("PurgeQueue", purge.id)]


async def check_shape(shape: str, entries: list[dict], release_dir: Path) -> None:
    """Each shape really exercised what MANIFEST says it does."""
    types = [e["workflow_type"] for e in entries]
    ends = {e["workflow_type"]: e["ends_with"] for e in entries}
    chain_ids = {e["workflow_id"] for e in entries if e["workflow_type"] == "RenderChain"}
    scheduled = [a["activityType"]["name"] for a in events_with(entries, release_dir, "activity_task_scheduled")]
    if shape == "single":
        assert len(chain_ids) == 1 and types.count("RenderChain") == 1 and ends["RenderVideo"] == "completed"
    elif shape == "parallel":
        assert len(chain_ids) == 2 and ends["RenderVideo"] == "completed", entries
    elif shape == "continue_as_new":
        assert len(chain_ids) == 1 and types.count("RenderChain") >= 3, entries
        assert ends["RenderVideo"] == "completed"
    elif shape == "cancelled":
        assert ends["RenderVideo"] == "canceled" and "record_cancelled" in scheduled, (ends, scheduled)
    elif shape == "input_error":
        assert ends["RenderVideo"] == "failed" and "discard" in scheduled and "RenderChain" not in types
    elif shape == "worker_crash":
        started = events_with(entries, release_dir, "activity_task_started", "RenderChain")
        retried = [s for s in started if int(s.get("attempt", 1)) > 1]
        # the lost window is retried after its heartbeat timeout, on the shared queue, or (chain
        # affinity) on the dead worker's own queue, where it times out before starting and the
        # chain schedules it on the shared queue
        timed_out = events_with(entries, release_dir, "activity_task_timed_out", "RenderChain")
        text = json.dumps(retried + timed_out).lower()
        assert (retried or timed_out) and "heartbeat" in text, (started, timed_out)
        assert ends["RenderVideo"] == "completed"
    elif shape == "purge":
        assert ends == {"RenderVideo": "canceled", "PurgeQueue": "completed"}, ends
        assert "purge_queued" in scheduled and "record_cancelled" in scheduled, scheduled


# ---- main ------------------------------------------------------------------------------
async def capture(release: str, shapes: list[str], keep: bool) -> Path:
    from longtalk.store import ObjectStore
    from worker import build_workers

    tmp = Path(tempfile.mkdtemp(prefix="longtalk-histories-"))
    secret = "capture-" + secrets.token_hex(16)
    settings = Settings(
        data_dir=tmp / "data", temporal_address=f"127.0.0.1:{free_port()}", s3_endpoint=f"127.0.0.1:{free_port()}",
        s3_access_key="capture-" + secrets.token_hex(4), s3_secret_key=secret, bucket="histories",
        render_queue="render", gpu_queue="gpu", window=WINDOW, motion=MOTION, heartbeat_timeout_s=3,
        input_roots=os.pathsep.join([str(ROOT), str(tmp)]), worker_roles="cpu,gpu",
    )
    (tmp / "s3" / settings.bucket).mkdir(parents=True)
    temporal = Process(temporal_service(settings, db_file=tmp / "temporal.db", headless=True), tmp / "run",
                       tmp / "logs")
    s3 = Process(s3_service(settings, tmp / "s3"), tmp / "run", tmp / "logs")
    release_dir = HISTORIES / release
    staging = HISTORIES / f".{release}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    tasks, workers = [], []
    try:
        for proc in (temporal, s3):
            proc.start()
            proc.wait_ready(90)
        # audio slices of real speech: T frames -> 1 + ceil((T - 17) / 8) windows
        media = {"portrait": ROOT / "examples" / "portrait.png",
                 "3w": cut_audio(ROOT / "examples" / "speech.ogg", tmp / "s3w.wav", 1.0, 1.2),   # T=30: 3
                 "4w": cut_audio(ROOT / "examples" / "speech.ogg", tmp / "s4w.wav", 1.0, 1.6),   # T=40: 4
                 "5w": cut_audio(ROOT / "examples" / "speech.ogg", tmp / "s5w.wav", 1.0, 1.8),   # T=45: 5
                 # two chains need 10 windows (longtalk.chains.MIN_WINDOWS_PER_CHAIN = 5 each)
                 "11w": cut_audio(ROOT / "examples" / "speech.ogg", tmp / "s11w.wav", 1.0, 3.6)}  # T=90: 11
        client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace,
                                      identity="capture-client", data_converter=DATA_CONVERTER)
        store = ObjectStore.from_settings(settings)
        store.ensure_bucket()
        workers = build_workers(client, settings, store, backends={"preview": PreviewBackend()}, identity="capture")
        workers += build_workers(client, dataclasses.replace(settings, worker_roles="gpu", gpu_queue="gpu-slow"),
                                 store, backends={"preview": SlowPreview(3.0)}, identity="capture-slow")
        tasks = [asyncio.create_task(w.run()) for w in workers]
        env = Env(settings, client, store, tmp, media)
        manifest_shapes = {}
        for shape in shapes:
            rid = f"h-{shape.replace('_', '-')}"
            began = time.monotonic()
            print(f"{shape}: rendering {rid}", flush=True)
            others = await globals()[f"shape_{shape}"](env, rid)
            entries = await save_shape(client, staging, shape, rid, others or [])
            await check_shape(shape, entries, staging)
            manifest_shapes[shape] = {"render_id": rid, "exercises": SHAPES[shape], "files": entries}
            print(f"{shape}: {len(entries)} histories, {sum(e['events'] for e in entries)} events, "
                  f"{sum(e['bytes'] for e in entries) / 1024:.1f} KiB, {time.monotonic() - began:.1f}s", flush=True)
        check_no_secret(staging, secret)
        head = git("rev-parse", "HEAD")
        manifest = {
            "release": release,
            "commit": head,
            "commit_short": git("rev-parse", "--short", "HEAD"),
            "workflow_sources_clean": not git("status", "--porcelain", "--", *WORKFLOW_SOURCES),
            "captured_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
            "temporalio": temporalio.__version__,
            "python": sys.version.split()[0],
            "workflows": ["RenderVideo", "RenderChain", "PurgeQueue"],
            "settings": {"width": SIZE, "height": SIZE, "window": WINDOW, "motion": MOTION, "fps": settings.fps,
                         "heartbeat_timeout_s": settings.heartbeat_timeout_s, "backend": "preview"},
            "shapes": manifest_shapes,
        }
        (staging / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.rmtree(release_dir, ignore_errors=True)
        staging.rename(release_dir)
        return release_dir
    finally:
        for w in workers:
            try:
                await asyncio.wait_for(w.shutdown(), 30)
            except Exception:
                pass
        await asyncio.gather(*tasks, return_exceptions=True)
        for proc in (s3, temporal):
            proc.stop()
        shutil.rmtree(staging, ignore_errors=True)
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("release", nargs="?", help="release name (default: the short git commit of HEAD)")
    p.add_argument("--shape", action="append", choices=list(SHAPES), help="only these shapes (repeatable)")
    p.add_argument("--allow-dirty", action="store_true",
                   help="capture although workflow code differs from HEAD (the histories are then not HEAD's)")
    p.add_argument("--keep", action="store_true", help="keep the temporary stack folder (logs)")
    p.add_argument("--gpu-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--delay", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--identity", default="capture-gpu", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.gpu_worker:
        asyncio.run(gpu_worker_main(args.delay, args.identity))
        return 0
    dirty = git("status", "--porcelain", "--", *WORKFLOW_SOURCES)
    if dirty and not args.allow_dirty:
        print(f"workflow code differs from HEAD:\n{dirty}\ncommit it first (or --allow-dirty)", file=sys.stderr)
        return 2
    if args.shape and not args.release:
        print("--shape captures only some shapes: name a scratch release for them (the replay test "
              "wants every shape in a release)", file=sys.stderr)
        return 2
    release = args.release or git("rev-parse", "--short", "HEAD")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", release):
        print(f"release name {release!r}: use letters, digits, '.', '_' or '-'", file=sys.stderr)
        return 2
    began = time.monotonic()
    out = asyncio.run(capture(release, args.shape or list(SHAPES), args.keep))
    total = sum(p.stat().st_size for p in out.rglob("*.json"))
    print(f"wrote {out.relative_to(ROOT)}: {len(list(out.rglob('*.json')))} files, {total / 1024:.1f} KiB "
          f"in {time.monotonic() - began:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
