"""CPU activities (task queue "render"): ingest, plan, stitch, publish.

Each one is idempotent on deterministic object keys: it first looks for the object it
would write and returns that instead of doing the work again.
"""

from __future__ import annotations

import dataclasses
import tempfile
from concurrent.futures import ThreadPoolExecutor
import time
from pathlib import Path

import numpy as np
from temporalio import activity

from longtalk import audio, av_io
from longtalk import chains as chain_plan, guard as quality_guard
from longtalk.estimate import estimate_key, estimate_windows
from longtalk.fleet import healthy_on_queue, read_fleet
from longtalk.gpu_time import Prices
from longtalk.payloads import (
    CancelledInput, Chain, DiscardInput, EncodeAudioInput, IngestResult, Plan, PlanInput, PublishInput, RenderRequest, RenderResult,
    StitchInput, StitchResult, audio_key, cancel_request_key, clip_key, derived_keys, output_key, tail_keys, window_meta_key,
    window_quality_key,
)
from longtalk.errors import DownloadFailed, InputError, OutputMismatch
from longtalk.inputs.formats import FORMATS, MediaFormat
from longtalk.inputs.preflight import check_media
from longtalk.inputs.framing import crop_notice
from longtalk.inputs.staging import check_file, fetch_url_input, stored_input_key, url_record_key
from longtalk.settings import Settings
from longtalk.store import ObjectStore
from longtalk.usage import actual_usage
from longtalk.windows import MODEL_SAMPLE_RATE, total_frames, window, window_count, windows

from .common import heartbeating, map_errors

# A URL input whose download breaks off (reset, timeout, HTTP 5xx) is fetched again by the
# next attempt of ingest, this many attempts in all; then the render fails naming the field.
URL_FETCH_ATTEMPTS = 5


