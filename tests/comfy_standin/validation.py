"""ComfyUI 0.8.0's prompt validation, re-implemented against a saved /object_info schema.

`validate_prompt(prompt, schema)` answers what `POST /prompt` of a real ComfyUI 0.8.0
server would answer: ``(HTTP status, JSON body)``. It follows execution.py's
`validate_prompt` / `validate_inputs` and comfy_execution/validation.py's
`validate_node_input` step by step:

1. Every node must have a ``class_type`` that the server knows, else 400
   ``invalid_prompt`` (the first offending node in prompt order, ``node_errors`` ``{}``).
2. Output nodes are the classes with ``output_node: true``; none -> 400
   ``prompt_no_outputs``.
3. Each output node is validated recursively through its links (so nodes that no output
   depends on are never validated, as in ComfyUI). Per input, in ``input_order``:
   ``required_input_missing``; a list value must be ``[node_id, output_index]`` (else
   ``bad_linked_input``); the linked output type must match the input type
   (``return_type_mismatch``: equal types, ``*`` on either side, or overlapping
   comma-separated type sets; a COMBO input only takes a link whose output type is that
   very COMBO, so a STRING output cannot feed a COMBO input, exactly like the real server);
   widget values are converted (``int``/``float``/``str``/``bool``, else
   ``invalid_input_type``), then checked against ``min`` / ``max``
   (``value_smaller_than_min`` / ``value_bigger_than_max``) and COMBO choices
   (``value_not_in_list``; lists longer than 20 are summarised as in ComfyUI). A link to a
   node that is not in the prompt raises inside ComfyUI's validator, which is reported as
   ``exception_during_validation`` (on an output node) or
   ``exception_during_inner_validation`` (on the linked-from node).
4. ``node_errors`` maps node id -> ``{"errors", "dependent_outputs", "class_type"}`` for
   the nodes that carry errors. If at least one output validates: 200
   ``{"prompt_id", "number", "node_errors"}`` (broken outputs are dropped); otherwise 400
   ``prompt_outputs_failed_validation``.

Two explicit exceptions where the saved COMBO lists are *not* used verbatim:

- `FILE_LIST_INPUTS` (input-file loaders: LoadImage.image, LoadAudio.audio,
  VHS_LoadVideo.video ...). These classes define VALIDATE_INPUTS for that input, and
  ComfyUI then skips the COMBO-list check for it: any value is accepted, including
  ``subfolder/name``, ``name [input]`` and absolute paths. With ``check_files=True`` and an
  ``input_dir`` the file must exist, else ``custom_validation_failed`` with
  ``"<input> - Invalid <kind> file: <value>"`` (what those VALIDATE_INPUTS return).
- `MODEL_LIST_INPUTS` (model loaders -> models/ folder names). The saved lists describe the
  machine the schema was dumped on, not ours. With ``installed_models=None`` (default)
  any model name is accepted; with ``installed_models={"folder": [names]}`` (what the
  stand-in server passes) the list is replaced by the installed files and checked exactly,
  so an unknown model gives ``value_not_in_list`` like the real server.

Known differences from the real server: ``input_config`` in error ``extra_info`` carries
the schema's trimmed options (no tooltips); tracebacks point into this module; output
nodes and a node's inputs are visited in prompt / ``input_order`` order, where ComfyUI
iterates Python sets (its order is arbitrary); VALIDATE_INPUTS of other classes is not
modelled.
"""

from __future__ import annotations

import copy
import os
import sys
import traceback
import uuid
from pathlib import Path
from typing import Any, Iterable

__all__ = [
    "FILE_LIST_INPUTS",
    "MODEL_LIST_INPUTS",
    "check_prompt",
    "validate_prompt",
    "validate_node_input",
    "model_choices",
    "resolve_input_path",
    "load_schema",
    "SCHEMA_PATH",
    "SEED_MODELS",
]

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "fixtures" / "comfy_schema.json"

