"""Session-wide real servers for the tests: a Temporal dev server and an S3 server.

Both are started by the same code as `make up` (longtalk.stack), on free loopback ports,
with their data in a temporary folder that is removed at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from longtalk.settings import Settings
from longtalk.stack import free_port
from longtalk.store import ObjectStore
from longtalk.testing import EXAMPLES, cut_audio, s3_process, temporal_process
from tests.comfy_standin.server import start_standin
from tests.helpers import CountingPreview
from tests.media import ROOT, make_video
from worker import build_workers



@pytest.fixture(scope="session")
def stack_dir():
    path = Path(tempfile.mkdtemp(prefix="longtalk-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(stack_dir) -> Settings:
    return Settings(
        data_dir=stack_dir,
        temporal_address=f"127.0.0.1:{free_port()}",
        s3_endpoint=f"127.0.0.1:{free_port()}",
        bucket="test-renders",
        render_queue=f"render-{uuid.uuid4().hex[:6]}",
        gpu_queue=f"gpu-{uuid.uuid4().hex[:6]}",
        # path inputs come from the repo (examples) and the tests' temporary folders
        input_roots=os.pathsep.join([str(ROOT), tempfile.gettempdir()]),
        url_allow_hosts="127.0.0.1",  # the tests' URL inputs are served on loopback
    )


@pytest.fixture(scope="session")
def s3_server(settings, stack_dir):
    proc = s3_process(settings, stack_dir)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def temporal_server(settings, stack_dir):
    proc = temporal_process(settings, stack_dir)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def store(settings, s3_server) -> ObjectStore:
    s = ObjectStore.from_settings(settings)
    s.ensure_bucket()
    return s


@pytest.fixture(scope="session")
async def temporal_client(settings, temporal_server):
    from longtalk import temporal_connect

    # the frontend's port opens before it is healthy ("Frontend is not healthy yet"): a module
    # whose first test needs Temporal at once, on a loaded machine, meets that window
    for _ in range(60):
        try:
            return await temporal_connect.connect(settings)  # as every process connects: the project's data converter
        except temporal_connect.TemporalUnreachable:
            await asyncio.sleep(0.5)
    return await temporal_connect.connect(settings)


@pytest.fixture
def render_id() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    """Real speech cut from the bundled example in three containers, and a moving source video."""
    d = tmp_path_factory.mktemp("media")
    return {
        "speech": cut_audio(EXAMPLES / "speech.ogg", d / "speech.wav", 1.0, 7.3),
        "speech_mp3": cut_audio(EXAMPLES / "speech.ogg", d / "speech.mp3", 3.0, 3.1),
        "speech_2": cut_audio(EXAMPLES / "speech_2.ogg", d / "speech_2.flac", 0.0, 5.0),
        "video": make_video(d / "source.mp4", 2.0),
        "portrait": EXAMPLES / "portrait.png",
    }


@pytest.fixture(scope="session")
def backend():
    return CountingPreview()


@pytest.fixture(scope="session")
async def workers(temporal_client, settings, store, backend):
    ws = build_workers(temporal_client, settings, store, backends={"preview": backend}, identity="test")
    tasks = [asyncio.create_task(w.run()) for w in ws]
    yield ws
    for w in ws:
        await w.shutdown()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def standin(tmp_path):
    """A ComfyUI stand-in in this process (real protocol, pinned node schema), one per test."""
    server = await start_standin(tmp_path / "comfy", step_s=0.001)
    yield server
    await server.close()
