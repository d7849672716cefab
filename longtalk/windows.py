"""Frame and window arithmetic (InfiniteTalk's own), shared by the workflow and activities.

Pure integer arithmetic, no I/O, safe to import from workflow code.

- Video runs at `fps` (25); the model's audio is 16 kHz mono, so one frame is
  16000 / fps = 640 samples.
- T = floor(samples / samples_per_frame), capped by max_frame.
- Window k covers output frames [k*S, k*S + W) with S = W - M. Window 0 keeps all of
  them; every later window re-renders its first M frames from the carried tail and keeps
  frames [k*S + M, k*S + W). The last window is padded with silence up to W frames and
  what it keeps is trimmed to T.
"""

from __future__ import annotations

from dataclasses import dataclass

MODEL_SAMPLE_RATE = 16_000
# InfiniteTalk's numbers, defined here only: every other default (Settings, RenderSpec, the
# ComfyUI binder) refers to these.
DEFAULT_FPS = 25
DEFAULT_WINDOW = 81  # W = 4k+1: the VAE packs the first frame alone, then 4 frames per latent
DEFAULT_MOTION = 9  # M = 4j+1, for the same reason: the carried tail is VAE-encoded on its own


class ParamError(ValueError):
    """A window parameter is out of bounds; `param` is its name (window, motion or fps)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class WindowParams:
    window: int = DEFAULT_WINDOW  # W, frames rendered per window, 4k+1
    motion: int = DEFAULT_MOTION  # M, frames carried from one window into the next, 4j+1
    fps: int = DEFAULT_FPS

    def __post_init__(self) -> None:
        validate_params(self.window, self.motion, self.fps)

    @property
    def stride(self) -> int:
        return self.window - self.motion

    @property
    def samples_per_frame(self) -> int:
        return MODEL_SAMPLE_RATE // self.fps


def validate_params(window: int, motion: int, fps: int) -> None:
    for name, value in (("window", window), ("motion", motion), ("fps", fps)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamError(name, f"{name} must be an integer, got {value!r}")
    if window < 5 or (window - 1) % 4 != 0:
        raise ParamError("window", f"window must be 4k+1 and at least 5, got {window}")
    if not 0 < motion < window:
        raise ParamError("motion", f"motion must satisfy 0 < motion < window ({window}), got {motion}")
    if (motion - 1) % 4 != 0:
        raise ParamError("motion", f"motion must be 4j+1 (1, 5, 9, 13, ...: the VAE packs the first frame "
                                   f"alone, then 4 frames per latent), got {motion}")
    if fps <= 0 or MODEL_SAMPLE_RATE % fps != 0:
        raise ParamError("fps", f"fps must divide {MODEL_SAMPLE_RATE} evenly, got {fps}")


@dataclass(frozen=True)
class Window:
    index: int
    start: int  # first output frame this window renders (inclusive)
    end: int  # one past the last rendered frame: start + W (may run past T)
    keep_start: int  # first output frame this window contributes
    keep_end: int  # one past the last contributed frame (<= T)
    audio_start: int  # first 16 kHz sample of the window's audio slice
    audio_samples: int  # W * samples_per_frame: the slice is padded with silence past T

    @property
    def kept(self) -> int:
        return self.keep_end - self.keep_start

    @property
    def keep_offset(self) -> int:
        """Index, inside the rendered window, of the first kept frame."""
        return self.keep_start - self.start


def total_frames(samples: int, params: WindowParams = WindowParams(), max_frame: int | None = None) -> int:
    """T from an integer sample count at 16 kHz, capped by max_frame."""
    if samples < 0:
        raise ValueError("samples must be >= 0")
    frames = samples // params.samples_per_frame
    if max_frame is not None:
        if max_frame <= 0:
            raise ValueError("max_frame must be positive")
        frames = min(frames, max_frame)
    return frames


def window_count(total: int, params: WindowParams = WindowParams()) -> int:
    if total <= 0:
        raise ValueError("there must be at least one frame to render")
    if total <= params.window:
        return 1
    return 1 + -(-(total - params.window) // params.stride)


def window(k: int, total: int, params: WindowParams = WindowParams()) -> Window:
    n = window_count(total, params)
    if not 0 <= k < n:
        raise IndexError(f"window {k} out of range 0..{n - 1}")
    start = k * params.stride
    keep_start = start if k == 0 else start + params.motion
    return Window(
        index=k,
        start=start,
        end=start + params.window,
        keep_start=keep_start,
        keep_end=min(start + params.window, total),
        audio_start=start * params.samples_per_frame,
        audio_samples=params.window * params.samples_per_frame,
    )


def windows(total: int, params: WindowParams = WindowParams()) -> list[Window]:
    return [window(k, total, params) for k in range(window_count(total, params))]
