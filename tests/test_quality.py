"""The per-window quality measurement (longtalk.quality) on real preview renders of the bundled
examples: clean chains raise no alarm in any mode, and each rehearsed fault is caught."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from longtalk.backends.faulty import FaultyBackend
from longtalk.backends.preview import PreviewBackend
from longtalk.quality import QualityBounds, ReferenceStats, WindowQuality, classify, measure_window
from longtalk.testing.quality_chains import FPS, M, MODES, S, SPF, W, example, render_chain

SMALL = (256, 256)  # the fault chains are rendered smaller: same behaviour, a quarter of the time


def measure(ex, job, frames, stats=None) -> WindowQuality:
    reference = ex.source_frames(job.index) if ex.v2v else ex.reference
    return measure_window(frames, M, reference, job.audio, FPS, stats)


def chain_quality(ex, windows: int, spec: str = "", **kw) -> list[WindowQuality]:
    stats = None if ex.v2v else ReferenceStats.of(ex.reference, len(ex.tracks))
    backend = FaultyBackend(PreviewBackend(), spec)
    return [measure(ex, job, frames, stats) for job, frames in render_chain(backend, ex, windows, **kw)]


@pytest.fixture(scope="module")
def small():
    return example("i2v-single", SMALL)


@pytest.fixture(scope="module")
def clean_pair(small):
    """Windows 0 and 1 of the small single-speaker example: (jobs, frames)."""
    got = list(render_chain(PreviewBackend(), small, 2))
    return [j for j, _ in got], [f for _, f in got]


# ----------------------------------------------------------------------------- clean renders


@pytest.mark.parametrize("mode", MODES)
def test_clean_windows_raise_no_alarm(mode):
    ex = example(mode)
    for q in chain_quality(ex, 3):
        verdict = classify(q)
        assert verdict.ok and not verdict.notes, (mode, verdict, q)
        assert q.face_found == 1.0 and q.blank_frames == 0 and q.nonfinite == 0
        assert q.speech_frames > 0 and q.still_speech is not None and q.still_speech < 0.1
        assert q.seam is not None and q.seam < 2.0
        assert q.lipsync is not None and q.lipsync > 0.3, "the drawn mouth follows the speech"


def test_measurements_cover_every_new_frame_and_a_sample(clean_pair, small):
    jobs, frames = clean_pair
    q = measure(small, jobs[1], frames[1])
    assert q.frames == W - M
    # every 6th new frame and the last
    assert q.sampled == len(set(range(M, W, 6)) | {W - 1})


# ----------------------------------------------------------------------------- hard failures


def test_blank_window_is_caught(small):
    qs = chain_quality(small, 2, "blank:1")
    assert classify(qs[0]).ok
    verdict = classify(qs[1])
    assert "blank" in verdict.hard
    assert qs[1].blank_frames == W - M and "black" in qs[1].blank_kinds


@pytest.mark.parametrize("value,kind", [(255, "white"), (128, "flat")])
def test_white_and_flat_frames_are_blank(clean_pair, small, value, kind):
    jobs, frames = clean_pair
    spoilt = frames[1].copy()
    spoilt[W - 5 :] = value  # the last five frames only
    q = measure(small, jobs[1], spoilt)
    assert q.blank_frames == 5 and kind in q.blank_kinds
    assert "blank" in classify(q).hard


def test_frozen_window_is_caught_while_speech_plays(small):
    qs = chain_quality(small, 2, "frozen:1")
    assert classify(qs[0]).ok
    q = qs[1]
    assert q.speech_frames >= 8 and q.still_speech == 1.0
    assert "frozen" in classify(q).hard


def test_a_still_picture_in_silence_is_not_frozen(clean_pair, small):
    jobs, frames = clean_pair
    still = frames[1].copy()
    still[M + 1 :] = still[M]
    silence = [np.zeros(W * SPF, np.float32)]
    q = measure_window(still, M, small.reference, silence, FPS)
    assert q.speech_frames == 0 and q.still_speech is None
    assert "frozen" not in classify(q).hard


def test_non_finite_values_are_caught(clean_pair, small):
    jobs, frames = clean_pair
    as_float = frames[1].astype(np.float32) / 255.0
    clean = measure(small, jobs[1], as_float)
    assert clean.nonfinite == 0 and classify(clean).ok
    assert abs(clean.delta_e - measure(small, jobs[1], frames[1]).delta_e) < 0.2  # same picture
    as_float[W - 3, 10:20, 10:20, 1] = np.nan
    as_float[W - 2, 0, 0, 0] = np.inf
    q = measure(small, jobs[1], as_float)
    assert q.nonfinite == 101
    assert "nonfinite" in classify(q).hard


def test_face_lost_when_it_is_covered(clean_pair, small):
    jobs, frames = clean_pair
    stats = ReferenceStats.of(small.reference)
    (box,) = stats.faces
    covered = frames[1].copy()
    ys, xs = box.part(-0.1, 1.1, -0.1, 1.1, covered.shape[1:3])
    covered[M:, ys, xs] = covered[M:, 4:5, 4:5]  # the background's colour over the face
    covered[M:, ys, xs] += np.random.default_rng(1).integers(0, 12, covered[M:, ys, xs].shape, dtype=np.uint8)
    q = measure(small, jobs[1], covered, stats)
    assert q.face_found is not None and q.face_found < 0.5
    assert "face_lost" in classify(q).hard


# ----------------------------------------------------------------------------- drift


def test_colour_drift_grows_window_by_window_and_crosses_the_bound(small):
    bounds = QualityBounds()
    qs = chain_quality(small, 5, "drift:0.01")
    de = [q.delta_e for q in qs]
    assert all(b > a + 1.0 for a, b in zip(de, de[1:])), de
    assert "colour" not in classify(qs[0], bounds).drift
    assert de[-1] > bounds.delta_e and "colour" in classify(qs[-1], bounds).drift
    assert all(classify(q).hard == () for q in qs), "drift is not a hard failure"


def test_colour_drift_in_v2v_is_measured_against_the_source_frames():
    ex = example("v2v-single", SMALL)
    qs = chain_quality(ex, 4, "drift:0.02")
    de = [q.delta_e for q in qs]
    assert all(b > a + 1.0 for a, b in zip(de, de[1:])), de
    assert "colour" in classify(qs[-1]).drift


def test_drifting_face_is_caught(small):
    qs = chain_quality(small, 6, "face:0.03")
    offsets = [q.face_offset for q in qs]
    assert all(b > a for a, b in zip(offsets, offsets[1:])), offsets
    assert classify(qs[0]).ok
    last = classify(qs[-1])
    assert "face_offset" in last.drift and qs[-1].face_size < 1.0
    assert last.hard == ()


# ----------------------------------------------------------------------------- notes


def test_soft_face_is_noted(clean_pair, small):
    jobs, frames = clean_pair
    blurred = np.stack([f if i < M else cv2.GaussianBlur(f, (0, 0), 2.5) for i, f in enumerate(frames[1])])
    q = measure(small, jobs[1], blurred)
    assert q.sharpness is not None and q.sharpness < 0.5
    assert "soft" in classify(q).notes


def test_seam_jump_is_noted(clean_pair, small):
    jobs, frames = clean_pair
    jumped = frames[1].copy()
    jumped[:M] = np.roll(frames[1][:M], (6, -5), axis=(1, 2))  # a tail that does not fit
    q = measure(small, jobs[1], jumped)
    assert q.seam > QualityBounds().seam and "seam" in classify(q).notes
    assert measure(small, jobs[1], frames[1]).seam < 2.0


def test_lipsync_sees_audio_that_runs_late(clean_pair, small):
    jobs, frames = clean_pair
    on_time = measure(small, jobs[1], frames[1])
    assert on_time.lipsync_lag is not None and abs(on_time.lipsync_lag) <= 1
    late = 5
    audio = [np.concatenate([np.zeros(late * SPF, np.float32), jobs[1].audio[0][: -late * SPF]])]
    q = measure_window(frames[1], M, small.reference, audio, FPS)
    assert abs(q.lipsync_lag - (-late)) <= 1, q.lipsync_lag  # the mouth moves before the sound
    assert q.lipsync < on_time.lipsync


# ----------------------------------------------------------------------------- the API


def test_reference_stats_once_per_render_give_the_same_numbers(clean_pair, small):
    jobs, frames = clean_pair
    stats = ReferenceStats.of(small.reference)
    assert measure(small, jobs[1], frames[1], stats) == measure(small, jobs[1], frames[1])


def test_json_is_small_and_round_trips(clean_pair, small):
    jobs, frames = clean_pair
    q = measure(small, jobs[1], frames[1])
    data = json.loads(json.dumps(q.to_json()))
    assert len(json.dumps(data)) < 700
    back = WindowQuality.from_json(data)
    assert back.to_json() == data and classify(back) == classify(q)
    assert json.loads(json.dumps(classify(q).to_json())) == {"hard": [], "drift": [], "notes": []}


def test_bad_input_is_refused_with_the_field(clean_pair, small):
    jobs, frames = clean_pair
    f, ref, audio = frames[1], small.reference, jobs[1].audio
    stats = ReferenceStats.of(ref)
    cases = [
        (lambda: measure_window(f[0], M, ref, audio, FPS), "frames must be an"),
        (lambda: measure_window(f.astype(np.int16), M, ref, audio, FPS), "frames must be uint8 or float"),
        (lambda: measure_window(f, W - 1, ref, audio, FPS), "keep_from must be"),
        (lambda: measure_window(f, -1, ref, audio, FPS), "keep_from must be"),
        (lambda: measure_window(f, M, ref[:100], audio, FPS), "reference must have shape"),
        (lambda: measure_window(f, M, ref.astype(np.float32), audio, FPS), "reference must be uint8"),
        (lambda: measure_window(f, M, ref, [], FPS), "audio must be a list of 1 or 2"),
        (lambda: measure_window(f, M, ref, [audio[0][:-1]], FPS), r"audio\[0\] must hold"),
        (lambda: measure_window(f, M, ref, [audio[0].astype(np.int16)], FPS), r"audio\[0\] must be a 1-D float"),
        (lambda: measure_window(f, M, ref, audio, 7), "fps must be"),
        (lambda: measure_window(f, M, ref, audio + audio, FPS, stats), "reference_stats is for"),
        (lambda: measure_window(f, M, f, audio, FPS, stats), "reference_stats must be None"),
        (lambda: ReferenceStats.of(ref, 3), "people must be 1 or 2"),
        (lambda: QualityBounds(delta_e=-1.0), "delta_e must be >= 0"),
        (lambda: QualityBounds(face_offset=float("nan")), "face_offset must be a finite number"),
    ]
    for call, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            call()
