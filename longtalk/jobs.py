"""The job contract: the RunPod worker's input object, parsed and checked into a `Job`.

A job is `{"input": {...}}` (or the bare input object). `parse_job` checks every field and
raises `InputError(field, reason)` for the first problem it finds; everything it can let
pass with a remark (an unknown key, a source for the other mode) goes into `Job.warnings`.

Media come from exactly one source per field: a path, an http(s) URL or base64 text (with or
without a `data:<mime>;base64,` prefix). Base64 is already in memory, so `parse_job` decodes
it right away and checks its content (format, kind, data-URI mime, size); paths and URLs are
read, and checked the same way, when `longtalk.staging` copies them into the bucket.
"""

from __future__ import annotations

import binascii
import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from .errors import InputError
from .media import SNIFF_BYTES, MediaFormat, mime_matches, sniff
from .settings import Settings
from .spec import DEFAULT_PROMPT, DEFAULT_SEED, DEFAULT_SIZE, MAX_SEED, RenderSpec
from .text import TRUNCATED, shorten

INPUT_TYPES = ("image", "video")
PERSON_COUNTS = ("single", "multi")
FORMS = ("path", "url", "base64")
MAX_PROMPT_CHARS = 2000
DIMENSION_STEP = 16

# canonical field -> its job keys, one per form (path, url, base64)
MEDIA_KEYS: dict[str, tuple[str, str, str]] = {
    "image": ("image_path", "image_url", "image_base64"),
    "video": ("video_path", "video_url", "video_base64"),
    "audio": ("wav_path", "wav_url", "wav_base64"),
    "audio_2": ("wav_path_2", "wav_url_2", "wav_base64_2"),
}
SCALAR_KEYS = ("input_type", "person_count", "prompt", "width", "height", "max_frame",
               "force_offload", "network_volume", "seed")
KNOWN_KEYS = frozenset(SCALAR_KEYS) | {k for keys in MEDIA_KEYS.values() for k in keys}

# what each field accepts, by MediaFormat.kind, and how to say so
EXPECTED: dict[str, tuple[frozenset[str], str]] = {
    "image": (frozenset({"image"}), "an image (JPEG, PNG or WebP)"),
    "video": (frozenset({"video"}), "a video (MP4, MOV, WebM or MKV)"),
    "audio": (frozenset({"audio", "video"}),
              "audio (WAV, MP3, FLAC, OGG or M4A, or a video file with an audio track)"),
}
EXPECTED["audio_2"] = EXPECTED["audio"]


# ---- media sources ----------------------------------------------------------

@dataclass(frozen=True)
class MediaSource:
    field: str  # canonical field: "image" | "video" | "audio" | "audio_2"
    key: str  # the exact job key used, e.g. "wav_base64_2"
    form: str  # "path" | "url" | "base64"
    value: str  # path, URL or base64 text (a data URI prefix included when given)

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
        return _split_data_uri(self.key, self.value)[0]


def redact_url(url: str, limit: int = 120) -> str:
    """scheme://host[:port]/path only: user info, query and fragment removed (they may carry
    tokens), shortened to `limit` characters; "...(truncated)" marks anything left out."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    netloc = host if port is None else f"{host}:{port}"
    if ":" in host:
        netloc = f"[{host}]" if port is None else f"[{host}]:{port}"
    text = f"{parts.scheme}://{netloc}{parts.path}"
    cut = bool(parts.query or parts.fragment or "@" in parts.netloc)
    if len(text) > limit:
        text, cut = text[:limit], True
    return text + (TRUNCATED if cut else "")


_DATA_URI = re.compile(r"\s*data:([^,]*),", re.IGNORECASE)
_WHITESPACE = b" \t\r\n\f\v"
_URLSAFE = bytes.maketrans(b"-_", b"+/")
BASE64_CHUNK_CHARS = 4 * 1024 * 1024  # decoded in 3 MiB pieces


def _split_data_uri(key: str, text: str) -> tuple[str | None, str]:
    """(declared mime or None, base64 payload)."""
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
    _, payload = _split_data_uri(source.key, source.value)
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


def check_format(source: MediaSource, fmt: MediaFormat | None) -> MediaFormat:
    """The sniffed format, if the field accepts it and it fits the data URI's mime type."""
    kinds, wanted = EXPECTED[source.field]
    if fmt is None:
        raise InputError(source.key, f"expected {wanted}, got content in no supported format")
    if fmt.kind not in kinds:
        raise InputError(source.key, f"expected {wanted}, got {fmt.label}")
    mime = source.data_uri_mime
    if not mime_matches(mime, fmt):
        raise InputError(source.key, f"the data URI says {mime} but the content is {fmt.label}")
    return fmt


