"""The ComfyUI-exact prompt validator of the stand-in, against the saved 0.8.0 schema."""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path

import pytest

from tests.comfy_standin.validation import (
    FILE_LIST_INPUTS,
    MODEL_LIST_INPUTS,
    SCHEMA_PATH,
    SEED_MODELS,
    check_prompt,
    load_schema,
    validate_node_input,
    validate_prompt,
)

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "tests" / "fixtures" / "seed_graphs"
SEED_BLOBS = {  # git blob ids of the upstream files (wlsdml1114/Infinitetalk_Runpod_hub @ 16892b4)
    "I2V_single.json": "c0064b03983a498080052d367eb3e6b6b2894a9a",
    "I2V_multi.json": "46a95e2e549bca17f15eebf12c8d2a522aab1d1c",
    "V2V_single.json": "79006f9c283b6b9caf75ee6bd69dc6af94e7af93",
    "V2V_multi.json": "05068c03528f99cfff24e1eddf1c8689ed2a986a",
}


@pytest.fixture(scope="module")
def schema() -> dict:
    return load_schema()


def seed(name: str) -> dict:
    return json.loads((SEEDS / f"{name}.json").read_text())


def only_error(body: dict, node_id: str) -> dict:
    errors = body["node_errors"][node_id]["errors"]
    assert len(errors) == 1, errors
    return errors[0]


# ---- fixtures are data, unchanged ------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SEED_BLOBS))
def test_seed_graphs_are_byte_identical_to_upstream(name):
    data = (SEEDS / name).read_bytes()
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert blob == SEED_BLOBS[name]


def test_schema_fixture_keeps_every_class_and_no_prose(schema):
    assert len(schema) == 230
    text = SCHEMA_PATH.read_text()
    for prose in ('"tooltip"', '"description"', '"placeholder"', '"display_name"', '"category"'):
        assert prose not in text
    for name in ("WanVideoSampler", "WanVideoImageToVideoEncode", "WanVideoAddExtraLatent", "WanVideoEncode",
                 "MultiTalkWav2VecEmbeds", "Wav2VecModelLoader", "VHS_VideoCombine", "VHS_LoadImagesPath",
                 "VHS_MergeImages", "INTConstant", "ImageResizeKJv2", "LoadImage", "LoadAudio", "SaveImage",
                 "PreviewAny", "CLIPVisionLoader", "MelBandRoFormerSampler", "GetImageSizeAndCount",
                 "ImageFromBatch", "RepeatImageBatch"):
        assert name in schema, name
    assert schema["LoadImage"]["input"]["required"]["image"][1] == {"image_upload": True}
    assert schema["LoadAudio"]["input"]["required"]["audio"][1]["audio_upload"] is True
    assert schema["SaveImage"]["output_node"] is True
    assert schema["WanVideoSampler"]["input"]["required"]["cfg"][1] == {
        "default": 6.0, "min": 0.0, "max": 30.0, "step": 0.01}
    assert schema["MultiTalkWav2VecEmbeds"]["output"] == ["MULTITALK_EMBEDS", "AUDIO", "INT"]


