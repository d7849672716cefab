"""Format sniffing on real files made by the ffmpeg binary, plus garbage and truncations."""

from __future__ import annotations

import random
import struct
import subprocess
from pathlib import Path

import ffmpeg
import imageio_ffmpeg
import pytest

from longtalk.inputs.formats import FORMATS, SNIFF_BYTES, mime_matches, sniff

_SINE = "sine=frequency=440:duration=1"  # lavfi sources
_PICTURE = "testsrc=size=64x64:rate=25"
_H264 = {"t": 1, "c:v": "libx264", "pix_fmt": "yuv420p"}
_VP8 = {"t": 1, "c:v": "libvpx", "b:v": "200k"}

# file name -> (lavfi sources, ffmpeg output options, expected format name)
SAMPLES: dict[str, tuple[list[str], dict, str]] = {
    "tone.wav": ([_SINE], {"c:a": "pcm_s16le"}, "wav"),
    "tone.mp3": ([_SINE], {"c:a": "libmp3lame"}, "mp3"),  # with an ID3v2 tag
    "tone-bare.mp3": ([_SINE], {"c:a": "libmp3lame", "id3v2_version": 0, "write_xing": 0},
                      "mp3"),  # frame sync only
    "tone.flac": ([_SINE], {"c:a": "flac"}, "flac"),
    "tone-opus.ogg": ([_SINE], {"c:a": "libopus", "f": "ogg"}, "ogg"),
    "tone-vorbis.ogg": ([_SINE], {"c:a": "libvorbis", "f": "ogg"}, "ogg"),
    "tone.m4a": ([_SINE], {"c:a": "aac"}, "m4a"),
    "tone-audio-only.mp4": ([_SINE], {"c:a": "aac"}, "mp4"),
    "clip.mp4": ([_PICTURE], _H264, "mp4"),
    "talk.mp4": ([_PICTURE, _SINE], {**_H264, "c:a": "aac", "shortest": None}, "mp4"),
    "clip.mov": ([_PICTURE], _H264, "mov"),
    "clip.webm": ([_PICTURE], _VP8, "webm"),
    "talk.webm": ([_PICTURE, _SINE], {**_VP8, "c:a": "libopus", "shortest": None}, "webm"),
    "clip.mkv": ([_PICTURE], _H264, "mkv"),
    "still.png": ([_PICTURE], {"frames:v": 1}, "png"),
    "still.jpg": ([_PICTURE], {"frames:v": 1}, "jpeg"),
    "still.webp": ([_PICTURE], {"frames:v": 1, "c:v": "libwebp"}, "webp"),
}


