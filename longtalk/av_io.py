"""Decoding and encoding of the media the pipeline touches.

- PyAV for frame- and sample-level work: open and probe inputs, read and normalise source
  video frames, encode each window's kept frames to H.264 (a high-quality intermediate).
- ffmpeg (through ffmpeg-python, `run_ffmpeg`; the binary is `ffmpeg_bin`'s) for the
  whole-file steps: decoding a track to 16 kHz mono (streamed through a pipe), the join of
  the window clips (encoded once into the output's stream), the output's AAC and the mux.
- the one WAV writer (16 kHz mono 16-bit, to a file or to bytes) and the one PNG encoder
  (RGB or RGBA). Audio analysis (RMS, loudness) is longtalk.audio.

Decoding failures raise InputError naming the job field, so the workflow can fail at once.
"""

from __future__ import annotations

import io
import subprocess
import tempfile
import wave
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import av
import cv2
import ffmpeg
import numpy as np

from . import ffmpeg_bin
from .errors import InputError
from .text import first_line
from .windows import MODEL_SAMPLE_RATE

# The window clips are intermediates: stitch decodes them and encodes the output's video
# stream once (OUTPUT_CODEC_OPTIONS), so no window starts its own coding-noise pattern at an
# I-frame of its own (the "seam pop": 0.51 mean abs luma step at window starts against 0.14
# inside at 832x480, joined by stream copy). Their quality decides how much of the pop
# survives the re-encode: crf 18 clips (renders of earlier releases) 0.25, crf 10 0.18
# against 0.14 inside (raw frames: 0.16 against 0.13), at 4.2x the clip bytes (bench/seams.py,
# bench/RESULTS.md "Seam pop fixed"). crf 10 keeps them High-profile H.264 that browsers
# play (the live preview sends them as they are); lossless would not be.
CLIP_CODEC_OPTIONS = {"preset": "veryfast", "crf": "10", "x264-params": "keyint=250:min-keyint=25"}
# The output's video: one stream, as the clips were encoded before (crf 18).
OUTPUT_CODEC_OPTIONS = {**CLIP_CODEC_OPTIONS, "crf": "18"}


# ---- audio ---------------------------------------------------------------------------

DECODE_CHUNK_SAMPLES = MODEL_SAMPLE_RATE * 30  # decode_audio_chunks reads ffmpeg's output 30 s at a time


def decode_audio_stream(path: Path | str, field: str, max_seconds: float | None = None) -> Iterator[np.ndarray]:
    """First audio stream of any container -> float32 mono 16 kHz, yielded in chunks of 30 s
    as ffmpeg decodes it: a pass over the track holds one chunk (ingest's passes over a
    4-hour track stay at a few MB; the whole track would be 920 MB of samples).

    PyAV opens the file and finds the stream; the ffmpeg binary decodes, downmixes and
    resamples it in one pass into a pipe (libswresample, as PyAV's resampler: the same
    samples). Frame by frame in Python the same work took ~6 s per 10 minutes of Opus, before
    the first window could start; ffmpeg takes ~2 s. It stops at the first decode error
    (-xerror), so a damaged track fails naming the field. The errors come while iterating:
    the length limit as soon as a chunk passes it (ffmpeg is stopped there), a decode error
    or an empty track after the last chunk."""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise InputError(field, f"cannot be decoded as audio ({_short(exc)})") from None
    with container:
        if not container.streams.audio:
            raise InputError(field, "has no audio stream")
    graph = ffmpeg.input(str(path)).output("pipe:", map="0:a:0", format="f32le", acodec="pcm_f32le", ac=1,
                                          ar=MODEL_SAMPLE_RATE)
    limit = None if max_seconds is None else int(max_seconds * MODEL_SAMPLE_RATE)
    total = 0
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(ffmpeg_command(graph.global_args("-xerror")), stdout=subprocess.PIPE,
                                stderr=errors)
        try:
            while data := proc.stdout.read(DECODE_CHUNK_SAMPLES * 4):
                chunk = np.nan_to_num(np.frombuffer(data, "<f4"))
                total += chunk.size
                if limit is not None and total > limit:
                    raise InputError(field, f"is longer than the limit of {max_seconds:.0f} seconds")
                yield chunk
        except BaseException:
            proc.kill()  # over the limit, interrupted or abandoned: stop decoding the rest
            raise
        finally:
            proc.stdout.close()
            code = proc.wait()
        if code != 0:
            errors.seek(0)
            raise InputError(field, f"cannot be decoded as audio ({_ffmpeg_reason(errors.read(), path)})")
    if total == 0:
        raise InputError(field, "contains no audio samples")


