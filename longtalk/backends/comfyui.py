"""The real backend: one window = one ComfyUI prompt (InfiniteTalk per-window graph).

For window k it uploads the reference, the M carried tail PNGs, the window's audio slices
(and for V2V the window's source frames, for multi the speaker masks) into the ComfyUI
input subfolder `longtalk/<render_id>/w<k>`, binds the mode's graph template, submits it
under a prompt id derived from (render, window, generation), waits (websocket raced with
/history polling), downloads the W PNG frames of the output node and colour-matches them
toward the reference before the activity takes the tail.

Retries re-attach: the prompt id of generation g is deterministic, so a retried activity
first looks the id up in /history and /queue and waits for a prompt that is still queued or
running, or takes the outputs of one that finished; only a prompt that failed moves on to
generation g+1. Cancellation interrupts the prompt on ComfyUI and re-raises.
"""

from __future__ import annotations

import asyncio
import uuid

import cv2
import numpy as np

from .. import av_io
from ..comfy.binder import Template, WindowValues, load_template, output_node_id, speaker_masks, split_upload_name
from ..comfy.client import ComfyClient
from ..comfy.config import GraphConfig
from ..comfy.doctor import DoctorReport, check_server
from ..errors import BackendUnavailable, GraphError, OutputMismatch, PromptTimeout
from ..settings import Settings
from .base import ProgressFn, WindowJob

PROMPT_NAMESPACE = uuid.UUID("6c0f3c55-2f0e-4f53-9a8a-6f1d1b0c7e21")
MAX_GENERATIONS = 50


def prompt_id_for(render_id: str, window: int, generation: int, redo: int = 0) -> str:
    """The prompt id of a window's generation: the same on every worker, so a retried activity
    finds the prompt it submitted; a quality re-render (redo > 0) is another prompt."""
    name = f"{render_id}/{window}/{generation}" if redo == 0 else f"{render_id}/{window}/redo{redo}/{generation}"
    return str(uuid.uuid5(PROMPT_NAMESPACE, name))


