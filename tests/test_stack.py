"""`make up` / `make down` (longtalk.stack): start, stop, and start again in one data folder."""

import dataclasses

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
    finally:
        stack.down()
    assert all(state == "stopped" for state in stack.status().values())