def decode_audio_chunks(path: Path | str, field: str, max_seconds: float | None = None) -> list[np.ndarray]:
    """decode_audio_stream's chunks, all of them (the whole track in memory: for short tracks)."""
    return list(decode_audio_stream(path, field, max_seconds))


def spool_f32(chunks: Iterable[np.ndarray], file: BinaryIO) -> Iterator[np.ndarray]:
    """The chunks, passed on as they come, each also appended to `file` as raw float32 (read
    back by read_f32): one decode serves a pass that measures and a later pass that writes."""
    for chunk in chunks:
        file.write(np.ascontiguousarray(chunk, "<f4").data)
        yield chunk


def read_f32(path: Path | str) -> Iterator[np.ndarray]:
    """A raw float32 file (spool_f32's) in chunks of DECODE_CHUNK_SAMPLES."""
    with open(path, "rb") as f:
        while data := f.read(DECODE_CHUNK_SAMPLES * 4):
            yield np.frombuffer(data, "<f4")


def _ffmpeg_reason(stderr: bytes, path: Path | str) -> str:
    """ffmpeg's first error line (the cause; the lines after it say what failed because of
    it), without the file's path or the stream's address."""
    lines = [x.strip() for x in stderr.decode("utf-8", "replace").splitlines() if x.strip()]
    if not lines:
        return "ffmpeg failed"
    line = lines[0].replace(str(path), "the file")
    if line.startswith("[") and "] " in line:
        line = line.split("] ", 1)[1]
    return line[:200]


def decode_audio_16k(path: Path | str, field: str, max_seconds: float | None = None) -> np.ndarray:
    """First audio stream of any container -> one float32 mono 16 kHz array."""
    return np.concatenate(decode_audio_chunks(path, field, max_seconds))


def write_wav16(dest: Path | str | BinaryIO, samples: np.ndarray | Iterable[np.ndarray], gain: float = 1.0) -> None:
    """16 kHz mono 16-bit PCM WAV with the plain 44-byte header (so byte ranges map to
    samples), written chunk by chunk (an array, or any iterable of arrays: a list, a stream)
    to a path or a binary file object."""
    chunks = [samples] if isinstance(samples, np.ndarray) else samples
    with wave.open(dest if hasattr(dest, "write") else str(dest), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(MODEL_SAMPLE_RATE)
        for chunk in chunks:
            pcm = np.clip(chunk * gain, -1.0, 1.0) * 32767.0
            w.writeframes(pcm.round().astype("<i2").tobytes())


def wav16_bytes(samples: np.ndarray | Iterable[np.ndarray], gain: float = 1.0) -> bytes:
    """write_wav16 into memory: the bytes of the WAV file."""
    buf = io.BytesIO()
    write_wav16(buf, samples, gain)
    return buf.getvalue()


WAV_HEADER_BYTES = 44


def wav16_range(first_sample: int, count: int) -> tuple[int, int]:
    """Byte offset and length of samples [first, first+count) in a write_wav16 file."""
    return WAV_HEADER_BYTES + 2 * first_sample, 2 * count


def pcm16_to_float(data: bytes, count: int) -> np.ndarray:
    """Bytes of 16-bit PCM -> float32, zero-padded (silence) up to count samples."""
    got = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float32) / 32767.0
    if got.size >= count:
        return got[:count]
    return np.concatenate([got, np.zeros(count - got.size, np.float32)])


