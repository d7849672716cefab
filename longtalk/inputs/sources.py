"""Where an input's bytes come from: a path, base64 text or an http(s) URL.

`MediaSource` is one media field of a job as the user gave it; `open_source` streams its
bytes in chunks, whatever the form:

- path: must lie, once every symlink and `..` is resolved, inside one of
  `settings.input_root_paths()` (LONGTALK_INPUT_ROOTS; "*" = anywhere), unless the source is
  `trusted` (a path the operator gave on the command line: their own file). A refused path
  gets the same answer whether or not it exists; only regular files are read.
- base64: decoded here, once, while it is streamed (a `data:<mime>;base64,` prefix skipped,
  whitespace ignored, URL-safe characters and missing padding tolerated).
- URL: `check_url` (syntax) when the job is parsed, `vet_url` (the network guard's address
  policy, no download) when the client stages the job, and `netguard.fetch` when the ingest
  activity downloads it.

Problems are InputError(job key, reason), raised while iterating; a URL's query and
credentials and base64 text never appear in them.
"""

from __future__ import annotations

import binascii
import os
import re
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .. import netguard
from ..errors import InputError
from ..settings import Settings
from ..text import TRUNCATED, redact_url, shorten

CHUNK_BYTES = 1024 * 1024
BASE64_CHUNK_CHARS = 4 * 1024 * 1024  # decoded in 3 MiB pieces
OUTSIDE_ROOTS = "outside the allowed input folders (LONGTALK_INPUT_ROOTS)"


@dataclass(frozen=True)
class MediaSource:
    field: str  # canonical field: "image" | "video" | "audio" | "audio_2"
    key: str  # the exact job key used, e.g. "wav_base64_2"
    form: str  # "path" | "url" | "base64"
    value: str  # path, URL or base64 text (a data URI prefix included when given)
    trusted: bool = False  # a path the operator gave on the command line: not confined to the roots

    def describe(self) -> str:
        """Short and safe for logs: never the base64 text, never a URL's query or credentials."""
        if self.form == "url":
            return f"{self.key}={redact_url(self.value)}"
        if self.form == "base64":
            mime = self.data_uri_mime
            what = f"data:{mime} base64" if mime is not None else "base64"
            return f"{self.key}=<{what}, {len(self.value)} chars>"
        return f"{self.key}={shorten(self.value, 120 + len(TRUNCATED), TRUNCATED)}"

    def __repr__(self) -> str:  # keep huge base64 text out of reprs and tracebacks
        return f"MediaSource(field={self.field!r}, {self.describe()})"

    @property
    def data_uri_mime(self) -> str | None:
        """The mime type a base64 value's data URI declares ("" for `data:;base64,`), else None."""
        if self.form != "base64":
            return None
        return split_data_uri(self.key, self.value)[0]


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


# ---- paths --------------------------------------------------------------------

def _read_path(source: MediaSource, settings: Settings) -> Iterator[bytes]:
    key, raw = source.key, source.value
    roots = [] if source.trusted else settings.input_root_paths()
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


def _os_reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__


# ---- base64 -------------------------------------------------------------------

_DATA_URI = re.compile(r"\s*data:([^,]*),", re.IGNORECASE)
_WHITESPACE = b" \t\r\n\f\v"
_URLSAFE = bytes.maketrans(b"-_", b"+/")


def split_data_uri(key: str, text: str) -> tuple[str | None, str]:
    """(declared mime or None, base64 payload); a data URI that is not base64 is refused."""
    match = _DATA_URI.match(text, 0, 512)
    if match is None:
        return None, text
    header = [p.strip() for p in match.group(1).split(";")]
    if not any(p.lower() == "base64" for p in header[1:]):
        raise InputError(key, "a data URI must be base64-encoded (data:<mime>;base64,...)")
    return header[0].lower(), text[match.end():]


def iter_base64(source: MediaSource, chunk_chars: int = BASE64_CHUNK_CHARS) -> Iterator[bytes]:
    """The decoded bytes of a base64 source, in chunks.

    A data URI prefix is skipped; whitespace anywhere is ignored; URL-safe characters and
    missing padding are tolerated. Invalid base64 is an InputError naming the key (the text
    itself is never quoted).
    """
    _, payload = split_data_uri(source.key, source.value)
    chunk_chars = max(4, chunk_chars - chunk_chars % 4)
    pending = b""  # fewer than 4 characters carried to the next piece
    tail = None  # text that ends with padding: only whitespace may follow it
    pos = 0
    while True:
        try:
            piece = payload[pos:pos + chunk_chars].encode("ascii")
        except UnicodeEncodeError:
            raise InputError(source.key, "not valid base64 (non-ASCII characters)") from None
        piece = piece.translate(_URLSAFE, _WHITESPACE)
        pos += chunk_chars
        last = pos >= len(payload)
        if tail is not None:
            if piece:
                raise InputError(source.key, "not valid base64 (data after the padding)")
            if not last:
                continue
            text = tail
        else:
            pending += piece
            if last:
                text, pending = pending, b""
                if len(text) % 4 == 1:
                    raise InputError(source.key, "not valid base64 (truncated)")
                text += b"=" * (-len(text) % 4)
            else:
                cut = len(pending) - len(pending) % 4
                text, pending = pending[:cut], pending[cut:]
                if b"=" in text:  # the end of the data, unless more than whitespace follows
                    tail, pending = text + pending, b""
                    continue
        if text:
            try:
                yield binascii.a2b_base64(text, strict_mode=True)
            except (binascii.Error, ValueError):
                raise InputError(source.key, "not valid base64") from None
        if last:
            return


# ---- URLs -----------------------------------------------------------------------

def check_url(key: str, url: str) -> None:
    """Only absolute http(s) URLs with a host (syntax only: no lookup, no connection)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise InputError(key, "not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        shown = f"'{scheme}'" if scheme else "none"
        raise InputError(key, f"only http and https URLs are accepted, got scheme {shown}")
    if not host:
        raise InputError(key, "not a valid URL: no host")


def vet_url(source: MediaSource, settings: Settings) -> None:
    """The network guard's checks of the URL itself (scheme, host, every address it resolves
    to), without downloading: what the client refuses before anything is stored. The
    download, and every redirect, is checked again when ingest fetches it."""
    check_url(source.key, source.value)
    netguard.vet_url(source.key, source.value, settings)


def _read_url(source: MediaSource, settings: Settings) -> Iterator[bytes]:
    key, url = source.key, source.value.strip()
    check_url(key, url)
    yield from netguard.fetch(key, url, settings)
