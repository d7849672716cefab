"""The quality guard's decisions for one window, around longtalk.quality's measurements.

The GPU activity (activities/gpu.py) asks three things here:

- where the window starts from (`anchor_for`): the previous window's tail, as usual, or the
  reference again (a re-anchor) because the chain drifts (the previous window's colour or
  face passed half its bound) or carried its tail longer than LONGTALK_QUALITY_MAX_CARRY_S.
  A re-anchor waits for a window whose join frame (its first kept frame) lies in a speech
  pause of its own audio, so the stitcher's dissolve hides it, at most REANCHOR_WAIT windows
  (none where the drift's rise would take it past a bound in the next window);
- which redo to render next (`next_redo`): a window with a hard failure (blank, frozen, face
  lost, non-finite) is rendered again with the next seed, at most LONGTALK_QUALITY_RETRIES
  times, counting the attempts an earlier try of the activity recorded in quality.json;
- which attempt to keep (`best`): the first without a hard failure, else the least bad,
  flagged.

Each window's quality.json (QUALITY_VERSION) records its attempts, the one kept, where its
carry-over began (anchor_frame) and a re-anchor or a pending one; the next window reads it.
Pure: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from . import chains
from .quality import QualityBounds, Verdict, WindowQuality, classify
from .windows import Window, WindowParams

QUALITY_VERSION = 1
REANCHOR_AT = 0.5  # a drift measure past this share of its bound makes a re-anchor pending
REANCHOR_WAIT = 3  # windows a pending re-anchor waits for a pause before it happens anyway


@dataclass(frozen=True)
class Guard:
    bounds: QualityBounds = QualityBounds()
    retries: int = 2  # re-renders of a window with a hard failure (0: measure and flag only)
    reanchor: bool = True  # drift re-anchors the chain
    max_carry_s: float = 60.0  # re-anchor at the next pause after this much carry-over (0: never)

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or not 0 <= self.retries <= 10:
            raise ValueError(f"LONGTALK_QUALITY_RETRIES: must be an integer from 0 to 10, got {self.retries!r}")
        if not (math.isfinite(self.max_carry_s) and self.max_carry_s >= 0):
            raise ValueError(f"LONGTALK_QUALITY_MAX_CARRY_S: must be >= 0 (0: no ceiling), got {self.max_carry_s!r}")

    @classmethod
    def from_settings(cls, settings) -> "Guard":
        return cls(bounds=parse_bounds(settings.quality_bounds), retries=settings.quality_retries,
                   reanchor=settings.quality_reanchor, max_carry_s=settings.quality_max_carry_s)


def parse_bounds(text: str) -> QualityBounds:
    """QualityBounds with the overrides of LONGTALK_QUALITY_BOUNDS ("delta_e=8,face_offset=0.3")."""
    names = {f.name: f.type for f in fields(QualityBounds)}
    values: dict[str, float] = {}
    for item in filter(None, (i.strip() for i in (text or "").split(","))):
        name, sep, raw = (p.strip() for p in item.partition("="))
        if name not in names or not sep:
            raise ValueError(f"LONGTALK_QUALITY_BOUNDS: {item!r}: use name=value with a name from {', '.join(names)}")
        try:
            values[name] = int(raw) if names[name] in ("int", int) else float(raw)
        except ValueError:
            raise ValueError(f"LONGTALK_QUALITY_BOUNDS: {item!r}: the value must be a number") from None
    try:
        return QualityBounds(**values)
    except ValueError as exc:
        raise ValueError(f"LONGTALK_QUALITY_BOUNDS: {exc}") from None


# ----------------------------------------------------------------------------- attempts


def attempt_record(redo: int, seed: int, q: WindowQuality, v: Verdict, measure_s: float) -> dict:
    return {"redo": redo, "seed": str(seed), "verdict": v.to_json(), "quality": q.to_json(),
            "measure_ms": round(measure_s * 1000.0, 1)}


def _rank(record: dict) -> tuple:
    """Lower is better: fewer hard failures, fewer blank frames, less stillness, face found more,
    fewer drifts, less colour drift."""
    v, q = record["verdict"], record["quality"]
    return (len(v["hard"]), q["blank_frames"], q.get("still_speech") or 0.0, -(q.get("face_found") or 0.0),
            len(v["drift"]), q["delta_e"])


def next_redo(recorded: list[dict], retries: int) -> int:
    """The redo this try of the activity renders first, from the attempts an earlier try
    recorded: 0 when none; the same redo again when the last one passed (the window was only
    not stored); else the next unless all retries are spent, then the best recorded one."""
    if not recorded:
        return 0
    last = recorded[-1]
    if not last["verdict"]["hard"]:
        return last["redo"]
    if len(recorded) <= retries:
        return max(r["redo"] for r in recorded) + 1
    return min(recorded, key=_rank)["redo"]


def more(recorded: list[dict], retries: int) -> bool:
    """Whether another redo may follow the latest attempt (which failed hard)."""
    return bool(recorded[-1]["verdict"]["hard"]) and len({r["redo"] for r in recorded}) <= retries


def best(candidates: list[int], recorded: list[dict]) -> int:
    """Of the attempts whose frames this try holds (indices into recorded), the one to keep."""
    return min(candidates, key=lambda i: (_rank(recorded[i]), i))


# ----------------------------------------------------------------------------- re-anchoring


@dataclass(frozen=True)
class Anchor:
    from_reference: bool  # the window starts from the reference (a chain start or a re-anchor)
    anchor_frame: int  # global frame where this window's carry-over began
    reanchor: dict | None = None  # set when this window re-anchors: where and why
    pending: dict | None = None  # a re-anchor waiting for a pause: {"reason", "since"}
    previous_drift: float | None = None  # the previous window's drift level (its trend, for the next window)

    def to_json(self) -> dict:
        return {"anchor_frame": self.anchor_frame, "reanchor": self.reanchor, "pending": self.pending,
                "previous_drift": self.previous_drift}


def pause_at(audio: list[np.ndarray], offset: int, params: WindowParams) -> tuple[int, int] | None:
    """The speech pause [a, b) (frames of the window) holding frame `offset`, from the window's
    own audio (where both speakers are quiet), as the chain planner finds pauses."""
    samples = np.max(np.abs(np.stack(audio)), axis=0)
    db = chains.frame_db(samples, params.samples_per_frame)
    for a, b in chains.find_pauses(db):
        if a <= offset - 1 and offset + chains.EDGE_FRAMES <= b:
            return a, b
    return None


def drift_ratios(q: dict, bounds: QualityBounds) -> dict[str, float]:
    """How far along its bound each drift measure of a window is (1.0: at the bound)."""
    out = {}
    for name, value, bound in (("colour", q.get("delta_e"), bounds.delta_e),
                               ("face_colour", q.get("delta_e_face"), bounds.delta_e_face),
                               ("face_offset", q.get("face_offset"), bounds.face_offset)):
        if value is not None and bound > 0:
            out[name] = value / bound
    size = q.get("face_size")
    if size and size > 0 and bounds.face_size > 0:
        out["face_size"] = abs(math.log(size)) / math.log1p(bounds.face_size)
    return out


def anchor_for(w: Window, chain_first: int, previous: dict | None, audio: list[np.ndarray],
               params: WindowParams, guard: Guard) -> Anchor:
    """Where window w starts from, given the previous window's quality.json (None: none stored,
    a render of an earlier release or a re-render's first window).

    A re-anchor becomes pending when a drift measure of the previous window passes
    REANCHOR_AT of its bound, or when the carry-over reaches the ceiling. A pending re-anchor
    happens at the first window whose join frame lies in a pause; at once, pause or not,
    when the drift would pass a bound in this window (the previous window's level plus its
    rise from the one before), or after REANCHOR_WAIT windows."""
    if w.index == chain_first:
        return Anchor(True, w.start)
    if previous is None:
        return Anchor(False, w.start)
    anchor_frame = int(previous.get("anchor_frame", w.start))
    pending = previous.get("pending")
    urgent, level = False, None
    ratios = drift_ratios(chosen(previous)["quality"], guard.bounds) if previous.get("attempts") else {}
    if ratios:
        level = max(ratios.values())
    # a window that itself started from the reference and drifted: restarting cannot help
    if guard.reanchor and level is not None and previous.get("anchor_frame") != previous.get("start"):
        over = {n: r for n, r in ratios.items() if r >= REANCHOR_AT}
        earlier = previous.get("previous_drift")
        rise = max(0.0, level - earlier) if earlier is not None else 0.0
        urgent = level + rise > 1.0
        if over and pending is None:
            what = ", ".join(f"{n} at {r:.0%} of its bound" for n, r in sorted(over.items()))
            pending = {"reason": f"window {w.index - 1} drifted ({what})", "since": w.index}
    join = w.start + params.motion  # the first kept frame
    carried_s = (join - anchor_frame) / params.fps
    if pending is None and guard.max_carry_s and carried_s >= guard.max_carry_s:
        pending = {"reason": f"{carried_s:.1f} s of carry-over (ceiling {guard.max_carry_s:g} s)", "since": w.index}
    if pending is None:
        return Anchor(False, anchor_frame, previous_drift=level)
    pause = pause_at(audio, params.motion, params)
    waited = w.index - int(pending["since"])
    if pause is None and not urgent and waited < REANCHOR_WAIT:
        return Anchor(False, anchor_frame, pending=pending, previous_drift=level)
    where = (f"in a {(pause[1] - pause[0]) / params.fps * 1000:.0f} ms pause" if pause
             else "no pause, but the drift would pass its bound" if urgent else f"no pause in {REANCHOR_WAIT} windows")
    record = {"window": w.index, "frame": join, "time_s": round(join / params.fps, 3),
              "pause": None if pause is None else [w.start + pause[0], w.start + pause[1]],
              "reason": f"{pending['reason']}; re-anchored at {join / params.fps:.2f} s, {where}"}
    return Anchor(True, w.start, reanchor=record, previous_drift=level)


def chosen(doc: dict) -> dict:
    """The attempt a quality.json kept."""
    return doc["attempts"][doc.get("chosen", len(doc["attempts"]) - 1)]


def window_doc(w: Window, anchor: Anchor, attempts: list[dict], kept: int | None) -> dict:
    """A window's quality.json: kept is None until the window is stored."""
    doc = {"version": QUALITY_VERSION, "window": w.index, "start": w.start, **anchor.to_json(),
           "attempts": attempts, "done": kept is not None}
    if kept is not None:
        doc["chosen"] = kept
        doc["rerendered"] = len({a["redo"] for a in attempts}) - 1
        doc["flagged"] = bool(attempts[kept]["verdict"]["hard"])
    return doc


