"""Chain planning: how many independent chains a render is cut into, and where.

A chain is a run of consecutive windows rendered in order with frame carry-over; chains
run in parallel on different GPUs. Where one chain ends and the next begins, the next
restarts from the reference image instead of the previous window's tail, so the picture
jumps there. The planner therefore

- uses no more chains than the render's length makes worthwhile: at least
  MIN_WINDOWS_PER_CHAIN windows per chain (a 10-second render stays one chain), and no more
  than the GPUs it may use;
- cuts near the balanced split points (chain c starts near c * n / chains), so the chains
  finish together, but moves each cut, within a few windows, to where the join frame (the
  new chain's first kept frame) falls inside the longest speech pause: the mouth is closed
  on both sides of the join and only the head pose differs.

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

from .windows import WindowParams

# Fewer windows than this per chain are not worth a visible join: with 81/9/25 that is
# about 15 s of video per chain.
MIN_WINDOWS_PER_CHAIN = 5
# A cut may move this fraction of a chain's length away from its balanced split point (at
# least one window) to reach a pause: the chains then finish within a few percent.
SEARCH_FRACTION = 0.06
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
    """Loudness (dBFS) of each video frame's audio (consecutive 40 ms blocks at 25 fps)."""
    usable = samples.size // samples_per_frame * samples_per_frame
    blocks = np.asarray(samples[:usable], np.float32).reshape(-1, samples_per_frame)
    rms = np.sqrt(np.mean(np.square(blocks, dtype=np.float64), axis=1))
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


def plan_cuts(db: np.ndarray, windows: int, chains: int, params: WindowParams) -> list[Cut]:
    """Where chains 1..chains-1 begin: near each balanced split point, the window whose join
    frame lies deepest inside the longest pause; without a pause in reach, the quietest join
    frame (ties: the window nearest the split point)."""
    if chains <= 1:
        return []
    pauses = find_pauses(db)
    holding = np.full(db.size, -1, np.int64)  # frame -> index of the pause holding it (with margin)
    for i, (a, b) in enumerate(pauses):
        if b - a > 2 * EDGE_FRAMES:
            holding[a + EDGE_FRAMES: b - EDGE_FRAMES] = i
    radius = max(1, round(SEARCH_FRACTION * windows / chains))
    cuts: list[Cut] = []
    for c in range(1, chains):
        ideal = c * windows / chains
        # every chain keeps at least MIN_WINDOWS_PER_CHAIN windows (chain_count left room)
        lo_min = (cuts[-1].window if cuts else 0) + MIN_WINDOWS_PER_CHAIN
        hi_max = windows - MIN_WINDOWS_PER_CHAIN * (chains - c)
        lo, hi = max(lo_min, round(ideal) - radius), min(hi_max, round(ideal) + radius)
        if lo > hi:
            lo = hi = min(max(lo_min, round(ideal)), hi_max)
        best = None
        for k in range(lo, hi + 1):
            frame = k * params.stride + params.motion
            f = min(frame, db.size - 1)
            p = int(holding[f]) if db.size else -1
            length = pauses[p][1] - pauses[p][0] if p >= 0 else 0
            depth = min(f - pauses[p][0], pauses[p][1] - f) if p >= 0 else 0
            # the longest pause first, then the join deepest inside it, then the quietest
            # frame, then the window nearest the balanced split
            score = (length, depth, -float(db[f]) if db.size else 0.0, -abs(k - ideal))
            if best is None or score > best[0]:
                best = (score, k, frame, pauses[p] if p >= 0 else None)
        _, k, frame, pause = best
        where = f"windows {lo}..{hi} around the balanced split {ideal:.1f}"
        if pause is not None:
            reason = (f"join at {frame / params.fps:.2f} s inside the longest pause in reach "
                      f"({(pause[1] - pause[0]) / params.fps * 1000:.0f} ms) of {where}")
        else:
            reason = f"no pause in reach: the quietest join frame of {where}"
        cuts.append(Cut(window=k, frame=frame, ideal=round(ideal, 2), pause=pause, reason=reason))
    return cuts


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