def test_extractor_drops_prose_and_keeps_data(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import extract_comfy_schema as ex
    finally:
        sys.path.pop(0)
    info = {"Zed": {
        "input": {"required": {"n": ["INT", {"default": 3, "min": 1, "max": 9, "step": 1, "tooltip": "words"}],
                               "c": [["a", "b"], {"default": "a", "tooltip": "t"}],
                               "f": ["COMBO", {"options": ["x.png"], "image_upload": True, "multiselect": False}]},
                  "hidden": {"u": "UNIQUE_ID"}},
        "input_order": {"required": ["n", "c", "f"], "hidden": ["u"]},
        "output": ["IMAGE"], "output_is_list": [False], "output_name": ["image"], "name": "Zed",
        "display_name": "Zed!", "description": "prose", "python_module": "nodes", "category": "x",
        "output_node": False, "output_tooltips": ["more prose"]}}
    src = tmp_path / "oi.json"
    src.write_text(json.dumps(info))
    out = tmp_path / "schema.json"
    assert ex.main([str(src), "-o", str(out)]) == 0
    got = json.loads(out.read_text())["Zed"]
    assert got == {
        "name": "Zed",
        "input": {"required": {"n": ["INT", {"default": 3, "min": 1, "max": 9, "step": 1}],
                               "c": [["a", "b"], {"default": "a"}],
                               "f": ["COMBO", {"options": ["x.png"], "multiselect": False, "image_upload": True}]},
                  "hidden": {"u": "UNIQUE_ID"}},
        "input_order": {"required": ["n", "c", "f"], "hidden": ["u"]},
        "output": ["IMAGE"], "output_is_list": [False], "output_name": ["image"], "output_node": False}


# ---- the seed graphs validate -----------------------------------------------------------

@pytest.mark.parametrize("name", ["I2V_single", "I2V_multi", "V2V_single", "V2V_multi"])
@pytest.mark.parametrize("installed", [None, SEED_MODELS])
def test_seed_graphs_validate(schema, name, installed):
    graph = seed(name)
    before = copy.deepcopy(graph)
    status, body = validate_prompt(graph, schema, installed_models=installed, prompt_id="p-1", number=7)
    assert status == 200, body
    assert body == {"prompt_id": "p-1", "number": 7, "node_errors": {}}
    assert graph == before  # the caller's prompt is left alone


def test_good_outputs_are_the_output_nodes(schema):
    valid, error, good, node_errors = check_prompt(seed("I2V_single"), schema)
    assert valid and error is None and node_errors == {}
    assert sorted(good) == ["131", "293"]


# ---- prompt-level errors ---------------------------------------------------------------

def test_unknown_class_is_invalid_prompt(schema):
    graph = seed("I2V_single")
    graph["999"] = {"inputs": {}, "class_type": "NoSuchNode"}
    status, body = validate_prompt(graph, schema)
    assert status == 400
    assert body == {"error": {"type": "invalid_prompt",
                              "message": "Cannot execute because node NoSuchNode does not exist.",
                              "details": "Node ID '#999'", "extra_info": {}},
                    "node_errors": {}}


def test_missing_class_type_is_invalid_prompt(schema):
    graph = seed("I2V_single")
    del graph["128"]["class_type"]
    status, body = validate_prompt(graph, schema)
    assert status == 400 and body["error"]["type"] == "invalid_prompt"
    assert body["error"]["message"] == "Cannot execute because a node is missing the class_type property."


def test_no_output_nodes(schema):
    graph = {k: v for k, v in seed("I2V_single").items() if v["class_type"] not in ("VHS_VideoCombine", "PreviewAny")}
    status, body = validate_prompt(graph, schema)
    assert status == 400
    assert body == {"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
                              "extra_info": {}}, "node_errors": {}}


# ---- per-node errors -------------------------------------------------------------------

def test_missing_required_input(schema):
    graph = seed("I2V_single")
    del graph["128"]["inputs"]["steps"]  # WanVideoSampler: output 131 needs it, output 293 does not
    status, body = validate_prompt(graph, schema)
    assert status == 200  # 293 (PreviewAny of the embeds' frame count) still validates
    err = only_error(body, "128")
    assert err == {"type": "required_input_missing", "message": "Required input is missing", "details": "steps",
                   "extra_info": {"input_name": "steps"}}
    assert body["node_errors"]["128"]["class_type"] == "WanVideoSampler"
    assert body["node_errors"]["128"]["dependent_outputs"] == ["131"]


def test_all_outputs_broken_gives_400(schema):
    graph = seed("I2V_single")
    graph["270"]["inputs"]["value"] = "many"  # INTConstant feeding 194 (both outputs depend on it)
    status, body = validate_prompt(graph, schema)
    assert status == 400
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["error"]["message"] == "Prompt outputs failed validation"
    err = only_error(body, "270")
    assert err["type"] == "invalid_input_type"
    assert err["message"] == "Failed to convert an input value to a INT value"
    assert err["details"].startswith("value, many, invalid literal for int()")
    assert err["extra_info"]["input_name"] == "value"
    assert sorted(body["node_errors"]["270"]["dependent_outputs"]) == ["131", "293"]
    # nodes downstream of the broken one are invalid but carry no errors, so they are not listed
    assert set(body["node_errors"]) == {"270"}


def test_out_of_range_int(schema):
    graph = seed("I2V_single")
    graph["128"]["inputs"]["steps"] = 0
    graph["134"]["inputs"]["blocks_to_swap"] = 10_000
    status, body = validate_prompt(graph, schema)
    assert status == 200
    err = only_error(body, "128")
    assert err["type"] == "value_smaller_than_min"
    assert err["message"] == "Value 0 smaller than min of 1"
    assert err["details"] == "steps"
    assert err["extra_info"]["received_value"] == 0
    err = only_error(body, "134")
    assert err["type"] == "value_bigger_than_max"
    assert err["extra_info"]["input_name"] == "blocks_to_swap"


