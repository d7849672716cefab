"""Real processes for the fault tests: workers, the ComfyUI stand-in and a slow TCP proxy.

Everything runs on loopback; every process is started by the test and killed at the end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from longtalk.settings import Settings
from longtalk.stack import READY_LINE, port_open
from tests.comfy_standin.control import control

ROOT = Path(__file__).resolve().parent.parent


class ProcessHandle:
    """A child process whose output goes to a log file we can wait on."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> None:
        self.argv, self.env, self.log, self.cwd = argv, env, log, cwd
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ProcessHandle":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    async def wait_for_line(self, text: str, timeout: float = 60.0, after: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.exists() and text in self.log.read_text(errors="replace")[after:]:
                return
            if not self.alive():
                raise RuntimeError(f"{self.argv} exited: {self.log.read_text(errors='replace')[-3000:]}")
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{text!r} not seen in {self.log} after {timeout}s")


def worker(settings: Settings, roles: str, log: Path, code: Path = ROOT, **overrides: str) -> ProcessHandle:
    """worker.py of the checkout at `code` (another release's tree runs its own code)."""
    env = {**os.environ, **settings.to_env(), "LONGTALK_WORKER_ROLES": roles, **overrides}
    return ProcessHandle([sys.executable, str(code / "worker.py")], env, log, cwd=code)


async def start_worker(settings: Settings, roles: str, log: Path, **overrides: str) -> ProcessHandle:
    offset = log.stat().st_size if log.exists() else 0
    handle = worker(settings, roles, log, **overrides).start()
    await handle.wait_for_line(READY_LINE, after=offset)
    return handle


class StandinProcess(ProcessHandle):
    """`python -m tests.comfy_standin` on its own port: a ComfyUI that can be faulted."""

    def __init__(self, root: Path, port: int, log: Path, step_s: float = 0.01) -> None:
        super().__init__([sys.executable, "-m", "tests.comfy_standin", "--port", str(port), "--root", str(root),
                          "--step-s", str(step_s)], dict(os.environ), log)
        self.url = f"http://127.0.0.1:{port}"
        self.port = port

    async def ready(self, timeout: float = 30) -> "StandinProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not port_open("127.0.0.1", self.port):
            await asyncio.sleep(0.1)
        return self

    async def control(self, path: str, body: dict | None = None) -> dict:
        return await control(self, path, body)


class SlowProxy:
    """A TCP proxy on loopback that delays every chunk sent toward the server (an object
    store over a slow link), so a test can act while a short activity is still running."""

    def __init__(self, target_port: int, delay_s: float) -> None:
        self.target_port, self.delay_s = target_port, delay_s
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> "SlowProxy":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return

        async def pipe(src, dst, delay):
            try:
                while data := await src.read(65536):
                    if delay:
                        await asyncio.sleep(delay)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, self.delay_s), pipe(up_reader, writer, 0))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def until(predicate, timeout: float = 60.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(every)
    raise TimeoutError("condition not reached")
