"""The seam pop: stitch encodes the output's video stream once from the window clips (high-
quality intermediates), so a window start is as quiet as the frames inside a window, where
joining the clips by stream copy made every window start its own coding-noise pattern (mean
abs luma step 0.51 against 0.10 inside, bench/seams.py). Real frames (the preview backend's
demo), real x264 and ffmpeg."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from longtalk import av_io
from longtalk.testing.seams import copy_join, measure, render_demo, window_starts

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def demo():
    kept, total = render_demo(5, 512)
    return kept, total, window_starts(kept)


def joined(kept: list[np.ndarray], work: Path, clip_options: dict | None = None, copy: bool = False) -> np.ndarray:
    """The clips encoded (av_io.encode_clip, with clip_options in place of the clip settings)
    and joined as stitch joins them (copy: by stream copy, as it did before); the output's
    frames."""
    work.mkdir(exist_ok=True)
    saved = dict(av_io.CLIP_CODEC_OPTIONS)
    av_io.CLIP_CODEC_OPTIONS.update(clip_options or {})
    try:
        clips = [work / f"{k:05d}.mp4" for k in range(len(kept))]
        for frames, clip in zip(kept, clips):
            av_io.encode_clip(frames, clip, 25)
    finally:
        av_io.CLIP_CODEC_OPTIONS.clear()
        av_io.CLIP_CODEC_OPTIONS.update(saved)
    out = work / "video.mp4"
    (copy_join if copy else av_io.concat_clips)(clips, out, work)
    n = av_io.count_video_frames(out)
    decoded = av_io.read_frames(out, list(range(n)))
    return np.stack([decoded[i] for i in range(n)])


def test_window_starts_are_as_quiet_as_the_inside(demo, tmp_path):
    kept, total, starts = demo
    raw = measure(np.concatenate(kept), starts)
    frames = joined(kept, tmp_path)
    assert len(frames) == total
    out = measure(frames, starts)
    copied = measure(joined(kept, tmp_path / "copy", {"crf": "18"}, copy=True), starts)
    print("raw", raw, "stitched", out, "stream copy of crf 18 clips", copied)
    # the content's own seam is the interior's (the carried tail joins smoothly) ...
    assert raw["seams_mean"] < 1.2 * raw["interior_mean"], raw
    # ... the stream copy adds a pop of several times the interior's step ...
    assert copied["seams_mean"] > 3 * copied["interior_mean"], copied
    # ... the output encoded once does not: its seams are within a third of the interior's step
    assert out["seams_mean"] < 1.33 * out["interior_mean"], out
    assert out["seams_mean"] - out["interior_mean"] < (copied["seams_mean"] - copied["interior_mean"]) / 10


def test_clips_of_an_earlier_release_still_join(demo, tmp_path):
    """Clips stored at crf 18 (as releases before this one stored them) join frame-exact,
    with a smaller pop than their stream copy had."""
    kept, total, starts = demo
    frames = joined(kept, tmp_path, {"crf": "18"})
    assert len(frames) == total
    out = measure(frames, starts)
    assert out["seams_mean"] < 3 * out["interior_mean"], out
