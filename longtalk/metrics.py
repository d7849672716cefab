"""Prometheus metrics of a worker process (served by worker.py on LONGTALK_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

WINDOWS_RENDERED = Counter("longtalk_windows_rendered_total", "Windows rendered by a backend", ["backend"])
WINDOWS_REUSED = Counter("longtalk_windows_reused_total", "Window activities that found their stored result")
WINDOW_FAILURES = Counter("longtalk_window_failures_total", "Window renders that raised", ["backend", "error"])
RENDER_SECONDS = Histogram("longtalk_window_render_seconds", "Time inside the backend per window", ["backend"],
                           buckets=(0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800))


def serve(port: int, host: str = "127.0.0.1") -> None:
    from prometheus_client import start_http_server

    start_http_server(port, addr=host)
