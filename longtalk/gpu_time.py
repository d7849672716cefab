"""How long a window holds a GPU, and what that costs: the fleet's own history, else defaults.

History. A GPU worker keeps, per kind of window (`window_kind`: backend, mode, picture size
and frames), its last HISTORY windows: how long each held the worker (`busy_s`: from taking the
window to storing it, inputs and storing included: the worker takes no other window meanwhile)
and how long the backend rendered (`gpu_s`), and the gap from storing a chain's window to
taking the chain's next one here (`gap_s`: the chain's workflow task and the dispatch, when the
next window came to the same worker). Its fleet record (longtalk.fleet) carries their
means under "timings", so anything that reads the fleet registry reads the history: a handful
of small objects, no scan of stored windows. Records of workers gone for a day are dropped
with their history.

Defaults, when no worker has rendered this kind of window (`default_window_s`):

- comfyui: the published figure for a 4090-class GPU, about 80 s for a window of 81 frames at
  832x480 with a 4-step LoRA (DEFAULT_4090), scaled by pixels, frames and the default sampler's
  steps (I2V 6; V2V 4 starting at step 2: 2 run). A GPU with no figure of its own gets the
  4090-class one, and the source says so.
- timed: LONGTALK_TIMED_WINDOW_S (the backend sleeps that long per window).
- preview: PREVIEW_WINDOW_S (the CPU draws the frames; no GPU).

Prices (`Prices`): LONGTALK_GPU_PRICES, "kind=price" pairs: a price per GPU hour, or per second
with a "/s" suffix (a serverless pool's), for the GPU whose device name contains `kind`
(case-insensitive; the longest match wins; "*" matches any).
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

HISTORY = 20  # windows of each kind a worker remembers
DEFAULT_4090 = {"seconds": 80.0, "frames": 81, "width": 832, "height": 480, "steps": 4}
PREVIEW_WINDOW_S = 0.5
I2V_STEPS, V2V_STEPS = 6, 2  # longtalk.comfy.config.SamplerSettings' defaults (V2V: 4 from step 2)


def window_kind(backend: str, mode: str, width: int, height: int, frames: int) -> str:
    """The kind of window whose times are comparable: "comfyui|i2v-single|832x480|81"."""
    return f"{backend}|{mode}|{width}x{height}|{frames}"


class WindowTimes:
    """One worker's recent window times, by kind (held by its FleetRecord)."""

    def __init__(self) -> None:
        self._kinds: dict[str, collections.deque] = {}

    def add(self, kind: str, busy_s: float, gpu_s: float, gap_s: float | None = None) -> None:
        self._kinds.setdefault(kind, collections.deque(maxlen=HISTORY)).append((busy_s, gpu_s, gap_s))

    def summary(self) -> dict:
        """{kind: {"n", "busy_s", "gpu_s", "gap_s"}}: the means, as the fleet record carries them
        (gap_s None: no chain's next window came back to this worker)."""
        out = {}
        for kind, times in self._kinds.items():
            n = len(times)
            gaps = [t[2] for t in times if t[2] is not None]
            out[kind] = {"n": n, "busy_s": round(sum(t[0] for t in times) / n, 3),
                         "gpu_s": round(sum(t[1] for t in times) / n, 3),
                         "gap_s": round(sum(gaps) / len(gaps), 3) if gaps else None}
        return out


@dataclass(frozen=True)
class WindowTime:
    busy_s: float  # the worker is held this long per window
    gpu_s: float  # of which the backend renders
    source: str  # where the numbers come from
    windows: int = 0  # history: how many windows the means are of


def history(records: list[dict], kind: str) -> dict[str, WindowTime]:
    """Per GPU kind (device name): the mean window time of `kind` over the fleet records that
    have rendered it, weighted by their window counts."""
    sums: dict[str, list[float]] = {}
    for rec in records:
        t = (rec.get("timings") or {}).get(kind)
        if not t or not t.get("n"):
            continue
        s = sums.setdefault(rec.get("device") or "unknown", [0, 0.0, 0.0, 0])
        s[0] += t["n"]
        s[1] += t["busy_s"] * t["n"]
        s[2] += t["gpu_s"] * t["n"]
        s[3] += 1
    return {device: WindowTime(busy / n, gpu / n, f"history: the last {n} {kind} windows of {workers} "
                                                     f"{device} worker(s)", int(n))
            for device, (n, busy, gpu, workers) in sums.items()}


