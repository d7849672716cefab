"""Staging: a job's inputs checked, then put into the bucket. Workflow history only ever
holds object keys.

Every input takes the same path, `prepare`: streamed in chunks into a temporary file while
it is hashed and counted (reading stops as soon as the size passes
`settings.max_input_bytes`); its first bytes are sniffed ONCE (`formats.sniff`) and the
format must suit the field; then `preflight.check_media` decodes the file with that format
(corrupt, truncated, too short or long, too small, too elongated: refused). Only then is it
stored, under a content-addressed key,

    renders/{render_id}/inputs/{image|video|audio}-{sha256[:16]}{ext}

so a second submission under the same render id cannot overwrite the first one's inputs,
and the same content used as both audio tracks is stored once (audio and audio_2 share the
"audio" prefix).

Two callers:

- the client (starter.py, an HTTP API), `stage_inputs`: path and base64 inputs are prepared
  here, all of them before the first upload. A URL input is NOT downloaded here (a 2 GB,
  30-minute download must not hold up a request, and must survive a crash): its URL is
  checked (syntax, and the network guard's address policy) and stored as a small object
  `renders/{id}/inputs/{field}-url.json`; the workflow input carries only that object's key
  (`RenderRequest.input_urls`), never the URL (it may carry a token). A call that fails
  deletes the objects it stored itself.
- the ingest activity, `fetch_url_input`: reads that object, downloads the URL through the
  network guard (`netguard.fetch`: the same refusals, limits and redirect checks) into a
  temporary file, prepares it exactly as the client prepares a local file, stores it under
  the content-addressed key, and only then records it (`{field}-url.staged.json`). A partial
  download is never stored; a retried ingest finds the record, or downloads from the start.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import threading
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from cachetools import LRUCache

from ..errors import InputError
from ..settings import Settings
from ..store import ObjectStore
from . import formats
from .formats import FORMATS, SNIFF_BYTES, MediaFormat, check_format
from .job import Job
from .preflight import MediaFacts, check_media
from .sources import MediaSource, open_source, vet_url


@dataclass(frozen=True)
class StagedInput:
    field: str  # "image" | "video" | "audio" | "audio_2"
    source_key: str  # the job key it came from, e.g. "wav_url"
    object_key: str  # the content; for a URL the client stages: its reference object
    format: str  # MediaFormat.name ("" for a URL not fetched yet)
    kind: str  # MediaFormat.kind ("" for a URL not fetched yet)
    size: int
    sha256: str
    fetched_by_ingest: bool = False  # a URL input: object_key is its {field}-url.json
    width: int | None = None  # an image's or video's picture size (None: audio, or not fetched yet)
    height: int | None = None


def input_prefix(render_id: str) -> str:
    return f"renders/{render_id}/inputs/"


def object_key_for(render_id: str, field: str, sha256: str, fmt: MediaFormat) -> str:
    return f"{input_prefix(render_id)}{media_kind(field)}-{sha256[:16]}{fmt.ext}"


def url_ref_key(render_id: str, field: str) -> str:
    """The object holding a URL input's URL (written by the client, read by ingest)."""
    return f"{input_prefix(render_id)}{field}-url.json"


def url_record_key(ref_key: str) -> str:
    """The record ingest writes once a URL input is downloaded, checked and stored."""
    return ref_key.removesuffix(".json") + ".staged.json"


def media_kind(field: str) -> str:
    """What a field's content is checked as: "image", "video" or "audio"."""
    return "audio" if field.startswith("audio") else field


# ---- one input: read, sniff once, check -------------------------------------------------

@dataclass
class Prepared:
    """A source read into a temporary file and checked, not stored yet."""

    source: MediaSource
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