def check_base64_content(source: MediaSource, settings: Settings) -> MediaFormat:
    """Decode a base64 source once: valid base64, not empty, within the size limit, an
    accepted format for its field."""
    head = b""
    size = 0
    for chunk in iter_base64(source):
        if len(head) < SNIFF_BYTES:
            head += chunk[:SNIFF_BYTES - len(head)]
        size += len(chunk)
        if size > settings.max_input_bytes:
            raise InputError(source.key, f"larger than the limit of {settings.max_input_bytes} bytes")
    if size == 0:
        raise InputError(source.key, "empty (0 bytes)")
    return check_format(source, sniff(head))


# ---- the job ----------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    spec: RenderSpec  # the render's parameters, its seed and the window parameters: decided here, once
    image: MediaSource | None
    video: MediaSource | None
    audio: MediaSource
    audio_2: MediaSource | None
    warnings: tuple[str, ...] = ()

    # the spec's fields, read through the job
    input_type = property(lambda self: self.spec.input_type)
    person_count = property(lambda self: self.spec.person_count)
    prompt = property(lambda self: self.spec.prompt)
    width = property(lambda self: self.spec.width)
    height = property(lambda self: self.spec.height)
    max_frame = property(lambda self: self.spec.max_frame)
    force_offload = property(lambda self: self.spec.force_offload)
    network_volume = property(lambda self: self.spec.network_volume)
    seed = property(lambda self: self.spec.seed)

    def sources(self) -> list[MediaSource]:
        """The sources the render uses: image or video, audio, then audio_2."""
        visual = self.image if self.input_type == "image" else self.video
        return [s for s in (visual, self.audio, self.audio_2) if s is not None]

    def params(self) -> dict:
        """The job's parameters as the user's contract names them (seed included)."""
        return {key: getattr(self.spec, key) for key in SCALAR_KEYS}


def parse_job(obj, settings: Settings, default_seed: int = DEFAULT_SEED) -> Job:
    """Check a job object (wrapped in {"input": ...} or bare) and return the Job. The window
    parameters come from `settings`; `default_seed` is the seed of a job that gives none (the
    deployment's LONGTALK_COMFY_SEED, which the client reads)."""
    inp = _unwrap(obj)
    warnings: list[str] = []

    input_type = _choice(inp, "input_type", INPUT_TYPES, "image")
    person_count = _choice(inp, "person_count", PERSON_COUNTS, "single")

    visual = "image" if input_type == "image" else "video"
    other = "video" if visual == "image" else "image"
    ignored = _given_keys(inp, other)
    if ignored:
        warnings.append(f"{', '.join(ignored)} ignored: input_type is {input_type}")

    sources: dict[str, MediaSource | None] = {}
    for field in (visual, "audio"):
        sources[field] = _source(inp, field, settings)
        if sources[field] is None:
            keys = "|".join(MEDIA_KEYS[field])
            reason = (f"required for input_type {input_type}" if field == visual
                      else "required: the speech audio track")
            raise InputError(keys, reason)

    if person_count == "multi":
        audio_2 = _source(inp, "audio_2", settings)
        if audio_2 is None:
            audio_2 = replace(sources["audio"], field="audio_2")
            warnings.append(
                "person_count is multi but no second audio track was given "
                f"({'|'.join(MEDIA_KEYS['audio_2'])}): the first track is used for both speakers")
    else:
        audio_2 = None
        ignored = _given_keys(inp, "audio_2")
        if ignored:
            warnings.append(f"{', '.join(ignored)} ignored: person_count is single")

    prompt = inp.get("prompt")
    if prompt is None:
        prompt = DEFAULT_PROMPT
    elif not isinstance(prompt, str):
        raise InputError("prompt", f"must be a string, got {_show(prompt)}")
    elif len(prompt) > MAX_PROMPT_CHARS:
        raise InputError("prompt", f"at most {MAX_PROMPT_CHARS} characters, got {len(prompt)}")

    width = _dimension(inp, "width", settings)
    height = _dimension(inp, "height", settings)
    max_frame = _integer(inp, "max_frame", None)
    if max_frame is not None and max_frame <= 0:
        raise InputError("max_frame", f"must be a positive integer, got {max_frame}")
    seed = _integer(inp, "seed", default_seed)
    if not 0 <= seed <= MAX_SEED:
        raise InputError("seed", f"must be an integer from 0 to {MAX_SEED}, got {seed}")

    unknown = sorted(str(k) for k in inp if k not in KNOWN_KEYS)
    if unknown:
        warnings.append(f"unknown input keys ignored: {', '.join(unknown)}")

    spec = RenderSpec(
        input_type=input_type, person_count=person_count, prompt=prompt, width=width, height=height,
        max_frame=max_frame, force_offload=_boolean(inp, "force_offload", True),
        network_volume=_boolean(inp, "network_volume", False), seed=seed,
        window=settings.window, motion=settings.motion, fps=settings.fps,
    )
    return Job(
        spec=spec,
        image=sources.get("image"),
        video=sources.get("video"),
        audio=sources["audio"],
        audio_2=audio_2,
        warnings=tuple(warnings),
    )


