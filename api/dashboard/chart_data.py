"""What the dashboard's charts draw (charts.py draws them), from the bucket and the fleet records.

Render page (GET /dashboard/api/renders/{id}/charts/{name}.svg):

- windows: each finished window's GPU time (`render_s`: the backend rendering; `busy_s`: the
  worker held, inputs and storing included) and its queue wait (`queue_s`: from Temporal
  scheduling the window's attempt to a GPU worker starting it, both the server's clock, plus
  the wait for that worker's GPU), from the windows' meta.json (activities/gpu.py). Windows of
  renders from before queue_s was recorded, and windows rendered on a RunPod pool, have no
  queue wait: the line has a gap there. Re-rendered, flagged and re-anchored windows are marked
  (the quality guard's verdict in meta.json).
- estimate: the plan-time estimate (estimate.json) against what the render used so far: GPU
  seconds (the finished windows' busy_s; a tick on the estimate's bar where it expected to be
  after this many windows) and wall time (elapsed).
- quality: the quality guard's per-window measures (the render's quality.json once stitched;
  before that each finished window's own quality.json) with their bounds
  (LONGTALK_QUALITY_BOUNDS as the API reads it).

Fleet page (GET /dashboard/api/fleet/charts/fleet.svg): per worker, windows per hour and the
GPU busy fraction over the last 24 hours, and the GPU queue's backlog over the same day (the
fleet records' "history", longtalk.fleet_history).

A finished window's meta.json and quality.json never change: each is read once (LRU caches).
"""

from __future__ import annotations


from cachetools import LRUCache

from longtalk.estimate import estimate_key
from longtalk.fleet_history import HOUR, HOURS, QUEUE_SLOT_S
from longtalk.guard import parse_bounds, summarise
from longtalk.payloads import derived_keys, window_meta_key, window_quality_key

from .charts import COLOURS, Axis, Bound, Group, Panel, Series, bars, fmt, panels
from .read_model import ReadModel

RENDER_CHARTS = ("windows", "estimate", "quality")
FLEET_CHARTS = ("fleet",)
MAX_WORKERS_DRAWN = 8  # more workers: the busiest drawn, the rest summed as "others"
META_FIELDS = ("render_s", "busy_s", "queue_s", "quality", "copied_from")
# the quality guard's measures drawn, with their bound's name in QualityBounds and its side
QUALITY_PANELS = (("delta_e", "colour ΔE, frame", "delta_e", "above: drift"),
                  ("delta_e_face", "colour ΔE, face", "delta_e_face", "above: drift"),
                  ("sharpness", "face sharpness ratio", "sharpness", "under: soft"),
                  ("face_offset", "face offset (face widths)", "face_offset", "above: drift"),
                  ("lipsync", "mouth motion ~ speech (r)", "lipsync", "under: note"))


class Charts:
    def __init__(self, model: ReadModel) -> None:
        self.model = model
        self._metas: LRUCache[str, dict] = LRUCache(64)  # render id -> {window: meta fields}
        self._quality: LRUCache[str, dict] = LRUCache(64)  # render id -> {window: quality.json}
        self._estimates: LRUCache[str, dict] = LRUCache(256)  # render id -> estimate.json

    @property
    def store(self):
        return self.model.store

    # ---- data ---------------------------------------------------------------------------
    def metas(self, render_id: str, finished: list[int]) -> dict[int, dict]:
        known = self._metas.setdefault(render_id, {})
        missing = [k for k in finished if k not in known]
        for k, meta in zip(missing, self.store.get_json_many([window_meta_key(render_id, k) for k in missing])):
            if meta is not None:
                known[k] = {f: meta.get(f) for f in META_FIELDS}
        return known

    def quality_rows(self, render_id: str, finished: list[int]) -> list[dict]:
        doc = self.store.get_json_or_none(derived_keys(render_id)["quality"])
        if doc is not None:
            return doc.get("windows") or []
        known = self._quality.setdefault(render_id, {})
        missing = [k for k in finished if k not in known]
        for k, q in zip(missing, self.store.get_json_many([window_quality_key(render_id, k) for k in missing])):
            if q is not None:
                known[k] = q
        top = max(known, default=-1)
        return summarise([known.get(k) for k in range(top + 1)])[1]

    def estimate(self, render_id: str) -> dict | None:
        if render_id not in self._estimates:
            found = self.store.get_json_or_none(estimate_key(render_id))
            if found is None:
                return None
            self._estimates[render_id] = found
        return self._estimates[render_id]

    # ---- the render page ------------------------------------------------------------------
    def render_chart(self, name: str, detail: dict, width: int | None) -> str:
        """The SVG `name` (RENDER_CHARTS) of the render `detail` (ReadModel.render_detail)."""
        rid, total = detail["id"], detail["windows_total"] or 0
        finished = [k for k, s in enumerate(detail["states"]) if s in "dt"]
        if name == "windows":
            return windows_chart(rid, total, self.metas(rid, finished), width)
        if name == "estimate":
            return estimate_chart(rid, total, self.estimate(rid), self.metas(rid, finished), detail, width)
        return quality_chart(rid, total, self.quality_rows(rid, finished),
                             parse_bounds(self.model.settings.quality_bounds), width)