def default_window_s(device: str, backend: str, mode: str, width: int, height: int, frames: int,
                     timed_window_s: float) -> WindowTime:
    """A window's time with no history (see the module's docstring)."""
    if backend == "timed":
        return WindowTime(timed_window_s, timed_window_s, "default: LONGTALK_TIMED_WINDOW_S (timed backend)")
    if backend == "preview":
        return WindowTime(PREVIEW_WINDOW_S, PREVIEW_WINDOW_S, "default: preview backend (CPU, no GPU)")
    ref = DEFAULT_4090
    steps = V2V_STEPS if mode.startswith("v2v") else I2V_STEPS
    scale = (width * height) / (ref["width"] * ref["height"]) * frames / ref["frames"] * steps / ref["steps"]
    seconds = ref["seconds"] * scale
    own = "4090" in device
    where = "" if own else f" ({device or 'no GPU known'} has no figure of its own)"
    return WindowTime(seconds, seconds, f"default: the published 4090-class figure, {ref['seconds']:.0f} s per "
                                        f"{ref['frames']} frames at {ref['width']}x{ref['height']} with "
                                        f"{ref['steps']} steps, scaled by pixels, frames and {steps} steps{where}")


class Prices:
    """LONGTALK_GPU_PRICES parsed: the price of a second on a GPU kind."""

    def __init__(self, text: str) -> None:
        self.per_s: dict[str, float] = {}
        self.said: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in text.split(","))):
            kind, sep, raw = item.rpartition("=")
            raw = raw.strip()
            per_second = raw.endswith("/s")
            try:
                price = float(raw.removesuffix("/s").removesuffix("/h"))
            except ValueError:
                price = -1.0
            if not sep or not kind.strip() or price < 0:
                raise ValueError(f"LONGTALK_GPU_PRICES: {item!r} is not kind=price (per GPU hour) or "
                                 f"kind=price/s (per second)")
            self.per_s[kind.strip().lower()] = price if per_second else price / 3600
            self.said[kind.strip().lower()] = raw if per_second else f"{raw}/h"

    def for_device(self, device: str) -> tuple[float, str] | None:
        """(price per second, where it came from) for a device name; None: no price set."""
        name = (device or "").lower()
        hits = [k for k in self.per_s if k != "*" and k in name]
        kind = max(hits, key=len) if hits else ("*" if "*" in self.per_s else None)
        if kind is None:
            return None
        return self.per_s[kind], f"LONGTALK_GPU_PRICES {kind}={self.said[kind]}"


def dispatch_gap(records: list[dict], kind: str) -> float | None:
    """The mean gap between a chain's windows (`gap_s`) over the fleet records that measured it
    for `kind`, weighted by their window counts; None when none did."""
    pairs = [(t["n"], t["gap_s"]) for r in records for t in [(r.get("timings") or {}).get(kind) or {}]
             if t.get("gap_s") is not None and t.get("n")]
    return sum(n * g for n, g in pairs) / sum(n for n, _ in pairs) if pairs else None


# A chain waits for the worker of its previous window (its ComfyUI holds the render's reference)
# at most this share of a window's expected time. A wait longer than a window never runs out
# while two chains of one render are pinned to the same worker: they take turns on one GPU while
# another idles (bench/RESULTS.md, the estimate at 2 workers behind 2 renders).
AFFINITY_SHARE = 0.5


def affinity_wait_s(settings, backend: str, spec) -> int:
    """Seconds a chain's next window waits for its previous worker: LONGTALK_AFFINITY_WAIT_S, at
    most AFFINITY_SHARE of the window's expected time (the defaults above), at least 1; 0: off."""
    if settings.affinity_wait_s <= 0:
        return 0
    from .visibility import mode_of

    expected = default_window_s("", backend, mode_of(spec.input_type, spec.person_count), spec.width, spec.height,
                                spec.window_params.window, settings.timed_window_s).busy_s
    return max(1, min(int(settings.affinity_wait_s), math.ceil(AFFINITY_SHARE * expected)))
