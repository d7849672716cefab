"""`make up` / `make down` (longtalk.stack): start, stop, and start again in one data folder (the
HTTP API with its generated key among the services); the later commands keep the settings the
stack was started with."""

import dataclasses
import http.server as http_server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from functools import partial
from pathlib import Path

import pytest

from longtalk.build import build_id
from longtalk.settings import Settings
from longtalk.stack import READY_LINE, Stack, free_port, generated_key, port_open, split_host_port
from longtalk.testing import cut_audio
from tests.media import ROOT


def test_up_down_up_again(settings, tmp_path):
    s = dataclasses.replace(settings, data_dir=tmp_path / "data", temporal_address=f"127.0.0.1:{free_port()}",
                            temporal_ui_port=free_port(), s3_endpoint=f"127.0.0.1:{free_port()}",
                            api_address=f"127.0.0.1:{free_port()}")
    stack = Stack(s)
    try:
        stack.up()
        assert all(state.startswith("running") for state in stack.status().values())
        stack.up()  # twice is harmless: nothing new is started
        key = generated_key(s, stack.api_dir)  # first start: a key generated into the data folder
        assert key and oct((stack.api_dir / "keys").stat().st_mode & 0o777) == "0o600"
        health = json.loads(urllib.request.urlopen(urllib.request.Request(
            f"http://{s.api_address}/v2/local/health", headers={"Authorization": f"Bearer {key}"}), timeout=30).read())
        assert set(health) == {"jobs", "workers"}
        assert stack.down() == ["worker", "api", "s3", "temporal"]
        assert not port_open(*split_host_port(s.api_address))
        assert not port_open(*split_host_port(s.temporal_address))
        stack.up()  # returns only once the new worker is ready, not on the old log line
        assert generated_key(s, stack.api_dir) == key  # the same key on the next start
        log = (stack.log_dir / "worker.log").read_text()
        assert log.count(READY_LINE) == 2
        assert stack.processes["worker"].running()
        # make upgrade: a new worker process, the servers untouched
        servers = {name: stack.processes[name].pid() for name in ("temporal", "s3")}
        old_worker, old_api = stack.processes["worker"].pid(), stack.processes["api"].pid()
        stack.upgrade(grace_s=30)
        assert stack.processes["worker"].running() and stack.processes["worker"].pid() != old_worker
        assert stack.processes["api"].running() and stack.processes["api"].pid() != old_api
        assert {name: stack.processes[name].pid() for name in servers} == servers
        assert (stack.log_dir / "worker.log").read_text().count(READY_LINE) == 3
        assert "shutting down" in (stack.log_dir / "worker.log").read_text()  # the old one stopped gracefully
    finally:
        stack.down()
    assert all(state == "stopped" for state in stack.status().values())
    with pytest.raises(RuntimeError, match="make up"):
        stack.upgrade(grace_s=1)  # nothing to upgrade while the stack is down


def test_the_generated_key_is_the_operators_admin_key(tmp_path):
    """make up's own key sees every render in the dashboard (starter.py's have no owner);
    keys given in the settings get no admin rights from the stack."""
    from longtalk.settings import Settings
    from longtalk.stack import api_credentials

    env = api_credentials(Settings(), tmp_path / "a")
    assert env["LONGTALK_API_ADMIN_NAMES"] == "default"
    assert (tmp_path / "a" / "keys").read_text().startswith("default:")
    assert "LONGTALK_API_ADMIN_NAMES" not in api_credentials(Settings(api_keys="ops:" + "k" * 20), tmp_path / "b")
    kept = api_credentials(Settings(api_admin_names="alice"), tmp_path / "c")
    assert "LONGTALK_API_ADMIN_NAMES" not in kept  # the settings' own admin names stand


# ---- the stack keeps the settings it was started with (longtalk.stack_record) ------------------