# ---- images --------------------------------------------------------------------------

def decode_image(data: bytes, field: str) -> np.ndarray:
    """Encoded image bytes -> RGB uint8."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise InputError(field, "cannot be decoded as an image (corrupt or truncated)")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def fit_image(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale to cover width x height, then crop the centre (keep proportion, crop)."""
    h, w = rgb.shape[:2]
    scale = max(width / w, height / h)
    nw, nh = max(width, round(w * scale)), max(height, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LANCZOS4
    resized = cv2.resize(rgb, (nw, nh), interpolation=interp)
    x0, y0 = (nw - width) // 2, (nh - height) // 2
    return np.ascontiguousarray(resized[y0 : y0 + height, x0 : x0 + width])


def encode_png(image: np.ndarray) -> bytes:
    """RGB or RGBA uint8 (H, W, 3 or 4) -> PNG bytes with the same channels."""
    to_bgr = cv2.COLOR_RGBA2BGRA if image.ndim == 3 and image.shape[2] == 4 else cv2.COLOR_RGB2BGR
    # level 1: lossless all the same, and about three times faster than the default
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, to_bgr), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise ValueError("stored PNG is corrupt")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


# ---- video ---------------------------------------------------------------------------

def normalise_video(src: Path | str, dst: Path | str, field: str, width: int, height: int,
                    fps: int, max_seconds: float | None = None) -> int:
    """Re-time a source video to `fps` (nearest frame by timestamp), fit it to width x height
    and store it losslessly enough to serve as the base of every window. Returns frame count."""
    try:
        container = av.open(str(src))
    except (av.error.FFmpegError, OSError) as exc:
        raise InputError(field, f"cannot be decoded as video ({_short(exc)})") from None
    written = 0
    try:
        with container, av.open(str(dst), "w") as out:
            if not container.streams.video:
                raise InputError(field, "has no video stream")
            stream = container.streams.video[0]
            ostream = out.add_stream("libx264", rate=fps)
            ostream.width, ostream.height, ostream.pix_fmt = width, height, "yuv420p"
            ostream.options = {"preset": "veryfast", "crf": "12", "g": str(fps)}
            last = None
            first_time = None
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                if first_time is None:
                    first_time = frame.time
                t = frame.time - first_time
                rgb = fit_image(frame.to_ndarray(format="rgb24"), width, height)
                # emit every output frame whose time falls before this source frame
                while written / fps < t - 0.5 / fps and last is not None:
                    written += _encode(ostream, out, last)
                last = rgb
                if max_seconds is not None and written / fps > max_seconds:
                    raise InputError(field, f"is longer than the limit of {max_seconds:.0f} seconds")
            if last is not None:
                written += _encode(ostream, out, last)
            for packet in ostream.encode():
                out.mux(packet)
    except InputError:
        Path(dst).unlink(missing_ok=True)
        raise
    except (av.error.FFmpegError, ValueError) as exc:
        Path(dst).unlink(missing_ok=True)
        raise InputError(field, f"cannot be decoded as video ({_short(exc)})") from None
    if written == 0:
        Path(dst).unlink(missing_ok=True)
        raise InputError(field, "contains no video frames")
    return written


def _encode(stream, container, rgb: np.ndarray) -> int:
    for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
        container.mux(packet)
    return 1


def source_index(frame: int, source_frames: int) -> int:
    """Which source frame backs output frame `frame`: the source plays forward, then
    backward (ping-pong), so a source shorter than the audio never jumps."""
    if source_frames <= 1:
        return 0
    period = 2 * (source_frames - 1)
    i = frame % period
    return i if i < source_frames else period - i


