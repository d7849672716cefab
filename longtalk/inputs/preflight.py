"""Decode checks: refuse what ingest would only find later, before any upload.

`staging.prepare` streams every source into a temporary file, sniffs its format once, then
calls `check_media` with that format on the file BEFORE it is uploaded (by the client for
path and base64 inputs, by the ingest activity for URL inputs), so an input that is corrupt,
truncated, too short, too long, too small or oddly shaped is refused with
InputError(job key, reason) while nothing of it is stored. Ingest's decoding keeps its own
checks (defence in depth); these are meant to be at least as strict and much cheaper:

- image: the container structure is walked first (a JPEG must reach its EOI marker through
  valid segments, a PNG must reach IEND with correct chunk CRCs, a WebP must be as long as
  its RIFF header says), the pixel count is bounded before anything is allocated, then the
  image is decoded fully with OpenCV (as ingest does) and its sides and aspect are checked.
- audio (also the audio track of a video file given for a wav field): every packet of the
  first audio stream is decoded (no resampling) and its samples counted; decoding stops as
  soon as the limit is passed. Decode errors, packets the demuxer marks corrupt, a WAV whose
  data chunk runs past the end of the file, an Ogg stream without its last page and a file
  whose packets end well before the duration it declares are refused.
- video: the first frame is decoded, then only key frames (the decoder still parses every
  packet, so broken data shows up as errors), every packet of every stream is demuxed to see
  where the file really ends; no video stream, no frame, decode errors, missing packets,
  too long, too small or too elongated frames are refused.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from ..errors import InputError
from ..settings import Settings
from .formats import MediaFormat

DECODE_FAILED = "cannot be decoded (corrupt or truncated)"
MAX_IMAGE_PIXELS = 100_000_000  # 100 megapixels: refused before OpenCV allocates anything
HEAD_BYTES = 64 * 1024  # enough for an MP3's Xing/Info header after an ID3 tag


@dataclass(frozen=True)
class MediaFacts:
    """What the preflight found out about an accepted input (for logs and callers)."""

    kind: str  # what was checked: "image" | "audio" | "video"
    format: str  # the container as sniffed (MediaFormat.name), e.g. "png", "wav", "mp4"
    width: int | None = None  # image / video frame size
    height: int | None = None
    duration_s: float | None = None  # decoded audio length, or the video's length
    sample_rate: int | None = None  # audio
    packets: int | None = None  # video packets demuxed


def check_media(field_key: str, path: Path | str, kind: str, fmt: MediaFormat | None,
                settings: Settings) -> MediaFacts:
    """Check the file at `path`, given for job key `field_key`, as `kind` ("image", "video"
    or "audio"; "audio_2" counts as audio). `fmt` is its format as already sniffed (None:
    in no supported format); it is not sniffed again here. Raises InputError(field_key, reason)."""
    path = Path(path)
    fmt_name = fmt.name if fmt is not None else "unknown"
    if kind == "image":
        return _check_image(field_key, path, fmt_name, settings)
    if kind == "video":
        return _check_video(field_key, path, fmt_name, settings)
    if kind in ("audio", "audio_2"):
        return _check_audio(field_key, path, fmt_name, settings)
    raise ValueError(f"unknown media kind {kind!r}")


# =============================================================================
# shared checks
# =============================================================================

def _check_shape(key: str, width: int, height: int, settings: Settings, what: str) -> None:
    if width <= 0 or height <= 0:
        raise InputError(key, f"{what} has no usable size ({width}x{height})")
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(key, f"{what} is {width}x{height} pixels, more than the limit of "
                              f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels")
    if min(width, height) < settings.min_image_side:
        raise InputError(key, f"{what} is {width}x{height} pixels, too small: each side must be "
                              f"at least {settings.min_image_side} pixels")
    ratio = max(width, height) / min(width, height)
    if ratio > settings.max_aspect_ratio:
        raise InputError(key, f"{what} is {width}x{height} pixels, an aspect ratio of {ratio:.1f}:1; "
                              f"at most {settings.max_aspect_ratio:g}:1 is accepted")


def _too_long(key: str, seconds: float, settings: Settings) -> InputError:
    return InputError(key, f"is longer than the limit of {settings.max_audio_seconds:g} seconds "
                           f"(LONGTALK_MAX_AUDIO_SECONDS)")


def _truncation_tolerance(declared: float) -> float:
    return 0.1 + 0.005 * declared


def _clearly_over(declared: float, limit: float) -> bool:
    """A declared duration far enough over the limit to refuse without decoding."""
    return declared > limit * 1.01 + 0.5


# =============================================================================
# images
# =============================================================================

def _check_image(key: str, path: Path, fmt: str, settings: Settings) -> MediaFacts:
    data = path.read_bytes()
    if fmt == "jpeg":
        size = _jpeg_structure(key, data)
    elif fmt == "png":
        size = _png_structure(key, data)
    elif fmt == "webp":
        size = _webp_structure(key, data)
    else:
        raise InputError(key, f"image {DECODE_FAILED}: not a JPEG, PNG or WebP file")
    if size is not None:  # bound the allocation before decoding
        _check_shape(key, size[0], size[1], settings, "the image")
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise InputError(key, f"image {DECODE_FAILED}")
    height, width = arr.shape[:2]
    _check_shape(key, width, height, settings, "the image")
    return MediaFacts(kind="image", format=fmt, width=width, height=height)


# JPEG markers that may appear between segments (after a scan too): SOFn, DHT, DAC, DQT, DNL,
# DRI, DHP, EXP, APPn, COM, and the standalone SOS / EOI.
_JPEG_SEGMENT_MARKERS = frozenset(range(0xC0, 0xD0)) | frozenset(range(0xDA, 0xF0)) | {0xFE}
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_structure(key: str, data: bytes) -> tuple[int, int] | None:
    """Walk the segments from SOI to EOI (scans included); (width, height) from the frame
    header. A file that ends before EOI is truncated; a byte where a marker must be, or a
    marker that cannot occur there, is corruption (what libjpeg only warns about)."""
    n = len(data)
    if not data.startswith(b"\xff\xd8"):
        raise InputError(key, f"image {DECODE_FAILED}: no JPEG start marker")
    size = None
    seen_scan = False
    pos = 2
    while True:
        if pos >= n:
            raise InputError(key, f"image {DECODE_FAILED}: the JPEG data ends before its end marker")
        if data[pos] != 0xFF:
            raise InputError(key, f"image {DECODE_FAILED}: bytes where a JPEG marker must be")
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            raise InputError(key, f"image {DECODE_FAILED}: the JPEG data ends before its end marker")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI (anything after it, e.g. a motion photo's video, is ignored)
            if not seen_scan:
                raise InputError(key, f"image {DECODE_FAILED}: the JPEG has no image data")
            return size
        if marker not in _JPEG_SEGMENT_MARKERS:
            raise InputError(key, f"image {DECODE_FAILED}: invalid JPEG marker 0x{marker:02X}")
        if pos + 2 > n:
            raise InputError(key, f"image {DECODE_FAILED}: the JPEG data ends inside a segment")
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2 or pos + length > n:
            raise InputError(key, f"image {DECODE_FAILED}: a JPEG segment runs past the end of the file")
        if marker in _JPEG_SOF and length >= 7 and size is None:
            height, width = struct.unpack(">HH", data[pos + 3:pos + 7])
            size = (width, height)
        pos += length
        if marker == 0xDA:  # SOS: entropy-coded data up to the next real marker
            if size is None:
                raise InputError(key, f"image {DECODE_FAILED}: JPEG scan before the frame header")
            seen_scan = True
            while True:
                ff = data.find(b"\xff", pos)
                if ff < 0 or ff + 1 >= n:
                    raise InputError(key, f"image {DECODE_FAILED}: the JPEG data ends before its end marker")
                following = data[ff + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:  # stuffed byte, restart marker
                    pos = ff + 2
                elif following == 0xFF:  # fill byte before a marker
                    pos = ff + 1
                else:
                    pos = ff
                    break


def _png_structure(key: str, data: bytes) -> tuple[int, int]:
    """Every chunk complete with a correct CRC, IHDR first, IEND reached."""
    n = len(data)
    view = memoryview(data)
    pos = 8
    size = None
    while True:
        if pos + 12 > n:
            raise InputError(key, f"image {DECODE_FAILED}: the PNG data ends before its IEND chunk")
        length = int.from_bytes(data[pos:pos + 4], "big")
        ctype = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > n:
            raise InputError(key, f"image {DECODE_FAILED}: the PNG data ends inside a chunk")
        crc = int.from_bytes(data[end - 4:end], "big")
        if zlib.crc32(view[pos + 4:end - 4]) != crc:
            raise InputError(key, f"image {DECODE_FAILED}: PNG chunk {_chunk_name(ctype)} has a "
                                  f"wrong checksum")
        if size is None:
            if ctype != b"IHDR" or length != 13:
                raise InputError(key, f"image {DECODE_FAILED}: the PNG does not start with IHDR")
            width, height = struct.unpack(">II", data[pos + 8:pos + 16])
            size = (width, height)
        if ctype == b"IEND":
            return size
        pos = end


def _chunk_name(ctype: bytes) -> str:
    return ctype.decode("latin-1") if all(65 <= b <= 122 for b in ctype) else repr(ctype)


def _webp_structure(key: str, data: bytes) -> tuple[int, int] | None:
    if len(data) < 30:
        raise InputError(key, f"image {DECODE_FAILED}: the WebP data is too short")
    riff_size = int.from_bytes(data[4:8], "little")
    if len(data) < riff_size + 8:
        raise InputError(key, f"image {DECODE_FAILED}: the WebP data ends before the length "
                              f"its header gives")
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return width, height
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None  # let the decoder decide


# =============================================================================
# audio
# =============================================================================

# containers whose declared duration is exact (counted, not estimated from the bit rate)
_EXACT_DURATION = {"flac", "ogg", "m4a", "mp4", "mov", "webm", "mkv"}


def _check_audio(key: str, path: Path, fmt: str, settings: Settings) -> MediaFacts:
    if fmt == "wav":
        _wav_structure(key, path)
    elif fmt == "ogg":
        _ogg_structure(key, path)
    exact = fmt in _EXACT_DURATION or (fmt == "mp3" and _mp3_has_length_header(path))
    limit = settings.max_audio_seconds
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        raise InputError(key, f"audio {DECODE_FAILED}") from None
    seconds = 0.0
    rate = None
    with container:
        if not container.streams.audio:
            raise InputError(key, "has no audio stream")
        stream = container.streams.audio[0]
        index = stream.index
        single = len(container.streams) == 1
        declared = _declared_seconds(container)
        stream_declared = None
        if stream.duration and stream.time_base:
            stream_declared = float(stream.duration * stream.time_base)
        own = stream_declared if stream_declared is not None else (declared if single else None)
        if exact and own is not None and _clearly_over(own, limit):  # no need to decode it all
            raise _too_long(key, own, settings)
        ends: dict[int, float] = {}
        try:
            for packet in container.demux():
                _note_end(ends, packet)
                if packet.stream_index != stream.index:
                    continue
                if packet.is_corrupt and fmt != "wav":  # (a WAV's last read may be short
                    # by design: its truncation is judged from its header above)
                    raise InputError(key, f"audio {DECODE_FAILED}: a damaged packet at "
                                          f"{seconds:.2f} s")
                for frame in packet.decode():
                    if frame.sample_rate:
                        rate = frame.sample_rate
                        seconds += frame.samples / frame.sample_rate
                if seconds > limit:
                    raise _too_long(key, seconds, settings)
        except InputError:
            raise
        except (av.error.FFmpegError, OSError, ValueError):
            raise InputError(key, f"audio {DECODE_FAILED}: decoding failed after {seconds:.2f} s") from None
        start = (container.start_time or 0) / av.time_base
    if seconds <= 0:
        raise InputError(key, "contains no audio samples (zero length)")
    if seconds * settings.fps < 1:
        raise InputError(key, f"is shorter than one video frame ({1000 // settings.fps} ms): "
                              f"{seconds * 1000:.0f} ms of audio")
    if exact:
        _audio_complete(key, seconds, declared, stream_declared, single, ends, index, start)
    return MediaFacts(kind="audio", format=fmt, duration_s=seconds, sample_rate=rate)


def _audio_complete(key: str, seconds: float, declared: float | None, stream_declared: float | None,
                    single: bool, ends: dict[int, float], index: int, start: float) -> None:
    """Refuse audio that ends well before the length its container states: the track's own
    length when the index gives one; the file's when the track is alone in it; else the
    file's, against where the data of all its streams ends."""
    if stream_declared is not None or (single and declared is not None):
        wanted = stream_declared if stream_declared is not None else declared
        present = seconds
        if index in ends:
            present = min(present, ends[index] - start)
    elif declared is not None and ends:
        wanted, present = declared, max(ends.values()) - start
    else:
        return
    if present < wanted - _truncation_tolerance(wanted):
        raise InputError(key, f"is truncated (corrupt or truncated): the file declares "
                              f"{wanted:.2f} s of audio but only {present:.2f} s can be decoded")


