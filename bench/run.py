"""Benchmarks of the pipeline's CPU side, against real servers (no GPU needed).

    python bench/run.py [stitch|overhead|ingest|all] [--minutes 1,10,60] [--windows 200]
                        [--content grain|preview] [--ingest-minutes 60]
    python bench/run.py fleet [--gpus 1,2,4,8] [--window-seconds 3] [--minutes 10] [--mixed
                              [--mixed-gpus 4] [--mixed-minutes 60]]

1. stitch   stitch + publish (mux) throughput and peak RSS for N minutes of 512x512 @ 25 fps.
            The audio is encoded first, as ingest does (timed apart: it is off the render's
            tail), and publish muxes by stream copy; --publish-encode measures publish
            encoding the audio itself (renders ingested by the earlier release).
            Window clips are put into the real S3 server (rclone) under the keys the render
            activity writes; CpuActivities.stitch and .publish are timed in a fresh
            subprocess per size (ActivityEnvironment), with its own ru_maxrss and that of
            its children (ffmpeg) reported separately.
2. overhead orchestration overhead per window: a real Temporal dev server, in-process
            workers from worker.build_workers with a renderer that returns at once, a job of
            exactly --windows windows submitted through starter.main; the numbers come from
            the workflow histories (parent + every continue-as-new run of the chain).
3. ingest   ingest + plan for speech tracks of --ingest-minutes (default 60; e.g. 1,60,239),
            Ogg/Opus and 44.1 kHz WAV, each in a fresh subprocess, with peak RSS (and the RSS
            the process rests at with the CPU activities imported, as a worker at start) and
            the SHA-256 of the normalised WAV ingest stores (equal before and after a change
            that must not alter it).

4. fleet    one long render on G timed-backend "GPU" workers (bench/fleet.py): wall time,
            speedup against G=1, GPU busy fraction, smoothness of chain joins; --mixed
            times a short render beside it.

Prints a table per section and a final line `BENCH_JSON {...}` with every number (fleet: a
line with every number, then the last line `BENCH_JSON {"fleet": {"<G>": {"wall_s",
"speedup", "busy"}}}`).
Everything (servers' data, media, S3 objects) lives in one temp folder removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "bench"):  # the project, and bench/chain_variants.py
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from longtalk.converter import DATA_CONVERTER  # noqa: E402
from longtalk.settings import Settings  # noqa: E402
from longtalk.stack import Process, free_port  # noqa: E402
from longtalk.store import ObjectStore  # noqa: E402
from longtalk.testing import s3_process, temporal_process, transcode  # noqa: E402  (one ffmpeg run, built with ffmpeg-python)
from common import activity_spans, event_time, log, signal_spans, table, workflow_task_stats  # noqa: E402

EXAMPLES = ROOT / "examples"
FPS, WINDOW, MOTION, SIZE = 25, 81, 9, 512
STRIDE = WINDOW - MOTION
SPF = 16_000 // FPS  # 16 kHz samples per video frame
GRAIN_SIGMA = 3.5  # Gaussian noise added to preview frames for a model-like bitrate (~2 Mbit/s)
HEARTBEAT_TIMEOUT_S = 60.0  # what workflows/render.py gives ingest, stitch and publish
RESULT_MARK = "BENCH_CHILD_RESULT "
# Issue 18: ingest's peak under 300 MB where the process held 147 MB before it, whatever the
# length: the whole process's peak, and what ingest adds above the worker's resting RSS.
INGEST_PEAK_RSS_MB = 300
INGEST_OWN_RSS_MB = 150
MB = 1024 * 1024


def rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def child_pids() -> list[int]:
    pids = []
    for children in Path("/proc/self/task").glob("*/children"):
        try:
            pids += [int(p) for p in children.read_text().split()]
        except OSError:
            pass
    return pids


def vmhwm_self_mb() -> float:
    return proc_hwm_mb(os.getpid()) or 0.0


def maxrss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # KiB on Linux


def proc_cpu_s(pid: int | None) -> float | None:
    """utime + stime of a process, from /proc (None when it is gone)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_hwm_mb(pid: int | None) -> float | None:
    """Peak resident set (VmHWM) of another process."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, TypeError):
        pass
    return None


def git_state() -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""
    dirty = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {"head": git("rev-parse", "--short", "HEAD").strip(), "modified_tracked_files": dirty}


def machine_info() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return {"nproc": os.cpu_count(), "cpu_model": model, "mem_gb": round(mem_gb, 1),
            "python": platform.python_version(), "kernel": platform.release()}


def stitch_windows(total: int) -> list[int]:
    """Frames each window's clip holds (window 0: 81, then 72, the last trimmed to T)."""
    from longtalk.windows import WindowParams, windows

    return [w.kept for w in windows(total, WindowParams(WINDOW, MOTION, FPS))]


# =============================================================================================
# Child side: the timed part, in a fresh interpreter (own ru_maxrss)
# =============================================================================================

class Instrument:
    """Wraps pipeline functions (by attribute, without changing them) to time each phase and
    sample this process's RSS per phase; records the children's (ffmpeg) high-water mark
    after each phase."""

    def __init__(self) -> None:
        self.phases: dict[str, dict] = {}
        self.current = "other"
        self.activity = ""  # prefix of the phase names: the activity being timed
        self.child_vmhwm_mb = 0.0  # true peak of the children (ffmpeg), sampled every 10 ms
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> None:
        self._sampler.start()

    def stop(self) -> None:
        self._stop.set()
        self._sampler.join()

    def _entry(self, name: str) -> dict:
        return self.phases.setdefault(name, {"calls": 0, "s": 0.0, "peak_rss_mb": 0.0})

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            rss = rss_now_mb()
            entry = self._entry(self.current)
            entry["peak_rss_mb"] = max(entry["peak_rss_mb"], rss)
            for pid in child_pids():
                hwm = proc_hwm_mb(pid)
                if hwm is not None:
                    entry["child_vmhwm_mb"] = max(entry.get("child_vmhwm_mb", 0.0), hwm)
                    self.child_vmhwm_mb = max(self.child_vmhwm_mb, hwm)

    def wrap(self, owner, attr: str, name: str) -> None:
        fn = getattr(owner, attr)
        inst = self

        def wrapper(*args, **kwargs):
            key = f"{inst.activity}.{name}" if inst.activity else name
            previous, inst.current = inst.current, key
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                entry = inst._entry(key)
                entry["calls"] += 1
                entry["s"] += time.perf_counter() - started
                entry["peak_rss_mb"] = max(entry["peak_rss_mb"], rss_now_mb())
                entry["children_maxrss_mb"] = maxrss_mb(resource.RUSAGE_CHILDREN)
                inst.current = previous

        setattr(owner, attr, wrapper)

    def summary(self) -> dict:
        return {k: {kk: round(vv, 3) if isinstance(vv, float) else vv for kk, vv in v.items()}
                for k, v in self.phases.items() if v["calls"] or k == "other"}