class CpuActivities:
    def __init__(self, store: ObjectStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    def _name(self, req: RenderRequest, field: str) -> str:
        """The job key a user wrote for a field (errors name what the user sent)."""
        return req.input_names.get(field, field)

    def _local_inputs(self, req: RenderRequest, fields: list[str], work: Path,
                      progress: dict) -> dict[str, tuple[Path, MediaFormat | None]]:
        """Each field's content as a local file, with its format when it is known: a URL
        input is downloaded now, through the network guard, and checked and stored as the
        client checks and stores a local file; a staged input has the format the client
        sniffed (None: not given, e.g. put into the bucket by another client)."""
        local: dict[str, tuple[Path, MediaFormat | None]] = {}
        fetched: dict[str, tuple[Path, MediaFormat]] = {}  # reference key -> (file, format)
        for field in fields:
            if field in req.input_urls:
                ref = req.input_urls[field]
                if ref not in fetched:
                    fetched[ref] = self._fetch(req, field, ref, work, progress)
                local[field] = fetched[ref]
            elif field in req.inputs:
                local[field] = (self.store.download(req.inputs[field], work / f"{field}.bin"),
                                FORMATS.get(req.input_formats.get(field, "")))
            else:
                raise InputError(self._name(req, field), "no object was staged for this field")
        return local

    def _fetch(self, req: RenderRequest, field: str, ref: str, work: Path,
               progress: dict) -> tuple[Path, MediaFormat]:
        progress.clear()
        progress["fetching"] = field  # the field and a byte count only: never the URL
        try:
            staged, path = fetch_url_input(self.store, req.render_id, ref, self.settings,
                                           work / f"fetch-{field}", progress)
        except DownloadFailed as exc:
            if activity.info().attempt < URL_FETCH_ATTEMPTS:
                raise  # retryable: the next attempt downloads it again
            # the last attempt: an input error like any other (the workflow discards the render)
            raise InputError(exc.field, exc.reason) from None
        activity.logger.info("fetched %s of %s: %d bytes, %s", self._name(req, field), req.render_id,
                             staged.size, staged.format)
        return path, FORMATS[staged.format]

    # ---- 1. ingest ----------------------------------------------------------------
    @activity.defn(name="ingest")
    @map_errors
    def ingest(self, req: RenderRequest) -> IngestResult:
        keys = derived_keys(req.render_id)
        done = self.store.get_json_or_none(keys["ingest"])
        if done is not None:
            return IngestResult(**done)
        progress: dict = {}
        with heartbeating(lambda: dict(progress) or None), tempfile.TemporaryDirectory(prefix="ingest-") as tmp:
            work = Path(tmp)
            audio_fields = ["audio"] + (["audio_2"] if req.spec.person_count == "multi" else [])
            visual = "video" if req.spec.input_type == "video" else "image"
            files = self._local_inputs(req, [visual, *audio_fields], work, progress)
            progress.clear()
            audio_keys, lengths = [], []
            for track, field in enumerate(audio_fields, start=1):
                local = files[field][0]
                wav = work / f"track_{track}.wav"
                count = audio.write_normalised_wav16(local, wav, self._name(req, field),
                                                     self.settings.max_audio_seconds)
                if count < MODEL_SAMPLE_RATE // req.spec.fps:
                    raise InputError(self._name(req, field), f"is shorter than one video frame ({1000 // req.spec.fps} ms)")
                self.store.put_file(audio_key(req.render_id, track), wav, "audio/wav")
                audio_keys.append(audio_key(req.render_id, track))
                lengths.append(count)
            result = IngestResult(reference_key=keys["reference"], audio_keys=audio_keys,
                                  audio_samples=max(lengths))
            if not req.final_audio_beside:  # else the workflow runs encode_audio beside the windows
                # one object given for both speakers is one track (_original_audio does the same)
                originals = {req.inputs.get(f) or req.input_urls.get(f): files[f][0] for f in audio_fields}
                total = total_frames(max(lengths), req.window_params, req.spec.max_frame)
                if total >= 1:  # else plan refuses the render
                    self._encode_final_audio(req, list(originals.values()), total, work, progress)
            if req.spec.input_type == "video":
                field = "video"
                local = files[field][0]
                norm = work / "source.mp4"
                count = av_io.normalise_video(local, norm, self._name(req, field), req.spec.width, req.spec.height,
                                              req.spec.fps, self.settings.max_audio_seconds)
                self.store.put_file(keys["source"], norm, "video/mp4")
                reference = av_io.read_frames(norm, [0])[0]
                result.source_key, result.source_frames = keys["source"], count
            else:
                field = "image"
                local, fmt = files["image"]
                if "image" not in req.input_urls:  # checked when fetched; the client checked it
                    # too, and checking again catches an input put into the bucket another way
                    name = self._name(req, "image")
                    if fmt is None:
                        check_file(name, "image", local, self.settings)
                    else:
                        check_media(name, local, "image", fmt, self.settings)
                reference = av_io.fit_image(av_io.decode_image(local.read_bytes(), self._name(req, "image")),
                                            req.spec.width, req.spec.height)
            if field in req.input_urls:  # the submission could not know its shape
                result.warnings = self._framing(req, field)
            self.store.put_bytes(keys["reference"], av_io.encode_png(reference), "image/png")
            self.store.put_json(keys["ingest"], dataclasses.asdict(result))
            return result

    def _framing(self, req: RenderRequest, field: str) -> list[str]:
        """What the frame cuts off a downloaded portrait or source video (see framing.py)."""
        record = self.store.get_json(url_record_key(req.input_urls[field]))
        if not record.get("width") or not record.get("height"):
            return []
        notice = crop_notice(self._name(req, field), "source video" if field == "video" else "portrait",
                             record["width"], record["height"], req.spec.width, req.spec.height, False,
                             self.settings.min_dimension, self.settings.max_dimension)
        return [notice] if notice else []

    def _encode_final_audio(self, req: RenderRequest, tracks: list[Path], total: int, work: Path,
                            progress: dict) -> None:
        """The output's audio, encoded once before stitch rather than at publish: the original
        speech (mixed when two tracks) as AAC, cut to exactly T/fps seconds. Stitch then adds
        it by stream copy, so the render's tail no longer grows with its length (an hour:
        ~80 s of AAC encoding on 2 cores)."""
        progress["encoding"] = "audio"
        out = work / "final.m4a"
        av_io.encode_final_audio(tracks, out, total, req.spec.fps)
        self.store.put_file(derived_keys(req.render_id)["final_audio"], out, "audio/mp4",
                            metadata={"frames": str(total)})
        progress.pop("encoding", None)

    def _has_frames(self, key: str, frames: int) -> bool:
        """Whether `key` is stored and says (its metadata) that it holds `frames` frames: the
        finished output of a step that a retry must not redo (the audio, the stitched video)."""
        return self.store.exists(key) and self.store.metadata(key).get("frames") == str(frames)

    def _original_audio(self, req: RenderRequest, work: Path) -> list[Path]:
        """The speech tracks as the user gave them (not normalised), from the bucket; one
        object given for both speakers is one track."""
        fields = ["audio"] + (["audio_2"] if req.spec.person_count == "multi" else [])
        tracks = []
        originals = (stored_input_key(self.store, req.inputs, req.input_urls, f) for f in fields)
        for obj in dict.fromkeys(originals):
            tracks.append(self.store.download(obj, work / f"audio{len(tracks)}.bin"))
        return tracks

    @activity.defn(name="encode_audio")
    @map_errors
    def encode_audio(self, inp: EncodeAudioInput) -> None:
        """The output's AAC, while the GPUs render (renders whose ingest did not encode it:
        RenderRequest.final_audio_beside). Nothing waits for it before stitch, so the
        encode is off the render's critical path: the first window starts right after plan."""
        req = inp.request
        if self._has_frames(derived_keys(req.render_id)["final_audio"], inp.total_frames):
            return
        progress: dict = {}
        with heartbeating(lambda: dict(progress) or None), tempfile.TemporaryDirectory(prefix="audio-") as tmp:
            work = Path(tmp)
            self._encode_final_audio(req, self._original_audio(req, work), inp.total_frames, work, progress)

    # ---- 2. plan ------------------------------------------------------------------
    @activity.defn(name="plan")
    @map_errors
    def plan(self, inp: PlanInput) -> Plan:
        req = inp.request
        keys = derived_keys(req.render_id)
        done = self.store.get_json_or_none(keys["plan"])
        if done is not None:
            return Plan(total_frames=done["total_frames"], windows=done["windows"],
                        chains=[Chain(**c) for c in done["chains"]], plan_key=keys["plan"])
        params = req.window_params
        total = total_frames(inp.ingest.audio_samples, params, req.spec.max_frame)
        if total < 1:
            raise InputError(self._name(req, "audio"), "is shorter than one video frame")
        if req.base:
            return self._adopt_base(req, total, keys)
        n = window_count(total, params)
        cuts, why = self._chain_cuts(inp, n)
        bounds = [0, *[c.window for c in cuts], n]
        chains = [Chain(index=i, first=bounds[i], last=bounds[i + 1] - 1) for i in range(len(bounds) - 1)]
        plan = Plan(total_frames=total, windows=n, chains=chains, plan_key=keys["plan"])
        self.store.put_json(keys["plan"], {
            "total_frames": total, "windows": n, "fps": params.fps, "window": params.window,
            "motion": params.motion, "chains": [dataclasses.asdict(c) for c in chains],
            # why this many chains, and where and why each one after the first begins
            "chain_plan": {"reason": why, "cuts": [c.as_dict(params.fps) for c in cuts]},
            "frames": [[w.start, w.end, w.keep_start, w.keep_end] for w in windows(total, params)],
        })
        # GPU seconds, cost and wall time as the fleet looks now (the result puts what the render
        # used beside it)
        estimate = self._estimate(req, [c.last - c.first + 1 for c in chains])
        if estimate is not None:
            self.store.put_json(estimate_key(req.render_id), estimate)
        return plan

    def _estimate(self, req: RenderRequest, chains: list[int]) -> dict | None:
        try:
            return estimate_windows(read_fleet(self.store), self.settings, req.backend, req.spec, chains, None)
        except Exception as exc:  # the estimate is a remark: the render goes on without it
            activity.logger.warning("render %s: no estimate: %s", req.render_id, exc)
            return None

    def _adopt_base(self, req: RenderRequest, total: int, keys: dict) -> Plan:
        """A re-render's plan is its base's; every window outside rerender_first..last is
        copied from the base (server-side), and the window before the first re-rendered one
        gets its carried tail back from the base's clip (the tails of a finished render were
        removed; the last M frames of a window's clip are its tail, through one H.264
        encode)."""
        base_plan = self.store.get_json(derived_keys(req.base)["plan"])
        if base_plan["total_frames"] != total:
            raise OutputMismatch(f"re-render of {req.base}: its plan has {base_plan['total_frames']} frames, "
                                 f"the inputs now give {total}")
        params = req.window_params
        first, last = req.rerender_first, req.rerender_last
        for k in range(base_plan["windows"]):
            if first <= k <= last or self.store.exists(window_meta_key(req.render_id, k)):
                continue
            self.store.copy(clip_key(req.base, k), clip_key(req.render_id, k))
            meta = self.store.get_json(window_meta_key(req.base, k))
            meta.update(clip_key=clip_key(req.render_id, k), copied_from=req.base)
            self.store.put_json(window_meta_key(req.render_id, k), meta)  # last: the window is done
        chain_firsts = {c["first"] for c in base_plan["chains"]}
        if first not in chain_firsts:
            with tempfile.TemporaryDirectory(prefix="rerender-") as tmp:
                clip = self.store.download(clip_key(req.base, first - 1), Path(tmp) / "clip.mp4")
                kept = window(first - 1, total, params).kept
                frames = av_io.read_frames(clip, list(range(kept - params.motion, kept)))
                for i, key in enumerate(tail_keys(req.render_id, first - 1, params.motion)):
                    self.store.put_bytes(key, av_io.encode_png(frames[kept - params.motion + i]), "image/png")
        plan = {**base_plan, "rerender": {"base": req.base, "first": first, "last": last}}
        self.store.put_json(keys["plan"], plan)
        return Plan(total_frames=total, windows=base_plan["windows"],
                    chains=[Chain(**c) for c in base_plan["chains"]], plan_key=keys["plan"])

    def _gpu_workers(self, queue: str) -> int | None:
        """GPU workers serving `queue` now, from the fleet registry (None: none registered); a
        RunPod endpoint's record counts as its max jobs."""
        return sum(int(r.get("slots") or 1) for r in healthy_on_queue(read_fleet(self.store), queue)) or None

    def _chain_cuts(self, inp: PlanInput, n: int) -> tuple[list[chain_plan.Cut], str]:
        """How many independent chains, and where they begin (longtalk.chains): the job's
        parallel_chains (0: as many as GPU workers serve the render's queue), capped by the
        render's length; chains balanced, each cut in a speech pause near its balanced split."""
        req = inp.request
        gpus = self._gpu_workers(req.gpu_queue) if req.parallel_chains == 0 else None
        requested = req.parallel_chains if req.parallel_chains > 0 else (gpus or 1)
        count, why = chain_plan.chain_count(requested, n)
        if req.parallel_chains == 0:
            why += f" (parallel_chains 0: one per GPU worker in the fleet registry, {gpus or 'none'} found)"
        if count <= 1:
            return [], why
        params = req.window_params
        data = self.store.get_bytes(inp.ingest.audio_keys[0])
        samples = av_io.pcm16_to_float(data[av_io.WAV_HEADER_BYTES:], inp.ingest.audio_samples)
        if len(inp.ingest.audio_keys) > 1:  # two speakers: a pause is where both are quiet
            data_2 = self.store.get_bytes(inp.ingest.audio_keys[1])
            other = av_io.pcm16_to_float(data_2[av_io.WAV_HEADER_BYTES:], inp.ingest.audio_samples)
            samples = np.maximum(np.abs(samples), np.abs(other))
        db = chain_plan.frame_db(samples, params.samples_per_frame)
        return chain_plan.plan_cuts(db, n, count, params), why

    # ---- 4. stitch ----------------------------------------------------------------
    @activity.defn(name="stitch")
    @map_errors
    def stitch(self, inp: StitchInput) -> StitchResult:
        """Join the window clips, encoding the output's video stream once (the clips are
        high-quality intermediates: joined by stream copy, every window started its own
        coding-noise pattern at its own I-frame, a visible pop at every seam; av_io.
        CLIP_CODEC_OPTIONS). Clips of earlier releases (crf 18) join the same way. Streaming:
        ffmpeg reads the clips in turn. When ingest encoded the output's audio, the same
        ffmpeg pass adds it (by stream copy) and the result is the finished output:
        publish then finds it and only signs it, so the render's tail is the join alone
        (no stitched video stored, fetched back and rewritten: 2 GB of transfers an hour)."""
        keys = derived_keys(inp.render_id)
        with_audio = self._has_frames(keys["final_audio"], inp.total_frames)
        video_key = output_key(inp.render_id) if with_audio else keys["video"]
        if self._has_frames(video_key, inp.total_frames):
            return StitchResult(video_key=video_key, frames=inp.total_frames)
        progress = {"downloaded": 0}
        with heartbeating(lambda: dict(progress)), tempfile.TemporaryDirectory(prefix="stitch-") as tmp:
            work = Path(tmp)
            clips = [work / f"{k:05d}.mp4" for k in range(inp.windows)]

            def fetch(k: int) -> None:
                self.store.download(clip_key(inp.render_id, k), clips[k])
                progress["downloaded"] += 1

            with ThreadPoolExecutor(max_workers=8) as pool:  # many small objects: keep the link busy
                docs = pool.map(self.store.get_json_or_none,
                                [window_quality_key(inp.render_id, k) for k in range(inp.windows)])
                list(pool.map(fetch, range(inp.windows)))
                if with_audio:
                    audio_file = pool.submit(self.store.download, keys["final_audio"], work / "final.m4a")
                summary, series = quality_guard.summarise(list(docs))
            self.store.put_json(keys["quality"], {"summary": summary, "windows": series})
            self._blend_joins(inp, clips, work, summary["reanchors"])
            out = work / "video.mp4"
            if with_audio:
                av_io.concat_clips_with_audio(clips, audio_file.result(), out, work, inp.total_frames,
                                              inp.spec.fps)
            else:  # ingest of an earlier release: publish encodes the audio
                av_io.concat_clips(clips, out, work)
            frames = av_io.count_video_frames(out)
            if frames != inp.total_frames:
                raise RuntimeError(f"stitched video has {frames} frames, expected {inp.total_frames}")
            self.store.put_file(video_key, out, "video/mp4", metadata={"frames": str(frames)})
        return StitchResult(video_key=video_key, frames=frames)

    def _blend_joins(self, inp: StitchInput, clips: list[Path], work: Path, reanchors: list[dict]) -> None:
        """Where a chain begins (plan.json's cuts) or re-anchors (the quality guard started a
        window from the reference again), dissolve the previous window's last frames into the
        new start's first frame, inside the pause (longtalk.chains): the previous window's clip
        is decoded and encoded again with the clips' own settings. Joins without a pause, or
        with blending off, are left as they are. The plan records the re-anchors beside its
        cuts."""
        keys = derived_keys(inp.render_id)
        plan = self.store.get_json_or_none(keys["plan"]) or {}
        if reanchors and plan and plan.get("reanchors") != reanchors:
            self.store.put_json(keys["plan"], {**plan, "reanchors": reanchors})
        params = inp.spec.window_params
        for cut in [*(plan.get("chain_plan") or {}).get("cuts", []), *reanchors]:
            k = cut["window"]
            previous = window(k - 1, inp.total_frames, params)
            count = min(chain_plan.blend_frames(cut, self.settings.join_blend_frames), previous.kept - 1)
            if count <= 0:
                continue
            frames = av_io.read_frames(clips[k - 1], list(range(previous.kept)))
            first = av_io.read_frames(clips[k], [0])[0]
            blended = chain_plan.dissolve_into(np.stack([frames[i] for i in range(previous.kept)]), first, count)
            redone = work / f"{k - 1:05d}-blended.mp4"
            av_io.encode_clip(blended, redone, params.fps)
            clips[k - 1] = redone

    # ---- 5. publish: mux the audio, store ----------------------------------------------------------
    @activity.defn(name="publish")
    @map_errors
    def publish(self, inp: PublishInput) -> RenderResult:
        # the whole activity heartbeats: after the mux it still lists, deletes and reads every
        # window's small objects, many round trips on a slow link to the bucket
        with heartbeating():
            return self._publish(inp)

    def _publish(self, inp: PublishInput) -> RenderResult:
        req = inp.request
        key = output_key(req.render_id)
        size = self.store.size(key)  # stitch already wrote it when ingest encoded the audio
        if size is None:
            with tempfile.TemporaryDirectory(prefix="publish-") as tmp:
                work = Path(tmp)
                video = self.store.download(inp.video_key, work / "video.mp4")
                out = work / "output.mp4"
                started = time.monotonic()
                final_audio = derived_keys(req.render_id)["final_audio"]
                if self._has_frames(final_audio, inp.total_frames):
                    # encoded before stitch: both streams by copy, a constant few seconds
                    audio_file = self.store.download(final_audio, work / "final.m4a")
                    av_io.mux_copy(video, audio_file, out, inp.total_frames, req.spec.fps)
                    how = "stream copy"
                else:
                    # a render whose ingest ran on an earlier release: encode the originals now
                    av_io.mux_audio(video, self._original_audio(req, work), out, inp.total_frames, req.spec.fps)
                    how = "AAC encode"
                frames = av_io.count_video_frames(out)
                if frames != inp.total_frames:
                    raise RuntimeError(f"muxed video has {frames} frames, expected {inp.total_frames}")
                self.store.put_file(key, out, "video/mp4", metadata={"frames": str(frames)})
                size = out.stat().st_size
                activity.logger.info("muxed %s in %.2fs (%s)", key, time.monotonic() - started, how)
        # the tails only served the next window; a finished render no longer needs them
        stored = list(self.store.list(f"renders/{req.render_id}/windows/"))
        self.store.delete_many([k for k in stored if "/tail_" in k])
        usage = {"estimate": self.store.get_json_or_none(estimate_key(req.render_id)),
                 "actual": actual_usage(self.store, [k for k in stored if k.endswith("/meta.json")],
                                        Prices(self.settings.gpu_prices), [k for k in stored if "/runpod/" in k],
                                        self.settings.runpod_idle_timeout_s)}
        expiry = inp.presign_expiry_s or self.settings.presign_expiry_s
        result = RenderResult(
            render_id=req.render_id, status="completed", bucket=self.store.bucket, video_key=key,
            video_url=self.store.presign(key, expiry), frames=inp.total_frames, fps=req.spec.fps,
            duration_s=inp.total_frames / req.spec.fps, width=req.spec.width, height=req.spec.height,
            windows=inp.windows, backend=req.backend, size_bytes=size, warnings=list(req.warnings),
            video_path=f"{self.store.bucket}/{key}" if req.spec.network_volume else None, usage=usage,
            quality=(self.store.get_json_or_none(derived_keys(req.render_id)["quality"]) or {}).get("summary"),
            runpod_execution_s=next((r["billed_s"] for r in usage["actual"]["per_gpu"] if r.get("pool") == "runpod"),
                                    None),
        )
        manifest = dataclasses.asdict(result)
        manifest.pop("video_url")
        self.store.put_json(derived_keys(req.render_id)["manifest"], manifest)
        return result

    # ---- endings that are not a video ----------------------------------------------
    @activity.defn(name="discard")
    @map_errors
    def discard(self, inp: DiscardInput) -> int:
        """A render refused for bad input leaves nothing behind in the bucket."""
        removed = self.store.delete_prefix(f"renders/{inp.render_id}/")
        activity.logger.info("discarded %d objects of %s: %s", removed, inp.render_id, inp.reason)
        return removed

    @activity.defn(name="record_cancelled")
    @map_errors
    def record_cancelled(self, inp: CancelledInput) -> None:
        """A cancelled render's manifest says which windows were finished (they stay stored,
        so submitting the same id again resumes after them). The store is the authority: a
        window whose meta.json exists is finished, reported to the workflow yet or not."""
        stored = {int(key.split("/")[-2]) for key in self.store.list(f"renders/{inp.render_id}/windows/")
                  if key.endswith("/meta.json")}
        self.store.put_json(derived_keys(inp.render_id)["manifest"], {
            "render_id": inp.render_id, "status": "cancelled", "stage": inp.stage,
            "windows": inp.windows_total, "windows_finished": sorted(stored | set(inp.windows_finished)),
        })
        # the API's record that a cancel was asked (its /status said CANCELLED from then on):
        # the workflow says so itself now
        self.store.delete(cancel_request_key(inp.render_id, activity.info().workflow_run_id))
