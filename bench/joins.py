"""How visible chain joins are, on the preview backend's own frames (no video codec between).

    python bench/joins.py [--minutes 10] [--chains 8] [--size 128] [--blend 0,4,8]

Renders the example speech looped to --minutes, cut into --chains chains by the planner
(longtalk.chains), window by window with the preview renderer exactly as the GPU activity
feeds it (a chain's first window gets the reference as its tail, every other window the
previous window's last M frames). On the assembled frames it measures the mean absolute
difference (0-255) between consecutive frames at chain joins, at ordinary window seams and
everywhere else, and, for each --blend value, the largest step within the 12 frames up to a
join once stitch's dissolve (longtalk.chains.dissolve_into) is applied. Measured on raw
frames: in the published video every window is its own H.264 clip, and at 64x64 the
encoder's changes at clip boundaries are as large as the join itself.

Last line: BENCH_JSON {"joins": {...}}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from longtalk import audio, av_io  # noqa: E402
from longtalk.backends.base import WindowJob  # noqa: E402
from longtalk.backends.preview import render_preview  # noqa: E402
from longtalk.chains import Cut, blend_frames, chain_count, dissolve_into, frame_db, plan_cuts  # noqa: E402
from longtalk.spec import RenderSpec  # noqa: E402
from longtalk.windows import WindowParams, total_frames, window, window_count  # noqa: E402


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/joins.py", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--chains", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--blend", default="0,4,8", help="dissolve lengths to compare (frames)")
    p.add_argument("--cuts", default="pauses", choices=["pauses", "balanced"],
                   help="the planner's cuts (default), or exactly at the balanced split points (for comparison)")
    args = p.parse_args(argv)
    started = time.monotonic()
    params = WindowParams()
    m, spf = params.motion, params.samples_per_frame
    one = av_io.decode_audio_16k(ROOT / "examples" / "speech.ogg", "audio")
    reps = int(np.ceil(args.minutes * 60 * 16000 / one.size))
    samples = np.tile(one, reps)[: int(args.minutes * 60 * 16000)]
    samples = np.clip(samples * audio.loudness_gain([samples]), -1, 1).astype(np.float32)  # as ingest does
    total = total_frames(samples.size, params)
    n = window_count(total, params)
    count, why = chain_count(args.chains, n)
    cuts = plan_cuts(frame_db(samples, spf), n, count, params)
    if args.cuts == "balanced":  # where a planner that ignores the speech would cut
        cuts = [Cut(window=round(c * n / count), frame=round(c * n / count) * params.stride + m, ideal=c * n / count,
                    pause=None, reason="balanced split") for c in range(1, count)]
    firsts = {0, *[c.window for c in cuts]}
    ref = av_io.fit_image(av_io.decode_image((ROOT / "examples" / "portrait.png").read_bytes(), "image"),
                          args.size, args.size)
    padded = np.concatenate([samples, np.zeros(params.window * spf, np.float32)])
    spec = RenderSpec(width=args.size, height=args.size, window=params.window, motion=params.motion, fps=params.fps)

    diffs = np.zeros(total)  # diffs[t] = MAD(frame t-1, frame t)
    last = None
    around: dict[int, dict] = {}  # join frame -> the previous chain's last kept frames, the first new one
    keep_tail = max(int(b) for b in args.blend.split(",")) + 1
    recent: list[np.ndarray] = []
    prev_out = None
    for k in range(n):
        w = window(k, total, params)
        tail = np.repeat(ref[None], m, axis=0) if k in firsts else prev_out[-m:]
        job = WindowJob(render_id="joins", index=k, spec=spec, frame_start=w.start, reference=ref, tail=tail,
                        audio=[padded[w.audio_start: w.audio_start + w.audio_samples]], chain_start=k in firsts)
        out = render_preview(job)
        kept = out[w.keep_offset: w.keep_offset + w.kept]
        if k in firsts and k > 0:
            around[w.keep_start] = {"before": np.stack(recent[-keep_tail:]), "first": kept[0].copy()}
        for i, frame in enumerate(kept):
            if last is not None:
                diffs[w.keep_start + i] = mad(last, frame)
            last = frame
            recent.append(frame)
            del recent[:-keep_tail]
        prev_out = out
    joins = sorted(around)
    seams = [window(k, total, params).keep_start for k in range(1, n) if k not in firsts]
    special = set(joins) | set(seams)
    interior = [t for t in range(1, total) if t not in special]
    res = {"cuts": args.cuts, "minutes": args.minutes, "size": args.size, "windows": n, "chains": count, "reason": why,
           "joins": len(joins), "join_mad": round(float(np.mean(diffs[joins])), 3),
           "seam_mad": round(float(np.mean(diffs[seams])), 3),
           "interior_mad": round(float(np.mean(diffs[interior])), 3), "blend": {}}
    cut_by_frame = {c.frame: c for c in cuts}
    for b in (int(x) for x in args.blend.split(",")):
        steps = []
        used = []
        for j in joins:
            cut = cut_by_frame[j]
            count_b = blend_frames({"frame": j, "pause": list(cut.pause) if cut.pause else None}, b)
            before = dissolve_into(around[j]["before"], around[j]["first"], count_b)
            seq = [*before, around[j]["first"]]
            local = [mad(a, c) for a, c in zip(seq, seq[1:])]
            steps.append(max(local))
            used.append(count_b)
        res["blend"][str(b)] = {"max_step_near_join": round(float(np.mean(steps)), 3),
                                "frames_blended": used}
    res["wall_s"] = round(time.monotonic() - started, 1)
    print(f"chain joins on raw preview frames, {args.cuts} cuts: {args.minutes:g} min of speech, {args.size}x{args.size}, {n} windows, "
          f"{why}")
    print(f"  consecutive-frame MAD (0-255): joins {res['join_mad']} ({len(joins)}), window seams {res['seam_mad']}, "
          f"interior {res['interior_mad']}")
    for b, r in res["blend"].items():
        print(f"  dissolve {b:>2} frames: largest step near a join {r['max_step_near_join']} "
              f"(frames blended per join {r['frames_blended']})")
    print("BENCH_JSON " + json.dumps({"joins": res}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