def test_float_strings_are_converted(schema):
    graph = seed("I2V_single")
    graph["128"]["inputs"]["cfg"] = "1.5"
    graph["128"]["inputs"]["steps"] = 6.9  # int() truncates, as in ComfyUI
    ok, _, _, node_errors = check_prompt(graph, schema)
    assert ok and node_errors == {}
    assert graph["128"]["inputs"]["cfg"] == 1.5 and graph["128"]["inputs"]["steps"] == 6


def test_bad_choice(schema):
    graph = seed("I2V_single")
    graph["128"]["inputs"]["scheduler"] = "karras"
    status, body = validate_prompt(graph, schema)
    err = only_error(body, "128")
    assert err["type"] == "value_not_in_list"
    assert err["message"] == "Value not in list"
    assert err["details"].startswith("scheduler: 'karras' not in (list of length 21)")
    assert err["extra_info"] == {"input_name": "scheduler", "input_config": None, "received_value": "karras"}
    graph = seed("I2V_single")
    graph["281"]["inputs"]["crop_position"] = "middle"
    status, body = validate_prompt(graph, schema)
    assert status == 200 and body["node_errors"]["281"]["dependent_outputs"] == ["131"]
    err = only_error(body, "281")
    assert err["details"] == "crop_position: 'middle' not in ['center', 'top', 'bottom', 'left', 'right']"
    assert err["extra_info"]["input_config"][0] == ["center", "top", "bottom", "left", "right"]


def test_new_style_combo(schema):
    graph = seed("I2V_single")
    graph["194"]["inputs"]["multi_audio_type"] = "para"
    graph["131"]["inputs"]["format"] = "video/h264-mp4"
    assert validate_prompt(graph, schema)[0] == 200
    assert schema["LoadAudio"]["input"]["required"]["audio"][0] == "COMBO"
    graph = {"1": {"class_type": "PrimitiveString", "inputs": {"value": "x"}},
             "2": {"class_type": "SaveAudio", "inputs": {"audio": ["3", 0], "filename_prefix": "a"}},
             "3": {"class_type": "LoadAudio", "inputs": {"audio": "speech.wav"}}}
    assert validate_prompt(graph, schema)[0] == 200  # LoadAudio's file list is not checked


def test_wrong_link_type(schema):
    graph = seed("I2V_single")
    graph["128"]["inputs"]["image_embeds"] = ["241", 0]  # WANVIDEOTEXTEMBEDS into WANVIDIMAGE_EMBEDS
    status, body = validate_prompt(graph, schema)
    assert status == 200
    err = only_error(body, "128")
    assert err["type"] == "return_type_mismatch"
    assert err["message"] == "Return type mismatch between linked nodes"
    assert err["details"] == "image_embeds, received_type(WANVIDEOTEXTEMBEDS) mismatch input_type(WANVIDIMAGE_EMBEDS)"
    assert err["extra_info"]["linked_node"] == ["241", 0]
    assert err["extra_info"]["received_type"] == "WANVIDEOTEXTEMBEDS"


def test_string_cannot_feed_a_combo_but_the_same_combo_can(schema):
    graph = seed("I2V_single")
    graph["500"] = {"class_type": "StringConstant", "inputs": {"string": "dpm++_sde"}}
    graph["128"]["inputs"]["scheduler"] = ["500", 0]
    status, body = validate_prompt(graph, schema)
    assert only_error(body, "128")["type"] == "return_type_mismatch"
    graph["500"] = {"class_type": "WanVideoScheduler", "inputs": {
        "scheduler": "dpm++_sde", "steps": 6, "shift": 11.0, "start_step": 0, "end_step": -1}}
    graph["128"]["inputs"]["scheduler"] = ["500", 3]  # the scheduler COMBO output into the same COMBO
    status, body = validate_prompt(graph, schema)
    assert "128" not in body["node_errors"], body


def test_any_type_takes_every_link(schema):
    assert validate_node_input("INT", "*") and validate_node_input("*", "IMAGE")
    assert validate_node_input("INT,FLOAT", "FLOAT") and not validate_node_input("INT", "FLOAT")
    assert validate_node_input(["a", "b"], ["a", "b"]) and not validate_node_input("STRING", ["a", "b"])
    graph = seed("I2V_single")
    graph["293"]["inputs"]["source"] = ["291", 0]  # IMAGE into PreviewAny's "*"
    assert validate_prompt(graph, schema)[1]["node_errors"] == {}


