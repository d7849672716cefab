"""Per-window ComfyUI prompts from API-format templates with named binding points.

A template is a ComfyUI "API format" prompt (`{node_id: {"inputs", "class_type", "_meta"}}`)
whose binding points are nodes titled with a leading `@` (`_meta.title`), for example
`@reference` (LoadImage) or `@sampler` (WanVideoSampler). `load_template(mode)` reads the
shipped file `comfy_graphs/<mode>.json`, or `<override_dir>/<mode>.json` when an operator
dropped one there, and checks that every binding point the mode needs is present.
`Template.bind(values, models, sampler)` returns a fresh prompt for one window.

What `bind` does besides filling values:

- motion frames: the template has one `@tail` LoadImage feeding `@tail_encode`
  (WanVideoEncode). For M tail PNGs the binder adds M-1 more LoadImage nodes chained with
  VHS_MergeImages (batch order = file order). At a chain start (window 0, or the first
  window of a parallel chain) the "tail" is the reference image itself, one frame, as in
  InfiniteTalk's own loop: `@tail_encode` then reads the resized reference.
- vocal separation off: `@vocals_N` (MelBandRoFormerSampler) is bypassed.
- speaker masks off (or a single speaker): `@embeds.ref_target_masks` is disconnected.
- finally every node that `@output` does not depend on is dropped, so loose nodes of an
  operator's export and bypassed branches never reach ComfyUI.

Upload names (`upload_plan`) are the single source of truth shared with the backend: files
are uploaded with ComfyUI's `/upload/image` into subfolder `longtalk/<render_id>/w<k:05d>`
and referenced by loaders as `longtalk/<render_id>/w00003/tail_00.png` (ComfyUI resolves
such a value against its input folder). Uploads that are the same in every window of a
render (the I2V reference, the speaker masks) get one stable name per render instead,
`longtalk/<render_id>/shared/reference.png`: ComfyUI caches a node's outputs by its inputs
(a loader's by file name and content hash), so with a name that does not change the
reference's resize, CLIP-vision encode and I2V VAE encode come from its cache from the
second window on instead of being recomputed every window.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import GraphError
from ..inputs.job import RENDER_ID_RULE, is_render_id
from ..spec import RenderSpec
from .config import ModelFiles, SamplerSettings
from .modes import MODES, check_mode, mode_for

# The shipped graphs are data: the JSON files of the comfy_graphs folder beside this package
# (installed with it, pyproject's package-data), read as files and never imported.
GRAPHS_DIR = Path(__file__).resolve().parents[2] / "comfy_graphs"
UPLOAD_ROOT = "longtalk"
OUTPUT_CLASSES = ("SaveImage", "PreviewImage")

# binding points: title -> (what it binds, which modes need it)
LOADER_POINTS = ("@model", "@infinitetalk", "@lora", "@block_swap", "@vae", "@clip_vision",
                 "@prompt", "@wav2vec")
WINDOW_POINTS = ("@width", "@height", "@num_frames", "@reference", "@image_embeds", "@tail",
                 "@tail_encode", "@audio_1", "@embeds", "@sampler", "@output")
POINT_DOCS: dict[str, str] = {
    "@model": "WanVideoModelLoader: model, base_precision, quantization, attention_mode",
    "@infinitetalk": "MultiTalkModelLoader: model (InfiniteTalk Single or Multi file)",
    "@lora": "WanVideoLoraSelect: lora, strength",
    "@block_swap": "WanVideoBlockSwap: blocks_to_swap, prefetch_blocks",
    "@vae": "WanVideoVAELoader: model_name",
    "@clip_vision": "CLIPVisionLoader: clip_name",
    "@prompt": "WanVideoTextEncodeCached: model_name (text encoder), positive_prompt",
    "@wav2vec": "Wav2VecModelLoader: model (local file in models/wav2vec2)",
    "@vocal_model": "MelBandRoFormerModelLoader: model_name (vocal separation on)",
    "@width": "INTConstant: value = width",
    "@height": "INTConstant: value = height",
    "@num_frames": "INTConstant: value = W, frames per window",
    "@reference": "LoadImage: image = the window's reference upload",
    "@image_embeds": "WanVideoImageToVideoEncode: start_image is the reference fed to the model",
    "@tail": "LoadImage: image = first tail PNG (more are added and merged by the binder)",
    "@tail_encode": "WanVideoEncode: image = the tail batch (or the reference at a chain start)",
    "@audio_1": "LoadAudio: audio = speaker 1's window slice",
    "@audio_2": "LoadAudio: audio = speaker 2's window slice",
    "@vocals_1": "MelBandRoFormerSampler on @audio_1 (bypassed when vocal separation is off)",
    "@vocals_2": "MelBandRoFormerSampler on @audio_2 (bypassed when vocal separation is off)",
    "@mask_1": "LoadImage: image = speaker 1 mask PNG (mask = 1 - alpha)",
    "@mask_2": "LoadImage: image = speaker 2 mask PNG",
    "@mask_bg": "LoadImage: image = background mask PNG",
    "@embeds": "MultiTalkWav2VecEmbeds: fps, audio_scale, audio_cfg_scale, multi_audio_type",
    "@sampler": "WanVideoSampler: steps, cfg, shift, seed, scheduler, force_offload, start_step",
    "@source_video": "VHS_LoadVideo: video = the window's W source frames (MP4)",
    "@output": "SaveImage (or PreviewImage): filename_prefix; its images are the W frames",
}


def required_points(mode: str) -> tuple[str, ...]:
    """Binding points a template for `mode` must have."""
    check_mode(mode)
    points = LOADER_POINTS + WINDOW_POINTS
    if mode.endswith("_multi"):
        points += ("@audio_2",)
    if mode.startswith("v2v"):
        points += ("@source_video",)
    return points


def optional_points(mode: str) -> tuple[str, ...]:
    """Binding points needed only by a feature (vocal separation, speaker masks)."""
    check_mode(mode)
    points: tuple[str, ...] = ("@vocal_model", "@vocals_1")
    if mode.endswith("_multi"):
        points += ("@vocals_2", "@mask_1", "@mask_2", "@mask_bg")
    return points


class TemplateError(GraphError):
    """A graph template cannot be used: unreadable, not API format, or a binding point missing."""


# ---- names -----------------------------------------------------------------------------

def upload_subfolder(render_id: str, k: int) -> str:
    """ComfyUI input subfolder of window k's uploads: longtalk/<render_id>/w00003."""
    if not is_render_id(render_id):  # the render-id rule of the job contract
        raise ValueError(f"render_id must be {RENDER_ID_RULE}, got {render_id!r}")
    if k < 0:
        raise ValueError(f"window index must be >= 0, got {k}")
    return f"{UPLOAD_ROOT}/{render_id}/w{k:05d}"