def read_frames(path: Path | str, indices: list[int]) -> dict[int, np.ndarray]:
    """Decode the given frame indices of a constant-rate video (seeking once)."""
    wanted = sorted(set(indices))
    if not wanted:
        return {}
    got: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or Fraction(25)
        tb = stream.time_base
        target = int(wanted[0] / rate / tb)
        container.seek(target, stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            idx = round(frame.pts * tb * rate)
            if idx in wanted:
                got[idx] = frame.to_ndarray(format="rgb24")
            if idx >= wanted[-1]:
                break
    missing = [i for i in wanted if i not in got]
    if missing:
        raise ValueError(f"source video lacks frames {missing[:5]}")
    return got


def encode_clip(frames: np.ndarray, path: Path | str, fps: int) -> None:
    """Encode (N, H, W, 3) RGB frames to an H.264 MP4 clip with the shared clip settings."""
    n, h, w = frames.shape[:3]
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = dict(CLIP_CODEC_OPTIONS)
        for i in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frames[i], format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def count_video_frames(path: Path | str) -> int:
    """Exact frame count from the packets (no decoding)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.size > 0)


def probe(path: Path | str) -> dict:
    """Streams, durations and frame counts of a finished file (for tests and results)."""
    info: dict = {"video": None, "audio": None}
    with av.open(str(path)) as container:
        info["format_duration_s"] = (container.duration or 0) / 1_000_000
        for s in container.streams:
            if s.type == "video" and info["video"] is None:
                info["video"] = {"codec": s.codec_context.name, "width": s.codec_context.width,
                                 "height": s.codec_context.height, "pix_fmt": s.codec_context.pix_fmt,
                                 "fps": float(s.average_rate or 0),
                                 "duration_s": float((s.duration or 0) * s.time_base)}
            elif s.type == "audio" and info["audio"] is None:
                info["audio"] = {"codec": s.codec_context.name, "sample_rate": s.codec_context.sample_rate,
                                 "duration_s": float((s.duration or 0) * s.time_base)}
    if info["video"] is not None:
        info["video"]["frames"] = count_video_frames(path)
    return info


# ---- whole-file steps (ffmpeg) ------------------------------------------------------

def joined(clips: list[Path], workdir: Path):
    """The clips one after the other as one ffmpeg input (the concat demuxer: it reads them in
    turn, so memory stays flat however long the render); its listing is workdir/clips.txt."""
    listing = workdir / "clips.txt"
    listing.write_text("".join(f"file '{p.resolve()}'\n" for p in clips))
    return ffmpeg.input(str(listing), format="concat", safe=0)


# the joined clips encoded into one stream: every decoded frame once, none dropped or repeated
OUTPUT_VIDEO = {"vcodec": "libx264", "pix_fmt": "yuv420p", "fps_mode": "passthrough", **OUTPUT_CODEC_OPTIONS}


def concat_clips(clips: list[Path], dst: Path | str, workdir: Path) -> None:
    """Join the window clips into one H.264 stream, encoded once."""
    stream = joined(clips, workdir).output(str(dst), movflags="+faststart", an=None, **OUTPUT_VIDEO)
    run_ffmpeg(stream.overwrite_output())


AUDIO_RATE = 48000  # the output's audio: AAC LC, 128 kbit/s, mono, 48 kHz


def _final_audio(audio_tracks: list[Path], frames: int, fps: int):
    """The output's audio as an ffmpeg stream: the original speech (mixed when two tracks),
    cut or padded to exactly frames / fps seconds."""
    duration = frames / fps
    unique = list(dict.fromkeys(str(p) for p in audio_tracks))  # one speaker given twice = one track
    # timestamps from the sample count, not the container: an input whose timestamps jump or
    # overlap would otherwise come out shorter or longer than its samples
    tracks = [ffmpeg.input(p).audio.filter("aresample", AUDIO_RATE).filter("asetpts", "N/SR/TB") for p in unique]
    if len(tracks) == 1:
        mixed = tracks[0]
    else:
        mixed = ffmpeg.filter(tracks, "amix", inputs=len(tracks), duration="longest", normalize=0)
    samples = round(duration * AUDIO_RATE)
    return mixed.filter("apad", whole_len=samples).filter("atrim", end_sample=samples)


AAC_OPTIONS = {"acodec": "aac", "audio_bitrate": "128k", "ar": AUDIO_RATE, "ac": 1}


def encode_final_audio(audio_tracks: list[Path], dst: Path | str, frames: int, fps: int) -> None:
    """The output's audio track, encoded once (beside the windows, or at ingest in
    renders started before that) into an .m4a: publish then muxes it
    with the video by stream copy (`mux_copy`) instead of encoding it on the render's tail."""
    out = ffmpeg.output(_final_audio(audio_tracks, frames, fps), str(dst), **AAC_OPTIONS,
                        t=f"{frames / fps:.6f}", format="mp4")
    run_ffmpeg(out.overwrite_output())


