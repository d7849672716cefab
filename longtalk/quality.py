"""How good is one rendered window? Cheap measurements on the frames a GPU worker holds.

measure_window() looks at a window's new frames (those after the carried tail) and returns a
WindowQuality, a handful of numbers that serialise to a small JSON dict (quality.json beside
the window). classify() turns them into a Verdict against QualityBounds. Pure: numpy and
OpenCV on arrays, no I/O, no model (the face finder is OpenCV's bundled Haar cascade).

What is measured (frames are uint8 RGB; float frames are taken in [0, 1], ComfyUI's IMAGE):

- nonfinite: NaN or infinite values (float frames only); clipped: the share of pixels with a
  channel at the end of the range (0 or 255; for floats outside [0, 1]) beyond the
  reference's own share.
- blank_frames: new frames that are black (mean luma < 12), white (> 243) or flat (luma
  standard deviation < 2 grey levels), each only where the reference is not so itself.
- frozen: motion of a frame is the mean absolute grey difference to the previous frame, whole
  frame or mouth region, whichever is larger. Speech frames are those whose loudness (RMS of
  the 640 samples of 16 kHz audio under the frame at 25 fps; any speaker) is above
  SPEECH_DB. still_speech is the share of speech frames with motion under STILL; where no
  face (so no mouth region) is known, under STILL_WHOLE: the whole frame of a talking head
  barely moves when the face is small, so only a picture that hardly changes at all counts.
- colour: delta_e is the CIE76 Delta E*ab (Euclidean distance in CIE L*a*b*, sRGB D65 as
  OpenCV converts it) between the mean Lab colour of a frame and that of the reference, on a
  4x smaller copy, averaged over the sampled frames; delta_e_face the same inside the face
  box (its central part: skin, not hair or background).
- sharpness: variance of the Laplacian of the grey face box, as a ratio to the reference's
  (median over the sampled frames).
- face: the reference's face is found once (ReferenceStats); in each sampled frame it is
  searched near the reference's size (0.6x-1.6x). face_found is the share of sampled frames
  where it is found, face_offset the distance of its centre from the reference's in
  reference face widths, face_size its width over the reference's (medians over the frames
  where it is found; with two people the worse person counts).
- lipsync: the Pearson correlation, over the new frames, between the motion energy of the
  mouth region (the lower middle of the face box: mean grey difference to the previous frame)
  and the change of that speaker's loudness from the previous frame (|dB difference|; a mouth
  moves when the sound starts, stops or changes, so motion follows the change of loudness,
  not its level: a held vowel is loud and still). lipsync_lag is the shift, in frames within
  +-LAG_FRAMES, where the correlation peaks (positive: the mouth moves after the sound). A
  proxy with known limits: it sees that the mouth moves when the sound changes and rests in
  pauses, not whether the mouth shapes match the phonemes; head motion adds mouth-region
  energy that has nothing to do with speech (a swaying head lowers it); the box is the face
  box's lower middle, so a turned head measures the cheek; a window with little change in
  the audio (silence, or one speaker silent) gives nothing to correlate (None).
- seam: the grey difference between the last carried frame and the first new one, over the
  mean difference between consecutive new frames (1 = as smooth as the interior).

Cost: the whole-frame measures (grey motion, blank, clipping) use every new frame; colour,
face and sharpness use every SAMPLE_STEP-th new frame and the last one. bench/quality.py
measures the time per 81 frames at 832x480 on one core.

V2V: pass the window's source frames (N, H, W, 3) as `reference`; every sampled frame is then
compared with its own source frame (the model should keep the source's colours and face
position), and reference_stats must be None.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np

from longtalk.audio import block_rms, to_db
from longtalk.windows import MODEL_SAMPLE_RATE

__all__ = [
    "QualityBounds", "ReferenceStats", "Verdict", "WindowQuality", "classify", "measure_window",
]

SAMPLE_STEP = 6  # colour, face and sharpness on every 6th new frame (and the last)
SMALL = 4  # colour is measured on a copy this many times smaller
SPEECH_DB = -40.0  # a frame whose audio RMS (dBFS) is above this has speech
LOUDNESS_FLOOR_DB = -60.0  # loudness below this counts as this (for the lip-sync correlation)
LAG_FRAMES = 6  # the lip-sync lag is searched within +-6 frames (240 ms at 25 fps)
STILL = 0.05  # grey levels: a frame that differs less than this from the previous one does not move
STILL_WHOLE = 0.01  # ... the same without a mouth region to look at (no face found): whole frame only
SEAM_FLOOR = 0.05  # grey levels: the interior motion a seam is compared with is at least this
BLACK, WHITE, FLAT = 12.0, 243.0, 2.0  # luma mean below / above, luma standard deviation below
FACE_SEARCH_PX = 80  # a face is searched on a copy where the reference's face is about this wide
FACE_MIN, FACE_MAX = 0.6, 1.6  # sizes searched, relative to the reference's face
FACE_INNER = 0.6  # the central part of the face box taken for its colour
MOUTH_BOX = (0.25, 0.75, 0.62, 0.98)  # x0, x1, y0, y1 of the mouth region, in face box fractions

_LOCAL = threading.local()  # one cascade per thread: detectMultiScale is not documented thread-safe


# ----------------------------------------------------------------------------- faces


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2.0

    @property
    def cy(self) -> float:
        return self.y + self.h / 2.0

    def part(self, x0: float, x1: float, y0: float, y1: float, shape: tuple[int, ...], scale: float = 1.0):
        """Slices of the sub-box (fractions of this box) in an image of `shape`, coordinates / scale."""
        rows, cols = shape[:2]
        xa = int(round((self.x + x0 * self.w) / scale))
        xb = int(round((self.x + x1 * self.w) / scale))
        ya = int(round((self.y + y0 * self.h) / scale))
        yb = int(round((self.y + y1 * self.h) / scale))
        xa, xb = max(0, min(xa, cols - 1)), max(1, min(xb, cols))
        ya, yb = max(0, min(ya, rows - 1)), max(1, min(yb, rows))
        return slice(ya, max(ya + 1, yb)), slice(xa, max(xa + 1, xb))


def _cascade() -> cv2.CascadeClassifier:
    cascade = getattr(_LOCAL, "cascade", None)
    if cascade is None:
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise RuntimeError(f"could not load the Haar cascade {path}")
        _LOCAL.cascade = cascade
    return cascade


def _regions(width: int, people: int) -> list[tuple[int, int]]:
    """The vertical slab of the frame each person owns (the preview backend's layout)."""
    return [(0, width)] if people == 1 else [(0, width // 2), (width // 2, width)]


def _search(gray: np.ndarray, region: tuple[int, int], scale: float, min_side: float, max_side: float | None,
            neighbours: int) -> Box | None:
    """The largest face in the region of a grey image, searched on a copy scaled by `scale`."""
    x0, x1 = region
    crop = gray[:, x0:x1]
    if scale < 1.0:
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    crop = cv2.equalizeHist(np.ascontiguousarray(crop))
    lo = max(24, int(min_side))
    if lo > min(crop.shape):
        return None
    extra = {} if max_side is None else {"maxSize": (int(max_side),) * 2}
    found = _cascade().detectMultiScale(crop, scaleFactor=1.1, minNeighbors=neighbours, minSize=(lo, lo), **extra)
    if not len(found):
        return None
    fx, fy, fw, fh = max((tuple(int(v) for v in f) for f in found), key=lambda f: (f[2] * f[3], -f[1], -f[0]))
    return Box(x=fx / scale + x0, y=fy / scale, w=fw / scale, h=fh / scale)


def _scale_for(face_w: float) -> float:
    return min(1.0, FACE_SEARCH_PX / face_w)


def _find_near(gray: np.ndarray, region: tuple[int, int], face_w: float) -> Box | None:
    """A face of about face_w pixels (FACE_MIN..FACE_MAX of it): the per-frame search."""
    s = _scale_for(face_w)
    return _search(gray, region, s, FACE_MIN * face_w * s, FACE_MAX * face_w * s, 3)


def _find(gray: np.ndarray, region: tuple[int, int]) -> Box | None:
    """A face of any size (once per reference), then searched again as frames are, so that
    the reference's box and the frames' boxes come from the same search."""
    rows = gray.shape[0]
    side = min(rows, region[1] - region[0])
    s = min(1.0, 240.0 / side)
    first = _search(gray, region, s, 0.12 * side * s, None, 5)
    if first is None:
        return None
    return _find_near(gray, region, first.w) or first


# ----------------------------------------------------------------------------- images


def _lab_mean(small_rgb: np.ndarray) -> np.ndarray:
    lab = cv2.cvtColor(small_rgb.astype(np.float32) * (1.0 / 255.0), cv2.COLOR_RGB2Lab)
    return lab.reshape(-1, 3).mean(axis=0)


def _small(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (max(1, w // SMALL), max(1, h // SMALL)), interpolation=cv2.INTER_AREA)


def _sharpness(gray: np.ndarray, box: Box) -> float:
    ys, xs = box.part(0.1, 0.9, 0.1, 0.9, gray.shape)
    lap = cv2.Laplacian(gray[ys, xs], cv2.CV_32F)
    return float(lap.var())


def _clipped(rgb: np.ndarray) -> float:
    inside = cv2.inRange(rgb, (1, 1, 1), (254, 254, 254))
    return 1.0 - cv2.countNonZero(inside) / float(inside.size)


def _delta_e(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


@dataclass(frozen=True)
class ImageStats:
    """What a frame is compared against: the reference image's (or a V2V source frame's) numbers."""

    faces: tuple[Box | None, ...]  # one per person, None where no face was found
    lab: np.ndarray  # mean L*a*b*
    face_lab: tuple[np.ndarray | None, ...]
    sharpness: tuple[float | None, ...]
    luma_mean: float
    luma_std: float
    clipped: float


def _image_stats(rgb: np.ndarray, gray: np.ndarray, faces: tuple[Box | None, ...]) -> ImageStats:
    small = _small(rgb)
    face_lab = tuple(None if b is None else _lab_mean(small[_inner(b, small.shape)]) for b in faces)
    sharp = tuple(None if b is None else _sharpness(gray, b) for b in faces)
    mean, std = cv2.meanStdDev(gray)
    return ImageStats(faces=faces, lab=_lab_mean(small), face_lab=face_lab, sharpness=sharp,
                      luma_mean=float(mean[0, 0]), luma_std=float(std[0, 0]), clipped=_clipped(rgb))


def _inner(box: Box, small_shape: tuple[int, ...]):
    m = (1.0 - FACE_INNER) / 2.0
    return box.part(m, 1.0 - m, m, 1.0 - m, small_shape, scale=SMALL)


@dataclass(frozen=True)
class ReferenceStats:
    """The reference image's numbers, computed once per render (ReferenceStats.of)."""

    height: int
    width: int
    people: int
    image: ImageStats

    @property
    def faces(self) -> tuple[Box | None, ...]:
        return self.image.faces

    @classmethod
    def of(cls, reference: np.ndarray, people: int = 1) -> "ReferenceStats":
        ref = _as_uint8_image(reference, "reference")
        if people not in (1, 2):
            raise ValueError(f"people must be 1 or 2, got {people!r}")
        gray = cv2.cvtColor(ref, cv2.COLOR_RGB2GRAY)
        faces = tuple(_find(gray, r) for r in _regions(ref.shape[1], people))
        return cls(height=ref.shape[0], width=ref.shape[1], people=people, image=_image_stats(ref, gray, faces))


def _as_uint8_image(img, name: str) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{name} must be an (H, W, 3) RGB array, got {getattr(img, 'shape', type(img).__name__)}")
    if img.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 RGB, got dtype {img.dtype}")
    if min(img.shape[:2]) < 16:
        raise ValueError(f"{name} must be at least 16x16 pixels, got {img.shape[1]}x{img.shape[0]}")
    return np.ascontiguousarray(img)


# ----------------------------------------------------------------------------- measurement


@dataclass
class WindowQuality:
    """One window's measurements (see the module docstring); None where it cannot be measured."""

    frames: int  # new frames measured
    sampled: int  # of which colour, face and sharpness were measured on
    nonfinite: int
    clipped: float
    blank_frames: int
    blank_kinds: list[str]
    speech_frames: int
    still_speech: float | None  # None: no speech in the new frames
    motion: float  # mean grey difference between consecutive new frames
    delta_e: float
    delta_e_face: float | None
    sharpness: float | None
    face_found: float | None  # None: the reference shows no face
    face_offset: float | None
    face_size: float | None
    lipsync: float | None
    lipsync_lag: int | None  # frames; positive: the mouth moves after the sound
    seam: float | None  # None: no carried frame (keep_from == 0)
    seam_jump: float | None
    version: int = 1

    def to_json(self) -> dict:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = round(value, 4)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "WindowQuality":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _validate(frames, keep_from, reference, audio, fps) -> None:
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[3] != 3:
        got = getattr(frames, "shape", type(frames).__name__)
        raise ValueError(f"frames must be an (N, H, W, 3) RGB array, got {got}")
    if not (frames.dtype == np.uint8 or np.issubdtype(frames.dtype, np.floating)):
        raise ValueError(f"frames must be uint8 or float RGB, got dtype {frames.dtype}")
    n, h, w = frames.shape[:3]
    if isinstance(keep_from, bool) or not isinstance(keep_from, (int, np.integer)) or not 0 <= keep_from <= n - 2:
        raise ValueError(f"keep_from must be an integer with 0 <= keep_from <= N - 2 ({n - 2}), got {keep_from!r}")
    if isinstance(fps, bool) or not isinstance(fps, int) or fps <= 0 or MODEL_SAMPLE_RATE % fps:
        raise ValueError(f"fps must be a positive integer dividing {MODEL_SAMPLE_RATE}, got {fps!r}")
    want = (h, w, 3) if not isinstance(reference, np.ndarray) or reference.ndim != 4 else (n, h, w, 3)
    if not isinstance(reference, np.ndarray) or reference.shape != want:
        got = getattr(reference, "shape", type(reference).__name__)
        raise ValueError(f"reference must have shape {(h, w, 3)} (or {(n, h, w, 3)}: V2V source frames), got {got}")
    if reference.dtype != np.uint8:
        raise ValueError(f"reference must be uint8 RGB, got dtype {reference.dtype}")
    if not isinstance(audio, (list, tuple)) or len(audio) not in (1, 2):
        count = len(audio) if isinstance(audio, (list, tuple)) else type(audio).__name__
        raise ValueError(f"audio must be a list of 1 or 2 tracks (one per speaker), got {count}")
    need = n * (MODEL_SAMPLE_RATE // fps)
    for i, track in enumerate(audio):
        if not isinstance(track, np.ndarray) or track.ndim != 1 or not np.issubdtype(track.dtype, np.floating):
            raise ValueError(f"audio[{i}] must be a 1-D float array of 16 kHz samples")
        if track.shape[0] != need:
            raise ValueError(
                f"audio[{i}] must hold N * {MODEL_SAMPLE_RATE // fps} = {need} samples, got {track.shape[0]}")


def _to_uint8(frames: np.ndarray) -> tuple[np.ndarray, int, float]:
    """uint8 frames, the count of non-finite values and the share of out-of-range pixels (floats)."""
    if frames.dtype == np.uint8:
        return frames, 0, 0.0
    finite = np.isfinite(frames)
    nonfinite = int(finite.size - np.count_nonzero(finite))
    clean = np.where(finite, frames, 0.0)
    outside = np.any((clean < 0.0) | (clean > 1.0), axis=3)
    frac = float(np.count_nonzero(outside)) / outside.size
    return np.clip(np.rint(clean * 255.0), 0, 255).astype(np.uint8), nonfinite, frac


def _loudness(audio: list[np.ndarray], n: int, fps: int) -> np.ndarray:
    """dBFS per video frame, one row per speaker."""
    spf = MODEL_SAMPLE_RATE // fps
    return np.stack([to_db(block_rms([np.asarray(t, np.float32)], spf))[:n] for t in audio])


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(cv2.mean(cv2.absdiff(a, b))[0])


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    if x.size < 3 or float(np.std(x)) < 1e-6 or float(np.std(y)) < 1e-6:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _lipsync(motion: np.ndarray, change: np.ndarray, start: int) -> tuple[float | None, int | None]:
    """Correlation of mouth motion (frames start, start+1, ...) with the loudness change per
    frame (change[f] for frame f), at lag 0, and the lag within +-LAG_FRAMES where it peaks."""
    frames = np.arange(start, start + motion.size)
    at_zero, best = None, None
    for lag in range(-LAG_FRAMES, LAG_FRAMES + 1):
        src = frames - lag
        ok = (src >= 1) & (src < change.size)
        r = _pearson(motion[ok], change[src[ok]])
        if lag == 0:
            at_zero = r
        if r is not None and (best is None or r > best[0]):
            best = (r, lag)
    return at_zero, (best[1] if at_zero is not None and best is not None else None)


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def _worst(values: list[float | None], key) -> float | None:
    known = [v for v in values if v is not None]
    return max(known, key=key) if known else None


def measure_window(frames: np.ndarray, keep_from: int, reference: np.ndarray, audio: list[np.ndarray], fps: int,
                   reference_stats: ReferenceStats | None = None) -> WindowQuality:
    """Measure the new frames [keep_from, N) of one window.

    frames: (N, H, W, 3) RGB, uint8 (or float in [0, 1]); frames [0, keep_from) are the
    carried tail (frame keep_from - 1 is the seam's other side). reference: the image that
    conditions the render, (H, W, 3) uint8, or for V2V the window's (N, H, W, 3) source frames.
    audio: the window's audio, one float32 16 kHz mono array of N * 16000 / fps samples per
    speaker (the number of speakers is the number of faces looked for). reference_stats:
    ReferenceStats.of(reference, len(audio)), computed once per render and passed to every
    window (computed here when None; must be None for V2V).
    """
    _validate(frames, keep_from, reference, audio, fps)
    n = frames.shape[0]
    people = len(audio)
    frames8, nonfinite, out_of_range = _to_uint8(frames)
    v2v = reference.ndim == 4
    if v2v and reference_stats is not None:
        raise ValueError("reference_stats must be None when reference holds V2V source frames")
    if reference_stats is None and not v2v:
        reference_stats = ReferenceStats.of(reference, people)
    if reference_stats is not None and (
        (reference_stats.height, reference_stats.width) != frames.shape[1:3] or reference_stats.people != people
    ):
        raise ValueError(
            f"reference_stats is for {reference_stats.width}x{reference_stats.height} with "
            f"{reference_stats.people} people, the frames are {frames.shape[2]}x{frames.shape[1]} with {people}"
        )

    gray = {i: cv2.cvtColor(frames8[i], cv2.COLOR_RGB2GRAY) for i in range(max(0, keep_from - 1), n)}
    sampled = sorted(set(range(keep_from, n, SAMPLE_STEP)) | {n - 1})
    if v2v:
        refs = _source_stats(reference, sampled, people)
        base = refs[sampled[0]]
    else:
        assert reference_stats is not None
        base = reference_stats.image
        refs = {i: base for i in sampled}
    blank_frames, blank_kinds, clipped = _blank(frames8, gray, range(keep_from, n), base)
    faces = _faces(frames8, gray, refs, people)
    motion = _motion(gray, keep_from, audio, fps, [faces.window_box(p) or base.faces[p] for p in range(people)])
    return WindowQuality(
        frames=n - keep_from, sampled=len(sampled), nonfinite=nonfinite,
        clipped=max(0.0, max(clipped, out_of_range) - base.clipped),
        blank_frames=blank_frames, blank_kinds=blank_kinds, delta_e=float(np.mean(faces.delta_e)),
        delta_e_face=_worst([float(np.mean(v)) if v else None for v in faces.delta_e_face], key=lambda x: x),
        sharpness=_worst([_median(v) for v in faces.sharpness], key=lambda x: -x),
        face_found=faces.found_share(),
        face_offset=_worst([_median(v) for v in faces.offsets], key=lambda x: x),
        face_size=_worst([_median(v) for v in faces.sizes], key=lambda x: abs(math.log(x))),
        **motion,
    )


def _source_stats(source: np.ndarray, sampled: list[int], people: int) -> dict[int, ImageStats]:
    """V2V: the numbers of each sampled source frame (faces searched near the last one found)."""
    regions = _regions(source.shape[2], people)
    refs: dict[int, ImageStats] = {}
    last: tuple[Box | None, ...] = (None,) * people
    for i in sampled:
        g = cv2.cvtColor(source[i], cv2.COLOR_RGB2GRAY)
        last = tuple(_find(g, r) if b is None else _find_near(g, r, b.w) for r, b in zip(regions, last, strict=True))
        refs[i] = _image_stats(source[i], g, last)
    return refs


def _blank(frames8: np.ndarray, gray: dict, new: range, base: ImageStats) -> tuple[int, list[str], float]:
    """Blank new frames (where the reference is not so itself), their kinds, the mean clipped share."""
    kinds_seen: set[str] = set()
    count = 0
    clipped = []
    for i in new:
        mean, std = (float(v[0, 0]) for v in cv2.meanStdDev(gray[i]))
        kinds = {kind for kind, hit in (
            ("black", mean < BLACK and base.luma_mean >= 3 * BLACK),
            ("white", mean > WHITE and base.luma_mean <= 255 - 3 * (255 - WHITE)),
            ("flat", std < FLAT and base.luma_std >= 4 * FLAT),
        ) if hit}
        count += bool(kinds)
        kinds_seen |= kinds
        clipped.append(_clipped(frames8[i]))
    return count, sorted(kinds_seen), float(np.mean(clipped))


class _FaceSeries:
    """Per sampled frame: colour, and per person the face's presence, place, size, sharpness."""

    def __init__(self, people: int) -> None:
        self.delta_e: list[float] = []
        self.delta_e_face: list[list[float]] = [[] for _ in range(people)]
        self.found: list[list[bool]] = [[] for _ in range(people)]
        self.offsets: list[list[float]] = [[] for _ in range(people)]
        self.sizes: list[list[float]] = [[] for _ in range(people)]
        self.sharpness: list[list[float]] = [[] for _ in range(people)]
        self.boxes: list[list[Box]] = [[] for _ in range(people)]

    def found_share(self) -> float | None:
        known = [f for f in self.found if f]
        return min(float(np.mean(f)) for f in known) if known else None

    def window_box(self, p: int) -> Box | None:
        """The person's face box over the window (median of the boxes found)."""
        b = self.boxes[p]
        return Box(*(float(np.median([getattr(x, k) for x in b])) for k in ("x", "y", "w", "h"))) if b else None


def _faces(frames8: np.ndarray, gray: dict, refs: dict[int, ImageStats], people: int) -> _FaceSeries:
    out = _FaceSeries(people)
    regions = _regions(frames8.shape[2], people)
    for i, ref in refs.items():
        small = _small(frames8[i])
        out.delta_e.append(_delta_e(_lab_mean(small), ref.lab))
        for p, region in enumerate(regions):
            rb = ref.faces[p]
            if rb is None:  # no face in the reference (or this source frame): nothing to compare
                continue
            box = _find_near(gray[i], region, rb.w)
            out.found[p].append(box is not None)
            use = box or rb
            out.delta_e_face[p].append(_delta_e(_lab_mean(small[_inner(use, small.shape)]), ref.face_lab[p]))
            if ref.sharpness[p]:
                out.sharpness[p].append(_sharpness(gray[i], use) / ref.sharpness[p])
            if box is not None:
                out.boxes[p].append(box)
                out.offsets[p].append(math.hypot(box.cx - rb.cx, box.cy - rb.cy) / rb.w)
                out.sizes[p].append(box.w / rb.w)
    return out


def _motion(gray: dict, keep_from: int, audio: list[np.ndarray], fps: int, faces: list[Box | None]) -> dict:
    """Motion, speech, frozen share, lip sync and seam: the WindowQuality fields they fill."""
    n = max(gray) + 1
    loud = _loudness(audio, n, fps)
    mouths = [None if b is None else b.part(*MOUTH_BOX, gray[n - 1].shape) for b in faces]
    pairs = range(keep_from + 1, n)
    whole = np.array([_mad(gray[i], gray[i - 1]) for i in pairs])
    mouth_motion = np.array([[0.0 if m is None else _mad(gray[i][m], gray[i - 1][m]) for i in pairs] for m in mouths])
    moving = np.maximum(whole, mouth_motion.max(axis=0))
    speech = np.any(loud[:, keep_from + 1 :] > SPEECH_DB, axis=0)
    speech_frames = int(np.count_nonzero(speech))
    change = np.abs(np.diff(np.maximum(loud, LOUDNESS_FLOOR_DB), axis=1, prepend=LOUDNESS_FLOOR_DB))
    sync = [_lipsync(mouth_motion[p], change[p], keep_from + 1) for p, m in enumerate(mouths) if m is not None]
    sync = [s for s in sync if s[0] is not None]
    interior = float(whole.mean())
    seam_jump = _mad(gray[keep_from], gray[keep_from - 1]) if keep_from > 0 else None
    return {
        "speech_frames": speech_frames,
        "still_speech": (float(np.mean(moving[speech] < (STILL if any(m is not None for m in mouths) else STILL_WHOLE)))
                         if speech_frames else None),
        "motion": interior,
        "lipsync": min(sync)[0] if sync else None,
        "lipsync_lag": min(sync)[1] if sync else None,
        "seam": None if seam_jump is None else seam_jump / max(interior, SEAM_FLOOR),
        "seam_jump": seam_jump,
    }


# ----------------------------------------------------------------------------- verdict


@dataclass(frozen=True)
class QualityBounds:
    """Where a measurement becomes a failure (hard: re-render) or drift (re-anchor). The
    defaults come from bench/quality.py: clean preview renders of the examples in all four
    modes against the rehearsed faults (bench/RESULTS.md, "Window quality")."""

    blank_frames: int = 1  # hard "blank": at least this many blank new frames
    still_speech: float = 0.5  # hard "frozen": more than this share of speech frames does not move ...
    min_speech_frames: int = 8  # ... out of at least this many speech frames
    face_found: float = 0.5  # hard "face_lost": the face is found in fewer sampled frames than this share
    delta_e: float = 6.0  # drift "colour": whole-frame Delta E76 above this
    delta_e_face: float = 8.0  # drift "face_colour": face-region Delta E76 above this
    face_offset: float = 0.25  # drift "face_offset": face centre moved more than this many face widths
    face_size: float = 0.2  # drift "face_size": face width off the reference's by more than this factor (+-)
    clipped: float = 0.05  # drift "clipped": this much more of the frame clipped than the reference
    sharpness: float = 0.5  # note "soft": face sharpness under this ratio of the reference's
    seam: float = 3.0  # note "seam": the seam jump over this many times the interior motion
    lipsync: float = 0.0  # note "lipsync": mouth motion against loudness correlates below this

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"quality bound {f.name} must be a finite number, got {value!r}")
            if f.name != "lipsync" and value < 0:
                raise ValueError(f"quality bound {f.name} must be >= 0, got {value!r}")


HARD = ("nonfinite", "blank", "frozen", "face_lost")
DRIFT = ("colour", "face_colour", "face_offset", "face_size", "clipped")
NOTES = ("soft", "seam", "lipsync")


@dataclass(frozen=True)
class Verdict:
    hard: tuple[str, ...] = ()  # from HARD: re-render the window
    drift: tuple[str, ...] = ()  # from DRIFT: re-anchor the chain
    notes: tuple[str, ...] = ()  # from NOTES: reported, no action

    @property
    def ok(self) -> bool:
        return not self.hard and not self.drift

    def to_json(self) -> dict:
        return {"hard": list(self.hard), "drift": list(self.drift), "notes": list(self.notes)}


def classify(q: WindowQuality, bounds: QualityBounds = QualityBounds()) -> Verdict:
    def over(value: float | None, bound: float) -> bool:
        return value is not None and value > bound

    def under(value: float | None, bound: float) -> bool:
        return value is not None and value < bound

    hard = {
        "nonfinite": q.nonfinite > 0,
        "blank": q.blank_frames >= max(1, bounds.blank_frames),
        "frozen": q.speech_frames >= bounds.min_speech_frames and over(q.still_speech, bounds.still_speech),
        "face_lost": under(q.face_found, bounds.face_found),
    }
    size_off = None if q.face_size is None or q.face_size <= 0 else abs(math.log(q.face_size))
    drift = {
        "colour": over(q.delta_e, bounds.delta_e),
        "face_colour": over(q.delta_e_face, bounds.delta_e_face),
        "face_offset": over(q.face_offset, bounds.face_offset),
        "face_size": over(size_off, math.log1p(bounds.face_size)),
        "clipped": over(q.clipped, bounds.clipped),
    }
    notes = {
        "soft": under(q.sharpness, bounds.sharpness),
        "seam": over(q.seam, bounds.seam),
        "lipsync": under(q.lipsync, bounds.lipsync),
    }
    return Verdict(hard=tuple(k for k in HARD if hard[k]), drift=tuple(k for k in DRIFT if drift[k]),
                   notes=tuple(k for k in NOTES if notes[k]))
