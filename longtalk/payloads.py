"""The dataclasses that cross Temporal boundaries: one in and one out for each.

Only object keys and small parameters travel here, never media bytes. This module is
imported by workflow code, so it must stay free of I/O and non-deterministic imports.

Renders run for hours and the service is upgraded under them, so every payload of an older
release must still decode: a field added since has a default. What release de3015c wrote in
another shape (the render's parameters copied field by field where `spec` now holds one
`RenderSpec`, the heartbeat timeout where `timeouts` now holds them all) is read, and written
back for the workers of that release, by the project's data converter
(`longtalk.converter`), not by these classes. tests/test_compat.py decodes every payload of
the stored histories with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .spec import RenderSpec  # a contract too (it lives in longtalk.spec)
from .windows import WindowParams


def render_prefix(render_id: str) -> str:
    return f"renders/{render_id}/"


def window_prefix(render_id: str, k: int) -> str:
    return f"renders/{render_id}/windows/{k:05d}/"


def clip_key(render_id: str, k: int) -> str:
    return window_prefix(render_id, k) + "clip.mp4"


def tail_keys(render_id: str, k: int, motion: int) -> list[str]:
    return [window_prefix(render_id, k) + f"tail_{i:02d}.png" for i in range(motion)]


def window_meta_key(render_id: str, k: int) -> str:
    return window_prefix(render_id, k) + "meta.json"


def window_quality_key(render_id: str, k: int) -> str:
    """The quality guard's record of window k (longtalk.guard): its attempts, the one kept, its anchor."""
    return window_prefix(render_id, k) + "quality.json"


def output_key(render_id: str) -> str:
    return f"renders/{render_id}/output.mp4"


@dataclass(frozen=True)
class ActivityTimeouts:
    """The activity time limits of one render, in seconds: built from the client's Settings
    (`longtalk.activity_options.timeouts_from_settings`) and carried in the workflow input,
    so the workflow reads no settings. Payloads of release de3015c have none: they get these
    defaults, with their own heartbeat timeout (longtalk.converter)."""

    heartbeat_s: int = 60  # a worker silent this long is presumed dead; its activity retries
    window_s: int = 3600 + 600  # render_window start-to-close: the ComfyUI prompt timeout + margin
    schedule_to_close_s: int = 24 * 3600  # every activity, queue waits and retries included
    ingest_s: int = 30 * 60  # ingest start-to-close: decoding, plus the URL inputs it downloads
    # chain affinity: how long a chain's next window waits for the GPU worker that rendered the
    # previous one (its own task queue) before it goes to any worker (0 = no affinity)
    affinity_s: int = 0


@dataclass
class RenderRequest:
    """What the client hands to the RenderVideo workflow (inputs already in the bucket)."""

    render_id: str
    inputs: dict[str, str]  # field ("image" | "video" | "audio" | "audio_2") -> object key
    spec: RenderSpec  # the render's parameters
    input_names: dict[str, str] = field(default_factory=dict)  # field -> job key used (wav_url…)
    # field -> key of the object holding a URL input's URL, which ingest downloads (the URL
    # itself never enters history: it may carry a token); such a field is not in `inputs`
    input_urls: dict[str, str] = field(default_factory=dict)
    # field -> its format as the client sniffed it (MediaFormat.name): passed on, not sniffed again
    input_formats: dict[str, str] = field(default_factory=dict)
    backend: str = "preview"
    windows_per_run: int = 100
    parallel_chains: int = 1
    gpu_queue: str = "gpu"
    warnings: list[str] = field(default_factory=list)
    timeouts: ActivityTimeouts = field(default_factory=ActivityTimeouts)
    # a re-render (a new output version of `base`): windows rerender_first..rerender_last are
    # rendered again, every other window is taken from the base render ("" = a first render)
    base: str = ""
    rerender_first: int = -1
    rerender_last: int = -1
    # set by the workflow (patch audio-beside-windows-v1), never by a client: ingest leaves the
    # output's AAC to the encode_audio activity, which runs beside the windows
    final_audio_beside: bool = False

    @property
    def window_params(self) -> WindowParams:
        return self.spec.window_params


def derived_keys(render_id: str) -> dict[str, str]:
    base = render_prefix(render_id)
    return {
        "reference": base + "reference.png",
        "source": base + "source/source.mp4",
        "ingest": base + "ingest.json",
        "plan": base + "plan.json",
        "video": base + "video.mp4",
        "manifest": base + "manifest.json",
        "quality": base + "quality.json",  # the guard's summary and per-window series (stitch writes it)
        # the output's audio, AAC, exactly T/fps s, encoded beside the windows (stitch stream-copies it)
        "final_audio": base + "audio/final.m4a",
        "request": base + "request.json",
    }


CANCEL_REQUESTS = "cancel-requests/"  # one folder, so the dashboard lists every pending cancel at once


def cancel_request_key(render_id: str, run_id: str) -> str:
    """The API's record that a cancel of the render's run was asked (removed by record_cancelled)."""
    return f"{CANCEL_REQUESTS}{render_id}/{run_id}"


def audio_key(render_id: str, track: int) -> str:
    return f"renders/{render_id}/audio/track_{track}.wav"


