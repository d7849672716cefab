"""What a job will take before it starts: windows, frames, chains, GPU seconds, wall time (ETA)
and cost, each number with where it came from. Nothing is started or stored.

    answer = await estimate(client, store, settings, job, backend)

- frames, windows: the plan's arithmetic (longtalk.windows) on the speech's samples, decoded
  as ingest decodes them;
- chains: the planner's rule and cuts (longtalk.chains: chain_count, the GPU workers of the
  fleet registry for parallel_chains 0; plan_cuts on every frame's loudness at ingest's gain);
- GPU seconds per window, per GPU kind: the fleet's history, else defaults (longtalk.gpu_time);
- wall time: the GPU queue simulated (longtalk.fleet_sim) with the healthy GPU workers serving
  the queue now and the windows left of the renders running ahead, plus the CPU stages before
  and after the windows (CPU_BEFORE_S, CPU_AFTER_S);
- cost: the GPU seconds on each worker at its kind's LONGTALK_GPU_PRICES price.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from . import audio, av_io, visibility as vis
from .chains import chain_count, plan_cuts, rms_db
from .fleet import healthy_on_queue, read_fleet
from .fleet_sim import DISPATCH_S, SimRender, simulate
from .gpu_time import Prices, WindowTime, affinity_wait_s, default_window_s, dispatch_gap, history, window_kind
from .inputs.job import Job
from .inputs.staging import media_kind, prepare
from .inputs.sources import vet_url
from .payloads import derived_keys
from .settings import Settings
from .spec import RenderSpec
from .store import ObjectStore
from .windows import MODEL_SAMPLE_RATE, total_frames, window_count

# the CPU stages around the windows on the embedded stack (bench/estimate.py): ingest and plan
# before the first window; stitch and publish after the last (plus a little per window)
CPU_BEFORE_S = 2.0
CPU_AFTER_S = 1.5
CPU_AFTER_PER_WINDOW_S = 0.02
# stitch decodes every window's clip and encodes the output once (no seam pop): 4.1 ms of CPU a
# frame at 832x480 (bench/seams.py, bench/RESULTS.md), about 10 ms per megapixel of frame
STITCH_S_PER_MEGAPIXEL_FRAME = 0.0103
MAX_AHEAD = 200  # running renders read for the queue ahead (their plan and request: 2 objects each)


def estimate_key(render_id: str) -> str:
    """The plan's estimate of a render (written by the plan activity, read by publish)."""
    return derived_keys(render_id)["plan"].removesuffix("plan.json") + "estimate.json"


@dataclass
class Speech:
    samples: int  # at 16 kHz, as ingest counts them (the longer track of two)
    db: np.ndarray  # every video frame's loudness (dBFS) at ingest's gain: what the plan cuts by


def measure_speech(job: Job, settings: Settings) -> Speech:
    """The speech as the plan will see it, after checking every input as a submission does
    (InputError naming the field): local and base64 inputs are read and decode-checked, a URL's
    address is vetted, and a speech URL is downloaded to be measured. Nothing is stored.

    Each track is decoded as ingest decodes it (16 kHz mono), once, measured as it streams:
    its sample count and every frame's RMS at ingest's loudness gain. Two speakers: the louder
    track's level per frame (the plan takes the louder sample)."""
    spf = MODEL_SAMPLE_RATE // job.spec.fps
    tracks: list[tuple[int, np.ndarray]] = []
    seen: set[tuple[str, str]] = set()
    for source in job.sources():
        if (source.key, source.value) in seen:
            continue
        seen.add((source.key, source.value))
        if source.form == "url" and media_kind(source.field) != "audio":
            vet_url(source, settings)
            continue
        item = prepare(source, settings)
        try:
            if media_kind(source.field) == "audio":
                tracks.append(_track(item.path, source.key, settings, spf))
        finally:
            item.discard()
    samples = max(n for n, _ in tracks)
    frames = max(db.size for _, db in tracks)
    db = np.full(frames, -120.0)
    for _, track_db in tracks:
        db[:track_db.size] = np.maximum(db[:track_db.size], track_db)
    return Speech(samples, db)


def _track(path: str, key: str, settings: Settings, spf: int) -> tuple[int, np.ndarray]:
    """(samples, every frame's dBFS at ingest's gain) of one track, in one streaming decode.
    Ingest measures its gain over 40 ms blocks: the frames at 25 fps; at other rates the frames
    stand in for them."""
    rms, peak, count = audio.measure(av_io.decode_audio_stream(path, key, settings.max_audio_seconds), spf)
    return count, rms_db(rms * audio.gain_for(rms, peak))


@dataclass
class Ahead:
    """A running render's windows left, as the estimate sees them."""

    render_id: str
    kind: str
    chains: list[int]


