"""Audio analysis (longtalk.audio, librosa's definitions in numpy, checked against librosa
here): block RMS, dB, loudness normalisation, and the normalised WAV ingest stores (streamed,
the same bytes as over the track in memory)."""

import wave
from pathlib import Path

import numpy as np
import pytest

from longtalk import audio, av_io
from longtalk.errors import InputError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


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
    expected = audio.frame_rms(track, 640)  # center=False, hop = frame length
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


@pytest.mark.parametrize("frame_length,hop,center", [(640, None, False), (640, 160, True), (400, 160, False),
                                                     (1024, 256, True), (641, 641, True)])
def test_frame_rms_is_librosas(frame_length, hop, center):
    """The same frames (count, padding, centring) and values as librosa.feature.rms."""
    import librosa

    rng = np.random.default_rng(frame_length + (hop or 0))
    for n in (frame_length - 1, frame_length, 16_000 + 37):
        y = (rng.standard_normal(n) * 0.2).astype(np.float32)
        ours = audio.frame_rms(y, frame_length, hop, center=center)
        if not center and n < frame_length:
            assert ours.size == 0
            continue
        theirs = librosa.feature.rms(y=y, frame_length=frame_length, hop_length=hop or frame_length,
                                     center=center, dtype=np.float64)[0]
        assert ours.shape == theirs.shape and ours.dtype == np.float64
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)
    ints = np.arange(-3000, 3000, 7, dtype=np.int16)  # integers are measured as floats
    np.testing.assert_allclose(audio.frame_rms(ints, 256), librosa.feature.rms(
        y=ints.astype(np.float64), frame_length=256, hop_length=256, center=False, dtype=np.float64)[0], rtol=1e-12)


def test_db_scale_is_librosas():
    import librosa

    amplitude = np.concatenate([[0.0, 1e-12, 1e-10, 1e-3, 0.5, 1.0, 2.0], np.random.default_rng(5).uniform(0, 1, 50)])
    np.testing.assert_allclose(audio.to_db(amplitude), librosa.amplitude_to_db(
        amplitude, ref=1.0, amin=10 ** (audio.SILENCE_DB / 20), top_db=None), rtol=1e-12, atol=1e-9)
    db = np.linspace(-120, 6, 64)
    np.testing.assert_allclose(audio.from_db(db), librosa.db_to_amplitude(db, ref=1.0), rtol=1e-12)
    assert abs(audio.from_db(-20.0) - librosa.db_to_amplitude(-20.0)) < 1e-15


