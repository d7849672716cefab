"""The per-window ComfyUI graphs: binding, the real node schema, overrides and the CLI."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from comfy_graphs.__main__ import main as cli
from longtalk.comfy.binder import (
    TemplateError,
    WindowValues,
    load_template,
    optional_points,
    output_node_id,
    required_points,
    speaker_masks,
    split_upload_name,
    upload_plan,
)
from longtalk.comfy.config import GraphConfig, ModelFiles, SamplerSettings
from longtalk.comfy.modes import MODES, mode_for, spec_for
from longtalk.spec import RenderSpec
from tests.comfy_standin.validation import SEED_MODELS, load_schema, validate_prompt

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SHIPPED = ROOT / "comfy_graphs"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
LOADER_TITLES = ("@model", "@infinitetalk", "@lora", "@block_swap", "@vae", "@clip_vision", "@prompt",
                 "@wav2vec", "@vocal_model")
RID = "r-0001"


@pytest.fixture(scope="module")
def schema() -> dict:
    return load_schema()


def spec(mode: str, **params) -> RenderSpec:
    return spec_for(mode, **{"window": 81, "motion": 9, "fps": 25, **params})


def values(mode: str, k: int, *, chain_start: bool | None = None, masks: bool = True, **params) -> WindowValues:
    return WindowValues.for_window(RID, k, spec(mode, **params), chain_start=chain_start, speaker_masks=masks)


def bind(mode: str, k: int, sampler: SamplerSettings | None = None, **kw) -> dict:
    sampler = sampler or SamplerSettings()
    v = values(mode, k, masks=sampler.speaker_masks, **kw)
    return load_template(mode).bind(v, ModelFiles(), sampler)


def staged_inputs(tmp_path: Path, mode: str, k: int, motion: int = 9, chain_start: bool | None = None,
                  masks: bool = True) -> Path:
    """An input/ folder holding every upload of the window, under the names the plan gives."""
    root = tmp_path / "input"
    for name in upload_plan(RID, k, spec(mode, motion=motion), chain_start=chain_start, speaker_masks=masks).values():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return root


def assert_valid(prompt: dict, schema: dict, input_dir: Path | None = None) -> None:
    status, body = validate_prompt(prompt, schema, check_files=input_dir is not None, input_dir=input_dir,
                                   installed_models={k: list(v) for k, v in SEED_MODELS.items()})
    assert status == 200, json.dumps(body, indent=1)[:3000]
    assert body["node_errors"] == {}, json.dumps(body["node_errors"], indent=1)[:3000]


def by_title(prompt: dict, title: str) -> tuple[str, dict]:
    found = [(nid, n) for nid, n in prompt.items() if n["_meta"]["title"] == title]
    assert len(found) == 1, (title, found)
    return found[0]


def tail_chain(prompt: dict) -> list[str]:
    """File names feeding @tail_encode, in batch order (VHS_MergeImages: A then B)."""
    def walk(link) -> list[str]:
        node = prompt[link[0]]
        if node["class_type"] == "LoadImage":
            return [node["inputs"]["image"]]
        assert node["class_type"] == "VHS_MergeImages"
        return walk(node["inputs"]["images_A"]) + walk(node["inputs"]["images_B"])
    return walk(by_title(prompt, "@tail_encode")[1]["inputs"]["image"])


# ---- every shipped graph binds and validates against the real node schema ---------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k", [0, 1, 3])
def test_bound_graphs_validate_with_their_uploads(schema, tmp_path, mode, k):
    prompt = bind(mode, k)
    assert_valid(prompt, schema, staged_inputs(tmp_path, mode, k))


@pytest.mark.parametrize("mode", MODES)
def test_feature_switches_still_validate(schema, tmp_path, mode):
    sampler = SamplerSettings(vocal_separation=False, speaker_masks=False)
    prompt = bind(mode, 2, sampler)
    assert_valid(prompt, schema, staged_inputs(tmp_path, mode, 2, masks=False))
    classes = [n["class_type"] for n in prompt.values()]
    assert "MelBandRoFormerSampler" not in classes and "MelBandRoFormerModelLoader" not in classes
    embeds = by_title(prompt, "@embeds")[1]["inputs"]
    assert "ref_target_masks" not in embeds
    assert prompt[embeds["audio_1"][0]]["class_type"] == "LoadAudio"


@pytest.mark.parametrize("mode", MODES)
def test_other_motion_and_size_validate(schema, tmp_path, mode):
    prompt = bind(mode, 4, motion=5, width=768, height=448)
    assert_valid(prompt, schema, staged_inputs(tmp_path, mode, 4, motion=5))
    assert len(tail_chain(prompt)) == 5


@pytest.mark.parametrize("mode", MODES)
def test_shipped_templates_validate_unbound(schema, mode):
    assert_valid(json.loads((SHIPPED / f"{mode}.json").read_text()), schema)


@pytest.mark.parametrize("mode", MODES)
def test_every_widget_input_is_explicit(schema, mode):
    for k in (0, 1):
        for nid, node in bind(mode, k).items():
            spec = schema[node["class_type"]]["input"]
            for section in ("required", "optional"):
                for name, info in (spec.get(section) or {}).items():
                    kind = info[0]
                    if isinstance(kind, list) or kind in WIDGET_TYPES:
                        assert name in node["inputs"], f"{mode} node {nid} {node['class_type']}: {name}"


# ---- the graph's shape ------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_sampling_setup(mode):
    prompt = bind(mode, 1)
    classes = {n["class_type"] for n in prompt.values()}
    assert "WanVideoImageToVideoMultiTalk" not in classes  # no long-video loop inside ComfyUI
    assert "DownloadAndLoadWav2VecModel" not in classes  # no hub download at run time
    sampler = by_title(prompt, "@sampler")[1]["inputs"]
    assert sampler["scheduler"] == "dpm++_sde" and sampler["scheduler"] != "multitalk"
    assert sampler["multitalk_embeds"][0] == by_title(prompt, "@embeds")[0]
    pin = prompt[sampler["image_embeds"][0]]
    assert pin["class_type"] == "WanVideoAddExtraLatent" and pin["inputs"]["latent_index"] == 0
    assert prompt[pin["inputs"]["extra_latents"][0]]["_meta"]["title"] == "@tail_encode"
    assert prompt[pin["inputs"]["embeds"][0]]["class_type"] == "WanVideoImageToVideoEncode"
    embeds = by_title(prompt, "@embeds")[1]["inputs"]
    assert embeds["normalize_loudness"] is False and embeds["multi_audio_type"] == "para"
    assert embeds["fps"] == 25.0
    num_frames_id = by_title(prompt, "@num_frames")[0]
    assert embeds["num_frames"] == [num_frames_id, 0]
    assert by_title(prompt, "@image_embeds")[1]["inputs"]["num_frames"] == [num_frames_id, 0]
    assert by_title(prompt, "@num_frames")[1]["inputs"]["value"] == 81
    out_id, out = by_title(prompt, "@output")
    assert out["class_type"] == "SaveImage" and output_node_id(prompt) == out_id
    assert out["inputs"]["filename_prefix"] == f"longtalk/{RID}/w00001/frame"
    model = by_title(prompt, "@model")[1]["inputs"]
    assert model["attention_mode"] == "sdpa"
    if mode.startswith("v2v"):
        assert sampler["steps"] == 4 and sampler["start_step"] == 2 and sampler["add_noise_to_samples"] is True
        assert prompt[sampler["samples"][0]]["class_type"] == "WanVideoEncode"
        assert by_title(prompt, "@source_video")[1]["inputs"]["frame_load_cap"] == [num_frames_id, 0]
        assert embeds["audio_scale"] == 1.5
    else:
        assert sampler["steps"] == 6 and sampler["start_step"] == 0 and "samples" not in sampler
        assert embeds["audio_scale"] == 1.0
    if mode.endswith("_multi"):
        assert by_title(prompt, "@infinitetalk")[1]["inputs"]["model"].startswith("Wan2_1-InfiniteTalk-Multi")
        masks = embeds["ref_target_masks"]
        assert prompt[masks[0]]["class_type"] == "VHS_MergeMasks"
        assert "audio_2" in embeds
    else:
        assert by_title(prompt, "@infinitetalk")[1]["inputs"]["model"].startswith("Wan2_1-InfiniteTalk-Single")
        assert "audio_2" not in embeds and "ref_target_masks" not in embeds


@pytest.mark.parametrize("mode", MODES)
def test_tail_frames_are_loaded_in_order(mode):
    prompt = bind(mode, 3)
    assert tail_chain(prompt) == [f"longtalk/{RID}/w00003/tail_{i:02d}.png" for i in range(9)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k", [0, 5])
def test_chain_start_uses_the_reference_as_its_one_frame_tail(mode, k):
    prompt = bind(mode, k, chain_start=True)
    start = by_title(prompt, "@image_embeds")[1]["inputs"]["start_image"]
    assert by_title(prompt, "@tail_encode")[1]["inputs"]["image"] == start
    assert all(n["_meta"]["title"] != "@tail" for n in prompt.values())
    assert "VHS_MergeImages" not in {n["class_type"] for n in prompt.values()}
    loads = [n["inputs"]["image"] for n in prompt.values() if n["class_type"] == "LoadImage"]
    assert not any("tail_" in name for name in loads)


def test_loader_subgraph_is_identical_across_windows():
    for mode in MODES:
        prompts = [bind(mode, k) for k in (0, 1, 3, 40)]
        for title in LOADER_TITLES:
            nodes = [by_title(p, title) for p in prompts]
            assert all(node == nodes[0] for node in nodes), (mode, title)
        # and so is everything upstream of them (the constants are per-window inputs, not loaders)
        ids = {by_title(prompts[0], t)[0] for t in LOADER_TITLES}
        for p in prompts[1:]:
            assert {by_title(p, t)[0] for t in LOADER_TITLES} == ids


@pytest.mark.parametrize("mode", MODES)
def test_between_windows_only_window_values_change(mode):
    a, b = bind(mode, 1), bind(mode, 3)
    assert a.keys() == b.keys()
    per_window_titles = {"@reference", "@tail", "@audio_1", "@audio_2", "@mask_1", "@mask_2", "@mask_bg",
                         "@source_video"}
    changed = set()
    for nid in a:
        assert a[nid]["class_type"] == b[nid]["class_type"]
        assert a[nid]["_meta"] == b[nid]["_meta"]
        for name in a[nid]["inputs"].keys() | b[nid]["inputs"].keys():
            if a[nid]["inputs"].get(name) != b[nid]["inputs"].get(name):
                changed.add((a[nid]["_meta"]["title"], a[nid]["class_type"], name))
    for title, class_type, name in changed:
        allowed = (title in per_window_titles or (class_type == "LoadImage" and name == "image")
                   or (title, name) in {("@sampler", "seed"), ("@output", "filename_prefix")})
        assert allowed, (title, class_type, name)
    assert ("@sampler", "WanVideoSampler", "seed") in changed
    # the reference changes per window only in V2V (the window's first source frame); I2V's
    # and the masks keep one name per render, so ComfyUI's cache serves what depends on them
    assert (("@reference", "LoadImage", "image") in changed) == mode.startswith("v2v")
    assert not {c for c in changed if c[0] in ("@mask_1", "@mask_2", "@mask_bg")}


def test_window_k_samples_with_the_renders_seed_plus_k():
    assert by_title(bind("i2v_single", 7, seed=100), "@sampler")[1]["inputs"]["seed"] == 107
    assert by_title(bind("v2v_multi", 0, seed=5), "@sampler")[1]["inputs"]["seed"] == 5
    assert by_title(bind("i2v_single", 3), "@sampler")[1]["inputs"]["seed"] == RenderSpec().seed + 3


def test_values_reach_their_nodes():
    models = ModelFiles(diffusion_model="other_model.safetensors", wav2vec="w2v.safetensors", lora="l.safetensors")
    sampler = SamplerSettings(steps=8, cfg=1.5, shift=7.0, scheduler="euler", blocks_to_swap=30,
                              attention_mode="sageattn", audio_cfg_scale=2.0)
    v = WindowValues.for_window(RID, 2, spec_for("i2v_multi", width=640, height=384, prompt="two people", fps=25,
                                                 force_offload=False))
    prompt = load_template("i2v_multi").bind(v, models, sampler)
    assert by_title(prompt, "@model")[1]["inputs"]["model"] == "other_model.safetensors"
    assert by_title(prompt, "@model")[1]["inputs"]["attention_mode"] == "sageattn"
    assert by_title(prompt, "@wav2vec")[1]["inputs"]["model"] == "w2v.safetensors"
    assert by_title(prompt, "@lora")[1]["inputs"]["lora"] == "l.safetensors"
    assert by_title(prompt, "@block_swap")[1]["inputs"]["blocks_to_swap"] == 30
    assert by_title(prompt, "@prompt")[1]["inputs"]["positive_prompt"] == "two people"
    assert by_title(prompt, "@width")[1]["inputs"]["value"] == 640
    assert by_title(prompt, "@height")[1]["inputs"]["value"] == 384
    s = by_title(prompt, "@sampler")[1]["inputs"]
    assert (s["steps"], s["cfg"], s["shift"], s["scheduler"], s["force_offload"]) == (8, 1.5, 7.0, "euler", False)
    assert by_title(prompt, "@embeds")[1]["inputs"]["audio_cfg_scale"] == 2.0
    assert by_title(prompt, "@audio_2")[1]["inputs"]["audio"] == f"longtalk/{RID}/w00002/audio_2.wav"
    assert by_title(prompt, "@mask_bg")[1]["inputs"]["image"] == f"longtalk/{RID}/shared/mask_bg.png"


def test_bind_leaves_the_template_alone():
    template = load_template("v2v_multi")
    before = json.dumps(template.prompt, sort_keys=True)
    first = template.bind(values("v2v_multi", 3), ModelFiles(), SamplerSettings())
    second = template.bind(values("v2v_multi", 3), ModelFiles(), SamplerSettings())
    assert first == second
    assert json.dumps(template.prompt, sort_keys=True) == before
    assert all("_meta" in n and n["_meta"]["title"] for n in first.values())


def test_bind_rejects_values_that_do_not_fit_the_mode():
    single = values("i2v_single", 1)
    with pytest.raises(ValueError, match="i2v_single render: it cannot bind the i2v_multi graph"):
        load_template("i2v_multi").bind(single, ModelFiles(), SamplerSettings())
    with pytest.raises(ValueError, match="cannot bind the v2v_single graph"):
        load_template("v2v_single").bind(single, ModelFiles(), SamplerSettings())
    multi = values("i2v_multi", 1)
    with pytest.raises(ValueError, match="two audio tracks"):
        load_template("i2v_multi").bind(dataclasses.replace(multi, audio=multi.audio[:1]), ModelFiles(),
                                        SamplerSettings())
    with pytest.raises(ValueError, match="source video"):
        video = values("v2v_single", 1)
        load_template("v2v_single").bind(dataclasses.replace(video, source_video=None), ModelFiles(), SamplerSettings())
    with pytest.raises(ValueError, match="tail frames"):
        dataclasses.replace(single, tails=("a.png",))


# ---- templates from an override folder -------------------------------------------------

def test_missing_binding_point_error_names_title_and_file(tmp_path):
    graph = json.loads((SHIPPED / "i2v_single.json").read_text())
    sampler_id = next(nid for nid, n in graph.items() if n["_meta"]["title"] == "@sampler")
    graph[sampler_id]["_meta"]["title"] = "WanVideo Sampler"
    (tmp_path / "i2v_single.json").write_text(json.dumps(graph))
    with pytest.raises(TemplateError) as info:
        load_template("i2v_single", tmp_path)
    assert "'@sampler'" in str(info.value)
    assert str(tmp_path / "i2v_single.json") in str(info.value)


def test_override_folder_is_used_and_other_modes_fall_back(schema, tmp_path):
    graph = json.loads((SHIPPED / "i2v_single.json").read_text())
    prompt_id = next(nid for nid, n in graph.items() if n["_meta"]["title"] == "@prompt")
    graph[prompt_id]["inputs"]["negative_prompt"] = "operator's negative prompt"
    graph["999"] = {"inputs": {"backend": "inductor"}, "class_type": "WanVideoTorchCompileSettings",
                    "_meta": {"title": "loose node from the editor"}}
    (tmp_path / "i2v_single.json").write_text(json.dumps(graph, indent=2))
    template = load_template("i2v_single", tmp_path)
    assert template.path == tmp_path / "i2v_single.json"
    prompt = template.bind(values("i2v_single", 1), ModelFiles(), SamplerSettings())
    assert by_title(prompt, "@prompt")[1]["inputs"]["negative_prompt"] == "operator's negative prompt"
    assert "999" not in prompt  # nothing @output needs is sent
    assert_valid(prompt, schema)
    assert load_template("v2v_single", tmp_path).path == SHIPPED / "v2v_single.json"


def test_override_with_preview_output_and_renamed_ids(schema, tmp_path):
    graph = json.loads((SHIPPED / "v2v_multi.json").read_text())
    renamed = {nid: str(int(nid) + 1000) for nid in graph}
    moved = {}
    for nid, node in graph.items():
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                node["inputs"][name] = [renamed[value[0]], value[1]]
        moved[renamed[nid]] = node
    out = next(n for n in moved.values() if n["_meta"]["title"] == "@output")
    out["class_type"] = "PreviewImage"
    out["inputs"] = {"images": out["inputs"]["images"]}
    (tmp_path / "v2v_multi.json").write_text(json.dumps(moved))
    prompt = load_template("v2v_multi", tmp_path).bind(values("v2v_multi", 2), ModelFiles(), SamplerSettings())
    assert_valid(prompt, schema, staged_inputs(tmp_path, "v2v_multi", 2))
    assert prompt[output_node_id(prompt)]["class_type"] == "PreviewImage"
    assert len(tail_chain(prompt)) == 9


def test_ui_format_and_bad_json_are_refused(tmp_path):
    (tmp_path / "i2v_multi.json").write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    with pytest.raises(TemplateError, match="Export \\(API\\)"):
        load_template("i2v_multi", tmp_path)
    (tmp_path / "i2v_multi.json").write_text("{not json")
    with pytest.raises(TemplateError, match="not valid JSON"):
        load_template("i2v_multi", tmp_path)


def test_duplicate_titles_and_feature_points_are_checked(tmp_path):
    graph = json.loads((SHIPPED / "i2v_multi.json").read_text())
    ids = [nid for nid, n in graph.items() if n["_meta"]["title"] in ("@mask_1", "@mask_2")]
    graph[ids[1]]["_meta"]["title"] = "@mask_1"
    (tmp_path / "i2v_multi.json").write_text(json.dumps(graph))
    with pytest.raises(TemplateError, match="two nodes are titled '@mask_1'"):
        load_template("i2v_multi", tmp_path)
    graph[ids[1]]["_meta"]["title"] = "Mask two"
    (tmp_path / "i2v_multi.json").write_text(json.dumps(graph))
    template = load_template("i2v_multi", tmp_path)  # feature points are optional at load time
    with pytest.raises(TemplateError, match="@mask_2"):
        template.bind(values("i2v_multi", 1), ModelFiles(), SamplerSettings())
    prompt = template.bind(values("i2v_multi", 1, masks=False), ModelFiles(), SamplerSettings(speaker_masks=False))
    assert "ref_target_masks" not in by_title(prompt, "@embeds")[1]["inputs"]


def test_binding_points_per_mode():
    assert "@audio_2" in required_points("i2v_multi") and "@audio_2" not in required_points("i2v_single")
    assert "@source_video" in required_points("v2v_single")
    assert "@source_video" not in required_points("i2v_multi")
    assert "@mask_1" in optional_points("v2v_multi") and "@mask_1" not in optional_points("v2v_single")
    for mode in MODES:
        template = load_template(mode)
        assert set(required_points(mode)) | set(optional_points(mode)) == set(template.titles)


# ---- names ------------------------------------------------------------------------------

def test_mode_for():
    assert mode_for(RenderSpec(input_type="image", person_count="single")) == "i2v_single"
    assert mode_for(RenderSpec(input_type="image", person_count="multi")) == "i2v_multi"
    assert mode_for(RenderSpec(input_type="video", person_count="single")) == "v2v_single"
    assert mode_for(RenderSpec(input_type="video", person_count="multi")) == "v2v_multi"
    with pytest.raises(ValueError, match="input_type"):
        mode_for(RenderSpec(input_type="audio"))
    with pytest.raises(ValueError, match="person_count"):
        mode_for(RenderSpec(person_count="three"))
    for mode in MODES:
        assert mode_for(spec_for(mode, width=64)) == mode and spec_for(mode, width=64).width == 64
    with pytest.raises(ValueError, match="mode must be one of"):
        spec_for("t2v_single")


def test_upload_plan_names():
    plan = upload_plan(RID, 3, spec("i2v_single"))
    base = f"longtalk/{RID}/w00003"
    # the reference is the same in every I2V window: one stable name per render
    assert plan == {"reference": f"longtalk/{RID}/shared/reference.png",
                    **{f"tail_{i:02d}": f"{base}/tail_{i:02d}.png" for i in range(9)},
                    "audio_1": f"{base}/audio_1.wav"}
    assert list(upload_plan(RID, 0, spec("i2v_single"))) == ["reference", "audio_1"]
    assert "tail_00" not in upload_plan(RID, 12, spec("i2v_single"), chain_start=True)
    assert len([k for k in upload_plan(RID, 12, spec("i2v_single", motion=5)) if k.startswith("tail_")]) == 5
    multi = upload_plan(RID, 1, spec("v2v_multi"))
    assert multi["audio_2"] == f"longtalk/{RID}/w00001/audio_2.wav"
    assert multi["source_video"] == f"longtalk/{RID}/w00001/source.mp4"
    assert {"mask_1", "mask_2", "mask_bg"} <= multi.keys()
    assert multi["mask_1"] == f"longtalk/{RID}/shared/mask_1.png"  # the masks depend on the size only
    assert multi["reference"] == f"longtalk/{RID}/w00001/reference.png"  # V2V: the window's first source frame
    assert "mask_1" not in upload_plan(RID, 1, spec("v2v_multi"), speaker_masks=False)
    assert split_upload_name(plan["tail_04"]) == (base, "tail_04.png")
    for bad in ("", "../x", "a/b", "with space", ".hidden"):
        with pytest.raises(ValueError):
            upload_plan(bad, 0, spec("i2v_single"))


def test_default_speaker_masks_follow_the_loop_layout():
    masks = speaker_masks(100, 50)
    assert set(masks) == {"mask_1", "mask_2", "mask_bg"}
    loaded = {name: 1.0 - rgba[..., 3] / 255.0 for name, rgba in masks.items()}  # LoadImage: 1 - alpha
    assert loaded["mask_1"][25, 25] == 1 and loaded["mask_1"][25, 75] == 0
    assert loaded["mask_2"][25, 75] == 1 and loaded["mask_2"][25, 25] == 0
    assert loaded["mask_bg"][0, 0] == 1 and loaded["mask_bg"][25, 25] == 0
    total = loaded["mask_1"] + loaded["mask_2"] + loaded["mask_bg"]
    assert np.all(total == 1)
    assert masks["mask_1"].shape == (50, 100, 4) and masks["mask_1"].dtype == np.uint8


# ---- settings ---------------------------------------------------------------------------

def test_settings_from_env():
    env = {"LONGTALK_COMFY_STEPS": "8", "LONGTALK_COMFY_CFG": "1.5", "LONGTALK_COMFY_VOCAL_SEPARATION": "off",
           "LONGTALK_COMFY_WAV2VEC": "my_w2v.safetensors", "LONGTALK_COMFY_GRAPHS_DIR": "/srv/graphs",
           "LONGTALK_COMFY_COLOR_MATCH": "disabled"}
    config = GraphConfig.from_env(env)
    assert config.sampler.steps == 8 and config.sampler.cfg == 1.5
    assert config.sampler.vocal_separation is False and config.sampler.color_correction is False
    assert config.models.wav2vec == "my_w2v.safetensors"
    assert config.graphs_dir == Path("/srv/graphs")
    assert GraphConfig.from_env({}).graphs_dir is None
    assert SamplerSettings.from_env({}) == SamplerSettings()
    with pytest.raises(ValueError, match="LONGTALK_COMFY_STEPS"):
        SamplerSettings.from_env({"LONGTALK_COMFY_STEPS": "many"})
    with pytest.raises(ValueError, match="multitalk"):
        SamplerSettings(scheduler="multitalk")
    with pytest.raises(ValueError, match="para"):
        SamplerSettings(multi_audio_type="add")
    with pytest.raises(ValueError, match="color_match"):
        SamplerSettings(color_match="magic")
    with pytest.raises(ValueError, match="infinite"):
        ModelFiles(infinitetalk_single="MultiTalk_single.safetensors")


def test_choices_are_the_pinned_node_packs(schema):
    """The allowed values of the overrides are WanVideoWrapper 1.4.6's, as in the saved schema."""
    from longtalk.comfy import config

    def choices(node: str, name: str) -> tuple:
        inputs = schema[node]["input"]
        spec = inputs["required"].get(name) or inputs.get("optional", {})[name]
        return tuple(spec[0])

    assert config.SCHEDULERS == choices("WanVideoSampler", "scheduler")
    assert config.ATTENTION_MODES == choices("WanVideoModelLoader", "attention_mode")
    assert config.BASE_PRECISIONS == choices("WanVideoModelLoader", "base_precision")
    assert config.QUANTIZATIONS == choices("WanVideoModelLoader", "quantization")


