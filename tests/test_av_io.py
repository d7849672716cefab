"""Media helpers: WAV layout, PNG encoding, ffmpeg commands built with ffmpeg-python."""

import io
import os
import shutil
import struct
import wave

import cv2
import ffmpeg
import numpy as np
import pytest

from longtalk import av_io, ffmpeg_bin
from longtalk.settings import Settings


def test_wav16_written_in_chunks_maps_byte_ranges_to_samples(tmp_path):
    samples = np.linspace(-0.5, 0.5, 10_000, dtype=np.float32)
    path = tmp_path / "t.wav"
    av_io.write_wav16(path, [samples[:1234], samples[1234:]], gain=1.0)
    with wave.open(str(path)) as w:
        assert (w.getnframes(), w.getframerate(), w.getsampwidth()) == (10_000, 16_000, 2)
    offset, length = av_io.wav16_range(5000, 100)
    data = path.read_bytes()[offset:offset + length]
    assert np.allclose(av_io.pcm16_to_float(data, 100), samples[5000:5100], atol=1e-4)
    padded = av_io.pcm16_to_float(data[:20], 100)  # past the end: silence
    assert padded.size == 100 and not padded[10:].any()


def test_wav16_bytes_are_the_file_write_wav16_writes(tmp_path):
    samples = np.concatenate([np.linspace(-1.5, 1.5, 7000), np.zeros(100)]).astype(np.float32)  # clipped ends
    path = tmp_path / "t.wav"
    av_io.write_wav16(path, samples)
    data = av_io.wav16_bytes(samples)
    assert data == path.read_bytes()
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth(), w.getnframes()) == (1, 16_000, 2, 7100)
    pcm = np.frombuffer(data[av_io.WAV_HEADER_BYTES:], "<i2")
    assert pcm[0] == -32767 and pcm[6999] == 32767 and not pcm[7000:].any()


@pytest.mark.parametrize("channels", [3, 4])
def test_png_keeps_rgb_and_rgba(channels):
    rng = np.random.default_rng(channels)
    image = rng.integers(0, 256, (21, 34, channels), dtype=np.uint8)
    data = av_io.encode_png(image)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    back = cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGBA if channels == 4 else cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, image)
    if channels == 3:
        assert np.array_equal(av_io.decode_png(data), image)


def test_ffmpeg_commands_are_built_quiet_for_the_project_binary(tmp_path):
    cmd = av_io.ffmpeg_command(ffmpeg.input("in.wav").output("out.m4a", acodec="aac").overwrite_output())
    assert cmd[0] == ffmpeg_bin.exe()
    assert cmd[1:5] == ["-i", "in.wav", "-acodec", "aac"]
    assert {"-hide_banner", "-nostdin", "-y"} <= set(cmd) and cmd[cmd.index("-loglevel") + 1] == "error"
    missing = tmp_path / "missing.wav"
    with pytest.raises(RuntimeError, match=r"(?s)ffmpeg failed \(\d+\): .*missing\.wav"):  # ffmpeg's reason names the file
        av_io.run_ffmpeg(ffmpeg.input(str(missing)).output(str(tmp_path / "out.wav")))