# ----------------------------------------------------------------------------- the render's summary

SERIES = ("delta_e", "delta_e_face", "face_offset", "face_size", "sharpness", "lipsync", "seam", "still_speech")


def summarise(docs: list[dict | None]) -> tuple[dict, list[dict]]:
    """The render's quality summary (RenderResult.quality, /status, the webhook) and the
    per-window series (the render's quality.json, the dashboard's plot) from every window's
    quality.json (None: a window stored without one, e.g. copied by a re-render)."""
    series, rerendered, flagged, reanchors, drifted, measure_ms = [], [], [], [], [], []
    worst: tuple[tuple, dict] | None = None
    for k, doc in enumerate(docs):
        if not doc or not doc.get("attempts"):
            continue
        record = chosen(doc)
        v, q = record["verdict"], record["quality"]
        measure_ms += [a.get("measure_ms", 0.0) for a in doc["attempts"]]
        row = {"window": k, **{m: q.get(m) for m in SERIES}, **v,
               "rerendered": doc.get("rerendered", 0), "flagged": doc.get("flagged", False),
               "reanchored": doc.get("reanchor") is not None}
        series.append(row)
        if row["rerendered"]:
            rerendered.append(k)
        if row["flagged"]:
            flagged.append({"window": k, "hard": v["hard"]})
        if v["drift"]:
            drifted.append(k)
        if doc.get("reanchor"):
            reanchors.append(doc["reanchor"])
        rank = _rank(record)
        if worst is None or rank > worst[0]:
            worst = (rank, row)
    delta = [r["delta_e"] for r in series if r["delta_e"] is not None]
    summary = {
        "windows_measured": len(series),
        "worst_window": None if worst is None else {
            key: worst[1][key] for key in ("window", "hard", "drift", "notes", "delta_e", "face_offset")},
        "rerendered": rerendered,
        "flagged": flagged,
        "drifted": drifted,
        "reanchors": reanchors,
        "max_delta_e": round(max(delta), 3) if delta else None,
        "measure_ms_mean": round(float(np.mean(measure_ms)), 1) if measure_ms else None,
    }
    return summary, series
