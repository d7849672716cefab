"""doctor --smoke: render one or two tiny windows per mode on a real ComfyUI, through the
project's own backend code (ComfyUIBackend: uploads, binding, submit, wait, download).

The smallest settings the graphs accept: W=17 frames, M=9 motion frames, 2 sampling steps,
64x64 pictures (128x64 with two speakers, one face on each half). Window 0 starts a chain
(the reference is its tail); window 1 takes the last 9 frames of window 0, as a real render
does. For each window it checks that ComfyUI's output node saved W frames of the job's size
and, for window 1, that the 9 uploaded tail frames are what feeds the tail encoder and that
they were executed, not taken from ComfyUI's cache; it reports ComfyUI's own execution time
(from /history) and the time of every node (from the websocket's `executing` messages).

Every window's frames also go through the quality guard's measuring and verdict
(longtalk.quality, with the default bounds), as a render's would on the GPU worker: with real
weights the verdict should be ok; with tiny weights ComfyUI returns noise and the guard must
flag it, which shows that it runs on this path. The verdict is reported, not a failure of
the smoke (the smoke checks that the graphs run).

With real weights on a GPU this takes seconds and is the acceptance test of a new image or a
new node-pack commit; with `doctor --tiny-weights` files on a CPU ComfyUI every node still
executes (minutes per window), so an image can be checked without 30 GB of downloads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable

import aiohttp
import numpy as np

from longtalk import av_io
from longtalk.backends.base import WindowJob
from longtalk.backends.comfyui import ComfyUIBackend, prompt_id_for
from longtalk.comfy.binder import output_node_id
from longtalk.comfy.client import ComfyClient
from longtalk.comfy.config import GraphConfig
from longtalk.comfy.modes import MODES, mode_for, spec_for
from longtalk.errors import ServiceError
from longtalk.quality import Verdict, WindowQuality, classify, measure_window
from longtalk.spec import RenderSpec
from longtalk.windows import MODEL_SAMPLE_RATE

SMOKE_WINDOW, SMOKE_MOTION, SMOKE_FPS, SMOKE_STEPS = 17, 9, 25, 2
SINGLE_SIZE, MULTI_SIZE = (64, 64), (128, 64)  # (width, height)


@dataclass
class NodeTime:
    node_id: str
    class_type: str
    seconds: float


@dataclass
class SmokeWindow:
    mode: str
    index: int
    ok: bool = False
    error: str = ""
    frames: int = 0
    size: tuple[int, int] = (0, 0)  # (width, height) of the frames ComfyUI saved
    tails_taken: int | None = None  # window 1: tail frames feeding the tail encoder, executed
    wall_s: float = 0.0
    comfy_s: float | None = None  # execution_start -> execution_success in /history
    nodes: list[NodeTime] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    output: np.ndarray | None = field(default=None, repr=False)  # the frames, for the next window's tail
    quality: WindowQuality | None = None  # the guard's measurements of the new frames
    verdict: Verdict | None = None  # ... and its verdict (default bounds)

    def line(self) -> str:
        head = f"{self.mode} window {self.index}"
        if not self.ok:
            return f"{head}: FAILED: {self.error}"
        tail = f", took its {self.tails_taken} tail frames" if self.tails_taken is not None else ""
        comfy = f" (ComfyUI {self.comfy_s:.2f} s)" if self.comfy_s is not None else ""
        slow = sorted(self.nodes, key=lambda n: -n.seconds)[:3]
        slowest = "; slowest: " + ", ".join(f"{n.class_type} {n.seconds:.2f} s" for n in slow) if slow else ""
        return (f"{head}: {self.frames} frames {self.size[0]}x{self.size[1]}{tail} in {self.wall_s:.2f} s"
                f"{comfy}{slowest}")

    def guard_line(self) -> str:
        """The quality guard's verdict and main measurements ("" when it did not measure)."""
        if self.verdict is None or self.quality is None:
            return ""
        v, q = self.verdict, self.quality
        found = [f"{kind} {', '.join(names)}" for kind, names in (("hard", v.hard), ("drift", v.drift),
                                                                  ("notes", v.notes)) if names]
        word = "ok" if v.ok else "FLAGGED"
        face = "no face in the reference" if q.face_found is None else f"face found {q.face_found:.0%}"

        def num(value) -> str:
            return "-" if value is None else f"{value:.2f}"

        return (f"{self.mode} window {self.index}: {word}{' (' + '; '.join(found) + ')' if found else ''}: "
                f"blank {q.blank_frames}/{q.frames}, still {num(q.still_speech)}, Delta E {q.delta_e:.1f}, "
                f"{face}, sharpness {num(q.sharpness)}, seam {num(q.seam)}, motion {q.motion:.1f}")


