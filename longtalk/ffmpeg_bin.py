"""The one ffmpeg binary the project runs.

By default the binary shipped by the pinned imageio-ffmpeg wheel, whatever ffmpeg the machine
has on PATH: the decoders, the encoders and the error texts are then the same on every
machine. LONGTALK_FFMPEG chooses another (a path, or a name looked up on PATH); `Settings`
checks it when it is read, and each process's composition root selects it with `use`.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

_selected: str | None = None  # set by use(); None = the wheel's binary


def wheel_ffmpeg() -> str:
    """The ffmpeg binary of the imageio-ffmpeg wheel."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def resolve(choice: str) -> str:
    """`choice` ("" = the wheel's binary; else a path, or a name on PATH) -> the absolute path of
    an ffmpeg that runs; ValueError saying why otherwise."""
    choice = choice.strip()
    if not choice:
        return wheel_ffmpeg()
    found = shutil.which(choice)
    if found is None:
        where = "an executable file" if os.sep in choice else "an executable file or a name on PATH"
        raise ValueError(f"{choice!r} is not {where}")
    return _check(os.path.abspath(found))


@functools.lru_cache(maxsize=8)
def _check(path: str) -> str:
    """`path`, once its `-version` answered as ffmpeg's does (asked once per process)."""
    try:
        proc = subprocess.run([path, "-hide_banner", "-version"], capture_output=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ValueError(f"{path} does not run ({type(exc).__name__})") from None
    if proc.returncode != 0 or not proc.stdout.startswith(b"ffmpeg version"):
        raise ValueError(f"{path} is not ffmpeg (its -version does not answer 'ffmpeg version ...')")
    return path


def use(choice: str) -> str:
    """Select the binary this process runs (a composition root calls it with the setting);
    its absolute path."""
    global _selected
    _selected = resolve(choice)
    return _selected


def exe() -> str:
    """The selected binary (the wheel's until `use` chose another)."""
    return _selected or resolve("")
