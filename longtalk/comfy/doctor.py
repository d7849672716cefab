"""Can this ComfyUI run our graphs? Checks that make no render.

`check_server(client, config)` asks one ComfyUI for `/system_stats` and `/object_info`, binds
every mode's graph the way the backend would for a window (a chain start and a window with a
carried tail, so both wirings are seen) and checks each node against the server's schema:

- the node class exists (else: which node pack to install);
- the graph sets every input the class requires, and only inputs the class has;
- each literal value is allowed: choices (scheduler, precision, attention mode...), INT and
  FLOAT ranges, booleans;
- each link comes from an output of a matching type;
- each model file the settings name is in the loader's list, which is ComfyUI's listing of
  that models/ folder (a missing file is reported with its folder).

Input-file choices (the uploaded reference, tails, audio, masks, source video) are not
checked: those files are uploaded per window.

The answer is a `DoctorReport`: the server's facts (ComfyUI, Python, torch, devices) and one
line per problem. The GPU worker runs the same check at start and does not poll its task
queue while any problem stands; operators run `python -m comfy_graphs doctor --url URL`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from .binder import WindowValues, load_template
from .client import MODEL_INPUTS, ComfyClient
from .config import GraphConfig
from .modes import MODES, spec_for

# Node pack of every class our graphs (and the binder) use, from the pinned /object_info dump
# ("python_module"); a class not listed here is reported as a ComfyUI core node.
NODE_PACKS: dict[str, str] = {
    **{name: "ComfyUI-WanVideoWrapper" for name in (
        "WanVideoModelLoader", "MultiTalkModelLoader", "WanVideoLoraSelect", "WanVideoBlockSwap",
        "WanVideoVAELoader", "WanVideoTextEncodeCached", "Wav2VecModelLoader", "WanVideoClipVisionEncode",
        "WanVideoImageToVideoEncode", "WanVideoEncode", "WanVideoAddExtraLatent", "MultiTalkWav2VecEmbeds",
        "WanVideoSampler", "WanVideoDecode")},
    **{name: "ComfyUI-KJNodes" for name in ("INTConstant", "GetImageSizeAndCount", "ImageResizeKJv2")},
    **{name: "ComfyUI-VideoHelperSuite" for name in ("VHS_LoadVideo", "VHS_MergeImages", "VHS_MergeMasks")},
    **{name: "ComfyUI-MelBandRoFormer" for name in ("MelBandRoFormerModelLoader", "MelBandRoFormerSampler")},
}
CORE = "ComfyUI itself (core node)"

# Loader inputs whose choices are the server's input/ files: our uploads, checked per window.
FILE_INPUTS = {("LoadImage", "image"), ("LoadAudio", "audio"), ("VHS_LoadVideo", "video")}

PINNED_COMFYUI = "0.8.0"


@dataclass
class DoctorReport:
    url: str
    server: dict = field(default_factory=dict)  # ComfyUI, Python, torch, devices
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth saying, not a reason to refuse
    nodes: int = 0
    classes: int = 0
    model_files: int = 0
    modes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """What an operator reads: the facts, then one line per note and per problem."""
        out = [f"server   {self.url}: {describe_server(self.server)}"]
        for dev in self.server.get("devices", []):
            out.append(f"device   {describe_device(dev)}")
        out.append(f"checked  {len(self.modes)} graph(s) ({', '.join(self.modes)}): {self.nodes} nodes of "
                   f"{self.classes} classes, {self.model_files} model files")
        out += [f"note     {n}" for n in self.notes]
        out += [f"FAIL     {p}" for p in self.problems]
        out.append("ok: this ComfyUI can run the graphs" if self.ok
                   else f"{len(self.problems)} problem(s): this ComfyUI cannot run the graphs")
        return out


def describe_server(stats: dict) -> str:
    system = stats.get("system") or {}
    python = str(system.get("python_version", "?")).split()[0]
    return (f"ComfyUI {system.get('comfyui_version', '?')}, Python {python}, "
            f"torch {system.get('pytorch_version', '?')}")


def describe_device(dev: dict) -> str:
    gib = 1024**3
    total, free = dev.get("vram_total") or 0, dev.get("vram_free") or 0
    return f"{dev.get('name', '?')} ({dev.get('type', '?')}, {total / gib:.1f} GiB, {free / gib:.1f} GiB free)"


def sample_prompts(config: GraphConfig, modes: Iterable[str] = MODES) -> dict[tuple[str, int], dict]:
    """The prompts the backend would send for window 0 (chain start) and window 1 of each
    mode, for a render of the default parameters."""
    prompts = {}
    for mode in modes:
        template = load_template(mode, config.graphs_dir)
        spec = spec_for(mode, prompt="a person talking")
        for k in (0, 1):
            values = WindowValues.for_window("doctor", k, spec, chain_start=(k == 0),
                                             speaker_masks=config.sampler.speaker_masks)
            prompts[(mode, k)] = template.bind(values, config.models, config.sampler)
    return prompts


def check_prompts(prompts: dict[tuple[str, int], dict], object_info: dict) -> tuple[list[str], dict]:
    """Problems of the prompts against one /object_info, each said once (with the modes it
    affects), and counts of what was checked."""
    found: dict[str, list[str]] = {}
    classes: set[str] = set()
    models: set[tuple[str, str]] = set()
    nodes = 0

    def problem(text: str, mode: str) -> None:
        modes = found.setdefault(text, [])
        if mode not in modes:
            modes.append(mode)

    for (mode, _k), prompt in prompts.items():
        for node_id, node in prompt.items():
            nodes += 1
            cls = node["class_type"]
            classes.add(cls)
            where = _where(node_id, node)
            info = object_info.get(cls)
            if not isinstance(info, dict):
                problem(f"node class {cls} is missing: install the {NODE_PACKS.get(cls, CORE)} node pack "
                        f"(or the version this project pins)", mode)
                continue
            spec = _input_spec(info)
            required = (info.get("input") or {}).get("required") or {}
            inputs = node.get("inputs") or {}
            for name in required:
                if name not in inputs:
                    problem(f"{where}: the server's {cls} requires input '{name}', which our graph does not set "
                            f"(a different node pack version?)", mode)
            for name, value in inputs.items():
                if name not in spec:
                    problem(f"{where}: the server's {cls} has no input '{name}' (a different node pack version?)",
                            mode)
                    continue
                if _is_link(value):
                    text = _check_link(value, spec[name], prompt, object_info, where, name)
                else:
                    if (cls, name) in MODEL_INPUTS:
                        models.add((cls, str(value)))
                    text = _check_value(cls, name, value, spec[name], where)
                if text:
                    problem(text, mode)
    every = set(m for m, _ in prompts)
    lines = [text if set(modes) == every else f"{text} [{', '.join(modes)}]" for text, modes in found.items()]
    return lines, {"nodes": nodes, "classes": len(classes), "model_files": len({v for _, v in models})}


async def check_server(client: ComfyClient, config: GraphConfig, modes: Iterable[str] = MODES) -> DoctorReport:
    """Every check against one live ComfyUI (BackendUnavailable when it does not answer)."""
    modes = tuple(modes)
    report = DoctorReport(url=client.base_url, modes=modes)
    stats = await client.system_stats()
    report.server = {"system": stats.get("system") or {}, "devices": stats.get("devices") or []}
    version = str(report.server["system"].get("comfyui_version", ""))
    if version and version != PINNED_COMFYUI:
        report.notes.append(f"ComfyUI {version} is not the pinned {PINNED_COMFYUI}: the checks below still "
                            f"apply, and doctor --smoke tells whether the graphs run")
    if not any(d.get("type") == "cuda" for d in report.server["devices"]):
        report.notes.append("no CUDA device: fine for doctor --smoke with tiny weights, far too slow to render")
    object_info = await client.object_info()
    prompts = sample_prompts(config, modes)
    report.problems, counts = check_prompts(prompts, object_info)
    report.nodes, report.classes, report.model_files = counts["nodes"], counts["classes"], counts["model_files"]
    return report


# ---- one input ---------------------------------------------------------------------------

def _where(node_id: str, node: dict) -> str:
    title = (node.get("_meta") or {}).get("title")
    return f"node {node_id} ({node['class_type']}{', ' + title if title else ''})"


def _input_spec(info: dict) -> dict[str, list]:
    spec: dict[str, list] = {}
    for section in ("required", "optional"):
        for name, value in ((info.get("input") or {}).get(section) or {}).items():
            spec[name] = value if isinstance(value, list) else [value]
    return spec


def _choices(spec: list) -> list | None:
    """The allowed values of a COMBO input (old style: a list as the type; new: "COMBO" + options)."""
    kind = spec[0] if spec else None
    if isinstance(kind, list):
        return kind
    if kind == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return list(spec[1].get("options") or [])
    return None


def _check_value(cls: str, name: str, value: Any, spec: list, where: str) -> str | None:
    choices = _choices(spec)
    if choices is not None:
        if (cls, name) in FILE_INPUTS or value in choices:
            return None
        if (cls, name) in MODEL_INPUTS:
            folder = MODEL_INPUTS[(cls, name)]
            return (f"model file '{value}' is not installed: ComfyUI lists no such file in models/{folder} "
                    f"for {cls}.{name} ({_listing(choices)})")
        return f"{where}: '{name}' = {value!r} is not one of the server's choices ({_listing(choices)})"
    kind = spec[0] if spec else None
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "INT" and value != int(value)):
            return f"{where}: '{name}' = {value!r} is not an {kind}"
        if "min" in opts and value < opts["min"]:
            return f"{where}: '{name}' = {value!r} is below the server's minimum {opts['min']}"
        if "max" in opts and value > opts["max"]:
            return f"{where}: '{name}' = {value!r} is above the server's maximum {opts['max']}"
    elif kind == "BOOLEAN" and not isinstance(value, bool):
        return f"{where}: '{name}' = {value!r} is not a BOOLEAN"
    elif kind == "STRING" and not isinstance(value, str):
        return f"{where}: '{name}' = {value!r} is not a STRING"
    return None


def _check_link(value: list, spec: list, prompt: dict, object_info: dict, where: str, name: str) -> str | None:
    source_id, index = str(value[0]), value[1]
    source = prompt.get(source_id)
    if source is None:
        return f"{where}: '{name}' is linked to node {source_id}, which is not in the graph"
    info = object_info.get(source["class_type"])
    if not isinstance(info, dict):
        return None  # reported as a missing class
    outputs = info.get("output") or []
    if not isinstance(index, int) or not 0 <= index < len(outputs):
        return (f"{where}: '{name}' takes output {index} of {_where(source_id, source)}, which has "
                f"{len(outputs)} output(s) on this server")
    got, want = outputs[index], spec[0] if spec else None
    if not isinstance(want, str) or not isinstance(got, str) or _types_match(got, want):
        return None
    return f"{where}: '{name}' needs {want} but output {index} of {_where(source_id, source)} is {got} on this server"


def _types_match(got: str, want: str) -> bool:
    if "*" in (got, want) or got == want:
        return True
    return bool(set(got.split(",")) & set(want.split(",")))


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _listing(choices: list, shown: int = 6) -> str:
    if not choices:
        return "it lists none"
    head = ", ".join(repr(c) for c in choices[:shown])
    return f"allowed: {head}" + (f" and {len(choices) - shown} more" if len(choices) > shown else "")