# (class_type, input name) -> file kind, for the loaders whose VALIDATE_INPUTS replaces the
# COMBO-list check with "does this file exist in input/ (or at this absolute path)".
FILE_LIST_INPUTS: dict[tuple[str, str], str] = {
    ("LoadImage", "image"): "image",
    ("LoadImageMask", "image"): "image",
    ("LoadAudio", "audio"): "audio",
    ("VHS_LoadVideo", "video"): "video",
    ("VHS_LoadVideoFFmpeg", "video"): "video",
    ("VHS_LoadAudioUpload", "audio"): "audio",
}

# (class_type, input name) -> the ComfyUI models/ folders its list is built from, and
# extra fixed entries that precede the file names ("none" for the multi-LoRA selector).
MODEL_LIST_INPUTS: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]] = {
    ("CLIPVisionLoader", "clip_name"): (("clip_vision",), ()),
    ("LoadWanVideoClipTextEncoder", "model_name"): (("clip_vision", "text_encoders"), ()),
    ("LoadWanVideoT5TextEncoder", "model_name"): (("text_encoders",), ()),
    ("WanVideoTextEncodeCached", "model_name"): (("text_encoders",), ()),
    ("WanVideoPromptExtenderSelect", "model"): (("text_encoders",), ()),
    ("WanVideoModelLoader", "model"): (("diffusion_models",), ()),
    ("MultiTalkModelLoader", "model"): (("diffusion_models",), ()),
    ("MelBandRoFormerModelLoader", "model_name"): (("diffusion_models",), ()),
    ("WanVideoExtraModelSelect", "extra_model"): (("diffusion_models",), ()),
    ("WanVideoVACEModelSelect", "vace_model"): (("diffusion_models",), ()),
    ("WanVideoVAELoader", "model_name"): (("vae",), ()),
    ("WanVideoFlashVSRDecoderLoader", "model_name"): (("vae",), ()),
    ("OviMMAudioVAELoader", "vae"): (("vae",), ()),
    ("OviMMAudioVAELoader", "vocoder"): (("vae",), ()),
    ("WanVideoLoraSelect", "lora"): (("loras",), ()),
    **{("WanVideoLoraSelectMulti", f"lora_{i}"): (("loras",), ("none",)) for i in range(5)},
    ("Wav2VecModelLoader", "model"): (("wav2vec2",), ()),
}

# The model files the four seed workflows load, per ComfyUI models/ folder: what the
# stand-in server reports as installed unless told otherwise.
SEED_MODELS: dict[str, tuple[str, ...]] = {
    "diffusion_models": (
        "MelBandRoformer_fp16.safetensors",
        "Wan2_1-I2V-14B-480P_fp8_e4m3fn.safetensors",
        "Wan2_1-InfiniteTalk-Multi_fp8_e4m3fn_scaled_KJ.safetensors",
        "Wan2_1-InfiniteTalk-Single_fp8_e4m3fn_scaled_KJ.safetensors",
    ),
    "loras": ("lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",),
    "vae": ("Wan2_1_VAE_bf16.safetensors",),
    "text_encoders": ("umt5-xxl-enc-fp8_e4m3fn.safetensors",),
    "clip_vision": ("clip_vision_h.safetensors",),
    "wav2vec2": ("wav2vec2-chinese-base_fp16.safetensors",),
}

_ANNOTATIONS = (" [input]", " [output]", " [temp]")


def load_schema(path: Path | str = SCHEMA_PATH) -> dict:
    import json

    return json.loads(Path(path).read_text(encoding="utf-8"))


def model_choices(class_type: str, input_name: str, installed: dict[str, Iterable[str]]) -> list[str] | None:
    """The COMBO list a real server with these installed model files would offer (or None)."""
    spec = MODEL_LIST_INPUTS.get((class_type, input_name))
    if spec is None:
        return None
    folders, fixed = spec
    names: list[str] = []
    for folder in folders:
        names.extend(sorted(installed.get(folder, ())))
    return list(fixed) + names


