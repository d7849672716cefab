"""Chain planning: how many independent chains a render is cut into, and where.

A chain is a run of consecutive windows rendered in order with frame carry-over; chains
run in parallel on different GPUs. Where one chain ends and the next begins, the next
restarts from the reference image instead of the previous window's tail, so the picture
jumps there. The planner therefore

- uses no more chains than the render's length makes worthwhile: at least
  MIN_WINDOWS_PER_CHAIN windows per chain (a 10-second render stays one chain), and no more
  than the GPUs it may use;
- keeps the chains balanced, since the render ends with its longest chain: none longer
  than ceil(n / chains) plus BALANCE_SLACK, a slack spent only to put more joins in pauses;
- within that bound, moves each cut a few windows from its balanced split point (chain c
  starts near c * n / chains) to where the join frame (the new chain's first kept frame)
  falls inside a speech pause with room for the dissolve, the nearest such: the mouth is
  closed on both sides of the join and only the head pose differs.

At a join the picture still jumps (the new chain restarts from the reference). Stitch
therefore dissolves the previous chain's last frames into the new chain's first frame over up
to LONGTALK_JOIN_BLEND_FRAMES frames, all of them inside the pause (`blend_frames`,
`dissolve_into`): the jump becomes a short cross-fade while the mouth is closed. The price is
one clip decoded and encoded again per join, and a faint double image during the dissolve.

Pure functions over per-frame loudness and frames; the plan activity reads the audio and
stores the result, with the reason for each cut, in plan.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .audio import frame_rms
from .windows import WindowParams

# Fewer windows than this per chain are not worth a visible join: with 81/9/25 that is
# about 15 s of video per chain.
MIN_WINDOWS_PER_CHAIN = 5
# A cut may move this fraction of a chain's length away from its balanced split point (at
# least one window) to reach a pause, within the balance bound below.
SEARCH_FRACTION = 0.06
# The render ends when its longest chain does: a chain may exceed the balanced length
# ceil(windows / chains) by at most this fraction of it (at least one window), and only
# when that puts more joins inside pauses: the render then takes at most ~3% longer.
BALANCE_SLACK = 0.03
# A pause holds a join well when it starts this many frames before the join frame: the
# whole default dissolve (LONGTALK_JOIN_BLEND_FRAMES = 8) then lies inside it.
GOOD_LEAD_FRAMES = 9
PAUSE_BELOW_SPEECH_DB = 20.0  # a frame this far below the speech level is silent
ACTIVE_FLOOR_DB = -55.0  # frames above this count towards the speech level
MIN_PAUSE_FRAMES = 4  # 160 ms at 25 fps: shorter dips are inside words
EDGE_FRAMES = 2  # the join frame must lie this far inside the pause


@dataclass(frozen=True)
class Cut:
    window: int  # the new chain's first window
    frame: int  # its first kept frame: where the picture may jump
    ideal: float  # the balanced split point (in windows)
    pause: tuple[int, int] | None  # the pause [start, end) in frames holding `frame`, if any
    reason: str

    def as_dict(self, fps: int) -> dict:
        out = asdict(self)
        out["pause"] = list(self.pause) if self.pause else None
        out["pause_s"] = round((self.pause[1] - self.pause[0]) / fps, 3) if self.pause else 0.0
        out["time_s"] = round(self.frame / fps, 3)
        return out


def chain_count(requested: int, windows: int, gpus: int | None = None) -> tuple[int, str]:
    """How many chains a render of `windows` windows gets, and why: the requested number
    (per job, or the LONGTALK_PARALLEL_CHAINS default), capped by the GPUs it may use (when
    known) and by MIN_WINDOWS_PER_CHAIN."""
    most = max(1, windows // MIN_WINDOWS_PER_CHAIN)
    count = max(1, requested)
    why = [f"{requested} asked"]
    if gpus is not None and gpus < count:
        count = max(1, gpus)
        why.append(f"{gpus} GPU worker(s) serve this queue")
    if count > most:
        count = most
        why.append(f"{windows} windows allow at most {most} (>= {MIN_WINDOWS_PER_CHAIN} windows per chain)")
    return count, f"{count} chain(s): " + "; ".join(why)


def frame_db(samples: np.ndarray, samples_per_frame: int) -> np.ndarray:
    """Loudness (dBFS) of each video frame's audio (consecutive 40 ms blocks at 25 fps; a
    partial last frame is dropped), on the plan's scale (rms_db)."""
    return rms_db(frame_rms(np.asarray(samples, np.float32), samples_per_frame))