def _stereo_wav(path, seconds: float, rate: int = 44_100) -> np.ndarray:
    """A 440 Hz tone at 0.5 on the left and 0.25 on the right, 16-bit."""
    t = np.arange(int(seconds * rate)) / rate
    tone = np.sin(2 * np.pi * 440 * t)
    frames = np.stack([0.5 * tone, 0.25 * tone], axis=1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((frames * 32767).astype("<i2").tobytes())
    return tone


def test_audio_is_decoded_to_16k_mono_in_chunks(tmp_path, monkeypatch):
    """Any rate and layout -> float32 mono at 16 kHz, the channels mixed as libswresample
    mixes them ((L + R) / sqrt 2, as PyAV's resampler did), in chunks of DECODE_CHUNK_SAMPLES
    (the last one shorter), nothing lost at the chunk boundaries."""
    monkeypatch.setattr(av_io, "DECODE_CHUNK_SAMPLES", 16_000)
    path = tmp_path / "stereo.wav"
    _stereo_wav(path, 3.5)
    chunks = av_io.decode_audio_chunks(path, "wav_path")
    assert [c.size for c in chunks] == [16_000, 16_000, 16_000, 8_000]
    assert all(c.dtype == np.float32 for c in chunks)
    samples = np.concatenate(chunks)
    middle = samples[1000:-1000]  # away from the resampler's edges
    assert abs(float(np.max(np.abs(middle))) - 0.75 / np.sqrt(2)) < 0.01
    spectrum = np.abs(np.fft.rfft(middle))
    assert abs(np.argmax(spectrum) * 16_000 / middle.size - 440) < 2


def test_audio_decode_errors_name_the_field_not_the_path(tmp_path):
    from longtalk.errors import InputError

    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not audio" * 500)
    silent = tmp_path / "silent.mp4"  # a video without an audio stream
    av_io.encode_clip(np.zeros((5, 32, 32, 3), np.uint8), silent, 25)
    long = tmp_path / "long.wav"
    _stereo_wav(long, 3.0, rate=8000)
    unknown = tmp_path / "unknown.wav"  # a WAV whose codec tag no decoder knows: opens, cannot decode
    pcm = np.zeros(1600, "<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 0x9999, 1, 16_000, 32_000, 2, 16)
    unknown.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
                        + b"data" + struct.pack("<I", len(pcm)) + pcm)
    cases = [(junk, None, "cannot be decoded as audio"), (silent, None, "has no audio stream"),
             (long, 2.0, "longer than the limit of 2 seconds"),
             (unknown, None, "cannot be decoded as audio (")]  # with ffmpeg's reason, whatever its words
    for path, limit, reason in cases:
        with pytest.raises(InputError) as err:
            av_io.decode_audio_chunks(path, "wav_url", limit)
        assert err.value.field == "wav_url" and reason in str(err.value), err.value
        assert str(tmp_path) not in str(err.value)
        assert not str(err.value).endswith("(ffmpeg failed)"), err.value  # ffmpeg said why: it is quoted
    assert sum(c.size for c in av_io.decode_audio_chunks(long, "wav_url", 3.5)) == 48_000


def test_ffmpeg_reason_is_its_first_error_line_without_the_path():
    """The cause (ffmpeg's first line), not what failed because of it (the lines after); the
    file's path and the [component @ address] tag left out; shortened; "ffmpeg failed" when
    ffmpeg said nothing."""
    stderr = (b"\n[wav @ 0x55d0c0ffee00] Some cause in /tmp/x/in.wav\n"
              b"Error opening output files: Invalid argument\n")
    assert av_io._ffmpeg_reason(stderr, "/tmp/x/in.wav") == "Some cause in the file"
    assert av_io._ffmpeg_reason(b"x" * 500, "in.wav") == "x" * 200
    assert av_io._ffmpeg_reason(b" \n\n", "in.wav") == "ffmpeg failed"


# ---- which ffmpeg runs ---------------------------------------------------------------------

@pytest.fixture
def trap_on_path(tmp_path, monkeypatch):
    """An `ffmpeg` first on PATH that leaves a mark and fails when it is run (as a system
    ffmpeg of another version would be found); the process's selection restored afterwards."""
    folder = tmp_path / "bin"
    folder.mkdir()
    trap = folder / "ffmpeg"
    mark = tmp_path / "trap-was-run"
    trap.write_text(f"#!/bin/sh\ntouch '{mark}'\nexit 1\n")
    trap.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(ffmpeg_bin, "_selected", None)
    assert shutil.which("ffmpeg") == str(trap)  # an ffmpeg found on PATH would be this one
    return mark


def test_the_default_ffmpeg_is_the_wheels_not_the_one_on_path(tmp_path, trap_on_path):
    import imageio_ffmpeg

    wheel = imageio_ffmpeg.get_ffmpeg_exe()
    assert ffmpeg_bin.exe() == wheel
    assert av_io.ffmpeg_command(ffmpeg.input("in.wav").output("out.wav"))[0] == wheel
    assert ffmpeg_bin.use(Settings.from_env({}).ffmpeg) == wheel
    path = tmp_path / "tone.wav"
    _stereo_wav(path, 1.0)
    assert sum(c.size for c in av_io.decode_audio_chunks(path, "wav_path")) == 16_000
    av_io.encode_final_audio([path], tmp_path / "out.m4a", 25, 25)
    assert (tmp_path / "out.m4a").stat().st_size > 0
    assert not trap_on_path.exists()


def test_longtalk_ffmpeg_chooses_the_binary(tmp_path, trap_on_path, monkeypatch):
    """A path or a name on PATH (here both lead to the wheel's binary, under another name),
    checked when the settings are read; then the one every ffmpeg command runs."""
    import imageio_ffmpeg

    wheel = imageio_ffmpeg.get_ffmpeg_exe()
    settings = Settings.from_env({"LONGTALK_FFMPEG": wheel})
    assert ffmpeg_bin.use(settings.ffmpeg) == wheel
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "ffmpeg-pinned").symlink_to(wheel)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    settings = Settings.from_env({"LONGTALK_FFMPEG": "ffmpeg-pinned"})
    assert ffmpeg_bin.use(settings.ffmpeg) == str(folder / "ffmpeg-pinned")
    assert av_io.ffmpeg_command(ffmpeg.input("in.wav").output("out.wav"))[0] == str(folder / "ffmpeg-pinned")
    path = tmp_path / "tone.wav"
    _stereo_wav(path, 1.0)
    assert sum(c.size for c in av_io.decode_audio_chunks(path, "wav_path")) == 16_000
    assert not trap_on_path.exists()


def test_longtalk_ffmpeg_that_is_not_an_ffmpeg_is_refused_at_start(tmp_path, trap_on_path):
    """Refused when the settings are read, naming the setting and why: not there, not
    executable, not on PATH, or a program that does not answer -version as ffmpeg."""
    plain = tmp_path / "plain-file"
    plain.write_text("not a program")
    other = tmp_path / "other-program"
    other.write_text("#!/bin/sh\necho 'hello'\n")
    other.chmod(0o755)
    cases = [(str(tmp_path / "absent" / "ffmpeg"), "is not an executable file"),
             (str(plain), "is not an executable file"),
             ("no-such-ffmpeg-name", "is not an executable file or a name on PATH"),
             (str(other), "is not ffmpeg"),
             ("ffmpeg", "is not ffmpeg")]  # the name finds the failing ffmpeg first on PATH
    for value, reason in cases:
        with pytest.raises(ValueError) as err:
            Settings.from_env({"LONGTALK_FFMPEG": value})
        assert str(err.value).startswith("LONGTALK_FFMPEG: ") and reason in str(err.value), err.value
    assert ffmpeg_bin.exe() == ffmpeg_bin.wheel_ffmpeg()  # nothing was selected