def _marks(by_window: dict[int, dict]) -> list[tuple[float, str]]:
    out = []
    for k, q in sorted(by_window.items()):
        if q.get("rerendered"):
            out.append((k, "rerendered"))
        if q.get("flagged"):
            out.append((k, "flagged"))
        if q.get("reanchor") or q.get("reanchored"):
            out.append((k, "reanchored"))
    return out


def _window_axis(total: int, marks: list[tuple[float, str]]) -> Axis:
    return Axis("window", 0, max(1, total - 1), marks=marks, whole=True)


def windows_chart(render_id: str, total: int, metas: dict[int, dict], width: int | None) -> str:
    rows = sorted(metas.items())
    rendered = [(k, m) for k, m in rows if not m.get("copied_from")]
    series = lambda f: [(k, m.get(f)) for k, m in rendered]  # noqa: E731
    waits = [m["queue_s"] for _, m in rendered if m.get("queue_s") is not None]
    gpu = [m["render_s"] for _, m in rendered if m.get("render_s") is not None]
    desc = (f"{len(rendered)} of {total} windows rendered so far." +
            (f" GPU time per window {min(gpu):.1f} to {max(gpu):.1f} s." if gpu else "") +
            (f" Queue wait {min(waits):.1f} to {max(waits):.1f} s." if waits else " No queue wait recorded yet."))
    return panels(f"chart-windows-{render_id}", "GPU time and queue wait per window", desc,
                  _window_axis(total, _marks({k: m.get("quality") or {} for k, m in rendered})),
                  [Panel("GPU time (s)", [Series("rendering", series("render_s"), unit="s"),
                                          Series("worker held", series("busy_s"), unit="s", dashed=True)]),
                   Panel("queue wait (s)", [Series("waiting for a GPU", series("queue_s"), unit="s")])], width)


def estimate_chart(render_id: str, total: int, est: dict | None, metas: dict[int, dict], detail: dict,
                   width: int | None) -> str:
    rendered = [m for m in metas.values() if not m.get("copied_from")]
    done = len(metas)
    busy = round(sum(float(m.get("busy_s") or m.get("render_s") or 0.0) for m in rendered), 1) if rendered else None
    est_busy = (est or {}).get("gpu_busy_s")
    est_wall = (est or {}).get("wall_s")
    ongoing = detail.get("status") in ("running", "queued")
    so_far = f"so far ({done}/{total})" if ongoing else "actual"
    tick = ("expected after these windows", est_busy * done / total) if est_busy and total and ongoing else None
    groups = [Group("GPU time", "s", [("estimate", est_busy, "#9fb4e8"), (so_far, busy, "#2557d6")], tick),
              Group("wall time", "s", [("estimate", est_wall, "#9fb4e8"),
                                       ("elapsed" if ongoing else "actual", detail.get("elapsed_s"), "#22a05b")])]
    said = "no estimate was made for this render" if est is None else \
        f"estimated at plan time: GPU {fmt(est_busy or 0)} s, wall {fmt(est_wall) if est_wall else 'unknown'} s"
    desc = f"{said}; used {'so far' if ongoing else 'in all'}: GPU {fmt(busy or 0)} s over {done} of {total} " \
           f"windows, {fmt(detail.get('elapsed_s') or 0)} s of wall time."
    return bars(f"chart-estimate-{render_id}", "Estimate against actual", desc, groups, width)


