"""Audio analysis: RMS energy per frame and its dB scale, in numpy.

The one place that measures audio; its users are
- ingest: the loudness of a whole track (`loudness_gain`, over 40 ms blocks, chunk by chunk)
  and the normalised WAV it stores (`write_normalised_wav16`, streamed: flat memory),
- the preview backend: the mouth opening (RMS per video frame, in dBFS),
- plan: where the speech pauses (`frame_rms` with overlapping, centred frames).

The definitions are librosa's (`feature.rms` on a signal, squares and means in float64;
`amplitude_to_db` with ref 1.0 and no top_db cut; `db_to_amplitude`), and tests/test_audio.py
checks these functions against librosa itself. They are not called through librosa because
importing it loads scipy.signal, numba and scikit-learn: 238 MB more resident memory in every
CPU worker process (bench/run.py ingest: a 4-hour track's ingest peaked at 379 MB with it, 138
without), and 420 MB of the install, for a mean of squares and a logarithm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from . import av_io

SILENCE_DB = -200.0  # what digital silence measures (the floor of to_db)
_AMIN = 10 ** (SILENCE_DB / 20)
_PIECE_BLOCKS = 4096  # block_rms works on this many blocks at a time (bounded float64 copies)


def frame_rms(y: np.ndarray, frame_length: int, hop_length: int | None = None,
              center: bool = False, dtype=np.float64) -> np.ndarray:
    """RMS of each frame of the 1-D signal `y`, squares and means in `dtype`.

    With center=False and hop_length=frame_length (the default) the frames are consecutive
    non-overlapping blocks and a partial last block is dropped; center=True pads with zeros
    so that frame t is centred on sample t * hop_length."""
    hop = frame_length if hop_length is None else hop_length
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.floating):
        y = y.astype(np.float64)
    if center:
        y = np.pad(y, frame_length // 2)
    if y.size < frame_length:
        return np.zeros(0, dtype)
    frames = np.lib.stride_tricks.sliding_window_view(y, frame_length)[::hop]  # a view: no copy
    return np.sqrt(np.mean(np.square(frames, dtype=dtype), axis=-1))


def block_rms(chunks: Iterable[np.ndarray], block: int) -> np.ndarray:
    """RMS of consecutive non-overlapping blocks of `block` samples across chunk boundaries
    (a partial last block is dropped). Only a few thousand blocks are copied at a time, so
    an hour-long track given as chunks (or as one array) is never held twice."""
    carry = np.empty(0, np.float64)
    piece = block * _PIECE_BLOCKS
    out: list[np.ndarray] = []
    for chunk in chunks:
        chunk = np.asarray(chunk).reshape(-1)
        start = 0
        if carry.size:  # complete the block the previous chunk left open
            start = min(block - carry.size, chunk.size)
            carry = np.concatenate([carry, chunk[:start]])
            if carry.size < block:
                continue
            out.append(frame_rms(carry, block))
        whole = start + (chunk.size - start) // block * block
        for lo in range(start, whole, piece):
            out.append(frame_rms(chunk[lo:min(lo + piece, whole)], block))
        carry = chunk[whole:]
    return np.concatenate(out) if out else np.zeros(0)


def to_db(amplitude: np.ndarray | float) -> np.ndarray:
    """Amplitude (RMS) -> dBFS (full scale = 1.0); silence is SILENCE_DB."""
    power = np.square(np.asarray(amplitude, np.float64))
    return 10.0 * np.log10(np.maximum(_AMIN ** 2, power))


def from_db(db: np.ndarray | float) -> np.ndarray | float:
    """dBFS -> amplitude."""
    return np.sqrt(np.power(10.0, 0.1 * np.asarray(db, np.float64)))


def measure(chunks: Iterable[np.ndarray], block: int) -> tuple[np.ndarray, float, int]:
    """One pass over `chunks` (a list, or a stream that is read once): (the RMS of every
    `block` samples as block_rms gives them, the peak magnitude, the sample count). What it
    keeps is one RMS per block (4 hours of 40 ms blocks: 360,000 float64, 3 MB)."""
    peak, count = 0.0, 0

    def counted():
        nonlocal peak, count
        for chunk in chunks:
            chunk = np.asarray(chunk)
            if chunk.size:
                peak = max(peak, float(np.max(np.abs(chunk))))
                count += chunk.size
            yield chunk

    rms = block_rms(counted(), block)
    return rms, peak, count


def gain_for(rms: np.ndarray, peak: float, target_dbfs: float = -20.0, floor_dbfs: float = -50.0) -> float:
    """The gain that puts the speech (the blocks of `rms` above a noise floor) at target RMS,
    without clipping the `peak`. The level is the mean over all those blocks at once, so the
    gain is the same to the bit however the track arrived."""
    active = rms[to_db(rms) > floor_dbfs]
    if active.size == 0:
        return 1.0  # silence stays silence
    level = float(np.sqrt(np.mean(active**2)))
    return min(float(from_db(target_dbfs)) / level, 0.99 / (peak or 1.0))


def loudness_gain(chunks: Iterable[np.ndarray], block: int = 640) -> float:
    """Ingest's gain for a track (40 ms blocks at 16 kHz), in one pass over `chunks`."""
    rms, peak, _count = measure(chunks, block)
    return gain_for(rms, peak)


def write_normalised_wav16(src: Path | str, dest: Path | str, field: str,
                           max_seconds: float | None = None) -> int:
    """Ingest's speech track: the first audio stream of `src` (any container) at
    loudness_gain, as a write_wav16 file at `dest`; returns its sample count.

    The gain needs the whole track before the first sample is written, so the track is
    decoded once, measured as it comes, and spooled to a raw float32 file beside `dest`
    (4 bytes a sample: 920 MB for 4 hours, removed at the end); the WAV is written from that
    file. Memory stays at a few 30-s chunks whatever the length. Decoding twice instead (a
    pass to measure, a pass to write) took 1.5-1.7x the CPU for an hour of Opus
    (bench/RESULTS.md, issue 18). Errors are decode_audio_stream's, naming `field`."""
    spool = Path(dest).with_suffix(".f32")
    try:
        with open(spool, "wb") as f:
            gain = loudness_gain(av_io.spool_f32(av_io.decode_audio_stream(src, field, max_seconds), f))
        count = spool.stat().st_size // 4
        av_io.write_wav16(dest, av_io.read_f32(spool), gain)
    finally:
        spool.unlink(missing_ok=True)
    return count
