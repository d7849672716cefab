"""Audio analysis (longtalk.audio, on librosa): block RMS, dB, loudness normalisation."""

import numpy as np

from longtalk import audio


def _reference_block_rms(track: np.ndarray, block: int) -> np.ndarray:
    """The plain definition: non-overlapping blocks, float64, a partial last block dropped."""
    n = track.size // block
    x = track[: n * block].reshape(n, block).astype(np.float64)
    return np.sqrt(np.mean(x * x, axis=1))


def test_block_rms_is_the_plain_definition_across_any_chunking():
    rng = np.random.default_rng(3)
    track = (rng.standard_normal(640 * 50 + 123) * np.repeat(rng.uniform(0, 0.5, 51), 640)[:640 * 50 + 123])
    track = track.astype(np.float32)
    whole = audio.block_rms([track], 640)
    np.testing.assert_allclose(whole, _reference_block_rms(track, 640), rtol=1e-12, atol=0)
    expected = audio.frame_rms(track, 640)  # librosa, center=False, hop = frame length
    assert np.array_equal(whole, expected)
    cuts = np.sort(rng.integers(0, track.size, 40))
    assert np.array_equal(audio.block_rms(np.split(track, cuts), 640), expected)
    tiny = [track[i:i + 100] for i in range(0, track.size, 100)]  # chunks smaller than a block
    assert np.array_equal(audio.block_rms(tiny, 640), expected)
    assert audio.block_rms([track[:639]], 640).size == 0 and audio.block_rms([], 640).size == 0


def test_block_rms_works_in_bounded_pieces(monkeypatch):
    monkeypatch.setattr(audio, "_PIECE_BLOCKS", 3)  # many pieces per chunk
    track = np.random.default_rng(4).standard_normal(640 * 20 + 5).astype(np.float32)
    assert np.array_equal(audio.block_rms([track[:3000], track[3000:]], 640), audio.frame_rms(track, 640))


def test_db_scale():
    assert np.allclose(audio.to_db(np.array([1.0, 0.1, 0.01])), [0.0, -20.0, -40.0])
    assert audio.to_db(np.zeros(1))[0] == audio.SILENCE_DB
    assert abs(audio.from_db(-20.0) - 0.1) < 1e-12


def test_loudness_from_chunks_equals_whole_track():
    rng = np.random.default_rng(1)
    speech = (rng.standard_normal(50_000) * 0.05).astype(np.float32)
    track = np.concatenate([speech, np.zeros(20_000, np.float32), speech * 0.5])
    chunks = [track[:333], track[333:40_001], track[40_001:]]  # boundaries inside 640-blocks
    assert abs(audio.loudness_gain(chunks) - audio.loudness_gain([track])) < 1e-9
    gain = audio.loudness_gain([track])
    normalised = track * gain
    active = np.concatenate([normalised[:50_000], normalised[70_000:]])  # the pause does not count
    assert abs(20 * np.log10(np.sqrt(np.mean(active**2))) - (-20)) < 0.2  # speech at -20 dBFS
    assert audio.loudness_gain([np.zeros(10_000, np.float32)]) == 1.0  # silence stays silence
    loud = np.full(6400, 0.999, np.float32)
    assert np.max(np.abs(loud * audio.loudness_gain([loud]))) <= 0.99  # never clips
