"""Many machines: a GPU worker that knows only network addresses renders the windows of a
render started elsewhere (README, "Run on GPUs" / "Add a GPU machine")."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from longtalk.payloads import window_meta_key
from longtalk.stack import READY_LINE
from longtalk.temporal_connect import tls_config
from tests.helpers import check_video, run_starter, write_job
from tests.media import samples_16k
from worker import build_workers

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parent.parent


def remote_env(settings, data_dir: Path) -> dict[str, str]:
    """What an operator gives a worker on another machine: the Temporal frontend and the S3
    endpoint as host:port, the S3 credentials and bucket, the GPU queue, its own data folder.
    No other LONGTALK_ setting of this process leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LONGTALK_")}
    env.update({
        "LONGTALK_TEMPORAL_ADDRESS": settings.temporal_address,
        "LONGTALK_S3_ENDPOINT": settings.s3_endpoint,
        "LONGTALK_S3_ACCESS_KEY": settings.s3_access_key,
        "LONGTALK_S3_SECRET_KEY": settings.s3_secret_key,
        "LONGTALK_BUCKET": settings.bucket,
        "LONGTALK_GPU_QUEUE": settings.gpu_queue,
        "LONGTALK_WORKER_ROLES": "gpu",
        "LONGTALK_DATA_DIR": str(data_dir),
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    })
    return env


async def test_a_worker_with_only_network_addresses_renders_a_render_started_elsewhere(
        temporal_client, temporal_server, settings, store, media, tmp_path, render_id):
    # fresh queues: only the remote worker serves this GPU queue
    here = dataclasses.replace(settings, render_queue=f"render-{uuid.uuid4().hex[:6]}",
                               gpu_queue=f"gpu-{uuid.uuid4().hex[:6]}", worker_roles="cpu")
    remote_home = tmp_path / "gpu-machine"  # another working folder, an empty data folder
    (remote_home / "data").mkdir(parents=True)
    log = open(remote_home / "worker.log", "wb")
    proc = subprocess.Popen([sys.executable, str(ROOT / "worker.py")], cwd=remote_home,
                            env=remote_env(here, remote_home / "data"), stdout=log, stderr=subprocess.STDOUT)
    cpu = build_workers(temporal_client, here, store, identity="main-machine")
    tasks = [asyncio.create_task(w.run()) for w in cpu]
    try:
        deadline = time.monotonic() + 90
        while READY_LINE not in (remote_home / "worker.log").read_text(errors="replace"):
            assert proc.poll() is None, (remote_home / "worker.log").read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the remote GPU worker did not start"
            await asyncio.sleep(0.2)
        out = tmp_path / "out.mp4"
        job = write_job(tmp_path, image_path=media["portrait"], wav_path=media["speech"], width=64, height=64)
        rc, result, err = await run_starter(temporal_client, here, job, "--id", render_id, "--output", str(out))
        assert rc == 0, err + (remote_home / "worker.log").read_text(errors="replace")[-3000:]
        total = samples_16k(media["speech"]) // 640
        check_video(out, total, 64, 64)
        # every window was rendered by the remote process
        metas = [store.get_json(window_meta_key(render_id, k)) for k in range(result["windows"])]
        assert metas and all(f"-{proc.pid}@" in m["worker"] and m["worker"].endswith("-gpu") for m in metas)
        # and it kept nothing outside its own folder: its data folder holds at most its cache
        assert {p.name for p in (remote_home / "data").iterdir()} <= {"cache"}
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 60)
        log.close()
        for w in cpu:
            await w.shutdown()
        await asyncio.gather(*tasks, return_exceptions=True)
        store.delete_prefix(f"renders/{render_id}/")


def test_tls_settings_for_the_temporal_client(tmp_path):
    from longtalk.settings import Settings

    assert tls_config(Settings()) is False
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "client.pem", "client.key"))
    for p in (ca, cert, key):
        p.write_bytes(b"-----BEGIN X-----\n" + p.name.encode() + b"\n-----END X-----\n")
    tls = tls_config(Settings(temporal_tls=True))
    assert tls.server_root_ca_cert is None and tls.client_cert is None  # system roots, no client cert
    mtls = tls_config(Settings(temporal_tls=True, temporal_tls_ca=str(ca), temporal_tls_cert=str(cert),
                               temporal_tls_key=str(key), temporal_tls_server_name="temporal.internal"))
    assert (mtls.server_root_ca_cert, mtls.client_cert, mtls.client_private_key, mtls.domain) == (
        ca.read_bytes(), cert.read_bytes(), key.read_bytes(), "temporal.internal")
    with pytest.raises(ValueError, match="LONGTALK_TEMPORAL_TLS_CERT and LONGTALK_TEMPORAL_TLS_KEY"):
        tls_config(Settings(temporal_tls=True, temporal_tls_cert=str(cert)))
    with pytest.raises(ValueError, match="LONGTALK_TEMPORAL_TLS:"):
        tls_config(Settings(temporal_tls_cert=str(cert), temporal_tls_key=str(key)))
    with pytest.raises(ValueError, match="LONGTALK_TEMPORAL_TLS_CA: cannot read"):
        tls_config(Settings(temporal_tls=True, temporal_tls_ca=str(tmp_path / "missing.pem")))
