"""Node classes of the stand-in: what each ComfyUI class does, without a GPU or weights.

The executor (server.py) runs a validated prompt node by node in dependency order and
calls `run_node`, which resolves the node's inputs (links -> the upstream node's outputs,
missing optional inputs -> the schema default) and calls the handler for its class. The
values that flow along links are plain Python objects:

- IMAGE: uint8 RGB array (N, H, W, 3); MASK: None;
- AUDIO: {"waveform": float32 mono 16 kHz samples, "sample_rate": 16000};
- LATENT: {"frames": IMAGE} (the "VAE" is the identity: WanVideoEncode keeps the frames);
- image embeds: a dict with width, height, num_frames, the start image, the CLIP-vision
  image and the extra latents (tail frames) added by WanVideoAddExtraLatent;
- multitalk embeds: the 16 kHz tracks per speaker, fps and the frame count;
- model loaders, LoRA/block-swap settings, text encoders: small token dicts.

WanVideoSampler turns that into a `WindowJob` and renders it with
`longtalk.backends.preview.render_preview`:

- reference = the image that feeds the CLIP-vision encode (else the embeds' start image),
  fitted to the embeds' width x height (cover + centre crop);
- tail = the frames of the extra latents (WanVideoEncode -> WanVideoAddExtraLatent),
  M = their count; without extra latents the reference repeated (motion_frame times for
  the MultiTalk long-video embeds, once otherwise) with chain_start=True;
- num_frames = the I2V encode's num_frames, or the multitalk embeds' (audio-clipped) frame
  count for WanVideoImageToVideoMultiTalk;
- audio = the tracks of MultiTalkWav2VecEmbeds (audio_1, audio_2), cut or zero-padded to
  num_frames * 16000/fps samples; loudness normalisation and audio_scale are not applied,
  so the frames equal render_preview of the same window;
- V2V source = the frames of the `samples` latent (a VHS_LoadVideo -> WanVideoEncode),
  resized to the window and padded with the last frame;
- fps = the embeds' fps, moved to the nearest divisor of 16000 when it is not one (30 ->
  32), frame_start = 0, seed = the sampler's seed.

A class without a handler passes its first input of each output's type through (IMAGE,
AUDIO, LATENT), or yields a token.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import av
import cv2
import numpy as np

from longtalk.backends.base import WindowJob
from longtalk.spec import RenderSpec
from longtalk.windows import MODEL_SAMPLE_RATE

from .validation import MODEL_LIST_INPUTS, resolve_input_path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


class InterruptProcessingException(Exception):
    """comfy.model_management.InterruptProcessingException"""


InterruptProcessingException.__module__ = "comfy.model_management"


class OutOfMemoryError(RuntimeError):
    """torch.OutOfMemoryError (what torch.cuda.OutOfMemoryError is)"""


OutOfMemoryError.__module__ = "torch"


@dataclass
class Run:
    """One prompt's execution context, shared by its node handlers (they run in a thread)."""

    prompt_id: str
    prompt: dict
    schema: dict
    input_dir: Path
    output_dir: Path
    temp_dir: Path
    installed_models: dict[str, tuple[str, ...]]
    interrupt: threading.Event
    abort: threading.Event  # set on a stand-in "restart": stop without reporting anything
    progress: Callable[[str, int, int], None] = lambda node, value, total: None
    preview: Callable[[np.ndarray], None] = lambda frame: None
    on_sampling: Callable[[], None] = lambda: None  # each sampler step (drop_ws fault)
    faults: dict = field(default_factory=dict)  # one-shot faults taken for this prompt
    delay_s: float = 0.0
    step_s: float = 0.005

    def check_interrupt(self) -> None:
        if self.abort.is_set() or self.interrupt.is_set():
            raise InterruptProcessingException("Processing interrupted")

    def sleep(self, seconds: float) -> None:
        if seconds > 0 and self.interrupt.wait(seconds):
            self.check_interrupt()
        self.check_interrupt()


# ---------------------------------------------------------------------------- inputs


def _default(class_info: dict, name: str) -> Any:
    for section in ("required", "optional"):
        spec = (class_info.get("input", {}).get(section) or {}).get(name)
        if spec is not None:
            extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if "default" in extra:
                return extra["default"]
            if isinstance(spec[0], list) and spec[0]:
                return spec[0][0]
            return None
    return None


