"""What the tests (tests/), the benchmarks (bench/) and the scripts (scripts/) share, as
`temporalio.testing` is for the SDK's users: real servers started in a folder, real media cut
with ffmpeg, the API served in the running event loop, the browser the dashboard's checks
drive. The service itself imports none of it.

    s3_process, temporal_process   a real S3 server / Temporal dev server, started and ready
    standin_process(module, ...)   a test double run as its own process, started and ready
    serving(app, address)          an ASGI app (the HTTP API) on uvicorn, as a task of this loop
    api_settings(settings)         settings for an API with two keys (KEY_A, KEY_B) and a webhook secret
    purges(client, owner)          the owner's PurgeQueue runs
    transcode, cut_audio           one ffmpeg run; a slice of real speech
    chromium_paths, headless_chromium   the system's chromium + chromedriver, driven by selenium
    quality_chains                 windows rendered as the workflow renders them, from the examples

The ComfyUI and RunPod stand-ins stay with the tests (tests/comfy_standin, tests/runpod_standin:
test doubles of a GPU server and of RunPod's control plane); a benchmark that needs one runs it
as a process: `python -m tests.comfy_standin`, `python -m tests.runpod_standin`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from ..settings import Settings
from ..stack import ROOT, Process, Service, free_port, s3_service, temporal_service

EXAMPLES = ROOT / "examples"


# ---- servers ------------------------------------------------------------------------------

def s3_process(settings: Settings, folder: Path) -> Process:
    """A real S3 server (rclone) for `settings`, its objects under folder/s3, started and ready."""
    (folder / "s3" / settings.bucket).mkdir(parents=True, exist_ok=True)
    return started(Process(s3_service(settings, folder / "s3"), folder / "run", folder / "logs"), 30)


def temporal_process(settings: Settings, folder: Path, db_name: str = "temporal.db") -> Process:
    """A real Temporal dev server for `settings` (SQLite file folder/db_name), started and ready."""
    return started(Process(temporal_service(settings, db_file=folder / db_name, headless=True),
                           folder / "run", folder / "logs"), 90)


def standin_process(module: str, port: int, folder: Path, *args: str) -> Process:
    """`python -m <module> --port <port> <args>` on loopback, its pid file under folder/run and
    its log under folder/logs, started and ready: a test double (tests.comfy_standin,
    tests.runpod_standin) that a benchmark runs as its own process, as the real service is."""
    name = module.rpartition(".")[2].replace("_", "-")
    argv = [sys.executable, "-m", module, "--port", str(port), *args]
    return started(Process(Service(name, argv, ("127.0.0.1", port), cwd=ROOT), folder / "run", folder / "logs"),
                   120)  # its imports take seconds on a busy machine


def started(proc: Process, timeout: float) -> Process:
    """proc, started and ready within timeout seconds; stopped again when it is not."""
    proc.start()
    try:
        proc.wait_ready(timeout)
    except BaseException:
        proc.stop(sig=signal.SIGKILL)
        raise
    return proc


@contextlib.asynccontextmanager
async def serving(app, address: str) -> AsyncIterator[str]:
    """`app` on uvicorn at address (host:port) as a task of the running event loop, until the
    block ends; yields its base URL."""
    import uvicorn

    host, port = address.rsplit(":", 1)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=int(port), log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    try:
        yield f"http://{address}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


KEY_A = "key-a-" + uuid.uuid4().hex  # two API keys: two owners (alice, bob)
KEY_B = "key-b-" + uuid.uuid4().hex
WEBHOOK_SECRET = "whsec_" + "c2VjcmV0LWZvci10aGUtd2ViaG9vay10ZXN0cw=="


def api_settings(settings: Settings, **overrides) -> Settings:
    """`settings` for an API with the keys above, the webhook secret, its own queue and port."""
    return dataclasses.replace(
        settings, api_keys=f"alice:{KEY_A},bob:{KEY_B}", api_webhook_secret=WEBHOOK_SECRET,
        api_queue=f"api-{uuid.uuid4().hex[:6]}", api_webhook_backoff_s=0.3,
        api_address=f"127.0.0.1:{free_port()}", **overrides)


async def purges(client, owner: str) -> list:
    """The owner's PurgeQueue runs (/purge-queue), the newest first."""
    found = [w async for w in client.list_workflows(f"WorkflowType = 'PurgeQueue' AND WorkflowId STARTS_WITH "
                                                    f"'purge-queue/{owner}/'")]
    return sorted(found, key=lambda w: w.start_time, reverse=True)


# ---- media --------------------------------------------------------------------------------

def transcode(src: Path | str, dst: Path, input_options: dict | None = None, **output_options) -> Path:
    """One ffmpeg run (built with ffmpeg-python): src -> dst with these options, overwriting."""
    import ffmpeg

    from .. import av_io

    av_io.run_ffmpeg(ffmpeg.input(str(src), **(input_options or {})).output(str(dst), **output_options)
                     .overwrite_output())
    return dst


def cut_audio(src: Path, dst: Path, start: float, seconds: float) -> Path:
    """A slice of real speech, re-encoded by the container the name asks for."""
    return transcode(src, dst, {"ss": f"{start}", "t": f"{seconds}"})


# ---- the browser --------------------------------------------------------------------------

def chromium_paths() -> tuple[str, str] | None:
    """(chromium, chromedriver) on PATH, or None (Debian: apt-get install chromium chromium-driver)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def headless_chromium(paths: tuple[str, str], *extra_args: str):
    """A selenium driver of headless chromium at 1280x800 that waits for DOMContentLoaded only
    (the pages poll forever) and starts nothing that waits on the network (offline machines)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,800", "--mute-audio", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update", "--disable-extensions",
                "--disable-sync", *extra_args):
        opts.add_argument(arg)
    opts.page_load_strategy = "eager"
    driver = webdriver.Chrome(service=Service(paths[1]), options=opts)
    driver.set_page_load_timeout(60)
    return driver