def _wav_structure(key: str, path: Path) -> None:
    """A RIFF/WAVE data chunk must not run past the end of the file (a streamed WAV's
    placeholder sizes, 0 and 0xFFFFFFFF, mean "to the end" and are accepted)."""
    total = path.stat().st_size
    with open(path, "rb") as handle:
        riff = handle.read(12)
        if riff[:4] != b"RIFF":  # RF64/BW64 keep their sizes elsewhere: let the decoder judge
            return
        pos = 12
        while pos + 8 <= total:
            handle.seek(pos)
            header = handle.read(8)
            if len(header) < 8:
                break
            size = int.from_bytes(header[4:8], "little")
            if header[:4] == b"data":
                if size in (0, 0xFFFFFFFF):
                    return
                if pos + 8 + size > total:
                    raise InputError(key, f"is truncated (corrupt or truncated): its header "
                                          f"announces {size} bytes of audio but only "
                                          f"{total - pos - 8} are present")
                return
            pos += 8 + size + (size & 1)
    raise InputError(key, f"audio {DECODE_FAILED}: the WAV file has no data chunk")


def _ogg_structure(key: str, path: Path) -> None:
    """Walk the Ogg pages: the file must end exactly after a complete page that closes its
    stream (end-of-stream flag)."""
    total = path.stat().st_size
    with open(path, "rb") as handle:
        pos = 0
        last_flags = None
        while pos < total:
            handle.seek(pos)
            header = handle.read(27)
            if len(header) < 27 or header[:4] != b"OggS":
                raise InputError(key, f"audio {DECODE_FAILED}: broken Ogg page at byte {pos}")
            segments = handle.read(header[26])
            if len(segments) < header[26]:
                raise InputError(key, "is truncated (corrupt or truncated): the last Ogg page "
                                      "is incomplete")
            end = pos + 27 + len(segments) + sum(segments)
            if end > total:
                raise InputError(key, "is truncated (corrupt or truncated): the last Ogg page "
                                      "is incomplete")
            last_flags = header[5]
            pos = end
    if last_flags is None or not last_flags & 0x04:
        raise InputError(key, "is truncated (corrupt or truncated): the Ogg stream has no "
                              "end-of-stream page")


