"""Workflow code stays compatible with the renders in flight: every stored history of every
release (tests/histories/<release>/, written by scripts/capture_histories.py) replays against
the workflow code of this checkout. No server is needed.

A render runs for hours and workers are upgraded under it; a workflow change that replays
differently fails those renders with a non-determinism error. Change workflow code with
`workflow.patched(...)` (or a new workflow type) until no history of an older release can
still be running; capture a new release's histories (`make histories`) before changing it.

Also here: the build id every worker carries (worker identity, heartbeat details).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from longtalk.converter import DATA_CONVERTER
from longtalk.payloads import ChainInput, ChainResult, RenderRequest, RenderResult
from tests.helpers import HISTORIES, RELEASES, REQUIRED_SHAPES, manifest, stored
from workflows.purge import PurgeQueue
from workflows.render import RenderChain, RenderVideo

async def replay(histories: list[WorkflowHistory], *workflows, sandboxed: bool = True) -> dict[str, Exception]:
    """Failures keyed by run id (the replayer's own key)."""
    kwargs = {} if sandboxed else {"workflow_runner": UnsandboxedWorkflowRunner()}
    # the workers' data converter: it reads the payloads of release de3015c's shape
    replayer = Replayer(workflows=list(workflows), data_converter=DATA_CONVERTER, **kwargs)

    async def each():
        for h in histories:
            yield h

    results = await replayer.replay_workflows(each(), raise_on_replay_failure=False)
    return dict(results.replay_failures)


def test_there_are_histories_to_replay():
    assert RELEASES, f"no release under {HISTORIES}: run `make histories` (scripts/capture_histories.py)"


@pytest.mark.parametrize("release", RELEASES)
def test_manifest_lists_exactly_the_stored_files(release):
    m = manifest(release)
    assert m["release"] == release
    assert m.get("commit") and m.get("temporalio") and m.get("captured_at")
    missing = REQUIRED_SHAPES - set(m["shapes"])
    assert not missing, f"release {release} lacks the shapes {sorted(missing)}"
    listed = [e["file"] for s in m["shapes"].values() for e in s["files"]]
    assert len(listed) == len(set(listed)), "a file is listed twice"
    present = sorted(str(p.relative_to(HISTORIES / release)) for p in (HISTORIES / release).rglob("*")
                     if p.is_file() and p.name != "MANIFEST.json")
    assert sorted(listed) == present, (f"MANIFEST.json of {release} and its folder differ: listed only "
                                       f"{sorted(set(listed) - set(present))}, present only "
                                       f"{sorted(set(present) - set(listed))}")
    for name, shape in m["shapes"].items():
        assert shape["exercises"], name
        types = [e["workflow_type"] for e in shape["files"]]
        assert types.count("RenderVideo") == 1, (name, types)
        for e in shape["files"]:
            assert e["file"].startswith(name + "/"), e
            events = json.loads((HISTORIES / release / e["file"]).read_text())["events"]
            assert len(events) == e["events"], e["file"]


@pytest.mark.parametrize("release", RELEASES)
async def test_every_stored_history_replays(release):
    entries = stored(release)
    assert entries
    failures = await replay([h for _, h in entries], RenderVideo, RenderChain, PurgeQueue)
    by_run = {e["run_id"]: e["file"] for e, _ in entries}
    named = {by_run.get(run_id, run_id): f"{type(exc).__name__}: {exc}" for run_id, exc in failures.items()}
    assert not named, (f"{len(named)} of {len(entries)} histories of release {release} do not replay against "
                       f"this workflow code (guard the change with workflow.patched):\n"
                       + "\n".join(f"  {f}: {why}" for f, why in sorted(named.items())))


# ---- a history its run diverged from (issue 16) ------------------------------------------------
DIVERGED = Path(__file__).resolve().parent / "fixtures" / "diverged_histories"


async def test_a_history_its_run_diverged_from_is_caught():
    """The chaos render of issue 16: a query applied three signals before their workflow task
    (at the workflow time of the task before), so the run skipped a progress upsert that any
    replay makes. Its own code could not rebuild it; this replay test says so, at the event
    where the replay's commands and the history part."""
    text = (DIVERGED / "nondeterminism-chaos-2026-12-06.json").read_text()
    history = WorkflowHistory.from_json("chaos", text)
    failures = await replay([history], RenderVideo, RenderChain)
    assert len(failures) == 1
    (why,) = failures.values()
    assert isinstance(why, workflow.NondeterminismError), why
    assert "UpsertWorkflowSearchAttributes" in str(why) and "id: 78" in str(why), why


# ---- the replay check can fail -----------------------------------------------------------------
@workflow.defn(name="RenderVideo", sandboxed=False)
class TimerFirstRenderVideo(RenderVideo):
    """RenderVideo with one extra command before ingest: what an unguarded change looks like."""

    @workflow.run
    async def run(self, req: RenderRequest) -> RenderResult:
        await workflow.sleep(timedelta(seconds=1))
        return await super().run(req)


@workflow.defn(name="RenderChain", sandboxed=False)
class TimerFirstRenderChain(RenderChain):
    @workflow.run
    async def run(self, inp: ChainInput) -> ChainResult:
        await workflow.sleep(timedelta(seconds=1))
        return await super().run(inp)


@pytest.mark.parametrize("altered", [TimerFirstRenderVideo, TimerFirstRenderChain], ids=lambda c: c.__name__)
async def test_replay_catches_a_changed_command_order(altered):
    if not RELEASES:
        pytest.skip("no stored histories")
    name = "RenderVideo" if altered is TimerFirstRenderVideo else "RenderChain"
    entry, history = next((e, h) for e, h in stored(RELEASES[-1]) if e["workflow_type"] == name)
    others = RenderChain if name == "RenderVideo" else RenderVideo
    assert await replay([history], RenderVideo, RenderChain, sandboxed=False) == {}  # the original replays
    failures = await replay([history], altered, others, sandboxed=False)
    assert set(failures) == {entry["run_id"]}, f"{entry['file']} replayed against a reordered {name}"
    assert isinstance(failures[entry["run_id"]], workflow.NondeterminismError), failures


# ---- build id ------------------------------------------------------------------------------------
def test_build_id_is_the_commit_marked_dirty_or_the_package_version(tmp_path):
    from longtalk.build import build_id, package_version

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True)

    assert build_id("rel-7 ", root=tmp_path) == "rel-7"  # LONGTALK_BUILD_ID wins
    assert build_id(root=tmp_path) == package_version()  # no checkout: the package version
    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-q", "-m", "one")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert build_id(root=tmp_path) == head
    (tmp_path / "new.txt").write_text("untracked files do not make a build dirty\n")
    assert build_id(root=tmp_path) == head
    (tmp_path / "a.py").write_text("x = 2\n")
    assert build_id(root=tmp_path) == head + "-dirty"
    assert build_id(root=tmp_path / "sub-that-is-not-a-checkout") == package_version()


