"""An upgrade in the middle of a render: workers running the previous release's code (its
tree at the commit the stored histories were captured from, taken with `git archive`) start
a render, and are replaced mid-render by workers running the current code, the way the
README's "Upgrading" section says (`longtalk.stack.replace_worker`: graceful stop, then the
new worker). The render must end with exactly T frames, every window rendered once, both
builds must have served it, and no workflow task may fail on the new code."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from longtalk import av_io
from longtalk.payloads import output_key, window_meta_key, window_prefix
from longtalk.stack import READY_LINE, replace_worker, worker_grace_s
from longtalk.store import ObjectStore
from longtalk.testing import cut_audio
from longtalk.windows import WindowParams, total_frames, window_count
from tests.media import ROOT
from tests.faults import StandinProcess, until, worker
from tests.helpers import RELEASES, manifest
from tests.media import samples_16k

pytestmark = pytest.mark.timeout(420)
SIZE = 128
NEW = "upgrade-new"  # the current code's build id in this test


def releases_to_upgrade_from() -> list[str]:
    """The oldest stored release (the widest gap a render in flight may have to cross) and the
    newest one (the release just before the current code), once each."""
    by_age = sorted(RELEASES, key=lambda r: manifest(r)["captured_at"])
    return list(dict.fromkeys([by_age[0], by_age[-1]])) if by_age else []


@pytest.fixture(params=releases_to_upgrade_from() or [None])
def release_tree(request, tmp_path_factory) -> Path:
    """The release's files, exactly as committed (no venv of its own: the same packages run
    both releases, as on a worker image rebuilt from the same lock)."""
    assert request.param is not None, "no stored release under tests/histories"
    release = manifest(request.param)
    tree = tmp_path_factory.mktemp(f"release-{release['release']}")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", release["commit"]],
                             capture_output=True, timeout=120)
    assert archive.returncode == 0, (
        f"the release commit {release['commit']} is not in this clone ({archive.stderr.decode()[:300]}); "
        "the upgrade test needs the project's git history")
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True, timeout=120)
    return tree


class Proc:
    """A worker ProcessHandle seen as a longtalk.stack.Process (what replace_worker stops)."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def stop(self, timeout: float) -> bool:
        import signal

        self.handle.proc.send_signal(signal.SIGTERM)
        try:
            self.handle.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.handle.kill()
        return True


async def test_a_render_survives_replacing_the_previous_release_by_the_current_code(
        settings, temporal_server, s3_server, store, release_tree, tmp_path):
    s = dataclasses.replace(
        settings, render_queue=f"up-render-{uuid.uuid4().hex[:6]}", gpu_queue=f"up-gpu-{uuid.uuid4().hex[:6]}",
        window=17, motion=9, windows_per_run=4, backend="comfyui", data_dir=tmp_path / "data")
    logs = tmp_path / "logs"
    comfy = StandinProcess(tmp_path / "comfy", free_port(), logs / "standin.log", step_s=0.001)
    comfy.start()
    procs = [comfy]
    try:
        await comfy.ready()
        await comfy.control("/standin/faults", {"delay_s": 0.4})  # each window takes a while on the "GPU"
        env = {"LONGTALK_COMFY_URL": comfy.url}

        # the previous release serves, and its own starter submits the job
        # the build ids tell the two apart (a release before build ids has none at all)
        old = [worker(s, roles, logs / f"old-{roles}.log", code=release_tree, LONGTALK_BUILD_ID="upgrade-old", **env).start()
               for roles in ("cpu", "gpu")]
        procs += old
        for handle in old:
            await handle.wait_for_line(READY_LINE, timeout=90)
        speech = cut_audio(ROOT / "examples" / "speech.ogg", tmp_path / "speech.wav", 1.0, 4.0)
        job = tmp_path / "job.json"
        job.write_text(json.dumps({"input": {"image_path": str(ROOT / "examples" / "portrait.png"),
                                             "wav_path": str(speech), "width": SIZE, "height": SIZE}}))
        rid = f"upgrade-{uuid.uuid4().hex[:6]}"
        started = await asyncio.to_thread(subprocess.run, [
            sys.executable, str(release_tree / "starter.py"), str(job), "--id", rid, "--no-wait", "--quiet"],
            cwd=release_tree, env={**old[0].env}, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stderr

        client = await Client.connect(s.temporal_address)
        handle = client.get_workflow_handle(rid)
        params = WindowParams(s.window, s.motion, s.fps)
        frames = total_frames(samples_16k(speech), params)
        windows = window_count(frames, params)
        assert windows >= 12

        async def some_windows_done():
            return (await handle.query("progress"))["windows_done"] >= 3
        await until(some_windows_done, timeout=120)

        # the documented procedure, one worker after the other: graceful stop, then the new code
        new = []
        for handle_old, roles in zip(old, ("cpu", "gpu")):
            def start_new(roles=roles):
                new.append(worker(s, roles, logs / f"new-{roles}.log", LONGTALK_BUILD_ID=NEW, **env).start())
            await asyncio.to_thread(replace_worker, Proc(handle_old), worker_grace_s(s), start_new)
            procs.append(new[-1])
            await new[-1].wait_for_line(READY_LINE, timeout=90)
        assert not any(h.alive() for h in old)
        done_at_switch = (await handle.query("progress"))["windows_done"]
        assert done_at_switch < windows, "the render finished before the upgrade: make the windows slower"

        result = await asyncio.wait_for(handle.result(), 240)
        assert result["frames"] == frames and result["windows"] == windows

        # exactly T frames in the published video
        out = tmp_path / "out.mp4"
        await asyncio.to_thread(ObjectStore.from_settings(s).download, output_key(rid), out)
        assert av_io.probe(out)["video"]["frames"] == frames

        # every window rendered once: one attempt each, none after its meta.json was stored
        workers_seen = set()
        for k in range(windows):
            meta = store.get_json(window_meta_key(rid, k))
            attempts = list(store.list(window_prefix(rid, k) + "attempts/"))
            assert len(attempts) == 1, f"window {k} was rendered {len(attempts)} times"
            workers_seen.add(meta["worker"])
        stats = await comfy.control("/standin/stats")
        assert stats["succeeded"] == windows, stats
        assert any(f"@{NEW}" not in w for w in workers_seen), workers_seen  # the previous release rendered some
        assert any(f"@{NEW}" in w for w in workers_seen), workers_seen  # and the current code the rest

        # both builds ran the workflows, and the new code replayed them without a failed task
        identities, failed = set(), 0
        async for wf in client.list_workflows(f"WorkflowId STARTS_WITH '{rid}'"):
            async for event in client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history_events():
                if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                    identities.add(event.workflow_task_completed_event_attributes.identity)
                failed += event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
        assert failed == 0
        assert any(f"@{NEW}" not in i for i in identities) and any(f"@{NEW}" in i for i in identities), identities
    finally:
        for p in procs:
            p.kill()


def free_port() -> int:
    from longtalk.stack import free_port as port

    return port()
