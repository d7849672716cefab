"""Helpers the test modules share (fixtures live in conftest.py; processes in faults.py, media
files in media.py): running the starter in process, writing a job file, checking a published
video, the counting preview backend, the stored release histories, summary lines, cancel
requests and purges in Temporal."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from temporalio.client import Client, WorkflowHistory

import starter
from longtalk import av_io
from longtalk.backends.preview import PreviewBackend
from longtalk.settings import Settings
from longtalk.stack import Process, s3_service, temporal_service
from tests.media import moov_before_mdat


async def run_starter(client: Client, settings, *argv: str) -> tuple[int, dict | None, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = await starter.main(list(argv) + ["--quiet"], client=client, settings=settings, stdout=out, stderr=err)
    text = out.getvalue().strip()
    try:
        return rc, json.loads(text) if text else None, err.getvalue()
    except json.JSONDecodeError:
        return rc, {"raw": text}, err.getvalue()


def patch_ids(events) -> set[str]:
    """The patch ids of a history's patch markers (in their details' payloads)."""
    from temporalio.api.enums.v1 import EventType

    out = set()
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            for payloads in e.marker_recorded_event_attributes.details.values():
                for p in payloads.payloads:
                    value = json.loads(p.data)
                    out.add(value.get("id") if isinstance(value, dict) else value)
    return out


async def cancel_requested(client: Client, workflow_id: str) -> bool:
    """Whether the workflow's (latest run's) history has a cancel request."""
    from temporalio.api.enums.v1 import EventType

    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED for e in history.events)


async def purges(client: Client, owner: str) -> list:
    """The owner's PurgeQueue runs (/purge-queue), the newest first."""
    found = [w async for w in client.list_workflows(f"WorkflowType = 'PurgeQueue' AND WorkflowId STARTS_WITH "
                                                    f"'purge-queue/{owner}/'")]
    return sorted(found, key=lambda w: w.start_time, reverse=True)


def write_job(tmp_path: Path, **fields) -> str:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"input": {k: str(v) if isinstance(v, Path) else v for k, v in fields.items()}}))
    return str(path)


def check_video(path: Path, frames: int, width: int, height: int) -> dict:
    info = av_io.probe(path)
    v, a = info["video"], info["audio"]
    assert v["codec"] == "h264" and v["pix_fmt"] == "yuv420p"
    assert (v["width"], v["height"]) == (width, height)
    assert v["frames"] == frames
    assert v["fps"] == 25.0
    assert math.isclose(v["duration_s"], frames / 25, abs_tol=1e-6)
    assert a is not None and a["codec"] == "aac"
    assert abs(a["duration_s"] - frames / 25) <= 1 / 25  # within one video frame
    assert moov_before_mdat(path)
    return info


class CountingPreview(PreviewBackend):
    """The real preview renderer, counting its calls (to prove nothing is rendered twice)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    async def render_window(self, job, progress=None):
        self.calls.append((job.render_id, job.index))
        return await super().render_window(job, progress)


HISTORIES = Path(__file__).resolve().parent / "histories"
REQUIRED_SHAPES = {"single", "parallel", "continue_as_new", "cancelled", "input_error", "worker_crash"}
RELEASES = sorted(p.name for p in HISTORIES.iterdir() if p.is_dir() and not p.name.startswith(".")) \
    if HISTORIES.is_dir() else []


def manifest(release: str) -> dict:
    return json.loads((HISTORIES / release / "MANIFEST.json").read_text())


def stored(release: str) -> list[tuple[dict, WorkflowHistory]]:
    """(manifest entry, history) for every history file of a release."""
    out = []
    for shape in manifest(release)["shapes"].values():
        for entry in shape["files"]:
            text = (HISTORIES / release / entry["file"]).read_text()
            out.append((entry, WorkflowHistory.from_json(entry["workflow_id"], text)))
    return out


async def replay_everything(client: Client, query: str, folder: Path | None = None) -> dict[str, str]:
    """Export the history of every workflow run `query` lists (parents, chains, each run of a
    chain that continued as new), write it to `folder`, and replay it against this checkout's
    workflow code. Returns {"<workflow id> <run id>": error} for those that do not replay: a
    render that completed but does not replay is stuck the day its worker's cache loses it."""
    from temporalio.worker import Replayer

    from longtalk.converter import DATA_CONVERTER
    from workflows.render import RenderChain, RenderVideo

    replayer = Replayer(workflows=[RenderVideo, RenderChain], data_converter=DATA_CONVERTER)
    failures: dict[str, str] = {}
    async for w in client.list_workflows(query):
        history = await client.get_workflow_handle(w.id, run_id=w.run_id).fetch_history()
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{w.id.replace('/', '_')}.{w.run_id}.json").write_text(history.to_json())
        try:
            await replayer.replay_workflow(history)
        except Exception as exc:  # the replayer's NondeterminismError, a workflow task failure ...
            failures[f"{w.id} {w.run_id}"] = f"{type(exc).__name__}: {exc}"[:600]
    return failures


def summary_line(request, name: str, line) -> None:
    """Print line() in pytest's terminal summary (the count of cases a module tried)."""

    class Summary:
        def pytest_terminal_summary(self, terminalreporter):
            terminalreporter.write_line(line())

    if not request.config.pluginmanager.has_plugin(name):
        request.config.pluginmanager.register(Summary(), name)


def s3_process(settings: Settings, folder: Path) -> Process:
    """A real S3 server (rclone) for `settings`, its objects under folder/s3, started and ready."""
    (folder / "s3" / settings.bucket).mkdir(parents=True, exist_ok=True)
    proc = Process(s3_service(settings, folder / "s3"), folder / "run", folder / "logs")
    proc.start()
    proc.wait_ready(30)
    return proc


def temporal_process(settings: Settings, folder: Path) -> Process:
    """A real Temporal dev server for `settings` (SQLite file in folder), started and ready."""
    proc = Process(temporal_service(settings, db_file=folder / "temporal.db", headless=True),
                   folder / "run", folder / "logs")
    proc.start()
    proc.wait_ready(90)
    return proc
