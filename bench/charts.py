"""What the dashboard's charts cost to draw (api/dashboard/chart_data.py, charts.py): the render
page's windows and quality charts for a render of `--windows` windows (an hour at 81-frame
windows is about 1,250), and the fleet chart for `--workers` GPU workers with a full day of
history. Pure drawing on synthetic series (the bucket reads are not counted: each finished
window's meta.json and quality.json is read once and cached).

    .venv/bin/python bench/charts.py [--windows 1250] [--workers 50] [--width 1200] [--reps 5]

Prints one line per chart (median ms, SVG size) and a final line `BENCH_JSON {...}`.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.dashboard import chart_data  # noqa: E402
from longtalk.fleet_history import HOUR, HOURS, QUEUE_SLOT_S  # noqa: E402
from longtalk.quality import QualityBounds  # noqa: E402


def series(windows: int, workers: int, now: float, rng: random.Random):
    metas = {k: {"render_s": 80 + rng.random() * 5, "busy_s": 85 + rng.random() * 5, "queue_s": rng.random() * 30,
                 "quality": {"rerendered": int(k % 97 == 0), "flagged": k % 311 == 0, "reanchor": k % 53 == 0}}
             for k in range(windows)}
    rows = [{"window": k, "delta_e": rng.random() * 5, "delta_e_face": rng.random() * 6, "sharpness": 0.8,
             "face_offset": 0.05, "lipsync": 0.3, "rerendered": 0, "flagged": False, "reanchored": k % 53 == 0}
            for k in range(windows)]
    start = (now // HOUR - HOURS) * HOUR
    records = [{"identity": f"gpu-{i:03d}",
                "history": {"hours": [[start + h * HOUR, 40, 3300.0, 0] for h in range(HOURS + 1)],
                            "queue": [[start + s * QUEUE_SLOT_S, rng.randrange(200)]
                                      for s in range(HOURS * HOUR // QUEUE_SLOT_S)]}}
               for i in range(workers)]
    return metas, rows, records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=1250)
    ap.add_argument("--workers", type=int, default=50)
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    now = time.time()
    metas, rows, records = series(args.windows, args.workers, now, random.Random(1))
    detail = {"status": "running", "elapsed_s": 3600.0}
    charts = {
        "windows": lambda: chart_data.windows_chart("r", args.windows, metas, args.width),
        "estimate": lambda: chart_data.estimate_chart("r", args.windows, {"gpu_busy_s": 1e5, "wall_s": 1e5}, metas,
                                                      detail, args.width),
        "quality": lambda: chart_data.quality_chart("r", args.windows, rows, QualityBounds(), args.width),
        "fleet": lambda: chart_data.fleet_chart(records, now, args.width),
    }
    out = {}
    for name, draw in charts.items():
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            svg = draw()
            times.append((time.perf_counter() - t) * 1000)
        out[name] = {"ms": round(statistics.median(times), 1), "kib": round(len(svg.encode()) / 1024, 1)}
        print(f"{name:9s} {out[name]['ms']:8.1f} ms  {out[name]['kib']:7.1f} KiB")
    print("BENCH_JSON " + json.dumps({"windows": args.windows, "workers": args.workers, "width": args.width,
                                      "charts": out}))


if __name__ == "__main__":
    main()
