"""`make up` / `make down` (longtalk.stack): start, stop, and start again in one data folder."""

import dataclasses

import pytest

from longtalk.stack import READY_LINE, Stack, free_port, port_open, split_host_port


def test_up_down_up_again(settings, tmp_path):
    s = dataclasses.replace(settings, data_dir=tmp_path / "data", temporal_address=f"127.0.0.1:{free_port()}",
                            temporal_ui_port=free_port(), s3_endpoint=f"127.0.0.1:{free_port()}")
    stack = Stack(s)
    try:
        stack.up()
        assert all(state.startswith("running") for state in stack.status().values())
        stack.up()  # twice is harmless: nothing new is started
        assert stack.down() == ["worker", "s3", "temporal"]
        assert not port_open(*split_host_port(s.temporal_address))
        stack.up()  # returns only once the new worker is ready, not on the old log line
        log = (stack.log_dir / "worker.log").read_text()
        assert log.count(READY_LINE) == 2
        assert stack.processes["worker"].running()
        # make upgrade: a new worker process, the servers untouched
        servers = {name: stack.processes[name].pid() for name in ("temporal", "s3")}
        old_worker = stack.processes["worker"].pid()
        stack.upgrade(grace_s=30)
        assert stack.processes["worker"].running() and stack.processes["worker"].pid() != old_worker
        assert {name: stack.processes[name].pid() for name in servers} == servers
        assert (stack.log_dir / "worker.log").read_text().count(READY_LINE) == 3
        assert "shutting down" in (stack.log_dir / "worker.log").read_text()  # the old one stopped gracefully
    finally:
        stack.down()
    assert all(state == "stopped" for state in stack.status().values())
    with pytest.raises(RuntimeError, match="make up"):
        stack.upgrade(grace_s=1)  # nothing to upgrade while the stack is down