def shared_subfolder(render_id: str) -> str:
    """ComfyUI input subfolder of the uploads every window of a render shares (stable names,
    so ComfyUI's cache serves the nodes that depend only on them)."""
    return f"{upload_subfolder(render_id, 0).rsplit('/', 1)[0]}/shared"


def upload_plan(render_id: str, k: int, spec: RenderSpec, *, chain_start: bool | None = None,
                speaker_masks: bool = True) -> dict[str, str]:
    """What the backend uploads for window k of a render and the loader value each upload gets.

    Keys: "reference", "tail_00".."tail_{M-1}" (none at a chain start: the reference is the
    tail), "audio_1" (+ "audio_2"), multi with masks: "mask_1", "mask_2", "mask_bg", V2V:
    "source_video". Values: "longtalk/<render_id>/w<k:05d>/<file>", except the uploads that
    do not change between windows (I2V's reference, the masks):
    "longtalk/<render_id>/shared/<file>"; `split_upload_name` gives the (subfolder,
    filename) pair for `/upload/image`.
    """
    mode, motion = mode_for(spec), spec.motion
    if motion < 1:
        raise ValueError(f"motion must be >= 1, got {motion}")
    base = upload_subfolder(render_id, k)
    shared = shared_subfolder(render_id)
    chain_start = (k == 0) if chain_start is None else chain_start
    # V2V's reference is the window's first source frame: it changes every window
    plan = {"reference": f"{base if mode.startswith('v2v') else shared}/reference.png"}
    if not chain_start:
        for i in range(motion):
            plan[f"tail_{i:02d}"] = f"{base}/tail_{i:02d}.png"
    plan["audio_1"] = f"{base}/audio_1.wav"
    if mode.endswith("_multi"):
        plan["audio_2"] = f"{base}/audio_2.wav"
        if speaker_masks:
            for name in ("mask_1", "mask_2", "mask_bg"):  # depend on the size only
                plan[name] = f"{shared}/{name}.png"
    if mode.startswith("v2v"):
        plan["source_video"] = f"{base}/source.mp4"
    return plan


