"""The fault-rehearsal backend (longtalk.backends.faulty) around the real preview backend:
its spec parser, the tail contract, and each fault as it shows in the frames."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from longtalk.backends.faulty import ENV, FaultSpec, FaultyBackend, cast_level, slide_level
from longtalk.backends.preview import PreviewBackend
from longtalk.testing.quality_chains import M, W, example, render_chain

SMALL = (256, 256)


def render(backend, job) -> np.ndarray:
    frames = asyncio.run(backend.render_window(job))
    assert np.array_equal(frames[:M], job.tail), "the tail contract"
    return frames


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


@pytest.fixture(scope="module")
def ex():
    return example("i2v-single", SMALL)


@pytest.fixture(scope="module")
def clean(ex):
    """Windows 0..2 of the plain preview backend."""
    return [f for _, f in render_chain(PreviewBackend(), ex, 3)]


# ----------------------------------------------------------------------------- the spec


def test_spec_parses():
    spec = FaultSpec.parse(" blank:5, frozen:9@1 ,drift:0.03,face:0.02,frozen:9@3,blank:7@2")
    assert spec.blank == {5: None, 7: frozenset({2})}
    assert spec.frozen == {9: frozenset({1, 3})}
    assert spec.drift == 0.03 and spec.face == 0.02 and spec
    assert FaultSpec.parse("blank:5@1,blank:5").blank == {5: None}  # every attempt covers the first
    assert not FaultSpec.parse("") and not FaultSpec.parse(None) and not FaultSpec.parse("  ")


@pytest.mark.parametrize("text,reason", [
    ("blank", "needs a value"),
    ("blank:", "needs a value"),
    ("blank:x", "window must be an integer"),
    ("blank:-1", "window must be an integer"),
    ("blank:5@0", "attempt after @ must be an integer >= 1"),
    ("blank:5@", "attempt after @"),
    ("frozen:1.5", "window must be an integer"),
    ("drift:0", "amount must be in"),
    ("drift:-0.1", "amount must be in"),
    ("drift:0.9", "amount must be in"),
    ("face:nan", "amount must be in"),
    ("drift:warm", "amount must be a number"),
    ("drift:0.01,drift:0.02", "drift is given twice"),
    ("drift:0.01@2", "amount must be a number"),
    ("melt:3", "unknown fault 'melt'"),
    ("blank:5,,frozen:3", "empty item"),
    ("blank:5,frozen:5@1", "window 5 is already blank"),
])
def test_bad_spec_is_refused_naming_the_setting(text, reason):
    with pytest.raises(ValueError, match=reason) as info:
        FaultSpec.parse(text)
    assert str(info.value).startswith(f"{ENV}:")


# ----------------------------------------------------------------------------- pass-through


def test_without_faults_the_frames_are_the_inner_backends(ex, clean):
    for spec in ("", "blank:2"):
        got = [f for _, f in render_chain(FaultyBackend(PreviewBackend(), spec), ex, 2)]
        assert all(np.array_equal(a, b) for a, b in zip(got, clean)), spec


def test_name_and_close_pass_through():
    closed = []

    class Inner(PreviewBackend):
        name = "inner"

        async def close(self):
            closed.append(True)

    backend = FaultyBackend(Inner(), "blank:1")
    assert backend.name == "inner"
    asyncio.run(backend.close())
    assert closed == [True]


# ----------------------------------------------------------------------------- blank and frozen


def test_blank_and_frozen_windows(ex, clean):
    backend = FaultyBackend(PreviewBackend(), "blank:1,frozen:2")
    tail = clean[0][-M:].copy()
    blank = render(backend, ex.job(1, tail))
    assert not np.any(blank[M:])
    frozen = render(backend, ex.job(2, clean[1][-M:].copy()))
    assert all(np.array_equal(f, frozen[M]) for f in frozen[M:])
    assert np.array_equal(frozen[M], clean[2][M]), "the first new frame, repeated"
    assert [a[2] for a in backend.applied] == [("blank",), ("frozen",)]


def test_attempts_follow_the_redo(ex, clean):
    backend = FaultyBackend(PreviewBackend(), "blank:1@1")
    job = ex.job(1, clean[0][-M:].copy(), seed=7)
    assert not np.any(render(backend, job)[M:]), "the first attempt: spoilt"
    redo = dataclasses.replace(job, redo=1)
    assert redo.seed != job.seed and redo.seed != job.spec.seed_for(2), "a seed no other window uses"
    assert np.any(render(backend, redo)[M:]), "the re-render with the next seed: clean"
    assert not np.any(render(backend, job)[M:]), "a retry of the first attempt is spoilt again"
    assert [a[1] for a in backend.applied] == [1, 2, 1]


# ----------------------------------------------------------------------------- drift and face


def test_colour_drift_accumulates_through_the_tail_and_restarts_with_a_chain(ex):
    step = 5 / 255  # drift:0.02 is 5 grey levels a window
    backend = FaultyBackend(PreviewBackend(), "drift:0.02")
    chain = [f for _, f in render_chain(backend, ex, 4)]
    levels = [cast_level(f[-1], ex.reference) for f in chain]
    assert levels == pytest.approx([step * (k + 1) for k in range(4)], abs=0.5 / 255), levels
    # within a window the cast grows smoothly: no jump at the seam
    for frames in chain[1:]:
        interior = max(mad(frames[i], frames[i - 1]) for i in range(M + 1, W))
        assert mad(frames[M], frames[M - 1]) <= 2.0 * interior
    # nothing is remembered: another instance continues the chain the same way
    again = render(FaultyBackend(PreviewBackend(), "drift:0.02"), ex.job(3, chain[2][-M:].copy()))
    assert np.array_equal(again, chain[3])
    # a re-anchored window (a chain start from the reference) starts from no cast
    restart = render(backend, ex.job(4))
    assert cast_level(restart[-1], ex.reference) == pytest.approx(step, abs=0.5 / 255)


def test_colour_drift_in_v2v_is_against_the_source():
    v2v = example("v2v-single", SMALL)
    chain = [(job, f) for job, f in render_chain(FaultyBackend(PreviewBackend(), "drift:0.02"), v2v, 3)]
    levels = [cast_level(f[-1], job.source[-1]) for job, f in chain]
    assert levels == pytest.approx([5 / 255 * (k + 1) for k in range(3)], abs=0.5 / 255), levels


def test_face_drift_accumulates(ex):
    chain = [f for _, f in render_chain(FaultyBackend(PreviewBackend(), "face:0.03"), ex, 4)]
    levels = [slide_level(f[-1], ex.reference) for f in chain]
    assert levels == pytest.approx([0.03 * (k + 1) for k in range(4)], abs=0.012), levels
    # the slide grows smoothly within a window: no jump at the seam
    for frames in chain[1:]:
        interior = max(mad(frames[i], frames[i - 1]) for i in range(M + 1, W))
        assert mad(frames[M], frames[M - 1]) <= 2.0 * interior
