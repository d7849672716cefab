"""`python starter.py` with the stack (or part of it) down: one line naming the address, exit 3
(nothing started; 1 is a render that failed)."""

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
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip() == f"Temporal is not reachable at {address}; start the stack with `make up`"
    assert proc.stdout == ""


def test_object_store_down_is_one_line(settings, temporal_server):
    endpoint = f"127.0.0.1:{free_port()}"  # Temporal is up, nothing listens on the S3 endpoint
    proc = run_starter_process(LONGTALK_TEMPORAL_ADDRESS=settings.temporal_address,
                               LONGTALK_TEMPORAL_NAMESPACE=settings.temporal_namespace,
                               LONGTALK_S3_ENDPOINT=endpoint)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip() == (f"The object store (S3) is not reachable at {endpoint}; "
                                   "start the stack with `make up`")
    assert proc.stdout == ""


async def test_warnings_are_said_before_waiting(workers, temporal_client, settings, media, tmp_path, render_id):
    """--no-wait returns at once: the job's warnings are on stderr by then, before the line
    that names the render; a misspelled field is refused (exit 2) before anything starts."""
    from longtalk.inputs import existing_status
    from tests.helpers import run_starter, write_job

    job = write_job(tmp_path, image_path=media["portrait"], wav_path=media["speech_mp3"], width=128, height=128,
                    steps=30)
    rc, out, err = await run_starter(temporal_client, settings, job, "--id", render_id, "--no-wait")
    assert rc == 0 and out == {"raw": render_id}, (out, err)
    lines = err.splitlines()
    warned = lines.index("warning: unknown input keys ignored: steps")
    assert warned < next(i for i, line in enumerate(lines) if line.startswith(f"render {render_id}:"))
    await temporal_client.get_workflow_handle(render_id).result()

    bad = write_job(tmp_path, image_path=media["portrait"], wav_path=media["speech_mp3"], widht=768)
    rc, _out, err = await run_starter(temporal_client, settings, bad, "--id", render_id + "-bad")
    assert rc == 2 and err.strip() == "error: widht: unknown field; did you mean width?"
    assert await existing_status(temporal_client, render_id + "-bad") is None