def split_upload_name(name: str) -> tuple[str, str]:
    """"longtalk/r/w00003/tail_00.png" -> ("longtalk/r/w00003", "tail_00.png")."""
    subfolder, _, filename = name.rpartition("/")
    return subfolder, filename


def output_prefix(render_id: str, k: int) -> str:
    """SaveImage filename_prefix: frames land in output/longtalk/<id>/w<k>/frame_00001_.png..."""
    return f"{upload_subfolder(render_id, k)}/frame"


def speaker_masks(width: int, height: int, face_scale: float = 0.1) -> dict[str, np.ndarray]:
    """Default mask PNG contents (RGBA uint8) for "mask_1", "mask_2", "mask_bg".

    The same layout WanVideoWrapper's long-video loop builds when no masks are given:
    speaker 1 the left half, speaker 2 the right half, each inset by face_scale, background
    the rest. ComfyUI's LoadImage turns alpha into MASK = 1 - alpha, so the selected region
    is transparent (alpha 0) and everything else opaque.
    """
    selected = np.zeros((3, height, width), dtype=bool)
    half = width // 2
    top, bottom = int(height * face_scale), int(height * (1 - face_scale))
    left = (int(half * face_scale), int(half * (1 - face_scale)))
    right = (int(half * face_scale + half), int(half * (1 - face_scale) + half))
    selected[0, top:bottom, left[0]:left[1]] = True
    selected[1, top:bottom, right[0]:right[1]] = True
    selected[2] = ~(selected[0] | selected[1])
    out = {}
    for name, sel in zip(("mask_1", "mask_2", "mask_bg"), selected):
        rgba = np.zeros((height, width, 4), dtype=np.uint8)
        rgba[..., :3] = 255
        rgba[..., 3] = np.where(sel, 0, 255)
        out[name] = rgba
    return out


# ---- per-window values -----------------------------------------------------------------

@dataclass(frozen=True)
class WindowValues:
    """Window k of a render: its RenderSpec, whole, and the names its uploads get (as
    `upload_plan` gives them)."""

    render_id: str
    index: int  # window k
    spec: RenderSpec  # size, W, M, fps, prompt, seed (window k samples with spec.seed_for(k)), ...
    reference: str
    tails: tuple[str, ...]  # M tail PNG names; empty at a chain start (the reference is the tail)
    audio: tuple[str, ...]  # one per speaker
    source_video: str | None = None  # V2V
    masks: tuple[str, ...] = ()  # multi: mask_1, mask_2, mask_bg
    redo: int = 0  # the quality guard's re-render number: samples with spec.seed_for(index, redo)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tails", tuple(self.tails))
        object.__setattr__(self, "audio", tuple(self.audio))
        object.__setattr__(self, "masks", tuple(self.masks))
        if self.tails and len(self.tails) != self.spec.motion:
            raise ValueError(f"window {self.index}: {len(self.tails)} tail frames given, motion is {self.spec.motion}")
        if not self.audio:
            raise ValueError("at least one audio track is needed")
        if self.masks and len(self.masks) != 3:
            raise ValueError(f"masks must be (mask_1, mask_2, mask_bg), got {len(self.masks)} names")

    @property
    def chain_start(self) -> bool:
        return not self.tails

    @property
    def mode(self) -> str:
        return mode_for(self.spec)

    @classmethod
    def for_window(cls, render_id: str, k: int, spec: RenderSpec, *, chain_start: bool | None = None,
                   speaker_masks: bool = True, redo: int = 0) -> "WindowValues":
        """Values for window k (its re-render `redo`) with the upload names `upload_plan` assigns."""
        plan = upload_plan(render_id, k, spec, chain_start=chain_start, speaker_masks=speaker_masks)
        return cls(
            render_id=render_id, index=k, spec=spec,
            reference=plan["reference"],
            tails=tuple(v for key, v in plan.items() if key.startswith("tail_")),
            audio=tuple(plan[key] for key in ("audio_1", "audio_2") if key in plan),
            source_video=plan.get("source_video"),
            masks=tuple(plan[key] for key in ("mask_1", "mask_2", "mask_bg") if key in plan),
            redo=redo,
        )


