"""The fleet benchmark (`bench/run.py fleet`) still runs end to end: a tiny render on 1 and 2
timed-backend GPU workers and the mixed case. Its numbers are not checked here (speed is the
benchmark's business, on an idle machine); its output's shape is: the table, where the time
went, the mixed line, and the BENCH_JSON summary on the last line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(600)


def test_the_fleet_benchmark_runs_and_reports():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "fleet", "--gpus", "1,2", "--minutes", "0.75",
         "--window-seconds", "0.2", "--mixed", "--mixed-gpus", "2", "--mixed-minutes", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    summary = json.loads(lines[-1].removeprefix("BENCH_JSON "))["fleet"]
    assert set(summary) == {"1", "2"}
    for g, run in summary.items():
        assert run["wall_s"] > 0 and 0 < run["busy"] <= 1, (g, run)
    assert summary["1"]["speedup"] == 1.0 and summary["2"]["speedup"] > 0
    detail = json.loads(next(x for x in lines if x.startswith("BENCH_JSON") and "fleet_detail" in x)
                        .removeprefix("BENCH_JSON "))["fleet_detail"]
    two = next(r for r in detail["runs"] if r["gpus"] == 2)
    assert len(two["chains"]) == 2 and sum(two["chains"]) == two["windows"]  # 18 windows: two chains
    assert two["timeline"]["per_window_s"]["backend"] >= 0.2
    assert "encode_audio" in two["timeline"]["stages_s"]
    text = proc.stdout
    assert "G=2 where the wall goes" in text and "G=2 cut at window" in text
    assert "mixed (G=2): a 4-window render took" in text