def color_match(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The `meanstd` colour correction (LONGTALK_COMFY_COLOR_MATCH, the one method there is):
    match each frame's colour statistics (mean and spread per channel) to the reference,
    so colour drift does not accumulate through the carried tail. Statistics come from every
    4th pixel and the correction is a per-channel lookup table: about 1 ms a 512x512 frame."""
    ref = reference[::4, ::4].reshape(-1, 3).astype(np.float32)
    ref_mean, ref_std = ref.mean(0), ref.std(0) + 1e-3
    levels = np.arange(256, dtype=np.float32)
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        sample = frame[::4, ::4].reshape(-1, 3).astype(np.float32)
        mean, std = sample.mean(0), sample.std(0) + 1e-3
        lut = np.stack([(levels - mean[c]) * (ref_std[c] / std[c]) + ref_mean[c] for c in range(3)], axis=1)
        lut = np.clip(lut, 0, 255).round().astype(np.uint8).reshape(256, 1, 3)
        out[i] = cv2.LUT(frame, lut)
    return out


class ComfyUIBackend:
    name = "comfyui"

    def __init__(self, client: ComfyClient, config: GraphConfig, prompt_timeout_s: float = 3600.0) -> None:
        self.client = client
        self.config = config  # read once by the composition root (worker.py): GraphConfig.from_env()
        self.prompt_timeout_s = prompt_timeout_s
        self._templates: dict[str, Template] = {}
        self.device: dict = {}

    @classmethod
    def from_settings(cls, settings: Settings, config: GraphConfig) -> "ComfyUIBackend":
        """The worker's backend from its settings and graph config (read nothing here)."""
        return cls(ComfyClient(settings.comfy_url), config, prompt_timeout_s=settings.comfy_prompt_timeout_s)

    async def wait_ready(self, timeout_s: float = 600.0) -> dict:
        """Block until ComfyUI answers /system_stats; remember its device for heartbeats."""
        stats = await self.client.wait_ready(timeout_s)
        self._remember(stats)
        return self.device

    def _remember(self, stats: dict) -> None:
        devices = stats.get("devices") or [{}]
        dev = devices[0]
        self.device = {"device": dev.get("name"), "vram_free": dev.get("vram_free"),
                       "vram_total": dev.get("vram_total")}

    async def check(self) -> DoctorReport:
        """doctor's checks of this ComfyUI against the modes the deployment serves."""
        return await check_server(self.client, self.config, self.config.modes)

    def heartbeat_details(self) -> dict:
        return dict(self.device)

    def template(self, mode: str) -> Template:
        if mode not in self._templates:
            self._templates[mode] = load_template(mode, self.config.graphs_dir)
        return self._templates[mode]

    async def render_window(self, job: WindowJob, progress: ProgressFn | None = None) -> np.ndarray:
        sampler, spec = self.config.sampler, job.spec
        values = WindowValues.for_window(job.render_id, job.index, spec, chain_start=job.chain_start,
                                         speaker_masks=sampler.speaker_masks, redo=job.redo)
        prompt = self.template(values.mode).bind(values, self.config.models, sampler)
        output_node = output_node_id(prompt)

        outputs = None
        for generation in range(MAX_GENERATIONS):
            prompt_id = prompt_id_for(job.render_id, job.index, generation, job.redo)
            state = await self.client.find(prompt_id)
            if state == "done":
                entry = await self.client.history(prompt_id)
                if not ((entry or {}).get("status") or {}).get("status_str") == "success":
                    continue  # that generation failed: the next one gets a fresh prompt id
            elif state is None:
                await self._upload(job, values)
                await self.client.submit(prompt, prompt_id)
            outputs = await self._wait(prompt_id, progress)
            break
        if outputs is None:
            raise GraphError(f"window {job.index}: {MAX_GENERATIONS} ComfyUI prompts failed; giving up")

        files = sorted((f for f in self.client.outputs(outputs) if f.node_id == output_node and f.kind == "images"),
                       key=lambda f: f.filename)
        if len(files) != spec.window:
            raise OutputMismatch(f"the graph's output node {output_node} gave {len(files)} frames, "
                                 f"expected {spec.window}")
        gate = asyncio.Semaphore(8)  # downloads in flight; PNG decoding runs beside them in threads

        async def fetch(f) -> np.ndarray:
            async with gate:
                data = await self.client.download(f)
            frame = await asyncio.to_thread(av_io.decode_png, data)
            if frame.shape[:2] != (spec.height, spec.width):
                frame = cv2.resize(frame, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
            return frame

        frames = await asyncio.gather(*(fetch(f) for f in files))
        result = np.stack(frames)
        if sampler.color_correction:
            result = await asyncio.to_thread(color_match, result, job.reference)
        try:
            self._remember(await self.client.system_stats())
        except BackendUnavailable:
            pass
        return result

    async def _wait(self, prompt_id: str, progress: ProgressFn | None) -> dict:
        def on_progress(what: str, fraction: float) -> None:
            if progress is not None:
                progress(what, fraction)

        try:
            return await self.client.wait(prompt_id, on_progress=on_progress, timeout_s=self.prompt_timeout_s)
        except asyncio.CancelledError:
            # the activity was cancelled: stop the GPU work too, then let the cancel through
            await asyncio.shield(self._interrupt(prompt_id))
            raise
        except PromptTimeout:
            await self._interrupt(prompt_id)  # a hung prompt must not block the GPU
            raise

    async def _interrupt(self, prompt_id: str) -> None:
        try:
            await self.client.interrupt(prompt_id)
        except BackendUnavailable:
            pass

    async def _upload(self, job: WindowJob, values: WindowValues) -> None:
        def encoded() -> list[tuple[str, bytes]]:
            uploads = [(values.reference, av_io.encode_png(job.reference))]
            uploads += [(name, av_io.encode_png(frame)) for name, frame in zip(values.tails, job.tail)]
            uploads += [(name, av_io.wav16_bytes(samples)) for name, samples in zip(values.audio, job.audio)]
            if values.masks:
                masks = speaker_masks(job.spec.width, job.spec.height)
                uploads += [(name, av_io.encode_png(masks[key]))
                            for name, key in zip(values.masks, ("mask_1", "mask_2", "mask_bg"))]
            if values.source_video and job.source is not None:
                uploads.append((values.source_video, _encode_source(job.source, job.spec.fps)))
            return uploads

        async def send(name: str, data: bytes) -> None:
            subfolder, filename = split_upload_name(name)
            await self.client.upload(data, filename, subfolder=subfolder, overwrite=True)

        # encoding runs in a thread (the event loop keeps heartbeating); uploads go in parallel
        await asyncio.gather(*(send(name, data) for name, data in await asyncio.to_thread(encoded)))

    async def close(self) -> None:
        await self.client.close()


def _encode_source(frames: np.ndarray, fps: int) -> bytes:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "source.mp4"
        av_io.encode_clip(frames, path, fps)
        return path.read_bytes()
