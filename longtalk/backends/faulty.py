"""A render backend that misbehaves on purpose, to rehearse the quality guard without a GPU.

FaultyBackend wraps another backend (the preview in practice) and spoils some of its windows
as described by a spec string, the operator setting LONGTALK_PREVIEW_FAULTS, e.g.
"blank:5,frozen:9@1,drift:0.03,face:0.02". Items, comma-separated:

- blank:K     window K comes back black after its carried frames (WanVideoWrapper #1143);
- frozen:K    window K's first new frame is repeated to its end;
- drift:X     a warm colour cast: each window adds X (a fraction of full scale, rounded to
              whole grey levels: 0.03 is 8/255) to red and takes it from blue, on top of
              the cast its carried tail already shows, so it
              accumulates along a chain as the VAE round trip of the pixel tail does
              (Wan2GP #2132); a chain start (the tail is the reference) begins again at 0;
- face:X      the picture slides right (X of the frame width per window, a quarter of that
              down) and shrinks (by X per window) about the frame centre, accumulating the
              same way: a face that wanders and shrinks.

blank and frozen take an attempt, K@A: only attempt A of window K is spoilt, so a re-render
with the next seed comes back clean (without @, every attempt is). Attempt A is the quality
guard's re-render job.redo = A - 1 (a retried activity renders the same redo: the same attempt).

How the accumulating faults carry through the tail: the cast (and the slide) that the
tail's last frame shows is measured against its clean counterpart (the reference, or for
V2V the source frame under it), the tail is cleaned of it before the wrapped backend sees
it, and the new frames get the tail's level plus X, ramped across the window (so the seam
stays smooth). Nothing is remembered between windows: any worker can render the next one.
The tail contract holds: frames [0, M) of the result are job.tail.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from .base import ProgressFn, RenderBackend, WindowJob

ENV = "LONGTALK_PREVIEW_FAULTS"
KINDS = ("blank", "frozen", "drift", "face")
MIN_AMOUNT, MAX_AMOUNT = 0.004, 0.5  # drift and face steps per window: at least one grey level, at most half
FACE_SEARCH = (0.0, 0.8)  # the slide levels the tail is searched for
FACE_SEARCH_WIDTH = 128  # ... on a copy this wide
RESIDUAL_FADE = 8  # frames over which the seam residual of the drift and face faults fades out


@dataclass(frozen=True)
class FaultSpec:
    blank: dict[int, frozenset[int] | None] = field(default_factory=dict)  # window -> attempts (None: all)
    frozen: dict[int, frozenset[int] | None] = field(default_factory=dict)
    drift: float = 0.0
    face: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.blank or self.frozen or self.drift or self.face)

    @classmethod
    def parse(cls, text: str | None) -> "FaultSpec":
        """Parse LONGTALK_PREVIEW_FAULTS; empty (or None) means no faults."""
        if text is None or not text.strip():
            return cls()
        windows: dict[str, dict[int, frozenset[int] | None]] = {"blank": {}, "frozen": {}}
        amounts: dict[str, float] = {}
        for raw in text.split(","):
            item = raw.strip()

            def bad(reason: str) -> ValueError:
                return ValueError(f"{ENV}: {item!r}: {reason}")

            kind, sep, arg = item.partition(":")
            kind, arg = kind.strip(), arg.strip()
            if not item:
                raise ValueError(f"{ENV}: empty item in {text!r} (items are kind:value, comma-separated)")
            if kind not in KINDS:
                raise bad(f"unknown fault {kind!r}; choose from {', '.join(KINDS)}")
            if not sep or not arg:
                raise bad(f"needs a value ({kind}:{'K' if kind in windows else 'X'})")
            if kind in windows:
                k_text, at, a_text = arg.partition("@")
                k = _int(k_text, 0)
                if k is None:
                    raise bad("the window must be an integer >= 0")
                attempt = None
                if at:
                    attempt = _int(a_text, 1)
                    if attempt is None:
                        raise bad("the attempt after @ must be an integer >= 1")
                other = "frozen" if kind == "blank" else "blank"
                if k in windows[other]:
                    raise bad(f"window {k} is already {other}")
                if attempt is None or windows[kind].get(k, frozenset()) is None:
                    windows[kind][k] = None
                else:
                    windows[kind][k] = windows[kind].get(k, frozenset()) | {attempt}
            else:
                if kind in amounts:
                    raise bad(f"{kind} is given twice")
                try:
                    x = float(arg)
                except ValueError:
                    raise bad("the amount must be a number") from None
                if not (math.isfinite(x) and MIN_AMOUNT <= x <= MAX_AMOUNT):
                    raise bad(f"the amount must be in [{MIN_AMOUNT}, {MAX_AMOUNT}] "
                              "(a fraction of full scale per window)")
                amounts[kind] = x
        return cls(blank=windows["blank"], frozen=windows["frozen"], **amounts)


def _int(text: str, least: int) -> int | None:
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value >= least else None


# ----------------------------------------------------------------------------- the accumulating faults


def _cast(level: float) -> np.ndarray:
    """The colour cast at a drift level: + level of full scale on red, - on blue, in whole
    grey levels (so the cast a frame shows is exactly the level it was given)."""
    v = float(np.rint(level * 255.0))
    return np.array([v, 0.0, -v], np.float32)


def cast_level(frame: np.ndarray, clean: np.ndarray) -> float:
    """The drift level a frame shows against its clean counterpart: the median, over every
    4th pixel of every 4th row, of half the red-minus-blue difference (a change of brightness
    cancels out; the median ignores what moved, such as the mouth, and clipped pixels while
    they are fewer than half)."""
    d = frame[::4, ::4].astype(np.int16) - clean[::4, ::4].astype(np.int16)
    return float(np.median(d[..., 0] - d[..., 2])) / 2.0 / 255.0


def _slide(level: float, width: int, height: int, f: float = 1.0) -> np.ndarray:
    """The affine matrix of the face fault at a level (on a copy scaled by f)."""
    k = 1.0 - level
    cx, cy = width * f / 2.0, height * f / 2.0
    return np.array([[k, 0.0, (1.0 - k) * cx + level * width * f],
                     [0.0, k, (1.0 - k) * cy + 0.25 * level * height * f]], np.float64)


def slide_level(frame: np.ndarray, clean: np.ndarray) -> float:
    """The face-fault level that, applied to `clean`, best matches `frame` (a 1-D search on
    small grey copies: coarse, then fine)."""
    h, w = frame.shape[:2]
    f = min(1.0, FACE_SEARCH_WIDTH / w)
    size = (max(8, round(w * f)), max(8, round(h * f)))

    def small(img: np.ndarray) -> np.ndarray:
        return cv2.resize(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA).astype(np.float32)

    target, base = small(frame), small(clean)

    def err(level: float) -> float:
        moved = cv2.warpAffine(base, _slide(level, w, h, f), size, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)
        return float(np.mean(np.abs(moved - target)))

    lo, hi = FACE_SEARCH
    best = min(np.linspace(lo, hi, 81), key=err)
    step = (hi - lo) / 80
    return float(min(np.linspace(max(lo, best - step), min(hi, best + step), 21), key=err))


def _apply(frame: np.ndarray, cast: float, slide: float) -> np.ndarray:
    h, w = frame.shape[:2]
    out = frame
    if slide:
        out = cv2.warpAffine(out, _slide(slide, w, h), (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if cast:
        out = np.clip(out.astype(np.float32) + _cast(cast), 0, 255).round().astype(np.uint8)
    return out


def _undo(frame: np.ndarray, cast: float, slide: float) -> np.ndarray:
    h, w = frame.shape[:2]
    out = frame
    if cast:
        out = np.clip(out.astype(np.float32) - _cast(cast), 0, 255).round().astype(np.uint8)
    if slide:
        back = cv2.invertAffineTransform(_slide(slide, w, h))
        out = cv2.warpAffine(out, back, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out


# ----------------------------------------------------------------------------- the backend


class FaultyBackend:
    """Wraps a RenderBackend; renders through it and spoils windows as `spec` says."""

    def __init__(self, inner: RenderBackend, spec: FaultSpec | str) -> None:
        self.inner = inner
        self.name = inner.name
        self.spec = spec if isinstance(spec, FaultSpec) else FaultSpec.parse(spec)
        # (window, attempt, faults applied) of the latest calls, for tests and logs
        self.applied: deque[tuple[int, int, tuple[str, ...]]] = deque(maxlen=1024)
        self._lock = threading.Lock()

    def _hit(self, table: dict[int, frozenset[int] | None], job: WindowJob, attempt: int) -> bool:
        if job.index not in table:
            return False
        attempts = table[job.index]
        return attempts is None or attempt in attempts

    async def render_window(self, job: WindowJob, progress: ProgressFn | None = None) -> np.ndarray:
        spec = self.spec
        if not spec:
            return await self.inner.render_window(job, progress)
        attempt = job.redo + 1
        m, n = job.spec.motion, job.spec.window
        last = job.tail[-1]
        clean_last = job.source[m - 1] if job.source is not None else job.reference
        cast = round(cast_level(last, clean_last) * 255.0) / 255.0 if spec.drift else 0.0
        slide = slide_level(_undo(last, cast, 0.0), clean_last) if spec.face else 0.0
        drift_step = round(spec.drift * 255.0) / 255.0  # whole grey levels per window
        inner_job = job
        if cast or slide:
            inner_job = dataclasses.replace(job, tail=np.stack([_undo(f, cast, slide) for f in job.tail]))
        frames = await self.inner.render_window(inner_job, progress)
        out = frames.copy()
        out[:m] = job.tail
        applied = []
        if spec.drift or spec.face:
            applied += [name for name, on in (("drift", spec.drift), ("face", spec.face)) if on]
            # what cleaning and spoiling again cannot restore (clipped values, the border a
            # slide uncovers) is faded out over the first new frames, as the preview does
            residual = last.astype(np.float32) - _apply(frames[m - 1], cast, slide).astype(np.float32)
            for i in range(m, n):
                ramp = (i - m + 1) / (n - m)
                spoilt = _apply(frames[i], cast + drift_step * ramp, slide + spec.face * ramp)
                if i - m + 1 < RESIDUAL_FADE:
                    fade = 0.5 * (1.0 + math.cos(math.pi * (i - m + 1) / RESIDUAL_FADE))
                    spoilt = np.clip(spoilt + residual * fade, 0, 255).round().astype(np.uint8)
                out[i] = spoilt
        if self._hit(spec.blank, job, attempt):
            out[m:] = 0
            applied.append("blank")
        elif self._hit(spec.frozen, job, attempt):
            out[m + 1 :] = out[m]
            applied.append("frozen")
        with self._lock:
            self.applied.append((job.index, attempt, tuple(applied)))
        return out

    async def close(self) -> None:
        await self.inner.close()
