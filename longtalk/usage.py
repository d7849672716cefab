"""What a finished render actually used, from its stored windows' meta.json (activities/gpu.py
writes busy_s, render_s and the device of every window it renders): GPU seconds and cost, per
GPU kind, beside the estimate the plan made (estimate.json beside plan.json).

Windows copied from a re-render's base cost nothing now and are left out; a window rendered
by an earlier run of the same render (a resumed one) counts; attempts that failed leave no
meta.json and are not counted.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from .gpu_time import Prices
from .store import ObjectStore


def actual_usage(store: ObjectStore, meta_keys: list[str], prices: Prices) -> dict:
    with ThreadPoolExecutor(max_workers=16) as pool:  # many small objects
        metas = [m for m in pool.map(store.get_json_or_none, meta_keys) if m and not m.get("copied_from")]
    rows: dict[str, dict] = {}
    for m in metas:
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
        said.add(price[1])
        if cost is not None:
            cost += row["cost"]
    per_gpu = sorted(rows.values(), key=lambda r: r["device"])
    return {"windows_rendered": len(metas), "gpu_s": round(sum(r["gpu_s"] for r in per_gpu), 1),
            "gpu_busy_s": round(sum(r["gpu_busy_s"] for r in per_gpu), 1),
            "cost": None if cost is None else round(cost, 4), "per_gpu": per_gpu,
            "sources": {"gpu_s": "the stored windows' meta.json (render_s: the backend; busy_s: the worker held)",
                        "cost": "; ".join(sorted(said)) or "no window rendered"}}