def tiny_config(config: GraphConfig, steps: int = SMOKE_STEPS) -> GraphConfig:
    """The operator's models and graphs with the cheapest sampling the graphs accept."""
    steps = max(1, steps)
    v2v_steps = max(2, steps)
    sampler = dataclasses.replace(config.sampler, steps=steps, v2v_steps=v2v_steps,
                                  v2v_start_step=min(config.sampler.v2v_start_step, v2v_steps - 1))
    return dataclasses.replace(config, sampler=sampler)


def smoke_reference(width: int, height: int, faces: int = 1) -> np.ndarray:
    """A plain drawn portrait (one face, or one on each half), deterministic."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.uint8)
    img[...] = (np.array([70, 90, 120]) + 60 * (yy / height)[..., None]).astype(np.uint8)
    for i in range(faces):
        cx, cy = width * (2 * i + 1) / (2 * faces), height * 0.5
        rx, ry = width / faces * 0.28, height * 0.36
        face = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        img[face] = (214, 170, 140)
        for ex in (cx - rx * 0.4, cx + rx * 0.4):
            img[((xx - ex) / (rx * 0.15)) ** 2 + ((yy - cy + ry * 0.2) / (ry * 0.1)) ** 2 <= 1] = (40, 30, 30)
        img[((xx - cx) / (rx * 0.4)) ** 2 + ((yy - cy - ry * 0.45) / (ry * 0.1)) ** 2 <= 1] = (150, 60, 60)
    return img


def smoke_audio(samples: int, seed: int) -> np.ndarray:
    """Voiced syllables: a 120-180 Hz tone with harmonics, switched at about 4 per second."""
    t = np.arange(samples, dtype=np.float32) / MODEL_SAMPLE_RATE
    f0 = 120 + 60 * seed
    voice = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in (1, 2, 3))
    envelope = (np.sin(2 * np.pi * 4 * t + seed) > -0.2).astype(np.float32)
    return (0.25 * voice * envelope).astype(np.float32)


async def run_smoke(client: ComfyClient, config: GraphConfig, modes: Iterable[str] = MODES, *,
                    steps: int = SMOKE_STEPS, windows: int = 2, timeout_s: float = 1800.0,
                    on_window: Callable[[SmokeWindow], None] | None = None) -> list[SmokeWindow]:
    """Windows 0..windows-1 of each mode; a mode stops at its first failed window.
    `on_window` hears each window as soon as it is done (a CPU window takes minutes)."""
    backend = ComfyUIBackend(client, tiny_config(config, steps), prompt_timeout_s=timeout_s)
    results: list[SmokeWindow] = []
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: use {', '.join(MODES)}")
        render_id = f"doctor-{mode.replace('_', '-')}-{uuid.uuid4().hex[:8]}"
        previous: np.ndarray | None = None
        for k in range(windows):
            result = await _smoke_window(backend, client, smoke_spec(mode), render_id, k, previous)
            results.append(result)
            if on_window is not None:
                on_window(result)
            if not result.ok:
                break
            previous = result.output
    return results


def smoke_spec(mode: str) -> RenderSpec:
    """A render of `mode` with the smallest window, size and motion the graphs accept."""
    width, height = MULTI_SIZE if mode.endswith("_multi") else SINGLE_SIZE
    return spec_for(mode, width=width, height=height, window=SMOKE_WINDOW, motion=SMOKE_MOTION, fps=SMOKE_FPS,
                    prompt="a person talking")


async def _smoke_window(backend: ComfyUIBackend, client: ComfyClient, spec: RenderSpec, render_id: str, k: int,
                        previous: np.ndarray | None) -> SmokeWindow:
    mode, params, multi = mode_for(spec), spec.window_params, spec.multi
    width, height = spec.width, spec.height
    reference = smoke_reference(width, height, 2 if multi else 1)
    samples = params.window * MODEL_SAMPLE_RATE // params.fps
    audio = [smoke_audio(samples, s) for s in range(2 if multi else 1)]
    source = None
    if spec.input_type == "video":  # the reference drifting sideways, one pixel a frame
        source = np.stack([np.roll(reference, f + k * params.stride, axis=1) for f in range(params.window)])
    tail = np.repeat(reference[None], params.motion, axis=0) if previous is None else previous[-params.motion:]
    job = WindowJob(render_id=render_id, index=k, spec=spec, frame_start=k * params.stride,
                    reference=source[0] if source is not None else reference, tail=tail, audio=audio,
                    source=source, chain_start=previous is None)
    result = SmokeWindow(mode, k)
    timer = _NodeTimer(prompt_id_for(render_id, k, 0))
    client.on_event = timer.on_event
    listener = asyncio.create_task(timer.listen(client))
    try:  # connected before the prompt is queued, so the first nodes are seen
        await asyncio.wait_for(asyncio.shield(timer.connected.wait()), 10.0)
    except asyncio.TimeoutError:
        pass  # only the first nodes' times would be missing
    started = time.monotonic()
    try:
        frames = await backend.render_window(job)
    except (ServiceError, ValueError) as exc:
        result.error = str(exc)
        return result
    finally:
        client.on_event = None
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        result.wall_s = time.monotonic() - started
    result.output = frames
    result.quality = measure_window(frames, params.motion, source if source is not None else reference, audio,
                                    params.fps)
    result.verdict = classify(result.quality)
    entry = await client.history(prompt_id_for(render_id, k, 0)) or {}
    prompt = (entry.get("prompt") or [None, None, {}])[2] or {}
    result.cached, result.comfy_s = _history_facts(entry)
    result.nodes = timer.times(prompt)
    problems = await _check_outputs(client, entry, prompt, params.window, width, height, result)
    if k > 0 or previous is not None:
        taken = _tails_feeding_encoder(prompt, set(result.cached))
        result.tails_taken = taken
        if taken != params.motion:
            problems.append(f"{taken} executed tail frames feed the tail encoder, expected {params.motion}")
    result.error = "; ".join(problems)
    result.ok = not problems
    return result


async def _check_outputs(client: ComfyClient, entry: dict, prompt: dict, window: int, width: int, height: int,
                         result: SmokeWindow) -> list[str]:
    try:
        node = output_node_id(prompt)
    except ServiceError as exc:
        return [f"/history has no usable prompt: {exc}"]
    files = sorted((f for f in client.outputs(entry.get("outputs") or {}) if f.node_id == node and f.kind == "images"),
                   key=lambda f: f.filename)
    result.frames = len(files)
    problems = [] if len(files) == window else [f"the output node saved {len(files)} frames, expected {window}"]
    if files:
        first = av_io.decode_png(await client.download(files[0]))
        result.size = (first.shape[1], first.shape[0])
        if result.size != (width, height):
            problems.append(f"ComfyUI saved {result.size[0]}x{result.size[1]} frames, expected {width}x{height}")
    return problems


def _history_facts(entry: dict) -> tuple[list[str], float | None]:
    cached: list[str] = []
    start = end = None
    for event, data in (entry.get("status") or {}).get("messages") or []:
        if not isinstance(data, dict):
            continue
        if event == "execution_cached":
            cached += [str(n) for n in data.get("nodes") or []]
        elif event == "execution_start":
            start = data.get("timestamp")
        elif event == "execution_success":
            end = data.get("timestamp")
    seconds = (end - start) / 1000.0 if isinstance(start, (int, float)) and isinstance(end, (int, float)) else None
    return cached, seconds


def _tails_feeding_encoder(prompt: dict, cached: set[str]) -> int:
    """Executed LoadImage nodes of uploaded tail frames upstream of the tail encoder."""
    encoder = next((nid for nid, n in prompt.items() if (n.get("_meta") or {}).get("title") == "@tail_encode"), None)
    if encoder is None:
        return 0
    seen, stack, tails = set(), [encoder], 0
    while stack:
        nid = stack.pop()
        if nid in seen or nid not in prompt:
            continue
        seen.add(nid)
        node = prompt[nid]
        image = (node.get("inputs") or {}).get("image")
        if node["class_type"] == "LoadImage" and isinstance(image, str) and "/tail_" in image and nid not in cached:
            tails += 1
        for value in (node.get("inputs") or {}).values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                stack.append(value[0])
    return tails


class _NodeTimer:
    """Node times from the order of `executing` messages (each one ends the previous node).

    The backend's own websocket opens only once the prompt is queued, so a listener under
    the same client id connects first: ComfyUI sends a prompt's messages to the socket that
    holds the submitting client id at that moment, so the first nodes reach the listener and
    the rest reach the backend's socket (both feed this timer)."""

    def __init__(self, prompt_id: str) -> None:
        self.prompt_id = prompt_id
        self.connected = asyncio.Event()
        self.spans: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    async def listen(self, client: ComfyClient) -> None:
        try:
            async with client.session().ws_connect(client.ws_url, max_msg_size=0) as ws:
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        self.connected.set()  # the server's first message: this socket is registered
                        try:
                            data = json.loads(msg.data)
                        except ValueError:
                            continue
                        body = data.get("data") if isinstance(data, dict) else None
                        if isinstance(body, dict) and body.get("prompt_id") == self.prompt_id:
                            self.on_event(str(data.get("type")), body)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
            self.connected.set()  # only the first nodes' times are lost

    def on_event(self, kind: str, data: dict) -> None:
        now = time.monotonic()
        if kind in ("executing", "execution_success", "execution_error", "execution_interrupted"):
            if self._current is not None:
                node, since = self._current
                self.spans[node] = self.spans.get(node, 0.0) + now - since
                self._current = None
            node = data.get("node") if kind == "executing" else None
            if node is not None:
                self._current = (str(node), now)

    def times(self, prompt: dict) -> list[NodeTime]:
        return [NodeTime(nid, (prompt.get(nid) or {}).get("class_type", "?"), round(s, 3))
                for nid, s in sorted(self.spans.items(), key=lambda item: -item[1])]
