"""Media helpers: WAV layout, PNG encoding, ffmpeg commands built with ffmpeg-python."""

import io
import wave

import cv2
import ffmpeg
import numpy as np
import pytest

from longtalk import av_io


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
    assert cmd[0] == av_io.ffmpeg_exe()
    assert cmd[1:5] == ["-i", "in.wav", "-acodec", "aac"]
    assert {"-hide_banner", "-nostdin", "-y"} <= set(cmd) and cmd[cmd.index("-loglevel") + 1] == "error"
    missing = tmp_path / "missing.wav"
    with pytest.raises(RuntimeError, match=r"(?s)ffmpeg failed \(\d+\): .*missing\.wav"):  # ffmpeg's reason names the file
        av_io.run_ffmpeg(ffmpeg.input(str(missing)).output(str(tmp_path / "out.wav")))
