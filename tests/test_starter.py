"""`python starter.py` with the stack (or part of it) down: one line naming the address, exit 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from longtalk.stack import free_port

ROOT = Path(__file__).resolve().parent.parent


def run_starter_process(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LONGTALK_")}
    return subprocess.run([sys.executable, "starter.py", "examples/demo.json", "--quiet"], cwd=ROOT,
                          env={**clean, **env}, capture_output=True, text=True, timeout=120)


def test_temporal_down_is_one_line():
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    proc = run_starter_process(LONGTALK_TEMPORAL_ADDRESS=address, LONGTALK_S3_ENDPOINT=f"127.0.0.1:{free_port()}")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == f"Temporal is not reachable at {address}; start the stack with `make up`"
    assert proc.stdout == ""


def test_object_store_down_is_one_line(settings, temporal_server):
    endpoint = f"127.0.0.1:{free_port()}"  # Temporal is up, nothing listens on the S3 endpoint
    proc = run_starter_process(LONGTALK_TEMPORAL_ADDRESS=settings.temporal_address,
                               LONGTALK_TEMPORAL_NAMESPACE=settings.temporal_namespace,
                               LONGTALK_S3_ENDPOINT=endpoint)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == (f"The object store (S3) is not reachable at {endpoint}; "
                                   "start the stack with `make up`")
    assert proc.stdout == ""