def _mp3_has_length_header(path: Path) -> bool:
    """Whether an MP3 starts with a Xing/Info/VBRI frame, i.e. states its exact length
    (without one, the declared duration is a bit-rate estimate)."""
    with open(path, "rb") as handle:
        head = handle.read(HEAD_BYTES)
    pos = 0
    if head.startswith(b"ID3") and len(head) >= 10:
        pos = 10 + (head[6] << 21 | head[7] << 14 | head[8] << 7 | head[9])
        if head[5] & 0x10:
            pos += 10
    frame = head[pos:pos + 200]
    return any(tag in frame for tag in (b"Xing", b"Info", b"VBRI"))


def _declared_seconds(container) -> float | None:
    duration = container.duration
    if duration is None or duration <= 0:
        return None
    return duration / av.time_base


def _note_end(ends: dict[int, float], packet) -> None:
    """Remember where each stream's data ends (start + duration of its last packet)."""
    ts = packet.pts if packet.pts is not None else packet.dts
    if ts is None or packet.time_base is None or packet.size == 0:
        return
    end = float((ts + (packet.duration or 0)) * packet.time_base)
    if end > ends.get(packet.stream_index, float("-inf")):
        ends[packet.stream_index] = end


# =============================================================================
# video
# =============================================================================

def _check_video(key: str, path: Path, fmt: str, settings: Settings) -> MediaFacts:
    limit = settings.max_audio_seconds
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        raise InputError(key, f"video {DECODE_FAILED}") from None
    with container:
        if not container.streams.video:
            raise InputError(key, "has no video stream (it contains no video frames)")
        stream = container.streams.video[0]
        if stream.disposition & av.stream.Disposition.attached_pic:
            raise InputError(key, "has no video stream (only a cover picture)")
        ctx = stream.codec_context
        width, height = ctx.width, ctx.height
        if width and height:
            _check_shape(key, width, height, settings, "the video")
        declared = _declared_seconds(container)
        own = None  # the video track's own stated length
        if stream.duration and stream.time_base:
            own = float(stream.duration * stream.time_base)
        elif len(container.streams) == 1:
            own = declared
        if own is not None and _clearly_over(own, limit):
            raise _too_long(key, own, settings)
        start = (container.start_time or 0) / av.time_base
        ends: dict[int, float] = {}
        frames = packets = 0
        try:
            for packet in container.demux():
                _note_end(ends, packet)
                if packet.stream_index != stream.index:
                    continue
                if packet.size:
                    packets += 1
                if packet.is_corrupt:
                    raise InputError(key, f"video {DECODE_FAILED}: a damaged packet")
                for frame in packet.decode():
                    if frames == 0:
                        width, height = frame.width, frame.height
                        # from here on only key frames are decoded (every packet is still parsed)
                        ctx.skip_frame = "NONKEY"
                    frames += 1
                seen = ends.get(stream.index)
                if seen is not None and seen - start > limit + 1.0 / settings.fps:
                    raise _too_long(key, seen - start, settings)
        except InputError:
            raise
        except (av.error.FFmpegError, OSError, ValueError):
            raise InputError(key, f"video {DECODE_FAILED}: decoding failed") from None
        if frames == 0:
            raise InputError(key, "contains no video frames")
        _check_shape(key, width, height, settings, "the video")
        expected = stream.frames or 0
        if expected and packets < expected:
            raise InputError(key, f"is truncated (corrupt or truncated): {packets} of the "
                                  f"{expected} video frames its index lists are present")
        present = (max(ends.values()) - start) if ends else None
        if declared is not None and present is not None and \
                present < declared - _truncation_tolerance(declared):
            raise InputError(key, f"is truncated (corrupt or truncated): the file declares "
                                  f"{declared:.2f} s but its data ends at {present:.2f} s")
        duration = ends[stream.index] - start if stream.index in ends else own
    return MediaFacts(kind="video", format=fmt, width=width, height=height,
                      duration_s=duration, packets=packets)