def _ahead(store: ObjectStore, w) -> Ahead | None:
    attrs = w.typed_search_attributes
    total = attrs.get(vis.WINDOWS_TOTAL_KEY) or 0
    done = attrs.get(vis.WINDOWS_DONE_KEY) or 0
    if not total:
        return None
    keys = derived_keys(w.id)
    plan = store.get_json_or_none(keys["plan"]) or {}
    params = (store.get_json_or_none(keys["request"]) or {}).get("params") or {}
    sizes = [c["last"] - c["first"] + 1 for c in plan.get("chains") or []] or [total]
    # the chains progress side by side: the windows done are spread over them by their sizes
    left = [max(0, n - round(done * n / total)) for n in sizes]
    kind = window_kind(attrs.get(vis.BACKEND_KEY) or "", attrs.get(vis.MODE_KEY) or "",
                       params.get("width", 0), params.get("height", 0), plan.get("window", 0))
    return Ahead(w.id, kind, left)


async def renders_ahead(client, store: ObjectStore) -> tuple[list[Ahead], int]:
    """The running renders' windows left (from visibility, their plan and request), and how many
    running renders are not planned yet (their size unknown until ingest has read the audio)."""
    query = f"WorkflowType = 'RenderVideo' AND ExecutionStatus = 'Running' AND {vis.STAGE} != 'cancelled'"
    listed = []
    async for w in client.list_workflows(query, limit=MAX_AHEAD):
        listed.append(w)
    found = await asyncio.gather(*(asyncio.to_thread(_ahead, store, w) for w in listed))
    ahead = [a for a in found if a is not None and sum(a.chains)]
    return ahead, sum(1 for a in found if a is None)


def _time(records: list[dict], device: str, kind: str, backend: str, mode: str, width: int, height: int,
          frames: int, settings: Settings) -> WindowTime:
    known = history(records, kind).get(device)
    return known or default_window_s(device, backend, mode, width, height, frames, settings.timed_window_s)


async def estimate(client, store: ObjectStore, settings: Settings, job: Job, backend: str) -> dict:
    """The estimate of a parsed job (InputError naming the field when an input is refused)."""
    speech = await asyncio.to_thread(measure_speech, job, settings)
    return await estimate_job(client, store, settings, job, backend, speech)