@pytest.mark.parametrize("variable,value", [
    ("LONGTALK_COMFY_SCHEDULER", "dpm++sde"), ("LONGTALK_COMFY_ATTENTION_MODE", "sage"),
    ("LONGTALK_COMFY_BASE_PRECISION", "fp8"), ("LONGTALK_COMFY_QUANTIZATION", "fp8_e4m3"),
    ("LONGTALK_COMFY_COLOR_MATCH", "mkl"),
])
def test_a_typo_fails_at_start_up_naming_the_variable_and_the_choices(variable, value):
    with pytest.raises(ValueError, match=variable) as info:
        GraphConfig.from_env({variable: value})
    assert "is not one of" in str(info.value) and ", " in str(info.value)


def test_color_match_offers_what_the_backend_implements():
    assert SamplerSettings().color_match == "meanstd" and SamplerSettings().color_correction
    assert not SamplerSettings(color_match="disabled").color_correction
    for other in ("mkl", "hm", "reinhard", "mvgd", "hm-mvgd-hm", "hm-mkl-hm"):
        with pytest.raises(ValueError, match="meanstd"):
            SamplerSettings(color_match=other)


def test_only_graph_config_reads_the_environment(monkeypatch):
    monkeypatch.setenv("LONGTALK_COMFY_STEPS", "9")
    assert GraphConfig.from_env().sampler.steps == 9
    with pytest.raises(TypeError):
        SamplerSettings.from_env(None)
    with pytest.raises(TypeError):
        ModelFiles.from_env(None)