def resolve_input_path(name: str, input_dir: Path, output_dir: Path | None = None,
                       temp_dir: Path | None = None) -> Path | None:
    """Where ComfyUI's folder_paths.get_annotated_filepath would look for a loader's value."""
    if not isinstance(name, str) or not name:
        return None
    base = input_dir
    for suffix in _ANNOTATIONS:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            kind = suffix.strip(" []")
            base = {"input": input_dir, "output": output_dir, "temp": temp_dir}[kind] or input_dir
            break
    return Path(os.path.join(base, name))


def validate_node_input(received_type: Any, input_type: Any, strict: bool = False) -> bool:
    """comfy_execution/validation.py: may an output of received_type feed input_type?"""
    if received_type == "*" or input_type == "*":  # AnyType("*") compares equal to every type
        return True
    if received_type == input_type:
        return True
    if not isinstance(received_type, str) or not isinstance(input_type, str):
        return False
    received = {t.strip() for t in received_type.split(",")}
    wanted = {t.strip() for t in input_type.split(",")}
    if "*" in received or "*" in wanted:
        return True
    if strict:
        return received.issubset(wanted)
    return len(received & wanted) > 0


def _full_type_name(klass: type) -> str:
    module = klass.__module__
    if module == "builtins":
        return klass.__qualname__
    return module + "." + klass.__qualname__


def _input_info(class_info: dict, name: str) -> tuple[Any, str | None, dict | None]:
    inputs = class_info.get("input", {})
    for category in ("required", "optional"):
        section = inputs.get(category) or {}
        if name in section:
            spec = section[name]
            extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            return spec[0], category, extra
    return None, None, None


def _input_names(class_info: dict) -> list[str]:
    order = class_info.get("input_order") or {}
    names: list[str] = []
    for category in ("required", "optional"):
        listed = order.get(category) or list((class_info.get("input", {}).get(category) or {}).keys())
        names.extend(n for n in listed if n not in names)
    return names


