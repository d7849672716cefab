"""The seam pop: how much the picture jumps where one window's clip ends and the next begins,
in the encoded output, against the jump between frames inside a window.

    python bench/seams.py [--windows 16] [--size 512] [--height H] [--options "current,NAME:crf=12;x264-params=...,..."]
                          [--join encode,copy]

Renders the demo (examples/demo.json: the portrait, the example speech, 512x512) with the
preview backend window by window as the GPU activity feeds it, encodes every window's kept
frames as its own clip with av_io.encode_clip (one per --options entry: `current` is
av_io.CLIP_CODEC_OPTIONS; NAME:key=value;key=value replaces those libx264 options), joins them
as stitch does (--join encode: av_io.concat_clips, the output's stream encoded once) or as
stitch did before (copy: a stream copy), decodes the result and measures the mean absolute
luma difference (0-255) between consecutive frames at every window start (the first kept
frame against the frame before it) and inside windows. Also on the raw frames (no codec).
Sizes: the clips' bytes and the output's; CPU: the clips' encode and the join's (ffmpeg's
user + system time).

Last line: BENCH_JSON {...}.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from longtalk import av_io  # noqa: E402
from longtalk.testing.seams import copy_join, measure, render_demo, window_starts  # noqa: E402


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def encoded(kept: list[np.ndarray], options: dict, join: str, work: Path) -> tuple[np.ndarray, dict]:
    clips = []
    saved = dict(av_io.CLIP_CODEC_OPTIONS)
    av_io.CLIP_CODEC_OPTIONS.clear()
    av_io.CLIP_CODEC_OPTIONS.update(options)
    started = time.process_time()
    try:
        for k, frames in enumerate(kept):
            clips.append(work / f"{k:05d}.mp4")
            av_io.encode_clip(frames, clips[-1], 25)
    finally:
        av_io.CLIP_CODEC_OPTIONS.clear()
        av_io.CLIP_CODEC_OPTIONS.update(saved)
    clip_cpu = time.process_time() - started
    out = work / "video.mp4"
    before = children_cpu_s()
    if join == "copy":  # the join of earlier releases
        copy_join(clips, out, work)
    else:
        av_io.concat_clips(clips, out, work)
    join_cpu = children_cpu_s() - before
    n = av_io.count_video_frames(out)
    decoded = av_io.read_frames(out, list(range(n)))
    return np.stack([decoded[i] for i in range(n)]), {
        "clip_bytes": sum(c.stat().st_size for c in clips), "bytes": out.stat().st_size,
        "clip_cpu_s": round(clip_cpu, 3), "join_cpu_s": round(join_cpu, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/seams.py", description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--size", type=int, default=512, help="width (and height unless --height)")
    ap.add_argument("--height", type=int, default=0)
    ap.add_argument("--options", default="current")
    ap.add_argument("--join", default="encode,copy", help="encode (stitch now), copy (before), or both")
    args = ap.parse_args(argv)
    kept, total = render_demo(args.windows, args.size, args.height or None)
    starts = window_starts(kept)
    raw = np.concatenate(kept)
    height = args.height or args.size
    out = {"windows": len(kept), "frames": total, "size": [args.size, height], "raw": measure(raw, starts),
           "encoded": {}}
    print(f"{len(kept)} windows, {total} frames at {args.size}x{height}")
    print(f"{'clips, join':<40} {'seams mean':>10} {'min':>6} {'max':>6} {'interior':>9} {'clip bytes':>10} "
          f"{'out bytes':>9} {'clip cpu':>8} {'join cpu':>8}")
    r = out["raw"]
    print(f"{'raw frames (no codec)':<40} {r['seams_mean']:>10} {r['seams_min']:>6} {r['seams_max']:>6} "
          f"{r['interior_mean']:>9}")
    for item in args.options.split(","):
        name, _, given = item.partition(":")
        options = dict(av_io.CLIP_CODEC_OPTIONS)
        options.update(dict(o.split("=", 1) for o in given.split(";") if o))
        for join in args.join.split(","):
            with tempfile.TemporaryDirectory(prefix="seams-") as tmp:
                frames, sizes = encoded(kept, options, join, Path(tmp))
            r = {**measure(frames, starts), **sizes, "options": options}
            out["encoded"][f"{name}/{join}"] = r
            print(f"{name + ' ' + given + ', ' + join:<40} {r['seams_mean']:>10} {r['seams_min']:>6} "
                  f"{r['seams_max']:>6} {r['interior_mean']:>9} {r['clip_bytes']:>10} {r['bytes']:>9} "
                  f"{r['clip_cpu_s']:>8} {r['join_cpu_s']:>8}")
    print("BENCH_JSON " + json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