def instrument_pipeline(store) -> Instrument:
    from longtalk import audio, av_io

    inst = Instrument()
    for attr in ("download", "get_bytes"):
        inst.wrap(store, attr, "s3 get")
    for attr in ("put_file", "put_bytes", "put_json"):
        inst.wrap(store, attr, "s3 put")
    for attr in ("size", "exists", "metadata", "presign"):
        inst.wrap(store, attr, "s3 stat")
    for attr in ("concat_clips", "concat_clips_with_audio", "mux_audio", "mux_copy", "count_video_frames",
                 "decode_audio_chunks",
                 "write_wav16", "decode_image", "fit_image", "encode_png"):
        inst.wrap(av_io, attr, attr)
    inst.wrap(audio, "loudness_gain", "loudness_gain")
    return inst


class Beats:
    """Heartbeats an activity sends, with the longest silence between start, beats and end."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, *details) -> None:
        self.times.append(time.monotonic())

    def max_gap(self, started: float, ended: float) -> float:
        points = [started, *self.times, ended]
        return max(b - a for a, b in zip(points, points[1:]))


def run_activity(fn, *args, inst: Instrument | None = None):
    from temporalio.testing import ActivityEnvironment

    if inst is not None:
        inst.activity = fn.__name__
        inst.current = f"{fn.__name__}.other"

    env = ActivityEnvironment()
    beats = Beats()
    env.on_heartbeat = beats
    started = time.monotonic()
    result = env.run(fn, *args)
    ended = time.monotonic()
    if inst is not None:
        inst.activity, inst.current = "", "other"
        entry = inst._entry(f"{fn.__name__}.total")
        entry["calls"], entry["s"] = 1, ended - started
    return result, ended - started, {"heartbeats": len(beats.times),
                                     "max_heartbeat_gap_s": round(beats.max_gap(started, ended), 2)}


def child_main(spec: dict) -> dict:
    # every import happens before the baseline is taken
    import numpy  # noqa: F401
    import temporalio.testing  # noqa: F401

    from activities.cpu import CpuActivities
    from longtalk import av_io
    from longtalk.payloads import (
        IngestResult, PlanInput, PublishInput, RenderRequest, RenderSpec, StitchInput, output_key,
    )

    settings = Settings(s3_endpoint=spec["s3_endpoint"], bucket=spec["bucket"])
    store = ObjectStore.from_settings(settings)
    cpu = CpuActivities(store, settings)
    raw = dict(spec["request"])
    req = RenderRequest(spec=RenderSpec(**raw.pop("spec")), **raw)
    store.size("warm-up/none")  # open the connection pool before the baseline
    inst = instrument_pipeline(store)
    out: dict = {"baseline": {"self_maxrss_mb": round(maxrss_mb(resource.RUSAGE_SELF), 1),
                              "children_maxrss_mb": round(maxrss_mb(resource.RUSAGE_CHILDREN), 1),
                              "self_rss_mb": round(rss_now_mb(), 1),
                              "self_vmhwm_mb": round(vmhwm_self_mb(), 1)}}
    if spec["kind"] == "ingest":  # what a CPU worker rests at: its activities' modules imported
        out["warm"] = {"self_maxrss_mb": round(maxrss_mb(resource.RUSAGE_SELF), 1),
                       "self_rss_mb": round(rss_now_mb(), 1)}
    inst.start()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)

    if spec["kind"] == "stitch":
        total, n = spec["total_frames"], spec["windows"]
        out["ingest_audio_s"] = None
        if spec.get("audio_at_ingest", True):
            # what ingest now does besides decoding: encode the output's audio once (timed on
            # its own: it runs while the windows render, not on the render's tail)
            from longtalk.payloads import derived_keys

            with tempfile.TemporaryDirectory(prefix="bench-ingest-audio-", dir=spec["tmp"]) as tmp:
                started = time.perf_counter()
                original = store.download(req.inputs["audio"], Path(tmp) / "audio.bin")
                encoded = Path(tmp) / "final.m4a"
                av_io.encode_final_audio([original], encoded, total, FPS)
                store.put_file(derived_keys(req.render_id)["final_audio"], encoded, "audio/mp4",
                               metadata={"frames": str(total)})
                out["ingest_audio_s"] = round(time.perf_counter() - started, 3)
        stitched, stitch_s, stitch_hb = run_activity(
            cpu.stitch, StitchInput(render_id=req.render_id, windows=n, total_frames=total, spec=req.spec), inst=inst)
        after_stitch = {"self_maxrss_mb": round(maxrss_mb(resource.RUSAGE_SELF), 1),
                        "children_maxrss_mb": round(maxrss_mb(resource.RUSAGE_CHILDREN), 1)}
        result, publish_s, publish_hb = run_activity(
            cpu.publish, PublishInput(request=req, video_key=stitched.video_key, total_frames=total,
                                      windows=n), inst=inst)
        out.update(stitch_s=round(stitch_s, 3), publish_s=round(publish_s, 3),
                   after_stitch=after_stitch, stitch_heartbeats=stitch_hb, publish_heartbeats=publish_hb,
                   size_bytes=result.size_bytes)
    else:
        ingest, ingest_s, ingest_hb = run_activity(cpu.ingest, req, inst=inst)
        after_ingest = {"self_maxrss_mb": round(maxrss_mb(resource.RUSAGE_SELF), 1),
                        "children_maxrss_mb": round(maxrss_mb(resource.RUSAGE_CHILDREN), 1)}
        plan, plan_s, _ = run_activity(cpu.plan, PlanInput(request=req, ingest=ingest), inst=inst)
        out.update(ingest_s=round(ingest_s, 3), plan_s=round(plan_s, 3), after_ingest=after_ingest,
                   ingest_heartbeats=ingest_hb, audio_samples=ingest.audio_samples,
                   total_frames=plan.total_frames, windows=plan.windows)
        assert isinstance(ingest, IngestResult)

    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    inst.stop()
    out["peak"] = {"self_maxrss_mb": round(maxrss_mb(resource.RUSAGE_SELF), 1),
                   "children_maxrss_mb": round(maxrss_mb(resource.RUSAGE_CHILDREN), 1),
                   "self_vmhwm_mb": round(vmhwm_self_mb(), 1),
                   "children_vmhwm_mb": round(inst.child_vmhwm_mb, 1)}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["cpu_s"] = {"self": round(cpu_after.ru_utime + cpu_after.ru_stime
                                  - cpu_before.ru_utime - cpu_before.ru_stime, 2),
                    "children": round(children.ru_utime + children.ru_stime, 2)}
    out["phases"] = inst.summary()
    if spec["kind"] == "stitch":
        out["video_bytes"] = store.size(stitched.video_key)
    else:
        out["normalised_wav_bytes"] = store.size(ingest.audio_keys[0])
        out["normalised_wav_sha256"] = stored_sha256(store, ingest.audio_keys[0])  # after the measured part

    if spec["kind"] == "stitch":  # verification, after the measured part
        with tempfile.TemporaryDirectory(prefix="bench-verify-", dir=spec["tmp"]) as tmp:
            local = store.download(output_key(req.render_id), Path(tmp) / "output.mp4")
            info = av_io.probe(local)
            out["verify"] = {"frames": info["video"]["frames"] if info["video"] else 0,
                             "video_codec": info["video"]["codec"] if info["video"] else None,
                             "audio_codec": info["audio"]["codec"] if info["audio"] else None,
                             "audio_duration_s": round(info["audio"]["duration_s"], 3) if info["audio"] else None,
                             "format_duration_s": round(info["format_duration_s"], 3)}
    return out


def stored_sha256(store, key: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="bench-sha-") as tmp:
        with open(store.download(key, Path(tmp) / "object"), "rb") as f:
            while block := f.read(MB):
                digest.update(block)
    return digest.hexdigest()


# Linux carries a parent's memory high-water mark into a forked (or vforked) child: at exec
# the old mm's hiwater_rss goes into the child's ru_maxrss. Forked straight from this (big)
# process, a child would report our peak as its own. So children are started by a lean
# launcher (a bare interpreter, ~10 MB), whose own small high-water mark is all they inherit.
LAUNCHER_CODE = """
import json, subprocess, sys
for line in sys.stdin:
    argv, cwd = json.loads(line)
    p = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    sys.stdout.write(json.dumps({"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}) + "\\n")
    sys.stdout.flush()
"""


class Launcher:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCHER_CODE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self, argv: list[str]) -> dict:
        self.proc.stdin.write(json.dumps([argv, str(ROOT)]) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("benchmark launcher exited")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


_LAUNCHER: Launcher | None = None


def run_child(spec: dict) -> dict:
    global _LAUNCHER
    if _LAUNCHER is None:
        _LAUNCHER = Launcher()
    proc = _LAUNCHER.run([sys.executable, str(Path(__file__).resolve()), "_child", json.dumps(spec)])
    for line in proc["stdout"].splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    raise RuntimeError(f"benchmark child failed ({proc['rc']}):\n{proc['stdout'][-3000:]}\n{proc['stderr'][-5000:]}")


# =============================================================================================
# Media made once per run (setup, not timed)
# =============================================================================================

class Media:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._frames: dict[str, tuple] = {}

    def looped_speech(self, seconds: float) -> Path:
        """examples/speech.ogg looped to `seconds`, re-encoded as one continuous Ogg/Opus stream
        (32 kbit/s mono). A stream copy of the loop would be faster to make but carries a
        timestamp overlap at every loop point, which the mux then reproduces (see README)."""
        path = self.folder / f"speech_{seconds:g}s.ogg"
        if not path.exists():
            transcode(EXAMPLES / "speech.ogg", path, {"stream_loop": -1}, t=f"{seconds:.3f}",
                      **{"c:a": "libopus", "b:a": "32k"}, ac=1)
        return path

    def wav_44k(self, seconds: float) -> Path:
        path = self.folder / f"speech_{seconds:g}s_44k.wav"
        if not path.exists():
            transcode(self.looped_speech(seconds), path, ar=44100, ac=1, **{"c:a": "pcm_s16le"})
        return path

    def window_frames(self, content: str):
        """Frames of window 0 (81) and window 1 (81, first 9 = window 0's tail), rendered by the
        preview backend from examples/portrait.png and the example speech; 'grain' adds
        per-frame Gaussian noise so the H.264 bitrate is that of a model's output."""
        if content in self._frames:
            return self._frames[content]
        import numpy as np

        from longtalk import av_io
        from longtalk.backends.base import WindowJob
        from longtalk.backends.preview import render_preview
        from longtalk.spec import RenderSpec

        ref = av_io.fit_image(av_io.decode_image((EXAMPLES / "portrait.png").read_bytes(), "image"), SIZE, SIZE)
        audio = av_io.decode_audio_16k(EXAMPLES / "speech.ogg", "audio")
        common = dict(render_id="bench", spec=RenderSpec(width=SIZE, height=SIZE, window=WINDOW, motion=MOTION, fps=FPS),
                      reference=ref)
        f0 = render_preview(WindowJob(index=0, frame_start=0, tail=np.repeat(ref[None], MOTION, axis=0),
                                      audio=[audio[: WINDOW * SPF]], chain_start=True, **common))
        f1 = render_preview(WindowJob(index=1, frame_start=STRIDE, tail=f0[-MOTION:],
                                      audio=[audio[STRIDE * SPF: (STRIDE + WINDOW) * SPF]], **common))
        if content == "grain":
            rng = np.random.default_rng(7)

            def grain(frames):
                noisy = frames.astype(np.float32) + rng.normal(0.0, GRAIN_SIGMA, frames.shape).astype(np.float32)
                return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
            f0, f1 = grain(f0), grain(f1)
        elif content != "preview":
            raise ValueError(f"unknown content {content!r}")
        self._frames[content] = (f0, f1)
        return f0, f1

    def clip(self, content: str, which: str, frames: int) -> bytes:
        """Encoded clip bytes (av_io.encode_clip, the render activity's own encoder settings)."""
        path = self.folder / f"clip_{content}_{which}_{frames}.mp4"
        if not path.exists():
            from longtalk import av_io

            f0, f1 = self.window_frames(content)
            data = f0 if which == "first" else f1[MOTION: MOTION + frames]
            assert data.shape[0] == frames, (which, frames, data.shape)
            av_io.encode_clip(data, path, FPS)
        return path.read_bytes()


def remove_render(s3_root: Path, bucket: str, render_id: str) -> None:
    shutil.rmtree(s3_root / bucket / "renders" / render_id, ignore_errors=True)


# =============================================================================================
# 1. stitch + mux
# =============================================================================================

def bench_stitch(ctx: dict, minutes: float, content: str, audio_at_ingest: bool = True) -> dict:
    from longtalk.payloads import clip_key

    settings, store, media = ctx["settings"], ctx["store"], ctx["media"]
    total = int(round(minutes * 60 * FPS))
    kept = stitch_windows(total)
    n = len(kept)
    render_id = f"bench-stitch-{content}-{minutes:g}m-{uuid.uuid4().hex[:6]}"
    log(f"stitch {minutes:g} min ({content}): T={total} frames, {n} windows; setting up")
    t0 = time.monotonic()
    clips = {}
    for k, frames in enumerate(kept):
        which = "first" if k == 0 else "next"
        if (which, frames) not in clips:
            clips[(which, frames)] = media.clip(content, which, frames)
    marker = {"attempt": "1", "worker": "bench"}

    def put(k: int) -> int:
        data = clips[("first" if k == 0 else "next", kept[k])]
        store.put_bytes(clip_key(render_id, k), data, "video/mp4", metadata=marker)
        return len(data)

    with ThreadPoolExecutor(max_workers=8) as pool:
        clip_bytes = sum(pool.map(put, range(n)))
    audio = media.looped_speech(total / FPS)
    audio_obj = f"renders/{render_id}/inputs/audio-bench.ogg"
    store.put_file(audio_obj, audio, "audio/ogg")
    setup_s = time.monotonic() - t0
    log(f"  setup {setup_s:.1f}s ({clip_bytes / MB:.1f} MB of clips); running stitch + publish in a subprocess")

    request = {"render_id": render_id, "inputs": {"audio": audio_obj, "image": "unused"},
               "input_names": {"audio": "wav_path", "image": "image_path"},
               "spec": {"width": SIZE, "height": SIZE, "fps": FPS, "window": WINDOW, "motion": MOTION}}
    spec = {"kind": "stitch", "s3_endpoint": settings.s3_endpoint, "bucket": settings.bucket,
            "request": request, "total_frames": total, "windows": n, "tmp": str(ctx["tmp"]),
            "audio_at_ingest": audio_at_ingest}
    rclone_hwm_before = proc_hwm_mb(ctx["s3"].pid())
    try:
        child = run_child(spec)
    finally:
        remove_render(ctx["s3_root"], settings.bucket, render_id)
    s, p = child["stitch_s"], child["publish_s"]
    v = child["verify"]
    ok_frames = v["frames"] == total
    ok_audio = v["audio_duration_s"] is not None and abs(v["audio_duration_s"] - total / FPS) <= 1.0 / FPS
    res = {
        "minutes": minutes, "content": content, "total_frames": total, "windows": n,
        "audio_at_ingest": audio_at_ingest, "ingest_audio_s": child["ingest_audio_s"],
        "setup_s": round(setup_s, 1), "clips_mb": round(clip_bytes / MB, 1),
        "video_bitrate_mbps": round(clip_bytes * 8 / (total / FPS) / 1e6, 3),
        "stitch_s": s, "publish_s": p, "combined_s": round(s + p, 3),
        "stitch_fps": round(total / s, 1), "mux_fps": round(total / p, 1), "combined_fps": round(total / (s + p), 1),
        "stitch_mb_per_s": round(child["video_bytes"] / MB / s, 1),
        "output_mb": round(child["size_bytes"] / MB, 2),
        "baseline": child["baseline"], "after_stitch": child["after_stitch"], "peak": child["peak"],
        "cpu_s": child["cpu_s"], "phases": child["phases"],
        "stitch_heartbeats": child["stitch_heartbeats"], "publish_heartbeats": child["publish_heartbeats"],
        "verify": v, "frames_ok": ok_frames, "audio_ok": ok_audio,
        "rclone_vmhwm_mb": proc_hwm_mb(ctx["s3"].pid()), "rclone_vmhwm_before_mb": rclone_hwm_before,
    }
    log(f"  stitch {s:.2f}s  publish {p:.2f}s  (audio encoded at ingest: {child['ingest_audio_s']}s)  peak self {child['peak']['self_maxrss_mb']} MB, "
        f"ffmpeg {child['peak']['children_maxrss_mb']} MB, frames ok={ok_frames} audio ok={ok_audio}")
    return res


# =============================================================================================
# 2. orchestration overhead
# =============================================================================================

class InstantBackend:
    """A renderer that returns precomputed frames at once."""

    name = "preview"

    def __init__(self, width: int, height: int, frames: int = WINDOW) -> None:
        import numpy as np

        rng = np.random.default_rng(1)
        self.frames = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
        self.calls = 0

    async def render_window(self, job, progress=None):
        self.calls += 1
        return self.frames

    async def close(self) -> None:
        return None


def make_tone_wav(path: Path, samples: int) -> None:
    import wave

    import numpy as np

    rng = np.random.default_rng(3)
    t = np.arange(samples, dtype=np.float64) / 16_000
    sig = 0.05 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 1.3 * t)) \
        + 0.01 * rng.standard_normal(samples)
    pcm = np.clip(sig * 32767, -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(pcm.tobytes())


def variant_workers(client, settings: Settings, store, backend, variant: str) -> list:
    """build_workers' workers, except that the CPU worker runs a benchmark variant of
    RenderChain (bench/chain_variants.py); same options as worker.build_workers."""
    from concurrent.futures import ThreadPoolExecutor as Pool
    from datetime import timedelta

    from temporalio.worker import Worker

    from activities.cpu import CpuActivities
    from chain_variants import VARIANTS
    from worker import build_workers
    from workflows.render import RenderVideo

    cpu = CpuActivities(store, settings)
    workers = [Worker(
        client, task_queue=settings.render_queue, workflows=[RenderVideo, VARIANTS[variant]],
        activities=[cpu.ingest, cpu.plan, cpu.stitch, cpu.publish], activity_executor=Pool(max_workers=4),
        max_concurrent_activities=4, graceful_shutdown_timeout=timedelta(seconds=20), identity="bench-cpu",
    )]
    gpu_only = dataclasses.replace(settings, worker_roles="gpu")
    return workers + build_workers(client, gpu_only, store, backends={"preview": backend}, identity="bench")


async def _overhead(ctx: dict, n_windows: int, temporal: Process, variant: str = "shipped") -> dict:
    from temporalio.api.enums.v1 import EventType
    from temporalio.client import Client

    import starter
    from worker import build_workers
    from workflows.render import chain_workflow_id

    tmp, settings, store = ctx["tmp"], ctx["settings"], ctx["store"]
    size = 64
    total = WINDOW + (n_windows - 1) * STRIDE
    wav = tmp / "overhead.wav"
    make_tone_wav(wav, total * SPF)
    job = tmp / "overhead-job.json"
    job.write_text(json.dumps({"input": {"input_type": "image", "person_count": "single",
                                         "image_path": str(EXAMPLES / "portrait.png"), "wav_path": str(wav),
                                         "width": size, "height": size}}))
    render_id = f"bench-overhead-{uuid.uuid4().hex[:8]}"
    ws = dataclasses.replace(settings, render_queue=f"render-{uuid.uuid4().hex[:6]}",
                             gpu_queue=f"gpu-{uuid.uuid4().hex[:6]}")
    client = await Client.connect(ws.temporal_address, namespace=ws.temporal_namespace,
                                  data_converter=DATA_CONVERTER)
    backend = InstantBackend(size, size)
    if variant == "shipped":
        workers = build_workers(client, ws, store, backends={"preview": backend}, identity="bench")
    else:
        workers = variant_workers(client, ws, store, backend, variant)
    tasks = [asyncio.create_task(w.run()) for w in workers]
    await asyncio.sleep(0.5)  # let the pollers start
    pids = {"temporal": temporal.pid(), "rclone": ctx["s3"].pid()}
    cpu0 = {k: proc_cpu_s(v) for k, v in pids.items()}
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    log(f"overhead ({variant} RenderChain): {n_windows} windows (T={total} frames, {size}x{size}), "
        f"render id {render_id}")
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    try:
        rc = await starter.main([str(job), "--id", render_id, "--quiet"], client=client, settings=ws,
                                stdout=out, stderr=err)
    finally:
        wall = time.monotonic() - started
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu1 = {k: proc_cpu_s(v) for k, v in pids.items()}
        for w in workers:
            await w.shutdown()
        await asyncio.gather(*tasks, return_exceptions=True)
    if rc != 0:
        raise RuntimeError(f"render failed (rc={rc}): {err.getvalue()[-2000:]} {out.getvalue()[-2000:]}")
    result = json.loads(out.getvalue())
    log(f"  workflow finished in {wall:.1f}s (client side); reading histories")

    parent = (await client.get_workflow_handle(render_id).fetch_history()).events
    t_start = next(event_time(e) for e in parent if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED)
    t_end = next(event_time(e) for e in parent if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED)
    child_id = chain_workflow_id(render_id, 0)
    first_run = next(e.child_workflow_execution_started_event_attributes.workflow_execution.run_id
                     for e in parent if e.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED)
    child_started = next(event_time(e) for e in parent
                         if e.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED)
    child_done = next(event_time(e) for e in parent
                      if e.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED)
    runs, run_id = [], first_run
    while run_id:  # follow continue-as-new
        events = (await client.get_workflow_handle(child_id, run_id=run_id).fetch_history()).events
        runs.append(events)
        run_id = next((e.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
                       for e in events
                       if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW), None)
    listed = [w async for w in client.list_workflows(f"WorkflowId = '{child_id}'")]

    parent_acts = activity_spans(parent)
    chain_acts = [a for events in runs for a in activity_spans(events)]
    renders = [a for a in chain_acts if a["name"] == "render_window"]
    if len(renders) != n_windows or any("completed" not in a for a in renders):
        raise RuntimeError(f"expected {n_windows} completed render_window activities, got {len(renders)}")
    total_s = t_end - t_start
    render_s = sum(a["completed"] - a["started"] for a in renders)
    cpu_acts = {a["name"]: a["completed"] - a["started"] for a in parent_acts}
    cpu_s = sum(cpu_acts.values())
    # per-window timeline inside the chain
    renders.sort(key=lambda a: a["scheduled"])
    queue = [a["started"] - a["scheduled"] for a in renders]
    react = [b["scheduled"] - a["completed"] for a, b in zip(renders, renders[1:])]
    sigs = [s for events in runs for s in signal_spans(events)]
    sig_lat = [b - a for a, b in sigs]
    done_to_sig = []
    for a in renders:
        after = [s for s, _ in sigs if s >= a["completed"]]
        if after:
            done_to_sig.append(min(after) - a["completed"])
    run_bounds = [(event_time(ev[0]), event_time(ev[-1])) for ev in runs]
    can_gaps = [b[0] - a[1] for a, b in zip(run_bounds, run_bounds[1:])]
    wft_parent = workflow_task_stats(parent)
    wft_chain = [workflow_task_stats(ev) for ev in runs]

    def mean_ms(xs):
        return round(1000 * sum(xs) / len(xs), 2) if xs else None

    def pct_ms(xs, q):
        if not xs:
            return None
        s = sorted(xs)
        return round(1000 * s[min(len(s) - 1, int(q * len(s)))], 2)

    tl = {
        "start_to_ingest_scheduled_s": next(a["scheduled"] for a in parent_acts if a["name"] == "ingest") - t_start,
        "plan_done_to_chain_started_s": child_started - next(a["completed"] for a in parent_acts if a["name"] == "plan"),
        "chain_span_s": child_done - child_started,
        "chain_done_to_stitch_scheduled_s": next(a["scheduled"] for a in parent_acts if a["name"] == "stitch") - child_done,
        "publish_done_to_close_s": t_end - next(a["completed"] for a in parent_acts if a["name"] == "publish"),
    }
    res = {
        "variant": variant, "windows": n_windows, "total_frames": total, "size": f"{size}x{size}",
        "windows_per_run": ws.windows_per_run, "chain_runs": len(runs), "chain_runs_listed": len(listed),
        "client_wall_s": round(wall, 3), "workflow_total_s": round(total_s, 3),
        "render_activity_s": round(render_s, 3), "cpu_activity_s": {k: round(v, 3) for k, v in cpu_acts.items()},
        "overhead_per_window_ms": round(1000 * (total_s - render_s) / n_windows, 2),
        "overhead_excl_all_activities_per_window_ms": round(1000 * (total_s - render_s - cpu_s) / n_windows, 2),
        "render_activity_mean_ms": mean_ms([a["completed"] - a["started"] for a in renders]),
        "render_activity_p95_ms": pct_ms([a["completed"] - a["started"] for a in renders], 0.95),
        "per_window_ms": {
            "activity_schedule_to_start_mean": mean_ms(queue), "activity_schedule_to_start_p95": pct_ms(queue, 0.95),
            "completed_to_next_scheduled_mean": mean_ms(react), "completed_to_next_scheduled_p95": pct_ms(react, 0.95),
            "completed_to_signal_initiated_mean": mean_ms(done_to_sig),
            "signal_initiated_to_signaled_mean": mean_ms(sig_lat),
        },
        "continue_as_new_gap_ms": [round(1000 * g, 1) for g in can_gaps],
        "timeline_s": {k: round(v, 3) for k, v in tl.items()},
        "workflow_tasks": {"parent": {k: round(v, 3) if isinstance(v, float) else v for k, v in wft_parent.items()},
                           "chain": {"count": sum(w["count"] for w in wft_chain),
                                     "queue_s": round(sum(w["queue_s"] for w in wft_chain), 3),
                                     "run_s": round(sum(w["run_s"] for w in wft_chain), 3)}},
        "cpu_s_during_run": {
            "bench_process(workers+client)": round(self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime, 2),
            **{k: (round(cpu1[k] - cpu0[k], 2) if cpu0[k] is not None and cpu1[k] is not None else None)
               for k in pids},
        },
        "backend_calls": backend.calls, "result_frames": result["frames"], "result_windows": result["windows"],
    }
    remove_render(ctx["s3_root"], settings.bucket, render_id)
    wav.unlink(missing_ok=True)
    return res


def bench_overhead(ctx: dict, n_windows: int, variants: list[str]) -> list[dict]:
    """One fresh Temporal dev server per variant (same starting conditions)."""
    tmp, settings = ctx["tmp"], ctx["settings"]
    out = []
    for i, variant in enumerate(variants):
        log("starting the Temporal dev server")
        temporal = temporal_process(settings, tmp, f"temporal-{i}.db")
        try:
            res = asyncio.run(_overhead(ctx, n_windows, temporal, variant))
            res["temporal_vmhwm_mb"] = proc_hwm_mb(temporal.pid())
            out.append(res)
        finally:
            temporal.stop()
            (tmp / f"temporal-{i}.db").unlink(missing_ok=True)
    return out


# =============================================================================================
# 3. ingest + plan
# =============================================================================================

def bench_ingest(ctx: dict, minutes: float) -> list[dict]:
    from longtalk.inputs import parse_job, stage_inputs

    settings, store, media = ctx["settings"], ctx["store"], ctx["media"]
    seconds = minutes * 60
    out = []
    for label, path in (("ogg/opus", media.looped_speech(seconds)), ("wav 44.1k s16 mono", media.wav_44k(seconds))):
        render_id = f"bench-ingest-{uuid.uuid4().hex[:8]}"
        job = parse_job({"input": {"input_type": "image", "image_path": str(EXAMPLES / "portrait.png"),
                                   "wav_path": str(path), "width": SIZE, "height": SIZE}}, settings)
        t0 = time.monotonic()
        staged = stage_inputs(job, store, render_id, settings)
        stage_s = time.monotonic() - t0
        request = {"render_id": render_id, "inputs": {f: s.object_key for f, s in staged.items()},
                   "input_names": {f: s.source_key for f, s in staged.items()},
                   "spec": dataclasses.asdict(dataclasses.replace(job.spec, window=WINDOW, motion=MOTION, fps=FPS)),
                   # as the workflow asks of every new render: the output's AAC is encode_audio's,
                   # beside the windows, not ingest's
                   "final_audio_beside": True}
        log(f"ingest {minutes:g} min {label}: {path.stat().st_size / MB:.1f} MB (staged in {stage_s:.1f}s); "
            f"ingest + plan in a subprocess")
        try:
            child = run_child({"kind": "ingest", "s3_endpoint": settings.s3_endpoint, "bucket": settings.bucket,
                               "request": request, "tmp": str(ctx["tmp"])})
        finally:
            remove_render(ctx["s3_root"], settings.bucket, render_id)
        res = {"minutes": minutes, "input": label, "input_mb": round(path.stat().st_size / MB, 1),
               "stage_s": round(stage_s, 2), "ingest_s_per_min": round(child["ingest_s"] / minutes, 3), **child}
        log(f"  ingest {child['ingest_s']:.2f}s plan {child['plan_s']:.3f}s peak self "
            f"{child['peak']['self_maxrss_mb']} MB (resting: {child['warm']['self_maxrss_mb']} MB)")
        out.append(res)
    return out


# =============================================================================================
# report
# =============================================================================================

def phase_lines(phases: dict, indent: str = "  ") -> list[str]:
    """One line per activity: its total, then where the time went (wrapped calls), with the
    largest RSS seen in each phase (and ffmpeg's own peak where it ran)."""
    lines = []
    acts = [k[: -len(".total")] for k in phases if k.endswith(".total")]
    for act in acts:
        total = phases[f"{act}.total"]["s"]
        parts = []
        for key, v in sorted(phases.items(), key=lambda kv: -kv[1]["s"]):
            if not key.startswith(act + ".") or key.endswith(".total") or key.endswith(".other"):
                continue
            parts.append(f"{key[len(act) + 1:]} {v['s']:.2f}s/{v['calls']}x (rss<={v['peak_rss_mb']:.0f}"
                         + (f", ffmpeg<={v['child_vmhwm_mb']:.0f}" if v.get("child_vmhwm_mb") else "") + ")")
        accounted = sum(v["s"] for k, v in phases.items()
                        if k.startswith(act + ".") and not k.endswith((".total", ".other")))
        other = phases.get(f"{act}.other", {})
        rest_rss = f" (rss<={other['peak_rss_mb']:.0f})" if other.get("peak_rss_mb") else ""
        parts.append(f"rest {max(0.0, total - accounted):.2f}s{rest_rss}")
        lines.append(f"{indent}{act} {total:.2f}s: " + "; ".join(parts))
    return lines


def report(results: dict) -> str:
    out = []
    if "stitch" in results:
        out.append("== 1. stitch + publish (mux), 512x512 @ 25 fps; each size in a fresh subprocess ==")
        rows = []
        for r in results["stitch"]:
            rows.append([f"{r['minutes']:g} min", r["content"], r["total_frames"], r["windows"], r["video_bitrate_mbps"],
                         "copy" if r.get("audio_at_ingest") else "encode",
                         r.get("ingest_audio_s") if r.get("ingest_audio_s") is not None else "-",
                         r["stitch_s"], r["publish_s"], r["stitch_fps"], r["mux_fps"], r["combined_fps"],
                         r["output_mb"], r["baseline"]["self_maxrss_mb"], r["peak"]["self_maxrss_mb"],
                         r["peak"]["self_vmhwm_mb"], r["peak"]["children_maxrss_mb"], r["peak"]["children_vmhwm_mb"],
                         f"{r['verify']['frames']}{'' if r['frames_ok'] else ' BAD'}",
                         f"{r['verify']['audio_duration_s']}{'' if r['audio_ok'] else ' BAD'}"])
        out.append(table(["length", "content", "T", "windows", "Mbit/s", "audio", "ingest audio s", "stitch s", "mux s", "stitch f/s",
                          "mux f/s", "both f/s", "out MB", "maxrss base", "maxrss peak", "VmHWM peak",
                          "ffmpeg maxrss*", "ffmpeg VmHWM",
                          "frames", "audio s"], rows))
        out.append("  (MB; maxrss = getrusage ru_maxrss of the subprocess (RUSAGE_SELF) and of its children "
                   "(RUSAGE_CHILDREN); *a child's ru_maxrss starts at its parent's high-water mark at spawn, so "
                   "'ffmpeg VmHWM' (sampled /proc/<ffmpeg>/status every 10 ms) is ffmpeg's own peak)")
        for r in results["stitch"]:
            out.append(f"  {r['minutes']:g} min, where the time went (MB in parentheses):")
            out += phase_lines(r["phases"], "    ")
            sh, ph = r["stitch_heartbeats"], r["publish_heartbeats"]
            out.append(f"    heartbeats seen: stitch {sh['heartbeats']} (longest silence {sh['max_heartbeat_gap_s']}s), "
                       f"publish {ph['heartbeats']} (longest silence {ph['max_heartbeat_gap_s']}s); "
                       f"CPU s: python {r['cpu_s']['self']}, ffmpeg {r['cpu_s']['children']}; "
                       f"stitch moves {r['stitch_mb_per_s']} MB/s of output video; setup (untimed) {r['setup_s']}s")
    for r in results.get("overhead", []):
        out.append("")
        label = "shipped RenderChain" if r["variant"] == "shipped" else \
            f"EXPERIMENT: bench/chain_variants.py '{r['variant']}' RenderChain (not the shipped code)"
        out.append(f"== 2. orchestration overhead, {label}: {r['windows']} windows, instant renderer, "
                   f"{r['size']}, windows_per_run={r['windows_per_run']} ({r['chain_runs']} chain runs) ==")
        pw = r["per_window_ms"]
        rows = [
            ["workflow total (parent start -> close)", f"{r['workflow_total_s']} s"],
            ["client wall (starter.main incl. staging, result)", f"{r['client_wall_s']} s"],
            ["sum of render_window activity time", f"{r['render_activity_s']} s "
                                                   f"(mean {r['render_activity_mean_ms']} ms, p95 {r['render_activity_p95_ms']} ms)"],
            ["CPU activities (ingest/plan/stitch/publish)",
             ", ".join(f"{k} {v}s" for k, v in r["cpu_activity_s"].items())],
            ["OVERHEAD per window (total - render activities)", f"{r['overhead_per_window_ms']} ms"],
            ["OVERHEAD per window (total - all activities)", f"{r['overhead_excl_all_activities_per_window_ms']} ms"],
            ["  activity schedule -> start (mean / p95)",
             f"{pw['activity_schedule_to_start_mean']} / {pw['activity_schedule_to_start_p95']} ms"],
            ["  activity completed -> next scheduled (mean / p95)",
             f"{pw['completed_to_next_scheduled_mean']} / {pw['completed_to_next_scheduled_p95']} ms"],
            ["    of which completed -> signal initiated", f"{pw['completed_to_signal_initiated_mean']} ms"],
            ["    of which signal initiated -> signaled", f"{pw['signal_initiated_to_signaled_mean']} ms"],
            ["  continue-as-new gap", f"{r['continue_as_new_gap_ms']} ms"],
            ["workflow tasks parent / chain",
             f"{r['workflow_tasks']['parent']['count']} / {r['workflow_tasks']['chain']['count']}"],
            ["timeline", ", ".join(f"{k} {v}" for k, v in r["timeline_s"].items())],
            ["CPU seconds during the run", ", ".join(f"{k} {v}" for k, v in r["cpu_s_during_run"].items())],
        ]
        out.append(table(["measure", "value"], rows, right=False))
    if "ingest" in results:
        out.append("")
        lengths = ", ".join(dict.fromkeys(f"{r['minutes']:g}" for r in results["ingest"]))
        out.append(f"== 3. ingest + plan, {lengths}-minute speech tracks; each input in a fresh subprocess ==")
        rows = [[f"{r['minutes']:g} min", r["input"], r["input_mb"], r["stage_s"], r["ingest_s"],
                 r["ingest_s_per_min"], r["plan_s"], r["windows"], r["baseline"]["self_maxrss_mb"],
                 r["warm"]["self_maxrss_mb"], r["after_ingest"]["self_maxrss_mb"],
                 r["peak"]["self_maxrss_mb"], r["peak"]["self_vmhwm_mb"],
                 f"{r['ingest_heartbeats']['heartbeats']} / {r['ingest_heartbeats']['max_heartbeat_gap_s']}s",
                 r["normalised_wav_sha256"][:12]]
                for r in results["ingest"]]
        out.append(table(["length", "input", "MB", "stage s", "ingest s", "s/min", "plan s", "windows",
                          "maxrss base", "maxrss resting", "maxrss after ingest", "maxrss peak", "VmHWM peak",
                          "heartbeats / max gap", "WAV sha256"], rows))
        for r in results["ingest"]:
            out.append(f"  {r['minutes']:g} min {r['input']}, where the time went (MB in parentheses):")
            out += phase_lines(r["phases"], "    ")
    return "\n".join(out)


def targets(results: dict) -> list[str]:
    notes = []
    for r in results.get("stitch", []):
        if r["peak"]["self_maxrss_mb"] > 300 or r["peak"]["children_vmhwm_mb"] > 300:
            notes.append(f"stitch {r['minutes']:g} min: peak RSS over 300 MB")
        if not (r["frames_ok"] and r["audio_ok"]):
            notes.append(f"stitch {r['minutes']:g} min: output verification failed")
        for key in ("stitch_heartbeats", "publish_heartbeats"):
            if r[key]["max_heartbeat_gap_s"] > HEARTBEAT_TIMEOUT_S:
                notes.append(f"{key.split('_')[0]} {r['minutes']:g} min: {r[key]['max_heartbeat_gap_s']}s "
                             f"without a heartbeat (> {HEARTBEAT_TIMEOUT_S:g}s heartbeat timeout)")
    for r in results.get("overhead", []):
        if r["variant"] == "shipped" and r["overhead_per_window_ms"] >= 100:
            notes.append(f"orchestration overhead per window {r['overhead_per_window_ms']} ms >= 100 ms")
    for r in results.get("ingest", []):
        own = r["peak"]["self_maxrss_mb"] - r["warm"]["self_maxrss_mb"]
        if r["peak"]["self_maxrss_mb"] > INGEST_PEAK_RSS_MB:
            notes.append(f"ingest {r['minutes']:g} min {r['input']}: peak RSS {r['peak']['self_maxrss_mb']:.0f} MB "
                         f"(> {INGEST_PEAK_RSS_MB} MB)")
        if own > INGEST_OWN_RSS_MB:
            notes.append(f"ingest {r['minutes']:g} min {r['input']}: {own:.0f} MB above the worker's resting RSS "
                         f"(> {INGEST_OWN_RSS_MB} MB)")
        if r["ingest_heartbeats"]["max_heartbeat_gap_s"] > HEARTBEAT_TIMEOUT_S:
            notes.append(f"ingest {r['input']}: {r['ingest_heartbeats']['max_heartbeat_gap_s']}s without a heartbeat")
    return notes


# =============================================================================================

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        res = child_main(json.loads(argv[1]))
        print(RESULT_MARK + json.dumps(res), flush=True)
        return 0
    import fleet  # bench/fleet.py, the fleet command (not in the measured children: numpy at import)

    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    p.add_argument("what", nargs="?", default="all", choices=["stitch", "overhead", "ingest", "fleet", "estimate", "all"],
                   help="'all' is stitch, overhead and ingest; fleet and estimate run only when named")
    p.add_argument("--minutes", default=None,
                   help="stitch lengths in minutes (default 1,10,60); fleet: the render's length (default 10)")
    p.add_argument("--gpus", default="1,2,4,8", help="fleet: GPU worker counts G (default 1,2,4,8)")
    p.add_argument("--window-seconds", type=float, default=3.0,
                   help="fleet: seconds each window takes on a timed-backend GPU worker (default 3)")
    p.add_argument("--size", type=int, default=64, help="fleet: picture width = height (default 64)")
    p.add_argument("--join-blend", type=int, default=None,
                   help="fleet: frames stitch dissolves into each chain join (default: LONGTALK_JOIN_BLEND_FRAMES's "
                        "default; 0 = hard cut)")
    p.add_argument("--mixed", action="store_true",
                   help="fleet: also time a 10-second render submitted while a long render uses every worker")
    p.add_argument("--mixed-gpus", type=int, default=4, help="fleet --mixed: GPU workers (default 4)")
    p.add_argument("--mixed-minutes", type=float, default=60.0,
                   help="fleet --mixed: the long render's length in minutes (default 60)")
    p.add_argument("--job-seconds", type=float, default=90.0, help="estimate: the estimated job's speech (default 90)")
    p.add_argument("--ahead", type=int, default=2, help="estimate: renders queued ahead of it (default 2)")
    p.add_argument("--ahead-seconds", type=float, default=45.0,
                   help="estimate: the speech of each render ahead (default 45)")
    p.add_argument("--windows", type=int, default=200, help="windows for the overhead run (default 200)")
    p.add_argument("--ingest-minutes", default="60", help="audio lengths for ingest in minutes (default 60; e.g. 1,60,239)")
    p.add_argument("--content", default="grain", choices=["grain", "preview"],
                   help="stitch clip content: preview frames + noise (model-like bitrate, default) "
                        "or clean preview frames (very low bitrate)")
    p.add_argument("--publish-encode", action="store_true",
                   help="stitch: measure publish as a render without ingest's AAC gets it (publish encodes "
                        "the audio, the earlier release's way); default: the audio was encoded at ingest and "
                        "publish muxes by stream copy")
    p.add_argument("--overhead-variants", default="shipped",
                   help="RenderChain variants for the overhead run: 'shipped' (the real workflow) and/or "
                        "experiments from bench/chain_variants.py (default shipped)")
    p.add_argument("--json-out", type=Path, help="also write the results JSON here")
    args = p.parse_args(argv)
    minutes = [float(m) for m in (args.minutes or "1,10,60").split(",") if m.strip()]
    what = {"stitch", "overhead", "ingest"} if args.what == "all" else {args.what}

    tmp = Path(tempfile.mkdtemp(prefix="longtalk-bench-"))
    settings = Settings(data_dir=tmp / "data", temporal_address=f"127.0.0.1:{free_port()}",
                        s3_endpoint=f"127.0.0.1:{free_port()}", bucket="bench",
                        input_roots="*")  # the bench's media live in a temp folder
    s3_root = tmp / "s3"
    results: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "machine": machine_info(), "git": git_state(),
                     "command": " ".join(["python", "bench/run.py", *argv])}
    started = time.monotonic()
    load_start = [round(x, 2) for x in os.getloadavg()]
    s3 = None
    try:
        s3 = s3_process(settings, tmp)  # its objects under s3_root
        store = ObjectStore.from_settings(settings)
        store.ensure_bucket()
        ctx = {"tmp": tmp, "settings": settings, "store": store, "s3": s3, "s3_root": s3_root,
               "media": Media(tmp / "media")}
        if "stitch" in what:
            results["stitch"] = [bench_stitch(ctx, m, args.content, not args.publish_encode) for m in minutes]
        if "overhead" in what:
            results["overhead"] = bench_overhead(ctx, args.windows,
                                                 [v for v in args.overhead_variants.split(",") if v])
        if "ingest" in what:
            results["ingest"] = [r for m in args.ingest_minutes.split(",") if m.strip()
                                 for r in bench_ingest(ctx, float(m))]
        if "estimate" in what:
            from estimate import bench_estimate

            results["estimate"] = bench_estimate(ctx, [int(g) for g in args.gpus.split(",") if g.strip()],
                                                 args.window_seconds, args.size, args.job_seconds, args.ahead,
                                                 args.ahead_seconds)
        if "fleet" in what:
            detail = fleet.bench_fleet(ctx, [int(g) for g in args.gpus.split(",") if g.strip()], args.window_seconds,
                                       float(args.minutes or 10), args.size, args.mixed, args.join_blend,
                                       mixed_gpus=args.mixed_gpus, mixed_minutes=args.mixed_minutes)
            results["fleet_detail"] = detail
            results["fleet"] = {str(r["gpus"]): {"wall_s": r["wall_s"], "speedup": r["speedup"], "busy": r["busy"]}
                                for r in detail["runs"]}
        results["rclone_vmhwm_mb"] = proc_hwm_mb(s3.pid())
    finally:
        if _LAUNCHER is not None:
            _LAUNCHER.close()
        if s3 is not None:
            s3.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    results["bench_wall_s"] = round(time.monotonic() - started, 1)
    results["loadavg_start_end"] = [load_start, [round(x, 2) for x in os.getloadavg()]]
    results["target_misses"] = targets(results)
    if "fleet_detail" in results:
        results["target_misses"] += fleet.targets(results["fleet_detail"])
    if "estimate" in results:
        from estimate import targets as estimate_targets

        results["target_misses"] += estimate_targets(results["estimate"])
    m = results["machine"]
    print(f"longtalk benchmark  {results['date']}  nproc={m['nproc']}  cpu={m['cpu_model']}  "
          f"mem={m['mem_gb']} GB  python {m['python']}")
    g = results["git"]
    print(f"code: HEAD {g['head']}" + (f" + uncommitted changes in {', '.join(g['modified_tracked_files'])}"
                                       if g["modified_tracked_files"] else " (clean)"))
    print(report(results))
    if "fleet_detail" in results:
        print("\n".join(fleet.report(results["fleet_detail"])))
    if "estimate" in results:
        from estimate import report as estimate_report

        print("\n".join(estimate_report(results["estimate"])))
    print("")
    print("target misses: " + ("; ".join(results["target_misses"]) if results["target_misses"] else "none"))
    print(f"benchmark wall time {results['bench_wall_s']} s; load average (1/5/15 min) at start "
          f"{results['loadavg_start_end'][0]}, at end {results['loadavg_start_end'][1]}")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))
    if "fleet" in results:  # the fleet's summary alone on the last line
        print("BENCH_JSON " + json.dumps(results, separators=(",", ":")), flush=True)
        print("BENCH_JSON " + json.dumps({"fleet": results["fleet"]}, separators=(",", ":")), flush=True)
        return 0
    print("BENCH_JSON " + json.dumps(results, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
