"""Client side: copy a job's inputs into the bucket before its workflow starts.

Workflow history only ever holds object keys. Each source (path, http(s) URL or base64) is
streamed in chunks into a temporary file while it is hashed and counted; reading stops as
soon as the size passes `settings.max_input_bytes`. Its first bytes decide the format
(`media.sniff`), which must suit the field. Then `preflight.check_media` decodes the file
(corrupt, truncated, too short or long, too small, too elongated: refused). Only when EVERY
source of the job has passed is anything uploaded. The object key is content addressed,

    renders/{render_id}/inputs/{image|video|audio}-{sha256[:16]}{ext}

so a second submission under the same render id cannot overwrite the first one's inputs,
and the same content used as both audio tracks is stored once (audio and audio_2 share the
"audio" prefix). A call that fails deletes the objects it uploaded itself.

Paths must lie, once every symlink and `..` is resolved, inside one of
`settings.input_root_paths()` (LONGTALK_INPUT_ROOTS; "*" = anywhere); a refused path gets
the same answer whether or not it exists. URLs are fetched through `netguard.fetch`
(public addresses only, pinned connections, redirects re-checked, time and size limits).
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from . import netguard
from .errors import InputError
from .jobs import Job, MediaSource, check_format, check_url, iter_base64
from .media import SNIFF_BYTES, MediaFormat, sniff
from .preflight import MediaFacts, check_media
from .settings import Settings
from .store import ObjectStore

CHUNK_BYTES = 1024 * 1024
USER_AGENT = netguard.USER_AGENT
OUTSIDE_ROOTS = "outside the allowed input folders (LONGTALK_INPUT_ROOTS)"


@dataclass(frozen=True)
class StagedInput:
    field: str  # "image" | "video" | "audio" | "audio_2"
    source_key: str  # the job key it came from, e.g. "wav_url"
    object_key: str
    format: str  # MediaFormat.name
    kind: str  # MediaFormat.kind
    size: int
    sha256: str


def input_prefix(render_id: str) -> str:
    return f"renders/{render_id}/inputs/"


def object_key_for(render_id: str, field: str, sha256: str, fmt: MediaFormat) -> str:
    family = "audio" if field.startswith("audio") else field
    return f"{input_prefix(render_id)}{family}-{sha256[:16]}{fmt.ext}"


# ---- reading sources --------------------------------------------------------

def open_source(source: MediaSource, settings: Settings) -> Iterator[bytes]:
    """The source's bytes in chunks. Problems (missing file, refused path, HTTP error, bad
    base64) are InputErrors naming the source's key, raised while iterating. Close the
    iterator when stopping early: that closes the file or connection."""
    if source.form == "path":
        return _read_path(source, settings)
    if source.form == "url":
        return _read_url(source, settings)
    if source.form == "base64":
        return iter_base64(source)
    raise InputError(source.key, f"unknown source form {source.form!r}")


def _read_path(source: MediaSource, settings: Settings) -> Iterator[bytes]:
    key, raw = source.key, source.value
    roots = settings.input_root_paths()
    try:
        real = Path(raw).resolve()  # symlinks and ".." resolved; relative to the current directory
    except (OSError, RuntimeError, ValueError):
        if roots and not _inside(Path(os.path.abspath(raw)), roots):
            raise InputError(key, f"{raw} is {OUTSIDE_ROOTS}") from None
        raise InputError(key, f"not a usable path: {raw}") from None
    # checked before the file is looked at: a refused path does not tell whether it exists
    if roots and not _inside(real, roots):
        raise InputError(key, f"{raw} is {OUTSIDE_ROOTS}")
    try:
        info = os.stat(real)
    except FileNotFoundError:
        raise InputError(key, f"file not found: {raw}") from None
    except (OSError, ValueError) as exc:
        raise InputError(key, f"cannot read {raw}: {_os_reason(exc)}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(key, f"not a regular file: {raw}")
    try:  # non-blocking: a FIFO swapped in after the check cannot hang the open
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputError(key, f"cannot read {raw}: {_os_reason(exc)}") from None
    handle = os.fdopen(fd, "rb")
    with handle:
        opened = os.fstat(handle.fileno())
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            raise InputError(key, f"{raw} changed while it was being opened")
        # a folder swapped for a symlink between the check and the open: judge what was opened
        where = _opened_path(handle.fileno())
        if roots and where is not None and not _inside(where, roots):
            raise InputError(key, f"{raw} is {OUTSIDE_ROOTS}")
        while True:
            try:
                chunk = handle.read(CHUNK_BYTES)
            except OSError as exc:
                raise InputError(key, f"cannot read {raw}: {_os_reason(exc)}") from None
            if not chunk:
                return
            yield chunk


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _opened_path(fd: int) -> Path | None:
    """The real path of an open file, where the system can tell (Linux, macOS)."""
    try:
        if sys.platform.startswith("linux"):
            return Path(os.readlink(f"/proc/self/fd/{fd}"))
        import fcntl

        if hasattr(fcntl, "F_GETPATH"):
            raw = fcntl.fcntl(fd, fcntl.F_GETPATH, bytes(1024))
            return Path(os.fsdecode(raw.split(b"\0", 1)[0]))
    except (OSError, ValueError):
        return None
    return None


def _read_url(source: MediaSource, settings: Settings) -> Iterator[bytes]:
    key, url = source.key, source.value.strip()
    check_url(key, url)
    yield from netguard.fetch(key, url, settings)


def _os_reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__


# ---- staging ----------------------------------------------------------------

def stage_inputs(job: Job, store: ObjectStore, render_id: str,
                 settings: Settings) -> dict[str, StagedInput]:
    """Copy every source the job uses into the bucket; keyed by field.

    Every source is read and checked (format, then `preflight.check_media`) before the first
    upload; on any error the objects this call uploaded are deleted again, then the error is
    raised.
    """
    staged: dict[str, StagedInput] = {}
    uploaded: list[str] = []
    prepared: list[_Prepared] = []
    try:
        fields: list[tuple[MediaSource, _Prepared]] = []
        for source in job.sources():
            same = next((item for src, item in fields
                         if src.key == source.key and src.value == source.value), None)
            if same is None:  # e.g. the first track reused as the second: read it once
                same = _prepare(source, settings)
                prepared.append(same)
            fields.append((source, same))
        for source, item in fields:
            object_key = object_key_for(render_id, source.field, item.sha256, item.format)
            if object_key not in uploaded and store.size(object_key) != item.size:
                store.put_file(object_key, item.path, content_type=item.format.mime)
                uploaded.append(object_key)
            staged[source.field] = StagedInput(
                field=source.field, source_key=item.source_key, object_key=object_key,
                format=item.format.name, kind=item.format.kind, size=item.size,
                sha256=item.sha256)
    except BaseException:
        for key in uploaded:
            try:
                store.delete(key)
            except Exception:  # best effort; the original error matters more
                pass
        raise
    finally:
        for item in prepared:
            item.discard()
    return staged


@dataclass
class _Prepared:
    """A source read into a temporary file and checked, not uploaded yet."""

    source_key: str
    path: str
    format: MediaFormat
    size: int
    sha256: str
    facts: MediaFacts

    def discard(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _prepare(source: MediaSource, settings: Settings) -> _Prepared:
    limit = settings.max_input_bytes
    digest = hashlib.sha256()
    size = 0
    head = b""
    fmt: MediaFormat | None = None
    fd, tmp = tempfile.mkstemp(prefix="longtalk-input-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, closing(open_source(source, settings)) as chunks:
            for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise InputError(source.key, f"larger than the limit of {limit} bytes")
                digest.update(chunk)
                out.write(chunk)
                if fmt is None and len(head) < SNIFF_BYTES:
                    head += chunk[:SNIFF_BYTES - len(head)]
                    if len(head) >= SNIFF_BYTES:  # decide before reading the rest
                        fmt = check_format(source, sniff(head))
        if size == 0:
            raise InputError(source.key, "empty (0 bytes)")
        if fmt is None:
            fmt = check_format(source, sniff(head))
        kind = "audio" if source.field.startswith("audio") else source.field
        facts = check_media(source.key, Path(tmp), kind, settings)
        return _Prepared(source_key=source.key, path=tmp, format=fmt, size=size,
                         sha256=digest.hexdigest(), facts=facts)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
