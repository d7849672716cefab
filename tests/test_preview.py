"""The CPU preview backend, on the real example portrait(s) and speech.

The windows are built like the workflow builds them: W=81 frames, M=9 carried, stride 72,
25 fps, 640 samples of 16 kHz audio per frame; window k+1's tail is window k's last M frames.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from longtalk.backends import preview
from longtalk.backends.base import WindowJob
from longtalk.spec import RenderSpec
from longtalk.backends.preview import (
    PreviewBackend,
    detect_faces,
    mouth_envelope,
    render_preview,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
W, M, FPS, SPF = 81, 9, 25, 640
S = W - M


# ----------------------------------------------------------------------------- media


def _decode_16k(path: Path) -> np.ndarray:
    out = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        for frame in container.decode(audio=0):
            out.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        out.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    return np.concatenate(out).astype(np.float32)


def _image(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return _image(EXAMPLES / "portrait.png")


@pytest.fixture(scope="module")
def pair() -> np.ndarray:
    return _image(EXAMPLES / "portrait_multi.png")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return _decode_16k(EXAMPLES / "speech.ogg")


@pytest.fixture(scope="module")
def speech2() -> np.ndarray:
    return _decode_16k(EXAMPLES / "speech_2.ogg")


def _slice(track: np.ndarray, start_frame: int) -> np.ndarray:
    a = start_frame * SPF
    out = np.zeros(W * SPF, np.float32)
    piece = track[a : a + W * SPF]
    out[: len(piece)] = piece
    return out


def make_job(reference, tracks, k=0, tail=None, *, frame_start=None, source=None, seed=7, **kw) -> WindowJob:
    start = k * S if frame_start is None else frame_start
    chain = tail is None
    if chain:
        tail = np.repeat(reference[None], M, axis=0)
    spec = RenderSpec(input_type="image" if source is None else "video",
                      person_count="multi" if len(tracks) > 1 else "single", width=reference.shape[1],
                      height=reference.shape[0], window=W, motion=M, fps=FPS, seed=seed)
    return WindowJob(
        render_id="test", index=k, spec=spec, frame_start=start, reference=reference, tail=tail,
        audio=[_slice(t, start) if len(t) != W * SPF else t for t in tracks], source=source,
        chain_start=chain, **kw,
    )


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def consecutive(frames: np.ndarray, start: int = 0) -> list[float]:
    return [mad(frames[i], frames[i - 1]) for i in range(start + 1, len(frames))]


def speech_frames(track: np.ndarray) -> np.ndarray:
    """dBFS per 40 ms frame."""
    n = len(track) // SPF
    x = track[: n * SPF].reshape(n, SPF).astype(np.float64)
    return 20 * np.log10(np.sqrt((x * x).mean(axis=1)) + 1e-10)


def mouth_box(face: preview.Face) -> tuple[slice, slice]:
    """Where the mouth can change: around the lip line, the width of the jaw."""
    y0 = int(face.lip_y - 0.2 * face.h)
    y1 = int(face.lip_y + 0.4 * face.h)
    x0 = int(face.cx - 0.35 * face.w)
    x1 = int(face.cx + 0.35 * face.w)
    return slice(max(0, y0), y1), slice(max(0, x0), x1)


def dark_pixels(frame: np.ndarray, face: preview.Face) -> int:
    """Mouth-interior-dark pixels near the lips (the drawn face has none there when closed)."""
    ys, xs = mouth_box(face)
    luma = cv2.cvtColor(np.ascontiguousarray(frame[ys, xs]), cv2.COLOR_RGB2GRAY)
    return int(np.count_nonzero(luma < 40))


@pytest.fixture(scope="module")
def chain(portrait, speech):
    """Windows 0..2 of the example, each continuing from the previous one's last M frames."""
    out = [render_preview(make_job(portrait, [speech], 0))]
    for k in (1, 2):
        out.append(render_preview(make_job(portrait, [speech], k, out[-1][-M:].copy())))
    return out


# ----------------------------------------------------------------------------- tests


