"""What a finished render actually used, from its stored windows' meta.json (activities/gpu.py
writes busy_s, render_s and the device of every window it renders): GPU seconds and cost, per
GPU kind, beside the estimate the plan made (estimate.json beside plan.json).

Windows copied from a re-render's base cost nothing now and are left out; a window rendered
by an earlier run of the same render (a resumed one) counts; attempts that failed leave no
meta.json and are not counted on local GPUs.

Windows rendered on RunPod Serverless (their meta.json names the RunPod job) make one row of
their own, "pool": "runpod", from every job's record (windows/{k}/runpod/{job}.json, written by
the dispatcher), failed, timed-out and retried ones included, as RunPod bills them all:
`billed_s` is the jobs' executionTime summed, and its `cost` is at the price of the row's
device ("RunPod <GPU>"). RunPod also bills a worker's cold start and the idle timeout after a
job, which the job API does not report: `unseen_max_s` bounds them, each job's delayTime (a
cold start happens while a job waits for it) plus one idle timeout per job
(LONGTALK_RUNPOD_IDLE_TIMEOUT_S), and `cost_max` prices billed_s + unseen_max_s. A job
RunPod forgot before a dispatcher saw it end (404) has no times: `jobs_unreported` counts them.
"""

from __future__ import annotations

import collections

from .gpu_time import Prices
from .store import ObjectStore


def actual_usage(store: ObjectStore, meta_keys: list[str], prices: Prices, job_keys: list[str] = (),
                 idle_timeout_s: float = 0.0) -> dict:
    metas = [m for m in store.get_json_many(meta_keys) if m and not m.get("copied_from")]
    jobs = [j for j in store.get_json_many(list(job_keys)) if j]
    rows: dict[str, dict] = {}
    if jobs:
        rows["runpod"] = runpod_row([m for m in metas if m.get("job")], jobs, idle_timeout_s)
    for m in metas:
        if m.get("job"):  # rendered by a RunPod job: in its row
            continue
        device = m.get("device") or "unknown"
        row = rows.setdefault(device, {"device": device, "windows": 0, "gpu_s": 0.0, "gpu_busy_s": 0.0})
        row["windows"] += 1
        row["gpu_s"] += float(m.get("render_s") or 0.0)
        row["gpu_busy_s"] += float(m.get("busy_s", m.get("render_s")) or 0.0)
    cost: float | None = 0.0
    said = set()
    for row in rows.values():
        row["gpu_s"], row["gpu_busy_s"] = round(row["gpu_s"], 1), round(row["gpu_busy_s"], 1)
        price = prices.for_device(row["device"])
        if price is None:
            row["cost"] = cost = None
            said.add(f"no LONGTALK_GPU_PRICES price for {row['device']}")
            continue
        row["cost"] = round(row["gpu_busy_s"] * price[0], 4)
        if "unseen_max_s" in row:
            row["cost_max"] = round((row["billed_s"] + row["unseen_max_s"]) * price[0], 4)
        said.add(price[1])
        if cost is not None:
            cost += row["cost"]
    per_gpu = sorted(rows.values(), key=lambda r: r["device"])
    return {"windows_rendered": len(metas), "gpu_s": round(sum(r["gpu_s"] for r in per_gpu), 1),
            "gpu_busy_s": round(sum(r["gpu_busy_s"] for r in per_gpu), 1),
            "cost": None if cost is None else round(cost, 4), "per_gpu": per_gpu,
            "sources": {"gpu_s": "the stored windows' meta.json (render_s: the backend; busy_s: the worker held; "
                                 "RunPod: every job's executionTime)",
                        "cost": "; ".join(sorted(said)) or "no window rendered"}}


def runpod_row(metas: list[dict], jobs: list[dict], idle_timeout_s: float) -> dict:
    """The windows rendered on RunPod and every job of theirs (see the module's docstring)."""
    ended = [j for j in jobs if j.get("status")]
    billed = sum(int(j.get("executionTime") or 0) for j in ended) / 1000
    delay = sum(int(j.get("delayTime") or 0) for j in ended) / 1000
    gpus = collections.Counter(j["gpu"] for j in ended if j.get("gpu"))
    return {"device": "RunPod " + (gpus.most_common(1)[0][0] if gpus else "endpoint"), "pool": "runpod",
            "windows": len(metas), "gpu_s": sum(float(m.get("render_s") or 0.0) for m in metas),
            "gpu_busy_s": billed, "jobs": len(jobs),
            "jobs_failed": sum(1 for j in ended if j["status"] != "COMPLETED"),
            "jobs_unreported": len(jobs) - len(ended), "billed_s": round(billed, 3), "delay_s": round(delay, 3),
            "unseen_max_s": round(delay + idle_timeout_s * len(ended), 3)}
