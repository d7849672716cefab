"""`make up` / `make down` (longtalk.stack): start, stop, and start again in one data folder (the
HTTP API with its generated key among the services)."""

import dataclasses
import json
import urllib.request

import pytest

from longtalk.stack import READY_LINE, Stack, free_port, generated_key, port_open, split_host_port


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
