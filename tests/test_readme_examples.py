"""The README's HTTP API examples run as written: each block marked `<!-- example: NAME -->`
is taken from the README and run from the repository root (bash for the curl block, the
venv's python for the SDK block) against a real embedded stack started by `make up`'s code
(Temporal dev server, S3 server, API, worker with the preview backend). Only the addresses
change: the stack, the file server and the webhook receiver listen on free ports here, and
KEY is the key the stack generated. Then every render the block started is looked at."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from longtalk.settings import Settings
from longtalk.stack import Stack, free_port, generated_key
from longtalk.store import ObjectStore
from longtalk.testing import EXAMPLES
from tests.media import ROOT

README = (ROOT / "README.md").read_text()
MODES = {("image", "single"), ("image", "multi"), ("video", "single"), ("video", "multi")}
MAX_ARG_STRLEN = 32 * 4096  # Linux: the longest single argument execve takes ("Argument list too long")


def example(name: str) -> str:
    blocks = re.findall(rf"<!-- example: {name} -->\n```[a-z]+\n(.*?)\n```", README, re.S)
    assert len(blocks) == 1, f"README: expected one block marked <!-- example: {name} -->"
    return blocks[0]


def rewrite(code: str, ports: dict[int, str]) -> str:
    """The README's addresses (API 8000, file server 8001, webhook receiver 8002) -> the test's."""
    for readme_port, ours in ports.items():
        assert re.search(rf"\b{readme_port}\b", code), readme_port
        code = re.sub(rf"\b{readme_port}\b", ours, code)
    return code


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    data = tmp_path_factory.mktemp("readme-stack") / "data"
    bare = {k: v for k, v in os.environ.items() if not k.startswith("LONGTALK_")}
    env = {**bare, "LONGTALK_DATA_DIR": str(data), "LONGTALK_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
           "LONGTALK_TEMPORAL_UI_PORT": str(free_port()), "LONGTALK_S3_ENDPOINT": f"127.0.0.1:{free_port()}",
           "LONGTALK_API_ADDRESS": f"127.0.0.1:{free_port()}",
           "LONGTALK_URL_ALLOW_HOSTS": "127.0.0.1"}  # as the README says to start it
    settings = Settings.from_env(env)
    try:
        up = subprocess.run([sys.executable, "-m", "longtalk.stack", "up"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=240)
        assert up.returncode == 0, up.stderr
        key = generated_key(settings, data / "api")
        # the README's way to read the key, in this data folder
        command = re.search(r"`export KEY=\$\((cut [^`]*)\)`", README).group(1).replace("data/", f"{data}/")
        assert subprocess.run(["bash", "-c", command], capture_output=True, text=True).stdout.strip() == key
        # what the snippets get: the key and the data folder (the webhook receiver finds the
        # stack's secret there, as it does in data/ after a plain `make up`)
        yield settings, {**bare, "KEY": key, "LONGTALK_DATA_DIR": str(data)}
    finally:
        Stack(settings).down()


def run_snippet(argv: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    """Run in its own process group, which is killed afterwards: whatever the snippet left
    running in the background (a file server, a receiver) ends with it."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if proc.poll() is None:
            proc.wait()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


async def _listing(settings: Settings) -> dict[str, str]:
    from temporalio.client import Client

    client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
    return {w.id: w.status.name async for w in client.list_workflows('WorkflowType="RenderVideo"')}


def renders(settings: Settings, seen: set[str], count: int = 5, timeout: float = 120) -> dict[str, str]:
    """The renders not in `seen` (id -> Temporal status), once `count` of them are listed and
    every one has ended."""
    deadline = time.monotonic() + timeout
    while True:
        found = {rid: s for rid, s in asyncio.run(_listing(settings)).items() if rid not in seen}
        if len(found) >= count and all(s != "RUNNING" for s in found.values()):
            return found
        assert time.monotonic() < deadline, f"renders still running: {found}"
        time.sleep(1)


def status(settings: Settings, key: str, render_id: str) -> dict:
    request = urllib.request.Request(f"http://{settings.api_address}/v2/local/status/{render_id}",
                                     headers={"Authorization": f"Bearer {key}"})
    return json.loads(urllib.request.urlopen(request, timeout=30).read())


