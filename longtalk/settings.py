"""Typed settings read from the environment (prefix LONGTALK_), with loopback defaults.

Every server of the embedded stack binds to 127.0.0.1. `Settings.from_env()` is the only
place that reads os.environ; everything else receives a Settings object.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

from . import ffmpeg_bin
from .gpu_time import Prices
from .spec import DEFAULT_SEED, MAX_SEED
from .windows import DEFAULT_FPS, DEFAULT_MOTION, DEFAULT_WINDOW, ParamError, validate_params

PREFIX = "LONGTALK_"
GPU_POOLS = ("local", "runpod")
# Variables renamed since a release, old name -> new name: an environment that still sets the
# old name keeps working (where both are set, the new one wins). See `current_names`.
RENAMED = {
    PREFIX + "COMFY_SEED": PREFIX + "DEFAULT_SEED",  # a ComfyUI graph setting until the seed moved into the job
}


@dataclass(frozen=True)
class Settings:
    # embedded stack
    data_dir: Path = Path("data")
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_ui_port: int = 8233
    # TLS to the Temporal frontend (a GPU machine joining over a network that is not private)
    temporal_tls: bool = False
    temporal_tls_ca: str = ""  # PEM of the CA that signed the frontend's certificate ("" = system roots)
    temporal_tls_cert: str = ""  # mTLS: this client's certificate (PEM file)...
    temporal_tls_key: str = field(default="", repr=False)  # ...and its private key
    temporal_tls_server_name: str = ""  # the name the frontend's certificate is for ("" = the address's host)
    s3_endpoint: str = "127.0.0.1:9000"
    s3_public_endpoint: str = ""  # host:port that users' video_url should point at ("" = s3_endpoint)
    s3_access_key: str = field(default="longtalk", repr=False)
    s3_secret_key: str = field(default="longtalk-secret", repr=False)
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    bucket: str = "renders"
    # task queues
    render_queue: str = "render"
    gpu_queue: str = "gpu"
    # where windows render: "local" (GPU workers on gpu_queue) or "runpod" (RunPod Serverless
    # jobs, submitted by the dispatcher worker role "runpod" on runpod_queue)
    gpu_pool: str = "local"
    runpod_queue: str = "runpod"
    runpod_endpoint_id: str = ""
    runpod_api_key: str = field(default="", repr=False)
    runpod_base_url: str = "https://api.runpod.ai/v2"
    runpod_max_jobs: int = 3  # windows in flight on the endpoint: set it to the endpoint's max workers
    runpod_poll_s: float = 2.0  # /status this often while a window's job runs
    runpod_url_expiry_s: int = 24 * 3600  # presigned URLs of a job: its queue wait and render must fit
    # a job's policy.executionTimeout: margin + factor x the window's expected time (RunPod ends
    # a job past it TIMED_OUT and stops its worker; the window's attempt failed, it is retried)
    runpod_timeout_margin_s: float = 600.0  # ComfyUI loading the models for a fresh worker's first window
    runpod_timeout_factor: float = 3.0
    runpod_idle_timeout_s: float = 5.0  # the endpoint's idle timeout (RunPod's setting): bounds unseen billing
    # rendering
    backend: str = "preview"
    comfy_url: str = "http://127.0.0.1:8188"
    window: int = DEFAULT_WINDOW  # W = 4k+1
    motion: int = DEFAULT_MOTION  # M = 4j+1, 0 < M < W
    fps: int = DEFAULT_FPS
    # the base seed of a job that gives none (window k samples with seed + k): decided where
    # the job is submitted (starter.py, the HTTP API) and carried in the render's RenderSpec
    default_seed: int = DEFAULT_SEED
    windows_per_run: int = 100  # continue-as-new after this many windows of one chain
    heartbeat_timeout_s: int = 60  # an activity whose worker is silent this long is retried elsewhere
    comfy_prompt_timeout_s: float = 3600.0  # a ComfyUI prompt running longer is interrupted and retried
    # the longest any activity may take from when it is first scheduled, queue waits and retries
    # included (a window waits in the GPU queue while every GPU is busy); past it the render fails
    activity_schedule_to_close_s: int = 24 * 3600
    comfy_doctor: bool = True  # a GPU worker checks its ComfyUI (comfy_graphs doctor) before polling
    parallel_chains: int = 1  # independent chains a render may be cut into (a job's parallel_chains overrides it)
    join_blend_frames: int = 8  # stitch dissolves this many frames into a chain join, inside its pause (0 = off)
    timed_window_s: float = 2.0  # LONGTALK_BACKEND=timed: seconds each window takes (a stand-in for GPU time)
    # a chain's next window waits this long for the GPU worker of its previous window (whose
    # ComfyUI still caches the render's reference and models) before any worker may take it
    affinity_wait_s: int = 10
    # the quality guard (longtalk.quality, longtalk.guard): every window is measured on the GPU worker
    quality_retries: int = 2  # re-renders (next seed) of a window that comes back blank, frozen, faceless or non-finite
    quality_reanchor: bool = True  # a chain that drifts (colour, face) starts from the reference again at a pause
    quality_max_carry_s: float = 60.0  # ... and so does one that carried its tail this long (0 = no ceiling)
    quality_bounds: str = ""  # overrides of the guard's bounds, e.g. "delta_e=8,face_offset=0.3"
    # rehearse the guard without a GPU: the preview backend spoils windows on purpose, e.g.
    # "blank:5,frozen:9@1,drift:0.03,face:0.02" (longtalk.backends.faulty); never in production
    preview_faults: str = ""

    # the estimate's cost (longtalk.gpu_time.Prices): "kind=price" per GPU hour, or "kind=price/s" per
    # second (a serverless pool), for GPUs whose name contains kind ("*": any), comma-separated
    gpu_prices: str = ""
    # input limits
    min_dimension: int = 64
    max_dimension: int = 1920
    max_input_bytes: int = 2 * 1024**3
    max_audio_seconds: float = 4 * 3600.0
    download_timeout_s: float = 300.0  # per connect/read of a URL input
    download_total_s: float = 1800.0  # whole download of one URL input
    max_redirects: int = 5
    url_allow_hosts: str = ""  # comma-separated hosts/CIDRs URL inputs may reach even if private/loopback
    input_roots: str = "."  # os.pathsep-separated folders *_path inputs must lie in ("*" = anywhere)
    min_image_side: int = 64  # smallest accepted image/video side in pixels
    max_aspect_ratio: float = 4.0  # longest side / shortest side of an image or video
    strict_input: bool = False  # refuse every job key that is not a field (else: a warning at submission)
    # output
    presign_expiry_s: int = 7 * 24 * 3600
    inline_video_max_bytes: int = 20 * 1024 * 1024
    # media tools
    ffmpeg: str = ""  # the ffmpeg binary: a path or a name on PATH ("" = the pinned imageio-ffmpeg wheel's)
    # worker
    worker_roles: str = "cpu,gpu"  # which workers worker.py runs
    metrics_port: int = 0  # 0 = no metrics endpoint
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 inside a container so Prometheus can scrape it
    health_port: int = 0  # a worker's GET /livez and /readyz (Kubernetes probes); 0 = none
    health_host: str = "127.0.0.1"  # 0.0.0.0 inside a container so the kubelet reaches it
    # how long a stopping worker lets its running activities finish (SIGTERM: deploys, scale-down);
    # a GPU worker's covers a whole window, so a deploy does not throw a window's work away
    gpu_shutdown_grace_s: float = 600.0
    cpu_shutdown_grace_s: float = 20.0
    fleet_heartbeat_s: float = 10.0  # a GPU worker's record in the bucket's fleet/ registry, this often
    # workflow runs a worker keeps in memory between their tasks (the SDK's sticky cache); a run
    # that leaves it is rebuilt by replaying its history: a RenderVideo of 1,250 windows replays
    # in about a second, so a cache of a few hundred renders costs little and bounds memory
    workflow_cache_size: int = 1000
    # how long a run's next task waits for the worker that holds it in memory before any worker
    # may take it (and rebuild it): a worker that died hands its renders on after this
    sticky_schedule_to_start_s: float = 10.0
    build_id: str = ""  # the code this worker runs ("" = short git commit [+ "-dirty"], else the package version)
    # HTTP API (package api/): RunPod-compatible routes under /v2/{endpoint_id}
    api_address: str = "127.0.0.1:8000"  # host:port the API binds to
    api_processes: int = 1  # API processes sharing the address (each with its own event loop and Temporal client)
    api_keys: str = field(default="", repr=False)  # comma-separated name:key pairs
    api_keys_file: str = ""  # a file of name:key lines (read at start, besides api_keys)
    api_endpoint_ids: str = ""  # comma-separated endpoint ids accepted ("" = any)
    api_admin_names: str = ""  # comma-separated key names that see every owner's renders (dashboard, API)
    api_session_secret: str = field(default="", repr=False)  # signs dashboard sessions ("" = random per start)
    api_public_health: bool = False  # /health answers without a key
    api_max_body_bytes: int = 64 * 1024 * 1024  # larger request bodies answer 413
    api_queue: str = "api"  # task queue of the API's own worker (webhook deliveries, purges)
    api_execution_timeout_s: int = 0  # default policy.executionTimeout (0 = none)
    api_ttl_s: int = 7 * 24 * 3600  # default policy.ttl: a render is retrievable this long after submission
    api_webhook_secret: str = field(default="", repr=False)  # signs webhook deliveries ("" = webhooks refused)
    api_webhook_retry_s: float = 24 * 3600.0  # how long a webhook delivery is retried
    api_webhook_backoff_s: float = 5.0  # first retry interval of a delivery (doubles, at most 10 min)

    def __post_init__(self) -> None:
        try:
            validate_params(self.window, self.motion, self.fps)
        except ParamError as exc:
            raise ValueError(f"{PREFIX}{exc.param.upper()}: {exc}") from None
        if not 0 <= self.default_seed <= MAX_SEED:
            raise ValueError(f"{PREFIX}DEFAULT_SEED: must be an integer from 0 to {MAX_SEED}, got {self.default_seed}")
        for name in ("api_max_body_bytes", "api_ttl_s", "api_webhook_retry_s", "api_webhook_backoff_s",
                     "heartbeat_timeout_s", "fleet_heartbeat_s", "comfy_prompt_timeout_s", "activity_schedule_to_close_s",
                     "gpu_shutdown_grace_s", "cpu_shutdown_grace_s", "sticky_schedule_to_start_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{PREFIX}{name.upper()}: must be positive, got {getattr(self, name)}")
        if self.gpu_pool not in GPU_POOLS:
            raise ValueError(f"{PREFIX}GPU_POOL: use one of {', '.join(GPU_POOLS)}, got {self.gpu_pool!r}")
        for name in ("runpod_max_jobs", "runpod_poll_s", "runpod_url_expiry_s", "runpod_timeout_factor"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{PREFIX}{name.upper()}: must be positive, got {getattr(self, name)}")

        for name in ("runpod_timeout_margin_s", "runpod_idle_timeout_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{PREFIX}{name.upper()}: must be 0 or more, got {getattr(self, name)}")
        Prices(self.gpu_prices)  # ValueError naming LONGTALK_GPU_PRICES
        if self.ffmpeg:
            try:
                ffmpeg_bin.resolve(self.ffmpeg)
            except ValueError as exc:
                raise ValueError(f"{PREFIX}FFMPEG: {exc}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        values = values_from_env(cls, PREFIX, current_names(os.environ if environ is None else environ))
        values.update(overrides)
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The LONGTALK_ variables that reproduce these settings in another process."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[PREFIX + f.name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
        return out

    def window_queue(self, pool: str | None = None) -> str:
        """The task queue a render's windows go to: the GPU workers', or the RunPod
        dispatcher's; `pool` is the job's choice (None: gpu_pool)."""
        return self.runpod_queue if (pool or self.gpu_pool) == "runpod" else self.gpu_queue

    @property
    def temporal_ui_url(self) -> str:
        host = self.temporal_address.rsplit(":", 1)[0]
        return f"http://{host}:{self.temporal_ui_port}"

    def input_root_paths(self) -> list[Path]:
        """[] means anywhere ("*"); relative roots are taken from the current directory."""
        if self.input_roots.strip() == "*":
            return []
        return [Path(p).resolve() for p in self.input_roots.split(os.pathsep) if p]


def current_names(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables with every old name of RENAMED given under its new name (a new name that
    is set wins over its old one)."""
    env = {name: value for name, value in environ.items() if name not in RENAMED}
    for old, new in RENAMED.items():
        if old in environ:
            env.setdefault(new, environ[old])
    return env


def values_from_env(cls, prefix: str, environ: Mapping[str, str] | None = None) -> dict:
    """The fields of dataclass `cls` that the environment sets as PREFIX + NAME, converted to
    the field's type (int, float, bool, Path or str); a bad value names its variable."""
    env = os.environ if environ is None else environ
    values = {}
    for f in fields(cls):
        key = prefix + f.name.upper()
        if key in env:
            values[f.name] = _convert(f.type, env[key], key)
    return values


def _convert(type_name, raw: str, key: str):
    kind = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", str(type_name))
    text = raw.strip()
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind == "Path":
            return Path(text)
        return text
    except ValueError:
        raise ValueError(f"{key}: cannot read {raw!r} as {kind}") from None