def test_example_portrait_face_is_found_on_the_lips(portrait):
    (face,) = detect_faces(portrait, 1)
    assert face.detected, "the Haar cascade should find the drawn face"
    # the drawn face: centred, lip line at y=310 of 512
    assert abs(face.cx - 256) < 12
    assert abs(face.lip_y - 310) <= 3


def test_output_shape_dtype_and_determinism(portrait, speech):
    job = make_job(portrait, [speech], 3, tail=np.repeat(portrait[None], M, 0), frame_start=3 * S)
    a = render_preview(job)
    preview._FACE_CACHE.clear()  # detection must be deterministic as well
    b = render_preview(make_job(portrait, [speech], 3, tail=np.repeat(portrait[None], M, 0), frame_start=3 * S))
    assert a.shape == (W, 512, 512, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a[M], a[-1]), "frames should not all be the same"


def test_seed_changes_motion_but_not_the_tail(portrait, speech):
    a = render_preview(make_job(portrait, [speech], 0, seed=1))
    b = render_preview(make_job(portrait, [speech], 0, seed=2))
    assert np.array_equal(a[:M], b[:M])
    assert not np.array_equal(a[-1], b[-1])


def test_tail_contract(chain, portrait):
    assert all(np.array_equal(chain[0][i], portrait) for i in range(M)), "chain start: the tail is the reference"
    for k in (1, 2):
        assert np.array_equal(chain[k][:M], chain[k - 1][-M:])


def test_seams_are_as_smooth_as_the_inside(chain):
    for k in (1, 2):
        prev, cur = chain[k - 1], chain[k]
        assert np.array_equal(prev[-1], cur[M - 1])
        seam = mad(prev[-1], cur[M])
        inside = max(max(consecutive(prev, M)), max(consecutive(cur, M)))
        assert inside > 0.05, "the windows should move at all"
        assert seam <= 1.5 * inside, (k, seam, inside)
    # the metric sees a broken seam: the last frame against a shifted copy or a far-away frame
    inside0 = max(consecutive(chain[0], M))
    shifted = np.roll(chain[0][-1], (3, -2), axis=(0, 1))
    assert mad(chain[0][-1], shifted) > 3 * inside0
    far = render_preview(make_job(chain[0][0], [np.zeros(W * SPF, np.float32)], 0, frame_start=1000))
    assert mad(chain[0][-1], far[-1]) > 1.5 * inside0


def test_shifted_tail_is_absorbed_and_motion_returns_to_its_path(chain, portrait, speech):
    shifted_tail = np.roll(chain[0][-M:], (6, -5), axis=(1, 2)).copy()
    out = render_preview(make_job(portrait, [speech], 1, shifted_tail))
    assert np.array_equal(out[:M], shifted_tail)
    inside = max(consecutive(out, M))
    seam = mad(shifted_tail[-1], out[M])
    assert seam <= 1.5 * inside and seam < 1.0, (seam, inside)
    # the offset is moved back gradually, not cross-faded: no frame step much above the
    # unshifted window's largest
    assert inside <= 1.6 * max(consecutive(chain[1], M)), inside
    # the 6 px offset was blended out: by the end this window is the unshifted one's
    assert mad(out[-1], chain[1][-1]) < 0.05