def test_model_folders_and_fetch_list():
    models = ModelFiles()
    assert models.path_of("wav2vec") == "wav2vec2/wav2vec2-chinese-base_fp16.safetensors"
    assert models.folder_of("lora") == "loras"
    every = models.fetch_list()
    assert ("diffusion_models", models.infinitetalk_single) in every
    assert ("diffusion_models", models.infinitetalk_multi) in every
    assert ("text_encoders", models.text_encoder) in every and ("clip_vision", models.clip_vision) in every
    single = models.fetch_list(multi=False, vocal_separation=False)
    assert ("diffusion_models", models.infinitetalk_multi) not in single
    assert ("diffusion_models", models.vocal_model) not in single
    # the files the shipped graphs name are the ones a seed-workflow install has
    for folder, name in every:
        assert name in SEED_MODELS[folder]


# ---- the CLI ----------------------------------------------------------------------------

def job_file(tmp_path: Path, **extra) -> Path:
    job = {"input": {"input_type": "image", "person_count": "single",
                     "image_path": str(EXAMPLES / "portrait.png"), "wav_path": str(EXAMPLES / "speech.ogg"),
                     "prompt": "A person is talking to the camera", "width": 512, "height": 512, **extra}}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    return path


@pytest.mark.parametrize("k", [0, 3])
def test_show_prints_the_prompt_of_a_window(schema, tmp_path, capsys, k):
    assert cli(["show", str(job_file(tmp_path)), "--window", str(k), "--id", "demo-1"]) == 0
    prompt = json.loads(capsys.readouterr().out)
    assert_valid(prompt, schema)
    assert by_title(prompt, "@reference")[1]["inputs"]["image"] == "longtalk/demo-1/shared/reference.png"
    assert by_title(prompt, "@prompt")[1]["inputs"]["positive_prompt"] == "A person is talking to the camera"
    if k == 0:  # chain start: the resized reference is the one-frame tail
        start = by_title(prompt, "@image_embeds")[1]["inputs"]["start_image"]
        assert by_title(prompt, "@tail_encode")[1]["inputs"]["image"] == start
    else:
        assert len(tail_chain(prompt)) == 9


