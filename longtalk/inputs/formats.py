"""Media formats: what an input is, decided by its content, once.

Sections:
- sniffing: `sniff(head)` names the format from the first bytes (magic numbers, never the
  file name), and `mime_matches` says whether a declared mime type (a data URI's) fits it.
- what each job field accepts: `check_format(field, key, fmt, mime)`.

Staging calls `sniff` once per input (`longtalk.inputs.staging.prepare`) and passes the
MediaFormat on (to the decode checks, into the object key); nothing sniffs it again.
Pure functions, no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import InputError

# =============================================================================
# sniffing
# =============================================================================

SNIFF_BYTES = 4096  # enough for every rule below (the EBML DocType is the furthest one)


@dataclass(frozen=True)
class MediaFormat:
    kind: str  # "image" | "audio" | "video"
    name: str  # "png", "jpeg", "webp", "wav", "mp3", "flac", "ogg", "m4a", "mp4", "mov", "webm", "mkv"
    ext: str  # ".png", ...
    mime: str

    @property
    def label(self) -> str:
        """Human wording for messages: "PNG image", "WAV audio", "MP4 video"."""
        return f"{_LABELS[self.name]} {self.kind}"


PNG = MediaFormat("image", "png", ".png", "image/png")
JPEG = MediaFormat("image", "jpeg", ".jpg", "image/jpeg")
WEBP = MediaFormat("image", "webp", ".webp", "image/webp")
WAV = MediaFormat("audio", "wav", ".wav", "audio/wav")
MP3 = MediaFormat("audio", "mp3", ".mp3", "audio/mpeg")
FLAC = MediaFormat("audio", "flac", ".flac", "audio/flac")
OGG = MediaFormat("audio", "ogg", ".ogg", "audio/ogg")
M4A = MediaFormat("audio", "m4a", ".m4a", "audio/mp4")
MP4 = MediaFormat("video", "mp4", ".mp4", "video/mp4")
MOV = MediaFormat("video", "mov", ".mov", "video/quicktime")
WEBM = MediaFormat("video", "webm", ".webm", "video/webm")
MKV = MediaFormat("video", "mkv", ".mkv", "video/x-matroska")

FORMATS: dict[str, MediaFormat] = {
    f.name: f for f in (PNG, JPEG, WEBP, WAV, MP3, FLAC, OGG, M4A, MP4, MOV, WEBM, MKV)
}

_LABELS = {
    "png": "PNG", "jpeg": "JPEG", "webp": "WebP", "wav": "WAV", "mp3": "MP3", "flac": "FLAC",
    "ogg": "OGG", "m4a": "M4A", "mp4": "MP4", "mov": "MOV", "webm": "WebM", "mkv": "MKV",
}


def sniff(head: bytes) -> MediaFormat | None:
    """The format of a file from its first bytes (up to SNIFF_BYTES are looked at).

    None when the bytes are not one of the accepted formats, or too short to tell.
    """
    head = bytes(head[:SNIFF_BYTES])
    if len(head) < 4:
        return None
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and len(head) >= 12:
        if head[8:12] == b"WAVE":
            return WAV
        if head[8:12] == b"WEBP" and head[:4] == b"RIFF":
            return WEBP
        return None
    if head.startswith(b"fLaC"):
        return FLAC
    if head.startswith(b"OggS"):
        return _sniff_ogg(head)
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return _sniff_ebml(head)
    if len(head) >= 8 and head[4:8] == b"ftyp":
        return _sniff_ftyp(head)
    if len(head) >= 8 and head[4:8] in _QT_ATOMS and _atom_size_ok(head):
        return MOV  # a QuickTime file from before ftyp existed (atom size 0, 1 or >= 8)
    if head.startswith(b"ID3"):
        return _sniff_id3(head)
    if _mp3_frame_length(head, 0) is not None:
        return _sniff_mpeg_frames(head)
    return None


# ---- MP3 --------------------------------------------------------------------

_MP3_BITRATES = {  # kbit/s by (MPEG-1?, layer) ; index 0 (free format) and 15 are refused
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frame_length(head: bytes, pos: int) -> int | None:
    """Length in bytes of the MPEG audio frame whose header starts at pos, or None."""
    if len(head) < pos + 4 or head[pos] != 0xFF or head[pos + 1] & 0xE0 != 0xE0:
        return None
    b1, b2 = head[pos + 1], head[pos + 2]
    version = (b1 >> 3) & 3  # 0: MPEG-2.5, 1: reserved, 2: MPEG-2, 3: MPEG-1
    layer = 4 - ((b1 >> 1) & 3)  # bits 00 are reserved (ADTS AAC uses them): layer 4
    bitrate_index, rate_index, padding = b2 >> 4, (b2 >> 2) & 3, (b2 >> 1) & 1
    if version == 1 or layer == 4 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    mpeg1 = version == 3
    bitrate = _MP3_BITRATES[(mpeg1, layer)][bitrate_index] * 1000
    rate = _MP3_RATES[version][rate_index]
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4
    if layer == 3 and not mpeg1:
        return 72 * bitrate // rate + padding
    return 144 * bitrate // rate + padding


def _sniff_mpeg_frames(head: bytes) -> MediaFormat | None:
    """A frame header at 0; where the next frame's header is inside `head`, it must be valid
    too (a lone 0xFFEx pair is common in random data, two chained headers are not)."""
    length = _mp3_frame_length(head, 0)
    if length is None or length < 4:
        return None
    if len(head) >= length + 4 and _mp3_frame_length(head, length) is None:
        return None
    return MP3


def _sniff_id3(head: bytes) -> MediaFormat | None:
    # "ID3", major version 2..4, revision, flags, 4-byte syncsafe size
    if len(head) < 10 or head[3] not in (2, 3, 4) or head[4] == 0xFF:
        return None
    if any(b & 0x80 for b in head[6:10]):
        return None
    size = 10 + (head[6] << 21 | head[7] << 14 | head[8] << 7 | head[9])
    if head[5] & 0x10:
        size += 10  # footer
    if head[size:size + 4] == b"fLaC":  # an ID3-tagged FLAC file
        return FLAC
    return MP3


# ---- OGG --------------------------------------------------------------------

_OGG_AUDIO_CODECS = (b"OpusHead", b"\x01vorbis", b"\x7fFLAC", b"Speex   ")


def _sniff_ogg(head: bytes) -> MediaFormat | None:
    """OGG with an audio codec in its first packet (Theora and the like are refused)."""
    if len(head) < 27 or head[4] != 0:
        return None
    start = 27 + head[26]  # after the segment table
    packet = head[start:start + 8]
    if any(packet.startswith(codec) for codec in _OGG_AUDIO_CODECS):
        return OGG
    return None


# ---- Matroska / WebM (EBML) -------------------------------------------------

def _ebml_vint(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int, int] | None:
    """(value, next position) of the EBML variable-size integer at pos, or None."""
    if pos >= len(data) or data[pos] == 0:
        return None
    first = data[pos]
    length = 8 - first.bit_length() + 1
    if pos + length > len(data):
        return None
    value = first if keep_marker else first & ((1 << (8 - length)) - 1)
    for b in data[pos + 1:pos + length]:
        value = (value << 8) | b
    return value, pos + length


def _sniff_ebml(head: bytes) -> MediaFormat | None:
    parsed = _ebml_vint(head, 4, keep_marker=False)  # header size (the ID is 4 bytes)
    if parsed is None:
        return None
    header_size, pos = parsed
    end = pos + header_size
    while pos < min(end, len(head)):
        element = _ebml_vint(head, pos, keep_marker=True)
        if element is None:
            return None
        element_id, pos = element
        size = _ebml_vint(head, pos, keep_marker=False)
        if size is None:
            return None
        length, pos = size
        if element_id == 0x4282:  # DocType
            if pos + length > len(head):
                return None
            doctype = head[pos:pos + length].rstrip(b"\x00")
            return {b"webm": WEBM, b"matroska": MKV}.get(doctype)
        pos += length
    if end <= len(head):
        return MKV  # a complete header without DocType: the default is "matroska"
    return None  # truncated before the DocType


# ---- ISO base media (MP4, MOV, M4A) -----------------------------------------

_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}
_IMAGE_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs",
                 b"mif1", b"msf1", b"avif", b"avis", b"avio", b"crx "}
_VIDEO_BRANDS = {b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"iso7", b"iso8",
                 b"iso9", b"mp41", b"mp42", b"mp71", b"avc1", b"M4V ", b"M4VH", b"M4VP",
                 b"f4v ", b"dash", b"mmp4", b"MSNV", b"XAVC", b"3gp4", b"3gp5", b"3gp6",
                 b"3g2a", b"qt  "}
_QT_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}


def _sniff_ftyp(head: bytes) -> MediaFormat | None:
    size = struct.unpack(">I", head[:4])[0]
    if size < 16 or size % 4 or len(head) < 12:
        return None
    major = head[8:12]
    brands = [head[i:i + 4] for i in range(16, min(size, len(head)) - 3, 4)]
    if not all(_printable(b) for b in [major, *brands]):
        return None
    if major in _AUDIO_BRANDS:
        return M4A
    if major == b"qt  ":
        return MOV
    if major in _IMAGE_BRANDS:
        return None
    if major not in _VIDEO_BRANDS:  # an unusual major brand: let the compatible ones decide
        compatible = set(brands)
        if compatible & _AUDIO_BRANDS:
            return M4A
        if b"qt  " in compatible:
            return MOV
        if compatible & _IMAGE_BRANDS and not compatible & _VIDEO_BRANDS:
            return None
    return MP4


def _atom_size_ok(head: bytes) -> bool:
    size = struct.unpack(">I", head[:4])[0]
    return size in (0, 1) or size >= 8  # 0: to the end of the file, 1: a 64-bit size follows


def _printable(brand: bytes) -> bool:
    return len(brand) == 4 and all(32 <= b < 127 for b in brand)


# ---- declared mime types ----------------------------------------------------

GENERIC_MIMES = {"", "application/octet-stream", "binary/octet-stream", "application/binary",
                 "application/unknown"}

_BMFF_MIMES = {"video/mp4", "audio/mp4", "audio/m4a", "audio/x-m4a", "application/mp4",
               "video/x-m4v", "video/quicktime", "audio/aac", "audio/x-aac", "video/3gpp",
               "audio/3gpp"}
_MATROSKA_MIMES = {"video/webm", "audio/webm", "video/x-matroska", "audio/x-matroska",
                   "video/matroska", "audio/matroska", "video/mkv", "application/x-matroska"}

_MIMES: dict[str, set[str]] = {
    "png": {"image/png", "image/x-png", "image/apng"},
    "jpeg": {"image/jpeg", "image/jpg", "image/pjpeg"},
    "webp": {"image/webp"},
    "wav": {"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "audio/x-pn-wav"},
    "mp3": {"audio/mpeg", "audio/mp3", "audio/x-mp3", "audio/mpeg3", "audio/x-mpeg",
            "audio/x-mpeg-3", "audio/mpa"},
    "flac": {"audio/flac", "audio/x-flac"},
    "ogg": {"audio/ogg", "audio/opus", "audio/vorbis", "audio/x-ogg", "application/ogg"},
    "m4a": _BMFF_MIMES,
    "mp4": _BMFF_MIMES,
    "mov": _BMFF_MIMES,
    "webm": _MATROSKA_MIMES,
    "mkv": _MATROSKA_MIMES,
}


def mime_matches(mime: str | None, fmt: MediaFormat) -> bool:
    """Whether a declared mime type fits content sniffed as `fmt`.

    Generic types (application/octet-stream, empty) say nothing and fit everything; close
    relatives fit each other (audio/x-wav for WAV, video/quicktime for MP4, audio/webm for MKV).
    """
    if mime is None:
        return True
    base = mime.split(";", 1)[0].strip().lower()
    return base in GENERIC_MIMES or base in _MIMES[fmt.name]


# =============================================================================
# what each field accepts
# =============================================================================

# canonical field -> (accepted MediaFormat.kind values, how to say so)
EXPECTED: dict[str, tuple[frozenset[str], str]] = {
    "image": (frozenset({"image"}), "an image (JPEG, PNG or WebP)"),
    "video": (frozenset({"video"}), "a video (MP4, MOV, WebM or MKV)"),
    "audio": (frozenset({"audio", "video"}),
              "audio (WAV, MP3, FLAC, OGG or M4A, or a video file with an audio track)"),
}
EXPECTED["audio_2"] = EXPECTED["audio"]


def check_format(field: str, key: str, fmt: MediaFormat | None, mime: str | None = None) -> MediaFormat:
    """The sniffed format, if field `field` accepts it and it fits the declared `mime` (a data
    URI's; None: none declared). InputError naming job key `key` otherwise."""
    kinds, wanted = EXPECTED[field]
    if fmt is None:
        raise InputError(key, f"expected {wanted}, got content in no supported format")
    if fmt.kind not in kinds:
        raise InputError(key, f"expected {wanted}, got {fmt.label}")
    if not mime_matches(mime, fmt):
        raise InputError(key, f"the data URI says {mime} but the content is {fmt.label}")
    return fmt
