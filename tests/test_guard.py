"""The quality guard's decisions (longtalk.guard): which redo comes next, which attempt is
kept, where a chain re-anchors, the render's summary; and its settings."""

from __future__ import annotations

import numpy as np
import pytest

from longtalk.guard import (
    REANCHOR_WAIT, Guard, anchor_for, best, more, next_redo, parse_bounds, summarise, window_doc,
)
from longtalk.quality import QualityBounds
from longtalk.settings import Settings
from longtalk.windows import WindowParams, window

P = WindowParams(81, 9, 25)
SPF = P.samples_per_frame
TOTAL = 40 * P.stride


def record(redo: int, hard=(), drift=(), **q) -> dict:
    quality = {"blank_frames": 5 if "blank" in hard else 0, "still_speech": 0.0, "face_found": 1.0,
               "delta_e": 1.0, "delta_e_face": 1.0, "face_offset": 0.01, "face_size": 1.0, **q}
    return {"redo": redo, "seed": str(100 + redo), "verdict": {"hard": list(hard), "drift": list(drift), "notes": []},
            "quality": quality, "measure_ms": 100.0}


def speech(pause_at_join: bool) -> list[np.ndarray]:
    """A window's audio: a loud tone, silent around the join frame (frames 2..20) or not."""
    t = np.arange(P.window * SPF) / 16000.0
    audio = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    if pause_at_join:
        audio[2 * SPF: 20 * SPF] = 0.0
    return [audio]


# ----------------------------------------------------------------------------- attempts


def test_redo_order_counts_earlier_tries():
    assert next_redo([], 2) == 0
    blank = record(0, hard=["blank"])
    assert next_redo([blank], 2) == 1, "an earlier try's failed attempt is not rendered again"
    assert next_redo([blank, record(1)], 2) == 1, "the last attempt passed: the same redo (it was not stored)"
    spent = [record(0, hard=["blank"]), record(1, hard=["frozen"], still_speech=0.9),
             record(2, hard=["blank"])]
    assert next_redo(spent, 2) == 1, "all retries spent: the best recorded one again (frozen beats blank)"
    assert more([blank], 2) and more([blank, record(1, hard=["blank"])], 2)
    assert not more(spent, 2), "at most retries re-renders"
    assert not more([blank], 0) and not more([record(0)], 2)
    assert best([0, 1, 2], spent) == 1
    assert best([0, 2], [record(0, hard=["blank"]), None, record(2, drift=["colour"])]) == 2


def test_window_doc_flags_a_kept_failure():
    w = window(3, TOTAL, P)
    anchor = anchor_for(w, 3, None, speech(False), P, Guard())
    doc = window_doc(w, anchor, [record(0, hard=["blank"]), record(1, hard=["blank"]), record(2, hard=["blank"])], 2)
    assert (doc["rerendered"], doc["flagged"], doc["chosen"], doc["done"]) == (2, True, 2, True)
    doc = window_doc(w, anchor, [record(0, hard=["blank"]), record(1)], 1)
    assert (doc["rerendered"], doc["flagged"]) == (1, False)
    assert window_doc(w, anchor, [record(0)], None)["done"] is False


# ----------------------------------------------------------------------------- re-anchoring


def doc_of(k: int, anchor_frame: int, pending=None, **q) -> dict:
    w = window(k, TOTAL, P)
    return {"version": 1, "window": k, "start": w.start, "anchor_frame": anchor_frame, "reanchor": None,
            "pending": pending, "attempts": [record(0, **q)], "chosen": 0}


def test_a_chain_start_and_a_clean_chain_carry_on():
    guard = Guard()
    first = anchor_for(window(0, TOTAL, P), 0, None, speech(True), P, guard)
    assert first.from_reference and first.anchor_frame == 0 and first.reanchor is None
    clean = anchor_for(window(5, TOTAL, P), 0, doc_of(4, 0), speech(True), P, guard)
    assert not clean.from_reference and clean.anchor_frame == 0 and clean.pending is None
    unknown = anchor_for(window(5, TOTAL, P), 0, None, speech(True), P, guard)  # no record: carry on
    assert not unknown.from_reference and unknown.anchor_frame == window(5, TOTAL, P).start


