"""The job contract: the RunPod worker's input object, parsed and checked into a `Job`, and
the render-id rule.

A job is `{"input": {...}}` (or the bare input object). `parse_job` checks every field and
raises `InputError(field, reason)` for the first problem it finds; everything it can let
pass with a remark (an unknown key, a source for the other mode) goes into `Job.warnings`.

Media come from exactly one source per field (`sources.MediaSource`): a path, an http(s) URL
or base64 text (with or without a `data:<mime>;base64,` prefix). Parsing checks their form
only (a URL's syntax, a data URI's header); the content is read, decoded once and checked
when `staging.stage_inputs` stages the job. Paths in a job document are confined to
LONGTALK_INPUT_ROOTS; the job keys listed in `trusted` (paths the operator gave on the command
line) are not, and a leading `~` in them is expanded.

Pure checks, no I/O: the CLI (`starter.py`) and an HTTP API call it alike.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import InputError
from ..settings import GPU_POOLS, Settings
from ..spec import DEFAULT_PROMPT, DEFAULT_SIZE, MAX_SEED, RenderSpec
from ..text import TRUNCATED, shorten
from .sources import MediaSource, check_url, split_data_uri
from .tags import parse_labels, parse_name

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
# extensions of the RunPod contract that are not render parameters (not in RenderSpec)
MAX_PARALLEL_CHAINS = 64
EXTENSION_KEYS = ("parallel_chains", "gpu_pool", "name", "labels")
KNOWN_KEYS = frozenset(SCALAR_KEYS) | frozenset(EXTENSION_KEYS) | {k for keys in MEDIA_KEYS.values() for k in keys}

# ---- the render id ------------------------------------------------------------------
# The workflow id, the object-key folder renders/<id>/ and the ComfyUI upload subfolder
# longtalk/<id>/w<k> (longtalk.comfy.binder): one path segment, safe in all three.
RENDER_ID_MAX = 128
RENDER_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{RENDER_ID_MAX - 1}}}")
RENDER_ID_RULE = (f"1-{RENDER_ID_MAX} letters, digits, '.', '_' or '-', starting with a letter "
                  f"or digit")


def is_render_id(value) -> bool:
    return isinstance(value, str) and RENDER_ID.fullmatch(value) is not None


def check_render_id(value, key: str = "id") -> str:
    """The render id, or InputError(key, ...) when it breaks the rule."""
    if not is_render_id(value):
        raise InputError(key, f"use {RENDER_ID_RULE}")
    return value



# ---- the job ----------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    spec: RenderSpec  # the render's parameters, its seed and the window parameters: decided here, once
    # (read them there, job.spec.width: the job does not repeat them)
    image: MediaSource | None
    video: MediaSource | None
    audio: MediaSource
    audio_2: MediaSource | None
    warnings: tuple[str, ...] = ()
    # independent chains the render may be cut into (None: LONGTALK_PARALLEL_CHAINS where the
    # job is submitted; 0: one per GPU worker serving the queue). The plan caps it by length.
    parallel_chains: int | None = None
    # where its windows render: "local" or "runpod" (None: LONGTALK_GPU_POOL where it is submitted)
    gpu_pool: str | None = None
    default_size: bool = False  # the job gave neither width nor height (the frame is DEFAULT_SIZE square)
    name: str | None = None  # how an operator finds the render again (tags.py): memo and visibility only
    labels: tuple[str, ...] = ()

    def sources(self) -> list[MediaSource]:
        """The sources the render uses: image or video, audio, then audio_2."""
        visual = self.image if self.spec.input_type == "image" else self.video
        return [s for s in (visual, self.audio, self.audio_2) if s is not None]

    def params(self) -> dict:
        """The job's parameters as the user's contract names them (seed included)."""
        return {key: getattr(self.spec, key) for key in SCALAR_KEYS}


def parse_job(obj, settings: Settings, trusted: Collection[str] = ()) -> Job:
    """Check a job object (wrapped in {"input": ...} or bare) and return the Job. The window
    parameters come from `settings`, and so does the seed of a job that gives none (the
    deployment's LONGTALK_DEFAULT_SEED where the job is submitted). `trusted`: the *_path keys the
    operator gave on the command line (their own files: `~` expanded, not confined to
    LONGTALK_INPUT_ROOTS); every other path is confined."""
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
        sources[field] = _source(inp, field, trusted)
        if sources[field] is None:
            keys = "|".join(MEDIA_KEYS[field])
            reason = (f"required for input_type {input_type}" if field == visual
                      else "required: the speech audio track")
            raise InputError(keys, reason)

    if person_count == "multi":
        audio_2 = _source(inp, "audio_2", trusted)
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
    seed = _integer(inp, "seed", settings.default_seed)
    if not 0 <= seed <= MAX_SEED:
        raise InputError("seed", f"must be an integer from 0 to {MAX_SEED}, got {seed}")

    parallel_chains = _integer(inp, "parallel_chains", None)
    if parallel_chains is not None and not 0 <= parallel_chains <= MAX_PARALLEL_CHAINS:
        raise InputError("parallel_chains", f"must be an integer from 0 (one per GPU worker) to "
                                            f"{MAX_PARALLEL_CHAINS}, got {parallel_chains}")

    gpu_pool = _choice(inp, "gpu_pool", GPU_POOLS, "") or None
    name, labels = parse_name(inp), parse_labels(inp)

    warnings += _unknown_keys(inp, settings.strict_input)

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
        parallel_chains=parallel_chains,
        gpu_pool=gpu_pool,
        default_size=inp.get("width") is None and inp.get("height") is None,
        name=name, labels=labels,
    )


def suggest_field(key: str) -> str | None:
    """The known field an unknown key most likely misspells: the same after case and `-`/`_`
    folding, else the nearest within 2 edits (ties: alphabetical); None when none is close."""
    folded = key.lower().replace("-", "_")
    if folded in KNOWN_KEYS:
        return folded
    near = sorted((_edit_distance(folded, known), known) for known in KNOWN_KEYS)
    distance, known = near[0]
    return known if distance <= 2 else None


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions, one each."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def _unknown_keys(inp: dict, strict: bool) -> list[str]:
    """Keys of no field: refused when they look like a misspelled field (a render that
    silently ignored `widht` would come back at the wrong size) or when `strict`
    (LONGTALK_STRICT_INPUT); otherwise one warning (RunPod clients send extra keys)."""
    unknown = sorted(str(k) for k in inp if k not in KNOWN_KEYS)
    for key in unknown:
        near = suggest_field(key)
        if near is not None:
            raise InputError(key, f"unknown field; did you mean {near}?")
    if unknown and strict:
        raise InputError(unknown[0], "unknown field (LONGTALK_STRICT_INPUT refuses every key "
                                     "that is not a field of the job)")
    return [f"unknown input keys ignored: {', '.join(unknown)}"] if unknown else []


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


def _source(inp: dict, field: str, trusted: Collection[str]) -> MediaSource | None:
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
    elif form == "base64":
        split_data_uri(key, value)  # the header's form; the content is decoded when staged
    elif key in trusted:
        return MediaSource(field=field, key=key, form=form, value=os.path.expanduser(value),
                           trusted=True)
    return MediaSource(field=field, key=key, form=form, value=value)


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