async def estimate_job(client, store: ObjectStore, settings: Settings, job: Job, backend: str,
                       speech: Speech) -> dict:
    """The estimate of a job with this speech."""
    spec = job.spec
    params = spec.window_params
    audio_s = speech.samples / MODEL_SAMPLE_RATE
    frames = total_frames(speech.samples, params, spec.max_frame)
    windows = window_count(frames, params) if frames else 0
    records = await asyncio.to_thread(read_fleet, store)
    live = healthy_on_queue(records, settings.gpu_queue, backend)
    requested = settings.parallel_chains if job.parallel_chains is None else job.parallel_chains
    chains, why = chain_count(requested if requested > 0 else (len(live) or 1), windows) if windows else (0, "")
    out = {"frames": frames, "duration_s": round(frames / params.fps, 3), "windows": windows, "chains": chains}
    sources = {
        "frames": f"{audio_s:.2f} s of speech at {params.fps} fps"
                  + (f", capped by max_frame {spec.max_frame}" if spec.max_frame else ""),
        "windows": f"{params.window}-frame windows overlapping by {params.motion} (the plan's arithmetic)",
        "chains": why + ("; cut at speech pauses as the plan cuts" if chains > 1 else ""),
    }
    if not windows:
        return {**out, "sources": sources}
    lengths = [windows]
    if chains > 1:
        db = speech.db[:frames] if speech.db.size else speech.db
        cuts = await asyncio.to_thread(plan_cuts, db, windows, chains, params) if db.size else []
        bounds = [0, *[c.window for c in cuts], windows] if cuts else None
        lengths = ([b - a for a, b in zip(bounds, bounds[1:])] if bounds else
                   [windows // chains + (1 if i < windows % chains else 0) for i in range(chains)])
    out["chain_windows"] = lengths
    ahead, unplanned = await renders_ahead(client, store)
    rest = await asyncio.to_thread(estimate_windows, records, settings, backend, spec, lengths, ahead,
                                   unplanned)  # the simulation: a second or two for a long queue
    return {**out, **rest, "sources": {**sources, **rest["sources"]}}


def estimate_windows(records: list[dict], settings: Settings, backend: str, spec: RenderSpec,
                     chains: list[int], ahead: list[Ahead] | None, unplanned: int = 0) -> dict:
    """GPU seconds, cost and wall time of chains of these many windows, on the healthy workers
    of `records` serving the GPU queue, after the renders `ahead` (None: the queue ahead is not
    known, and not counted)."""
    windows = sum(chains)
    params = spec.window_params
    live = healthy_on_queue(records, settings.gpu_queue, backend)
    mode = vis.mode_of(spec.input_type, spec.person_count)
    kind = window_kind(backend, mode, spec.width, spec.height, params.window)
    devices = [r.get("device") or "unknown" for r in live] or _known_devices(records, kind)
    times = [_time(records, d, kind, backend, mode, spec.width, spec.height, params.window, settings)
             for d in devices]
    sims = [SimRender(a.render_id, a.chains, [_ahead_time(records, d, a.kind, settings) for d in devices])
            for a in ahead or []]
    mine = SimRender("new", chains, [t.busy_s for t in times], start_s=CPU_BEFORE_S)
    measured = dispatch_gap(records, kind)
    gap = DISPATCH_S if measured is None else measured
    simulate(sims + [mine], len(devices), gap, affinity_s=affinity_wait_s(settings, backend, spec))
    on = mine.on_worker if live else [windows]
    out: dict = {"window_kind": kind,
                 "gpu_s": round(sum(n * t.gpu_s for n, t in zip(on, times)), 1),
                 "gpu_busy_s": round(sum(n * t.busy_s for n, t in zip(on, times)), 1),
                 "per_gpu": _per_gpu(devices, times, on, Prices(settings.gpu_prices))}
    sources = out["sources"] = {}
    sources["gpu_s"] = "; ".join(sorted({f"{p['device']}: {p['window_s']} s a window ({p['source']})"
                                         for p in out["per_gpu"]}))
    out["cost"], sources["cost"] = _cost(out["per_gpu"])
    if ahead is not None:
        out["queue_ahead"] = {"renders": len(ahead), "windows": sum(sum(a.chains) for a in ahead),
                              "unplanned_renders": unplanned}
    if not live:
        out["wall_s"] = out["eta"] = None
        sources["wall_s"] = f"no healthy GPU worker serves queue {settings.gpu_queue!r} with backend {backend!r} now"
        return out
    stitch_s = STITCH_S_PER_MEGAPIXEL_FRAME * windows * params.stride * spec.width * spec.height / 1e6
    wall = mine.done_s + CPU_AFTER_S + CPU_AFTER_PER_WINDOW_S * windows + stitch_s
    out["wall_s"] = round(wall, 1)
    out["eta"] = (datetime.now(timezone.utc) + timedelta(seconds=wall)).isoformat(timespec="seconds")
    out["gpu_workers"] = len(live)
    queue = ("the queue ahead not counted" if ahead is None else
             f"{out['queue_ahead']['windows']} windows left in {len(ahead)} running render(s) ahead"
             + (f" ({unplanned} more not planned yet, not counted)" if unplanned else ""))
    sources["wall_s"] = (f"the GPU queue simulated with the {len(live)} healthy GPU worker(s) serving it now and "
                         f"{queue}; {CPU_BEFORE_S:g} s before and {CPU_AFTER_S:g} s after the windows for the "
                         f"CPU stages and {stitch_s:.1f} s to encode the output, {gap:.2f} s between a chain's windows ("
                         + ("default" if measured is None else "history") + ")")
    return out


def _cost(rows: list[dict]) -> tuple[float | None, str]:
    """The cost of the GPU rows that render windows, and where its prices came from."""
    used = [r for r in rows if r["windows"]]
    missing = sorted({r["device"] for r in used if r.get("cost") is None})
    if missing:
        return None, "no LONGTALK_GPU_PRICES price for " + ", ".join(missing)
    return round(sum(r["cost"] for r in used), 4), "; ".join(sorted({r["price_source"] for r in used}))


def _known_devices(records: list[dict], kind: str) -> list[str]:
    """With no worker serving now: the GPU kind that rendered this kind of window most, else none."""
    known = history(records, kind)
    return [max(known, key=lambda d: known[d].windows)] if known else [""]


def _ahead_time(records: list[dict], device: str, kind: str, settings: Settings) -> float:
    backend, mode, size, frames = (kind.split("|") + ["", "", "0x0", "0"])[:4]
    width, _, height = size.partition("x")
    return _time(records, device, kind, backend, mode, int(width or 0), int(height or 0), int(frames or 0),
                 settings).busy_s


def _per_gpu(devices: list[str], times: list[WindowTime], on: list[int], prices: Prices) -> list[dict]:
    """One row per GPU kind: its workers, windows, seconds a window, and cost with its source."""
    rows: dict[str, dict] = {}
    for device, t, n in zip(devices, times, on):
        row = rows.setdefault(device or "unknown", {"device": device or "unknown", "workers": 0, "windows": 0,
                                                    "window_s": round(t.busy_s, 2), "source": t.source})
        row["workers"] += 1
        row["windows"] += n
        price = prices.for_device(device)
        if price is None:
            row["cost"] = None
            continue
        per_s, said = price
        row["cost"] = round((row.get("cost") or 0.0) + n * t.busy_s * per_s, 4)
        row["price_per_hour"], row["price_source"] = round(per_s * 3600, 4), said
    return list(rows.values())