def quality_chart(render_id: str, total: int, rows: list[dict], bounds, width: int | None) -> str:
    shown = []
    for key, label, bound, side in QUALITY_PANELS:
        value = getattr(bounds, bound)
        shown.append(Panel(label, [Series(label, [(r["window"], r.get(key)) for r in rows])],
                           Bound(value, f"bound {fmt(value)} ({side})"), y_min=None if key == "lipsync" else 0.0))
    marks = _marks({r["window"]: r for r in rows})
    worst = max((r for r in rows if r.get("delta_e") is not None), key=lambda r: r["delta_e"], default=None)
    desc = (f"Quality measures of {len(rows)} of {total} windows, each against its bound." +
            (f" Highest colour ΔE {worst['delta_e']:.2f} at window {worst['window']}." if worst else "") +
            f" {sum(1 for _, k in marks if k == 'rerendered')} re-rendered,"
            f" {sum(1 for _, k in marks if k == 'flagged')} flagged,"
            f" {sum(1 for _, k in marks if k == 'reanchored')} re-anchored.")
    for p in shown:  # one colour: each panel's label names its measure
        p.series[0].colour = "#2557d6"
    return panels(f"chart-quality-{render_id}", "Quality per window", desc, _window_axis(total, marks), shown, width,
                  legend=False)


# ---- the fleet page ------------------------------------------------------------------------
def fleet_chart(records: list[dict], now: float, width: int | None) -> str:
    """Windows per hour and busy fraction per worker, and the queue backlog, over the last day;
    x in hours before now."""
    start = (now // HOUR - HOURS) * HOUR
    per_worker = []
    for rec in records:
        hours = [h for h in (rec.get("history") or {}).get("hours") or [] if h[0] >= start]
        per_worker.append((sum(h[1] for h in hours), rec.get("identity") or "?", hours))
    per_worker.sort(key=lambda w: -w[0])
    drawn, rest = per_worker[:MAX_WORKERS_DRAWN], per_worker[MAX_WORKERS_DRAWN:]
    if rest:
        summed: dict[int, list] = {}
        for _, _, hours in rest:
            for t, w, b, f in hours:
                row = summed.setdefault(t, [t, 0, 0.0, 0, 0])
                row[1], row[2], row[3], row[4] = row[1] + w, row[2] + b, row[3] + f, row[4] + 1
        drawn.append((0, f"{len(rest)} others", [[t, w, b / n, f] for t, w, b, f, n in summed.values()]))

    def x(t: float, step: float) -> float:
        return round(min(0.0, (t + step / 2 - now) / HOUR), 3)

    def busy(t: float, b: float) -> float:
        return min(1.0, b / max(1.0, min(HOUR, now - t)))  # the current hour: of its time so far

    windows, fraction = [], []
    for i, (_, name, hours) in enumerate(drawn):  # a worker has one colour in both panels
        hours, colour = sorted(hours), COLOURS[i % len(COLOURS)]
        windows.append(Series(name, [(x(t, HOUR), w) for t, w, _, _ in hours], colour, "windows"))
        fraction.append(Series(name, [(x(t, HOUR), busy(t, b)) for t, _, b, _ in hours], colour))
    queue: dict[int, int] = {}
    for rec in records:
        for t, n in (rec.get("history") or {}).get("queue") or []:
            if t >= start:
                queue[t] = max(queue.get(t, 0), n)
    waiting = Series("windows waiting (GPU queue)", [(x(t, QUEUE_SLOT_S), n) for t, n in sorted(queue.items())],
                     colour="#5d6b7e", unit="windows")
    rows = [Panel("windows per hour", windows), Panel("GPU busy", fraction, y_max=1.0, percent=True),
            Panel("queue ahead (windows waiting)", [waiting])]
    total = sum(w[0] for w in per_worker)
    peak = max(queue.values(), default=None)
    desc = (f"The last 24 hours of {len(records)} GPU worker(s): {total} windows rendered"
            + (f"; the most windows waiting on the GPU queue in a 10-minute slot: {peak}." if peak is not None
               else "; no queue sample yet."))
    axis = Axis("hours ago", -HOURS, 0, ticks=[(-h, f"−{h} h" if h else "now") for h in range(HOURS, -1, -6)])
    return panels("chart-fleet", "GPU workers over the last 24 hours", desc, axis, rows, width)
