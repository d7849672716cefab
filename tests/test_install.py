"""The two lock files and the Makefile targets that install them.

requirements.lock is the runtime set (pyproject `dependencies`: make venv / demo / up and the
worker image), requirements-dev.lock the test and benchmark tools on top (the `test` extra:
make test / bench). Checked by reading the files and by `make -n` (what make would run, for a
fresh venv and for one that has either stamp).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def content_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line that is neither blank nor a comment."""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield n, line


def read_pins(path: Path) -> dict[str, str]:
    """name (canonical) -> version; each such line must be NAME==VERSION, each name once."""
    pins: dict[str, str] = {}
    for n, line in content_lines(path):
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.+!_-]*)", line)
        assert m, f"{path.name} line {n}: {line!r} is not NAME==VERSION"
        name = canonicalize_name(m.group(1))
        assert name not in pins, f"{path.name}: {name} is pinned twice"
        pins[name] = m.group(2)
    return pins


def requirements(key: str) -> list[Requirement]:
    project = PYPROJECT["project"]
    listed = project["dependencies"] if key == "dependencies" else project["optional-dependencies"][key]
    return [Requirement(text) for text in listed]


def test_every_locked_package_is_pinned_exactly_once():
    runtime, dev = read_pins(RUNTIME_LOCK), read_pins(DEV_LOCK)
    assert runtime and dev
    both = sorted(set(runtime) & set(dev))
    assert not both, f"locked in both files (the dev lock holds only what the runtime lock lacks): {both}"


def test_the_lock_parser_refuses_loose_pins(tmp_path):
    for line in ("pytest>=8", "pytest", "pytest==8.0 ; python_version < '3.12'", "-e ."):
        lock = tmp_path / "x.lock"
        lock.write_text(f"# header\n{line}\n")
        with pytest.raises(AssertionError, match="not NAME==VERSION"):
            read_pins(lock)
    lock.write_text("PyYAML==6.0\npyyaml==6.0\n")
    with pytest.raises(AssertionError, match="pinned twice"):
        read_pins(lock)


def test_runtime_lock_has_no_test_tool():
    runtime = read_pins(RUNTIME_LOCK)
    needed = {canonicalize_name(r.name) for r in requirements("dependencies")}
    test_only = {canonicalize_name(r.name) for r in requirements("test")} - needed
    assert {"pytest", "selenium", "runpod", "hypothesis", "httpx"} <= test_only
    leaked = sorted(test_only & set(runtime))
    assert not leaked, f"requirements.lock (make demo, the worker image) holds test tools: {leaked}"


@pytest.mark.parametrize("key, locks", [
    ("dependencies", (RUNTIME_LOCK,)),
    ("test", (RUNTIME_LOCK, DEV_LOCK)),
])
def test_locks_satisfy_pyproject(key, locks):
    pins: dict[str, str] = {}
    for lock in locks:
        pins.update(read_pins(lock))
    for req in requirements(key):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} ({key}) is not in {' / '.join(lock.name for lock in locks)}"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"{req.name}=={pins[name]} is locked, pyproject.toml asks for {req.specifier}"


# ---------------------------------------------------------------------------------------------
# What make would run (`make -n`), for a venv in a temporary folder
# ---------------------------------------------------------------------------------------------

RUNTIME_INSTALL = "pip install --quiet -r requirements.lock\n"
DEV_INSTALL = "pip install --quiet -r requirements.lock -r requirements-dev.lock"


def make_dry_run(target: str, venv: Path, *variables: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    done = subprocess.run(["make", "-n", "-C", str(ROOT), target, f"VENV={venv}", *variables],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def touch_fresh(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    later = time.time() + 60  # newer than pyproject.toml and both locks, whatever their mtime
    os.utime(path, (later, later))


def test_make_demo_installs_the_runtime_set_only(tmp_path):
    out = make_dry_run("demo", tmp_path / "venv")
    assert RUNTIME_INSTALL in out and "--no-deps -e ." in out
    assert "requirements-dev.lock" not in out


def test_make_test_installs_both_sets(tmp_path):
    out = make_dry_run("test", tmp_path / "venv")
    assert RUNTIME_INSTALL in out and DEV_INSTALL in out
    assert out.index(RUNTIME_INSTALL) < out.index(DEV_INSTALL) < out.index("-m pytest")


def test_a_demo_venv_gets_the_test_tools_for_make_test(tmp_path):
    venv = tmp_path / "venv"
    touch_fresh(venv / ".installed-stamp")  # what make demo left
    out = make_dry_run("test", venv)
    assert DEV_INSTALL in out and RUNTIME_INSTALL not in out
    touch_fresh(venv / ".dev-installed-stamp")
    out = make_dry_run("test", venv)
    assert "pip install" not in out and "-m pytest" in out
    # make demo in a venv that has both does not install again either
    assert "pip install" not in make_dry_run("demo", venv)


def test_make_lock_writes_both_locks(tmp_path):
    out = make_dry_run("lock", tmp_path / "venv")
    assert re.search(r"^mv \S+ requirements\.lock$", out, re.MULTILINE)
    assert re.search(r"^mv \S+ requirements-dev\.lock$", out, re.MULTILINE)
    # the versions locked now are the constraints of the new resolve, unless UPGRADE=1
    keep = "cat requirements.lock requirements-dev.lock >"
    assert keep in out
    assert keep not in make_dry_run("lock", tmp_path / "venv", "UPGRADE=1")