def rms_db(rms: np.ndarray) -> np.ndarray:
    """The plan's dB scale: floored at -120 dBFS (audio.to_db's floor is -200), so that digital
    silence and a faint hiss weigh alike when pauses are ranked."""
    return 20.0 * np.log10(np.maximum(rms, 1e-6))


def find_pauses(db: np.ndarray, min_frames: int = MIN_PAUSE_FRAMES) -> list[tuple[int, int]]:
    """Runs [start, end) of at least `min_frames` frames quieter than the speech level less
    PAUSE_BELOW_SPEECH_DB (the level: the median of the frames that are not near silence)."""
    active = db[db > ACTIVE_FLOOR_DB]
    if active.size == 0:
        return [(0, int(db.size))] if db.size >= min_frames else []
    threshold = float(np.median(active)) - PAUSE_BELOW_SPEECH_DB
    quiet = np.concatenate([[False], db < threshold, [False]])
    edges = np.flatnonzero(quiet[1:] != quiet[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2]) if b - a >= min_frames]


def _candidate(db: np.ndarray, pauses: list[tuple[int, int]], holding: np.ndarray, k: int, ideal: float,
               params: WindowParams) -> tuple[tuple, int, tuple[int, int] | None, bool]:
    """Window k as chain c's first window: (value, join frame, pause, good). The values of a
    plan's cuts add up and compare in order: joins in a pause roomy enough for the whole
    dissolve (GOOD_LEAD_FRAMES of pause before the join frame, EDGE_FRAMES after), joins in
    any pause, nearness to the balanced splits of joins in pauses, pause length, quietness,
    nearness."""
    frame = k * params.stride + params.motion
    f = min(frame, db.size - 1)
    p = int(holding[f]) if db.size else -1
    pause = pauses[p] if p >= 0 else None
    lead, tail = (f - pause[0], pause[1] - f) if pause else (0, 0)
    good = pause is not None and lead >= GOOD_LEAD_FRAMES and tail >= EDGE_FRAMES
    # outside a pause the quieter frame comes before nearness (a softer syllable hides the jump
    # better), and nearness only separates equally quiet frames
    value = (int(good), int(pause is not None), -abs(k - ideal) if pause else 0.0,
             pause[1] - pause[0] if pause else 0, -float(db[f]) if db.size else 0.0, -abs(k - ideal))
    return value, frame, pause, good


