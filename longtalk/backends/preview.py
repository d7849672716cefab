"""The CPU "preview" render backend: a talking head without a model.

It animates the reference image (I2V) or the source frames (V2V) directly:

- the face is found with OpenCV's bundled Haar frontal-face cascade (or, when none is
  found, assumed centred: a box of ~45% of the smaller side), once per reference image;
- the mouth opens with the window's audio: RMS energy per video frame (640 samples at
  16 kHz and 25 fps) on a dB scale with a noise floor, smoothed with an attack/release
  filter; the lower lip and jaw are pulled down with cv2.remap on a small region around
  the mouth and the gap between the lips is filled with a dark mouth interior (and a hint
  of teeth when it opens wide);
- I2V adds a slight head motion (about two pixels, under 1.5 degrees), a smooth function
  of the global frame index seeded by job.spec.seed, applied with cv2.warpAffine;
- multi-person jobs (two audio tracks) drive two mouths: speaker 1 on the left half of the
  frame, speaker 2 on the right, each half with its own head motion.

Tail contract: frames [0, M) of the result are job.tail itself. Frame M continues from
tail[-1]: the motion is a function of the global frame index, the mouth envelope is
computed over the whole window's audio (whose first M frames overlap the previous window's
last M), and whatever still differs is taken out gradually. The head pose of tail[-1] is
estimated (cv2.phaseCorrelate against the reference warped by the expected pose) and the
difference to the expected pose is blended out over a number of frames; the remaining
pixel residual between tail[-1] and this window's own rendering of frame M-1 is faded out
over a few frames. For a chain start (the tail is the reference) the mouth starts closed.

Everything is deterministic: the same job gives byte-identical frames.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
from dataclasses import dataclass

import cv2
import numpy as np
from cachetools import LRUCache

from longtalk.audio import block_rms, to_db
from longtalk.backends.base import ProgressFn, WindowJob
from longtalk.quality import Box
from longtalk.windows import MODEL_SAMPLE_RATE

__all__ = ["PreviewBackend", "render_preview", "detect_faces", "mouth_envelope", "Face"]

# face layout, as fractions of the face box
FALLBACK_FACE_FRACTION = 0.45  # centred face box side, of the smaller side of the region
LIP_LINE = 0.76  # lip line below the top of a Haar face box
LIP_SEARCH = 0.07  # +- band searched for the darkest row (the line between the lips)
MOUTH_HALF_WIDTH = 0.15  # of the face width: the opening's half width
JAW_HALF_WIDTH = 0.30  # of the face width: how wide the jaw moves with it
MAX_DROP = 0.075  # of the face height: lower-lip drop when fully open
UPPER_LIFT = 0.22  # upper-lip lift, relative to the lower-lip drop
BELOW = 0.38  # of the face height: how far below the lip line the deformation reaches
ABOVE = 0.16  # ... and above it
JAW_RAMP = 0.07  # of the face height: where the jaw component reaches full strength

# audio -> opening
FLOOR_DB = -48.0  # RMS (dBFS) at or below which the mouth is closed
FULL_DB = -18.0  # RMS at which it is fully open
OPEN_GAMMA = 0.85
ATTACK_S = 0.05
RELEASE_S = 0.09

# head motion: (frequency Hz, amplitude) per term; pixels at 512 px, degrees for rotation
MOTION_X = ((0.11, 1.1), (0.23, 0.6), (0.41, 0.3))
MOTION_Y = ((0.09, 0.7), (0.19, 0.4), (0.37, 0.2))
MOTION_ROT = ((0.07, 0.6), (0.17, 0.3), (0.31, 0.15))

POSE_SNAP_PX = 0.35  # a measured tail pose this close to the expected one is taken as exact
RESIDUAL_FADE = 8  # frames over which the pixel residual at the seam is faded out

MOUTH_EDGE = np.array([96.0, 34.0, 38.0], np.float32)
MOUTH_DARK = np.array([30.0, 9.0, 11.0], np.float32)
TEETH = np.array([214.0, 206.0, 192.0], np.float32)

_CASCADE: cv2.CascadeClassifier | None = None
_CASCADE_LOCK = threading.Lock()  # loading, and detectMultiScale is not documented thread-safe
_FACE_CACHE: LRUCache[tuple, tuple["Face", ...]] = LRUCache(64)  # (reference hash, shape, people) -> faces
_FACE_CACHE_LOCK = threading.Lock()


# ----------------------------------------------------------------------------- faces


@dataclass(frozen=True)
class Face(Box):  # the face box (image coordinates, centre cx/cy) the guard measures with too
    lip_y: float  # the line between the lips
    detected: bool  # False: the centred fallback box
    region: tuple[int, int]  # the vertical slab [x0, x1) of the frame this person owns


def _cascade() -> cv2.CascadeClassifier:
    global _CASCADE
    if _CASCADE is None:
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise RuntimeError(f"could not load the Haar cascade {path}")
        _CASCADE = cascade
    return _CASCADE


def _regions(width: int, people: int) -> list[tuple[int, int]]:
    if people == 1:
        return [(0, width)]
    half = width // 2
    return [(0, half), (half, width)]


def _refine_lip(gray: np.ndarray, x: float, y: float, w: float, h: float) -> float:
    """The darkest row near the expected lip line (the line between the lips), if clear."""
    guess = y + LIP_LINE * h
    rows, cols = gray.shape
    y0 = max(0, int(round(guess - LIP_SEARCH * h)))
    y1 = min(rows, int(round(guess + LIP_SEARCH * h)) + 1)
    xa = max(0, int(round(x + w / 2 - 0.09 * w)))
    xb = min(cols, int(round(x + w / 2 + 0.09 * w)) + 1)
    if y1 - y0 < 5 or xb - xa < 3:
        return guess
    profile = gray[y0:y1, xa:xb].astype(np.float32).mean(axis=1)
    smooth = np.convolve(profile, np.ones(3, np.float32) / 3.0, mode="valid")
    idx = int(np.argmin(smooth))
    if float(np.median(smooth)) - float(smooth[idx]) < 6.0:  # no clear dark line
        return guess
    return float(y0 + 1 + idx)


def _detect_in(gray_full: np.ndarray, region: tuple[int, int]) -> Face:
    x0, x1 = region
    gray = gray_full[:, x0:x1]
    rows, cols = gray.shape
    scale = min(1.0, 640.0 / max(rows, cols))
    small = gray if scale >= 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    small = cv2.equalizeHist(np.ascontiguousarray(small))
    side = max(24, int(min(small.shape) * 0.12))
    with _CASCADE_LOCK:
        found = _cascade().detectMultiScale(small, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
    if len(found):
        # the largest face; ties broken by position so the choice is deterministic
        fx, fy, fw, fh = max((tuple(int(v) for v in f) for f in found), key=lambda f: (f[2] * f[3], -f[1], -f[0]))
        x, y, w, h = fx / scale, fy / scale, fw / scale, fh / scale
        detected = True
    else:
        w = h = FALLBACK_FACE_FRACTION * min(rows, cols)
        x, y = (cols - w) / 2.0, (rows - h) / 2.0
        detected = False
    lip = _refine_lip(gray, x, y, w, h)
    return Face(x=x + x0, y=y, w=w, h=h, lip_y=lip, detected=detected, region=region)


def detect_faces(reference: np.ndarray, people: int = 1) -> tuple[Face, ...]:
    """One face per person (left to right), cached per reference image."""
    if people not in (1, 2):
        raise ValueError(f"people must be 1 or 2, got {people}")
    ref = np.ascontiguousarray(reference)
    key = (hashlib.blake2b(ref.data, digest_size=16).digest(), ref.shape, people)
    with _FACE_CACHE_LOCK:
        hit = _FACE_CACHE.get(key)
        if hit is not None:
            return hit
    gray = cv2.cvtColor(ref, cv2.COLOR_RGB2GRAY)
    faces = tuple(_detect_in(gray, r) for r in _regions(ref.shape[1], people))
    with _FACE_CACHE_LOCK:
        _FACE_CACHE[key] = faces
    return faces


# ----------------------------------------------------------------------------- audio


def mouth_envelope(audio: np.ndarray, frames: int, fps: int, closed_until: int = 0) -> np.ndarray:
    """Mouth opening 0..1 per frame from a mono 16 kHz slice of frames * (16000 / fps) samples.

    RMS per frame in dBFS, mapped linearly from FLOOR_DB (closed) to FULL_DB (open), then an
    attack/release filter. Frames before closed_until are held closed (a chain start, where
    the tail shows the still reference) and the filter starts from closed there; otherwise
    it starts at the first frame's own value, so two windows that share frames agree on
    them after a few frames.
    """
    spf = MODEL_SAMPLE_RATE // fps
    samples = np.asarray(audio).reshape(-1)
    if samples.size != frames * spf:
        raise ValueError(f"audio must hold frames * {spf} = {frames * spf} samples, got {samples.size}")
    db = to_db(block_rms([samples], spf))
    target = np.clip((db - FLOOR_DB) / (FULL_DB - FLOOR_DB), 0.0, 1.0) ** OPEN_GAMMA
    attack = 1.0 - math.exp(-1.0 / (fps * ATTACK_S))
    release = 1.0 - math.exp(-1.0 / (fps * RELEASE_S))
    out = np.zeros(frames, np.float64)
    state = 0.0 if closed_until > 0 else float(target[0])
    for i in range(frames):
        if i < closed_until:
            continue
        t = float(target[i])
        state += (attack if t > state else release) * (t - state)
        out[i] = state
    return out


# ----------------------------------------------------------------------------- mouth


class _MouthRig:
    """Precomputed deformation fields for one mouth; apply() opens it in place."""

    def __init__(self, face: Face, height: int, width: int) -> None:
        a = max(2.0, MOUTH_HALF_WIDTH * face.w)
        aw = max(a, JAW_HALF_WIDTH * face.w)
        below = max(4.0, BELOW * face.h)
        above = max(3.0, ABOVE * face.h)
        ramp = max(1.0, JAW_RAMP * face.h)
        cx, ly = face.cx, face.lip_y
        rx0, rx1 = face.region
        self.x0 = max(rx0, int(math.floor(cx - aw - 2)))
        self.x1 = min(rx1, int(math.ceil(cx + aw + 2)) + 1)
        self.y0 = max(0, int(math.floor(ly - above - 1)))
        self.y1 = min(height, int(math.ceil(ly + below + 1)) + 1)
        self.valid = self.x1 - self.x0 >= 3 and self.y1 - self.y0 >= 3
        if not self.valid:
            return
        xs = np.arange(self.x0, self.x1, dtype=np.float32)
        ys = np.arange(self.y0, self.y1, dtype=np.float32)
        un = np.clip((xs - cx) / a, -1.0, 1.0)
        uw = np.clip((xs - cx) / aw, -1.0, 1.0)
        narrow = (1.0 - un * un) ** 2
        wide = (1.0 - uw * uw) ** 2
        t = (ys - ly)[:, None]  # > 0 below the lip line
        lower = t >= 0
        tl = np.clip(t, 0.0, below)
        su = np.clip(-t, 0.0, above)
        fade = 1.0 - tl / below
        f_low = narrow[None, :] * fade + 0.35 * wide[None, :] * np.minimum(tl / ramp, 1.0) * fade
        f_up = -UPPER_LIFT * narrow[None, :] * (1.0 - su / above)
        self.field = np.where(lower, f_low, f_up).astype(np.float32)  # source y = y - D * field
        self.abs_field = np.abs(self.field)
        self.base = np.where(lower, ly - ys[:, None], ys[:, None] - ly).astype(np.float32)  # <= 0
        self.map_x = np.broadcast_to(xs[None, :] - self.x0, self.field.shape).astype(np.float32)
        self.rows = np.broadcast_to((ys - self.y0)[:, None], self.field.shape).astype(np.float32)
        self.ys = ys[:, None]
        self.narrow = narrow.astype(np.float32)
        self.teeth_w = np.sqrt(narrow).astype(np.float32)
        self.ly = ly
        self.below = below
        self.above = above
        self.max_drop = MAX_DROP * face.h

    def apply(self, frame: np.ndarray, opening: float) -> None:
        if not self.valid or opening <= 1e-3:
            return
        d = float(self.max_drop * opening)
        roi = frame[self.y0 : self.y1, self.x0 : self.x1]
        map_y = self.rows - d * self.field
        warped = cv2.remap(roi, self.map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # the gap between the lips: where the source row lies across the lip line
        inside = np.clip(self.base + d * self.abs_field, 0.0, 1.0)
        dn = d * self.narrow
        du = UPPER_LIFT * dn
        drop = dn / (1.0 + dn / self.below)
        lift = du / (1.0 + du / self.above)
        gap = drop + lift
        alpha = inside * np.clip((gap - 0.8) / 1.5, 0.0, 1.0)[None, :]
        if not np.any(alpha > 0):
            roi[:] = warped
            return
        v = np.clip((self.ys - (self.ly - lift)[None, :]) / np.maximum(gap, 1e-3)[None, :], 0.0, 1.0)
        depth = np.clip(4.0 * v * (1.0 - v), 0.0, 1.0)[..., None]
        interior = MOUTH_EDGE + (MOUTH_DARK - MOUTH_EDGE) * depth
        teeth = (
            np.clip((0.34 - v) / 0.12, 0.0, 1.0)
            * np.clip((gap - 4.0) / 5.0, 0.0, 1.0)[None, :]
            * self.teeth_w[None, :]
            * 0.85
        )[..., None]
        interior = interior + (TEETH - interior) * teeth
        a3 = alpha[..., None]
        blended = warped.astype(np.float32) * (1.0 - a3) + interior * a3
        roi[:] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- motion


def head_pose(global_frames: np.ndarray, fps: int, seed: int, person: int, scale: float) -> np.ndarray:
    """(n, 3) array of (dx px, dy px, rotation deg) for the given global frame indices."""
    rng = np.random.default_rng([int(seed) % (1 << 64), person])
    phases = rng.uniform(0.0, 2.0 * math.pi, size=(3, 3))
    t = np.asarray(global_frames, np.float64) / fps
    out = np.zeros((t.size, 3), np.float64)
    for axis, (terms, amp_scale) in enumerate(((MOTION_X, scale), (MOTION_Y, scale), (MOTION_ROT, 1.0))):
        for k, (freq, amp) in enumerate(terms):
            out[:, axis] += amp * amp_scale * np.sin(2.0 * math.pi * freq * t + phases[axis, k])
    return out


def _affine(pose: np.ndarray, center: tuple[float, float], f: float = 1.0) -> np.ndarray:
    """Rotation about center by pose[2] degrees, then translation by pose[:2]; f rescales the image."""
    dx, dy, ang = float(pose[0]), float(pose[1]), float(pose[2])
    m = cv2.getRotationMatrix2D((center[0] * f, center[1] * f), ang, 1.0)
    m[0, 2] += dx * f
    m[1, 2] += dy * f
    return m


def _pivot(face: Face) -> tuple[float, float]:
    return (face.cx, face.y + 1.1 * face.h)  # about the neck


def _estimate_tail_poses(
    reference: np.ndarray, last: np.ndarray, faces: tuple[Face, ...], expected: list[np.ndarray]
) -> list[np.ndarray]:
    """The head pose shown by the tail's last frame, per person.

    For each person, the reference is warped by the expected pose and by no motion at all;
    cv2.phaseCorrelate against the tail frame measures the remaining translation, and the
    candidate that then matches best wins. A measurement within POSE_SNAP_PX of the expected
    pose is taken as the expected pose itself (a tail this backend rendered).
    """
    height, width = reference.shape[:2]
    f = min(1.0, 256.0 / min(height, width))
    size = (max(8, int(round(width * f))), max(8, int(round(height * f))))

    def small_gray(img: np.ndarray) -> np.ndarray:
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        if f < 1.0:
            g = cv2.resize(g, size, interpolation=cv2.INTER_AREA)
        return g.astype(np.float32)

    ref_g = small_gray(reference)
    last_g = small_gray(last)
    poses = []
    for face, exp in zip(faces, expected, strict=True):
        x0 = int(math.floor(face.region[0] * f))
        x1 = max(x0 + 8, int(math.ceil(face.region[1] * f)))
        x1 = min(x1, size[0])
        window = cv2.createHanningWindow((x1 - x0, size[1]), cv2.CV_32F)
        target = np.ascontiguousarray(last_g[:, x0:x1])
        best: tuple[float, np.ndarray, bool, float] | None = None
        for cand, is_expected in ((exp, True), (np.zeros(3), False)):
            warped = cv2.warpAffine(ref_g, _affine(cand, _pivot(face), f), size, flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT)
            (sx, sy), _resp = cv2.phaseCorrelate(np.ascontiguousarray(warped[:, x0:x1]), target, window)
            shift = math.hypot(sx, sy) / f
            pose = cand + np.array([sx / f, sy / f, 0.0])
            moved = cv2.warpAffine(ref_g, _affine(pose, _pivot(face), f), size, flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT)
            err = float(np.mean(np.abs(moved[:, x0:x1] - target)))
            if best is None or err < best[0]:
                best = (err, pose, is_expected, shift)
        assert best is not None
        _err, pose, is_expected, shift = best
        poses.append(exp.copy() if is_expected and shift < POSE_SNAP_PX else pose)
    return poses


# ----------------------------------------------------------------------------- render


def _validate(job: WindowJob) -> None:
    spec = job.spec
    n, m, fps = spec.window, spec.motion, spec.fps
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"window must be an integer >= 2, got {n!r}")
    if isinstance(m, bool) or not isinstance(m, int) or not 0 < m < n:
        raise ValueError(f"motion must satisfy 0 < motion < window ({n}), got {m!r}")
    if isinstance(fps, bool) or not isinstance(fps, int) or fps <= 0 or MODEL_SAMPLE_RATE % fps:
        raise ValueError(f"fps must be a positive integer dividing {MODEL_SAMPLE_RATE}, got {fps!r}")
    h, w = spec.height, spec.width
    if not (isinstance(h, int) and isinstance(w, int)) or h < 16 or w < 16:
        raise ValueError(f"height and width must be integers >= 16, got {h!r}x{w!r}")

    def check_frames(name: str, arr, shape: tuple[int, ...]) -> None:
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"{name} must be a numpy array, got {type(arr).__name__}")
        if arr.dtype != np.uint8:
            raise ValueError(f"{name} must be uint8 RGB, got dtype {arr.dtype}")
        if arr.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")

    check_frames("reference", job.reference, (h, w, 3))
    if isinstance(job.tail, np.ndarray) and job.tail.ndim == 4 and job.tail.shape[0] != m:
        raise ValueError(f"tail must hold motion={m} frames, got {job.tail.shape[0]}")
    check_frames("tail", job.tail, (m, h, w, 3))
    if job.source is not None:
        check_frames("source", job.source, (n, h, w, 3))
    if not isinstance(job.audio, (list, tuple)) or len(job.audio) not in (1, 2):
        count = len(job.audio) if isinstance(job.audio, (list, tuple)) else type(job.audio).__name__
        raise ValueError(f"audio must be a list of 1 or 2 tracks (one per speaker), got {count}")
    need = n * (MODEL_SAMPLE_RATE // fps)
    for i, track in enumerate(job.audio):
        if not isinstance(track, np.ndarray) or track.ndim != 1:
            shape = getattr(track, "shape", type(track).__name__)
            raise ValueError(f"audio[{i}] must be a 1-D numpy array of 16 kHz samples, got {shape}")
        if not np.issubdtype(track.dtype, np.floating):
            raise ValueError(f"audio[{i}] must be float samples in [-1, 1], got dtype {track.dtype}")
        if track.shape[0] != need:
            raise ValueError(
                f"audio[{i}] must hold window * {MODEL_SAMPLE_RATE // fps} = {need} samples, "
                f"got {track.shape[0]}"
            )
        if not np.all(np.isfinite(track)):
            raise ValueError(f"audio[{i}] contains NaN or infinite samples")


class _Compositor:
    """Warps a base frame by one pose per person; two people meet in a soft vertical band."""

    def __init__(self, faces: tuple[Face, ...], height: int, width: int) -> None:
        self.faces = faces
        self.size = (width, height)
        if len(faces) == 2:
            mid = faces[0].region[1]
            half_band = max(4, width // 32)
            self.b0 = max(0, mid - half_band)
            self.b1 = min(width, mid + half_band)
            ramp = (np.arange(self.b0, self.b1, dtype=np.float32) - self.b0 + 0.5) / (self.b1 - self.b0)
            self.ramp = ramp[None, :, None]
            self.scratch = np.empty((height, width, 3), np.uint8)

    def render(self, base: np.ndarray, poses: list[np.ndarray], out: np.ndarray) -> None:
        if len(self.faces) == 1:
            m = _affine(poses[0], _pivot(self.faces[0]))
            cv2.warpAffine(base, m, self.size, dst=out, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            return
        left = _affine(poses[0], _pivot(self.faces[0]))
        right = _affine(poses[1], _pivot(self.faces[1]))
        cv2.warpAffine(base, left, self.size, dst=out, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        cv2.warpAffine(base, right, self.size, dst=self.scratch, flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT)
        band_l = out[:, self.b0 : self.b1].astype(np.float32)
        band_r = self.scratch[:, self.b0 : self.b1].astype(np.float32)
        out[:, self.b0 : self.b1] = np.clip(band_l + (band_r - band_l) * self.ramp + 0.5, 0, 255).astype(np.uint8)
        out[:, self.b1 :] = self.scratch[:, self.b1 :]


def _fade(j: int, length: int) -> float:
    """1 at j=0, smoothly down to 0 at j=length (raised cosine)."""
    if j >= length:
        return 0.0
    return 0.5 * (1.0 + math.cos(math.pi * j / length))


def render_preview(job: WindowJob) -> np.ndarray:
    """Render one window on the CPU: a (W, H, Wd, 3) uint8 RGB array whose first M frames are job.tail."""
    _validate(job)
    n, m, fps = job.spec.window, job.spec.motion, job.spec.fps
    height, width = job.spec.height, job.spec.width
    reference = np.ascontiguousarray(job.reference)
    people = len(job.audio)
    faces = detect_faces(reference, people)
    rigs = [_MouthRig(face, height, width) for face in faces]
    v2v = job.source is not None

    last = job.tail[-1]
    tail_is_still = bool(job.chain_start) or np.array_equal(last, reference)
    closed_until = m if tail_is_still else 0
    openings = [mouth_envelope(track, n, fps, closed_until) for track in job.audio]

    out = np.empty((n, height, width, 3), np.uint8)
    out[:m] = job.tail

    def mouth_frame(base: np.ndarray, i: int) -> np.ndarray:
        frame = base.copy()
        for rig, opening in zip(rigs, openings, strict=True):
            rig.apply(frame, float(opening[i]))
        return frame

    if v2v:
        source = job.source
        for i in range(m, n):
            out[i] = mouth_frame(source[i], i)
        seam = mouth_frame(source[m - 1], m - 1)
    else:
        scale = min(height, width) / 512.0
        frames = job.frame_start + np.arange(n)
        poses = [head_pose(frames, fps, job.spec.seed, p, scale) for p in range(people)]
        expected_last = [p[m - 1] for p in poses]
        if tail_is_still:
            actual_last = [np.zeros(3) for _ in range(people)]
        else:
            actual_last = _estimate_tail_poses(reference, last, faces, expected_last)
        for p in range(people):
            corr = actual_last[p] - expected_last[p]
            if not np.any(corr):
                continue
            # blend the correction out at no more than ~0.2 px (or 0.04 deg) per frame
            span = max(math.hypot(corr[0], corr[1]), abs(corr[2]) * 5.0)
            length = int(min(max(12, math.ceil(8.0 * span)), n - m))
            for i in range(m - 1, n):
                poses[p][i] += corr * _fade(i - (m - 1), length)
        comp = _Compositor(faces, height, width)
        for i in range(m, n):
            comp.render(mouth_frame(reference, i), [p[i] for p in poses], out[i])
        seam = np.empty_like(reference)
        comp.render(mouth_frame(reference, m - 1), [p[m - 1] for p in poses], seam)

    # whatever still differs between tail[-1] and this window's own frame M-1 fades out
    residual = last.astype(np.int16) - seam.astype(np.int16)
    if np.any(residual):
        for i in range(m, min(n, m - 1 + RESIDUAL_FADE)):
            w = _fade(i - (m - 1), RESIDUAL_FADE)
            frame = out[i].astype(np.float32) + residual.astype(np.float32) * w
            out[i] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return out


class PreviewBackend:
    """RenderBackend that renders on the CPU with render_preview (no model, no server)."""

    name = "preview"

    async def render_window(self, job: WindowJob, progress: ProgressFn | None = None) -> np.ndarray:
        frames = await asyncio.to_thread(render_preview, job)
        if progress is not None:
            progress("render", 1.0)
        return frames

    async def close(self) -> None:
        return None
