"""Secrets never reach workflow history or logs; inputs enter history as object keys only."""

from __future__ import annotations

import base64
import dataclasses
import http.server
import logging
import re
import threading
from functools import partial

import pytest
from google.protobuf.json_format import MessageToJson

from tests.helpers import run_starter, write_job
from workflows.render import chain_workflow_id

TOKEN = "tok-3f9c2d7e1b5a"


@pytest.fixture
def file_server(tmp_path):
    (tmp_path / "www").mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, tmp_path / "www"
    server.shutdown()


async def history_text(client, workflow_id: str) -> str:
    """Every event as JSON, with the payloads' base64 data decoded (that is where inputs live)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    text = "\n".join(MessageToJson(e) for e in history.events)
    payloads = [base64.b64decode(m).decode("utf-8", "replace") for m in re.findall(r'"data": "([^"]+)"', text)]
    return text + "\n" + "\n".join(payloads)


async def test_no_secret_in_history_or_logs(workers, temporal_client, settings, media, tmp_path, render_id,
                                            file_server, caplog):
    server, www = file_server
    (www / "speech.mp3").write_bytes(media["speech_mp3"].read_bytes())
    url = f"http://user:pw-{TOKEN}@127.0.0.1:{server.server_address[1]}/speech.mp3?sig={TOKEN}"
    allowed = dataclasses.replace(settings, url_allow_hosts="127.0.0.1")
    job = write_job(tmp_path, image_path=media["portrait"], wav_url=url, width=128, height=128)
    caplog.set_level(logging.DEBUG)
    rc, result, err = await run_starter(temporal_client, allowed, job, "--id", render_id)
    assert rc == 0, err
    text = await history_text(temporal_client, render_id) + await history_text(
        temporal_client, chain_workflow_id(render_id, 0))
    assert f"renders/{render_id}/inputs/" in text  # the inputs are there, as object keys
    for secret in (settings.s3_secret_key, TOKEN, "pw-", "127.0.0.1:" + str(server.server_address[1])):
        assert secret not in text, f"{secret!r} found in workflow history"
        assert secret not in caplog.text, f"{secret!r} found in the logs"
        assert secret not in err, f"{secret!r} printed by the starter"
    assert settings.s3_secret_key not in result["video_url"]  # signed, never the key itself
