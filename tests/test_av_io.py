"""Media helpers: chunked loudness, WAV layout, mux timing from samples."""

import wave

import numpy as np

from longtalk import av_io


def test_loudness_from_chunks_equals_whole_track():
    rng = np.random.default_rng(1)
    speech = (rng.standard_normal(50_000) * 0.05).astype(np.float32)
    track = np.concatenate([speech, np.zeros(20_000, np.float32), speech * 0.5])
    chunks = [track[:333], track[333:40_001], track[40_001:]]  # boundaries inside 640-blocks
    assert abs(av_io.loudness_gain(chunks) - av_io.loudness_gain([track])) < 1e-9
    gain = av_io.loudness_gain([track])
    normalised = track * gain
    active = np.concatenate([normalised[:50_000], normalised[70_000:]])  # the pause does not count
    assert abs(20 * np.log10(np.sqrt(np.mean(active**2))) - (-20)) < 0.2  # speech at -20 dBFS
    assert av_io.loudness_gain([np.zeros(10_000, np.float32)]) == 1.0  # silence stays silence
    loud = np.full(6400, 0.999, np.float32)
    assert np.max(np.abs(loud * av_io.loudness_gain([loud]))) <= 0.99  # never clips


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