def mux_copy(video: Path | str, audio: Path | str, dst: Path | str, frames: int, fps: int) -> None:
    """Video and an already encoded audio track (`encode_final_audio`) into one MP4, both by
    stream copy: seconds for an hour of video, whatever its length."""
    v, a = ffmpeg.input(str(video)), ffmpeg.input(str(audio))
    out = ffmpeg.output(v.video, a.audio, str(dst), c="copy", movflags="+faststart", t=f"{frames / fps:.6f}")
    run_ffmpeg(out.overwrite_output())


def concat_clips_with_audio(clips: list[Path], audio: Path | str, dst: Path | str, workdir: Path,
                            frames: int, fps: int) -> None:
    """The window clips joined into one H.264 stream (encoded once) and the encoded audio
    (`encode_final_audio`) added by stream copy, in one ffmpeg pass: the finished output
    without the stitched video ever being stored, fetched and rewritten."""
    v = joined(clips, workdir)
    a = ffmpeg.input(str(audio))
    out = ffmpeg.output(v.video, a.audio, str(dst), acodec="copy", movflags="+faststart", t=f"{frames / fps:.6f}",
                        **OUTPUT_VIDEO)
    run_ffmpeg(out.overwrite_output())


def mux_audio(video: Path | str, audio_tracks: list[Path], dst: Path | str, frames: int, fps: int) -> None:
    """Video stream copied; the original speech (mixed when two tracks) as AAC, cut or
    padded to exactly frames / fps seconds. (Publish's fallback for a render whose ingest
    stored no encoded audio: one of an earlier release.)"""
    v = ffmpeg.input(str(video))
    out = ffmpeg.output(v.video, _final_audio(audio_tracks, frames, fps), str(dst), vcodec="copy",
                        movflags="+faststart", t=f"{frames / fps:.6f}", **AAC_OPTIONS)
    run_ffmpeg(out.overwrite_output())


def ffmpeg_command(stream) -> list[str]:
    """The argument list of an ffmpeg-python stream graph, for the project's ffmpeg binary
    (`ffmpeg_bin`: the wheel's unless LONGTALK_FFMPEG chose another), quiet (errors only) and
    never reading stdin."""
    return stream.global_args("-hide_banner", "-nostdin", "-loglevel", "error").compile(cmd=ffmpeg_bin.exe())


def run_ffmpeg(stream) -> bytes:
    """Run an ffmpeg-python stream graph; its stdout (for a pipe: output), or RuntimeError
    with ffmpeg's own error text (which names the file)."""
    proc = subprocess.run(ffmpeg_command(stream), capture_output=True)
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {err[-1500:]}")
    return proc.stdout


def _short(exc: Exception) -> str:
    """The reason of a PyAV error, without the file path it carries."""
    return first_line(exc, 200).split(": '")[0]