class _Validator:
    def __init__(self, prompt: dict, schema: dict, check_files: bool, input_dir: Path | None,
                 output_dir: Path | None, temp_dir: Path | None,
                 installed_models: dict[str, Iterable[str]] | None) -> None:
        self.prompt = prompt
        self.schema = schema
        self.check_files = check_files and input_dir is not None
        self.input_dir = input_dir
        self.output_dir = output_dir
        self.temp_dir = temp_dir
        self.installed = installed_models
        self.validated: dict[str, tuple[bool, list, str]] = {}

    def _custom_errors(self, class_type: str, inputs: dict) -> list[dict]:
        errors = []
        for (cls, name), kind in FILE_LIST_INPUTS.items():
            if cls != class_type or name not in inputs or isinstance(inputs[name], list):
                continue
            value = inputs[name]
            path = resolve_input_path(value, self.input_dir, self.output_dir, self.temp_dir)
            if path is None or not path.is_file():
                errors.append({
                    "type": "custom_validation_failed",
                    "message": "Custom validation failed for node",
                    "details": f"{name} - Invalid {kind} file: {value}",
                    "extra_info": {"input_name": name},
                })
        return errors

    def validate_inputs(self, unique_id: str) -> tuple[bool, list, str]:
        if unique_id in self.validated:
            return self.validated[unique_id]
        node = self.prompt[unique_id]
        inputs = node["inputs"]
        class_type = node["class_type"]
        class_info = self.schema[class_type]
        errors: list[dict] = []
        valid = True

        for x in _input_names(class_info):
            input_type, category, extra_info = _input_info(class_info, x)
            if x not in inputs:
                if category == "required":
                    errors.append({
                        "type": "required_input_missing",
                        "message": "Required input is missing",
                        "details": f"{x}",
                        "extra_info": {"input_name": x},
                    })
                continue

            val = inputs[x]
            info = [input_type, extra_info]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append({
                        "type": "bad_linked_input",
                        "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        "details": f"{x}",
                        "extra_info": {"input_name": x, "input_config": info, "received_value": val},
                    })
                    continue
                o_id = val[0]
                o_class_type = self.prompt[o_id]["class_type"]  # KeyError for a missing node, as in ComfyUI
                return_types = tuple(self.schema[o_class_type]["output"])
                received_type = return_types[val[1]]
                if not validate_node_input(received_type, input_type):
                    errors.append({
                        "type": "return_type_mismatch",
                        "message": "Return type mismatch between linked nodes",
                        "details": f"{x}, received_type({received_type}) mismatch input_type({input_type})",
                        "extra_info": {"input_name": x, "input_config": info,
                                       "received_type": received_type, "linked_node": val},
                    })
                    continue
                try:
                    r = self.validate_inputs(o_id)
                    if r[0] is False:
                        valid = False
                        continue
                except Exception as ex:
                    typ, _, tb = sys.exc_info()
                    valid = False
                    reasons = [{
                        "type": "exception_during_inner_validation",
                        "message": "Exception when validating inner node",
                        "details": str(ex),
                        "extra_info": {"input_name": x, "input_config": info, "exception_message": str(ex),
                                       "exception_type": _full_type_name(typ),
                                       "traceback": traceback.format_tb(tb), "linked_node": val},
                    }]
                    self.validated[o_id] = (False, reasons, o_id)
                    continue
            else:
                try:
                    if isinstance(val, dict) and "__value__" in val:
                        val = val["__value__"]
                        inputs[x] = val
                    if input_type == "INT":
                        val = int(val)
                        inputs[x] = val
                    if input_type == "FLOAT":
                        val = float(val)
                        inputs[x] = val
                    if input_type == "STRING":
                        val = str(val)
                        inputs[x] = val
                    if input_type == "BOOLEAN":
                        val = bool(val)
                        inputs[x] = val
                except Exception as ex:
                    errors.append({
                        "type": "invalid_input_type",
                        "message": f"Failed to convert an input value to a {input_type} value",
                        "details": f"{x}, {val}, {ex}",
                        "extra_info": {"input_name": x, "input_config": info, "received_value": val,
                                       "exception_message": str(ex)},
                    })
                    continue

                if (class_type, x) in FILE_LIST_INPUTS:
                    continue  # the node's VALIDATE_INPUTS takes this input: no range/list check

                if "min" in extra_info and val < extra_info["min"]:
                    errors.append({
                        "type": "value_smaller_than_min",
                        "message": "Value {} smaller than min of {}".format(val, extra_info["min"]),
                        "details": f"{x}",
                        "extra_info": {"input_name": x, "input_config": info, "received_value": val},
                    })
                    continue
                if "max" in extra_info and val > extra_info["max"]:
                    errors.append({
                        "type": "value_bigger_than_max",
                        "message": "Value {} bigger than max of {}".format(val, extra_info["max"]),
                        "details": f"{x}",
                        "extra_info": {"input_name": x, "input_config": info, "received_value": val},
                    })
                    continue

                if isinstance(input_type, list) or input_type == "COMBO":
                    if (class_type, x) in MODEL_LIST_INPUTS:
                        if self.installed is None:
                            continue  # the saved list is another machine's models/ folder
                        combo_options = model_choices(class_type, x, self.installed) or []
                        info = [combo_options if isinstance(input_type, list) else input_type,
                                ({**extra_info, "options": combo_options} if input_type == "COMBO" else extra_info)]
                    elif input_type == "COMBO":
                        combo_options = extra_info.get("options", [])
                    else:
                        combo_options = input_type
                    if val not in combo_options:
                        input_config = info
                        if len(combo_options) > 20:
                            list_info = f"(list of length {len(combo_options)})"
                            input_config = None
                        else:
                            list_info = str(combo_options)
                        errors.append({
                            "type": "value_not_in_list",
                            "message": "Value not in list",
                            "details": f"{x}: '{val}' not in {list_info}",
                            "extra_info": {"input_name": x, "input_config": input_config, "received_value": val},
                        })
                        continue

        if self.check_files:  # VALIDATE_INPUTS runs after the static checks, whatever they found
            errors.extend(self._custom_errors(class_type, inputs))

        ret = (False, errors, unique_id) if errors or valid is not True else (True, [], unique_id)
        self.validated[unique_id] = ret
        return ret


