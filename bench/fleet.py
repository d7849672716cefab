"""The fleet benchmark (`bench/run.py fleet`): one long render on G "GPU" workers.

The GPU is the timed backend (longtalk/backends/timed.py): every window takes
--window-seconds of wall time in an asyncio sleep beside a small (64x64) preview render, so
G workers on a 2-core machine behave like G GPUs and the cores are not the bottleneck. The
stack is real: a Temporal dev server, the S3 server, the CPU worker (workflows, ingest, plan,
stitch, publish) and G GPU workers, each polling the same GPU queue with
max_concurrent_activities=1 like a real one, each a `worker.py` process of its own (the CPU
worker runs in this process). The render is submitted through starter.main with the job's
`parallel_chains` = G.

For each G it measures
- wall: the render's workflow, start to close (from its history);
- speedup: wall(G=1) / wall(G);
- busy: the windows' backend time (meta.json render_s, "GPU time") / (G * wall);
- join smoothness on the output video: the mean absolute difference between consecutive
  frames at chain joins, at ordinary window seams and everywhere else (interior).

--mixed: on --mixed-gpus workers (default 4), a 10-second render is submitted while a
--mixed-minutes render (default 60) uses every worker, and timed against its time alone on
the same workers (target: within 2x its solo time + one window; Temporal's fairness keys get
it there).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    import sys

    print(f"[fleet {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _ts(event) -> float:
    return event.event_time.seconds + event.event_time.nanos / 1e9


async def _workflow_span(client, render_id: str) -> tuple[float, float]:
    from temporalio.api.enums.v1 import EventType

    events = (await client.get_workflow_handle(render_id).fetch_history()).events
    start = next(_ts(e) for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED)
    end = next(_ts(e) for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED)
    return start, end


def frame_diffs(path: Path) -> np.ndarray:
    """Mean absolute difference between frame t-1 and frame t, for t >= 1 (index t)."""
    import av

    out = [0.0]
    prev = None
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24").astype(np.int16)
            if prev is not None:
                out.append(float(np.mean(np.abs(rgb - prev))))
            prev = rgb
    return np.asarray(out)


def join_smoothness(diffs: np.ndarray, plan: dict) -> dict:
    """Mean frame difference where chains join, where ordinary windows meet, and inside."""
    from longtalk.windows import WindowParams, window

    params = WindowParams(plan["window"], plan["motion"], plan["fps"])
    total = plan["total_frames"]
    firsts = {c["first"] for c in plan["chains"]}
    joins = [window(c, total, params).keep_start for c in sorted(firsts) if c > 0]
    seams = [window(k, total, params).keep_start for k in range(1, plan["windows"]) if k not in firsts]
    special = set(joins) | set(seams)
    interior = [t for t in range(1, diffs.size) if t not in special]

    def mean(idx):
        return round(float(np.mean(diffs[idx])), 3) if idx else None

    # with a dissolve the jump is spread over the frames before the join: the largest step
    # within the 12 frames up to the join is what a viewer sees
    near = [float(np.max(diffs[max(1, j - 11): j + 1])) for j in joins]
    return {"joins": len(joins), "join_mad": mean(joins),
            "join_near_max_step": round(float(np.mean(near)), 3) if near else None,
            "seam_mad": mean(seams), "interior_mad": mean(interior)}


class Fleet:
    """The CPU worker (in this process) and G GPU workers, each its own `worker.py` process
    (LONGTALK_WORKER_ROLES=gpu, the timed backend, max_concurrent_activities=1 like a real
    one), on fresh task queues."""

    def __init__(self, client, settings, store, gpus: int, window_s: float, tmp: Path) -> None:
        from worker import build_workers

        tag = uuid.uuid4().hex[:6]
        self.settings = dataclasses.replace(settings, render_queue=f"render-{tag}", gpu_queue=f"gpu-{tag}",
                                            backend="timed", timed_window_s=window_s)
        cpu = dataclasses.replace(self.settings, worker_roles="cpu")
        self.workers = build_workers(client, cpu, store, identity=f"fleet-cpu-{tag}")
        self.gpus, self.tmp, self.tag = gpus, tmp, tag
        self.procs: list = []
        self.tasks: list[asyncio.Task] = []

    def _spawn(self, i: int):
        import os
        import subprocess
        import sys

        folder = self.tmp / f"gpu-{self.tag}-{i}"
        folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **dataclasses.replace(self.settings, worker_roles="gpu", data_dir=folder).to_env()}
        logf = open(folder / "worker.log", "wb")
        proc = subprocess.Popen([sys.executable, str(ROOT / "worker.py")], cwd=ROOT, env=env, stdout=logf,
                                stderr=subprocess.STDOUT)
        return proc, folder / "worker.log", logf

    async def __aenter__(self) -> "Fleet":
        from longtalk.stack import READY_LINE

        self.procs = [self._spawn(i) for i in range(self.gpus)]
        self.tasks = [asyncio.create_task(w.run()) for w in self.workers]
        deadline = time.monotonic() + 120
        for proc, path, _ in self.procs:
            while READY_LINE not in path.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"GPU worker did not start:\n{path.read_text(errors='replace')[-3000:]}")
                await asyncio.sleep(0.2)
        return self

    async def __aexit__(self, *exc) -> None:
        for proc, _, _ in self.procs:
            proc.terminate()
        for w in self.workers:
            await w.shutdown()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for proc, _, logf in self.procs:
            try:
                await asyncio.to_thread(proc.wait, 60)
            except Exception:
                proc.kill()
            logf.close()


async def timeline(client, render_id: str, chains: int, metas: list[dict]) -> dict:
    """Where the wall time goes, from the histories: before the first window (ingest, plan,
    starting the chains), after the last (stitch, publish), and per window: the chain's
    workflow task between two windows (gap), waiting for a worker (queue), the activity's own
    work beside the backend (inputs, storing the clip: worker) and the backend itself."""
    from run import activity_spans  # bench/run.py

    start, end = await _workflow_span(client, render_id)
    stages = {}
    for a in activity_spans((await client.get_workflow_handle(render_id).fetch_history()).events):
        if "completed" in a:
            stages[a["name"]] = round(stages.get(a["name"], 0.0) + a["completed"] - a["started"], 2)
    spans = []
    for c in range(chains):
        chain_id = f"{render_id}/chain-{c:03d}"
        acts = []  # every run of the chain (it continues as new every windows_per_run windows)
        async for run in client.list_workflows(f'WorkflowId = "{chain_id}"'):
            events = (await client.get_workflow_handle(chain_id, run_id=run.run_id).fetch_history()).events
            acts += [a for a in activity_spans(events) if a["name"] == "render_window" and "completed" in a]
        acts.sort(key=lambda a: a["scheduled"])
        prev = None
        for a in acts:
            a["gap"] = a["scheduled"] - prev if prev is not None else None
            prev = a["completed"]
        spans += acts
    if not spans:
        return {}
    order = sorted(spans, key=lambda a: a["completed"])
    gaps = [a["gap"] for a in spans if a["gap"] is not None]
    queue = [a["started"] - a["scheduled"] for a in spans]
    run = [a["completed"] - a["started"] for a in spans]
    backend = [m["render_s"] for m in metas]

    def mean(xs):
        return round(float(np.mean(xs)), 3) if xs else None

    return {"before_first_window_s": round(min(a["scheduled"] for a in spans) - start, 2),
            "after_last_window_s": round(end - order[-1]["completed"], 2), "stages_s": stages,
            "per_window_s": {"gap": mean(gaps), "queue": mean(queue),
                             "worker": round(mean(run) - mean(backend), 3), "backend": mean(backend)}}


async def render(client, settings, job: dict, tmp: Path, render_id: str) -> dict:
    import starter

    path = tmp / f"{render_id}.json"
    path.write_text(json.dumps({"input": job}))
    out, err = io.StringIO(), io.StringIO()
    rc = await starter.main([str(path), "--id", render_id, "--backend", "timed", "--quiet"], client=client,
                            settings=settings, stdout=out, stderr=err)
    if rc != 0:
        raise RuntimeError(f"render {render_id} failed (rc={rc}): {err.getvalue()[-2000:]}")
    return json.loads(out.getvalue())


async def run_one(client, settings, store, tmp: Path, speech: Path, gpus: int, window_s: float,
                  size: int) -> dict:
    from longtalk.payloads import output_key, window_meta_key

    render_id = f"fleet-g{gpus}-{uuid.uuid4().hex[:6]}"
    job = {"image_path": str(Path(__file__).resolve().parent.parent / "examples" / "portrait.png"),
           "wav_path": str(speech), "width": size, "height": size, "parallel_chains": gpus}
    async with Fleet(client, settings, store, gpus, window_s, tmp) as fleet:
        log(f"G={gpus}: rendering {render_id}")
        t0 = time.monotonic()
        result = await render(client, fleet.settings, job, tmp, render_id)
        client_wall = time.monotonic() - t0
    start, end = await _workflow_span(client, render_id)
    wall = end - start
    plan = store.get_json(f"renders/{render_id}/plan.json")
    metas = [store.get_json(window_meta_key(render_id, k)) for k in range(plan["windows"])]
    gpu_s = sum(m["render_s"] for m in metas)
    workers = sorted({m["worker"] for m in metas})
    video = store.download(output_key(render_id), tmp / f"{render_id}.mp4")
    smooth = join_smoothness(frame_diffs(video), plan)
    lengths = [c["last"] - c["first"] + 1 for c in plan["chains"]]
    # chain affinity: how often a chain's next window ran on another worker than its previous one
    moves = sum(1 for c in plan["chains"] for k in range(c["first"] + 1, c["last"] + 1)
                if metas[k]["worker"] != metas[k - 1]["worker"])
    steps = sum(n - 1 for n in lengths)
    where = await timeline(client, render_id, len(lengths), metas)
    res = {"gpus": gpus, "render_id": render_id, "windows": plan["windows"], "frames": result["frames"],
           "wall_s": round(wall, 2), "client_wall_s": round(client_wall, 2), "gpu_s": round(gpu_s, 2),
           "busy": round(gpu_s / (gpus * wall), 3), "workers_used": len(workers), "chains": lengths,
           "worker_changes": moves, "worker_change_rate": round(moves / steps, 3) if steps else 0.0,
           "chain_plan": plan.get("chain_plan"), "smoothness": smooth,
           "ideal_wall_s": round(max(lengths) * window_s, 1), "timeline": where}
    log(f"G={gpus}: wall {wall:.1f}s, {plan['windows']} windows in chains {lengths}, busy {res['busy']:.2f}, "
        f"joins {smooth}, timeline {where}")
    store.delete_prefix(f"renders/{render_id}/")
    return res


async def run_mixed(client, settings, store, tmp: Path, speech: Path, short_speech: Path, gpus: int,
                    window_s: float, size: int) -> dict:
    """A short render alone on G workers, then the same short render while a long one keeps
    every worker busy."""
    portrait = str(Path(__file__).resolve().parent.parent / "examples" / "portrait.png")
    short_job = {"image_path": portrait, "wav_path": str(short_speech), "width": size, "height": size,
                 "parallel_chains": 1}
    long_job = {"image_path": portrait, "wav_path": str(speech), "width": size, "height": size,
                "parallel_chains": gpus}
    async with Fleet(client, settings, store, gpus, window_s, tmp) as fleet:
        solo_id = f"fleet-short-solo-{uuid.uuid4().hex[:6]}"
        await render(client, fleet.settings, short_job, tmp, solo_id)
        solo = (lambda s, e: e - s)(*await _workflow_span(client, solo_id))
        long_id = f"fleet-long-{uuid.uuid4().hex[:6]}"
        long_task = asyncio.create_task(render(client, fleet.settings, long_job, tmp, long_id))
        # wait until the long render's windows occupy every worker, then submit the short one
        while not long_task.done():
            await asyncio.sleep(1.0)
            if len([k for k in store.list(f"renders/{long_id}/windows/") if k.endswith("/meta.json")]) >= 2 * gpus:
                break
        busy_id = f"fleet-short-busy-{uuid.uuid4().hex[:6]}"
        await render(client, fleet.settings, short_job, tmp, busy_id)
        busy = (lambda s, e: e - s)(*await _workflow_span(client, busy_id))
        long_task.cancel()
        await client.get_workflow_handle(long_id).cancel()
        try:
            await long_task
        except (asyncio.CancelledError, Exception):
            pass
    windows = store.get_json(f"renders/{solo_id}/plan.json")["windows"]
    target = 2 * solo + window_s
    for rid in (solo_id, busy_id, long_id):
        store.delete_prefix(f"renders/{rid}/")
    return {"gpus": gpus, "short_windows": windows, "solo_s": round(solo, 2), "with_long_s": round(busy, 2),
            "target_s": round(target, 2), "met": busy <= target}


def bench_fleet(ctx: dict, gpus: list[int], window_s: float, minutes: float, size: int, mixed: bool,
                join_blend: int | None = None, mixed_gpus: int = 4, mixed_minutes: float = 60.0) -> dict:
    from longtalk.stack import Process, temporal_service

    tmp, settings, store, media = ctx["tmp"], ctx["settings"], ctx["store"], ctx["media"]
    if join_blend is not None:
        settings = dataclasses.replace(settings, join_blend_frames=join_blend)
    speech = media.looped_speech(minutes * 60)
    temporal = Process(temporal_service(settings, db_file=tmp / "temporal-fleet.db", headless=True),
                       tmp / "run", tmp / "logs")
    log("starting the Temporal dev server")
    temporal.start()
    out: dict = {"window_s": window_s, "minutes": minutes, "size": size, "runs": [],
                 "join_blend_frames": settings.join_blend_frames}
    try:
        temporal.wait_ready(90)

        async def main() -> None:
            from temporalio.client import Client

            from longtalk.converter import DATA_CONVERTER

            client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace,
                                          data_converter=DATA_CONVERTER)
            for g in gpus:
                out["runs"].append(await run_one(client, settings, store, tmp, speech, g, window_s, size))
            if mixed:
                from tests.media import cut_audio

                short = cut_audio(Path(__file__).resolve().parent.parent / "examples" / "speech.ogg",
                                  tmp / "short10.wav", 0.0, 10.0)
                long_speech = media.looped_speech(mixed_minutes * 60)
                out["mixed"] = await run_mixed(client, settings, store, tmp, long_speech, short, mixed_gpus,
                                               window_s, size)
                out["mixed"]["long_minutes"] = mixed_minutes

        asyncio.run(main())
    finally:
        temporal.stop()
    base = next((r["wall_s"] for r in out["runs"] if r["gpus"] == 1), None)
    for r in out["runs"]:
        r["speedup"] = round(base / r["wall_s"], 2) if base else None
    return out


def report(res: dict) -> list[str]:
    from run import table  # bench/run.py's table

    lines: list[str] = []
    if res["runs"]:  # --gpus "" --mixed: the mixed case alone
        lines.append(f"== fleet: one {res['minutes']:g}-minute render ({res['size']}x{res['size']}, timed backend, "
                     f"{res['window_s']:g} s per window) on G GPU workers; chains = G (per-job parallel_chains); "
                     f"join dissolve {res.get('join_blend_frames')} frames ==")
        rows = []
        for r in res["runs"]:
            s = r["smoothness"]
            rows.append([r["gpus"], r["windows"], "/".join(map(str, r["chains"])), r["wall_s"], r["ideal_wall_s"],
                         r["speedup"], r["busy"], r["workers_used"], r.get("worker_changes"), s["joins"],
                         s["join_mad"], s.get("join_near_max_step"), s["seam_mad"], s["interior_mad"]])
        lines.append(table(["G", "windows", "chain lengths", "wall s", "longest chain x S", "speedup", "busy",
                            "workers used", "chain moves", "joins", "join MAD", "max step near join", "seam MAD",
                            "interior MAD"], rows))
        lines.append("  (chain moves: windows that ran on another GPU worker than the window before them in "
                     "their chain; chain affinity keeps this near 0)")
        lines.append("  (wall: the render's workflow start to close; busy: windows' backend time / (G x wall); "
                     "MAD: mean absolute difference of consecutive output frames, 0-255, at chain joins, at "
                     "ordinary window seams, and elsewhere)")
    for r in res["runs"]:
        t = r.get("timeline") or {}
        if t:
            w = t["per_window_s"]
            lines.append(f"  G={r['gpus']} where the wall goes: {t['before_first_window_s']} s before the first window, "
                         f"{t['after_last_window_s']} s after the last (activities {t['stages_s']}); per window {w['backend']} s backend + "
                         f"{w['worker']} s worker + {w['queue']} s queued + {w['gap']} s between windows")
    for r in res["runs"]:
        for cut in (r.get("chain_plan") or {}).get("cuts", []):
            lines.append(f"  G={r['gpus']} cut at window {cut['window']}: {cut['reason']}")
    if "mixed" in res:
        m = res["mixed"]
        lines.append(f"mixed (G={m['gpus']}): a {m['short_windows']}-window render took {m['with_long_s']} s beside "
                     f"a {m.get('long_minutes', res['minutes']):g}-minute render using every worker, {m['solo_s']} s alone; target <= 2 x solo + one window = {m['target_s']} s: "
                     f"{'met' if m['met'] else 'NOT met'}")
    return lines


def targets(res: dict) -> list[str]:
    notes = []
    for r in res["runs"]:
        goal = {4: 3.4, 8: 6.0}.get(r["gpus"])
        if goal and r["speedup"] is not None and r["speedup"] < goal:
            notes.append(f"fleet G={r['gpus']}: speedup {r['speedup']} < {goal}")
    if "mixed" in res and not res["mixed"]["met"]:
        notes.append(f"fleet mixed: short render {res['mixed']['with_long_s']} s > {res['mixed']['target_s']} s")
    return notes