def test_settings_read_the_build_id():
    from longtalk.build import build_id
    from longtalk.settings import Settings
    from worker import worker_build_id

    assert Settings.from_env({"LONGTALK_BUILD_ID": "v9"}).build_id == "v9"
    assert Settings.from_env({}).build_id == ""
    assert worker_build_id(Settings(build_id="v9")) == "v9"
    assert worker_build_id(Settings()) == build_id()


async def test_workers_carry_the_build_id(temporal_client, settings):
    """Built (not run) against the test server: the build id is the Worker's build_id and ends
    its identity; worker versioning stays off."""
    from worker import build_workers

    # queues of its own: a Worker built on the session workers' queues would join their pollers
    mine = dataclasses.replace(settings, build_id="v9", render_queue=f"{settings.render_queue}-build",
                               gpu_queue=f"{settings.gpu_queue}-build")
    ws = build_workers(temporal_client, mine, object(), backends={}, identity="h-1")
    # the GPU worker also polls its own queue (chain affinity)
    assert [w.task_queue for w in ws] == [mine.render_queue, mine.gpu_queue, f"{mine.gpu_queue}@h-1@v9"]
    for w, role in zip(ws, ("cpu", "gpu", "gpu")):
        config = w.config()
        assert config["build_id"] == "v9" and config["identity"] == f"h-1@v9-{role}"
        assert not config.get("use_worker_versioning")


class MemoryStore:
    """The few ObjectStore calls render_window makes, in memory (no S3 server here)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def get_json_or_none(self, key):
        return json.loads(self.objects[key]) if key in self.objects else None

    def get_bytes(self, key, offset=0, length=None):
        data = self.objects[key]
        return data[offset:] if length is None else data[offset:offset + length]

    def size(self, key):
        return len(self.objects[key]) if key in self.objects else None

    def put_bytes(self, key, data, content_type=None, metadata=None):
        self.objects[key] = bytes(data)

    def put_json(self, key, value):
        self.objects[key] = json.dumps(value).encode()

    def put_file(self, key, path, content_type=None, metadata=None):
        self.objects[key] = Path(path).read_bytes()


async def test_gpu_heartbeats_carry_the_build_id(tmp_path):
    from temporalio.testing import ActivityEnvironment

    from activities.gpu import GpuActivities
    from longtalk import av_io
    from longtalk.backends.preview import PreviewBackend
    from longtalk.payloads import RenderContext, RenderSpec, RenderWindowInput

    class SlowPreview(PreviewBackend):
        async def render_window(self, job, progress=None):
            await asyncio.sleep(0.5)  # long enough for a few beats
            return await super().render_window(job, progress)

    store, rid = MemoryStore(), "hb-build"
    store.put_bytes(f"renders/{rid}/reference.png", av_io.encode_png(np.full((64, 64, 3), 128, np.uint8)))
    wav = tmp_path / "t.wav"
    av_io.write_wav16(wav, [np.zeros(17 * 640, np.float32)])
    store.put_file(f"renders/{rid}/audio/track_1.wav", wav)
    ctx = RenderContext(render_id=rid, backend="preview", total_frames=17, reference_key=f"renders/{rid}/reference.png",
                        audio_keys=[f"renders/{rid}/audio/track_1.wav"],
                        spec=RenderSpec(width=64, height=64, prompt="p", window=17, motion=9))
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timedelta(seconds=0.6))
    beats = []
    env.on_heartbeat = lambda *details: beats.append(details)
    acts = GpuActivities(store, {"preview": SlowPreview()}, tmp_path / "cache", identity="w-1@b-42-gpu",
                            build_id="b-42")
    result = await env.run(acts.render_window, RenderWindowInput(context=ctx, index=0, chain_first=0))
    assert result.rendered
    details = [d[0] for d in beats if d]
    assert details and all(d.get("build_id") == "b-42" for d in details), details
    assert json.loads(store.objects[f"renders/{rid}/windows/00000/meta.json"])["worker"] == "w-1@b-42-gpu"