def test_drift_reanchors_at_the_next_pause():
    guard = Guard()
    half = 0.6 * QualityBounds().delta_e
    w5 = window(5, TOTAL, P)
    waiting = anchor_for(w5, 0, doc_of(4, 0, delta_e=half), speech(False), P, guard)
    assert not waiting.from_reference and "window 4 drifted (colour at 60% of its bound)" in waiting.pending["reason"]
    w6 = window(6, TOTAL, P)
    done = anchor_for(w6, 0, {**doc_of(5, 0, delta_e=half - 1), "pending": waiting.pending}, speech(True), P, guard)
    assert done.from_reference and done.anchor_frame == w6.start and done.pending is None
    r = done.reanchor
    assert r["window"] == 6 and r["frame"] == w6.start + P.motion and "pause" in r["reason"]
    assert r["pause"][0] < r["frame"] < r["pause"][1]
    # no pause: it waits REANCHOR_WAIT windows, then re-anchors anyway
    late = window(5 + REANCHOR_WAIT, TOTAL, P)
    forced = anchor_for(late, 0, {**doc_of(late.index - 1, 0), "pending": waiting.pending}, speech(False), P, guard)
    assert forced.from_reference and forced.reanchor["pause"] is None and "no pause" in forced.reanchor["reason"]
    # over the bound itself, or rising so fast it would pass it in this window: at once
    urgent = anchor_for(w5, 0, doc_of(4, 0, delta_e=QualityBounds().delta_e + 1), speech(False), P, guard)
    assert urgent.from_reference and "would pass its bound" in urgent.reanchor["reason"]
    rising = {**doc_of(4, 0, delta_e=0.7 * QualityBounds().delta_e), "previous_drift": 0.3}
    assert anchor_for(w5, 0, rising, speech(False), P, guard).from_reference, "0.7 + 0.4 > 1"
    slow = {**doc_of(4, 0, delta_e=0.7 * QualityBounds().delta_e), "previous_drift": 0.6}
    assert not anchor_for(w5, 0, slow, speech(False), P, guard).from_reference, "0.7 + 0.1: waits for a pause"
    assert waiting.previous_drift == pytest.approx(0.6)
    # off, or the drifting window started from the reference itself: no re-anchor
    off = Guard(reanchor=False)
    assert not anchor_for(w5, 0, doc_of(4, 0, delta_e=20.0), speech(True), P, off).from_reference
    fresh = doc_of(4, window(4, TOTAL, P).start, delta_e=20.0)
    assert not anchor_for(w5, 0, fresh, speech(True), P, guard).from_reference


def test_carry_over_ceiling():
    guard = Guard(max_carry_s=10.0)
    k = 4  # window 4's join is at (4 * 72 + 9) / 25 = 11.9 s
    a = anchor_for(window(k, TOTAL, P), 0, doc_of(k - 1, 0), speech(True), P, guard)
    assert a.from_reference and "s of carry-over (ceiling 10 s)" in a.reanchor["reason"]
    assert not anchor_for(window(k, TOTAL, P), 0, doc_of(k - 1, 0), speech(True), P, Guard(max_carry_s=0)).from_reference


# ----------------------------------------------------------------------------- summary and settings


def test_summary():
    w = window(2, TOTAL, P)
    reanchored = anchor_for(w, 0, {**doc_of(1, 0, delta_e=20.0)}, speech(True), P, Guard())
    docs = [
        window_doc(window(0, TOTAL, P), anchor_for(window(0, TOTAL, P), 0, None, speech(True), P, Guard()),
                   [record(0)], 0),
        window_doc(window(1, TOTAL, P), anchor_for(window(1, TOTAL, P), 0, None, speech(True), P, Guard()),
                   [record(0, hard=["blank"]), record(1, drift=["colour"], delta_e=20.0)], 1),
        window_doc(w, reanchored, [record(0, hard=["frozen"], still_speech=0.9)] * 3, 2),
        None,  # a window without a record (copied by a re-render)
    ]
    summary, series = summarise(docs)
    assert summary["windows_measured"] == 3 and [r["window"] for r in series] == [0, 1, 2]
    assert summary["rerendered"] == [1] and summary["flagged"] == [{"window": 2, "hard": ["frozen"]}]
    assert summary["drifted"] == [1] and summary["max_delta_e"] == 20.0
    assert [r["window"] for r in summary["reanchors"]] == [2]
    assert summary["worst_window"]["window"] == 2 and summary["worst_window"]["hard"] == ["frozen"]


def test_settings():
    guard = Guard.from_settings(Settings(quality_retries=1, quality_bounds="delta_e=8, face_offset=0.3",
                                         quality_max_carry_s=30.0, quality_reanchor=False))
    assert (guard.retries, guard.bounds.delta_e, guard.bounds.face_offset, guard.max_carry_s, guard.reanchor) == (
        1, 8.0, 0.3, 30.0, False)
    assert parse_bounds("blank_frames=3").blank_frames == 3
    for text, words in (("delta=3", "delta"), ("delta_e", "delta_e"), ("delta_e=x", "number"),
                        ("delta_e=-1", "delta_e")):
        with pytest.raises(ValueError, match="LONGTALK_QUALITY_BOUNDS") as err:
            parse_bounds(text)
        assert words in str(err.value)
    with pytest.raises(ValueError, match="LONGTALK_QUALITY_RETRIES"):
        Guard(retries=-1)
    with pytest.raises(ValueError, match="LONGTALK_QUALITY_MAX_CARRY_S"):
        Guard(max_carry_s=float("nan"))
    env = Settings.from_env({"LONGTALK_QUALITY_RETRIES": "0", "LONGTALK_PREVIEW_FAULTS": "blank:1"})
    assert env.quality_retries == 0 and env.preview_faults == "blank:1"


def test_preview_faults_wrap_the_preview():
    from longtalk.backends import make_backends
    from longtalk.backends.faulty import FaultyBackend

    backends = make_backends(Settings(preview_faults="blank:2,drift:0.02"))
    assert isinstance(backends["preview"], FaultyBackend) and backends["preview"].spec.blank == {2: None}
    assert not isinstance(make_backends(Settings())["preview"], FaultyBackend)
    with pytest.raises(ValueError, match="LONGTALK_PREVIEW_FAULTS") as err:
        make_backends(Settings(preview_faults="smear:1"))
    assert "smear" in str(err.value)