def _best_cuts(db: np.ndarray, pauses: list[tuple[int, int]], holding: np.ndarray, windows: int,
               chains: int, longest: int, params: WindowParams) -> tuple[list[Cut], int]:
    """The best cuts (by the sum of their `_candidate` values) that keep every chain between
    MIN_WINDOWS_PER_CHAIN and `longest` windows, each cut within SEARCH_FRACTION of a chain
    of its balanced split (a dynamic programme over the cuts, in order). Returns the cuts
    and how many lie in a pause roomy enough for the dissolve."""
    radius = max(1, round(SEARCH_FRACTION * windows / chains))
    states: dict[int, tuple[tuple, list[int]]] = {0: ((0, 0, 0.0, 0, 0.0, 0.0), [])}
    info: dict[int, tuple] = {}
    for c in range(1, chains):
        ideal = c * windows / chains
        lo = max(c * MIN_WINDOWS_PER_CHAIN, windows - longest * (chains - c), int(ideal) - radius)
        hi = min(c * longest, windows - MIN_WINDOWS_PER_CHAIN * (chains - c), int(ideal) + 1 + radius)
        nxt: dict[int, tuple[tuple, list[int]]] = {}
        for k in range(lo, hi + 1):
            value, frame, pause, good = _candidate(db, pauses, holding, k, ideal, params)
            reach = [st for p, st in states.items() if MIN_WINDOWS_PER_CHAIN <= k - p <= longest]
            if not reach:
                continue
            total, path = max(reach, key=lambda st: st[0])
            nxt[k] = (tuple(a + b for a, b in zip(total, value)), path + [k])
            info[k] = (frame, pause, good, ideal, lo, hi)
        states = nxt
    last = [st for p, st in states.items() if MIN_WINDOWS_PER_CHAIN <= windows - p <= longest]
    total, path = max(last, key=lambda st: st[0])
    cuts = []
    for k in path:
        frame, pause, good, ideal, lo, hi = info[k]
        where = f"windows {lo}..{hi} around the balanced split {ideal:.1f} (chains of at most {longest} windows)"
        if pause is None:
            reason = f"no pause in reach: the quietest join frame of {where}"
        else:
            room = " that holds the whole dissolve" if good else ", too short for the whole dissolve"
            reason = (f"join at {frame / params.fps:.2f} s inside a {(pause[1] - pause[0]) / params.fps * 1000:.0f} ms "
                      f"pause{room}, of {where}")
        cuts.append(Cut(window=k, frame=frame, ideal=round(ideal, 2), pause=pause, reason=reason))
    return cuts, int(total[0])


def plan_cuts(db: np.ndarray, windows: int, chains: int, params: WindowParams) -> list[Cut]:
    """Where chains 1..chains-1 begin.

    Balance comes first, since the render ends with its longest chain: no chain gets more
    than the balanced ceil(windows / chains) windows plus a BALANCE_SLACK of it, and that
    slack is spent only when it puts more joins inside a pause roomy enough for the
    dissolve. Within the bound each cut takes the window whose join frame is in such a pause
    nearest its balanced split point; without one in reach, the longest pause, and without a
    pause, the quietest join frame."""
    if chains <= 1:
        return []
    pauses = find_pauses(db)
    holding = np.full(db.size, -1, np.int64)  # frame -> index of the pause holding it (with margin)
    for i, (a, b) in enumerate(pauses):
        if b - a > 2 * EDGE_FRAMES:
            holding[a + EDGE_FRAMES: b - EDGE_FRAMES] = i
    balanced = -(-windows // chains)
    best: tuple[int, list[Cut]] | None = None
    for slack in range(max(1, round(BALANCE_SLACK * balanced)) + 1):
        cuts, good = _best_cuts(db, pauses, holding, windows, chains, balanced + slack, params)
        if best is None or good > best[0]:
            best = (good, cuts)
        if good == len(cuts):
            break
    return best[1]


def blend_frames(cut: dict, limit: int) -> int:
    """How many frames before a join (a cut as plan.json stores it) to dissolve: at most
    `limit`, and only frames inside the pause (none when the cut found no pause: a dissolve
    over speech would blur the lips)."""
    pause = cut.get("pause")
    if not pause or limit <= 0:
        return 0
    return max(0, min(limit, cut["frame"] - pause[0] - 1))


def dissolve_into(frames: np.ndarray, target: np.ndarray, count: int) -> np.ndarray:
    """The last `count` of `frames` cross-faded towards `target` (the next chain's first
    frame): weights 1/(count+1) .. count/(count+1), so the step into `target` is as small as
    each step before it."""
    out = frames.copy()
    n = len(frames)
    for i in range(1, count + 1):
        a = i / (count + 1)
        t = n - count + i - 1
        out[t] = np.clip(frames[t].astype(np.float32) * (1 - a) + target.astype(np.float32) * a + 0.5,
                         0, 255).astype(np.uint8)
    return out
