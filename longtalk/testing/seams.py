"""The seam pop, measured: the demo (the example portrait and speech) rendered by the preview
backend window by window as the GPU activity feeds it, and the mean absolute luma step
(0-255) between consecutive frames at every window start (the first kept frame against the
frame before it) against the steps inside windows. Used by bench/seams.py and
tests/test_seams.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import numpy as np

from .. import av_io
from ..backends.base import WindowJob
from ..backends.preview import PreviewBackend
from ..spec import RenderSpec
from ..windows import WindowParams, window, window_count
from . import EXAMPLES


def render_demo(windows: int, width: int, height: int | None = None) -> tuple[list[np.ndarray], int]:
    """The kept frames of each window (width x height, square by default), and the total
    frame count."""
    p = WindowParams()
    height = height or width
    picture = av_io.decode_image((EXAMPLES / "portrait.png").read_bytes(), "image")
    reference = av_io.fit_image(picture, width, height)
    speech = av_io.decode_audio_16k(EXAMPLES / "speech.ogg", "audio")
    total = min(speech.size // p.samples_per_frame, p.window + (windows - 1) * p.stride)
    spec = RenderSpec(width=width, height=height)
    backend, kept, tail = PreviewBackend(), [], None
    for k in range(window_count(total, p)):
        w = window(k, total, p)
        audio = np.zeros(w.audio_samples, np.float32)
        part = speech[w.audio_start: w.audio_start + w.audio_samples]
        audio[: part.size] = part
        job = WindowJob(render_id="seams", index=k, spec=spec, frame_start=w.start, reference=reference,
                        tail=np.repeat(reference[None], p.motion, 0) if tail is None else tail, audio=[audio],
                        chain_start=tail is None)
        frames = asyncio.run(backend.render_window(job))
        kept.append(frames[w.keep_offset: w.keep_offset + w.kept])
        tail = frames[-p.motion:].copy()
    return kept, total


def window_starts(kept: list[np.ndarray]) -> list[int]:
    """The output frame where each window's kept frames begin."""
    return [int(s) for s in np.cumsum([0] + [len(f) for f in kept[:-1]])]


def luma_steps(frames: np.ndarray) -> np.ndarray:
    """steps[i]: the mean absolute luma difference of frame i+1 against frame i."""
    y = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2YUV)[..., 0].astype(np.float32) for f in frames])
    return np.abs(np.diff(y, axis=0)).mean(axis=(1, 2))


def measure(frames: np.ndarray, starts: list[int]) -> dict:
    """The steps at the window starts (mean, min, max) and inside windows (mean)."""
    steps = luma_steps(frames)
    at = np.array([s - 1 for s in starts if s > 0])
    interior = np.setdiff1d(np.arange(steps.size), at)
    return {"seams_mean": round(float(steps[at].mean()), 3), "seams_max": round(float(steps[at].max()), 3),
            "seams_min": round(float(steps[at].min()), 3), "interior_mean": round(float(steps[interior].mean()), 3)}


def copy_join(clips: list[Path], dst: Path, work: Path) -> None:
    """The clips joined by stream copy, as stitch joined them before it encoded the output's
    stream once (the baseline of the seam pop)."""
    av_io.run_ffmpeg(av_io.joined(clips, work).output(str(dst), c="copy", an=None).overwrite_output())
