"""The dataclasses that cross Temporal boundaries: one in and one out for each.

Only object keys and small parameters travel here, never media bytes. This module is
imported by workflow code, so it must stay free of I/O and non-deterministic imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


def output_key(render_id: str) -> str:
    return f"renders/{render_id}/output.mp4"


@dataclass
class RenderRequest:
    """What the client hands to the RenderVideo workflow (inputs already in the bucket)."""

    render_id: str
    inputs: dict[str, str]  # field ("image" | "video" | "audio" | "audio_2") -> object key
    input_names: dict[str, str] = field(default_factory=dict)  # field -> job key used (wav_url…)
    input_type: str = "image"
    person_count: str = "single"
    prompt: str = "A person is talking"
    width: int = 512
    height: int = 512
    max_frame: int | None = None
    force_offload: bool = True
    network_volume: bool = False
    backend: str = "preview"
    window: int = 81
    motion: int = 9
    fps: int = 25
    seed: int = 2
    windows_per_run: int = 100
    parallel_chains: int = 1
    gpu_queue: str = "gpu"
    heartbeat_timeout_s: int = 60  # a worker silent this long is presumed dead; its activity retries
    warnings: list[str] = field(default_factory=list)

    @property
    def window_params(self) -> WindowParams:
        return WindowParams(self.window, self.motion, self.fps)


def derived_keys(render_id: str) -> dict[str, str]:
    base = render_prefix(render_id)
    return {
        "reference": base + "reference.png",
        "source": base + "source/source.mp4",
        "ingest": base + "ingest.json",
        "plan": base + "plan.json",
        "video": base + "video.mp4",
        "manifest": base + "manifest.json",
        "request": base + "request.json",
    }


def audio_key(render_id: str, track: int) -> str:
    return f"renders/{render_id}/audio/track_{track}.wav"


@dataclass
class IngestResult:
    reference_key: str  # the image that conditions every window (I2V), PNG at width x height
    audio_keys: list[str]  # one normalised 16 kHz mono WAV per speaker
    audio_samples: int  # samples of the longest track at 16 kHz
    source_key: str | None = None  # V2V: the source video at the render fps and size
    source_frames: int = 0


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
    input_type: str
    width: int
    height: int
    prompt: str
    seed: int
    force_offload: bool
    window: int
    motion: int
    fps: int
    total_frames: int
    reference_key: str
    audio_keys: list[str]
    source_key: str | None = None
    source_frames: int = 0

    @property
    def window_params(self) -> WindowParams:
        return WindowParams(self.window, self.motion, self.fps)


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


@dataclass
class ChainInput:
    context: RenderContext
    chain: Chain
    next_window: int  # where this run of the chain starts (moves on with continue-as-new)
    parent_id: str
    windows_per_run: int = 100
    gpu_queue: str = "gpu"
    heartbeat_timeout_s: int = 60


@dataclass
class ChainResult:
    chain: int
    windows: int


@dataclass
class WindowDone:
    index: int
    rendered: bool  # False when the window was found stored


@dataclass
class WindowsDone:
    """Finished windows reported by a chain in one signal (batched at most once a second)."""

    windows: list[WindowDone]


@dataclass
class StitchInput:
    render_id: str
    windows: int
    total_frames: int
    fps: int


@dataclass
class StitchResult:
    video_key: str
    frames: int


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
    stage: str  # queued | ingest | plan | render | stitch | mux | done | failed | cancelled
    windows_done: int
    windows_total: int
    current_window: int | None
    elapsed_s: float
    eta_s: float | None
    windows_rendered: int = 0  # windows rendered by this run (the rest were found stored)
    windows_finished: list[int] = field(default_factory=list)
