"""The comfyui backend and the GPU worker, end to end through the ComfyUI stand-in."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from longtalk.comfy.config import GraphConfig
from longtalk.backends.base import WindowJob
from longtalk.backends.comfyui import ComfyUIBackend, color_match, prompt_id_for
from longtalk.backends.preview import PreviewBackend
from longtalk.spec import RenderSpec
from longtalk.comfy.client import ComfyClient
from longtalk.errors import BackendUnavailable, GraphError, ModelMissingError
from longtalk.windows import window_count
from tests.comfy_standin.control import control
from tests.media import samples_16k
from tests.helpers import check_video, run_starter, summary_line, write_job
from worker import build_workers

pytestmark = pytest.mark.timeout(300)
SIZE = 128




@pytest.fixture
async def backend(standin):
    b = ComfyUIBackend(ComfyClient(standin.url, poll_interval_s=0.05), GraphConfig())
    yield b
    await b.close()


def window_job(render_id: str, k: int = 0, multi: bool = False, source: bool = False) -> WindowJob:
    rng = np.random.default_rng(k)
    ref = np.full((SIZE, SIZE, 3), 180, np.uint8)
    ref[40:100, 34:94] = (150, 110, 90)
    t = np.arange(81 * 640) / 16000
    speech = (0.3 * np.sin(2 * np.pi * 170 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
    tail = np.repeat(ref[None], 9, axis=0) if k == 0 else rng.integers(0, 255, (9, SIZE, SIZE, 3), np.uint8)
    spec = RenderSpec(input_type="video" if source else "image", person_count="multi" if multi else "single",
                      prompt="a person talking", width=SIZE, height=SIZE, window=81, motion=9, fps=25)
    return WindowJob(
        render_id=render_id, index=k, spec=spec, frame_start=72 * k, reference=ref, tail=tail,
        audio=[speech, speech * 0.5] if multi else [speech],
        source=np.repeat(ref[None], 81, axis=0) if source else None, chain_start=(k == 0),
    )


async def test_window_renders_through_comfyui(standin, backend):
    rid = f"c-{uuid.uuid4().hex[:8]}"
    frames = await backend.render_window(window_job(rid, 1))
    assert frames.shape == (81, SIZE, SIZE, 3) and frames.dtype == np.uint8
    stats = await control(standin, "/standin/stats")
    assert stats["prompts_received"] == 1 and stats["succeeded"] == 1
    # 9 tail frames + one audio slice were uploaded into the window's subfolder, the reference
    # under the render's stable name
    uploaded = sorted(p.name for p in (standin.root / "input" / "longtalk" / rid / "w00001").iterdir())
    assert uploaded == ["audio_1.wav"] + [f"tail_{i:02d}.png" for i in range(9)]
    assert [p.name for p in (standin.root / "input" / "longtalk" / rid / "shared").iterdir()] == ["reference.png"]


async def test_unchanged_uploads_come_from_comfyuis_cache(standin, backend, request):
    """The reference has one name per render, so from window 1 on ComfyUI serves the nodes
    that depend only on it (resize, CLIP-vision encode, the I2V VAE encode) from its cache,
    as `execution_cached` says; a changed reference under the same name is seen (sha256)."""
    rid = f"k-{uuid.uuid4().hex[:8]}"
    cached: dict[int, set[str]] = {}
    prompts = {}
    for k in range(4):
        job = window_job(rid, k)
        if k == 3:  # same name, other content: LoadImage's IS_CHANGED hash differs
            job.reference = job.reference.copy()
            job.reference[0, 0] = (1, 2, 3)
        await backend.render_window(job)
        entry = await backend.client.history(prompt_id_for(rid, k, 0))
        prompts[k] = entry["prompt"][2]
        [msg] = [data for event, data in entry["status"]["messages"] if event == "execution_cached"]
        cached[k] = set(msg["nodes"])
    reference_chain = {"LoadImage", "ImageResizeKJv2", "WanVideoClipVisionEncode", "WanVideoImageToVideoEncode"}

    def classes(k: int) -> set[str]:
        return {prompts[k][n]["class_type"] for n in cached[k]}

    assert cached[0] == set()  # a fresh server caches nothing
    for k in (1, 2):
        assert reference_chain <= classes(k), (k, classes(k))
        ref = next(n for n, v in prompts[k].items() if v["_meta"].get("title") == "@reference")
        assert ref in cached[k]
        assert "WanVideoSampler" not in classes(k)  # seed + k: every window samples anew
    assert "WanVideoClipVisionEncode" not in classes(3) and "ImageResizeKJv2" not in classes(3)
    assert "WanVideoModelLoader" in classes(3)  # the model loaders stay cached
    stats = await control(standin, "/standin/stats")
    assert stats["cached_nodes"] == sum(len(c) for c in cached.values())
    summary_line(request, "comfy-cache", lambda: "cached nodes per window (stand-in, i2v_single): " + ", ".join(
        f"w{k}={len(cached[k])}/{len(prompts[k])}" for k in sorted(cached)))


@pytest.mark.parametrize("multi,source", [(True, False), (False, True), (True, True)])
async def test_other_modes_render(standin, backend, multi, source):
    rid = f"m-{uuid.uuid4().hex[:8]}"
    frames = await backend.render_window(window_job(rid, 2, multi=multi, source=source))
    assert frames.shape == (81, SIZE, SIZE, 3)


async def test_retry_reattaches_instead_of_rendering_again(standin, backend):
    rid = f"r-{uuid.uuid4().hex[:8]}"
    first = await backend.render_window(window_job(rid, 1))
    again = ComfyUIBackend(ComfyClient(standin.url, poll_interval_s=0.05), GraphConfig())
    try:
        second = await again.render_window(window_job(rid, 1))
    finally:
        await again.close()
    assert (await control(standin, "/standin/stats"))["prompts_received"] == 1
    assert np.array_equal(first, second)


async def test_failed_prompt_is_retried_under_the_next_generation(standin, backend):
    rid = f"g-{uuid.uuid4().hex[:8]}"
    await control(standin, "/standin/faults", {"execution_error": True})
    with pytest.raises(BackendUnavailable):
        await backend.render_window(window_job(rid, 0))
    frames = await backend.render_window(window_job(rid, 0))
    assert frames.shape[0] == 81
    assert await backend.client.history(prompt_id_for(rid, 0, 1)) is not None
    assert (await control(standin, "/standin/stats"))["prompts_received"] == 2


async def test_oom_is_retryable(standin, backend):
    await control(standin, "/standin/faults", {"oom": True})
    with pytest.raises(BackendUnavailable, match="memory"):
        await backend.render_window(window_job(f"o-{uuid.uuid4().hex[:8]}", 0))


async def test_cancel_interrupts_the_prompt(standin, backend):
    rid = f"x-{uuid.uuid4().hex[:8]}"
    await control(standin, "/standin/faults", {"hang": True})
    task = asyncio.create_task(backend.render_window(window_job(rid, 0)))
    for _ in range(200):
        if (await control(standin, "/standin/stats")).get("running_prompt"):
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if (await control(standin, "/standin/stats"))["interrupted"] == 1:
            break
        await asyncio.sleep(0.02)
    assert (await control(standin, "/standin/stats"))["interrupted"] == 1


async def test_missing_model_is_not_retryable(standin, backend):
    await control(standin, "/standin/models", {"vae": []})
    with pytest.raises(ModelMissingError, match="Wan2_1_VAE_bf16.safetensors"):
        await backend.render_window(window_job(f"v-{uuid.uuid4().hex[:8]}", 0))


async def test_broken_override_graph_is_a_graph_error(standin, tmp_path):
    graphs = tmp_path / "graphs"
    graphs.mkdir()
    shipped = json.loads((Path(__file__).resolve().parent.parent / "comfy_graphs" / "i2v_single.json").read_text())
    sampler = next(n for n in shipped.values() if n["_meta"]["title"] == "@sampler")
    sampler["inputs"]["rope_function"] = "no-such-rope"  # not one of the node's choices
    (graphs / "i2v_single.json").write_text(json.dumps(shipped))
    config = dataclasses.replace(GraphConfig(), graphs_dir=graphs)
    b = ComfyUIBackend(ComfyClient(standin.url, poll_interval_s=0.05), config)
    try:
        with pytest.raises(GraphError, match="rope_function"):
            await b.render_window(window_job(f"b-{uuid.uuid4().hex[:8]}", 0))
    finally:
        await b.close()


def test_color_match_moves_frames_toward_the_reference():
    ref = np.zeros((32, 32, 3), np.uint8)
    ref[..., 0] = 200
    ref[..., 2] = 40
    drifted = np.zeros((2, 32, 32, 3), np.uint8)
    drifted[..., 0] = 120
    drifted[..., 2] = 110
    fixed = color_match(drifted, ref)
    assert np.abs(fixed.astype(int) - ref.astype(int)).mean() < np.abs(drifted.astype(int) - ref.astype(int)).mean() / 4


async def test_full_render_through_gpu_worker_and_standin(temporal_client, settings, store, media, standin,
                                                          tmp_path):
    """The real GPU worker path: RenderVideo -> render_window on a dedicated gpu queue ->
    comfyui backend -> stand-in ComfyUI -> stitched, muxed MP4 with exactly T frames."""
    gpu = dataclasses.replace(settings, gpu_queue=f"gpu-comfy-{uuid.uuid4().hex[:6]}",
                              render_queue=f"render-comfy-{uuid.uuid4().hex[:6]}", worker_roles="cpu,gpu")
    backend = ComfyUIBackend(ComfyClient(standin.url, poll_interval_s=0.05), GraphConfig())
    workers = build_workers(temporal_client, gpu, store, backends={"comfyui": backend, "preview": PreviewBackend()},
                            identity="comfy-test")
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        rid = f"cw-{uuid.uuid4().hex[:8]}"
        out = tmp_path / "comfy.mp4"
        job = write_job(tmp_path, image_path=media["portrait"], wav_path=media["speech"], width=SIZE, height=SIZE)
        rc, result, err = await run_starter(temporal_client, gpu, job, "--id", rid, "--backend", "comfyui",
                                            "--output", str(out))
        assert rc == 0, err
        total = samples_16k(media["speech"]) // 640
        assert result["backend"] == "comfyui" and result["frames"] == total
        check_video(out, total, SIZE, SIZE)
        stats = await control(standin, "/standin/stats")
        assert stats["succeeded"] == window_count(total) == result["windows"]
    finally:
        for w in workers:
            await w.shutdown()
        await asyncio.gather(*tasks, return_exceptions=True)
        await backend.close()


async def test_heartbeats_carry_the_comfyui_device(standin, backend, store, tmp_path):
    """The GPU activity's heartbeat details name the ComfyUI device and its free VRAM."""
    import wave as wavmod

    from temporalio.testing import ActivityEnvironment

    from activities.gpu import GpuActivities
    from longtalk import av_io
    from longtalk.payloads import RenderContext, RenderWindowInput

    rid = f"hb-{uuid.uuid4().hex[:8]}"
    job = window_job(rid, 0)
    store.put_bytes(f"renders/{rid}/reference.png", av_io.encode_png(job.reference))
    wav = tmp_path / "t.wav"
    av_io.write_wav16(wav, job.audio[0])
    assert wavmod.open(str(wav)).getnframes() == 81 * 640
    store.put_file(f"renders/{rid}/audio/track_1.wav", wav)
    await backend.wait_ready(10)
    ctx = RenderContext(render_id=rid, backend="comfyui", total_frames=81, reference_key=f"renders/{rid}/reference.png",
                        audio_keys=[f"renders/{rid}/audio/track_1.wav"],
                        spec=RenderSpec(width=SIZE, height=SIZE, prompt="p", window=81, motion=9))
    await control(standin, "/standin/faults", {"delay_s": 1.0})
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=__import__("datetime").timedelta(seconds=1))
    beats = []
    env.on_heartbeat = lambda *details: beats.append(details)
    result = await env.run(GpuActivities(store, {"comfyui": backend}, tmp_path / "cache").render_window,
                           RenderWindowInput(context=ctx, index=0, chain_first=0))
    assert result.rendered and result.frames == 81
    details = [d[0] for d in beats if d]
    assert any(d.get("device", "").startswith("cuda:0") and d.get("vram_free") for d in details), details
    assert any(d.get("fraction", 0) > 0 for d in details)  # ComfyUI's progress shows through