def test_link_to_missing_node(schema):
    graph = seed("I2V_single")
    graph["130"]["inputs"]["samples"] = ["404", 0]
    status, body = validate_prompt(graph, schema)
    assert status == 200
    err = only_error(body, "130")  # raised while validating 130, reported by 131 on 130
    assert err["type"] == "exception_during_inner_validation"
    assert err["details"] == "'404'"
    assert err["extra_info"]["exception_type"] == "KeyError"
    assert err["extra_info"]["linked_node"] == ["130", 0]
    graph = seed("I2V_single")
    graph["131"]["inputs"]["images"] = ["404", 0]  # on the output node itself
    status, body = validate_prompt(graph, schema)
    err = only_error(body, "131")
    assert err["type"] == "exception_during_validation" and err["details"] == "'404'"


def test_bad_link_shape(schema):
    graph = seed("I2V_single")
    graph["128"]["inputs"]["model"] = ["122"]
    status, body = validate_prompt(graph, schema)
    err = only_error(body, "128")
    assert err["type"] == "bad_linked_input" and err["details"] == "model"


def test_one_of_two_outputs_broken_is_accepted_with_node_errors(schema):
    graph = seed("I2V_single")
    graph["130"]["inputs"]["enable_vae_tiling"] = True
    graph["130"]["inputs"]["tile_x"] = 1  # below min 40; only output 131 depends on 130
    status, body = validate_prompt(graph, schema, prompt_id="mine")
    assert status == 200
    assert body["prompt_id"] == "mine"
    assert list(body["node_errors"]) == ["130"]
    assert body["node_errors"]["130"]["dependent_outputs"] == ["131"]
    _, _, good, _ = check_prompt(seed("I2V_single") | {"130": graph["130"]}, schema)
    assert good == ["293"]


def test_nodes_no_output_needs_are_not_validated(schema):
    graph = seed("I2V_single")
    graph["300"]["inputs"] = {}  # loose Wav2VecModelLoader: missing its required input
    graph["177"]["inputs"]["backend"] = "nonsense"  # loose torch-compile settings
    assert validate_prompt(graph, schema, prompt_id="x") == (200, {"prompt_id": "x", "number": 0, "node_errors": {}})


# ---- files and models ------------------------------------------------------------------

def test_model_lists(schema):
    assert ("WanVideoModelLoader", "model") in MODEL_LIST_INPUTS
    graph = seed("I2V_single")
    graph["122"]["inputs"]["model"] = "Wan2_1-I2V-14B-720P_fp8_e4m3fn.safetensors"
    assert validate_prompt(graph, schema)[0] == 200  # the saved list is another machine's: not checked
    status, body = validate_prompt(graph, schema, installed_models=SEED_MODELS)
    assert status == 200  # the PreviewAny output (293) does not need the model
    err = only_error(body, "122")
    assert err["type"] == "value_not_in_list"
    assert err["details"].startswith("model: 'Wan2_1-I2V-14B-720P_fp8_e4m3fn.safetensors' not in [")
    installed = {**SEED_MODELS, "diffusion_models": SEED_MODELS["diffusion_models"] +
                 ("Wan2_1-I2V-14B-720P_fp8_e4m3fn.safetensors",)}
    assert validate_prompt(graph, schema, installed_models=installed)[1]["node_errors"] == {}


def test_file_inputs_accept_other_names_and_paths(schema, tmp_path):
    assert ("LoadImage", "image") in FILE_LIST_INPUTS and ("VHS_LoadVideo", "video") in FILE_LIST_INPUTS
    graph = seed("I2V_single")
    graph["284"]["inputs"]["image"] = "job-1/ref.png"
    graph["125"]["inputs"]["audio"] = str(tmp_path / "speech.wav")
    assert validate_prompt(graph, schema)[1]["node_errors"] == {}
    # with file checks, missing files fail like LoadImage/LoadAudio's VALIDATE_INPUTS
    status, body = validate_prompt(graph, schema, check_files=True, input_dir=tmp_path)
    assert status == 400
    assert only_error(body, "284") == {"type": "custom_validation_failed",
                                       "message": "Custom validation failed for node",
                                       "details": "image - Invalid image file: job-1/ref.png",
                                       "extra_info": {"input_name": "image"}}
    assert only_error(body, "125")["details"].startswith("audio - Invalid audio file: ")
    (tmp_path / "job-1").mkdir()
    (tmp_path / "job-1" / "ref.png").write_bytes(b"x")
    (tmp_path / "speech.wav").write_bytes(b"x")
    graph["284"]["inputs"]["image"] = "job-1/ref.png [input]"
    assert validate_prompt(graph, schema, check_files=True, input_dir=tmp_path)[0] == 200
