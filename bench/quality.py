"""The window-quality guard (longtalk.quality): its cost, its false alarms, what it catches,
and a long drifting chain. No GPU, no servers: preview renders of the bundled examples.

    python bench/quality.py [cost|clean|faults|chain|all] [--core 0] [--chain-minutes 10]
                            [--chain-spec drift:0.03,face:0.005] [--chain-size 256x256] [--json-out FILE]

1. cost    measure_window per 81 frames at 832x480 on one core (the process is pinned to
           --core and OpenCV to one thread), each mode: CPU time of the measuring thread
           (what the guard costs, whatever else the machine runs) and wall time, median of 5;
           and ReferenceStats.of, once per render.
2. clean   every window of the example speech, chained, in the four modes at the examples'
           own sizes: windows, alarms (hard or drift), notes, and the extremes of every
           metric (the margins the default bounds leave).
3. faults  the rehearsal faults (longtalk.backends.faulty) on the single-speaker image
           example: at which window each is first flagged, and why.
4. chain   a chain of --chain-minutes (208 windows for 10) with --chain-spec, never
           re-anchored and re-anchored where the guard would (longtalk.guard.anchor_for):
           Delta E and face offset per window; out/quality-drift.png plots both.

Prints a table per section, then one line `BENCH_JSON {...}` with every number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from longtalk.backends.faulty import FaultyBackend  # noqa: E402
from longtalk.guard import Anchor, Guard, anchor_for, attempt_record, window_doc  # noqa: E402
from longtalk.windows import WindowParams, window  # noqa: E402
from longtalk.backends.preview import PreviewBackend  # noqa: E402
from longtalk.quality import QualityBounds, ReferenceStats, classify, measure_window  # noqa: E402
from longtalk.testing.quality_chains import FPS, M, MODES, S, W, example, render_chain  # noqa: E402

COST_SIZE = (832, 480)
METRICS = ("delta_e", "delta_e_face", "face_offset", "face_size", "still_speech", "clipped", "seam", "sharpness",
           "lipsync", "face_found")


def reference_of(ex, job):
    return ex.source_frames(job.index) if ex.v2v else ex.reference


def stats_of(ex):
    return None if ex.v2v else ReferenceStats.of(ex.reference, len(ex.tracks))


def table(headers: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in r] for r in [headers] + rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, r in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


# ----------------------------------------------------------------------------- 1. cost


def bench_cost(reps: int = 5) -> dict:
    out = {}
    rows = []
    for mode in MODES:
        ex = example(mode, COST_SIZE)
        # window 2, carrying a tail: a window in the middle of a chain
        job, frames = next(render_chain(PreviewBackend(), ex, 1, first=2, tail=np.repeat(ex.reference[None], M, 0)))
        t0, w0 = time.thread_time(), time.perf_counter()
        stats = stats_of(ex)
        ref_cpu, ref_wall = time.thread_time() - t0, time.perf_counter() - w0
        reference = reference_of(ex, job)
        measure_window(frames, M, reference, job.audio, FPS, stats)  # warm: cascade loaded, caches filled
        cpu, wall = [], []
        for _ in range(reps):
            t0, w0 = time.thread_time(), time.perf_counter()
            measure_window(frames, M, reference, job.audio, FPS, stats)
            cpu.append(time.thread_time() - t0)
            wall.append(time.perf_counter() - w0)
        out[mode] = {"cpu_s": round(statistics.median(cpu), 3), "wall_s": round(statistics.median(wall), 3),
                     "reference_cpu_s": round(ref_cpu, 3), "reference_wall_s": round(ref_wall, 3)}
        rows.append([mode, f"{out[mode]['cpu_s']:.3f}", f"{out[mode]['wall_s']:.3f}",
                     "-" if ex.v2v else f"{ref_cpu:.3f}", "yes" if out[mode]["cpu_s"] <= 0.8 else "NO"])
    print(f"\n## cost per {W} frames at {COST_SIZE[0]}x{COST_SIZE[1]}, one core (load {os.getloadavg()[0]:.1f})")
    table(["mode", "cpu s", "wall s", "ReferenceStats cpu s", "<= 0.8 s"], rows)
    return out


# ----------------------------------------------------------------------------- 2. clean


def bench_clean(windows: int | None) -> dict:
    bounds = QualityBounds()
    out = {}
    rows = []
    for mode in MODES:
        ex = example(mode)
        n = windows or math.ceil((len(ex.tracks[0]) / 640 - W) / S) + 1
        stats = stats_of(ex)
        alarms, notes, values = [], [], {k: [] for k in METRICS}
        for job, frames in render_chain(PreviewBackend(), ex, n):
            q = measure_window(frames, M, reference_of(ex, job), job.audio, FPS, stats)
            v = classify(q, bounds)
            if not v.ok:
                alarms.append((job.index, v.hard + v.drift))
            if v.notes:
                notes.append((job.index, v.notes))
            for k in METRICS:
                if getattr(q, k) is not None:
                    values[k].append(getattr(q, k))
        ext = {k: (round(min(v), 4), round(max(v), 4)) if v else None for k, v in values.items()}
        out[mode] = {"windows": n, "alarms": len(alarms), "alarm_windows": alarms, "notes": len(notes),
                     "note_windows": notes, "range": ext}
        rows.append([mode, ex.reference.shape[1], ex.reference.shape[0], n, len(alarms), len(notes)]
                    + [f"{ext[k][0]:.3g}..{ext[k][1]:.3g}" if ext[k] else "-" for k in METRICS])
    print("\n## clean renders: false alarms, and each metric's range (min..max over the windows)")
    table(["mode", "w", "h", "windows", "alarms", "notes"] + list(METRICS), rows)
    total = sum(o["windows"] for o in out.values())
    print(f"false alarms: {sum(o['alarms'] for o in out.values())} of {total} windows; "
          f"notes: {sum(o['notes'] for o in out.values())}")
    print("bounds: " + ", ".join(f"{k}={getattr(bounds, k)}" for k in QualityBounds.__dataclass_fields__))
    return out


# ----------------------------------------------------------------------------- 3. faults


FAULTS = ("blank:1", "frozen:1", "drift:0.01", "drift:0.03", "face:0.01", "face:0.02")


def bench_faults(windows: int = 12) -> dict:
    ex = example("i2v-single")
    stats = stats_of(ex)
    out = {}
    rows = []
    for spec in FAULTS:
        first, reasons, series = None, (), []
        for job, frames in render_chain(FaultyBackend(PreviewBackend(), spec), ex, windows):
            q = measure_window(frames, M, ex.reference, job.audio, FPS, stats)
            v = classify(q)
            series.append({"delta_e": round(q.delta_e, 2), "face_offset": q.face_offset and round(q.face_offset, 3),
                           "face_size": q.face_size and round(q.face_size, 3)})
            if not v.ok:
                first, reasons = job.index, v.hard + v.drift
                break
        out[spec] = {"first_flagged": first, "reasons": list(reasons), "series": series}
        last = series[-1]
        rows.append([spec, "-" if first is None else first, ",".join(reasons) or "-",
                     " ".join(f"{s['delta_e']:.1f}" for s in series),
                     " ".join("-" if s["face_offset"] is None else f"{s['face_offset']:.2f}" for s in series),
                     last["face_size"]])
    print(f"\n## rehearsed faults on {ex.mode} ({ex.reference.shape[1]}x{ex.reference.shape[0]}), "
          "until the first flagged window")
    table(["spec", "flagged at", "why", "delta_e per window", "face_offset per window", "face_size"], rows)
    return out


# ----------------------------------------------------------------------------- 4. chain


def run_chain(ex, spec: str, n: int, guard: Guard | None) -> list[dict]:
    """n windows of one chain with the fault spec; with a guard, each window starts where the
    GPU activity would start it (longtalk.guard.anchor_for on the previous window's record)."""
    params, stats = WindowParams(W, M, FPS), stats_of(ex)
    total = (n - 1) * S + W
    backend = FaultyBackend(PreviewBackend(), spec)
    bounds = guard.bounds if guard else QualityBounds()
    series, previous, tail = [], None, None
    for k in range(n):
        w = window(k, total, params)
        anchor = anchor_for(w, 0, previous, ex.audio(k), params, guard) if guard else Anchor(k == 0, 0)
        job = ex.job(k, None if anchor.from_reference else tail)
        frames = asyncio.run(backend.render_window(job))
        q = measure_window(frames, M, reference_of(ex, job), job.audio, FPS, stats)
        v = classify(q, bounds)
        previous = window_doc(w, anchor, [attempt_record(0, job.seed, q, v, 0.0)], 0)
        tail = frames[-M:].copy()
        series.append({"k": k, "delta_e": round(q.delta_e, 3),
                       "delta_e_face": None if q.delta_e_face is None else round(q.delta_e_face, 3),
                       "face_offset": None if q.face_offset is None else round(q.face_offset, 4),
                       "face_found": q.face_found, "flags": list(v.hard + v.drift),
                       "reanchor": None if anchor.reanchor is None else anchor.reanchor["reason"]})
    return series


def bench_chain(minutes: float, spec: str, size: tuple[int, int], plot: Path) -> dict:
    ex = example("i2v-single", size)
    n = math.ceil((minutes * 60 * FPS - W) / S) + 1
    bounds = QualityBounds()
    out = {"spec": spec, "windows": n, "size": list(size)}
    runs = {}
    for name, guard in (("never re-anchored", None), ("re-anchored (the guard)", Guard())):
        started = time.perf_counter()
        series = runs[name] = run_chain(ex, spec, n, guard)
        first = next((s["k"] for s in series if s["flags"]), None)
        anchors = [s["k"] for s in series if s["reanchor"]]
        print(f"\n## a {minutes:g}-minute chain ({n} windows, {size[0]}x{size[1]}) with {spec}, {name} "
              f"({time.perf_counter() - started:.0f} s)")
        picks = sorted({0, 1, 2, 3, 5, 10, 20, 50, 100, n // 2, n - 1} & set(range(n)))
        table(["window", "t s", "delta_e", "delta_e_face", "face_offset", "face_found", "flags"],
              [[s["k"], f"{s['k'] * S / FPS:.0f}", s["delta_e"], s["delta_e_face"], s["face_offset"], s["face_found"],
                ",".join(s["flags"]) or "-"] for s in (series[k] for k in picks)])
        delta = [s["delta_e"] for s in series]
        offsets = [s["face_offset"] for s in series if s["face_offset"] is not None]
        print(f"first flagged window: {first}; Delta E max {max(delta):.2f}, mean {statistics.mean(delta):.2f}, "
              f"last {delta[-1]:.2f} (bound {bounds.delta_e}); face offset max "
              f"{max(offsets) if offsets else float('nan'):.3f} (bound {bounds.face_offset}); "
              f"re-anchors: {len(anchors)}")
        out[name] = {"first_flagged": first, "max_delta_e": max(delta), "mean_delta_e": round(statistics.mean(delta), 3),
                     "max_face_offset": max(offsets) if offsets else None, "reanchors": anchors, "series": series}
    draw_plot(runs, spec, bounds, plot)
    print(f"plot: {plot}")
    return out


def draw_plot(runs: dict[str, list[dict]], spec: str, bounds: QualityBounds, path: Path) -> None:
    """Two panels drawn with OpenCV: Delta E and face offset per window, one line per run;
    re-anchors are ticks on the axis."""
    width, panel_h, left, right, top = 960, 250, 70, 20, 40
    canvas = np.full((top + 2 * panel_h + 60, width, 3), 255, np.uint8)
    n = max(len(series) for series in runs.values())
    ink, grey = (40, 40, 40), (200, 200, 200)
    font = cv2.FONT_HERSHEY_SIMPLEX

    def x_of(k: float) -> int:
        return int(left + (width - left - right) * k / max(1, n - 1))

    def panel(y0: int, title: str, lines: list[tuple[str, tuple[int, int, int], list]], bound: float) -> None:
        values = [v for _, _, vs in lines for v in vs if v is not None] + [bound]
        top_v = max(values) * 1.08
        h = panel_h - 50

        def y_of(v: float) -> int:
            return int(y0 + 20 + h - h * v / top_v)

        cv2.putText(canvas, title, (left, y0 + 12), font, 0.5, ink, 1, cv2.LINE_AA)
        for i in range(5):  # grid and y labels
            v = top_v * i / 4
            cv2.line(canvas, (left, y_of(v)), (width - right, y_of(v)), grey, 1)
            cv2.putText(canvas, f"{v:.2f}" if top_v < 10 else f"{v:.0f}", (8, y_of(v) + 4), font, 0.4, ink, 1,
                        cv2.LINE_AA)
        for x in range(left, width - right, 12):  # the bound, dashed
            cv2.line(canvas, (x, y_of(bound)), (min(x + 6, width - right), y_of(bound)), (0, 0, 220), 1)
        cv2.putText(canvas, f"bound {bound:g}", (width - right - 110, y_of(bound) - 5), font, 0.4, (0, 0, 220), 1,
                    cv2.LINE_AA)
        for i, (name, colour, vs) in enumerate(lines):
            pts = [(x_of(k), y_of(v)) for k, v in enumerate(vs) if v is not None]
            if len(pts) > 1:
                cv2.polylines(canvas, [np.array(pts, np.int32)], False, colour, 2, cv2.LINE_AA)
            for k, v in enumerate(vs):  # no value (face not found): a mark on the axis
                if v is None:
                    cv2.drawMarker(canvas, (x_of(k), y_of(0)), colour, cv2.MARKER_TILTED_CROSS, 6, 1)
            cv2.putText(canvas, name, (left + 10 + 300 * i, y0 + 32), font, 0.45, colour, 1, cv2.LINE_AA)
        cv2.line(canvas, (left, y_of(0)), (width - right, y_of(0)), ink, 1)
        for _, colour, _, anchors in marks:
            for k in anchors:
                cv2.line(canvas, (x_of(k), y_of(0)), (x_of(k), y_of(0) - 6), colour, 1)

    colours = [(200, 90, 20), (20, 140, 20), (150, 30, 150)]
    marks = [(name, colours[i % 3], None, [s["k"] for s in series if s.get("reanchor")])
             for i, (name, series) in enumerate(runs.items())]
    cv2.putText(canvas, f"window quality over a chain, {spec} ({n} windows); ticks: re-anchors", (left, 22), font,
                0.55, ink, 1, cv2.LINE_AA)
    panel(top, "colour Delta E76 against the reference (whole frame)",
          [(name, colours[i % 3], [s["delta_e"] for s in series]) for i, (name, series) in enumerate(runs.items())],
          bounds.delta_e)
    panel(top + panel_h, "face offset (reference face widths)",
          [(name, colours[i % 3], [s["face_offset"] for s in series]) for i, (name, series) in enumerate(runs.items())],
          bounds.face_offset)
    y = top + 2 * panel_h + 20
    for k in range(0, n, max(1, n // 10)):  # x labels: window and minute
        cv2.putText(canvas, f"{k}", (x_of(k) - 8, y), font, 0.4, ink, 1, cv2.LINE_AA)
        cv2.putText(canvas, f"{k * S / FPS / 60:.1f}m", (x_of(k) - 12, y + 16), font, 0.35, ink, 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), canvas[..., ::-1])  # drawn in RGB, written as BGR


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/quality.py", description=__doc__.splitlines()[0])
    p.add_argument("section", nargs="?", default="all", choices=("cost", "clean", "faults", "chain", "all"))
    p.add_argument("--core", type=int, default=0, help="the one core to run on (default 0)")
    p.add_argument("--clean-windows", type=int, help="windows per mode (default: the whole example speech)")
    p.add_argument("--chain-minutes", type=float, default=10.0)
    p.add_argument("--chain-spec", default="drift:0.03,face:0.005")
    p.add_argument("--chain-size", default="256x256", help="WxH of the long chain (rendering it is the slow part)")
    p.add_argument("--plot", type=Path, default=ROOT / "out" / "quality-drift.png")
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)
    os.sched_setaffinity(0, {args.core})
    cv2.setNumThreads(1)
    size = tuple(int(v) for v in args.chain_size.lower().split("x"))
    results: dict = {"load_at_start": round(os.getloadavg()[0], 2)}
    if args.section in ("cost", "all"):
        results["cost"] = bench_cost()
    if args.section in ("clean", "all"):
        results["clean"] = bench_clean(args.clean_windows)
    if args.section in ("faults", "all"):
        results["faults"] = bench_faults()
    if args.section in ("chain", "all"):
        results["chain"] = bench_chain(args.chain_minutes, args.chain_spec, size, args.plot)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))
    print("BENCH_JSON " + json.dumps(results, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