def prepare(source: MediaSource, settings: Settings, directory: str | Path | None = None,
            progress: dict | None = None) -> Prepared:
    """Read `source` into a temporary file (in `directory`, else the system's), sniff its
    format once, check it for its field and decode-check it. `progress["bytes"]` follows
    the bytes read (for heartbeats). InputError names the source's key."""
    limit = settings.max_input_bytes
    digest = hashlib.sha256()
    size = 0
    head = b""
    fmt: MediaFormat | None = None
    fd, tmp = tempfile.mkstemp(prefix="longtalk-input-", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out, closing(open_source(source, settings)) as chunks:
            for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise InputError(source.key, f"larger than the limit of {limit} bytes")
                digest.update(chunk)
                out.write(chunk)
                if progress is not None:
                    progress["bytes"] = size
                if fmt is None and len(head) < SNIFF_BYTES:
                    head += chunk[:SNIFF_BYTES - len(head)]
                    if len(head) >= SNIFF_BYTES:  # decide before reading the rest
                        fmt = _format(source, head)
        if size == 0:
            raise InputError(source.key, "empty (0 bytes)")
        if fmt is None:
            fmt = _format(source, head)
        facts = _checked(digest.hexdigest(), size, media_kind(source.field), fmt, settings,
                         lambda: check_media(source.key, tmp, media_kind(source.field), fmt, settings))
        return Prepared(source=source, path=tmp, format=fmt, size=size,
                        sha256=digest.hexdigest(), facts=facts)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# What a decode check found for content already checked: the same bytes, read as the same
# format for the same kind under the same limits, check the same way, so a portrait or a
# track submitted again (the common case: many renders of one avatar) is not decoded again.
# Only passes are kept (a refusal names the job's own key); bounded, shared by the threads.
_CHECKED: LRUCache[tuple, MediaFacts] = LRUCache(maxsize=256)
_CHECKED_LOCK = threading.Lock()


def _checked(sha256: str, size: int, kind: str, fmt: MediaFormat, settings: Settings,
             check: Callable[[], MediaFacts]) -> MediaFacts:
    key = (sha256, size, kind, fmt.name, settings.fps, settings.min_image_side,
           settings.max_aspect_ratio, settings.max_audio_seconds)
    with _CHECKED_LOCK:
        facts = _CHECKED.get(key)
    if facts is None:
        facts = check()
        with _CHECKED_LOCK:
            _CHECKED[key] = facts
    return facts


def _format(source: MediaSource, head: bytes) -> MediaFormat:
    return check_format(source.field, source.key, formats.sniff(head), source.data_uri_mime)


def check_file(key: str, field: str, path: Path | str, settings: Settings) -> MediaFormat:
    """A file that reached the bucket without passing `prepare` (put there by another
    client): sniffed once and checked like a prepared input. Returns its format."""
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    fmt = check_format(field, key, formats.sniff(head))
    check_media(key, path, media_kind(field), fmt, settings)
    return fmt


def _store(store: ObjectStore, render_id: str, item: Prepared, field: str,
           uploaded: list[str] | None = None, fresh: bool = False) -> StagedInput:
    """Put a prepared input under its content-addressed key (unless it is there already:
    never, for a `fresh` render id)."""
    object_key = object_key_for(render_id, field, item.sha256, item.format)
    if fresh or store.size(object_key) != item.size:
        store.put_file(object_key, item.path, content_type=item.format.mime)
        if uploaded is not None:
            uploaded.append(object_key)
    return StagedInput(field=field, source_key=item.source.key, object_key=object_key,
                       format=item.format.name, kind=item.format.kind, size=item.size,
                       sha256=item.sha256, width=item.facts.width, height=item.facts.height)


# ---- the client: every input of a job ----------------------------------------------------

def stage_inputs(job: Job, store: ObjectStore, render_id: str,
                 settings: Settings, fresh: bool = False) -> dict[str, StagedInput]:
    """Stage every source the job uses; keyed by field.

    Every path and base64 source is prepared, and every URL checked, before the first upload;
    on any error the objects this call stored are deleted again, then the error is raised.
    `fresh`: the render id was just made, so nothing is stored under it and an input is put
    without first asking whether it is there (one S3 round trip fewer per input).
    """
    staged: dict[str, StagedInput] = {}
    uploaded: list[str] = []
    prepared: dict[tuple[str, str], Prepared | None] = {}  # None: a URL, fetched by ingest
    try:
        for source in job.sources():
            ident = (source.key, source.value)
            if ident in prepared:  # e.g. the first track reused as the second: read it once
                continue
            if source.form == "url":
                vet_url(source, settings)
                prepared[ident] = None
            else:
                prepared[ident] = prepare(source, settings)
        first: dict[tuple[str, str], StagedInput] = {}
        for source in job.sources():
            ident = (source.key, source.value)
            if ident in first:
                staged[source.field] = dataclasses.replace(first[ident], field=source.field)
                continue
            item = prepared[ident]
            if item is None:
                staged[source.field] = _stage_url(store, render_id, source, uploaded)
            else:
                staged[source.field] = _store(store, render_id, item, source.field, uploaded, fresh)
            first[ident] = staged[source.field]
    except BaseException:
        for key in uploaded:
            try:
                store.delete(key)
            except Exception:  # best effort; the original error matters more
                pass
        raise
    finally:
        for item in prepared.values():
            if item is not None:
                item.discard()
    return staged


def _stage_url(store: ObjectStore, render_id: str, source: MediaSource,
               uploaded: list[str]) -> StagedInput:
    key = url_ref_key(render_id, source.field)
    store.put_json(key, {"field": source.field, "key": source.key, "url": source.value})
    uploaded.append(key)
    store.delete(url_record_key(key))  # a new submission: what an earlier one fetched is stale
    return StagedInput(field=source.field, source_key=source.key, object_key=key, format="",
                       kind="", size=0, sha256="", fetched_by_ingest=True)


# ---- the ingest activity: one URL input --------------------------------------------------

def fetch_url_input(store: ObjectStore, render_id: str, ref_key: str, settings: Settings,
                    directory: str | Path, progress: dict | None = None) -> tuple[StagedInput, Path]:
    """Download the URL input recorded at `ref_key`, check it, store it; (what was stored,
    a local copy in `directory`). Idempotent: once recorded, the stored copy is used.
    InputError (DownloadFailed for a download that broke off) names the job key."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    record_key = url_record_key(ref_key)
    done = store.get_json_or_none(record_key)
    if done is not None:
        staged = StagedInput(**done)
        if store.size(staged.object_key) == staged.size:
            local = Path(directory) / f"{staged.field}{FORMATS[staged.format].ext}"
            return staged, store.download(staged.object_key, local)
    ref = store.get_json(ref_key)
    source = MediaSource(field=ref["field"], key=ref["key"], form="url", value=ref["url"])
    item = prepare(source, settings, directory=directory, progress=progress)
    staged = _store(store, render_id, item, source.field)
    store.put_json(record_key, dataclasses.asdict(staged))  # last: the input counts from here
    return staged, Path(item.path)


def stored_input_key(store: ObjectStore, inputs: dict[str, str], input_urls: dict[str, str],
                     field: str) -> str:
    """The object key of a field's content: staged by the client (`inputs`), or fetched by
    ingest from a URL (`input_urls`, then its record)."""
    if field in inputs:
        return inputs[field]
    if field in input_urls:
        done = store.get_json_or_none(url_record_key(input_urls[field]))
        if done is not None:
            return done["object_key"]
        raise InputError(field, "the URL input has not been fetched yet")
    raise InputError(field, "no object was staged for this field")
