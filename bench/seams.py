"""The seam pop: how much the picture jumps where one window's clip ends and the next begins,
in the encoded output, against the jump between frames inside a window.

    python bench/seams.py [--windows 16] [--size 512] [--options "current,NAME:crf=12;x264-params=...,..."]

Renders the demo (examples/demo.json: the portrait, the example speech, 512x512) with the
preview backend window by window as the GPU activity feeds it, encodes every window's kept
frames as its own clip with av_io.encode_clip (one per --options entry: `current` is
av_io.CLIP_CODEC_OPTIONS; NAME:key=value;key=value replaces those libx264 options), joins them by stream copy
as stitch does (av_io.concat_clips), decodes the result and measures the mean absolute luma
difference (0-255) between consecutive frames at every window start (the first kept frame
against the frame before it) and inside windows. Also on the raw frames (no codec).

Last line: BENCH_JSON {...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from longtalk import av_io  # noqa: E402
from longtalk.backends.base import WindowJob  # noqa: E402
from longtalk.backends.preview import PreviewBackend  # noqa: E402
from longtalk.spec import RenderSpec  # noqa: E402
from longtalk.windows import WindowParams, window, window_count  # noqa: E402


def render_demo(windows: int, size: int) -> tuple[list[np.ndarray], int]:
    """The kept frames of each window, and the total frame count."""
    p = WindowParams()
    reference = av_io.fit_image(av_io.decode_image((ROOT / "examples/portrait.png").read_bytes(), "image"), size, size)
    speech = av_io.decode_audio_16k(ROOT / "examples/speech.ogg", "audio")
    total = min(speech.size // p.samples_per_frame, p.window + (windows - 1) * p.stride)
    spec = RenderSpec(width=size, height=size)
    backend, kept, tail = PreviewBackend(), [], None
    for k in range(window_count(total, p)):
        w = window(k, total, p)
        audio = np.zeros(w.audio_samples, np.float32)
        part = speech[w.audio_start: w.audio_start + w.audio_samples]
        audio[: part.size] = part
        job = WindowJob(render_id="seams", index=k, spec=spec, frame_start=w.start, reference=reference,
                        tail=np.repeat(reference[None], p.motion, 0) if tail is None else tail, audio=[audio],
                        chain_start=tail is None)
        frames = asyncio.run(backend.render_window(job))
        kept.append(frames[w.keep_offset: w.keep_offset + w.kept])
        tail = frames[-p.motion:].copy()
    return kept, total


def luma_steps(frames: np.ndarray) -> np.ndarray:
    y = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2YUV)[..., 0].astype(np.float32) for f in frames])
    return np.abs(np.diff(y, axis=0)).mean(axis=(1, 2))


def measure(frames: np.ndarray, starts: list[int]) -> dict:
    steps = luma_steps(frames)  # steps[i]: frame i+1 against frame i
    at = np.array([s - 1 for s in starts if s > 0])
    interior = np.setdiff1d(np.arange(steps.size), at)
    return {"seams_mean": round(float(steps[at].mean()), 3), "seams_max": round(float(steps[at].max()), 3),
            "seams_min": round(float(steps[at].min()), 3), "interior_mean": round(float(steps[interior].mean()), 3)}


def encoded(kept: list[np.ndarray], options: dict, work: Path) -> tuple[np.ndarray, int]:
    clips = []
    saved = dict(av_io.CLIP_CODEC_OPTIONS)
    av_io.CLIP_CODEC_OPTIONS.clear()
    av_io.CLIP_CODEC_OPTIONS.update(options)
    try:
        for k, frames in enumerate(kept):
            clips.append(work / f"{k:05d}.mp4")
            av_io.encode_clip(frames, clips[-1], 25)
    finally:
        av_io.CLIP_CODEC_OPTIONS.clear()
        av_io.CLIP_CODEC_OPTIONS.update(saved)
    out = work / "video.mp4"
    av_io.concat_clips(clips, out, work)
    n = av_io.count_video_frames(out)
    decoded = av_io.read_frames(out, list(range(n)))
    return np.stack([decoded[i] for i in range(n)]), out.stat().st_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/seams.py", description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--options", default="current")
    args = ap.parse_args(argv)
    kept, total = render_demo(args.windows, args.size)
    starts = list(np.cumsum([0] + [len(f) for f in kept[:-1]]))
    raw = np.concatenate(kept)
    out = {"windows": len(kept), "frames": total, "size": args.size, "raw": measure(raw, starts), "encoded": {}}
    print(f"{len(kept)} windows, {total} frames at {args.size}x{args.size}")
    print(f"{'encoding':<44} {'seams mean':>10} {'min':>6} {'max':>6} {'interior':>9} {'bytes':>9}")
    r = out["raw"]
    print(f"{'raw frames (no codec)':<44} {r['seams_mean']:>10} {r['seams_min']:>6} {r['seams_max']:>6} "
          f"{r['interior_mean']:>9} {'-':>9}")
    for item in args.options.split(","):
        name, _, given = item.partition(":")
        options = dict(av_io.CLIP_CODEC_OPTIONS)
        options.update(dict(o.split("=", 1) for o in given.split(";") if o))
        with tempfile.TemporaryDirectory(prefix="seams-") as tmp:
            frames, size = encoded(kept, options, Path(tmp))
        r = {**measure(frames, starts), "bytes": size, "options": options}
        out["encoded"][name] = r
        print(f"{name + ' ' + given:<44} {r['seams_mean']:>10} {r['seams_min']:>6} "
              f"{r['seams_max']:>6} {r['interior_mean']:>9} {size:>9}")
    print("BENCH_JSON " + json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