def load_job_file(path) -> dict:
    """A job file's JSON object; InputError("job", ...) when it cannot be read or parsed."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise InputError("job", f"file not found: {path}") from None
    except OSError as exc:
        raise InputError("job", f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise InputError("job", f"{path} is not UTF-8 text") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError("job", f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} "
                                f"column {exc.colno}") from None
    if not isinstance(obj, dict):
        raise InputError("job", f"{path} must hold a JSON object, got {_json_type(obj)}")
    return obj


# ---- helpers ----------------------------------------------------------------

def _unwrap(obj) -> dict:
    if not isinstance(obj, dict):
        raise InputError("job", f"must be a JSON object, got {_json_type(obj)}")
    if "input" in obj:
        inp = obj["input"]
        if not isinstance(inp, dict):
            raise InputError("input", f"must be a JSON object, got {_json_type(inp)}")
        return inp
    return obj


def _present(value) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _given_keys(inp: dict, field: str) -> list[str]:
    return [k for k in MEDIA_KEYS[field] if _present(inp.get(k))]


def _source(inp: dict, field: str, settings: Settings) -> MediaSource | None:
    given = _given_keys(inp, field)
    if not given:
        return None
    if len(given) > 1:
        raise InputError("|".join(given), f"give exactly one source, got {len(given)}: "
                                          f"{' and '.join(given)}")
    key = given[0]
    value = inp[key]
    if not isinstance(value, str):
        raise InputError(key, f"must be a string, got {_json_type(value)}")
    form = FORMS[MEDIA_KEYS[field].index(key)]
    if form == "url":
        value = value.strip()
        check_url(key, value)
    source = MediaSource(field=field, key=key, form=form, value=value)
    if form == "base64":
        check_base64_content(source, settings)
    return source


def check_url(key: str, url: str) -> None:
    """Only absolute http(s) URLs with a host."""
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


def _choice(inp: dict, key: str, allowed: tuple[str, ...], default: str) -> str:
    value = inp.get(key)
    if value is None:
        return default
    normal = value.strip().lower() if isinstance(value, str) else None
    if normal not in allowed:
        raise InputError(key, f"must be one of {', '.join(allowed)}; got {_show(value)}")
    return normal


def _integer(inp: dict, key: str, default):
    value = inp.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        raise InputError(key, f"must be an integer, got {_show(value)}")
    if isinstance(value, int):
        return value
    number = None
    if isinstance(value, float):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        try:
            number = float(text)
        except ValueError:
            number = None
    if number is not None and math.isfinite(number) and number.is_integer():
        return int(number)
    raise InputError(key, f"must be an integer, got {_show(value)}")


def _dimension(inp: dict, key: str, settings: Settings) -> int:
    value = _integer(inp, key, DEFAULT_SIZE)
    if value <= 0:
        raise InputError(key, f"must be a positive integer, got {value}")
    if value % DIMENSION_STEP:
        raise InputError(key, f"must be a multiple of {DIMENSION_STEP}, got {value}")
    if not settings.min_dimension <= value <= settings.max_dimension:
        raise InputError(key, f"must be between {settings.min_dimension} and "
                              f"{settings.max_dimension}, got {value}")
    return value


def _boolean(inp: dict, key: str, default: bool) -> bool:
    value = inp.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
    raise InputError(key, f"must be true or false, got {_show(value)}")


def _show(value) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = type(value).__name__
    return shorten(text, 40 + len(TRUNCATED), TRUNCATED)


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