def test_differences_compare_values_and_hide_secrets(tmp_path):
    from longtalk.settings import Settings
    from longtalk.stack import refused
    from longtalk.stack_record import differences, refusal, stack_env

    started = Settings(data_dir=tmp_path / "data", url_allow_hosts="127.0.0.1", s3_secret_key="s3-recorded-secret")
    recorded = stack_env(started, {"LONGTALK_COMFY_STEPS": "4", "LONGTALK_NOT_A_SETTING": "x"})
    assert recorded["LONGTALK_DATA_DIR"] == str((tmp_path / "data").resolve())
    assert recorded["LONGTALK_URL_ALLOW_HOSTS"] == "127.0.0.1" and recorded["LONGTALK_WINDOW"] == str(started.window)
    assert recorded["LONGTALK_COMFY_STEPS"] == "4" and "LONGTALK_NOT_A_SETTING" not in recorded
    # the same values in other spellings, and the data folder given relative: no difference
    same = {"LONGTALK_S3_SECURE": "0", "LONGTALK_GPU_SHUTDOWN_GRACE_S": "600", "LONGTALK_COMFY_STEPS": "4",
            "LONGTALK_URL_ALLOW_HOSTS": "127.0.0.1", "LONGTALK_DATA_DIR": "data", "PATH": "/bin"}
    assert differences(recorded, same) == []
    other = {"LONGTALK_URL_ALLOW_HOSTS": "10.0.0.1", "LONGTALK_S3_SECRET_KEY": "s3-other-secret",
             "LONGTALK_COMFY_STEPS": "8", "LONGTALK_COMFY_CFG": "2.5", "LONGTALK_S3_SECURE": "yes"}
    diffs = {d.name: d for d in differences(recorded, other)}
    assert set(diffs) == set(other)
    assert (diffs["LONGTALK_URL_ALLOW_HOSTS"].recorded, diffs["LONGTALK_URL_ALLOW_HOSTS"].current) == ("127.0.0.1", "10.0.0.1")
    assert diffs["LONGTALK_COMFY_CFG"].recorded is None  # not set when the stack started
    message = refusal(list(diffs.values()), tmp_path / "stack.json")
    assert all(name in message for name in other) and "10.0.0.1" in message and "127.0.0.1" in message
    assert "s3-other-secret" not in message and "s3-recorded-secret" not in message
    with pytest.raises(ValueError, match="LONGTALK_WINDOW"):
        differences(recorded, {"LONGTALK_WINDOW": "many"})
    # which commands run with which differences: a worker of the caller's may have its own roles
    # and graph variables, never another allow-list or secret
    mixed = differences(recorded, {**other, "LONGTALK_WORKER_ROLES": "gpu"})
    assert {d.name for d in refused("worker", mixed)} == {"LONGTALK_URL_ALLOW_HOSTS", "LONGTALK_S3_SECRET_KEY",
                                                          "LONGTALK_S3_SECURE"}
    assert refused("upgrade", mixed) == refused("up", mixed) == mixed
    assert refused("status", mixed) == refused("down", mixed) == []


def test_a_renamed_variable_is_recorded_and_compared_under_its_new_name(tmp_path):
    from longtalk.settings import Settings
    from longtalk.stack_record import differences, stack_env

    old = {"LONGTALK_COMFY_SEED": "5"}  # LONGTALK_DEFAULT_SEED's old name (a graph variable before)
    recorded = stack_env(Settings.from_env({**old, "LONGTALK_DATA_DIR": str(tmp_path)}), old)
    assert recorded["LONGTALK_DEFAULT_SEED"] == "5" and "LONGTALK_COMFY_SEED" not in recorded
    assert differences(recorded, old) == [] and differences(recorded, {"LONGTALK_DEFAULT_SEED": "5"}) == []
    [diff] = differences(recorded, {"LONGTALK_COMFY_SEED": "6"})
    assert (diff.name, diff.recorded, diff.current, diff.per_process) == ("LONGTALK_DEFAULT_SEED", "5", "6", False)


def test_status_names_an_upgrade_pending():
    from longtalk.stack import build_note

    assert build_note("abc1234", "abc1234") == "build abc1234"
    pending = build_note("abc1234", "def5678-dirty")
    assert "upgrade pending" in pending and pending.startswith("build abc1234") and "def5678-dirty" in pending
    stopped = build_note(None, "abc1234")
    assert "abc1234" in stopped and "upgrade pending" not in stopped


