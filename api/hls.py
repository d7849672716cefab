"""The live preview of a render as HLS: an EVENT playlist whose segments are its finished
windows, each muxed with its slice of the render's audio.

    playlist(windows, finished, ended)  the m3u8 text: the contiguous prefix of finished
                                        windows from window 0, EXT-X-ENDLIST once `ended`
    segment_key(render_id, k)           where a built segment is kept in the bucket
    build_segment(store, ...)           window k's clip + audio slice -> MPEG-TS bytes

A segment's timestamps start at the window's first kept frame (BASE_S + keep_start / fps),
so they continue from segment to segment and no EXT-X-DISCONTINUITY is needed. BASE_S keeps
them positive: a clip's B-frames decode before they show, and a decode time below zero would
wrap around in MPEG-TS. Segments never change
once the window exists, so each is built once and cached in the bucket.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import ffmpeg
import numpy as np

from longtalk import av_io
from longtalk.payloads import audio_key
from longtalk.store import ObjectStore
from longtalk.windows import MODEL_SAMPLE_RATE

BASE_S = 10.0  # where the render's frame 0 sits on the segments' timeline (seconds)


def segment_key(render_id: str, k: int) -> str:
    return f"renders/{render_id}/hls/{k:05d}.ts"


def finished_prefix(finished: set[int] | list[int], total: int) -> int:
    """How many windows from window 0 on are all finished (a player can only play those)."""
    done = set(finished)
    n = 0
    while n < total and n in done:
        n += 1
    return n


def playlist(windows: list[tuple[int, int]], fps: int, count: int, ended: bool, segment_url) -> str:
    """`windows`: (keep_start, keep_end) of every window of the render; the first `count`
    are listed; `segment_url(k)` names segment k."""
    durations = [(windows[k][1] - windows[k][0]) / fps for k in range(count)]
    target = max([math.ceil(d) for d in durations] + [1])
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{target}",
             "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:EVENT", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for k, d in enumerate(durations):
        lines += [f"#EXTINF:{d:.6f},", segment_url(k)]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def audio_slice(store: ObjectStore, render_id: str, tracks: int, keep_start: int, keep_end: int,
                fps: int) -> bytes:
    """16 kHz mono s16le of frames [keep_start, keep_end) from the ingested tracks (two
    speakers summed, as publish mixes them), read by byte range: an hour-long track is never
    fetched whole. Past the end of a track: silence."""
    spf = MODEL_SAMPLE_RATE // fps
    count = (keep_end - keep_start) * spf
    mixed = np.zeros(count, np.float32)
    for track in range(1, tracks + 1):
        key = audio_key(render_id, track)
        size = store.size(key)
        if size is None:
            continue
        offset, length = av_io.wav16_range(keep_start * spf, count)
        length = min(length, size - offset)
        data = store.get_bytes(key, offset=offset, length=length) if length > 0 else b""
        mixed += av_io.pcm16_to_float(data, count)
    return (np.clip(mixed, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def build_segment(clip: Path, pcm: bytes, keep_start: int, fps: int, work: Path) -> bytes:
    """Window clip (H.264, copied) + PCM audio (AAC) -> MPEG-TS whose video starts at
    BASE_S + keep_start / fps."""
    raw = work / "audio.raw"
    raw.write_bytes(pcm)
    out = work / "segment.ts"
    video = ffmpeg.input(str(clip))
    audio = ffmpeg.input(str(raw), f="s16le", ar=MODEL_SAMPLE_RATE, ac=1)
    stream = ffmpeg.output(
        video.video, audio.audio, str(out), vcodec="copy", acodec="aac", audio_bitrate="96k", ar=48000,
        ac=1, f="mpegts", output_ts_offset=f"{BASE_S + keep_start / fps:.6f}",
        # no mux delay and no shift: the first frame shows exactly at the offset
        muxdelay=0, muxpreload=0, avoid_negative_ts="disabled", **{"bsf:v": "h264_mp4toannexb"})
    av_io.run_ffmpeg(stream.overwrite_output())
    return out.read_bytes()


def make_segment(store: ObjectStore, render_id: str, source_id: str, k: int, keep: tuple[int, int],
                 fps: int, tracks: int, clip_key: str) -> bytes:
    """Segment k of `render_id`, built from the clip `clip_key` (of `source_id`, the render
    that rendered the window) and stored under segment_key (read from there next time)."""
    key = segment_key(render_id, k)
    if store.exists(key):
        return store.get_bytes(key)
    with tempfile.TemporaryDirectory(prefix="hls-") as tmp:
        work = Path(tmp)
        clip = store.download(clip_key, work / "clip.mp4")
        pcm = audio_slice(store, source_id, tracks, keep[0], keep[1], fps)
        data = build_segment(clip, pcm, keep[0], fps, work)
    store.put_bytes(key, data, "video/mp2t")
    return data