async def test_a_window_samples_with_the_renders_seed_whichever_worker_renders_it(standin):
    """Window k samples with the render's seed + k (its RenderSpec), not with a default seed in
    the GPU worker's own environment (LONGTALK_DEFAULT_SEED, or its old name LONGTALK_COMFY_SEED,
    which was a graph setting): two workers, two environments, one seed."""
    seeds = []
    for env in ({"LONGTALK_COMFY_SEED": "7"}, {"LONGTALK_DEFAULT_SEED": "99", "LONGTALK_COMFY_STEPS": "4"}):
        b = ComfyUIBackend(ComfyClient(standin.url, poll_interval_s=0.05), GraphConfig.from_env(env))
        try:
            rid = f"s-{uuid.uuid4().hex[:8]}"
            job = window_job(rid, 3)
            await b.render_window(dataclasses.replace(job, spec=dataclasses.replace(job.spec, seed=1000)))
            entry = await b.client.history(prompt_id_for(rid, 3, 0))
            graph = entry["prompt"][2]
            seeds += [n["inputs"]["seed"] for n in graph.values() if n["class_type"] == "WanVideoSampler"]
        finally:
            await b.close()
    assert seeds == [1003, 1003]


async def test_frames_that_do_not_fit_the_window_are_not_retried(store, tmp_path):
    """A backend's output of the wrong shape is OutputMismatch: non-retryable, not 30 attempts."""
    from temporalio.exceptions import ApplicationError
    from temporalio.testing import ActivityEnvironment

    from activities.gpu import GpuActivities
    from longtalk import av_io
    from longtalk.payloads import RenderContext, RenderSpec, RenderWindowInput
    from longtalk.errors import NON_RETRYABLE_TYPES, OutputMismatch

    class Wrong:
        name = "wrong"

        async def render_window(self, job, progress=None):
            return np.zeros((job.spec.window - 1, job.spec.height, job.spec.width, 3), np.uint8)

    rid = f"om-{uuid.uuid4().hex[:8]}"
    store.put_bytes(f"renders/{rid}/reference.png", av_io.encode_png(np.full((64, 64, 3), 128, np.uint8)))
    wav = tmp_path / "t.wav"
    av_io.write_wav16(wav, [np.zeros(17 * 640, np.float32)])
    store.put_file(f"renders/{rid}/audio/track_1.wav", wav)
    ctx = RenderContext(render_id=rid, backend="wrong", total_frames=17, reference_key=f"renders/{rid}/reference.png",
                        audio_keys=[f"renders/{rid}/audio/track_1.wav"],
                        spec=RenderSpec(width=64, height=64, window=17, motion=9))
    acts = GpuActivities(store, {"wrong": Wrong()}, tmp_path / "cache")
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(acts.render_window, RenderWindowInput(context=ctx, index=0, chain_first=0))
    assert info.value.type == OutputMismatch.__name__ and info.value.non_retryable
    assert OutputMismatch.__name__ in NON_RETRYABLE_TYPES
