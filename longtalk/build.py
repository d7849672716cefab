"""The build id a worker carries: which code it runs.

LONGTALK_BUILD_ID when set; otherwise the short git commit of the project checkout, with
"-dirty" when tracked files differ from it (like `git describe --dirty`), or, where git or
the checkout is not there (a container image), the installed package version.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("longtalk")
    except PackageNotFoundError:
        return "unknown"


def git_build_id(root: Path = ROOT) -> str | None:
    """Short commit of `root`'s checkout (+ "-dirty"), or None without git or a checkout."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                              check=True, stdin=subprocess.DEVNULL).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root.resolve():
            return None  # root is not a checkout of its own (e.g. unpacked inside another repo)
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "") if commit else None


def build_id(configured: str = "", root: Path = ROOT) -> str:
    """The configured id (LONGTALK_BUILD_ID), else computed from git, else the package version."""
    return configured.strip() or git_build_id(root) or package_version()
