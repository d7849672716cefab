"""The one module that speaks ComfyUI's HTTP + websocket protocol (ComfyUI 0.8.0).

    async with ComfyClient("http://127.0.0.1:8188") as comfy:
        await comfy.wait_ready(60)
        ref = await comfy.upload(png_bytes, "ref.png", subfolder=render_id)   # "render_id/ref.png"
        if await comfy.find(prompt_id) is None:          # re-attach: never queue twice
            await comfy.submit(graph, prompt_id)
        outputs = await comfy.wait(prompt_id, on_progress=progress, timeout_s=3600)
        for f in comfy.outputs(outputs):
            data = await comfy.download(f)

Protocol facts this relies on (ComfyUI 0.8.0 server.py / execution.py / main.py):

- ``POST /prompt`` takes ``{"prompt", "client_id", "prompt_id"}`` and uses the caller's
  prompt_id. 200 ``{"prompt_id", "number", "node_errors"}`` means queued, but a non-empty
  ``node_errors`` means some outputs were dropped (the rest still runs); 400 ``{"error",
  "node_errors"}`` means nothing was queued. Node errors look like ``{node_id: {"errors":
  [{"type", "message", "details", "extra_info": {"input_name", "received_value"...}}],
  "class_type", "dependent_outputs"}}``.
- ``GET /history/{id}`` is ``{}`` until the prompt has finished, then ``{id: {"prompt",
  "outputs": {node: {"images"|"gifs"|...: [{"filename", "subfolder", "type"}]}}, "status":
  {"status_str": "success"|"error", "completed", "messages": [[event, data], ...]}}}``.
  The entry is written before the final ``executing {"node": null}`` message.
- ``GET /queue`` lists ``queue_running`` / ``queue_pending`` items ``[number, prompt_id,
  prompt, extra_data, outputs]``.
- ``/ws?clientId=`` sends JSON ``{"type", "data"}`` messages (``progress``, ``executing``,
  ``execution_success`` / ``execution_error`` / ``execution_interrupted`` carry the
  prompt_id) to the client that submitted, ``progress_state`` and ``status`` to everyone,
  and binary preview frames, which are ignored here.
- ``execution_error`` data has ``exception_type`` (``torch.OutOfMemoryError`` for OOM),
  ``exception_message``, ``node_id``, ``node_type``; a model file that vanished after
  validation fails with ``FileNotFoundError: Model in folder 'F' with filename 'N' not
  found.`` (folder_paths.get_full_path_or_raise).

Error mapping (longtalk.errors): a graph ComfyUI rejects -> GraphError naming node id,
class, input and ComfyUI's reason; a model file that is not installed (value_not_in_list
on a model-loader input, or the FileNotFoundError above) -> ModelMissingError naming the
file and its models/ folder (`.file`, `.folder`, `.node_id`); a server that does not answer
(connection refused/reset, request timeouts, HTTP 5xx) -> ComfyUnreachable; a prompt that
runs past `wait`'s timeout -> PromptTimeout; everything else (OOM, other execution errors,
interrupts, a prompt that vanished because ComfyUI restarted, uploaded inputs ComfyUI no
longer has) -> BackendUnavailable. The last three are all BackendUnavailable (retryable).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import mimetypes
import re
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import aiohttp

from longtalk.errors import BackendUnavailable, ComfyUnreachable, GraphError, ModelMissingError, PromptTimeout
from longtalk.text import shorten

__all__ = ["ComfyClient", "OutputFile", "MODEL_INPUTS", "ProgressCallback"]

log = logging.getLogger(__name__)

# Model-loader inputs of the node packs we use -> the ComfyUI models/ folder they list.
MODEL_INPUTS: dict[tuple[str, str], str] = {
    ("WanVideoModelLoader", "model"): "diffusion_models",
    ("MultiTalkModelLoader", "model"): "diffusion_models",
    ("MelBandRoFormerModelLoader", "model_name"): "diffusion_models",
    ("WanVideoExtraModelSelect", "extra_model"): "diffusion_models",
    ("WanVideoVACEModelSelect", "vace_model"): "diffusion_models",
    ("WanVideoVAELoader", "model_name"): "vae",
    ("WanVideoTextEncodeCached", "model_name"): "text_encoders",
    ("LoadWanVideoT5TextEncoder", "model_name"): "text_encoders",
    ("LoadWanVideoClipTextEncoder", "model_name"): "clip_vision",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("WanVideoLoraSelect", "lora"): "loras",
    **{("WanVideoLoraSelectMulti", f"lora_{i}"): "loras" for i in range(5)},
    ("Wav2VecModelLoader", "model"): "wav2vec2",
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("VAELoader", "vae_name"): "vae",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("LoraLoader", "lora_name"): "loras",
}
MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pt2", ".pth", ".bin", ".gguf", ".onnx")
FILE_INPUT_ERROR = re.compile(r"Invalid (image|audio|video) file: (?P<name>.*)$")
MODEL_NOT_FOUND = re.compile(r"Model in folder '(?P<folder>[^']*)' with filename '(?P<name>[^']*)' not found")
NO_SUCH_FILE = re.compile(r"No such file or directory: '(?P<path>[^']+)'")

ProgressCallback = Callable[[str, float], "Awaitable[None] | None"]  # (what, fraction 0..1)

def _node_id(data: dict) -> str | None:
    node_id = data.get("node_id")
    return None if node_id is None else str(node_id)


@dataclass(frozen=True)
class OutputFile:
    """One file a node reported in its UI output (history ``outputs``)."""

    node_id: str
    kind: str  # the UI key it came under: images, gifs, videos, files, audio ...
    filename: str
    subfolder: str = ""
    type: str = "output"  # output | temp | input: which ComfyUI folder /view reads
    format: str | None = None  # VHS: "video/h264-mp4" ...
    frame_rate: float | None = None  # VHS
    fullpath: str | None = None  # VHS: the path on the ComfyUI machine (not usable elsewhere)


class ComfyClient:
    """Async client for one ComfyUI server. Usable as an async context manager."""

    def __init__(self, base_url: str, client_id: str | None = None, session: aiohttp.ClientSession | None = None,
                 poll_interval_s: float = 1.0, *, request_timeout_s: float = 60.0,
                 transfer_timeout_s: float = 600.0, max_unreachable_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self.poll_interval_s = poll_interval_s
        self.request_timeout_s = request_timeout_s
        self.transfer_timeout_s = transfer_timeout_s
        self.max_unreachable_s = max_unreachable_s
        self._session = session
        self._own_session = session is None
        # called with (event type, data) for every websocket message about a prompt being
        # waited on (doctor --smoke times the nodes with it); must not block
        self.on_event: Callable[[str, dict], None] | None = None

    # ------------------------------------------------------------------ plumbing

    async def __aenter__(self) -> "ComfyClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None if self._own_session else self._session

    def session(self) -> aiohttp.ClientSession:
        """The HTTP session (for a caller that opens its own websocket under this client id)."""
        return self._http()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._own_session:
                raise BackendUnavailable("the aiohttp session given to ComfyClient is closed")
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        return self._session

    @property
    def ws_url(self) -> str:
        base = re.sub(r"^http", "ws", self.base_url)
        return f"{base}/ws?clientId={self.client_id}"

    async def _request(self, method: str, path: str, *, json_body: Any = None, data: Any = None,
                       params: dict | None = None, timeout_s: float | None = None,
                       raw: bool = False) -> tuple[int, Any]:
        """(status, parsed JSON or bytes). Connection trouble and 5xx -> BackendUnavailable."""
        url = self.base_url + path
        timeout = aiohttp.ClientTimeout(total=timeout_s or self.request_timeout_s)
        what = f"{method} {path}"
        try:
            async with self._http().request(method, url, json=json_body, data=data, params=params,
                                             timeout=timeout) as resp:
                body = await resp.read()
                status = resp.status
        except asyncio.TimeoutError:
            raise ComfyUnreachable(f"ComfyUI at {self.base_url} did not answer {what} in time") from None
        except aiohttp.ClientConnectorError as exc:
            raise ComfyUnreachable(f"ComfyUI at {self.base_url} is unreachable ({shorten(exc.os_error or exc, 120)})") \
                from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ComfyUnreachable(f"ComfyUI at {self.base_url} failed {what} ({type(exc).__name__})") from None
        if status >= 500:
            raise ComfyUnreachable(f"ComfyUI answered {what} with HTTP {status}: {shorten(body.decode('utf-8', 'replace'), 120)}")
        if raw:
            return status, body
        if not body:
            return status, None
        try:
            return status, json.loads(body)
        except ValueError:
            if status >= 400:
                return status, None
            raise BackendUnavailable(f"ComfyUI answered {what} with something that is not JSON") from None

    # ------------------------------------------------------------------ server

    async def system_stats(self) -> dict:
        status, body = await self._request("GET", "/system_stats")
        if status != 200 or not isinstance(body, dict):
            raise BackendUnavailable(f"ComfyUI answered GET /system_stats with HTTP {status}")
        return body

    async def object_info(self) -> dict:
        """GET /object_info: every node class the server has, with its inputs and outputs."""
        status, body = await self._request("GET", "/object_info")
        if status != 200 or not isinstance(body, dict):
            raise BackendUnavailable(f"ComfyUI answered GET /object_info with HTTP {status}")
        return body

    async def wait_ready(self, timeout_s: float = 120.0) -> dict:
        """Poll /system_stats until the server answers; its stats, or BackendUnavailable."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last: Exception | None = None
        while True:
            try:
                return await self.system_stats()
            except BackendUnavailable as exc:
                last = exc
            if loop.time() >= deadline:
                raise ComfyUnreachable(f"ComfyUI at {self.base_url} not ready after {timeout_s:g}s: {last}")
            await asyncio.sleep(min(1.0, max(0.05, self.poll_interval_s), max(0.0, deadline - loop.time())))

    async def upload(self, data: bytes, name: str, subfolder: str = "", overwrite: bool = True,
                     type: str = "input") -> str:  # noqa: A002 - ComfyUI's field name
        """POST /upload/image (any file type); the value to put in a loader: ``subfolder/name``."""
        form = aiohttp.FormData()
        form.add_field("image", data, filename=name,
                       content_type=mimetypes.guess_type(name)[0] or "application/octet-stream")
        form.add_field("subfolder", subfolder)
        form.add_field("type", type)
        form.add_field("overwrite", "true" if overwrite else "false")
        status, body = await self._request("POST", "/upload/image", data=form, timeout_s=self.transfer_timeout_s)
        if status != 200 or not isinstance(body, dict) or "name" not in body:
            raise GraphError(f"ComfyUI refused the upload of {name!r} to {type}/{subfolder} (HTTP {status})")
        sub = body.get("subfolder") or ""
        return f"{sub}/{body['name']}" if sub else body["name"]

    # ------------------------------------------------------------------ prompts

    async def submit(self, prompt: dict, prompt_id: str) -> None:
        """Queue the graph under our prompt_id; GraphError / ModelMissingError if it is refused."""
        payload = {"prompt": prompt, "client_id": self.client_id, "prompt_id": prompt_id}
        status, body = await self._request("POST", "/prompt", json_body=payload)
        if status == 200 and isinstance(body, dict):
            node_errors = body.get("node_errors") or {}
            if node_errors:
                # ComfyUI queued the outputs that validated; take them back before failing
                try:
                    await self.interrupt(prompt_id)
                except BackendUnavailable:
                    pass
                raise self._validation_error(None, node_errors)
            if body.get("prompt_id") not in (None, prompt_id):
                try:
                    await self.interrupt(str(body["prompt_id"]))
                except BackendUnavailable:
                    pass
                raise GraphError("this ComfyUI ignores a caller-chosen prompt_id (0.3.4x or later needed)")
            return
        if status == 400 and isinstance(body, dict) and ("error" in body or "node_errors" in body):
            raise self._validation_error(body.get("error"), body.get("node_errors") or {})
        raise BackendUnavailable(f"ComfyUI answered POST /prompt with HTTP {status}")

    def _validation_error(self, error: Any, node_errors: dict) -> Exception:
        reasons: list[str] = []
        for node_id, entry in node_errors.items():
            class_type = entry.get("class_type", "?")
            for err in entry.get("errors", []):
                extra = err.get("extra_info") or {}
                input_name = extra.get("input_name")
                kind, details = err.get("type", ""), str(err.get("details", ""))
                value = extra.get("received_value")
                if kind == "value_not_in_list" and isinstance(value, str) and (
                        (class_type, input_name) in MODEL_INPUTS or value.lower().endswith(MODEL_EXTENSIONS)):
                    folder = MODEL_INPUTS.get((class_type, input_name), "models")
                    exc = ModelMissingError(
                        f"model file '{shorten(value, 160)}' is not installed in ComfyUI's models/{folder} "
                        f"(node {node_id} {class_type}.{input_name})",
                        file=value, folder=folder, node_id=str(node_id))
                    return exc
                m = FILE_INPUT_ERROR.search(details) if kind == "custom_validation_failed" else None
                if m:
                    return BackendUnavailable(
                        f"ComfyUI has no input file '{shorten(m.group('name'), 160)}' for node {node_id} "
                        f"{class_type}.{input_name} (lost after a restart? upload it again)")
                where = f"node {node_id} ({class_type})" + (f" input '{input_name}'" if input_name else "")
                reason = err.get("message", kind)
                if details and details != input_name:
                    reason = f"{reason}: {details}"
                reasons.append(f"{where}: {shorten(reason, 200)}")
        if not reasons and isinstance(error, dict):
            text = error.get("message", error.get("type", "invalid prompt"))
            if error.get("details") and error.get("type") != "prompt_outputs_failed_validation":
                text = f"{text} ({error['details']})"
            reasons.append(shorten(text, 300))
        shown = reasons[:3]
        more = f" (+{len(reasons) - 3} more)" if len(reasons) > 3 else ""
        return GraphError("ComfyUI rejected the graph: " + "; ".join(shown or ["no reason given"]) + more)

    async def history(self, prompt_id: str) -> dict | None:
        """The /history entry of a finished prompt, or None."""
        status, body = await self._request("GET", f"/history/{prompt_id}")
        if status != 200:
            raise BackendUnavailable(f"ComfyUI answered GET /history with HTTP {status}")
        if isinstance(body, dict) and prompt_id in body:
            return body[prompt_id]
        return None

    async def queue(self) -> dict:
        status, body = await self._request("GET", "/queue")
        if status != 200 or not isinstance(body, dict):
            raise BackendUnavailable(f"ComfyUI answered GET /queue with HTTP {status}")
        return body

    async def _queue_position(self, prompt_id: str) -> str | None:
        q = await self.queue()
        for key, state in (("queue_running", "running"), ("queue_pending", "pending")):
            for item in q.get(key) or []:
                if isinstance(item, list) and len(item) > 1 and item[1] == prompt_id:
                    return state
        return None

    async def find(self, prompt_id: str) -> str | None:
        """Where the prompt is: "done" (in history), "running", "pending", or None (unknown)."""
        if await self.history(prompt_id) is not None:
            return "done"
        state = await self._queue_position(prompt_id)
        if state is not None:
            return state
        if await self.history(prompt_id) is not None:  # it finished between the two looks
            return "done"
        return None

    async def interrupt(self, prompt_id: str) -> None:
        """Drop the prompt from the queue if it has not started, and interrupt it if it runs."""
        await self._request("POST", "/queue", json_body={"delete": [prompt_id]})
        await self._request("POST", "/interrupt", json_body={"prompt_id": prompt_id})

    # ------------------------------------------------------------------ waiting

    async def wait(self, prompt_id: str, on_progress: ProgressCallback | None = None,
                   timeout_s: float | None = None) -> dict:
        """Wait until the prompt finished; its history ``outputs`` ({node_id: ui dict}).

        Follows the websocket (progress, early notice of the end) and polls /history and
        /queue at the same time, so a dropped socket only costs a reconnect."""
        hint = asyncio.Event()
        seen: dict[str, Any] = {"progress": False}
        follower = asyncio.create_task(self._follow(prompt_id, on_progress, hint, seen),
                                       name=f"comfy-ws-{prompt_id}")
        try:
            if timeout_s is None:
                entry = await self._poll(prompt_id, hint)
            else:
                try:
                    entry = await asyncio.wait_for(self._poll(prompt_id, hint), timeout_s)
                except asyncio.TimeoutError:
                    raise PromptTimeout(f"ComfyUI prompt {prompt_id} did not finish within {timeout_s:g}s",
                                        prompt_id=prompt_id, timeout_s=timeout_s) from None
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        return self._result(prompt_id, entry)

    async def _poll(self, prompt_id: str, hint: asyncio.Event) -> dict:
        loop = asyncio.get_running_loop()
        unreachable_since: float | None = None
        missing = 0
        fast_until = 0.0
        while True:
            try:
                entry = await self.history(prompt_id)
                if entry is not None:
                    return entry
                state = await self._queue_position(prompt_id)
                if state is None:
                    entry = await self.history(prompt_id)
                    if entry is not None:
                        return entry
                    missing += 1
                    if missing >= 2:
                        raise BackendUnavailable(f"ComfyUI prompt {prompt_id} is neither queued nor in the "
                                                 "history (ComfyUI restarted?)")
                else:
                    missing = 0
                unreachable_since = None
            except BackendUnavailable as exc:
                if not isinstance(exc, ComfyUnreachable):
                    raise
                now = loop.time()
                unreachable_since = unreachable_since if unreachable_since is not None else now
                if now - unreachable_since >= self.max_unreachable_s:
                    raise ComfyUnreachable(f"lost ComfyUI while waiting for prompt {prompt_id}: {exc}") from None
            if hint.is_set():
                hint.clear()
                fast_until = loop.time() + 5.0
            interval = 0.05 if loop.time() < fast_until else self.poll_interval_s
            try:
                await asyncio.wait_for(hint.wait(), interval)
            except asyncio.TimeoutError:
                pass

    async def _follow(self, prompt_id: str, on_progress: ProgressCallback | None, hint: asyncio.Event,
                      seen: dict) -> None:
        backoff = 0.2
        while True:
            try:
                async with self._http().ws_connect(self.ws_url, heartbeat=30.0,
                                                   timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                                                   max_msg_size=0) as ws:
                    backoff = 0.2
                    hint.set()  # the end may have passed while we were away: look now
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            await self._on_message(prompt_id, msg.data, on_progress, hint, seen)
                        elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                          aiohttp.WSMsgType.ERROR):
                            break
                        # BINARY: preview frames (uint32 event, uint32 image type, JPEG): ignored
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError, BackendUnavailable) as exc:
                log.debug("ComfyUI websocket: %s", type(exc).__name__)
            await asyncio.sleep(backoff)
            backoff = min(2.0, backoff * 2)

    async def _on_message(self, prompt_id: str, text: str, on_progress: ProgressCallback | None,
                          hint: asyncio.Event, seen: dict) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("data"), dict):
            return
        kind, data = msg.get("type"), msg["data"]
        if data.get("prompt_id") != prompt_id:
            return
        if self.on_event is not None:
            self.on_event(str(kind), data)
        if kind in ("execution_success", "execution_error", "execution_interrupted") or (
                kind == "executing" and data.get("node") is None):
            hint.set()
        elif kind == "progress" and on_progress is not None:
            seen["progress"] = True
            await self._report(on_progress, f"node {data.get('node')}", data.get("value"), data.get("max"))
        elif kind == "progress_state" and on_progress is not None and not seen["progress"]:
            for node_id, state in (data.get("nodes") or {}).items():
                if isinstance(state, dict) and state.get("state") == "running" and (state.get("max") or 0) > 1:
                    await self._report(on_progress, f"node {node_id}", state.get("value"), state.get("max"))

    @staticmethod
    async def _report(on_progress: ProgressCallback, what: str, value: Any, total: Any) -> None:
        try:
            fraction = min(1.0, max(0.0, float(value) / float(total)))
        except (TypeError, ValueError, ZeroDivisionError):
            return
        try:
            result = on_progress(what, fraction)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a broken callback must not break the wait
            log.warning("progress callback failed", exc_info=True)

    def _result(self, prompt_id: str, entry: dict) -> dict:
        status = entry.get("status") or {}
        outputs = entry.get("outputs") or {}
        if status.get("status_str") == "success" or (not status and outputs):
            if not any(outputs.values()):
                raise BackendUnavailable(f"ComfyUI prompt {prompt_id} completed with no outputs")
            return outputs
        for event, data in status.get("messages") or []:
            if event == "execution_error" and isinstance(data, dict):
                raise self._execution_error(prompt_id, data)
            if event == "execution_interrupted" and isinstance(data, dict):
                raise BackendUnavailable(f"ComfyUI prompt {prompt_id} was interrupted at node "
                                         f"{data.get('node_id')} ({data.get('node_type')})")
        raise BackendUnavailable(f"ComfyUI prompt {prompt_id} failed (status {status.get('status_str')!r})")

    @staticmethod
    def _execution_error(prompt_id: str, data: dict) -> Exception:
        etype = str(data.get("exception_type") or "Exception")
        message = str(data.get("exception_message") or "").strip()
        first = shorten(message.splitlines()[0] if message else "", 200)
        where = f"node {data.get('node_id')} ({data.get('node_type')})"
        if "OutOfMemoryError" in etype or "out of memory" in message.lower():
            return BackendUnavailable(f"ComfyUI ran out of GPU memory at {where}: {first}")
        m = MODEL_NOT_FOUND.search(message)
        if m:
            exc = ModelMissingError(f"model file '{shorten(m.group('name'), 160)}' is not installed in ComfyUI's "
                                    f"models/{m.group('folder')} ({where})",
                                    file=m.group("name"), folder=m.group("folder"), node_id=_node_id(data))
            return exc
        m = NO_SUCH_FILE.search(message)
        if m and "/models/" in m.group("path").replace("\\", "/"):
            path = m.group("path").replace("\\", "/")
            folder = path.split("/models/", 1)[1].rsplit("/", 1)[0] if "/" in path.split("/models/", 1)[1] else "."
            name = path.rsplit("/", 1)[-1]
            exc = ModelMissingError(f"model file '{shorten(name, 160)}' is missing from ComfyUI's models/{folder} "
                                    f"({where})", file=name, folder=folder, node_id=_node_id(data))
            return exc
        return BackendUnavailable(f"ComfyUI prompt {prompt_id} failed at {where}: {etype}: {first}")

    # ------------------------------------------------------------------ outputs

    @staticmethod
    def outputs(history_entry: dict) -> list[OutputFile]:
        """Every file in a history entry's (or a wait() result's) outputs, node by node."""
        outputs = history_entry
        if isinstance(history_entry.get("outputs"), dict) and "status" in history_entry:
            outputs = history_entry["outputs"]
        files: list[OutputFile] = []
        for node_id, ui in outputs.items():
            if not isinstance(ui, dict):
                continue
            for kind, items in ui.items():
                if not isinstance(items, list):
                    continue
                for item in items:
                    if not isinstance(item, dict) or not item.get("filename"):
                        continue
                    rate = item.get("frame_rate")
                    files.append(OutputFile(
                        node_id=str(node_id), kind=kind, filename=str(item["filename"]),
                        subfolder=str(item.get("subfolder") or ""), type=str(item.get("type") or "output"),
                        format=item.get("format"), frame_rate=float(rate) if isinstance(rate, (int, float)) else None,
                        fullpath=item.get("fullpath")))
        return files

    async def download(self, file: OutputFile) -> bytes:
        """The bytes of an output file, through /view (type picks output/ or temp/)."""
        params = {"filename": file.filename, "subfolder": file.subfolder, "type": file.type}
        status, body = await self._request("GET", "/view", params=params, timeout_s=self.transfer_timeout_s, raw=True)
        if status == 200:
            return body
        where = "/".join(p for p in (file.type, file.subfolder, file.filename) if p)
        raise BackendUnavailable(f"ComfyUI could not serve output {where!r} (HTTP {status})")