# ---- templates ---------------------------------------------------------------------------

@dataclass
class Template:
    mode: str
    path: Path
    prompt: dict
    titles: dict[str, str] = field(default_factory=dict)  # binding point title -> node id

    @property
    def multi(self) -> bool:
        return self.mode.endswith("_multi")

    @property
    def v2v(self) -> bool:
        return self.mode.startswith("v2v")

    def node_id(self, title: str) -> str:
        try:
            return self.titles[title]
        except KeyError:
            raise TemplateError(f"{self.path}: no node titled {title!r} (binding point) in the "
                                f"{self.mode} graph") from None

    def has(self, title: str) -> bool:
        return title in self.titles

    def bind(self, values: WindowValues, models: ModelFiles, sampler: SamplerSettings) -> dict:
        """A fresh API-format prompt for one window (the template itself is never modified)."""
        if values.mode != self.mode:
            raise ValueError(f"window {values.index} is of a {values.mode} render: it cannot bind the {self.mode} graph")
        if self.multi and len(values.audio) < 2:
            raise ValueError(f"{self.mode} needs two audio tracks, got {len(values.audio)}")
        if not self.multi and len(values.audio) != 1:
            raise ValueError(f"{self.mode} takes one audio track, got {len(values.audio)}")
        if self.v2v and not values.source_video:
            raise ValueError(f"{self.mode} needs the window's source video")
        use_masks = self.multi and sampler.speaker_masks
        if use_masks and not values.masks:
            raise ValueError(f"{self.mode} with speaker masks needs the mask uploads (mask_1, mask_2, mask_bg)")

        prompt = copy.deepcopy(self.prompt)
        g = _Graph(prompt, self)

        # loaders: the same values in every window, so ComfyUI's cache keeps the models
        g.set("@model", model=models.diffusion_model, base_precision=sampler.base_precision,
              quantization=sampler.quantization, attention_mode=sampler.attention_mode)
        g.set("@infinitetalk", model=models.infinitetalk(self.multi))
        g.set("@lora", lora=models.lora, strength=sampler.lora_strength)
        g.set("@block_swap", blocks_to_swap=sampler.blocks_to_swap, prefetch_blocks=sampler.prefetch_blocks)
        g.set("@vae", model_name=models.vae)
        g.set("@clip_vision", clip_name=models.clip_vision)
        spec = values.spec
        g.set("@prompt", model_name=models.text_encoder, positive_prompt=spec.prompt)
        g.set("@wav2vec", model=models.wav2vec)

        # this window
        g.set("@width", value=spec.width)
        g.set("@height", value=spec.height)
        g.set("@num_frames", value=spec.window)
        g.set("@reference", image=values.reference)
        g.set("@audio_1", audio=values.audio[0])
        if self.multi:
            g.set("@audio_2", audio=values.audio[1])
        if self.v2v:
            g.set("@source_video", video=values.source_video)
        g.set("@embeds", fps=float(spec.fps),
              audio_scale=sampler.v2v_audio_scale if self.v2v else sampler.audio_scale,
              audio_cfg_scale=sampler.audio_cfg_scale, multi_audio_type=sampler.multi_audio_type)
        sampling = dict(cfg=sampler.cfg, shift=sampler.shift, seed=spec.seed_for(values.index, values.redo),
                        scheduler=sampler.scheduler, force_offload=spec.force_offload)
        if self.v2v:
            sampling.update(steps=sampler.v2v_steps, start_step=sampler.v2v_start_step)
        else:
            sampling.update(steps=sampler.steps, start_step=0)
        g.set("@sampler", **sampling)
        out_id = self.node_id("@output")
        if prompt[out_id]["class_type"] == "SaveImage":
            g.set("@output", filename_prefix=output_prefix(values.render_id, values.index))

        g.bind_tail(values)

        # features
        speakers = 2 if self.multi else 1
        if sampler.vocal_separation:
            g.set("@vocal_model", model_name=models.vocal_model)
            for n in range(1, speakers + 1):
                g.node("@vocals_" + str(n))  # must exist
        else:
            for n in range(1, speakers + 1):
                if self.has(f"@vocals_{n}"):
                    g.bypass(f"@vocals_{n}", through="audio")
        if use_masks:
            for title, name in zip(("@mask_1", "@mask_2", "@mask_bg"), values.masks):
                g.set(title, image=name)
            if not _is_link(prompt[self.node_id("@embeds")]["inputs"].get("ref_target_masks")):
                raise TemplateError(f"{self.path}: @embeds.ref_target_masks must be linked to the speaker "
                                    "masks (or set LONGTALK_COMFY_SPEAKER_MASKS=false)")
        else:
            prompt[self.node_id("@embeds")]["inputs"].pop("ref_target_masks", None)

        g.prune(out_id)
        return prompt