def test_a_cpu_worker_does_not_load_librosa():
    """Its imports (scipy, numba, scikit-learn) would cost every CPU worker 200 MB."""
    import subprocess
    import sys

    code = ("import sys, worker, activities.cpu, longtalk.audio, longtalk.backends.preview, longtalk.quality; "
            "print(sorted(m for m in ('librosa', 'numba', 'scipy', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=EXAMPLES.parent, capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip()
    assert out == "[]"


def test_db_scale():
    assert np.allclose(audio.to_db(np.array([1.0, 0.1, 0.01])), [0.0, -20.0, -40.0])
    assert audio.to_db(np.zeros(1))[0] == audio.SILENCE_DB
    assert abs(audio.from_db(-20.0) - 0.1) < 1e-12


def _whole_track_gain(track: np.ndarray) -> float:
    """loudness_gain as it was computed over the whole track in memory (main at 144beed):
    the RMS of every 40 ms block of the array, the mean square of the blocks above -50 dBFS,
    and the track's peak."""
    rms = audio.frame_rms(track, 640)
    active = rms[audio.to_db(rms) > -50.0]
    level = float(np.sqrt(np.mean(active**2)))
    return min(float(audio.from_db(-20.0)) / level, 0.99 / float(np.max(np.abs(track))))


def test_loudness_from_chunks_equals_whole_track():
    rng = np.random.default_rng(1)
    speech = (rng.standard_normal(50_000) * 0.05).astype(np.float32)
    track = np.concatenate([speech, np.zeros(20_000, np.float32), speech * 0.5])
    chunks = [track[:333], track[333:40_001], track[40_001:]]  # boundaries inside 640-blocks
    gain = _whole_track_gain(track)
    assert audio.loudness_gain(chunks) == gain == audio.loudness_gain([track])  # to the bit
    assert audio.loudness_gain(iter(chunks)) == gain  # a stream, read once
    normalised = track * gain
    active = np.concatenate([normalised[:50_000], normalised[70_000:]])  # the pause does not count
    assert abs(20 * np.log10(np.sqrt(np.mean(active**2))) - (-20)) < 0.2  # speech at -20 dBFS
    assert audio.loudness_gain([np.zeros(10_000, np.float32)]) == 1.0  # silence stays silence
    loud = np.full(6400, 0.999, np.float32)
    assert np.max(np.abs(loud * audio.loudness_gain([loud]))) <= 0.99  # never clips


def _speech_like_wav(path: Path, burst: float = 0.45) -> Path:
    """44.1 kHz stereo 16-bit, 40 s: silence, quiet noise, a burst (loud: the peak, not the
    level, sets the gain), silence again, then louder noise."""
    rate = 44_100
    rng = np.random.default_rng(18)

    def noise(seconds: float, scale: float) -> np.ndarray:
        return np.clip(rng.standard_normal(int(seconds * rate)) * scale, -1, 1)

    mono = np.concatenate([np.zeros(5 * rate), noise(12, 0.02), noise(1.5, burst), np.zeros(int(6.5 * rate)),
                           noise(15, 0.05)])
    frames = np.stack([mono, 0.6 * mono], axis=1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((frames * 32767).round().astype("<i2").tobytes())
    return path


@pytest.mark.parametrize("source, bound", [("speech.ogg", "peak"), ("loud_and_silent.wav", "peak"),
                                           ("quiet_and_silent.wav", "level")])
def test_streamed_ingest_wav_is_byte_for_byte_the_in_memory_one(tmp_path, monkeypatch, source, bound):
    """What ingest stores (write_normalised_wav16: decoded once, measured as it streams,
    spooled to disk, written from the spool) is the file the whole track in memory gave:
    renders in flight and stored windows read byte ranges of it. Chunks of 10,007 samples,
    so the track crosses many chunk and 40 ms block boundaries. Where the level sets the gain,
    a running sum of the blocks' squares would differ in the last bits (and so would a few
    samples): the mean is taken over every block's RMS, as before."""
    if source == "speech.ogg":
        src = EXAMPLES / source
    else:
        src = _speech_like_wav(tmp_path / source, 0.45 if source.startswith("loud") else 0.05)
    track = av_io.decode_audio_16k(src, "audio")  # the whole track, one array
    gain = _whole_track_gain(track)
    assert (gain == 0.99 / float(np.max(np.abs(track)))) == (bound == "peak")
    expected = av_io.wav16_bytes(track, gain)
    monkeypatch.setattr(av_io, "DECODE_CHUNK_SAMPLES", 10_007)
    dest = tmp_path / "track_1.wav"
    count = audio.write_normalised_wav16(src, dest, "wav_path", 3600)
    assert count == track.size > 20 * 10_007
    assert dest.read_bytes() == expected
    assert expected != av_io.wav16_bytes(track)  # normalised: not the decoded level
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"track_1.wav", source} - {"speech.ogg"})


def test_streamed_ingest_errors_name_the_field_and_leave_no_spool(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not audio" * 500)
    empty = tmp_path / "empty.wav"
    av_io.write_wav16(empty, np.zeros(0, np.float32))
    long = _speech_like_wav(tmp_path / "long.wav")
    for src, limit, reason in [(junk, None, "cannot be decoded as audio"), (empty, None, "contains no audio samples"),
                               (long, 30, "is longer than the limit of 30 seconds")]:
        out = tmp_path / "out"
        out.mkdir()
        with pytest.raises(InputError) as err:
            audio.write_normalised_wav16(src, out / "track_1.wav", "wav_url", limit)
        assert err.value.field == "wav_url" and reason in str(err.value), err.value
        assert not list(out.glob("*.f32")), src  # the spool is removed
        out.rename(tmp_path / f"out-{src.stem}")
