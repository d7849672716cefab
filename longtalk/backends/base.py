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

from ..spec import RenderSpec


@dataclass
class WindowJob:
    render_id: str
    index: int  # window number k
    # the render's parameters, whole: W, M and fps (spec.window_params), the size, the prompt,
    # the seed (window k samples with spec.seed_for(k)), ...: a backend reads them here
    spec: RenderSpec
    frame_start: int  # global index of the window's first frame (k * S)
    reference: np.ndarray  # (H, W, 3) uint8 RGB: the image that conditions every window
    tail: np.ndarray  # (M, H, W, 3) uint8 RGB: the previous window's last M frames
    audio: list[np.ndarray]  # one float32 mono 16 kHz slice per speaker, W*640 samples each
    source: np.ndarray | None = None  # V2V: (W, H, W, 3) uint8 source frames for this window
    chain_start: bool = False  # True when the tail is the reference (no previous window)
    # 0, or the quality guard's re-render number: redo r samples with spec.seed_for(index, r)
    redo: int = 0
    extras: dict = field(default_factory=dict)


    @property
    def seed(self) -> int:
        """The sampling seed of this window (of this re-render, when redo > 0)."""
        return self.spec.seed_for(self.index, self.redo)


ProgressFn = Callable[[str, float], None]  # (what, fraction done 0..1)


class RenderBackend(Protocol):
    name: str

    async def render_window(self, job: WindowJob, progress: ProgressFn | None = None) -> np.ndarray:
        """Return a (W, H, W, 3) uint8 RGB array; frames [0, M) reproduce job.tail."""
        ...

    async def close(self) -> None: ...