def check_prompt(prompt: dict, schema: dict, *, check_files: bool = False, input_dir: Path | None = None,
                 output_dir: Path | None = None, temp_dir: Path | None = None,
                 installed_models: dict[str, Iterable[str]] | None = None,
                 partial_execution_targets: list[str] | None = None) -> tuple[bool, dict | None, list[str], dict]:
    """execution.validate_prompt's own result: (valid, error, good_outputs, node_errors).

    Converts widget values in place (INT/FLOAT/STRING/BOOLEAN), as ComfyUI does to the
    prompt it then queues."""
    if not isinstance(prompt, dict):
        error = {"type": "invalid_prompt", "message": "Cannot execute because the prompt is not a JSON object.",
                 "details": type(prompt).__name__, "extra_info": {}}
        return False, error, [], {}
    outputs: list[str] = []
    for x in prompt:
        node = prompt[x]
        if not isinstance(node, dict) or "class_type" not in node:
            error = {"type": "invalid_prompt",
                     "message": "Cannot execute because a node is missing the class_type property.",
                     "details": f"Node ID '#{x}'", "extra_info": {}}
            return False, error, [], {}
        class_type = node["class_type"]
        class_info = schema.get(class_type) if isinstance(class_type, str) else None
        if class_info is None:
            error = {"type": "invalid_prompt",
                     "message": f"Cannot execute because node {class_type} does not exist.",
                     "details": f"Node ID '#{x}'", "extra_info": {}}
            return False, error, [], {}
        if class_info.get("output_node") is True:
            if partial_execution_targets is None or x in partial_execution_targets:
                outputs.append(x)

    if not outputs:
        error = {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}
        return False, error, [], {}

    v = _Validator(prompt, schema, check_files, input_dir, output_dir, temp_dir, installed_models)
    good_outputs: list[str] = []
    failed: list[tuple[str, list]] = []
    node_errors: dict[str, dict] = {}
    for o in outputs:
        try:
            m = v.validate_inputs(o)
            valid, reasons = m[0], m[1]
        except Exception as ex:
            typ, _, tb = sys.exc_info()
            valid = False
            reasons = [{
                "type": "exception_during_validation",
                "message": "Exception when validating node",
                "details": str(ex),
                "extra_info": {"exception_type": _full_type_name(typ), "traceback": traceback.format_tb(tb)},
            }]
            v.validated[o] = (False, reasons, o)
        if valid is True:
            good_outputs.append(o)
            continue
        failed.append((o, reasons))
        for node_id, result in v.validated.items():
            if result[0] is not True and len(result[1]) > 0:
                if node_id not in node_errors:
                    node_errors[node_id] = {"errors": result[1], "dependent_outputs": [],
                                            "class_type": prompt[node_id]["class_type"]}
                node_errors[node_id]["dependent_outputs"].append(o)

    if not good_outputs:
        lines = [f"{e['message']}: {e['details']}" for _, errs in failed for e in errs]
        error = {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                 "details": "\n".join(lines), "extra_info": {}}
        return False, error, [], node_errors
    return True, None, good_outputs, node_errors


def validate_prompt(prompt: dict, schema: dict, *, check_files: bool = False, input_dir: Path | None = None,
                    installed_models: dict[str, Iterable[str]] | None = None, prompt_id: str | None = None,
                    number: int | float = 0) -> tuple[int, dict]:
    """(HTTP status, JSON body) of ComfyUI 0.8.0's POST /prompt for this prompt.

    The caller's prompt is not modified (a deep copy is validated)."""
    valid, error, _good, node_errors = check_prompt(
        copy.deepcopy(prompt), schema, check_files=check_files, input_dir=input_dir,
        installed_models=installed_models)
    if valid:
        return 200, {"prompt_id": prompt_id or str(uuid.uuid4()), "number": number, "node_errors": node_errors}
    return 400, {"error": error, "node_errors": node_errors}
