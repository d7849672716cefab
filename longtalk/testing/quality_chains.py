"""Windows rendered the way the workflow renders them, from the bundled examples, in the four
modes (image or video, one or two speakers): W=81 frames, M=9 carried, stride 72, 25 fps,
640 samples of 16 kHz audio per frame; window k+1's tail is window k's last M frames. Used by
tests/test_quality.py, tests/test_faulty_backend.py and bench/quality.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .. import av_io
from ..backends.base import RenderBackend, WindowJob
from ..spec import RenderSpec
from . import EXAMPLES

W, M, FPS, SPF = 81, 9, 25, 640
S = W - M
MODES = ("i2v-single", "i2v-multi", "v2v-single", "v2v-multi")


@dataclass(frozen=True)
class Example:
    mode: str
    reference: np.ndarray  # (H, W, 3): the image, or the first source frame (V2V)
    tracks: tuple[np.ndarray, ...]  # 16 kHz speech, one per speaker
    source: np.ndarray | None  # V2V: the source video's frames, played ping-pong

    @property
    def v2v(self) -> bool:
        return self.source is not None

    def audio(self, k: int) -> list[np.ndarray]:
        """Window k's audio per speaker; the speech loops, so a chain may be longer than it."""
        idx = np.arange(k * S * SPF, (k * S + W) * SPF)
        return [np.take(t, idx, mode="wrap") for t in self.tracks]

    def source_frames(self, k: int) -> np.ndarray | None:
        if self.source is None:
            return None
        idx = [av_io.source_index(f, len(self.source)) for f in range(k * S, k * S + W)]
        return self.source[idx]

    def job(self, k: int, tail: np.ndarray | None = None, seed: int = 7, index: int | None = None,
            redo: int = 0) -> WindowJob:
        """Window k (its frames and audio); tail None starts a chain (the tail is the reference)."""
        source = self.source_frames(k)
        reference = self.reference if source is None else source[0]
        chain = tail is None
        if chain:
            tail = np.repeat(reference[None], M, axis=0)
        h, w = reference.shape[:2]
        spec = RenderSpec(input_type="video" if self.v2v else "image",
                          person_count="multi" if len(self.tracks) > 1 else "single",
                          width=w, height=h, seed=seed, window=W, motion=M, fps=FPS)
        return WindowJob(render_id=f"quality-{self.mode}", index=k if index is None else index, spec=spec,
                         frame_start=k * S, reference=reference, tail=tail, audio=self.audio(k), source=source,
                         chain_start=chain, redo=redo)


def _image(name: str, size: tuple[int, int] | None) -> np.ndarray:
    rgb = av_io.decode_image((EXAMPLES / name).read_bytes(), "image")
    return rgb if size is None else av_io.fit_image(rgb, *size)


@lru_cache(maxsize=4)
def _speech(name: str) -> np.ndarray:
    return av_io.decode_audio_16k(EXAMPLES / name, "audio")


def _video(name: str, size: tuple[int, int] | None) -> np.ndarray:
    path = EXAMPLES / name
    frames = av_io.read_frames(path, list(range(av_io.count_video_frames(path))))
    out = [frames[i] for i in sorted(frames)]
    if size is not None:
        out = [av_io.fit_image(f, *size) for f in out]
    return np.stack(out)


def example(mode: str, size: tuple[int, int] | None = None) -> Example:
    """The bundled example for a mode, at its own size or fitted to size=(width, height)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    multi = mode.endswith("multi")
    tracks = (_speech("speech.ogg"), _speech("speech_2.ogg")) if multi else (_speech("speech.ogg"),)
    if mode.startswith("v2v"):
        source = _video("source_multi.mp4" if multi else "source.mp4", size)
        return Example(mode, source[0], tracks, source)
    return Example(mode, _image("portrait_multi.png" if multi else "portrait.png", size), tracks, None)


def render_chain(backend: RenderBackend, ex: Example, windows: int, first: int = 0, seed: int = 7,
                 tail: np.ndarray | None = None):
    """Yield (job, frames) for windows first..first+windows-1 of one chain, each carrying the tail."""
    for k in range(first, first + windows):
        job = ex.job(k, tail, seed)
        frames = asyncio.run(backend.render_window(job))
        assert np.array_equal(frames[:M], job.tail), "the tail contract"
        yield job, frames
        tail = frames[-M:].copy()
