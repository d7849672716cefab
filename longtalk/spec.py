"""RenderSpec: what one render is, decided once and carried unchanged through Temporal.

The job parser (`longtalk.inputs.parse_job`) decides the user's parameters and the seed; the
client (`starter.py`) adds the window parameters of its settings and puts the result into the
`RenderRequest`. From there every dataclass that crosses Temporal carries this one object
(`RenderContext`, `ChainInput`, `RenderWindowInput`, ...), so a window is rendered with the
same parameters, the same seed included, whichever worker renders it.

Pure data, no I/O: imported by workflow code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .windows import DEFAULT_FPS, DEFAULT_MOTION, DEFAULT_WINDOW, WindowParams

DEFAULT_PROMPT = "A person is talking"
DEFAULT_SIZE = 512
# The base seed when a job gives none (the old RunPod worker's graphs used 2); a deployment
# sets its own with LONGTALK_DEFAULT_SEED (Settings.default_seed), where the job is parsed.
DEFAULT_SEED = 2
# ComfyUI's sampler seed is 0..2**64-1; window k samples with seed + k, so the job's seed is
# kept below 2**63 and every window's seed stays in range.
MAX_SEED = 2**63 - 1
# a quality re-render of window k (redo r) samples with seed + k + r * REDO_SEED_STRIDE, still
# below 2**64 for any redo count the guard allows
REDO_SEED_STRIDE = 2**32


@dataclass(frozen=True)
class RenderSpec:
    """The user's parameters, the seed and the window parameters of one render."""

    input_type: str = "image"  # image | video
    person_count: str = "single"  # single | multi
    prompt: str = DEFAULT_PROMPT
    width: int = DEFAULT_SIZE
    height: int = DEFAULT_SIZE
    max_frame: int | None = None  # cap on the frames rendered (None: the whole audio)
    force_offload: bool = True
    network_volume: bool = False
    seed: int = DEFAULT_SEED  # base seed: window k samples with seed + k
    window: int = DEFAULT_WINDOW  # W
    motion: int = DEFAULT_MOTION  # M
    fps: int = DEFAULT_FPS

    @property
    def window_params(self) -> WindowParams:
        return WindowParams(self.window, self.motion, self.fps)

    @property
    def multi(self) -> bool:
        return self.person_count == "multi"

    def seed_for(self, k: int, redo: int = 0) -> int:
        """The sampling seed of window k: the same on every worker and every retry. A window
        the quality guard renders again (redo r = 1, 2, ...) samples with seed + k + r * 2**32:
        the next seed of its own, which no other window of the render uses."""
        return self.seed + k + redo * REDO_SEED_STRIDE

    def params(self) -> dict:
        """The job's parameters as stored next to the render (request.json)."""
        return asdict(self)


SPEC_FIELDS: tuple[str, ...] = tuple(RenderSpec.__dataclass_fields__)