def generate_samples(folder: Path, names=None) -> dict[str, Path]:
    """Make the sample files (all, or the named ones) in `folder` with the ffmpeg binary."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names or SAMPLES:
        sources, options, _ = SAMPLES[name]
        path = folder / name
        if not path.exists():
            inputs = [ffmpeg.input(src, f="lavfi") for src in sources]
            cmd = (ffmpeg.output(*inputs, str(path), **options).global_args("-hide_banner", "-loglevel", "error")
                   .overwrite_output().compile(cmd=imageio_ffmpeg.get_ffmpeg_exe()))
            subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        out[name] = path
    return out


@pytest.fixture(scope="session")
def samples(tmp_path_factory) -> dict[str, Path]:
    return generate_samples(tmp_path_factory.mktemp("media-samples"))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sniff_real_files(samples, name):
    expected = FORMATS[SAMPLES[name][2]]
    data = samples[name].read_bytes()
    assert sniff(data[:SNIFF_BYTES]) == expected
    assert sniff(data[:64]) == expected  # the first 64 bytes are enough for these files
    assert sniff(data) == expected  # longer input is fine: only the head is looked at


def test_kinds_and_extensions():
    assert {f.kind for f in FORMATS.values()} == {"image", "audio", "video"}
    assert FORMATS["m4a"].kind == "audio" and FORMATS["mp4"].kind == "video"
    assert FORMATS["jpeg"].ext == ".jpg" and FORMATS["mkv"].mime == "video/x-matroska"
    assert FORMATS["wav"].label == "WAV audio" and FORMATS["webp"].label == "WebP image"
    assert all(f.ext.startswith(".") and "/" in f.mime for f in FORMATS.values())


def test_file_name_does_not_matter(samples, tmp_path):
    # a PNG saved as .wav is still a PNG
    renamed = tmp_path / "voice.wav"
    renamed.write_bytes(samples["still.png"].read_bytes())
    assert sniff(renamed.read_bytes()).name == "png"


@pytest.mark.parametrize("data", [
    b"",
    b"\x00",
    b"\x00" * 4096,
    b"hello, this is plain text and not media at all",
    b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg'/>",
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00",  # GIF is not accepted
    b"BM" + b"\x00" * 60,  # BMP
    b"RIFF\x24\x00\x00\x00AVI LIST",  # AVI is not accepted
    b"%PDF-1.7\n",
    b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",  # HEIF image
    b"\x00\x00\x00\x18ftypavif\x00\x00\x00\x00avifmif1",  # AVIF image
    b"\xff\xf1\x50\x80\x02\x1f\xfc" * 10,  # ADTS AAC: sync word with layer bits 00
    b"\xff\xfb\x90\x64" + b"\x00" * 4092,  # one MP3 frame header, garbage where the next should be
    b"OggS\x00\x02" + b"\x00" * 20 + b"\x01\x1e\x80theora" + b"\x00" * 40,  # Ogg Theora video
    b"\x1a\x45\xdf\xa3\x8f\x42\x86\x81\x01\x42\x82\x84abcd\x42\x87\x81\x02",  # EBML, DocType abcd
])
def test_not_media(data):
    assert sniff(data) is None


@pytest.mark.parametrize("name", ["still.png", "still.jpg", "still.webp", "tone.wav", "tone.mp3",
                                  "tone.flac", "tone-opus.ogg", "tone.m4a", "clip.mp4",
                                  "clip.webm", "clip.mkv"])
def test_truncated_heads_are_not_recognised(samples, name):
    data = samples[name].read_bytes()
    for n in range(0, 4):
        assert sniff(data[:n]) is None, n


@pytest.mark.parametrize("data", [
    b"\x89PNG\r\n",  # cut inside the signature
    b"RIFF\x00\x00\x00\x00WAV",
    b"RIFF\x00\x00\x00\x00WE",
    b"OggS\x00\x02\x00\x00",
    b"\x1a\x45\xdf\xa3",  # EBML magic only
    b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01",  # EBML header cut before its DocType
    b"\x00\x00\x00\x20ftyp",
    b"\x00\x00\x00\x20ftypis",
    b"ID3\x04",
    b"\xff\xd8",
])
def test_truncated_bytes(data):
    assert sniff(data) is None


def test_cut_webm_header_before_doctype(samples):
    data = samples["clip.webm"].read_bytes()
    doctype_at = data.index(b"\x42\x82")
    assert sniff(data[:doctype_at]) is None
    assert sniff(data[:doctype_at + 3]) is None  # DocType element cut inside its value
    assert sniff(data[:doctype_at + 7]).name == "webm"


def test_random_bytes_are_not_media():
    rng = random.Random(1234)
    for _ in range(2000):
        assert sniff(rng.randbytes(rng.choice([16, 64, 4096]))) is None


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x02\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body


@pytest.mark.parametrize("head, expected", [
    (_ftyp(b"M4A ", b"M4A ", b"mp42", b"isom"), "m4a"),
    (_ftyp(b"M4B ", b"M4B "), "m4a"),
    (_ftyp(b"qt  ", b"qt  "), "mov"),
    (_ftyp(b"isom", b"isom", b"iso2", b"avc1", b"mp41"), "mp4"),
    (_ftyp(b"mp42", b"mp42", b"M4A "), "mp4"),  # the major brand decides
    (_ftyp(b"iso5", b"iso5", b"dash"), "mp4"),
    (_ftyp(b"zzzz", b"M4A ", b"isom"), "m4a"),  # unusual major brand: compatible ones decide
    (_ftyp(b"zzzz", b"qt  "), "mov"),
    (_ftyp(b"zzzz", b"mif1", b"heic"), None),
    (b"\x00\x00\x00\x08wide\x00\x00\x00\x10mdat", "mov"),  # QuickTime without ftyp
    (b"\x00\x00\x00\x14ftyp\xff\xfe\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00", None),  # not ASCII
])
def test_iso_bmff_brands(head, expected):
    fmt = sniff(head)
    assert (fmt.name if fmt else None) == expected


def test_ebml_doctype_decides_webm_or_mkv(samples):
    webm = samples["clip.webm"].read_bytes()[:SNIFF_BYTES]
    mkv = samples["clip.mkv"].read_bytes()[:SNIFF_BYTES]
    assert webm.index(b"webm") < 64 and b"matroska" in mkv
    assert sniff(webm).name == "webm" and sniff(mkv).name == "mkv"
    # a complete EBML header without DocType means matroska (the default)
    assert sniff(b"\x1a\x45\xdf\xa3\x84\x42\x86\x81\x01").name == "mkv"


def test_id3_tagged_flac(samples):
    flac = samples["tone.flac"].read_bytes()
    tagged = b"ID3\x04\x00\x00\x00\x00\x00\x0a" + b"\x00" * 10 + flac
    assert sniff(tagged).name == "flac"
    assert sniff(b"ID3\x04\x00\x00\x00\x00\x7f\x7f" + b"\x00" * 100).name == "mp3"  # big tag


@pytest.mark.parametrize("mime, name, ok", [
    (None, "png", True),
    ("", "png", True),
    ("application/octet-stream", "mp3", True),
    ("image/png", "png", True),
    ("IMAGE/PNG", "png", True),
    ("image/png", "jpeg", False),
    ("image/jpg", "jpeg", True),
    ("audio/wav", "png", False),
    ("audio/x-wav", "wav", True),
    ("audio/wave", "wav", True),
    ("audio/mpeg", "mp3", True),
    ("audio/mpeg", "wav", False),
    ("audio/mp4", "m4a", True),
    ("video/mp4", "m4a", True),
    ("audio/mp4", "mp4", True),
    ("video/quicktime", "mp4", True),
    ("audio/webm", "webm", True),
    ("video/webm", "mkv", True),
    ("video/webm", "mp4", False),
    ("audio/ogg; codecs=opus", "ogg", True),
    ("audio/flac", "flac", True),
    ("image/webp", "webp", True),
    ("image/gif", "png", False),
])
def test_mime_matches(mime, name, ok):
    assert mime_matches(mime, FORMATS[name]) is ok