@dataclass
class IngestResult:
    reference_key: str  # the image that conditions every window (I2V), PNG at width x height
    audio_keys: list[str]  # one normalised 16 kHz mono WAV per speaker
    audio_samples: int  # samples of the longest track at 16 kHz
    source_key: str | None = None  # V2V: the source video at the render fps and size
    source_frames: int = 0
    # what ingest found that the submission could not know (a URL picture's shape)
    warnings: list[str] = field(default_factory=list)


@dataclass
class PlanInput:
    request: RenderRequest
    ingest: IngestResult


@dataclass
class Chain:
    index: int
    first: int  # first window of the chain
    last: int  # last window of the chain (inclusive)


@dataclass
class Plan:
    total_frames: int
    windows: int
    chains: list[Chain]
    plan_key: str


@dataclass
class RenderContext:
    """Everything every window of one render needs, apart from its index."""

    render_id: str
    backend: str
    total_frames: int
    reference_key: str
    audio_keys: list[str]
    spec: RenderSpec  # the render's parameters
    source_key: str | None = None
    source_frames: int = 0

    @property
    def window_params(self) -> WindowParams:
        return self.spec.window_params


@dataclass
class RenderWindowInput:
    context: RenderContext
    index: int
    chain_first: int  # the window whose tail is the reference instead of a previous window


@dataclass
class RenderWindowResult:
    index: int
    clip_key: str
    frames: int  # frames this window contributes to the video
    rendered: bool  # False when a stored result was found and no render happened
    render_s: float  # time spent in the backend (0 when not rendered now)
    attempt: int = 0  # the activity attempt that rendered it (0: unknown, older workers)
    worker: str = ""  # the GPU worker that rendered it
    worker_queue: str = ""  # that worker's own task queue (chain affinity; "" = it has none)


@dataclass
class ChainInput:
    context: RenderContext
    chain: Chain
    next_window: int  # where this run of the chain starts (moves on with continue-as-new)
    parent_id: str
    windows_per_run: int = 100
    gpu_queue: str = "gpu"
    timeouts: ActivityTimeouts = field(default_factory=ActivityTimeouts)
    affinity_queue: str = ""  # the worker queue of the window before next_window (continue-as-new)


@dataclass
class ChainResult:
    chain: int
    windows: int


@dataclass
class WindowDone:
    index: int
    rendered: bool  # False when the window was found stored
    attempt: int = 0  # details for the dashboard (0/"": a chain of an older release sent none)
    worker: str = ""
    render_s: float = 0.0
    frames: int = 0


@dataclass
class GpuStarted:
    """A GPU worker began the render's window `window` at `at` (ISO 8601, the server's start
    time of that activity attempt): sent once per worker and render, the first one counts."""

    at: str
    window: int
    worker: str = ""


@dataclass
class WindowsDone:
    """Finished windows reported by a chain in one signal (batched at most once a second)."""

    windows: list[WindowDone]


@dataclass
class StitchInput:
    render_id: str
    windows: int
    total_frames: int
    spec: RenderSpec  # the render's parameters


@dataclass
class StitchResult:
    video_key: str
    frames: int


@dataclass
class EncodeAudioInput:
    """The output's audio track (AAC, cut to T/fps), encoded beside the windows."""

    request: RenderRequest
    total_frames: int


@dataclass
class PublishInput:
    request: RenderRequest
    video_key: str
    total_frames: int
    windows: int
    presign_expiry_s: int | None = None


@dataclass
class RenderResult:
    render_id: str
    status: str
    bucket: str
    video_key: str
    video_url: str
    frames: int
    fps: int
    duration_s: float
    width: int
    height: int
    windows: int
    backend: str
    size_bytes: int
    warnings: list[str] = field(default_factory=list)
    video_path: str | None = None  # network_volume: the object path
    # from the start of the run to the first window's GPU work (RunPod's delayTime; None: a
    # render of an older release)
    queued_s: float | None = None
    # the quality guard's summary (longtalk.guard.summarise; None: a render of an older release)
    quality: dict | None = None

    # RunPod pool: the GPU seconds of the windows' jobs (their executionTime, summed; None: no
    # window rendered on RunPod)
    runpod_execution_s: float | None = None

    # {"estimate": the plan's (estimate.json), "actual": what the windows used} (longtalk.usage):
    # GPU seconds and cost side by side (None: a render of an older release)
    usage: dict | None = None


@dataclass
class DiscardInput:
    render_id: str
    reason: str


@dataclass
class CancelledInput:
    render_id: str
    windows_total: int
    windows_finished: list[int]
    stage: str


@dataclass
class Progress:
    render_id: str
    stage: str  # queued | ingest | plan | render | stitch | publish | done | failed | cancelled ("mux" in renders of release de3015c)
    windows_done: int
    windows_total: int
    current_window: int | None
    elapsed_s: float
    eta_s: float | None
    windows_rendered: int = 0  # windows rendered by this run (the rest were found stored)
    windows_finished: list[int] = field(default_factory=list)
    chains: list[list[int]] = field(default_factory=list)  # [first, last] window of each chain
    rendering: list[int] = field(default_factory=list)  # windows on a GPU (or queued for one) now
    windows_detail: list[WindowDone] = field(default_factory=list)  # finished windows, in order
    latest_window: int = -1  # the window that finished last (the dashboard's thumbnail)
    warnings: list[str] = field(default_factory=list)  # the submission's, then what ingest found
