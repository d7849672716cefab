"""ComfyClient against the in-process ComfyUI 0.8.0 stand-in (tests/comfy_standin)."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import subprocess
import sys
import time
import uuid
import wave
from pathlib import Path

import aiohttp
import cv2
import numpy as np
import pytest

from longtalk.av_io import decode_audio_16k
from longtalk.backends.base import WindowJob
from longtalk.backends.preview import render_preview
from longtalk.spec import RenderSpec
from longtalk.comfy.client import ComfyClient, OutputFile
from longtalk.errors import BackendUnavailable, ComfyUnreachable, GraphError, ModelMissingError, PromptTimeout
from longtalk.stack import free_port
from tests.comfy_standin.control import control

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "tests" / "fixtures" / "seed_graphs"
SIZE = 160


# ---- media and graphs --------------------------------------------------------------------

def face_png(width: int = SIZE, height: int = SIZE, shade: int = 0) -> bytes:
    img = np.full((height, width, 3), 200 - shade, np.uint8)
    cv2.ellipse(img, (width // 2, height // 2), (width // 4, height // 3), 0, 0, 360, (150, 110, 90), -1)
    cv2.circle(img, (width // 2 - 12, height // 2 - 10), 4, (30, 30, 30), -1)
    cv2.circle(img, (width // 2 + 12, height // 2 - 10), 4, (30, 30, 30), -1)
    cv2.line(img, (width // 2 - 10, height // 2 + 22), (width // 2 + 10, height // 2 + 22), (60, 20, 20), 2)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def speech_wav(seconds: float = 1.0, sr: int = 16000) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.4 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return out.getvalue()


_SEEDS = itertools.count(1000)


def i2v_graph(image: str, audio: str, frames: int = 17, seed: int | None = None) -> dict:
    """The upstream I2V_single seed graph, pointed at our inputs and made small. Each graph
    samples with a new seed unless one is given: the stand-in caches node outputs like
    ComfyUI, so an identical prompt would be served from the cache without sampling."""
    graph = json.loads((SEEDS / "I2V_single.json").read_text())
    sampler = next(n for n, v in graph.items() if v["class_type"] == "WanVideoSampler")
    graph[sampler]["inputs"]["seed"] = next(_SEEDS) if seed is None else seed
    graph["284"]["inputs"]["image"] = image
    graph["125"]["inputs"]["audio"] = audio
    graph["245"]["inputs"]["value"] = SIZE
    graph["246"]["inputs"]["value"] = SIZE
    graph["270"]["inputs"]["value"] = frames
    graph["241"]["inputs"]["positive_prompt"] = "a person talking"
    return graph


def window_graph(ref: str, tail_dir: str, audio: str, frames: int, seed: int, prefix: str) -> dict:
    """A per-window graph: I2V encode of the reference + the tail frames as extra latents."""
    vae = ["4", 0]
    tiles = {"enable_vae_tiling": False, "tile_x": 272, "tile_y": 272, "tile_stride_x": 144, "tile_stride_y": 128}
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": ref}},
        "2": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "clip_vision_h.safetensors"}},
        "3": {"class_type": "WanVideoClipVisionEncode", "inputs": {
            "clip_vision": ["2", 0], "image_1": ["1", 0], "strength_1": 1.0, "strength_2": 1.0, "crop": "center",
            "combine_embeds": "average", "force_offload": True}},
        "4": {"class_type": "WanVideoVAELoader", "inputs": {"model_name": "Wan2_1_VAE_bf16.safetensors"}},
        "5": {"class_type": "VHS_LoadImagesPath", "inputs": {"directory": tail_dir}},
        "6": {"class_type": "WanVideoEncode", "inputs": {"vae": vae, "image": ["5", 0], **tiles}},
        "20": {"class_type": "INTConstant", "inputs": {"value": SIZE}},
        "7": {"class_type": "WanVideoImageToVideoEncode", "inputs": {
            "width": ["20", 0], "height": ["20", 0], "num_frames": frames, "noise_aug_strength": 0.0,
            "start_latent_strength": 1.0, "end_latent_strength": 1.0, "force_offload": True, "vae": vae,
            "clip_embeds": ["3", 0], "start_image": ["1", 0]}},
        "8": {"class_type": "WanVideoAddExtraLatent", "inputs": {"embeds": ["7", 0], "extra_latents": ["6", 0],
                                                                 "latent_index": 0}},
        "9": {"class_type": "LoadAudio", "inputs": {"audio": audio}},
        "10": {"class_type": "DownloadAndLoadWav2VecModel", "inputs": {
            "model": "TencentGameMate/chinese-wav2vec2-base", "base_precision": "fp16", "load_device": "main_device"}},
        "11": {"class_type": "MultiTalkWav2VecEmbeds", "inputs": {
            "wav2vec_model": ["10", 0], "audio_1": ["9", 0], "normalize_loudness": True, "num_frames": frames,
            "fps": 25.0, "audio_scale": 1.0, "audio_cfg_scale": 1.0, "multi_audio_type": "para"}},
        "12": {"class_type": "WanVideoModelLoader", "inputs": {
            "model": "Wan2_1-I2V-14B-480P_fp8_e4m3fn.safetensors", "base_precision": "bf16",
            "quantization": "disabled", "load_device": "offload_device"}},
        "13": {"class_type": "WanVideoTextEncodeCached", "inputs": {
            "model_name": "umt5-xxl-enc-fp8_e4m3fn.safetensors", "precision": "bf16",
            "positive_prompt": "a person talking", "negative_prompt": "", "quantization": "disabled",
            "use_disk_cache": False, "device": "gpu"}},
        "14": {"class_type": "WanVideoSampler", "inputs": {
            "model": ["12", 0], "image_embeds": ["8", 0], "steps": 4, "cfg": 1.0, "shift": 5.0, "seed": seed,
            "force_offload": True, "scheduler": "unipc", "riflex_freq_index": 0, "text_embeds": ["13", 0],
            "multitalk_embeds": ["11", 0]}},
        "15": {"class_type": "WanVideoDecode", "inputs": {"vae": vae, "samples": ["14", 0], **tiles}},
        "16": {"class_type": "SaveImage", "inputs": {"images": ["15", 0], "filename_prefix": prefix}},
    }


# ---- fixtures ----------------------------------------------------------------------------

@pytest.fixture
async def client(standin):
    async with ComfyClient(standin.url, poll_interval_s=0.1) as c:
        yield c




async def upload_inputs(client: ComfyClient, sub: str) -> tuple[str, str]:
    ref = await client.upload(face_png(), "ref.png", subfolder=sub)
    audio = await client.upload(speech_wav(), "speech.wav", subfolder=sub)
    return ref, audio


async def until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def new_id() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


# ---- the happy path ----------------------------------------------------------------------

async def test_success_path(standin, client):
    stats = await client.wait_ready(5)
    assert stats["system"]["comfyui_version"] == "0.8.0" and stats["devices"][0]["type"] == "cuda"
    ref, audio = await upload_inputs(client, "job-1")
    assert (ref, audio) == ("job-1/ref.png", "job-1/speech.wav")

    pid = new_id()
    assert await client.find(pid) is None
    await client.submit(i2v_graph(ref, audio), pid)
    seen: list[tuple[str, float]] = []

    async def progress(what: str, fraction: float) -> None:
        seen.append((what, fraction))

    outputs = await client.wait(pid, on_progress=progress, timeout_s=30)
    assert seen and seen[-1] == ("node 128", 1.0)
    assert outputs["293"] == {"text": ["17"]}  # the embeds' frame count, from PreviewAny
    files = client.outputs(outputs)
    assert [(f.node_id, f.kind, f.type) for f in files] == [("131", "gifs", "temp")]
    video = files[0]
    assert video.filename == "WanVideo2_1_InfiniteTalk_00001-audio.mp4"
    assert video.format == "video/h264-mp4" and video.frame_rate == 25.0 and video.fullpath.endswith(video.filename)
    data = await client.download(video)
    assert data[4:8] == b"ftyp"
    # type matters: the same name is not in output/
    with pytest.raises(BackendUnavailable, match="HTTP 404"):
        await client.download(OutputFile("131", "gifs", video.filename, "", "output"))

    entry = await client.history(pid)
    assert entry["prompt"][1] == pid and entry["prompt"][3]["client_id"] == client.client_id
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
    assert entry["meta"]["131"]["node_id"] == "131"
    assert await client.find(pid) == "done"
    stats = await control(standin, "/standin/stats")
    assert stats["binary_frames_sent"] > 0  # preview frames were sent and the client ignored them
    assert stats["uploads"] == 2 and stats["succeeded"] == 1


@pytest.mark.parametrize("tail_from", ["directory", "merged_loads"])
async def test_window_graph_renders_like_the_preview_backend(standin, client, tail_from):
    sub = "w0"
    ref = await client.upload(face_png(), "ref.png", subfolder=sub)
    tail_imgs = [face_png(shade=3 * k) for k in range(5)]
    names = [await client.upload(png, f"{k:03d}.png", subfolder=f"{sub}/tail") for k, png in enumerate(tail_imgs)]
    audio = await client.upload(speech_wav(), "a.wav", subfolder=sub)
    graph = window_graph(ref, f"{sub}/tail", audio, frames=21, seed=7, prefix=f"{sub}/win")
    if tail_from == "merged_loads":  # LoadImage per frame, chained with VHS_MergeImages
        del graph["5"]
        for k, name in enumerate(names):
            graph[f"3{k}"] = {"class_type": "LoadImage", "inputs": {"image": name}}
        last = ["30", 0]
        for k in range(1, len(names)):
            graph[f"4{k}"] = {"class_type": "VHS_MergeImages", "inputs": {
                "images_A": last, "images_B": [f"3{k}", 0], "merge_strategy": "match A",
                "scale_method": "nearest-exact", "crop": "disabled"}}
            last = [f"4{k}", 0]
        graph["6"]["inputs"]["image"] = last
    pid = new_id()
    await client.submit(graph, pid)
    files = client.outputs(await client.wait(pid, timeout_s=30))
    assert [f.filename for f in files] == [f"win_{i:05d}_.png" for i in range(1, 22)]
    assert {(f.kind, f.subfolder, f.type) for f in files} == {("images", sub, "output")}
    frames = np.stack([cv2.cvtColor(cv2.imdecode(np.frombuffer(await client.download(f), np.uint8),
                                                 cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for f in files])

    def rgb(png: bytes) -> np.ndarray:
        return cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    track = decode_audio_16k(standin.root / "input" / sub / "a.wav", "audio")[: 21 * 640]
    job = WindowJob(render_id="x", index=0, spec=RenderSpec(width=SIZE, height=SIZE, window=21, motion=5, fps=25, seed=7),
                    frame_start=0, reference=rgb(face_png()), tail=np.stack([rgb(p) for p in tail_imgs]),
                    audio=[track])
    expected = render_preview(job)
    np.testing.assert_array_equal(frames, expected)
    np.testing.assert_array_equal(frames[:5], job.tail)


@pytest.mark.parametrize("name", ["I2V_single", "I2V_multi", "V2V_single", "V2V_multi"])
async def test_the_four_seed_graphs_run(standin, client, tmp_path, name):
    """The upstream graphs, with only their inputs and sizes bound (as the upstream handler does)."""
    from longtalk.av_io import encode_clip, probe

    img = cv2.cvtColor(cv2.imdecode(np.frombuffer(face_png(200, 180), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    encode_clip(np.stack([np.roll(img, k, axis=1) for k in range(30)]), tmp_path / "src.mp4", 25)
    video = await client.upload((tmp_path / "src.mp4").read_bytes(), "src.mp4", "s")
    image = await client.upload(face_png(), "ref.png", "s")
    audio_1 = await client.upload(speech_wav(1.0), "a1.wav", "s")
    audio_2 = await client.upload(speech_wav(0.8), "a2.wav", "s")
    graph = json.loads((SEEDS / f"{name}.json").read_text())
    bind = {"284": ("image", image), "228": ("video", video), "125": ("audio", audio_1),
            "307": ("audio", audio_2), "313": ("audio", audio_2), "245": ("value", SIZE), "246": ("value", SIZE),
            "270": ("value", 21)}
    for node_id, (field, value) in bind.items():
        if node_id in graph and field in graph[node_id]["inputs"]:
            graph[node_id]["inputs"][field] = value
    pid = new_id()
    await client.submit(graph, pid)
    outputs = await client.wait(pid, timeout_s=60)
    assert outputs["293"] == {"text": ["21"]}
    (clip,) = client.outputs(outputs)
    assert (clip.node_id, clip.kind, clip.type) == ("131", "gifs", "temp") and clip.filename.endswith("-audio.mp4")
    (tmp_path / "out.mp4").write_bytes(await client.download(clip))
    info = probe(tmp_path / "out.mp4")
    assert info["video"]["frames"] == 21 and (info["video"]["width"], info["video"]["height"]) == (SIZE, SIZE)
    assert info["audio"] is not None


# ---- refusals ----------------------------------------------------------------------------

async def test_invalid_graph_names_node_class_and_input(standin, client):
    ref, audio = await upload_inputs(client, "bad")
    graph = i2v_graph(ref, audio)
    graph["128"]["inputs"]["steps"] = 0
    pid = new_id()
    with pytest.raises(GraphError) as info:
        await client.submit(graph, pid)
    msg = str(info.value)
    assert "node 128 (WanVideoSampler) input 'steps'" in msg and "Value 0 smaller than min of 1" in msg
    assert not info.value.retryable
    # the output that did validate (293) was queued by ComfyUI; the client took it back
    await until(lambda: _not_active(client, pid))

    graph = i2v_graph(ref, audio)
    graph["999"] = {"class_type": "NoSuchNode", "inputs": {}}
    with pytest.raises(GraphError, match="node NoSuchNode does not exist"):
        await client.submit(graph, new_id())
    with pytest.raises(GraphError, match=r"node 131 \(VHS_VideoCombine\) input 'format'.*not in"):
        graph = i2v_graph(ref, audio)
        graph["131"]["inputs"]["format"] = "video/mkv"
        graph["293"]["inputs"]["source"] = ["404", 0]
        await client.submit(graph, new_id())


async def _not_active(client: ComfyClient, pid: str) -> bool:
    return await client.find(pid) in (None, "done")


async def test_missing_model_at_validation(standin, client):
    ref, audio = await upload_inputs(client, "m")
    graph = i2v_graph(ref, audio)
    graph["122"]["inputs"]["model"] = "Wan2_1-I2V-14B-720P_fp8_e4m3fn.safetensors"
    with pytest.raises(ModelMissingError) as info:
        await client.submit(graph, new_id())
    assert "Wan2_1-I2V-14B-720P_fp8_e4m3fn.safetensors" in str(info.value)
    assert "models/diffusion_models" in str(info.value) and "WanVideoModelLoader" in str(info.value)
    assert info.value.file == "Wan2_1-I2V-14B-720P_fp8_e4m3fn.safetensors"
    assert info.value.folder == "diffusion_models" and not info.value.retryable
    assert info.value.node_id == "122"


async def test_missing_model_at_execution(standin, client):
    ref, audio = await upload_inputs(client, "m2")
    await control(standin, "/standin/faults", {"missing_model": "MultiTalkModelLoader"})
    pid = new_id()
    await client.submit(i2v_graph(ref, audio), pid)
    with pytest.raises(ModelMissingError, match=r"'Wan2_1-InfiniteTalk-Single_fp8_e4m3fn_scaled_KJ\.safetensors'"
                                                r".*models/diffusion_models"):
        await client.wait(pid, timeout_s=30)


async def test_lost_input_file_is_retryable(standin, client):
    ref, audio = await upload_inputs(client, "lost")
    (standin.root / "input" / "lost" / "ref.png").unlink()
    with pytest.raises(BackendUnavailable, match="no input file 'lost/ref.png'") as info:
        await client.submit(i2v_graph(ref, audio), new_id())
    assert info.value.retryable


# ---- execution failures --------------------------------------------------------------------

async def test_execution_error(standin, client):
    ref, audio = await upload_inputs(client, "e")
    await control(standin, "/standin/faults", {"execution_error": "mat1 and mat2 shapes cannot be multiplied"})
    pid = new_id()
    await client.submit(i2v_graph(ref, audio), pid)
    with pytest.raises(BackendUnavailable) as info:
        await client.wait(pid, timeout_s=30)
    assert "node 128 (WanVideoSampler)" in str(info.value)
    assert "Exception: mat1 and mat2 shapes cannot be multiplied" in str(info.value)
    entry = await client.history(pid)
    assert entry["status"] == {**entry["status"], "status_str": "error", "completed": False}
    error = dict(entry["status"]["messages"])["execution_error"]
    assert error["exception_type"] == "Exception" and error["node_type"] == "WanVideoSampler"
    assert isinstance(error["traceback"], list) and "128" not in error["executed"] and "122" in error["executed"]


async def test_oom_is_retryable(standin, client):
    ref, audio = await upload_inputs(client, "o")
    await control(standin, "/standin/faults", {"oom": True})
    pid = new_id()
    await client.submit(i2v_graph(ref, audio), pid)
    with pytest.raises(BackendUnavailable, match="out of GPU memory at node 128") as info:
        await client.wait(pid, timeout_s=30)
    assert info.value.retryable
    error = dict((await client.history(pid))["status"]["messages"])["execution_error"]
    assert error["exception_type"] == "torch.OutOfMemoryError"
    assert error["exception_message"].startswith("CUDA out of memory.")
    # the next prompt is fine again
    pid2 = new_id()
    await client.submit(i2v_graph(ref, audio), pid2)
    assert "131" in await client.wait(pid2, timeout_s=30)


# ---- sockets, restarts, re-attach ------------------------------------------------------------

async def test_dropped_websocket_still_finishes(standin, client):
    ref, audio = await upload_inputs(client, "d")
    await control(standin, "/standin/faults", {"drop_ws": True, "delay_s": 0.3})
    pid = new_id()
    await client.submit(i2v_graph(ref, audio), pid)
    outputs = await client.wait(pid, timeout_s=30)
    assert client.outputs(outputs)[0].node_id == "131"
    stats = await control(standin, "/standin/stats")
    assert stats["ws_dropped"] >= 1 and stats["ws_connections"] >= 2  # it reconnected


async def test_history_polling_alone_finishes(standin):
    """A client that never gets a socket message of its own (another client_id) still finishes."""
    async with ComfyClient(standin.url, poll_interval_s=0.05) as submitter, \
            ComfyClient(standin.url, poll_interval_s=0.05) as watcher:
        ref, audio = await upload_inputs(submitter, "h")
        await control(standin, "/standin/faults", {"delay_s": 0.2})
        pid = new_id()
        await submitter.submit(i2v_graph(ref, audio), pid)
        got: list[float] = []
        outputs = await watcher.wait(pid, on_progress=lambda what, f: got.append(f), timeout_s=30)
        assert "131" in outputs
        assert got  # progress from the broadcast progress_state messages


async def test_restart_loses_the_prompt(standin, client):
    ref, audio = await upload_inputs(client, "r")
    await control(standin, "/standin/faults", {"hang": True})
    pid = new_id()
    await client.submit(i2v_graph(ref, audio), pid)
    waiting = asyncio.create_task(client.wait(pid, timeout_s=30))
    await sampling(standin, pid)
    await control(standin, "/standin/faults", {"restart": True})
    with pytest.raises(BackendUnavailable, match="neither queued nor in the history") as info:
        await waiting
    assert info.value.retryable
    assert await client.find(pid) is None


async def _is(client: ComfyClient, pid: str, state: str) -> bool:
    return await client.find(pid) == state


async def sampling(standin, pid: str) -> None:
    """Wait until the stand-in runs the sampler (node 128) of this prompt."""
    async def check():
        stats = await control(standin, "/standin/stats")
        return stats["running_prompt"] == pid and stats["running_node"] == "128"
    await until(check)


async def test_reattach_finds_finished_running_and_pending(standin, client):
    ref, audio = await upload_inputs(client, "ra")
    done = new_id()
    await client.submit(i2v_graph(ref, audio), done)
    await client.wait(done, timeout_s=30)
    assert await client.find(done) == "done"

    await control(standin, "/standin/faults", {"hang": True})
    running, pending = new_id(), new_id()
    await client.submit(i2v_graph(ref, audio), running)
    await client.submit(i2v_graph(ref, audio), pending)
    await sampling(standin, running)
    assert await client.find(running) == "running"
    assert await client.find(pending) == "pending"

    # a retried activity: a fresh client re-attaches instead of queueing again
    async with ComfyClient(standin.url, poll_interval_s=0.05) as again:
        assert await again.find(pending) == "pending"
        received = (await control(standin, "/standin/stats"))["prompts_received"]
        await again.interrupt(pending)  # not started: it is dropped from the queue
        assert await again.find(pending) is None
        await again.interrupt(running)
        with pytest.raises(BackendUnavailable, match="interrupted at node 128"):
            await again.wait(running, timeout_s=30)
        assert (await control(standin, "/standin/stats"))["prompts_received"] == received


async def test_interrupt_on_cancel(standin, client):
    ref, audio = await upload_inputs(client, "c")
    await control(standin, "/standin/faults", {"hang": True})
    pid = new_id()
    await client.submit(i2v_graph(ref, audio), pid)
    waiting = asyncio.create_task(client.wait(pid))
    await sampling(standin, pid)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await client.interrupt(pid)
    entry = await until(lambda: client.history(pid))
    assert entry["status"]["status_str"] == "error"
    events = dict(entry["status"]["messages"])
    assert events["execution_interrupted"]["node_id"] == "128"
    assert (await control(standin, "/standin/stats"))["interrupted"] == 1
    with pytest.raises(BackendUnavailable, match="interrupted"):
        await client.wait(pid, timeout_s=5)


async def test_interrupt_only_hits_the_named_prompt(standin, client):
    ref, audio = await upload_inputs(client, "n")
    await control(standin, "/standin/faults", {"delay_s": 0.4})
    pid = new_id()
    await client.submit(i2v_graph(ref, audio), pid)
    await until(lambda: _is(client, pid, "running"))
    async with aiohttp.ClientSession() as s:
        async with s.post(standin.url + "/interrupt", json={"prompt_id": "someone-else"}) as r:
            assert r.status == 200
    assert "131" in await client.wait(pid, timeout_s=30)


async def test_wait_timeout(standin, client):
    ref, audio = await upload_inputs(client, "t")
    await control(standin, "/standin/faults", {"hang": True})
    pid = new_id()
    await client.submit(i2v_graph(ref, audio), pid)
    with pytest.raises(PromptTimeout, match="did not finish within 0.3s") as info:
        await client.wait(pid, timeout_s=0.3)
    assert isinstance(info.value, BackendUnavailable) and (info.value.prompt_id, info.value.timeout_s) == (pid, 0.3)
    await client.interrupt(pid)


# ---- transport ---------------------------------------------------------------------------

async def test_unreachable_server_is_retryable():
    async with ComfyClient(f"http://127.0.0.1:{free_port()}", poll_interval_s=0.05) as c:
        with pytest.raises(ComfyUnreachable, match="unreachable") as info:
            await c.system_stats()
        assert info.value.retryable and isinstance(info.value, BackendUnavailable)
        with pytest.raises(ComfyUnreachable, match="not ready after 0.3s"):
            await c.wait_ready(0.3)
        with pytest.raises(BackendUnavailable):
            await c.submit({}, "x")


async def test_upload_view_and_outputs(standin, client):
    name = await client.upload(b"\x00\x01binary", "clip.bin", subfolder="a/b")
    assert name == "a/b/clip.bin"
    data = await client.download(OutputFile("-", "files", "clip.bin", "a/b", "input"))
    assert data == b"\x00\x01binary"
    async with aiohttp.ClientSession() as s:
        async with s.get(standin.url + "/view", params={"filename": "../x", "type": "input"}) as r:
            assert r.status == 400
        async with s.get(standin.url + "/view", params={"filename": "x", "subfolder": "../..", "type": "input"}) as r:
            assert r.status == 403
        form = aiohttp.FormData()
        form.add_field("image", b"x", filename="evil.png")
        form.add_field("subfolder", "../../etc")
        async with s.post(standin.url + "/upload/image", data=form) as r:
            assert r.status == 400
    # overwrite=False keeps both: ComfyUI renames the second one
    assert await client.upload(b"one", "dup.txt", overwrite=False) == "dup.txt"
    assert await client.upload(b"two", "dup.txt", overwrite=False) == "dup (1).txt"
    assert await client.upload(b"two", "dup.txt", overwrite=False) == "dup (1).txt"  # identical: reused

    entry = {"prompt": [], "status": {"status_str": "success"}, "outputs": {
        "9": {"images": [{"filename": "a_00001_.png", "subfolder": "", "type": "output"}], "animated": [False]},
        "12": {"gifs": [{"filename": "v.mp4", "subfolder": "s", "type": "temp", "format": "video/h264-mp4",
                         "frame_rate": 25, "fullpath": "/x/v.mp4"}],
               "audio": [{"filename": "a.flac", "subfolder": "", "type": "output"}],
               "text": ["hello"]},
        "13": {"files": [{"filename": "f.bin"}], "videos": [{"filename": "w.webm", "type": "output"}]}}}
    files = ComfyClient.outputs(entry)
    assert [(f.node_id, f.kind, f.filename) for f in files] == [
        ("9", "images", "a_00001_.png"), ("12", "gifs", "v.mp4"), ("12", "audio", "a.flac"),
        ("13", "files", "f.bin"), ("13", "videos", "w.webm")]
    assert files[1] == OutputFile("12", "gifs", "v.mp4", "s", "temp", "video/h264-mp4", 25.0, "/x/v.mp4")
    assert ComfyClient.outputs(entry["outputs"]) == files


def test_success_without_outputs_is_an_error():
    c = ComfyClient("http://127.0.0.1:1")
    with pytest.raises(BackendUnavailable, match="completed with no outputs"):
        c._result("p", {"status": {"status_str": "success", "completed": True, "messages": []}, "outputs": {}})
    with pytest.raises(BackendUnavailable, match="completed with no outputs"):
        c._result("p", {"status": {"status_str": "success", "completed": True, "messages": []},
                        "outputs": {"9": {}}})
    assert c._result("p", {"status": {"status_str": "success"}, "outputs": {"9": {"text": ["x"]}}})


async def test_standin_object_info_and_queue_shapes(standin, client):
    await client.upload(face_png(), "ref.png")
    async with aiohttp.ClientSession() as s:
        async with s.get(standin.url + "/object_info") as r:
            info = await r.json()
        async with s.get(standin.url + "/api/object_info/LoadImage") as r:
            one = await r.json()
        async with s.get(standin.url + "/queue") as r:
            queue = await r.json()
        async with s.get(standin.url + "/history/nope") as r:
            missing = await r.json()
        async with s.post(standin.url + "/prompt", json={"client_id": "x"}) as r:
            no_prompt = (r.status, await r.json())
    assert info["LoadImage"]["input"]["required"]["image"][0] == ["ref.png"]
    assert one == {"LoadImage": info["LoadImage"]}
    assert "Wan2_1-I2V-14B-480P_fp8_e4m3fn.safetensors" in info["WanVideoModelLoader"]["input"]["required"]["model"][0]
    assert queue == {"queue_running": [], "queue_pending": []}
    assert missing == {}
    assert no_prompt[0] == 400 and no_prompt[1]["error"]["type"] == "no_prompt"


def test_standin_runs_as_a_module(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.comfy_standin", "--port", str(port), "--root",
                             str(tmp_path)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                import urllib.request

                with urllib.request.urlopen(f"http://127.0.0.1:{port}/system_stats", timeout=1) as r:
                    assert json.loads(r.read())["system"]["comfyui_version"] == "0.8.0"
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(10)