class Inputs(dict):
    """A node's resolved inputs; missing ones fall back to the schema default."""

    def __init__(self, values: dict, class_info: dict) -> None:
        super().__init__(values)
        self.class_info = class_info

    def __missing__(self, key: str) -> Any:
        return _default(self.class_info, key)

    def typed(self, type_name: str) -> list[Any]:
        out = []
        for section in ("required", "optional"):
            for name, spec in (self.class_info.get("input", {}).get(section) or {}).items():
                if spec[0] == type_name and dict.get(self, name) is not None:
                    out.append(dict.get(self, name))
        return out


def resolve_inputs(run: Run, node_id: str, outputs: dict[str, tuple]) -> Inputs:
    node = run.prompt[node_id]
    values = {}
    for name, value in node["inputs"].items():
        if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
            upstream = outputs.get(value[0])
            values[name] = None if upstream is None or value[1] >= len(upstream) else upstream[value[1]]
        else:
            values[name] = value
    return Inputs(values, run.schema[node["class_type"]])


# ---------------------------------------------------------------------------- helpers


def _read_image(path: Path) -> np.ndarray:
    data = np.fromfile(str(path), np.uint8)
    arr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if arr is None:
        raise ValueError(f"cannot identify image file '{path.name}'")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def _resize(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    if frames.shape[1] == height and frames.shape[2] == width:
        return frames
    interp = cv2.INTER_AREA if width * height < frames.shape[1] * frames.shape[2] else cv2.INTER_LANCZOS4
    return np.stack([cv2.resize(f, (width, height), interpolation=interp) for f in frames])


def _cover_crop(frames: np.ndarray, width: int, height: int, position: str = "center") -> np.ndarray:
    h, w = frames.shape[1:3]
    scale = max(width / w, height / h)
    nw, nh = max(width, round(w * scale)), max(height, round(h * scale))
    resized = _resize(frames, nw, nh)
    x0, y0 = (nw - width) // 2, (nh - height) // 2
    if position == "top":
        y0 = 0
    elif position == "bottom":
        y0 = nh - height
    elif position == "left":
        x0 = 0
    elif position == "right":
        x0 = nw - width
    return np.ascontiguousarray(resized[:, y0 : y0 + height, x0 : x0 + width])


def _fit_pad(frames: np.ndarray, width: int, height: int, color=(0, 0, 0)) -> np.ndarray:
    h, w = frames.shape[1:3]
    scale = min(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = _resize(frames, nw, nh)
    out = np.empty((frames.shape[0], height, width, 3), np.uint8)
    out[:] = np.array(color, np.uint8)
    x0, y0 = (width - nw) // 2, (height - nh) // 2
    out[:, y0 : y0 + nh, x0 : x0 + nw] = resized
    return out


def _need_images(value: Any, what: str) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.ndim != 4:
        raise ValueError(f"{what}: expected an IMAGE batch, got {type(value).__name__}")
    return value


def _batch_to_size(frames: list[np.ndarray]) -> np.ndarray:
    h, w = frames[0].shape[:2]
    return np.stack([f if f.shape[:2] == (h, w) else cv2.resize(f, (w, h)) for f in frames])


def _valid_fps(fps: float) -> int:
    target = max(1, int(round(fps)))
    if MODEL_SAMPLE_RATE % target == 0:
        return target
    divisors = [d for d in range(1, 241) if MODEL_SAMPLE_RATE % d == 0]
    return min(divisors, key=lambda d: (abs(d - fps), -d))


def _fit_samples(track: np.ndarray, count: int) -> np.ndarray:
    track = np.asarray(track, np.float32).reshape(-1)
    if track.size >= count:
        return np.ascontiguousarray(track[:count])
    return np.concatenate([track, np.zeros(count - track.size, np.float32)])


def _save_image_path(prefix: str, base: Path) -> tuple[Path, str, int, str]:
    """folder_paths.get_save_image_path: (folder, file prefix, next counter, subfolder)."""
    norm = os.path.normpath(prefix)
    subfolder = os.path.dirname(norm)
    filename = os.path.basename(norm)
    folder = (base / subfolder).resolve()
    if os.path.commonpath((str(base.resolve()), str(folder))) != str(base.resolve()):
        raise Exception("**** ERROR: Saving image outside the output folder is not allowed."
                        f"\n full_output_folder: {folder}\n output_dir: {base}")
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True)
        names = []
    counter = 0
    pattern = re.compile(re.escape(filename) + r"_(\d+)_")
    for name in names:
        m = pattern.match(name)
        if m:
            counter = max(counter, int(m.group(1)))
    return folder, filename, counter + 1, subfolder


def _vhs_counter(folder: Path, filename: str) -> int:
    """VHS: one more than the highest `{filename}_{counter:05}` already in the folder."""
    highest = 0
    pattern = re.compile(re.escape(filename) + r"_(\d+)\D*\..+")
    for name in os.listdir(folder):
        m = pattern.fullmatch(name)
        if m:
            highest = max(highest, int(m.group(1)))
    return highest + 1


def _write_png(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    path.write_bytes(buf.tobytes())


def _write_mp4(path: Path, frames: np.ndarray, fps: float, audio: dict | None, crf: int,
               trim_to_audio: bool) -> None:
    rate = Fraction(fps).limit_denominator(1001)
    n = frames.shape[0]
    if audio is not None and trim_to_audio:
        seconds = len(audio["waveform"]) / audio["sample_rate"]
        n = max(1, min(n, int(round(seconds * float(rate)))))
    with av.open(str(path), "w", format="mp4") as out:
        v = out.add_stream("libx264", rate=rate)
        v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        v.options = {"crf": str(crf), "preset": "veryfast"}
        a = None
        if audio is not None:
            a = out.add_stream("aac", rate=int(audio["sample_rate"]))
            a.layout = "mono"
        for i in range(n):
            for packet in v.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")):
                out.mux(packet)
        for packet in v.encode():
            out.mux(packet)
        if a is not None:
            sr = int(audio["sample_rate"])
            samples = _fit_samples(audio["waveform"], int(round(n / float(rate) * sr)))
            chunk = 1024
            for start in range(0, samples.size, chunk):
                block = samples[start : start + chunk].reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="mono")
                frame.sample_rate = sr
                for packet in a.encode(frame):
                    out.mux(packet)
            for packet in a.encode():
                out.mux(packet)


def _read_video(path: Path, force_rate: float, skip: int, nth: int, cap: int) -> tuple[np.ndarray, dict]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    if not decoded:
        raise RuntimeError("No frames generated")
    total = len(decoded)
    src_h, src_w = decoded[0].shape[:2]
    if force_rate and force_rate > 0 and abs(force_rate - fps) > 1e-6:
        count = int(total / fps * force_rate)
        decoded = [decoded[min(total - 1, int(round(i * fps / force_rate)))] for i in range(count)]
        rate = float(force_rate)
    else:
        rate = fps
    frames = decoded[skip::nth]
    if cap:
        frames = frames[:cap]
    if not frames:
        raise RuntimeError("No frames generated")
    info = {"source_fps": fps, "source_frame_count": total, "source_duration": total / fps,
            "source_width": src_w, "source_height": src_h, "loaded_fps": rate / nth}
    return np.stack(frames), info


def _decode_audio(path: Path) -> np.ndarray | None:
    from longtalk.av_io import decode_audio_16k
    from longtalk.errors import InputError

    try:
        return decode_audio_16k(path, "audio")
    except InputError as exc:
        raise RuntimeError(f"Failed to load audio {path.name}: {exc.reason}") from None


# ---------------------------------------------------------------------------- handlers

Handler = Callable[[Run, str, Inputs], tuple]
HANDLERS: dict[str, Handler] = {}


def handles(*names: str):
    def register(fn: Handler) -> Handler:
        for name in names:
            HANDLERS[name] = fn
        return fn

    return register


@handles("INTConstant", "FloatConstant", "BOOLConstant", "PrimitiveInt", "PrimitiveFloat", "PrimitiveString",
         "PrimitiveStringMultiline", "PrimitiveBoolean")
def _constant(run: Run, node_id: str, i: Inputs) -> tuple:
    return (i["value"],)


@handles("StringConstant")
def _string_constant(run, node_id, i):
    return (i["string"],)


@handles("StringConstantMultiline")
def _string_multiline(run, node_id, i):
    text = i["string"]
    if i["strip_newlines"]:
        text = text.replace("\n", "")
    return (text,)


def _model_loader(run: Run, node_id: str, i: Inputs) -> tuple:
    class_type = run.prompt[node_id]["class_type"]
    for (cls, name), (folders, fixed) in MODEL_LIST_INPUTS.items():
        if cls != class_type or name not in i:
            continue
        value = i[name]
        if value in fixed:
            continue
        fault = run.faults.get("missing_model")
        hit = fault is True or fault == class_type
        if hit:
            run.faults.pop("missing_model", None)
        if hit or not any(value in run.installed_models.get(f, ()) for f in folders):
            # folder_paths.get_full_path_or_raise
            raise FileNotFoundError(f"Model in folder '{folders[0]}' with filename '{value}' not found.")
    run.sleep(0)
    return (_token(run, node_id, i),) * max(1, len(run.schema[class_type]["output"]))


for (_cls, _name) in MODEL_LIST_INPUTS:
    HANDLERS.setdefault(_cls, _model_loader)


def _token(run: Run, node_id: str, i: Inputs) -> dict:
    return {"class_type": run.prompt[node_id]["class_type"], "node": node_id,
            "widgets": {k: v for k, v in i.items() if isinstance(v, (int, float, str, bool))}}


@handles("WanVideoTextEncodeCached")
def _text_cached(run, node_id, i):
    _model_loader(run, node_id, i)
    pos = {"prompt": i["positive_prompt"], "negative": i["negative_prompt"]}
    return (pos, {"prompt": i["negative_prompt"]}, i["positive_prompt"])


@handles("WanVideoTextEncode", "WanVideoTextEncodeSingle")
def _text(run, node_id, i):
    return ({"prompt": i["positive_prompt"], "negative": i["negative_prompt"]},)


@handles("LoadImage")
def _load_image(run, node_id, i):
    path = resolve_input_path(i["image"], run.input_dir, run.output_dir, run.temp_dir)
    if path is None or not path.is_file():
        raise FileNotFoundError(f"[Errno 2] No such file or directory: '{path}'")
    rgb = _read_image(path)
    return (rgb[None], None)


@handles("VHS_LoadImagesPath")
def _load_images_path(run, node_id, i):
    directory = Path(i["directory"].strip().strip('"'))
    if not directory.is_absolute():
        directory = run.input_dir / directory
    if not directory.is_dir():
        raise Exception(f"directory is not valid: {i['directory']}")
    names = sorted(n for n in os.listdir(directory) if n.lower().endswith(IMAGE_EXTENSIONS))
    names = names[int(i["skip_first_images"] or 0) :: int(i["select_every_nth"] or 1)]
    cap = int(i["image_load_cap"] or 0)
    if cap:
        names = names[:cap]
    if not names:
        raise FileNotFoundError(f"No files in directory '{directory}'.")
    frames = _batch_to_size([_read_image(directory / n) for n in names])
    return (frames, None, len(frames))


@handles("VHS_LoadVideo", "VHS_LoadVideoFFmpeg", "VHS_LoadVideoPath")
def _load_video(run, node_id, i):
    path = resolve_input_path(i["video"], run.input_dir, run.output_dir, run.temp_dir)
    if path is None or not path.is_file():
        raise Exception(f"video is not a valid path: {i['video']}")
    frames, info = _read_video(path, float(i["force_rate"] or 0), int(i["skip_first_frames"] or 0),
                               max(1, int(i["select_every_nth"] or 1)), int(i["frame_load_cap"] or 0))
    fmt = (run.schema[run.prompt[node_id]["class_type"]]["input"].get("optional", {}).get("format") or
           [None, {}])[1].get("formats", {}).get(i["format"] or "None", {})
    div = (fmt.get("dim") or [1])[0]  # a format preset's size multiple ("Wan": 8); "None": keep the size
    h, w = frames.shape[1:3]
    cw, ch = int(i["custom_width"] or 0), int(i["custom_height"] or 0)
    if cw and ch:
        tw, th = cw, ch
    elif cw:
        tw, th = cw, round(h * cw / w)
    elif ch:
        tw, th = round(w * ch / h), ch
    else:
        tw, th = w, h
    tw, th = max(div, tw // div * div), max(div, th // div * div)
    if (tw, th) != (w, h):
        frames = _cover_crop(frames, tw, th)
    step = fmt.get("frames")
    if step and frames.shape[0] > step[1]:
        keep = (frames.shape[0] - step[1]) // step[0] * step[0] + step[1]
        frames = frames[:keep]
    info.update({"loaded_frame_count": frames.shape[0], "loaded_duration": frames.shape[0] / info["loaded_fps"],
                 "loaded_width": tw, "loaded_height": th})
    audio = None
    try:
        with av.open(str(path)) as c:
            has_audio = bool(c.streams.audio)
        if has_audio:
            audio = {"waveform": _decode_audio(path), "sample_rate": MODEL_SAMPLE_RATE}
    except av.error.FFmpegError:
        audio = None
    return (frames, frames.shape[0], audio, info)


@handles("VHS_VideoInfo", "VHS_VideoInfoSource", "VHS_VideoInfoLoaded")
def _video_info(run, node_id, i):
    info = i["video_info"] or {}
    keys = ["source_fps", "source_frame_count", "source_duration", "source_width", "source_height",
            "loaded_fps", "loaded_frame_count", "loaded_duration", "loaded_width", "loaded_height"]
    cls = run.prompt[node_id]["class_type"]
    if cls == "VHS_VideoInfoSource":
        keys = keys[:5]
    elif cls == "VHS_VideoInfoLoaded":
        keys = keys[5:]
    return tuple(info.get(k) for k in keys)


@handles("VHS_MergeImages")
def _merge_images(run, node_id, i):
    a, b = _need_images(i["images_A"], "images_A"), _need_images(i["images_B"], "images_B")
    strategy = i["merge_strategy"]
    area_a, area_b = a.shape[1] * a.shape[2], b.shape[1] * b.shape[2]
    use_a = strategy == "match A" or (strategy == "match smaller" and area_a <= area_b) or (
        strategy == "match larger" and area_a >= area_b)
    h, w = (a.shape[1:3]) if use_a else (b.shape[1:3])
    crop = i["crop"] == "center"
    fit = (lambda x: _cover_crop(x, w, h)) if crop else (lambda x: _resize(x, w, h))
    merged = np.concatenate([fit(a), fit(b)])
    return (merged, merged.shape[0])


@handles("VHS_SplitImages")
def _split_images(run, node_id, i):
    images = _need_images(i["images"], "images")
    k = int(i["split_index"])
    return (images[:k], min(k, len(images)), images[k:], max(0, len(images) - k))


@handles("ImageResizeKJv2")
def _resize_kj_v2(run, node_id, i):
    images = _need_images(i["image"], "image")
    h, w = images.shape[1:3]
    tw, th = int(i["width"] or 0), int(i["height"] or 0)
    mode = i["keep_proportion"] or "stretch"
    if tw == 0 and th == 0:
        tw, th = w, h
    elif tw == 0:
        tw = max(1, round(w * th / h))
    elif th == 0:
        th = max(1, round(h * tw / w))
    if mode == "resize":
        scale = min(tw / w, th / h)
        tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    div = int(i["divisible_by"] or 0)
    if div > 1:
        tw, th = max(div, tw - tw % div), max(div, th - th % div)
    if mode == "crop":
        out = _cover_crop(images, tw, th, i["crop_position"] or "center")
    elif mode.startswith("pad") or mode == "pillarbox_blur":
        color = tuple(int(c) for c in re.findall(r"\d+", str(i["pad_color"] or "0,0,0"))[:3]) or (0, 0, 0)
        out = _fit_pad(images, tw, th, color if len(color) == 3 else (0, 0, 0))
    else:
        out = _resize(images, tw, th)
    return (out, out.shape[2], out.shape[1], None)


@handles("ImageResizeKJ")
def _resize_kj(run, node_id, i):
    images = _need_images(i["image"], "image")
    h, w = images.shape[1:3]
    ref = i["get_image_size"]
    tw, th = (ref.shape[2], ref.shape[1]) if isinstance(ref, np.ndarray) else (int(i["width"]), int(i["height"]))
    if i["keep_proportion"]:
        scale = min((tw or w) / w, (th or h) / h)
        tw, th = round(w * scale), round(h * scale)
    div = int(i["divisible_by"] or 0)
    if div > 1:
        tw, th = max(div, tw - tw % div), max(div, th - th % div)
    out = _cover_crop(images, tw, th) if i["crop"] == "center" else _resize(images, tw, th)
    return (out, out.shape[2], out.shape[1])


@handles("ImageScale")
def _image_scale(run, node_id, i):
    images = _need_images(i["image"], "image")
    h, w = images.shape[1:3]
    tw, th = int(i["width"]), int(i["height"])
    if tw == 0 and th == 0:
        return (images,)
    if tw == 0:
        tw = max(1, round(w * th / h))
    if th == 0:
        th = max(1, round(h * tw / w))
    return (_cover_crop(images, tw, th) if i["crop"] == "center" else _resize(images, tw, th),)


@handles("ImageScaleBy")
def _image_scale_by(run, node_id, i):
    images = _need_images(i["image"], "image")
    s = float(i["scale_by"])
    return (_resize(images, max(1, round(images.shape[2] * s)), max(1, round(images.shape[1] * s))),)


@handles("GetImageSizeAndCount")
def _size_and_count(run, node_id, i):
    images = _need_images(i["image"], "image")
    return (images, images.shape[2], images.shape[1], images.shape[0])


@handles("GetImageSize")
def _size(run, node_id, i):
    images = _need_images(i["image"], "image")
    return (images.shape[2], images.shape[1], images.shape[0])


@handles("GetImageRangeFromBatch")
def _range(run, node_id, i):
    images = i["images"]
    num = int(i["num_frames"])
    start = int(i["start_index"])
    if images is None:
        return (None, None)
    if start == -1:
        start = max(0, len(images) - num)
    if start >= len(images):
        raise ValueError("Start index is out of range")
    return (images[start : start + num], None)


@handles("ImageFromBatch")
def _from_batch(run, node_id, i):
    images = _need_images(i["image"], "image")
    start = min(int(i["batch_index"]), len(images) - 1)
    return (images[start : start + int(i["length"])],)


@handles("RepeatImageBatch")
def _repeat(run, node_id, i):
    images = _need_images(i["image"], "image")
    return (np.concatenate([images] * int(i["amount"])),)


@handles("LoadAudio")
def _load_audio(run, node_id, i):
    path = resolve_input_path(i["audio"], run.input_dir, run.output_dir, run.temp_dir)
    if path is None or not path.is_file():
        raise FileNotFoundError(f"[Errno 2] No such file or directory: '{path}'")
    return ({"waveform": _decode_audio(path), "sample_rate": MODEL_SAMPLE_RATE},)


@handles("MelBandRoFormerSampler")
def _separate(run, node_id, i):
    audio = i["audio"]
    if audio is None:
        raise ValueError("audio is required")
    run.sleep(0)
    silent = {"waveform": np.zeros_like(audio["waveform"]), "sample_rate": audio["sample_rate"]}
    return (audio, silent)  # vocals = the input (the stand-in does not separate), instruments = silence


@handles("MultiTalkWav2VecEmbeds")
def _wav2vec_embeds(run, node_id, i):
    tracks = [i[f"audio_{k}"] for k in (1, 2, 3, 4) if i[f"audio_{k}"] is not None]
    if not tracks:
        raise ValueError("audio_1 is required")
    fps = float(i["fps"])
    waves = [np.asarray(t["waveform"], np.float32).reshape(-1) for t in tracks]
    if i["multi_audio_type"] == "add" and len(waves) > 1:  # speakers one after the other
        total = sum(w.size for w in waves)
        placed, at = [], 0
        for w in waves:
            buf = np.zeros(total, np.float32)
            buf[at : at + w.size] = w
            placed.append(buf)
            at += w.size
        waves = placed
    longest = max(w.size for w in waves)
    audio_frames = max(1, int(np.ceil(longest / MODEL_SAMPLE_RATE * fps)))
    frames = max(1, min(int(i["num_frames"]), audio_frames))
    mixed = np.zeros(longest, np.float32)
    for w in waves:
        mixed[: w.size] += w
    embeds = {"tracks": waves, "fps": fps, "num_frames": frames}
    return (embeds, {"waveform": mixed, "sample_rate": MODEL_SAMPLE_RATE}, frames)


@handles("WanVideoClipVisionEncode")
def _clip_encode(run, node_id, i):
    image = _need_images(i["image_1"], "image_1")
    return ({"image": image},)


@handles("WanVideoImageToVideoEncode")
def _i2v_encode(run, node_id, i):
    start = i["start_image"]
    clip = i["clip_embeds"]
    extras = [] if i["extra_latents"] is None else [{"frames": i["extra_latents"]["frames"], "index": 0}]
    return ({"kind": "i2v", "width": int(i["width"]), "height": int(i["height"]),
             "num_frames": int(i["num_frames"]), "start_image": start,
             "clip_image": None if clip is None else clip["image"], "extra_latents": extras},)


@handles("WanVideoImageToVideoMultiTalk")
def _multitalk_i2v(run, node_id, i):
    clip = i["clip_embeds"]
    return ({"kind": "multitalk", "width": int(i["width"]), "height": int(i["height"]),
             "frame_window_size": int(i["frame_window_size"]), "motion_frame": int(i["motion_frame"]),
             "start_image": i["start_image"], "clip_image": None if clip is None else clip["image"],
             "extra_latents": []}, i["output_path"] or "")


@handles("WanVideoAddExtraLatent")
def _add_extra(run, node_id, i):
    embeds = dict(i["embeds"])
    latent = i["extra_latents"]
    if latent is None:
        raise ValueError("extra_latents is required")
    embeds["extra_latents"] = list(embeds.get("extra_latents", [])) + [
        {"frames": latent["frames"], "index": int(i["latent_index"])}]
    return (embeds,)


@handles("WanVideoEncode")
def _encode(run, node_id, i):
    run.sleep(0)
    return ({"frames": _need_images(i["image"], "image")},)


@handles("WanVideoDecode")
def _decode(run, node_id, i):
    latent = i["samples"]
    if latent is None:
        raise ValueError("samples is required")
    run.sleep(0)
    return (latent["frames"],)


@handles("WanVideoSampler")
def _sampler(run: Run, node_id: str, i: Inputs) -> tuple:
    from longtalk.backends.preview import render_preview

    embeds = i["image_embeds"]
    talk = i["multitalk_embeds"]
    if not isinstance(embeds, dict):
        raise ValueError("image_embeds is required")
    steps = int(i["steps"])
    start_step, end_step = int(i["start_step"] or 0), int(i["end_step"] if i["end_step"] is not None else -1)
    total = max(1, (steps if end_step == -1 else min(steps, end_step)) - start_step)

    job = build_window_job(run, node_id, i, embeds, talk)

    # the fault that hits "the sampler"
    if run.faults.pop("oom", None):
        raise OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of 79.19 GiB of "
            "which 1.12 GiB is free. Including non-PyTorch memory, this process has 78.06 GiB memory in use.")
    message = run.faults.pop("execution_error", None)
    if message:
        raise Exception(message if isinstance(message, str) else "stand-in: injected sampler failure")

    result: dict[str, Any] = {}

    def render() -> None:
        try:
            result["frames"] = render_preview(job)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the executor thread
            result["error"] = exc

    worker = threading.Thread(target=render, name=f"standin-render-{node_id}", daemon=True)
    worker.start()
    hang = run.faults.pop("hang", None)
    step_wait = max(run.step_s, run.delay_s / total)
    for step in range(1, total + 1):
        run.on_sampling()
        run.sleep(step_wait)
        run.progress(node_id, step, total)
        run.preview(job.reference)
        if hang and step == max(1, total // 2):
            while True:  # "never finishes until interrupted"
                run.sleep(0.05)
    while worker.is_alive():
        worker.join(0.02)
        run.check_interrupt()
    if "error" in result:
        raise result["error"]
    spoilt = run.faults.pop("frames", None)
    if spoilt == "noise":  # what tiny weights give: every frame noise
        result["frames"] = np.random.default_rng(0).integers(0, 256, result["frames"].shape, dtype=np.uint8)
    elif spoilt == "blank":
        result["frames"] = np.zeros_like(result["frames"])
    latent = {"frames": result["frames"]}
    return (latent, latent)


def build_window_job(run: Run, node_id: str, i: Inputs, embeds: dict, talk: dict | None) -> WindowJob:
    width, height = int(embeds["width"]), int(embeds["height"])
    ref_src = embeds.get("clip_image")
    if ref_src is None:
        ref_src = embeds.get("start_image")
    if ref_src is None:
        raise ValueError("the sampler needs a start image or CLIP-vision image (the reference)")
    reference = _cover_crop(ref_src[:1], width, height)[0]

    fps = _valid_fps(float(talk["fps"]) if talk else 25.0)
    if embeds.get("kind") == "multitalk":
        n = int(talk["num_frames"]) if talk else int(embeds["frame_window_size"])
        default_m = int(embeds["motion_frame"])
    else:
        n = int(embeds["num_frames"])
        default_m = 1
    extras = [e["frames"] for e in embeds.get("extra_latents", []) if e.get("frames") is not None]
    if extras:
        tail = _cover_crop(np.concatenate(extras), width, height)
        chain_start = False
    else:
        tail = np.repeat(reference[None], max(1, min(default_m, n - 1)), axis=0)
        chain_start = True
    if tail.shape[0] >= n:
        raise ValueError(f"the extra latents hold {tail.shape[0]} frames but the window has only {n}")

    spf = MODEL_SAMPLE_RATE // fps
    tracks = talk["tracks"][:2] if talk else [np.zeros(n * spf, np.float32)]
    audio = [_fit_samples(t, n * spf) for t in tracks]

    source = None
    samples = i["samples"]
    if isinstance(samples, dict) and samples.get("frames") is not None:
        frames = _cover_crop(samples["frames"], width, height)
        if frames.shape[0] < n:
            frames = np.concatenate([frames, np.repeat(frames[-1:], n - frames.shape[0], axis=0)])
        source = np.ascontiguousarray(frames[:n])

    text = i["text_embeds"]
    spec = RenderSpec(input_type="image" if source is None else "video",
                      person_count="multi" if len(audio) > 1 else "single",
                      prompt=text.get("prompt", "") if isinstance(text, dict) else "", width=width, height=height,
                      force_offload=bool(i["force_offload"]), seed=int(i["seed"] or 0), window=n,
                      motion=int(tail.shape[0]), fps=fps)
    return WindowJob(
        render_id=run.prompt_id, index=0, spec=spec, frame_start=0, reference=np.ascontiguousarray(reference),
        tail=np.ascontiguousarray(tail), audio=audio, source=source, chain_start=chain_start, extras={"node": node_id})


@handles("SaveImage", "PreviewImage")
def _save_image(run, node_id, i):
    images = _need_images(i["images"], "images")
    if run.prompt[node_id]["class_type"] == "PreviewImage":
        base, kind = run.temp_dir, "temp"
        prefix = "ComfyUI_temp_" + "".join(chr(97 + (ord(c) % 26)) for c in run.prompt_id[-5:])
    else:
        base, kind = run.output_dir, "output"
        prefix = i["filename_prefix"] or "ComfyUI"
    folder, filename, counter, subfolder = _save_image_path(prefix, base)
    results = []
    for batch_number, frame in enumerate(images):
        run.check_interrupt()
        name = f"{filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        _write_png(folder / name, frame)
        results.append({"filename": name, "subfolder": subfolder, "type": kind})
        counter += 1
    return {"ui": {"images": results}, "result": ()}


@handles("VHS_VideoCombine")
def _video_combine(run, node_id, i):
    images = _need_images(i["images"], "images")
    fmt = i["format"] or "image/gif"
    if not fmt.endswith("mp4"):
        raise Exception(f"stand-in VHS_VideoCombine writes mp4 formats only, not {fmt}")
    save_output = bool(i["save_output"])
    base = run.output_dir if save_output else run.temp_dir
    folder, filename, _, subfolder = _save_image_path(i["filename_prefix"] or "AnimateDiff", base)
    counter = _vhs_counter(folder, filename)
    frames = images
    if i["pingpong"]:
        frames = np.concatenate([images, images[-2:0:-1]])
    output_files = []
    first_image_file = f"{filename}_{counter:05}.png"
    if i.get("save_metadata", True):
        _write_png(folder / first_image_file, frames[0])
        output_files.append(str(folder / first_image_file))
    file = f"{filename}_{counter:05}.mp4"
    crf = int(i.get("crf", 19) or 19)
    _write_mp4(folder / file, frames, float(i["frame_rate"]), None, crf, False)
    output_files.append(str(folder / file))
    audio = i["audio"]
    if audio is not None:
        file = f"{filename}_{counter:05}-audio.mp4"
        _write_mp4(folder / file, frames, float(i["frame_rate"]), audio, crf, bool(i.get("trim_to_audio", False)))
        output_files.append(str(folder / file))
    preview = {"filename": file, "subfolder": subfolder, "type": "output" if save_output else "temp",
               "format": fmt, "frame_rate": float(i["frame_rate"]), "workflow": first_image_file,
               "fullpath": output_files[-1]}
    return {"ui": {"gifs": [preview]}, "result": ((save_output, output_files),)}


@handles("PreviewAny")
def _preview_any(run, node_id, i):
    value = i["source"]
    if isinstance(value, (dict, list, tuple)) and not isinstance(value, np.ndarray):
        try:
            text = json.dumps(value, indent=4)
        except (TypeError, ValueError):
            text = str(value)
    elif isinstance(value, np.ndarray):
        text = f"array{tuple(value.shape)}"
    else:
        text = str(value)
    return {"ui": {"text": [text]}, "result": ()}


def _generic(run: Run, node_id: str, i: Inputs) -> tuple:
    info = run.schema[run.prompt[node_id]["class_type"]]
    out = []
    for kind in info["output"]:
        if kind in ("IMAGE", "AUDIO", "LATENT", "MASK"):
            found = i.typed(kind)
            out.append(found[0] if found else None)
        elif kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
            out.append(None)
        else:
            out.append(_token(run, node_id, i))
    return tuple(out)


def run_node(run: Run, node_id: str, outputs: dict[str, tuple]) -> tuple[tuple, dict | None]:
    """Execute one node: (its outputs, its UI dict or None)."""
    run.check_interrupt()
    inputs = resolve_inputs(run, node_id, outputs)
    handler = HANDLERS.get(run.prompt[node_id]["class_type"], _generic)
    result = handler(run, node_id, inputs)
    if isinstance(result, dict):
        return tuple(result.get("result", ())), result.get("ui")
    return tuple(result), None