class _Graph:
    """Edits on one deep-copied prompt."""

    def __init__(self, prompt: dict, template: Template) -> None:
        self.prompt = prompt
        self.t = template

    def node(self, title: str) -> dict:
        return self.prompt[self.t.node_id(title)]

    def set(self, title: str, **inputs) -> None:
        node = self.node(title)
        for name, value in inputs.items():
            if _is_link(node["inputs"].get(name)):
                raise TemplateError(f"{self.t.path}: {title}.{name} is linked to another node; the binder "
                                    "sets it as a value, so make it a widget in the editor")
            node["inputs"][name] = value

    def relink(self, old: list, new: list) -> None:
        """Point every input that reads `old` ([node_id, output]) at `new`."""
        for node in self.prompt.values():
            for name, value in node["inputs"].items():
                if _is_link(value) and str(value[0]) == str(old[0]) and value[1] == old[1]:
                    node["inputs"][name] = list(new)

    def bypass(self, title: str, through: str) -> None:
        node_id = self.t.node_id(title)
        source = self.prompt[node_id]["inputs"].get(through)
        if not _is_link(source):
            raise TemplateError(f"{self.t.path}: {title}.{through} must be a link to bypass {title}")
        self.relink([node_id, 0], source)

    def bind_tail(self, values: WindowValues) -> None:
        encode = self.node("@tail_encode")
        tail_id = self.t.node_id("@tail")
        if not _is_link(encode["inputs"].get("image")) or str(encode["inputs"]["image"][0]) != tail_id:
            raise TemplateError(f"{self.t.path}: @tail_encode.image must be linked to @tail (output 0)")
        if values.chain_start:
            start = self.node("@image_embeds")["inputs"].get("start_image")
            if not _is_link(start):
                raise TemplateError(f"{self.t.path}: @image_embeds.start_image must be linked to the reference")
            encode["inputs"]["image"] = list(start)
            return
        self.set("@tail", image=values.tails[0])
        last = [tail_id, 0]
        next_id = _next_numeric_id(self.prompt)
        merge_widgets = dict(merge_strategy="match A", scale_method="nearest-exact", crop="disabled")
        for i, name in enumerate(values.tails[1:], start=1):
            load_id, merge_id = str(next_id), str(next_id + 1)
            next_id += 2
            self.prompt[load_id] = {"inputs": {"image": name}, "class_type": "LoadImage",
                                    "_meta": {"title": f"Tail frame {i}"}}
            self.prompt[merge_id] = {"inputs": {"images_A": last, "images_B": [load_id, 0], **merge_widgets},
                                     "class_type": "VHS_MergeImages",
                                     "_meta": {"title": f"Tail frames 0..{i}"}}
            last = [merge_id, 0]
        encode["inputs"]["image"] = last

    def prune(self, output_id: str) -> None:
        keep: set[str] = set()
        stack = [output_id]
        while stack:
            nid = stack.pop()
            if nid in keep:
                continue
            if nid not in self.prompt:
                raise TemplateError(f"{self.t.path}: a link points at node {nid!r}, which does not exist")
            keep.add(nid)
            for value in self.prompt[nid]["inputs"].values():
                if _is_link(value):
                    stack.append(str(value[0]))
        for nid in [n for n in self.prompt if n not in keep]:
            del self.prompt[nid]


