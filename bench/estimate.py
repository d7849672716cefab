"""The estimate benchmark (`bench/run.py estimate`): how close the estimate's wall time comes to
the actual one (issue 21: within 10%).

On G timed-backend "GPU" workers (bench/fleet.py's Fleet: worker.py processes, each window
--window-seconds of wall time), for each G:

1. a warm-up render, so the workers' fleet records carry this kind of window's history (the
   estimate's source for GPU seconds; a fresh fleet would use LONGTALK_TIMED_WINDOW_S);
2. alone: the job is estimated (longtalk.estimate, what /estimate and starter.py --estimate
   call), then submitted; its actual wall time is its workflow's start to close;
3. behind a queue: --ahead renders are submitted and planned first, then the job is estimated
   and submitted while they render.

Every job uses parallel_chains 0 (one chain per GPU worker in the fleet registry).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from common import table, workflow_span  # bench/common.py
from fleet import Fleet, log, timeline  # bench/fleet.py

ROOT = Path(__file__).resolve().parent.parent
PORTRAIT = ROOT / "examples" / "portrait.png"


def _job(speech: Path, size: int) -> dict:
    return {"input": {"image_path": str(PORTRAIT), "wav_path": str(speech), "width": size, "height": size,
                      "parallel_chains": 0}}


async def _submit(client, settings, store, speech: Path, size: int, tag: str):
    from longtalk.inputs import parse_job, submit

    job = parse_job(_job(speech, size), settings)
    rid = f"est-{tag}-{uuid.uuid4().hex[:6]}"
    submission = await submit(client, settings, job, rid, "timed", store, log=lambda _m: None)
    return rid, submission.handle


async def _planned(client, rids: list[str]) -> None:
    """Until visibility lists every render in `rids` with its windows (what the estimate reads:
    a render it lists unplanned is not counted)."""
    from longtalk.visibility import WINDOWS_TOTAL_KEY

    while True:
        listed = [w async for w in client.list_workflows("WorkflowType = 'RenderVideo'") if w.id in rids]
        if len(listed) == len(rids) and all(w.typed_search_attributes.get(WINDOWS_TOTAL_KEY) for w in listed):
            return
        await asyncio.sleep(0.2)


async def _measured(client, settings, store, speech: Path, size: int, tag: str) -> dict:
    """Estimate the job, submit it at once, wait for it: estimated and actual wall time."""
    from longtalk.estimate import estimate
    from longtalk.inputs import parse_job
    from longtalk.payloads import window_meta_key

    est = await estimate(client, store, settings, parse_job(_job(speech, size), settings), "timed")
    rid, handle = await _submit(client, settings, store, speech, size, tag)
    await handle.result()
    start, end = await workflow_span(client, rid)
    actual = end - start
    err = (est["wall_s"] - actual) / actual
    plan = store.get_json(f"renders/{rid}/plan.json")
    metas = [store.get_json(window_meta_key(rid, k)) for k in range(plan["windows"])]
    where = await timeline(client, rid, len(plan["chains"]), metas)
    chains = [c["last"] - c["first"] + 1 for c in plan["chains"]]
    log(f"{tag}: estimated {est['wall_s']} s, actual {actual:.1f} s ({err:+.1%}); chains {est['chain_windows']} "
        f"(plan {chains}), queue ahead {est.get('queue_ahead')}; {where}")
    return {"render_id": rid, "windows": est["windows"], "chains": est["chains"], "estimated_s": est["wall_s"],
            "actual_s": round(actual, 1), "error": round(err, 3), "queue_ahead": est.get("queue_ahead"),
            "chain_windows": est["chain_windows"], "plan_chain_windows": chains,
            "gpu_source": est["sources"]["gpu_s"], "estimated_gpu_busy_s": est["gpu_busy_s"],
            "wall_source": est["sources"]["wall_s"], "timeline": where}


async def run_g(client, settings, store, tmp: Path, media, gpus: int, window_s: float, size: int,
                seconds: float, ahead: int, ahead_seconds: float) -> dict:
    speech, behind = media.looped_speech(seconds), media.looped_speech(ahead_seconds)
    async with Fleet(client, settings, store, gpus, window_s, tmp) as fleet:
        s = fleet.settings
        await asyncio.sleep(1.0)  # the workers' first fleet records
        rid, handle = await _submit(client, s, store, media.looped_speech(30), size, f"g{gpus}-warm")
        await handle.result()
        alone = await _measured(client, s, store, speech, size, f"g{gpus}-alone")
        queued = [await _submit(client, s, store, behind, size, f"g{gpus}-ahead{i}") for i in range(ahead)]
        await _planned(client, [r for r, _ in queued])
        busy = await _measured(client, s, store, speech, size, f"g{gpus}-behind{ahead}")
        await asyncio.gather(*(h.result() for _, h in queued))
    for prefix in [rid, alone["render_id"], busy["render_id"], *(r for r, _ in queued)]:
        store.delete_prefix(f"renders/{prefix}/")
    return {"gpus": gpus, "alone": alone, "behind": busy}


def bench_estimate(ctx: dict, gpus: list[int], window_s: float, size: int, seconds: float, ahead: int,
                   ahead_seconds: float) -> dict:
    from longtalk.stack import Process, temporal_service

    tmp, settings, store, media = ctx["tmp"], ctx["settings"], ctx["store"], ctx["media"]
    temporal = Process(temporal_service(settings, db_file=tmp / "temporal-estimate.db", headless=True),
                       tmp / "run", tmp / "logs")
    log("starting the Temporal dev server")
    temporal.start()
    out: dict = {"window_s": window_s, "size": size, "seconds": seconds, "ahead": ahead,
                 "ahead_seconds": ahead_seconds, "runs": []}
    try:
        temporal.wait_ready(90)

        async def main() -> None:
            from longtalk import temporal_connect

            client = await temporal_connect.connect(settings)
            for g in gpus:
                t0 = time.monotonic()
                out["runs"].append(await run_g(client, settings, store, tmp, media, g, window_s, size, seconds,
                                               ahead, ahead_seconds))
                log(f"G={g} done in {time.monotonic() - t0:.0f} s")

        asyncio.run(main())
    finally:
        temporal.stop()
    return out


def report(res: dict) -> list[str]:

    lines = [f"== estimate: a {res['seconds']:g}-second job ({res['size']}x{res['size']}, timed backend, "
             f"{res['window_s']:g} s per window) on G GPU workers, alone and behind {res['ahead']} "
             f"{res['ahead_seconds']:g}-second renders; parallel_chains 0 =="]
    rows = []
    for r in res["runs"]:
        for case in ("alone", "behind"):
            m = r[case]
            rows.append([r["gpus"], case, m["windows"], m["chains"], (m["queue_ahead"] or {}).get("windows"),
                         m["estimated_s"], m["actual_s"], f"{m['error']:+.1%}"])
    lines.append(table(["G", "case", "windows", "chains", "windows ahead", "estimated wall s", "actual wall s",
                        "error"], rows))
    lines.append("  (actual: the render's workflow start to close; estimated: longtalk.estimate just before "
                 "submitting; goal |error| <= 10%)")
    if res["runs"]:
        lines.append(f"  GPU seconds source: {res['runs'][-1]['alone']['gpu_source']}")
    return lines


def targets(res: dict) -> list[str]:
    return [f"estimate G={r['gpus']} {case}: error {r[case]['error']:+.1%} beyond 10%"
            for r in res["runs"] for case in ("alone", "behind") if abs(r[case]["error"]) > 0.10]

