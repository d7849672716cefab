"""The settings an embedded stack was started with, kept in `<data>/run/stack.json`.

`make up` records the LONGTALK_ variables it ran with: every Settings field, resolved (so a
default is recorded as the value it had), and the ComfyUI graph variables (LONGTALK_COMFY_...)
it was given. While the stack runs, every later command on it (`up` again, `upgrade`, `worker`,
`status`, `down`) takes the recorded values for what the caller's environment leaves unset.
A variable the caller sets to another value is a `Difference`; the commands that start
processes refuse it (`refusal` says why), except that a process of its own (`make worker`)
may have its own PER_PROCESS settings. The file holds the S3 and API secrets, so it is
readable by this user only.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping

from .comfy.config import ENV_PREFIX as GRAPH_PREFIX
from .settings import PREFIX, Settings, current_names, values_from_env

RECORD = "stack.json"
DATA_DIR = PREFIX + "DATA_DIR"
# the Settings fields not to print (keys, secrets): the ones kept out of Settings' repr
SECRETS = {PREFIX + f.name.upper() for f in fields(Settings) if not f.repr}
SETTING_NAMES = {PREFIX + f.name.upper() for f in fields(Settings)}
# what one worker of a stack may set for itself, as the workers of one deployment do (a GPU
# worker beside the stack: LONGTALK_WORKER_ROLES=gpu LONGTALK_COMFY_URL=... make worker), and
# the LONGTALK_COMFY_ graph variables (model files, sampler: per ComfyUI)
PER_PROCESS = {PREFIX + name.upper() for name in (
    "worker_roles", "backend", "comfy_url", "comfy_doctor", "timed_window_s", "metrics_port",
    "metrics_host", "build_id", "gpu_shutdown_grace_s", "cpu_shutdown_grace_s", "fleet_heartbeat_s")}


def stack_env(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables a stack started with `settings` records (the data folder made absolute)."""
    env = settings.to_env()
    env[DATA_DIR] = str(settings.data_dir.resolve())
    env.update({k: v for k, v in current_names(environ).items() if _is_graph_variable(k)})
    return env


def _is_graph_variable(name: str) -> bool:
    return name.startswith(GRAPH_PREFIX) and name not in SETTING_NAMES


def path(run_dir: Path) -> Path:
    return run_dir / RECORD


def write(run_dir: Path, env: Mapping[str, str]) -> None:
    """Replace the record (whole or not at all: a new file renamed over the old one)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{RECORD}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"env": dict(sorted(env.items()))}, f, indent=1)
    os.replace(tmp, path(run_dir))


def read(run_dir: Path) -> dict[str, str] | None:
    try:
        return dict(json.loads(path(run_dir).read_text())["env"])
    except FileNotFoundError:
        return None


def remove(run_dir: Path) -> None:
    path(run_dir).unlink(missing_ok=True)


@dataclass(frozen=True)
class Difference:
    name: str
    recorded: str | None  # None: not set when the stack started
    current: str

    def line(self) -> str:
        def shown(value: str | None) -> str:
            if value is None:
                return "(not set)"
            return "(a secret)" if self.name in SECRETS else repr(value)

        return f"  {self.name}: the stack has {shown(self.recorded)}, your environment {shown(self.current)}"

    @property
    def per_process(self) -> bool:
        return self.name in PER_PROCESS or _is_graph_variable(self.name)

    def assignment(self) -> str:
        return f"{self.name}=" + ("..." if self.name in SECRETS else shlex.quote(self.current))


def differences(recorded: Mapping[str, str], environ: Mapping[str, str]) -> list[Difference]:
    """The variables `environ` sets to another value than the record. Settings are compared
    as the values they convert to (`1` is `true`, `600` is `600.0`); the data folder is where
    the record was found, so it never differs."""
    stack = Settings.from_env(recorded)
    environ = current_names(environ)  # a variable's old name is compared as the new one
    asked = values_from_env(Settings, PREFIX, environ)  # a malformed value names its variable
    out = []
    for f in fields(Settings):
        name = PREFIX + f.name.upper()
        if name != DATA_DIR and f.name in asked and asked[f.name] != getattr(stack, f.name):
            out.append(Difference(name, recorded.get(name), environ[name]))
    for name in sorted(environ):
        if _is_graph_variable(name) and environ[name] != recorded.get(name):
            out.append(Difference(name, recorded.get(name), environ[name]))
    return out


def refusal(diffs: list[Difference], record: Path) -> str:
    """Why a command does not run: each differing variable with both values, and what to do."""
    return "\n".join([
        f"refused: the running stack was started with other settings (recorded in {record}):",
        *(d.line() for d in diffs),
        "Unset these variables to use the stack's values, or restart the stack with the new ones:",
        "  make down && " + " ".join(d.assignment() for d in diffs) + " make up"])
