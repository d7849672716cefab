"""Window arithmetic, checked as properties over many lengths and parameters."""

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longtalk.windows import WindowParams, total_frames, window, window_count, windows

params_strategy = st.builds(
    lambda k, m_frac, fps: WindowParams(4 * k + 1, 4 * min(k - 1, int(m_frac * k)) + 1, fps),
    st.integers(1, 40), st.floats(0.01, 0.99), st.sampled_from([25, 16, 20, 32, 40]),
)


@given(total=st.integers(1, 20_000), params=params_strategy)
@settings(max_examples=400, deadline=None)
def test_every_frame_comes_from_exactly_one_window(total, params):
    ws = windows(total, params)
    assert len(ws) == window_count(total, params)
    owner = [0] * total
    for w in ws:
        assert w.kept >= 1  # no window is rendered for nothing
        assert w.start == w.index * params.stride and w.end - w.start == params.window
        assert w.keep_start >= w.start and w.keep_end <= w.end
        for f in range(w.keep_start, w.keep_end):
            owner[f] += 1
    assert owner == [1] * total
    assert ws[0].keep_start == 0 and ws[-1].keep_end == total  # trimmed to T exactly


@given(total=st.integers(1, 20_000), params=params_strategy)
@settings(max_examples=300, deadline=None)
def test_window_count_formula_and_overlap(total, params):
    n = window_count(total, params)
    expected = 1 if total <= params.window else 1 + math.ceil((total - params.window) / params.stride)
    assert n == expected
    ws = windows(total, params)
    for a, b in zip(ws, ws[1:]):
        # window k+1 re-renders exactly the last M frames of window k from its tail
        assert a.end - b.start == params.motion
        assert b.keep_start == a.end
        assert b.keep_offset == params.motion
    last = ws[-1]
    assert last.end >= total  # padded with silence past T
    assert all(w.audio_samples == params.window * params.samples_per_frame for w in ws)
    assert all(w.audio_start == w.start * params.samples_per_frame for w in ws)


def test_defaults_are_infinitetalk_numbers():
    p = WindowParams()
    assert (p.window, p.motion, p.stride, p.fps, p.samples_per_frame) == (81, 9, 72, 25, 640)
    assert window_count(81) == 1 and window_count(82) == 2 and window_count(153) == 2
    assert window_count(154) == 3
    assert window(1, 200).keep_start == 81 and window(1, 200).keep_end == 153
    # an hour of audio
    assert window_count(total_frames(16000 * 3600)) == 1250


@given(samples=st.integers(0, 10**9), cap=st.one_of(st.none(), st.integers(1, 10**6)))
def test_total_frames_is_integer_arithmetic(samples, cap):
    t = total_frames(samples, WindowParams(), cap)
    assert t == min(samples // 640, cap if cap is not None else samples // 640)


def test_float_seconds_would_lose_frames():
    # 29 frames = 18560 samples; through float seconds int(1.16 * 25) gives 28.
    assert int((18560 / 16000) * 25) == 28
    assert total_frames(18560) == 29
    lossy = [f for f in range(1, 5000) if int((f * 640 / 16000) * 25) != f]
    assert all(total_frames(f * 640) == f for f in lossy)


@pytest.mark.parametrize("w,m,fps,msg", [
    (80, 9, 25, "4k+1"), (81, 0, 25, "motion"), (81, 81, 25, "motion"), (81, 9, 0, "fps"),
    (81, 9, 7, "fps"), (1, 0, 25, "4k+1"), (81.0, 9, 25, "integer"), (True, 9, 25, "integer"),
    (81, 8, 25, "4j+1"), (81, 10, 25, "4j+1"),
])
def test_parameter_validation(w, m, fps, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        WindowParams(w, m, fps)


def test_invalid_totals_and_indices():
    with pytest.raises(ValueError):
        window_count(0)
    with pytest.raises(IndexError):
        window(2, 100)
    with pytest.raises(ValueError):
        total_frames(1000, WindowParams(), max_frame=0)