def check_renders(settings: Settings, key: str, found: dict[str, str]) -> dict[tuple[str, str], str]:
    """Four completed renders, one per mode, with the frames max_frame asked for and no
    warnings, and one cancelled render. Returns mode -> render id."""
    store = ObjectStore.from_settings(settings)
    bodies = {rid: status(settings, key, rid) for rid in found}
    assert sorted(b["status"] for b in bodies.values()) == ["CANCELLED"] + ["COMPLETED"] * 4, \
        {rid: (b["status"], b.get("error")) for rid, b in bodies.items()}
    modes: dict[tuple[str, str], str] = {}
    for rid, body in bodies.items():
        assert body["warnings"] == [], body["warnings"]
        if body["status"] == "COMPLETED":
            params = store.get_json(f"renders/{rid}/request.json")["params"]
            assert body["output"]["frames"] == params["max_frame"], (params, body["output"]["frames"])
            modes[(params["input_type"], params["person_count"])] = rid
    assert set(modes) == MODES
    return modes


@pytest.mark.timeout(900)
def test_the_curl_examples_run_as_written(stack):
    settings, env = stack
    api_port = settings.api_address.rpartition(":")[2]
    before = set(asyncio.run(_listing(settings)))  # the other test's renders, when it ran first
    code = rewrite(example("curl"), {8000: api_port, 8001: str(free_port()), 8002: str(free_port())})
    done = run_snippet(["bash", "-e", "-o", "pipefail", "-c", code], env, timeout=600)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])

    modes = check_renders(settings, env["KEY"], renders(settings, before))
    store = ObjectStore.from_settings(settings)
    url_job = store.get_json(f"renders/{modes['video', 'single']}/request.json")
    assert set(url_job["input_urls"]) == {"video", "audio"}  # downloaded from the file server
    assert status(settings, env["KEY"], modes["video", "single"])["output"]["video_path"] in done.stdout
    # the webhook reached the receiver, signed with the stack's secret
    assert re.search(rf"signature valid, render {modes['video', 'single']} COMPLETED", done.stdout), done.stdout
    # the base64 body: larger than one command-line argument may be, so `-d "$(base64 ...)"` fails
    b64 = sum(4 * math.ceil((EXAMPLES / name).stat().st_size / 3)
              for name in ("source_multi.mp4", "speech.ogg", "speech_2.ogg"))
    assert b64 > MAX_ARG_STRLEN


@pytest.mark.timeout(900)
def test_the_sdk_example_runs_as_written(stack):
    settings, env = stack
    before = set(asyncio.run(_listing(settings)))
    code = rewrite(example("sdk"), {8000: settings.api_address.rpartition(":")[2]})
    done = run_snippet([str(Path(sys.executable)), "-c", code], env, timeout=600)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])

    check_renders(settings, env["KEY"], renders(settings, before))
    lines = done.stdout.splitlines()
    assert any(re.fullmatch(r"\w+: \d+/\d+ windows", line) for line in lines), lines  # job.stream()'s progress
    assert "CANCELLED" in done.stdout
    # the reason the SDK's HTTPError hides, read from its response: the field, named
    assert any(re.match(r"400 widht: .*width", line) for line in lines), lines



def test_the_webhook_receiver_refuses_what_the_secret_did_not_sign():
    import importlib.util

    from api.webhooks import sign

    spec = importlib.util.spec_from_file_location("webhook_receiver", ROOT / "scripts" / "webhook_receiver.py")
    receiver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(receiver)
    secret, body, now = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY", b'{"id": "r1", "status": "COMPLETED"}', 1_800_000_000
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": sign(secret, "msg_1", now, body)}
    assert receiver.verify(secret, headers, body, now=now + 10) is None
    rotated = dict(headers, **{"webhook-signature": "v1,b2xk " + headers["webhook-signature"]})
    assert receiver.verify(secret, rotated, body, now=now) is None  # one of several signatures matches
    assert "signature" in receiver.verify(secret, headers, body.replace(b"COMPLETED", b"FAILED"), now=now)
    assert "signature" in receiver.verify("whsec_" + "WFlaQUJDREVGR0hJSktMTU5PUFFSU1RVVldY", headers, body, now=now)
    assert "timestamp" in receiver.verify(secret, headers, body, now=now + 3600)
    assert "webhook-id" in receiver.verify(secret, {}, body, now=now)