def test_mouth_follows_the_audio(portrait, speech):
    (face,) = detect_faces(portrait, 1)
    assert dark_pixels(portrait, face) == 0
    db = speech_frames(speech)
    # a window holding both speech and a pause of at least half a second
    for k in range(len(db) // S):
        seg = db[k * S : k * S + W]
        silent = seg < -60
        run = max((len(r) for r in "".join("s" if v else "-" for v in silent[M:]).split("-")), default=0)
        if np.count_nonzero(seg > -30) > 20 and run >= 15:
            break
    else:
        pytest.fail("no window with speech and a pause in the example")
    job = make_job(portrait, [speech], k, tail=np.repeat(portrait[None], M, 0), frame_start=k * S)
    out = render_preview(job)
    env = mouth_envelope(job.audio[0], W, FPS, 0)
    darks = np.array([dark_pixels(f, face) for f in out])
    open_idx = [i for i in range(M, W) if env[i] > 0.6]
    shut_idx = [i for i in range(M, W) if env[i] < 0.01]
    assert len(open_idx) >= 5 and len(shut_idx) >= 5
    assert all(darks[i] > 40 for i in open_idx), darks[open_idx]
    assert all(darks[i] == 0 for i in shut_idx), darks[shut_idx]
    # openness tracks the envelope
    corr = np.corrcoef(env[M:], darks[M:])[0, 1]
    assert corr > 0.8, corr

    # closed: the mouth region is the reference's, up to the head motion
    ys, xs = mouth_box(face)
    ref_patch = cv2.cvtColor(np.ascontiguousarray(portrait[ys, xs]), cv2.COLOR_RGB2GRAY).astype(np.float32)

    def aligned_diff(i: int) -> float:
        patch = cv2.cvtColor(np.ascontiguousarray(out[i][ys, xs]), cv2.COLOR_RGB2GRAY).astype(np.float32)
        (sx, sy), _ = cv2.phaseCorrelate(ref_patch, patch)
        moved = cv2.warpAffine(ref_patch, np.float32([[1, 0, sx], [0, 1, sy]]), ref_patch.shape[::-1],
                               borderMode=cv2.BORDER_REFLECT)
        return float(np.mean(np.abs(moved - patch)[4:-4, 4:-4]))

    shut = max(aligned_diff(i) for i in shut_idx)
    opened = min(aligned_diff(i) for i in open_idx)
    assert shut < 1.5, shut
    assert opened > 3 * shut + 1.0, (opened, shut)


def test_silence_renders_a_closed_mouth_and_loud_speech_an_open_one(portrait, speech):
    (face,) = detect_faces(portrait, 1)
    silent = render_preview(make_job(portrait, [np.zeros(W * SPF, np.float32)], 0))
    assert all(dark_pixels(f, face) == 0 for f in silent)
    tone = (0.3 * np.sin(2 * np.pi * 180 * np.arange(W * SPF) / 16000)).astype(np.float32)
    loud = render_preview(make_job(portrait, [tone], 0))
    assert all(dark_pixels(f, face) > 100 for f in loud[M + 3 :])


def test_multi_person_mouths_follow_their_own_tracks(pair, speech, speech2):
    left, right = detect_faces(pair, 2)
    assert left.detected and right.detected
    assert left.cx < pair.shape[1] / 2 < right.cx
    assert dark_pixels(pair, left) == 0 and dark_pixels(pair, right) == 0
    db2 = speech_frames(speech2)
    start = int(np.argmax(db2 > -30))  # speaker 2's first words
    talk = speech2[start * SPF : start * SPF + W * SPF]
    quiet = np.zeros(W * SPF, np.float32)
    out = render_preview(make_job(pair, [quiet, talk], 0))
    assert out.shape == (W, pair.shape[0], pair.shape[1], 3)
    assert all(dark_pixels(f, left) == 0 for f in out)
    assert max(dark_pixels(f, right) for f in out) > 40
    out = render_preview(make_job(pair, [talk, quiet], 0))
    assert all(dark_pixels(f, right) == 0 for f in out)
    assert max(dark_pixels(f, left) for f in out) > 40


def test_multi_person_seam(pair, speech, speech2):
    w0 = render_preview(make_job(pair, [speech, speech2], 0))
    w1 = render_preview(make_job(pair, [speech, speech2], 1, w0[-M:].copy()))
    assert np.array_equal(w1[:M], w0[-M:])
    inside = max(max(consecutive(w0, M)), max(consecutive(w1, M)))
    assert mad(w0[-1], w1[M]) <= 1.5 * inside


def test_v2v_frames_come_from_the_source(portrait, speech):
    # a source that changes colour every frame (and is not the still reference)
    tints = np.linspace(-60, 60, W).astype(np.int16)
    source = np.stack([np.clip(portrait.astype(np.int16) + np.array([t, -t // 2, 0], np.int16), 0, 255)
                       for t in tints]).astype(np.uint8)
    (face,) = detect_faces(portrait, 1)
    tail = np.repeat(source[0][None], M, 0)
    job = make_job(source[0], [speech], 0, tail=tail, source=source)
    job.chain_start = True
    out = render_preview(job)
    assert np.array_equal(out[:M], tail)
    above_mouth = int(face.lip_y - 0.2 * face.h)
    settled = M - 1 + preview.RESIDUAL_FADE
    for i in range(settled, W):
        # no head motion in V2V: outside the mouth the source frame shows through unchanged
        assert np.array_equal(out[i][:above_mouth], source[i][:above_mouth]), i
        assert abs(out[i][..., 0].mean() - source[i][..., 0].mean()) < 1.0
    reds = [out[i][..., 0].mean() for i in range(M, W)]
    assert np.all(np.diff(reds) > -0.5) and reds[-1] - reds[0] > 50
    # and the mouth still talks on top of the source
    assert max(dark_pixels(f, face) for f in out) > 40


@pytest.mark.parametrize("kind", ["noise", "blank"])
def test_no_face_falls_back_to_the_centre(kind, speech):
    rng = np.random.default_rng(3)
    if kind == "noise":
        img = rng.integers(0, 256, (320, 480, 3), dtype=np.uint8)
    else:
        img = np.full((320, 480, 3), 128, np.uint8)
    (face,) = detect_faces(img, 1)
    assert not face.detected
    assert abs(face.cx - 240) < 1 and abs(face.w - 0.45 * 320) < 1
    tone = (0.3 * np.sin(2 * np.pi * 200 * np.arange(W * SPF) / 16000)).astype(np.float32)
    out = render_preview(make_job(img, [tone], 0))
    assert out.shape == (W, 320, 480, 3)
    ys, xs = mouth_box(face)
    if kind == "blank":  # a plain image stays plain except for the drawn mouth
        assert np.count_nonzero(out[-1][ys, xs] < 60) > 50
    else:
        assert mad(out[-1][ys, xs], img[ys, xs]) > 0


def test_validation_errors(portrait, speech):
    good = make_job(portrait, [speech], 0)
    render_preview(good)  # sanity: valid

    def variant(**changes) -> WindowJob:
        job = make_job(portrait, [speech], 0)
        for key, value in changes.items():
            setattr(job, key, value)
        return job

    cases = [
        (variant(audio=[speech[: W * SPF - 1]]), r"audio\[0\] must hold .*51840 samples, got 51839"),
        (variant(audio=[]), "audio must be a list of 1 or 2 tracks"),
        (variant(audio=[good.audio[0]] * 3), "audio must be a list of 1 or 2 tracks"),
        (variant(audio=[good.audio[0].reshape(-1, SPF)]), r"audio\[0\] must be a 1-D"),
        (variant(audio=[(good.audio[0] * 1000).astype(np.int16)]), r"audio\[0\] must be float"),
        (variant(audio=[np.full(W * SPF, np.nan, np.float32)]), "NaN"),
        (variant(tail=np.repeat(portrait[None], M - 1, 0)), "tail must hold motion=9 frames, got 8"),
        (variant(tail=np.zeros((M, 256, 256, 3), np.uint8)), r"tail must have shape \(9, 512, 512, 3\)"),
        (variant(reference=portrait[:, :500]), r"reference must have shape \(512, 512, 3\)"),
        (variant(reference=portrait.astype(np.float32)), "reference must be uint8"),
        (variant(source=np.zeros((W - 1, 512, 512, 3), np.uint8)), r"source must have shape \(81, 512, 512, 3\)"),
        (variant(spec=dataclasses.replace(good.spec, motion=W)), "motion must satisfy"),
        (variant(spec=dataclasses.replace(good.spec, window=1)), "window must be an integer >= 2"),
        (variant(spec=dataclasses.replace(good.spec, fps=7)), "fps must be a positive integer dividing 16000"),
    ]
    for job, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            render_preview(job)


def test_backend_interface(portrait, speech):
    backend = PreviewBackend()
    assert backend.name == "preview"
    calls = []
    job = make_job(portrait, [speech], 0)

    async def go():
        try:
            return await backend.render_window(job, progress=lambda what, f: calls.append((what, f)))
        finally:
            await backend.close()

    out = asyncio.run(go())
    assert np.array_equal(out, render_preview(job))
    assert calls == [("render", 1.0)]
