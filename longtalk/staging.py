"""Client side: copy a job's inputs into the bucket before its workflow starts.

Workflow history only ever holds object keys. Each source (path, http(s) URL or base64) is
streamed in chunks into a temporary file while it is hashed and counted; reading stops as
soon as the size passes `settings.max_input_bytes`. Its first bytes decide the format
(`media.sniff`), which must suit the field. The object key is content addressed,

    renders/{render_id}/inputs/{image|video|audio}-{sha256[:16]}{ext}

so a second submission under the same render id cannot overwrite the first one's inputs,
and the same content used as both audio tracks is stored once (audio and audio_2 share the
"audio" prefix). A call that fails deletes the objects it uploaded itself.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import ssl
import stat
import tempfile
import urllib.error
import urllib.request
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from .errors import InputError
from .jobs import Job, MediaSource, check_format, check_url, iter_base64, redact_url
from .media import SNIFF_BYTES, MediaFormat, sniff
from .settings import Settings
from .store import ObjectStore

CHUNK_BYTES = 1024 * 1024
USER_AGENT = "longtalk-staging/0.1"


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
    try:
        real = Path(raw).resolve()  # symlinks resolved; relative to the current directory
    except (OSError, RuntimeError, ValueError):
        raise InputError(key, f"not a usable path: {raw}") from None
    roots = settings.input_root_paths()
    if roots and not any(real.is_relative_to(root) for root in roots):
        raise InputError(key, f"{raw} is outside the allowed input folders")
    try:
        info = os.stat(real)
    except FileNotFoundError:
        raise InputError(key, f"file not found: {raw}") from None
    except (OSError, ValueError) as exc:
        raise InputError(key, f"cannot read {raw}: {_os_reason(exc)}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(key, f"not a regular file: {raw}")
    try:
        handle = open(real, "rb")
    except OSError as exc:
        raise InputError(key, f"cannot read {raw}: {_os_reason(exc)}") from None
    with handle:
        opened = os.fstat(handle.fileno())
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            raise InputError(key, f"{raw} changed while it was being opened")
        while True:
            try:
                chunk = handle.read(CHUNK_BYTES)
            except OSError as exc:
                raise InputError(key, f"cannot read {raw}: {_os_reason(exc)}") from None
            if not chunk:
                return
            yield chunk


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) URLs only (urllib alone would also follow ftp)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise urllib.error.URLError("redirect to a URL that is not http or https")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _read_url(source: MediaSource, settings: Settings) -> Iterator[bytes]:
    key, url = source.key, source.value.strip()
    check_url(key, url)
    shown = redact_url(url)
    timeout = settings.download_timeout_s
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise InputError(key, f"download of {shown} failed: HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise InputError(key, f"download of {shown} failed: {_net_reason(exc.reason, timeout)}") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise InputError(key, f"download of {shown} failed: {_net_reason(exc, timeout)}") from None
    with closing(response):
        length = response.headers.get("Content-Length", "").strip()
        if length.isdigit() and int(length) > settings.max_input_bytes:
            raise InputError(key, f"larger than the limit of {settings.max_input_bytes} bytes "
                                  f"(the server announced {int(length)} bytes)")
        while True:
            try:
                chunk = response.read(CHUNK_BYTES)
            except (OSError, http.client.HTTPException) as exc:
                raise InputError(key, f"download of {shown} failed: "
                                      f"{_net_reason(exc, timeout)}") from None
            if not chunk:
                return
            yield chunk


def _net_reason(reason, timeout: float) -> str:
    """A short, safe wording of a network failure (never the URL)."""
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"timed out after {timeout:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return "connection reset"
    if isinstance(reason, socket.gaierror):
        return "host not found"
    if isinstance(reason, ssl.SSLError):
        return "TLS error"
    if isinstance(reason, http.client.IncompleteRead):
        return "connection closed before the end of the body"
    if isinstance(reason, str):
        return reason if "redirect" in reason else "connection failed"
    return f"connection failed ({type(reason).__name__})"


def _os_reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__


# ---- staging ----------------------------------------------------------------

def stage_inputs(job: Job, store: ObjectStore, render_id: str,
                 settings: Settings) -> dict[str, StagedInput]:
    """Copy every source the job uses into the bucket; keyed by field.

    On any error the objects this call uploaded are deleted again, then the error is raised.
    """
    staged: dict[str, StagedInput] = {}
    done: list[tuple[MediaSource, StagedInput]] = []
    uploaded: list[str] = []
    try:
        for source in job.sources():
            same = next((item for src, item in done
                         if src.key == source.key and src.value == source.value), None)
            if same is not None:  # e.g. the first track reused as the second: read it once
                item = replace(same, field=source.field)
            else:
                item = _stage_one(source, store, render_id, settings, uploaded)
            done.append((source, item))
            staged[source.field] = item
    except BaseException:
        for key in uploaded:
            try:
                store.delete(key)
            except Exception:  # best effort; the original error matters more
                pass
        raise
    return staged


def _stage_one(source: MediaSource, store: ObjectStore, render_id: str, settings: Settings,
               uploaded: list[str]) -> StagedInput:
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
        sha = digest.hexdigest()
        object_key = object_key_for(render_id, source.field, sha, fmt)
        if store.size(object_key) != size:
            store.put_file(object_key, tmp, content_type=fmt.mime)
            uploaded.append(object_key)
        return StagedInput(field=source.field, source_key=source.key, object_key=object_key,
                           format=fmt.name, kind=fmt.kind, size=size, sha256=sha)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