def test_show_multi_video_and_uploads(schema, tmp_path, capsys):
    job = job_file(tmp_path, input_type="video", person_count="multi", video_url="https://example.com/v.mp4",
                   wav_url_2="https://example.com/b.wav")
    assert cli(["show", str(job), "--window", "5"]) == 0  # URL audio: window 5 is assumed to exist
    prompt = json.loads(capsys.readouterr().out)
    assert_valid(prompt, schema)
    assert by_title(prompt, "@source_video")[1]["inputs"]["video"] == "longtalk/render-id/w00005/source.mp4"
    assert cli(["show", str(job), "--window", "5", "--uploads"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan == upload_plan("render-id", 5, spec("v2v_multi"))


def test_show_refuses_a_window_past_the_audio(tmp_path, capsys):
    assert cli(["show", str(job_file(tmp_path)), "--window", "999"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_show_uses_the_override_folder(tmp_path, capsys):
    graphs = tmp_path / "graphs"
    graphs.mkdir()
    graph = json.loads((SHIPPED / "i2v_single.json").read_text())
    out_id = next(nid for nid, n in graph.items() if n["_meta"]["title"] == "@output")
    graph[out_id]["_meta"]["title"] = "Save"
    (graphs / "i2v_single.json").write_text(json.dumps(graph))
    assert cli(["show", str(job_file(tmp_path)), "--graphs", str(graphs)]) == 2
    err = capsys.readouterr().err
    assert "'@output'" in err and "i2v_single.json" in err


def test_list_and_check(tmp_path, capsys):
    assert cli(["list"]) == 0
    listing = capsys.readouterr().out
    for mode in MODES:
        assert mode in listing
    assert "@tail_encode" in listing and "@source_video" in listing
    assert cli(["check"]) == 0
    assert capsys.readouterr().out.count("ok ") == 4
    shutil.copy(SHIPPED / "v2v_single.json", tmp_path / "v2v_single.json")
    (tmp_path / "i2v_single.json").write_text("[]")
    assert cli(["check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "error  i2v_single" in out and "ok     v2v_single" in out
