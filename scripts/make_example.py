#!/usr/bin/env python3
"""Make the bundled example media: drawn portraits, source videos and two speech tracks.

    python scripts/make_example.py            # writes examples/ at the repository root
    python scripts/make_example.py --out DIR  # somewhere else
    python scripts/make_example.py --only source.mp4 source_multi.mp4   # just these files

Everything is generated, nothing is downloaded:

- examples/portrait.png   a 512x512 stylised face drawn with OpenCV (shaded skin, hair,
                          eyes, brows, nose, lips, neck and shoulders on a plain backdrop),
                          made so OpenCV's Haar frontal-face cascade finds it;
- examples/portrait_multi.png  768x512, two people side by side (speaker 1 left, speaker 2
                          right), for the multi-person demo; both faces Haar-detectable;
- examples/source.mp4     4 s of portrait.png swaying gently (a slow tilt and drift, one
                          seamless loop), 512x512 H.264 at 25 fps, for the video modes;
- examples/source_multi.mp4  the same motion over portrait_multi.png, 768x512;
- examples/speech.ogg     ~45 s of English speech from espeak-ng (male voice), Opus mono;
- examples/speech_2.ogg   ~30 s of a second voice (en-us+f3) that answers in speaker 1's
                          pauses and is silent otherwise (for the multi-person demo);
- examples/demo.json, examples/demo_multi.json   render requests using them.

The script is deterministic (espeak-ng and the drawing are; the Opus and H.264 encoders are
run with fixed settings, x264 on one thread) and re-runnable. It prints the media sizes and whether Haar detects the
face.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
MEDIA_LIMIT_BYTES = 2 * 1024 * 1024

SIZE = 512
SCALE = 2  # drawn at 2x and downsampled for anti-aliasing
MULTI_SIZE = (768, 512)  # width, height of the two-person image
VIDEO_FPS, VIDEO_SECONDS = 25, 4  # the source videos: one loop of the sway

# (speaker, text, pause after in seconds). Speaker 2 speaks inside speaker 1's pauses.
SCRIPT: list[tuple[int, str, float]] = [
    (1, "Hello, and welcome to Long Talk.", 0.5),
    (1, "This service turns a portrait and a voice recording into a talking video.", 0.4),
    (2, "How long can the video be?", 0.4),
    (1, "As long as you like, even an hour.", 0.6),
    (1, "The audio is cut into short windows that overlap by a few frames, so the seams "
        "stay invisible.", 0.4),
    (2, "What if a machine fails halfway?", 0.4),
    (1, "Nothing is lost. Temporal remembers every finished window, and the render picks up "
        "where it stopped.", 0.4),
    (2, "That sounds reliable.", 0.6),
    (1, "You can follow the progress while it runs, and download the video when it is done.", 0.6),
    (1, "This example was made entirely on the computer: the face is drawn with OpenCV, "
        "and the voices come from espeak.", 0.6),
    (1, "Thanks for listening!", 0.8),
]

VOICES = {1: ("en-us", 162, 46), 2: ("en-us+f3", 165, 60)}  # voice, words/min, pitch
LEAD_IN_S = 0.6


# ----------------------------------------------------------------------------- portrait


def _ellipse_mask(shape: tuple[int, int], center, axes, angle=0.0) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    center = (int(center[0]), int(center[1]))
    cv2.ellipse(mask, center, (int(axes[0]), int(axes[1])), angle, 0, 360, 255, -1, cv2.LINE_AA)
    return mask


def _blend(img: np.ndarray, mask: np.ndarray, color, strength: float = 1.0, blur: float = 0.0) -> None:
    """Blend a colour into img (float32, 0..255) through an 8-bit mask, optionally feathered."""
    m = mask.astype(np.float32) / 255.0
    if blur > 0:
        m = cv2.GaussianBlur(m, (0, 0), blur)
    m = (m * strength)[..., None]
    img[:] = img * (1.0 - m) + np.asarray(color, np.float32) * m


def _shade(img: np.ndarray, mask: np.ndarray, factor: np.ndarray, blur: float = 0.0) -> None:
    """Multiply img by a per-pixel factor inside mask."""
    m = mask.astype(np.float32) / 255.0
    if blur > 0:
        m = cv2.GaussianBlur(m, (0, 0), blur)
    f = 1.0 + (factor - 1.0) * m
    img *= f[..., None]


STYLES = {
    "a": {  # speaker 1: short dark-brown hair, blue shirt
        "skin": (226, 178, 146), "hair": (58, 38, 28), "shirt": (52, 78, 118), "collar": (40, 62, 96),
        "iris": (92, 62, 40), "long_hair": False, "lips": ((164, 76, 78), (186, 96, 94)),
    },
    "b": {  # speaker 2: longer auburn hair, green top
        "skin": (236, 192, 164), "hair": (112, 56, 34), "shirt": (64, 110, 84), "collar": (50, 90, 68),
        "iris": (70, 96, 110), "long_hair": True, "lips": ((176, 72, 84), (198, 92, 102)),
    },
}


def _backdrop(H: int, W: int) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.empty((H, W, 3), np.float32)
    t = yy / H
    top = np.array([176, 190, 204], np.float32)
    bottom = np.array([120, 134, 152], np.float32)
    img[:] = top * (1 - t[..., None]) + bottom * t[..., None]
    vign = 1.0 - 0.18 * (((xx - W / 2) / (W / 2)) ** 2 + ((yy - H * 0.45) / (H / 2)) ** 2)
    img *= np.clip(vign, 0.7, 1.0)[..., None]
    return img


def _draw_person(img: np.ndarray, cx: float, s: float, style: dict, seed: int) -> None:
    """Draw one head-and-shoulders figure into img (float32 RGB at drawing scale).

    cx: horizontal centre in drawing pixels; s: drawing pixels per unit, where the figure is
    laid out in the units of a 512x512 portrait (head centre at y=228, chin at ~y=350).
    """
    H, W = img.shape[:2]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)

    def P(x, y):
        return (int(round(cx + x * s)), int(round(y * s)))

    def A(a, b):
        return (max(1, int(round(a * s))), max(1, int(round(b * s))))

    def solid(value: float) -> np.ndarray:
        return np.full((H, W), value, np.float32)

    skin = np.array(style["skin"], np.float32)
    skin_dark = skin * np.array([0.80, 0.72, 0.68], np.float32)
    hair = np.array(style["hair"], np.float32)
    head_c = (0.0, 228.0)
    head_ax = (100.0, 132.0)

    # hair, the part behind the head
    back_hair = np.zeros((H, W), np.uint8)
    cv2.ellipse(back_hair, P(0, 214), A(116, 140), 0, 0, 360, 255, -1, cv2.LINE_AA)
    if style["long_hair"]:
        pts = np.array([P(-116, 214), P(-122, 300), P(-114, 352), P(-96, 372), P(-70, 368), P(70, 368),
                        P(96, 372), P(114, 352), P(122, 300), P(116, 214)], np.int32)
        cv2.fillPoly(back_hair, [pts], 255, cv2.LINE_AA)
    else:  # short hair ends above the jaw
        cv2.rectangle(back_hair, P(-140, 262), P(140, 400), 0, -1)
    _blend(img, back_hair, hair * 0.85, blur=1.5 * s)

    # neck with a shadow under the chin
    neck = np.zeros((H, W), np.uint8)
    cv2.rectangle(neck, P(-46, 300), P(46, 410), 255, -1)
    cv2.ellipse(neck, P(0, 404), A(70, 34), 0, 0, 180, 255, -1, cv2.LINE_AA)
    _blend(img, neck, skin * 0.93, blur=1.0 * s)
    _shade(img, neck, 1.0 - 0.22 * np.clip(np.abs(xx - cx) / (46 * s), 0, 1) ** 2)
    chin_shadow = _ellipse_mask((H, W), P(0, 350), A(64, 34))
    _shade(img, cv2.bitwise_and(chin_shadow, neck), solid(0.70), blur=6 * s)

    # shoulders and shirt, with a V neckline
    shirt = np.zeros((H, W), np.uint8)
    cv2.ellipse(shirt, P(0, 540), A(236, 148), 0, 0, 360, 255, -1, cv2.LINE_AA)
    vcut = np.array([P(-52, 390), P(0, 446), P(52, 390)], np.int32)
    cv2.fillPoly(shirt, [vcut], 0, cv2.LINE_AA)
    _blend(img, shirt, style["shirt"], blur=1.0 * s)
    _shade(img, shirt, 1.0 - 0.28 * np.clip((xx - cx) / (236 * s), -1, 1) ** 2)
    trim = np.array([P(-52, 390), P(0, 446), P(52, 390), P(62, 394), P(0, 462), P(-62, 394)], np.int32)
    cv2.fillPoly(img, [trim], tuple(float(v) for v in style["collar"]), cv2.LINE_AA)
    if style["long_hair"]:  # hair falling over the shoulders, in front of the shirt
        for side in (-1, 1):
            lock = np.array([P(side * 98, 290), P(side * 120, 318), P(side * 126, 380), P(side * 118, 424),
                             P(side * 100, 416), P(side * 92, 360)], np.int32)
            m = np.zeros((H, W), np.uint8)
            cv2.fillPoly(m, [lock], 255, cv2.LINE_AA)
            _blend(img, m, hair * 0.9, blur=2.0 * s)

    # ears
    for side in (-1, 1):
        ear = _ellipse_mask((H, W), P(side * 98, 236), A(15, 29))
        _blend(img, ear, skin_dark * 1.08, blur=0.8 * s)
        inner = _ellipse_mask((H, W), P(side * 100, 238), A(7, 17))
        _blend(img, inner, skin_dark * 0.85, strength=0.5, blur=2 * s)

    # head: skin with light from the upper left and a darker rim
    head = _ellipse_mask((H, W), P(*head_c), A(*head_ax))
    jaw = np.zeros((H, W), np.uint8)  # a slightly narrower jaw
    cv2.ellipse(jaw, P(0, 250), A(96, 110), 0, 0, 180, 255, -1, cv2.LINE_AA)
    cv2.rectangle(jaw, P(-110, 60), P(110, 250), 255, -1)
    head = cv2.bitwise_and(head, jaw)
    _blend(img, head, skin, blur=0.8 * s)
    dx = (xx - (cx + head_c[0] * s)) / (head_ax[0] * s)
    dy = (yy - head_c[1] * s) / (head_ax[1] * s)
    r2 = dx**2 + dy**2
    light = 1.0 + 0.06 * (-(dx + 0.4) * 0.6 - dy * 0.4)
    rim = 1.0 - 0.30 * np.clip(r2, 0, 1.2) ** 2.2
    _shade(img, head, light * rim)

    for side in (-1, 1):  # warm cheeks
        cheek = _ellipse_mask((H, W), P(side * 52, 282), A(24, 16))
        _blend(img, cheek, (214, 130, 120), strength=0.22, blur=9 * s)
    for side in (-1, 1):  # eye sockets: the dark eye band the cascade looks for
        sock = _ellipse_mask((H, W), P(side * 40, 220), A(32, 18))
        _shade(img, sock, solid(0.80), blur=6 * s)
    bridge = np.zeros((H, W), np.uint8)  # nose bridge in light, its side in shade
    cv2.rectangle(bridge, P(-6, 214), P(6, 266), 255, -1)
    _shade(img, bridge, solid(1.06), blur=4 * s)
    nose_side = np.zeros((H, W), np.uint8)
    cv2.ellipse(nose_side, P(13, 254), A(7, 24), 8, 0, 360, 255, -1)
    _shade(img, nose_side, solid(0.88), blur=4 * s)

    # hair on top: a crown and a fringe with a soft, uneven edge over the forehead
    crown = np.zeros((H, W), np.uint8)
    edge = [P(-112, 200), P(-98, 174), P(-72, 160), P(-44, 152), P(-14, 146), P(16, 140), P(46, 134),
            P(76, 140), P(98, 158), P(112, 200), P(130, 60), P(-130, 60)]
    cv2.fillPoly(crown, [np.array(edge, np.int32)], 255, cv2.LINE_AA)
    crown = cv2.bitwise_and(crown, _ellipse_mask((H, W), P(0, 212), A(113, 137)))
    for side in (-1, 1):  # hair down the sides to the ears
        cv2.ellipse(crown, P(side * 98, 196), A(12, 40 if not style["long_hair"] else 70), 0, 0, 360, 255, -1,
                    cv2.LINE_AA)
    _blend(img, crown, hair, blur=1.2 * s)
    sheen = _ellipse_mask((H, W), P(-34, 112), A(42, 12), -15)
    _blend(img, cv2.bitwise_and(sheen, crown), np.minimum(hair * 1.9, 255), strength=0.35, blur=5 * s)
    rng = np.random.default_rng(seed)
    for _ in range(40):  # a few strands
        x0 = rng.uniform(-100, 100)
        y0 = rng.uniform(70, 120)
        x1 = x0 + rng.uniform(-25, 25)
        y1 = y0 + rng.uniform(20, 40)
        m = np.zeros((H, W), np.uint8)
        cv2.line(m, P(x0, y0), P(x1, y1), 255, max(1, int(round(0.8 * s))), cv2.LINE_AA)
        _blend(img, cv2.bitwise_and(m, crown), hair * rng.uniform(0.6, 1.5), strength=0.3)

    # eyebrows
    for side in (-1, 1):
        pts = np.array(
            [P(side * 18, 197), P(side * 34, 188), P(side * 52, 186), P(side * 66, 192),
             P(side * 64, 196), P(side * 50, 193), P(side * 34, 195), P(side * 20, 202)],
            np.int32,
        )
        m = np.zeros((H, W), np.uint8)
        cv2.fillPoly(m, [pts], 255, cv2.LINE_AA)
        _blend(img, m, hair * 0.9, strength=0.92, blur=0.8 * s)

    # eyes: white, iris, pupil, catch-light, lids
    for side in (-1, 1):
        ex, ey = side * 40, 222
        white = _ellipse_mask((H, W), P(ex, ey), A(19, 9))
        _blend(img, white, (236, 232, 226), blur=0.6 * s)
        iris = cv2.bitwise_and(_ellipse_mask((H, W), P(ex, ey), A(8.5, 8.5)), white)
        _blend(img, iris, style["iris"], blur=0.5 * s)
        pupil = cv2.bitwise_and(_ellipse_mask((H, W), P(ex, ey), A(4, 4)), white)
        _blend(img, pupil, (18, 12, 10), blur=0.4 * s)
        lid_shadow = cv2.bitwise_and(_ellipse_mask((H, W), P(ex, ey - 6), A(20, 6)), white)
        _shade(img, lid_shadow, solid(0.75), blur=1.5 * s)
        cv2.circle(img, P(ex - 3, ey - 3), max(1, int(round(1.6 * s))), (250, 250, 250), -1, cv2.LINE_AA)
        cv2.ellipse(img, P(ex, ey + 1), A(20, 10), 0, 190, 350, (40, 26, 22), max(1, int(round(2.2 * s))),
                    cv2.LINE_AA)
        cv2.ellipse(img, P(ex, ey - 2), A(19, 11), 0, 205, 335, tuple(float(v) for v in skin_dark * 0.9),
                    max(1, int(round(1.0 * s))), cv2.LINE_AA)
        lower_lid = _ellipse_mask((H, W), P(ex, ey + 9), A(16, 3))
        _shade(img, lower_lid, solid(0.9), blur=2 * s)

    # nose: tip highlight, soft nostrils, shadow beneath
    tip = _ellipse_mask((H, W), P(0, 266), A(12, 9))
    _shade(img, tip, solid(1.07), blur=3 * s)
    under = _ellipse_mask((H, W), P(0, 280), A(20, 5))
    _shade(img, under, solid(0.80), blur=3 * s)
    for side in (-1, 1):
        nostril = _ellipse_mask((H, W), P(side * 8, 275), A(4.5, 2.5), side * 20)
        _blend(img, nostril, skin_dark * 0.62, strength=0.85, blur=1.0 * s)
        wing = np.zeros((H, W), np.uint8)
        cv2.ellipse(wing, P(side * 14, 268), A(6, 9), 0, -70 if side > 0 else 110, 70 if side > 0 else 250, 255,
                    max(1, int(round(1.2 * s))), cv2.LINE_AA)
        _blend(img, wing, skin_dark * 0.85, strength=0.6, blur=1.0 * s)

    # lips: upper lip with a cupid's bow, fuller lower lip, a dark line between
    lip_y = 310
    upper = np.array([P(-35, lip_y), P(-20, lip_y - 7), P(-6, lip_y - 9), P(0, lip_y - 7), P(6, lip_y - 9),
                      P(20, lip_y - 7), P(35, lip_y), P(0, lip_y + 1)], np.int32)
    lower = np.array([P(-35, lip_y), P(-18, lip_y + 9), P(0, lip_y + 12), P(18, lip_y + 9), P(35, lip_y),
                      P(0, lip_y + 1)], np.int32)
    up_col, low_col = style["lips"]
    m = np.zeros((H, W), np.uint8)
    cv2.fillPoly(m, [upper], 255, cv2.LINE_AA)
    _blend(img, m, up_col, blur=0.8 * s)
    m = np.zeros((H, W), np.uint8)
    cv2.fillPoly(m, [lower], 255, cv2.LINE_AA)
    _blend(img, m, low_col, blur=0.8 * s)
    hl = _ellipse_mask((H, W), P(0, lip_y + 6), A(12, 2))
    _blend(img, hl, (226, 150, 146), strength=0.45, blur=2 * s)
    line_col = (96, 40, 44)
    cv2.line(img, P(-34, lip_y), P(0, lip_y + 1), line_col, max(1, int(round(1.5 * s))), cv2.LINE_AA)
    cv2.line(img, P(0, lip_y + 1), P(34, lip_y), line_col, max(1, int(round(1.5 * s))), cv2.LINE_AA)
    below = _ellipse_mask((H, W), P(0, lip_y + 20), A(14, 4))
    _shade(img, below, solid(0.86), blur=3 * s)

    # a faint skin texture, seeded so the image is reproducible
    noise = cv2.GaussianBlur(rng.normal(0.0, 1.0, (H, W)).astype(np.float32), (0, 0), 1.2 * s)
    img += (noise * 5.0 * (head.astype(np.float32) / 255.0))[..., None]


def _finish(img: np.ndarray, width: int, height: int) -> np.ndarray:
    img = cv2.GaussianBlur(img, (0, 0), 0.5 * SCALE)
    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def draw_portrait(size: int = SIZE) -> np.ndarray:
    """One person, centred: a (size, size, 3) uint8 RGB portrait."""
    n = size * SCALE
    img = _backdrop(n, n)
    _draw_person(img, n / 2.0, SCALE * size / 512.0, STYLES["a"], seed=1)
    return _finish(img, size, size)


def draw_two_people(width: int = MULTI_SIZE[0], height: int = MULTI_SIZE[1]) -> np.ndarray:
    """Two people side by side, speaker 1 on the left half, speaker 2 on the right."""
    Wd, Hd = width * SCALE, height * SCALE
    img = _backdrop(Hd, Wd)
    s = SCALE * height / 512.0 * 0.92
    _draw_person(img, Wd * 0.25, s, STYLES["a"], seed=1)
    _draw_person(img, Wd * 0.75, s, STYLES["b"], seed=2)
    return _finish(img, width, height)


def haar_faces(rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    side = min(gray.shape)
    faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(side // 8, side // 8))
    return [tuple(int(v) for v in f) for f in faces]


# ----------------------------------------------------------------------------- source videos


def sway_frames(still: np.ndarray, fps: int = VIDEO_FPS, seconds: int = VIDEO_SECONDS):
    """The still, gently moving: a tilt of up to 1.2 degrees and a drift of a few pixels,
    slightly zoomed so no edge shows; one period over `seconds`, so the clip loops."""
    h, w = still.shape[:2]
    n = fps * seconds
    for i in range(n):
        phase = 2 * np.pi * i / n
        m = cv2.getRotationMatrix2D((w / 2, h * 0.45), 1.2 * np.sin(phase), 1.04 + 0.01 * np.sin(2 * phase))
        m[0, 2] += 4.0 * np.sin(phase + 0.8)
        m[1, 2] += 2.0 * np.cos(phase)
        yield cv2.warpAffine(still, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def encode_h264(still: np.ndarray, dest: Path, crf: int = 24) -> None:
    """The swaying still as H.264 yuv420p MP4 (faststart, no metadata that changes per run)."""
    import ffmpeg
    import imageio_ffmpeg

    h, w = still.shape[:2]
    stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", r=VIDEO_FPS).output(
        str(dest), pix_fmt="yuv420p", preset="slow", crf=crf, threads=1, movflags="+faststart",
        map_metadata=-1, fflags="+bitexact", **{"c:v": "libx264", "flags:v": "+bitexact"},
    )
    cmd = stream.global_args("-hide_banner", "-loglevel", "error").overwrite_output().compile(
        cmd=imageio_ffmpeg.get_ffmpeg_exe())
    raw = b"".join(frame.tobytes() for frame in sway_frames(still))
    subprocess.run(cmd, input=raw, check=True)


# ----------------------------------------------------------------------------- speech


def _espeak(text: str, speaker: int, workdir: Path, index: int) -> tuple[np.ndarray, int]:
    espeak = shutil.which("espeak-ng") or "/usr/bin/espeak-ng"
    voice, wpm, pitch = VOICES[speaker]
    path = workdir / f"s{index:02d}.wav"
    subprocess.run([espeak, "-v", voice, "-s", str(wpm), "-p", str(pitch), "-w", str(path), text],
                   check=True, capture_output=True)
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    return data[:, 0], rate


def synthesize_tracks(workdir: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Lay the script out on a timeline: two float32 mono tracks at espeak's rate."""
    clips = [_espeak(text, spk, workdir, i) for i, (spk, text, _) in enumerate(SCRIPT)]
    rate = clips[0][1]
    cursor = int(LEAD_IN_S * rate)
    placed = []
    for (spk, _text, pause), (clip, r) in zip(SCRIPT, clips, strict=True):
        assert r == rate
        placed.append((spk, cursor, clip))
        cursor += len(clip) + int(pause * rate)
    end2 = max(start + len(c) for spk, start, c in placed if spk == 2) + int(0.5 * rate)
    t1 = np.zeros(cursor, np.float32)
    t2 = np.zeros(end2, np.float32)
    for spk, start, clip in placed:
        (t1 if spk == 1 else t2)[start:start + len(clip)] += clip
    for t in (t1, t2):
        peak = float(np.max(np.abs(t)))
        t *= 0.89 / peak  # about -1 dBFS peak
    return t1, t2, rate


