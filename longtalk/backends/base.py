"""The render-backend seam: one window in, W frames out.

A backend receives everything one window needs (the reference image, the M carried tail
frames, the window's audio slice per speaker, for V2V the source frames) and returns W
RGB frames whose first M reproduce the tail. The preview backend renders on the CPU; the
comfyui backend sends the same window to a ComfyUI server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np


@dataclass
class WindowJob:
    render_id: str
    index: int  # window number k
    frame_start: int  # global index of the window's first frame (k * S)
    num_frames: int  # W
    motion_frames: int  # M
    fps: int
    width: int
    height: int
    reference: np.ndarray  # (H, W, 3) uint8 RGB: the image that conditions every window
    tail: np.ndarray  # (M, H, W, 3) uint8 RGB: the previous window's last M frames
    audio: list[np.ndarray]  # one float32 mono 16 kHz slice per speaker, W*640 samples each
    source: np.ndarray | None = None  # V2V: (W, H, W, 3) uint8 source frames for this window
    prompt: str = ""
    seed: int = 0  # the render's base seed (RenderSpec.seed), the same for every window
    force_offload: bool = True
    chain_start: bool = False  # True when the tail is the reference (no previous window)
    extras: dict = field(default_factory=dict)

    @property
    def multi(self) -> bool:
        return len(self.audio) > 1

    @property
    def window_seed(self) -> int:
        """The sampling seed of this window: seed + k, whichever worker renders it."""
        return self.seed + self.index


ProgressFn = Callable[[str, float], None]  # (what, fraction done 0..1)


class RenderBackend(Protocol):
    name: str

    async def render_window(self, job: WindowJob, progress: ProgressFn | None = None) -> np.ndarray:
        """Return a (W, H, W, 3) uint8 RGB array; frames [0, M) reproduce job.tail."""
        ...

    async def close(self) -> None: ...
