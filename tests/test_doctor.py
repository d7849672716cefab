"""comfy_graphs doctor: the start-up check of a ComfyUI and the smoke windows, against the
stand-in (the real ComfyUI 0.8.0 protocol and node schema); the GPU worker refuses to poll
its queue when the check fails."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from comfy_graphs.smoke import SMOKE_MOTION, SMOKE_WINDOW, run_smoke
from longtalk.comfy.client import ComfyClient
from longtalk.comfy.config import GraphConfig, ModelFiles
from longtalk.comfy.doctor import CORE, NODE_PACKS, check_prompts, check_server, sample_prompts
from longtalk.comfy.modes import MODES, parse_modes
from longtalk.stack import READY_LINE, free_port
from tests.comfy_standin.control import control
from tests.comfy_standin.server import start_standin
from tests.comfy_standin.validation import load_schema
from tests.faults import StandinProcess, worker

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parent.parent
SCHEMA = load_schema()


async def doctor(url: str, config: GraphConfig | None = None, modes=MODES):
    async with ComfyClient(url, poll_interval_s=0.05) as client:
        return await check_server(client, config or GraphConfig(), modes)


async def schema_standin(tmp_path, change) -> object:
    schema = copy.deepcopy(SCHEMA)
    change(schema)
    return await start_standin(tmp_path / "comfy", schema, step_s=0.001)


async def test_a_complete_server_passes_and_its_facts_are_reported(standin):
    report = await doctor(standin.url)
    assert report.ok, report.problems
    assert report.classes >= 20 and report.model_files == len(ModelFiles().fetch_list())
    text = "\n".join(report.lines())
    assert "ComfyUI 0.8.0" in text and "Python 3." in text and "torch 2.9.1" in text
    assert "NVIDIA H100" in text and "GiB free" in text
    assert text.splitlines()[-1].startswith("ok")


async def test_a_missing_node_class_names_the_class_and_its_pack(tmp_path):
    server = await schema_standin(tmp_path, lambda s: s.pop("MelBandRoFormerSampler"))
    try:
        report = await doctor(server.url)
    finally:
        await server.close()
    assert not report.ok
    assert report.problems == ["node class MelBandRoFormerSampler is missing: install the ComfyUI-MelBandRoFormer "
                               "node pack (or the version this project pins)"]


async def test_a_missing_model_file_names_the_file_and_its_folder(standin):
    models = ModelFiles()
    kept = [m for m in SCHEMA_MODELS("diffusion_models") if m != models.infinitetalk_multi]
    await control(standin, "/standin/models", {"diffusion_models": kept})
    report = await doctor(standin.url)
    assert len(report.problems) == 1, report.problems
    problem = report.problems[0]
    assert f"model file '{models.infinitetalk_multi}' is not installed" in problem
    assert "models/diffusion_models" in problem and "MultiTalkModelLoader.model" in problem
    assert problem.endswith("[i2v_multi, v2v_multi]")  # the single-speaker modes are unaffected
    # a deployment that serves single speakers only does not need that file
    assert (await doctor(standin.url, modes=("i2v_single", "v2v_single"))).ok


def SCHEMA_MODELS(folder: str) -> list[str]:  # noqa: N802 - what the stand-in installs by default
    from tests.comfy_standin.validation import SEED_MODELS

    return list(SEED_MODELS[folder])


async def test_a_choice_the_server_lacks_is_named_with_the_allowed_values(tmp_path):
    def drop_scheduler(schema):
        choices = schema["WanVideoSampler"]["input"]["required"]["scheduler"][0]
        choices.remove("dpm++_sde")

    server = await schema_standin(tmp_path, drop_scheduler)
    try:
        report = await doctor(server.url)
    finally:
        await server.close()
    assert len(report.problems) == 1, report.problems
    assert "(WanVideoSampler, @sampler): 'scheduler' = 'dpm++_sde' is not one of the server's choices" \
        in report.problems[0]
    assert "allowed: 'unipc'" in report.problems[0]


async def test_other_node_pack_drift_is_found(tmp_path):
    def drift(schema):
        # a newer pack: a new required input, a renamed input, a range and an output type changed
        schema["WanVideoSampler"]["input"]["required"]["new_knob"] = ["INT", {"default": 1}]
        enc = schema["WanVideoEncode"]["input"]["required"]
        enc["pixels"] = enc.pop("image")
        schema["INTConstant"]["input"]["required"]["value"][1]["max"] = 32
        schema["WanVideoVAELoader"]["output"] = ["OTHERVAE"]

    server = await schema_standin(tmp_path, drift)
    try:
        report = await doctor(server.url, modes=("i2v_single",))
    finally:
        await server.close()
    text = "\n".join(report.problems)
    assert "WanVideoSampler requires input 'new_knob', which our graph does not set" in text
    assert "WanVideoEncode has no input 'image'" in text and "requires input 'pixels'" in text
    assert "(INTConstant, @width): 'value' = 512 is above the server's maximum 32" in text
    assert "needs WANVAE but output 0 of node" in text and "is OTHERVAE on this server" in text


def test_every_class_the_graphs_use_has_its_pack_and_exists_in_the_pinned_schema():
    prompts = sample_prompts(GraphConfig())
    classes = {n["class_type"] for p in prompts.values() for n in p.values()}
    assert classes <= set(SCHEMA)
    core = {c for c in classes if c not in NODE_PACKS}
    assert core == {"LoadImage", "LoadAudio", "SaveImage", "CLIPVisionLoader"}, core
    problems, counts = check_prompts(prompts, SCHEMA)
    assert problems == [] and counts["classes"] == len(classes)
    assert CORE.startswith("ComfyUI")


def test_modes_setting():
    assert parse_modes("all") == MODES
    assert parse_modes(" v2v_single , i2v_single,") == ("v2v_single", "i2v_single")
    with pytest.raises(ValueError, match="LONGTALK_COMFY_MODES.*i2v_single"):
        GraphConfig.from_env({"LONGTALK_COMFY_MODES": "i2v_single,t2v"})
    assert GraphConfig.from_env({"LONGTALK_COMFY_MODES": "i2v_multi"}).modes == ("i2v_multi",)
    assert GraphConfig.from_env({}).modes == MODES


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "comfy_graphs", "doctor", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=240, env=env)


@contextlib.asynccontextmanager
async def standin_process(tmp_path):
    """A ComfyUI stand-in in a process of its own (for the CLI), ready."""
    proc = StandinProcess(tmp_path / "comfy", free_port(), tmp_path / "standin.log")
    proc.start()
    try:
        await proc.ready()
        yield proc
    finally:
        proc.kill()


async def test_cli_exit_codes(tmp_path):
    async with standin_process(tmp_path) as proc:
        good = await _in_thread(run_cli, "--url", proc.url)
        assert good.returncode == 0, good.stdout + good.stderr
        await proc.control("/standin/models", {"wav2vec2": []})
        bad = await _in_thread(run_cli, "--url", proc.url)
        assert bad.returncode == 1
        fails = [line for line in bad.stdout.splitlines() if line.startswith("FAIL")]
        assert len(fails) == 1 and "wav2vec2-chinese-base_fp16.safetensors" in fails[0] and "models/wav2vec2" in fails[0]
    gone = await _in_thread(run_cli, "--url", f"http://127.0.0.1:{free_port()}")
    assert gone.returncode == 2 and "unreachable" in gone.stderr


async def test_smoke_renders_two_windows_per_mode_through_the_backend(standin):
    heard = []
    async with ComfyClient(standin.url, poll_interval_s=0.05) as client:
        results = await run_smoke(client, GraphConfig(), MODES, on_window=heard.append)
    assert [(r.mode, r.index) for r in results] == [(m, k) for m in MODES for k in (0, 1)]
    assert heard == results  # each window reported as it finished
    for r in results:
        assert r.ok, r.line()
        assert r.frames == SMOKE_WINDOW
        assert r.size == ((128, 64) if r.mode.endswith("multi") else (64, 64))
        assert r.tails_taken == (SMOKE_MOTION if r.index == 1 else None)
        assert r.comfy_s is not None and r.nodes
        classes = {n.class_type for n in r.nodes}
        assert "WanVideoSampler" in classes
        if r is results[0]:  # the listener saw the first prompt from its first node (loaders are cached after)
            assert "WanVideoModelLoader" in classes and "Wav2VecModelLoader" in classes
    stats = await control(standin, "/standin/stats")
    assert stats["succeeded"] == 8
    # the prompts sampled with 2 steps at W=17
    history = standin.standin.queue.get_history()
    samplers = [n for entry in history.values() for n in entry["prompt"][2].values()
                if n["class_type"] == "WanVideoSampler"]
    assert {s["inputs"]["steps"] for s in samplers} == {2}


async def test_smoke_runs_the_quality_guard(standin):
    """Every smoke window goes through the guard: the stand-in's clean windows pass (no false
    alarm on the smoke's drawn portrait), noise (what tiny weights give) and black frames are
    flagged, with the failure named."""
    async with ComfyClient(standin.url, poll_interval_s=0.05) as client:
        clean = await run_smoke(client, GraphConfig(), MODES)
        spoilt = {}
        for frames in ("noise", "blank"):
            await control(standin, "/standin/faults", {"frames": frames})  # the next prompt: window 0
            spoilt[frames] = (await run_smoke(client, GraphConfig(), ("i2v_single",), windows=1))[0]
    for r in clean:
        assert r.verdict is not None and r.verdict.ok, r.guard_line()
        assert r.guard_line().startswith(f"{r.mode} window {r.index}: ok")
    for frames, r in spoilt.items():
        assert r.ok, r.line()  # the graphs ran: the smoke passes, the guard says what it saw
        assert not r.verdict.ok and "FLAGGED" in r.guard_line(), (frames, r.guard_line())
    assert "face_lost" in spoilt["noise"].verdict.hard and spoilt["noise"].quality.motion > 10
    assert "blank" in spoilt["blank"].verdict.hard and spoilt["blank"].quality.blank_frames == SMOKE_WINDOW - SMOKE_MOTION


async def test_cli_smoke_prints_the_guard_verdict(tmp_path):
    async with standin_process(tmp_path) as proc:
        await proc.control("/standin/faults", {"frames": "noise"})
        out = await _in_thread(run_cli, "--url", proc.url, "--smoke", "i2v_single")
    assert out.returncode == 0, out.stdout + out.stderr
    guard = [line for line in out.stdout.splitlines() if line.startswith("guard ")]
    assert len(guard) == 2, out.stdout  # windows 0 and 1
    assert "i2v_single window 0: FLAGGED" in guard[0] and "face_lost" in guard[0], guard


async def test_smoke_reports_a_failing_node(standin):
    await control(standin, "/standin/faults", {"execution_error": "boom in the sampler"})
    async with ComfyClient(standin.url, poll_interval_s=0.05) as client:
        results = await run_smoke(client, GraphConfig(), ("i2v_single",))
    assert len(results) == 1 and not results[0].ok  # window 1 is not tried after window 0 failed
    assert "boom in the sampler" in results[0].line() and "FAILED" in results[0].line()


async def test_gpu_worker_refuses_to_poll_when_its_comfyui_fails_the_check(settings, temporal_server, s3_server,
                                                                          tmp_path):
    port = free_port()
    proc = StandinProcess(tmp_path / "comfy", port, tmp_path / "standin.log")
    proc.start()
    try:
        await proc.ready()
        lora = ModelFiles().lora
        await proc.control("/standin/models", {"loras": []})
        env_settings = dataclasses.replace(settings, backend="comfyui", comfy_url=proc.url,
                                           gpu_queue=f"{settings.gpu_queue}-doctor")
        log = tmp_path / "worker.log"
        handle = worker(env_settings, "gpu", log).start()
        code = await _in_thread(handle.proc.wait, 120)
        out = log.read_text()
        assert code == 3, out
        assert READY_LINE not in out
        assert f"model file '{lora}' is not installed" in out and "models/loras" in out
        assert "GPU worker NOT polling" in out
        # nothing polled the GPU queue
        from temporalio.api.enums.v1 import TaskQueueType
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
        from temporalio.client import Client

        client = await Client.connect(settings.temporal_address)
        described = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
            namespace=settings.temporal_namespace, task_queue=TaskQueue(name=env_settings.gpu_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY))
        assert list(described.pollers) == []
        # once the file is there, the same worker starts and polls
        await proc.control("/standin/models", {"loras": [lora]})
        offset = log.stat().st_size
        handle = worker(env_settings, "gpu", log).start()
        try:
            await handle.wait_for_line(READY_LINE, timeout=120, after=offset)
            assert "comfyui doctor: ok: this ComfyUI can run the graphs" in log.read_text()[offset:]
        finally:
            handle.kill()
    finally:
        proc.kill()


async def _in_thread(fn, *args, **kwargs):
    import asyncio

    return await asyncio.to_thread(fn, *args, **kwargs)


def test_doctor_output_is_json_safe():  # the report's facts can be logged as JSON by callers
    from longtalk.comfy.doctor import DoctorReport

    report = DoctorReport(url="http://x", server={"system": {"comfyui_version": "0.8.0"}, "devices": []})
    json.dumps(dataclasses.asdict(report))