def _is_link(value) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int) and not isinstance(value[1], bool))


def _next_numeric_id(prompt: dict) -> int:
    numbers = [int(n) for n in prompt if str(n).isdigit()]
    return max(numbers, default=0) + 1


def template_path(mode: str, override_dir: Path | None = None) -> Path:
    """The file `load_template` would read for `mode`."""
    check_mode(mode)
    if override_dir is not None:
        candidate = Path(override_dir) / f"{mode}.json"
        if candidate.is_file():
            return candidate
    return GRAPHS_DIR / f"{mode}.json"


def load_template(mode: str, override_dir: Path | None = None) -> Template:
    """The template for `mode`: `<override_dir>/<mode>.json` when present, else the shipped one."""
    path = template_path(mode, override_dir)
    return parse_template(mode, path)


def parse_template(mode: str, path: Path, text: str | None = None) -> Template:
    check_mode(mode)
    try:
        raw = Path(path).read_text(encoding="utf-8-sig") if text is None else text
    except OSError as exc:
        raise TemplateError(f"{path}: cannot read the {mode} graph ({exc.strerror or exc})") from None
    try:
        prompt = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise TemplateError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(prompt, dict) and "prompt" in prompt and isinstance(prompt["prompt"], dict) and "nodes" not in prompt:
        prompt = prompt["prompt"]  # a saved /prompt request body
    if not isinstance(prompt, dict) or "nodes" in prompt or "links" in prompt:
        raise TemplateError(f"{path}: not an API-format graph; in the ComfyUI editor use "
                            "Workflow > Export (API), not Save/Export")
    titles: dict[str, str] = {}
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) \
                or not isinstance(node.get("inputs"), dict):
            raise TemplateError(f"{path}: node {node_id!r} is not an API-format node "
                                "({\"inputs\": {...}, \"class_type\": ...})")
        title = (node.get("_meta") or {}).get("title", "")
        if isinstance(title, str) and title.startswith("@"):
            title = title.strip()
            if title in titles:
                raise TemplateError(f"{path}: two nodes are titled {title!r} ({titles[title]} and {node_id}); "
                                    "binding point titles must be unique")
            titles[title] = str(node_id)
    missing = [t for t in required_points(mode) if t not in titles]
    if missing:
        raise TemplateError(f"{path}: the {mode} graph has no node titled "
                            f"{', '.join(repr(t) for t in missing)} (binding point"
                            f"{'s' if len(missing) > 1 else ''}); set the node title(s) in the editor")
    out = prompt[titles["@output"]]["class_type"]
    if out not in OUTPUT_CLASSES:
        raise TemplateError(f"{path}: @output must be a {' or '.join(OUTPUT_CLASSES)} node, got {out}")
    return Template(mode=mode, path=Path(path), prompt=prompt, titles=titles)


def output_node_id(prompt: dict) -> str:
    """Id of the node whose `images` output are the window's frames (titled `@output`)."""
    found = [nid for nid, n in prompt.items() if (n.get("_meta") or {}).get("title", "").strip() == "@output"]
    if len(found) == 1:
        return str(found[0])
    if not found:
        savers = [nid for nid, n in prompt.items() if n.get("class_type") in OUTPUT_CLASSES]
        if len(savers) == 1:
            return str(savers[0])
    raise TemplateError(f"the prompt needs exactly one output node titled '@output', found {len(found)}")


def check_templates(override_dir: Path | None = None, modes: Iterable[str] = MODES) -> dict[str, str | None]:
    """mode -> None when its template loads, else the error text."""
    result: dict[str, str | None] = {}
    for mode in modes:
        try:
            load_template(mode, override_dir)
            result[mode] = None
        except TemplateError as exc:
            result[mode] = str(exc)
    return result
