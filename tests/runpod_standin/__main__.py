"""python -m tests.runpod_standin --port 8100 --endpoint ep --api-key KEY [--env NAME=VALUE ...]

The RunPod stand-in as a process of its own (what a benchmark runs, as RunPod is apart from the
service): serves until SIGTERM or SIGINT, then kills the worker processes it started. --env
sets a variable of every worker it starts (the handler's LONGTALK_ settings)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from .server import start_runpod_standin


def env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--env takes NAME=VALUE, got {text!r}")
    return name, value


async def serve(args: argparse.Namespace) -> None:
    server = await start_runpod_standin(
        args.endpoint, args.api_key, dict(args.env), host=args.host, port=args.port, max_workers=args.max_workers,
        cold_start_s=args.cold_start_s, idle_timeout_s=args.idle_timeout_s,
        execution_timeout_s=args.execution_timeout_s, log_dir=args.log_dir)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    print(f"runpod stand-in at {server.api_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.runpod_standin", description="RunPod Serverless stand-in")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--endpoint", required=True, help="the endpoint id")
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--env", type=env_pair, action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--max-workers", type=int, default=3)
    ap.add_argument("--cold-start-s", type=float, default=0.5, help="delay before a worker process starts")
    ap.add_argument("--idle-timeout-s", type=float, default=5.0, help="an idle worker is stopped after this")
    ap.add_argument("--execution-timeout-s", type=float, default=600.0,
                    help="the endpoint's execution timeout, for jobs without policy.executionTimeout")
    ap.add_argument("--log-dir", type=Path, default=None, help="one log per worker")
    asyncio.run(serve(ap.parse_args(argv)))
    return 0


raise SystemExit(main())