def encode_opus(samples: np.ndarray, rate: int, dest: Path, workdir: Path, kbps: int = 28) -> None:
    import ffmpeg
    import imageio_ffmpeg

    wav = workdir / (dest.stem + ".wav")
    sf.write(wav, samples, rate, subtype="PCM_16")
    stream = ffmpeg.input(str(wav)).output(
        str(dest), ac=1, application="voip", map_metadata=-1, fflags="+bitexact",
        **{"c:a": "libopus", "b:a": f"{kbps}k", "flags:a": "+bitexact"},
    )
    cmd = stream.global_args("-hide_banner", "-loglevel", "error").overwrite_output().compile(
        cmd=imageio_ffmpeg.get_ffmpeg_exe())
    subprocess.run(cmd, check=True)


# ----------------------------------------------------------------------------- main


FILES = ("portrait.png", "portrait_multi.png", "source.mp4", "source_multi.mp4", "speech.ogg", "speech_2.ogg",
         "demo.json", "demo_multi.json")


def write_portraits(out: Path, wanted: set[str]) -> None:
    portrait = draw_portrait(SIZE)
    pair = draw_two_people()
    for name, image in (("portrait.png", portrait), ("portrait_multi.png", pair)):
        if name in wanted:
            cv2.imwrite(str(out / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    for name, image in (("source.mp4", portrait), ("source_multi.mp4", pair)):
        if name in wanted:
            encode_h264(image, out / name)
    half = pair.shape[1] // 2
    for label, image in (("portrait.png", portrait), ("portrait_multi.png left half", pair[:, :half]),
                         ("portrait_multi.png right half", pair[:, half:])):
        faces = haar_faces(image)
        if faces:
            print(f"{label}: the Haar frontal-face cascade detects {len(faces)} face(s) {faces}")
        else:
            print(f"{label}: the Haar cascade finds no face; the preview falls back to the centred face box")


def write_speech(out: Path, wanted: set[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t1, t2, rate = synthesize_tracks(work)
        for name, track in (("speech.ogg", t1), ("speech_2.ogg", t2)):
            if name in wanted:
                encode_opus(track, rate, out / name, work)
    print(f"speech.ogg: {len(t1) / rate:.1f} s, speech_2.ogg: {len(t2) / rate:.1f} s")


def write_jobs(out: Path, wanted: set[str]) -> None:
    base = {
        "input_type": "image",
        "person_count": "single",
        "image_path": "examples/portrait.png",
        "wav_path": "examples/speech.ogg",
        "prompt": "A person is talking to the camera",
        "width": SIZE,
        "height": SIZE,
    }
    multi = dict(base, person_count="multi", image_path="examples/portrait_multi.png",
                 wav_path_2="examples/speech_2.ogg", width=MULTI_SIZE[0], height=MULTI_SIZE[1],
                 prompt="Two people are talking to the camera, taking turns")
    for name, job in (("demo.json", base), ("demo_multi.json", multi)):
        if name in wanted:
            (out / name).write_text(json.dumps({"input": job}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "examples")
    ap.add_argument("--only", nargs="+", choices=FILES, metavar="NAME",
                    help=f"write only these files (of {', '.join(FILES)})")
    args = ap.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(args.only or FILES)

    if wanted & {"portrait.png", "portrait_multi.png", "source.mp4", "source_multi.mp4"}:
        write_portraits(out, wanted)
    if wanted & {"speech.ogg", "speech_2.ogg"}:
        write_speech(out, wanted)
    write_jobs(out, wanted)

    total = 0
    for name in FILES:
        if not (out / name).exists():
            continue
        size = (out / name).stat().st_size
        total += size
        print(f"  {name:18s} {size / 1024:8.1f} KiB")
    print(f"  {'total':18s} {total / 1024:8.1f} KiB (limit {MEDIA_LIMIT_BYTES / 1024:.0f} KiB)")
    if total > MEDIA_LIMIT_BYTES:
        print("examples/ exceeds the media budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