def stack_command(env: dict, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "longtalk.stack", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def serve(folder: Path):
    server = http_server.ThreadingHTTPServer(("127.0.0.1", 0), partial(
        http_server.SimpleHTTPRequestHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.timeout(600)
def test_later_commands_keep_the_settings_the_stack_started_with(tmp_path):
    """`LONGTALK_URL_ALLOW_HOSTS=127.0.0.1 make up`, then `make status`, `make upgrade`, `make worker`
    and `make down` without it: each runs with the recorded value; one that sets another value
    is refused (exit 2) naming the variable and both values."""
    data = tmp_path / "data"
    bare = {k: v for k, v in os.environ.items() if not k.startswith("LONGTALK_")}
    bare["LONGTALK_DATA_DIR"] = str(data)  # what every later command is given: the data folder only
    started = {**bare, "LONGTALK_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
               "LONGTALK_TEMPORAL_UI_PORT": str(free_port()), "LONGTALK_S3_ENDPOINT": f"127.0.0.1:{free_port()}",
               "LONGTALK_API_ADDRESS": f"127.0.0.1:{free_port()}", "LONGTALK_URL_ALLOW_HOSTS": "127.0.0.1"}
    settings = Settings.from_env(started)
    conflicting = {**bare, "LONGTALK_URL_ALLOW_HOSTS": "10.0.0.1"}
    www = tmp_path / "www"
    www.mkdir()
    shutil.copy(ROOT / "examples" / "portrait.png", www / "portrait.png")
    cut_audio(ROOT / "examples" / "speech.ogg", www / "speech.wav", 1.0, 1.5)
    files = serve(www)
    foreground = None
    try:
        up = stack_command(started, "up")
        assert up.returncode == 0, up.stderr
        record = data / "run" / "stack.json"
        assert oct(record.stat().st_mode & 0o777) == "0o600"  # it holds the S3 and API secrets
        assert stack_command(started, "up").returncode == 0  # twice is harmless

        status = stack_command(bare, "status")
        assert status.returncode == 0, status.stderr
        for address in (settings.temporal_address, settings.temporal_ui_url, f"http://{settings.s3_endpoint}",
                        f"http://{settings.api_address}/"):
            assert address in status.stdout, (address, status.stdout)
        assert f"build {build_id()}" in status.stdout and "upgrade pending" not in status.stdout

        pids = {name: int((data / "run" / f"{name}.pid").read_text()) for name in ("worker", "api", "temporal")}
        upgrade = stack_command(bare, "upgrade", "--grace", "30")
        assert upgrade.returncode == 0, upgrade.stderr
        new = {name: int((data / "run" / f"{name}.pid").read_text()) for name in ("worker", "api", "temporal")}
        assert new["worker"] != pids["worker"] and new["api"] != pids["api"] and new["temporal"] == pids["temporal"]
        for name in ("worker", "api"):  # the new processes got the recorded value, not the caller's none
            env = environ_of(new[name])
            assert env["LONGTALK_URL_ALLOW_HOSTS"] == "127.0.0.1", name
            assert env["LONGTALK_API_ADDRESS"] == settings.api_address, name
        # and behave so: a job whose inputs are on 127.0.0.1 is accepted (API) and rendered (worker)
        key = generated_key(settings, data / "api")
        url = f"http://127.0.0.1:{files.server_address[1]}"
        job = {"input": {"image_url": f"{url}/portrait.png", "wav_url": f"{url}/speech.wav", "width": 64, "height": 64}}
        request = urllib.request.Request(
            f"http://{settings.api_address}/v2/local/runsync?wait=120000", data=json.dumps(job).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        body = json.loads(urllib.request.urlopen(request, timeout=150).read())
        assert body["status"] == "COMPLETED", body

        # another value: refused by what starts processes, nothing replaced; status names it
        for command in ("upgrade", "worker", "up"):
            refused = stack_command(conflicting, command)
            assert refused.returncode == 2, (command, refused.stdout, refused.stderr)
            assert "LONGTALK_URL_ALLOW_HOSTS" in refused.stderr and "10.0.0.1" in refused.stderr
            assert "127.0.0.1" in refused.stderr and "make down" in refused.stderr
        assert int((data / "run" / "worker.pid").read_text()) == new["worker"]
        noted = stack_command(conflicting, "status")
        assert noted.returncode == 0 and "LONGTALK_URL_ALLOW_HOSTS" in noted.stdout and "10.0.0.1" in noted.stdout

        # make worker: a foreground worker with the recorded settings (and roles of its own)
        log = tmp_path / "foreground.log"
        with open(log, "wb") as out:
            foreground = subprocess.Popen([sys.executable, "-m", "longtalk.stack", "worker"], cwd=ROOT,
                                          env={**bare, "LONGTALK_WORKER_ROLES": "gpu"},
                                          stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while READY_LINE not in log.read_text() and foreground.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert READY_LINE in log.read_text(), log.read_text()[-2000:]
        env = environ_of(foreground.pid)
        assert (env["LONGTALK_URL_ALLOW_HOSTS"], env["LONGTALK_WORKER_ROLES"]) == ("127.0.0.1", "gpu")
        foreground.send_signal(signal.SIGTERM)
        assert foreground.wait(timeout=60) == 0

        # make down is never refused (it is how to change a setting), and forgets the record
        down = stack_command(conflicting, "down")
        assert down.returncode == 0, down.stderr
        assert not record.exists()
        assert not port_open(*split_host_port(settings.temporal_address))
        assert not port_open(*split_host_port(settings.api_address))
    finally:
        if foreground is not None and foreground.poll() is None:
            os.killpg(foreground.pid, signal.SIGKILL)
            foreground.wait()
        Stack(settings).down()
        files.shutdown()


def test_the_embedded_temporal_keeps_its_sqlite_file_in_wal_mode(temporal_server, stack_dir):
    """The dev server's database in write-ahead-log mode (longtalk.stack.SQLITE_PRAGMAS): read
    from the file itself, as SQLite records the mode in it, not from the command line."""
    import sqlite3

    db = sqlite3.connect(f"file:{stack_dir / 'temporal.db'}?mode=ro", uri=True, timeout=30)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0] > 0
    finally:
        db.close()
