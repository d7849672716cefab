"""The ComfyUI 0.8.0 stand-in server: the real HTTP + websocket protocol, a CPU renderer.

Endpoints (each also under /api, as in ComfyUI):

- ``GET /system_stats``, ``GET /object_info[/{class}]`` (the saved schema, with the model
  COMBOs replaced by the installed model files and the input-file COMBOs by the files in
  ``input/``), ``GET /prompt``, ``GET /features``;
- ``POST /prompt`` ``{"prompt", "client_id"?, "prompt_id"?, "number"?, "front"?,
  "extra_data"?, "partial_execution_targets"?}``: validated exactly as ComfyUI does
  (`validation.check_prompt`, with file checks against ``input/`` and the installed model
  lists), queued on success: 200 ``{"prompt_id", "number", "node_errors"}``, else 400
  ``{"error", "node_errors"}``; a caller-chosen ``prompt_id`` is used as given;
- ``GET /queue`` (``queue_running`` / ``queue_pending``: ``[number, prompt_id, prompt,
  extra_data, outputs_to_execute]``), ``POST /queue`` ``{"clear": true}`` /
  ``{"delete": [ids]}``;
- ``GET /history[?max_items=&offset=]``, ``GET /history/{prompt_id}`` (``{}`` when unknown),
  ``POST /history`` ``{"clear"|"delete"}``; an entry is ``{"prompt": [...5 items],
  "outputs": {node: ui}, "status": {"status_str", "completed", "messages": [[event,
  data], ...]}, "meta": {node: {...}}}``;
- ``POST /interrupt`` (optional ``{"prompt_id"}``: only interrupts that prompt if it is the
  running one), ``POST /upload/image`` (multipart ``image``, ``subfolder``, ``type``,
  ``overwrite``; any file type) -> ``{"name", "subfolder", "type"}``, ``GET /view``
  (``filename``, ``subfolder``, ``type``; 400 for absolute or ``..`` names, 403 for a
  subfolder outside the folder, 404 when missing);
- ``GET /ws?clientId=``: ``status`` on connect, then for the prompts of that client
  ``execution_start``, ``execution_cached``, ``executing`` (per node, ``node: null`` at
  the end, after the history entry exists), ``progress`` (sampler steps), ``executed``
  (nodes with UI output), ``execution_success`` / ``execution_error`` /
  ``execution_interrupted``, broadcast ``progress_state`` and ``status``, and binary
  preview frames (big-endian uint32 event 1, uint32 image type 1, JPEG bytes) during
  sampling.

Execution: one prompt at a time, FIFO by number, in a worker thread like ComfyUI's
prompt_worker; nodes run in dependency order through `nodes.run_node`. Node outputs are
cached as ComfyUI's default (CLASSIC) cache keeps them: by input signature, with the
IS_CHANGED hashes of the file loaders (LoadImage, LoadAudio: sha256 of the file;
VHS_LoadVideo: path + mtime); entries the next prompt does not use are dropped. Cached
nodes are listed in ``execution_cached`` and get no ``executing``.

Test-only control endpoints:

- ``POST /standin/faults`` JSON, any of: ``execution_error`` (true or a message: the next
  prompt fails at its sampler with a plain ``Exception``), ``oom`` (the next sampler raises
  ``torch.OutOfMemoryError`` "CUDA out of memory..."), ``missing_model`` (true, or a class name: the next
  model loader (of that class) raises ComfyUI's FileNotFoundError "Model in folder ... not found."), ``hang``
  (the next sampler never finishes until interrupted), ``drop_ws`` (every websocket is
  closed at the next sampler's first step), ``frames`` ("noise": the next sampler returns
  uniform noise, as ComfyUI does with tiny weights; "blank": black frames, WanVideoWrapper
  #1143), ``delay_s`` (seconds each sampler run takes,
  until changed), ``restart`` (at once: forget queue and history, stop the running prompt
  silently, drop every websocket, reset the number counter: a process restart),
  ``reset`` (clear every fault). ``GET /standin/faults`` shows them.
- ``GET /standin/stats``: prompts received / queued / rejected / executed / succeeded /
  failed / interrupted, uploads, websocket connections and drops, binary frames sent,
  restarts, cached nodes (summed over prompts), and the running prompt and node.
- ``POST /standin/models`` ``{"folder": [file names]}``: replace the installed model files
  of those folders (default `validation.SEED_MODELS`, the files the seed workflows use).
  A graph naming a model that is not installed fails validation with ``value_not_in_list``
  like the real server; input-file loaders accept any existing file (FILE_LIST_INPUTS).
"""

from __future__ import annotations

import asyncio
import copy
import heapq
import json
import logging
import mimetypes
import os
import struct
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from aiohttp import WSMsgType, web

from .nodes import InterruptProcessingException, OutOfMemoryError, Run, run_node
from .validation import (
    FILE_LIST_INPUTS,
    MODEL_LIST_INPUTS,
    SEED_MODELS,
    check_prompt,
    load_schema,
    model_choices,
    resolve_input_path,
)

log = logging.getLogger("comfy_standin")

COMFYUI_VERSION = "0.8.0"
PREVIEW_IMAGE = 1  # protocol.BinaryEventTypes.PREVIEW_IMAGE
OOM_TIPS = ("This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked before you "
            "might have accidentally set the batch_size to a large number.")
ONE_SHOT_FAULTS = ("execution_error", "oom", "missing_model", "hang", "drop_ws", "frames")
STANDIN_KEY: "web.AppKey[StandIn]" = web.AppKey("standin")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _full_type_name(klass: type) -> str:
    module = klass.__module__
    return klass.__qualname__ if module == "builtins" else module + "." + klass.__qualname__


def _format_value(x: Any) -> Any:
    if x is None or isinstance(x, (int, float, bool, str)):
        return x
    if isinstance(x, np.ndarray):
        return f"array(shape={tuple(x.shape)}, dtype={x.dtype})"
    return str(x)[:200]


def _execution_order(prompt: dict, outputs: list[str], cached: frozenset[str] = frozenset()) -> list[str]:
    """The nodes to run for `outputs`, dependencies first. A cached node is not expanded (its
    inputs are not needed): as ComfyUI's ExecutionList, it is only visited when an output
    asks for it, and then served from the cache."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(node_id: str) -> None:
        if node_id in seen:
            return
        seen.add(node_id)
        if node_id not in cached:
            for value in prompt[node_id]["inputs"].values():
                if isinstance(value, list) and len(value) == 2 and value[0] in prompt:
                    visit(value[0])
        order.append(node_id)

    for o in outputs:
        visit(o)
    return order


# ---------------------------------------------------------------------------- node cache
#
# ComfyUI 0.8.0's default (CLASSIC) output cache, comfy_execution/caching.py: a node's outputs
# are kept under its input signature, [class_type, IS_CHANGED result, (node id if the class
# takes a hidden UNIQUE_ID), each input sorted by name (a literal, or ("ANCESTOR", index,
# socket))], followed by the immediate signatures of its ancestors in a fixed order; before a
# prompt runs, entries whose signature is not in the new prompt are dropped. The cached
# nodes are announced in `execution_cached` and not executed.


def _is_link(value: Any) -> bool:  # comfy_execution.graph_utils.is_link
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], (int, float)) and not isinstance(value[1], bool))


def _sha256_file(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _vhs_file_hash(path: Path) -> str:  # videohelpersuite.utils.calculate_file_hash
    import hashlib

    h = hashlib.sha256()
    h.update(str(path).encode())
    h.update(str(os.path.getmtime(path)).encode())
    return h.hexdigest()


# IS_CHANGED (or fingerprint_inputs) of the classes the graphs use that define one: class ->
# (the input naming the file, how it is hashed). Classes without one give False.
IS_CHANGED_FILES = {
    "LoadImage": ("image", _sha256_file),  # nodes.LoadImage.IS_CHANGED
    "LoadImageMask": ("image", _sha256_file),
    "LoadAudio": ("audio", _sha256_file),  # comfy_extras.nodes_audio.LoadAudio.fingerprint_inputs
    "VHS_LoadVideo": ("video", _vhs_file_hash),
    "VHS_LoadVideoPath": ("video", _vhs_file_hash),
}


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple((k, _hashable(v)) for k, v in sorted(value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value


def cache_keys(prompt: dict, schema: dict, input_dir: Path, output_dir: Path, temp_dir: Path) -> dict[str, Any]:
    """Every node's cache key, as CacheKeySetInputSignature computes it."""
    is_changed: dict[str, Any] = {}

    def changed(node_id: str) -> Any:
        if node_id not in is_changed:
            node = prompt[node_id]
            spec = IS_CHANGED_FILES.get(node["class_type"])
            if spec is None:
                is_changed[node_id] = False
            else:
                name, fn = spec
                try:
                    path = resolve_input_path(node["inputs"].get(name), input_dir, output_dir, temp_dir)
                    is_changed[node_id] = fn(path)
                except Exception:  # ComfyUI logs a warning and stores NaN: never equal
                    is_changed[node_id] = object()
        return is_changed[node_id]

    def immediate(node_id: str, order: dict[str, int]) -> tuple:
        node = prompt[node_id]
        hidden = (schema.get(node["class_type"], {}).get("input", {}).get("hidden") or {})
        sig: list = [node["class_type"], changed(node_id)]
        if "UNIQUE_ID" in (hidden.values() if isinstance(hidden, dict) else hidden):
            sig.append(node_id)
        for key in sorted(node["inputs"]):
            value = node["inputs"][key]
            if _is_link(value) and value[0] in prompt:
                sig.append((key, ("ANCESTOR", order[value[0]], value[1])))
            else:
                sig.append((key, _hashable(value)))
        return tuple(sig)

    def ancestry(node_id: str, ancestors: list[str], order: dict[str, int]) -> None:
        inputs = prompt[node_id]["inputs"]
        for key in sorted(inputs):
            value = inputs[key]
            if _is_link(value) and value[0] in prompt and value[0] not in order:
                ancestors.append(value[0])
                order[value[0]] = len(ancestors) - 1
                ancestry(value[0], ancestors, order)

    keys = {}
    for node_id in prompt:
        ancestors: list[str] = []
        order: dict[str, int] = {}
        ancestry(node_id, ancestors, order)
        keys[node_id] = (immediate(node_id, order), *(immediate(a, order) for a in ancestors))
    return keys


class PromptQueue:
    """execution.PromptQueue: a heap of (number, prompt_id, prompt, extra_data, outputs, sensitive)."""

    def __init__(self, on_update) -> None:
        self.mutex = threading.RLock()
        self.not_empty = threading.Condition(self.mutex)
        self.on_update = on_update
        self.task_counter = 0
        self.queue: list = []
        self.currently_running: dict[int, tuple] = {}
        self.history: dict[str, dict] = {}

    def put(self, item: tuple) -> None:
        with self.mutex:
            heapq.heappush(self.queue, item)
            self.on_update()
            self.not_empty.notify()

    def get(self, timeout: float | None = None):
        with self.not_empty:
            while not self.queue:
                self.not_empty.wait(timeout=timeout)
                if timeout is not None and not self.queue:
                    return None
            item = heapq.heappop(self.queue)
            i = self.task_counter
            self.currently_running[i] = copy.deepcopy(item)
            self.task_counter += 1
            self.on_update()
            return item, i

    def task_done(self, item_id: int, history_result: dict, status: dict | None) -> None:
        with self.mutex:
            prompt = self.currently_running.pop(item_id)
            prompt = prompt[:5] + prompt[6:]
            self.history[prompt[1]] = {"prompt": list(prompt), "outputs": {}, "status": copy.deepcopy(status)}
            self.history[prompt[1]].update(history_result)
            self.on_update()

    def get_current_queue(self) -> tuple[list, list]:
        with self.mutex:
            return list(self.currently_running.values()), copy.copy(self.queue)

    def tasks_remaining(self) -> int:
        with self.mutex:
            return len(self.queue) + len(self.currently_running)

    def wipe_queue(self) -> None:
        with self.mutex:
            self.queue = []
            self.on_update()

    def delete_queue_item(self, match) -> bool:
        with self.mutex:
            for x in range(len(self.queue)):
                if match(self.queue[x]):
                    self.queue.pop(x)
                    heapq.heapify(self.queue)
                    self.on_update()
                    return True
        return False

    def get_history(self, prompt_id: str | None = None, max_items: int | None = None, offset: int = -1) -> dict:
        with self.mutex:
            if prompt_id is None:
                out, i = {}, 0
                if offset < 0 and max_items is not None:
                    offset = len(self.history) - max_items
                for k in self.history:
                    if i >= offset:
                        out[k] = copy.deepcopy(self.history[k])
                        if max_items is not None and len(out) >= max_items:
                            break
                    i += 1
                return out
            if prompt_id in self.history:
                return {prompt_id: copy.deepcopy(self.history[prompt_id])}
            return {}


@dataclass
class _Current:
    run: Run
    prompt_id: str
    client_id: str | None


class StandIn:  # noqa: D101 - documented in the module docstring
    """State and behaviour of one stand-in server (see the module docstring)."""

    def __init__(self, root: Path, schema: dict | None = None, *,
                 installed_models: dict[str, tuple[str, ...] | list[str]] | None = None,
                 step_s: float = 0.005) -> None:
        self.root = Path(root)
        self.input_dir = (self.root / "input").resolve()
        self.output_dir = (self.root / "output").resolve()
        self.temp_dir = (self.root / "temp").resolve()
        for d in (self.input_dir, self.output_dir, self.temp_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.schema = schema if schema is not None else load_schema()
        models = SEED_MODELS if installed_models is None else installed_models
        self.installed_models: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in models.items()}
        self.step_s = step_s
        self.loop: asyncio.AbstractEventLoop | None = None
        self.messages: asyncio.Queue | None = None
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.sockets_metadata: dict[str, dict] = {}
        self.queue = PromptQueue(self._queue_updated)
        self.number = 0
        self.interrupt = threading.Event()
        self.current: _Current | None = None
        self.node_cache: dict[Any, tuple[tuple, dict | None]] = {}  # cache key -> (outputs, UI output)
        self.last_node_id: str | None = None
        self.running_node: str | None = None
        self.faults: dict[str, Any] = {}
        self.delay_s = 0.0
        self.stats = {"prompts_received": 0, "prompts_queued": 0, "prompts_rejected": 0, "executed": 0,
                      "succeeded": 0, "failed": 0, "interrupted": 0, "interrupt_requests": 0, "uploads": 0,
                      "ws_connections": 0, "ws_dropped": 0, "binary_frames_sent": 0, "restarts": 0,
                      "cached_nodes": 0}
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._publisher: asyncio.Task | None = None
        self.app = self._make_app()

    # ------------------------------------------------------------------ messaging

    def send_sync(self, event: Any, data: Any, sid: str | None = None) -> None:
        """Thread-safe: queue a message for the publish loop (ComfyUI's send_sync)."""
        if self.loop is None or self.messages is None or self.loop.is_closed():
            return
        try:
            self.loop.call_soon_threadsafe(self.messages.put_nowait, (event, data, sid))
        except RuntimeError:
            pass  # loop shutting down

    def _queue_updated(self) -> None:
        self.send_sync("status", {"status": self._queue_info()})

    def _queue_info(self) -> dict:
        return {"exec_info": {"queue_remaining": self.queue.tasks_remaining()}}

    async def _publish_loop(self) -> None:
        assert self.messages is not None
        while True:
            event, data, sid = await self.messages.get()
            try:
                await self._send(event, data, sid)
            except Exception:  # noqa: BLE001 - a broken socket must not stop the loop
                log.debug("send failed", exc_info=True)

    async def _send(self, event: Any, data: Any, sid: str | None) -> None:
        if isinstance(event, int):
            message: Any = struct.pack(">I", event) + bytes(data)
            method = "send_bytes"
        else:
            message = {"type": event, "data": data}
            method = "send_json"
        targets = list(self.sockets.values()) if sid is None else (
            [self.sockets[sid]] if sid in self.sockets else [])
        for ws in targets:
            if ws.closed:
                continue
            try:
                await getattr(ws, method)(message)
                if method == "send_bytes":
                    self.stats["binary_frames_sent"] += 1
            except (ConnectionError, RuntimeError) as exc:
                log.debug("send error: %s", exc)

    async def drop_sockets(self) -> None:
        for sid, ws in list(self.sockets.items()):
            self.stats["ws_dropped"] += 1
            await ws.close()
            self.sockets.pop(sid, None)

    # ------------------------------------------------------------------ worker

    def _start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.messages = asyncio.Queue()
        self._publisher = asyncio.create_task(self._publish_loop())
        self._stop.clear()
        self._worker = threading.Thread(target=self._worker_loop, name="standin-prompt-worker", daemon=True)
        self._worker.start()

    async def _shutdown(self) -> None:
        self._stop.set()
        cur = self.current
        if cur is not None:
            cur.run.abort.set()
        with self.queue.not_empty:
            self.queue.not_empty.notify_all()
        if self._worker is not None:
            await asyncio.to_thread(self._worker.join, 10)
        for ws in list(self.sockets.values()):
            await ws.close()
        self.sockets.clear()
        if self._publisher is not None:
            self._publisher.cancel()
            try:
                await self._publisher
            except asyncio.CancelledError:
                pass

    def _worker_loop(self) -> None:
        while not self._stop.is_set():
            got = self.queue.get(timeout=0.1)
            if got is None:
                continue
            item, item_id = got
            try:
                self._execute(item, item_id)
            except Exception:  # noqa: BLE001 - keep serving, like ComfyUI's worker
                log.exception("stand-in executor failed")
                with self.queue.mutex:
                    if item_id in self.queue.currently_running:
                        self.queue.currently_running.pop(item_id, None)
                        self._queue_updated()

    def _take_faults(self) -> dict:
        with self.queue.mutex:
            taken = {k: self.faults.pop(k) for k in ONE_SHOT_FAULTS if self.faults.get(k)}
        return taken

    def _execute(self, item: tuple, item_id: int) -> None:
        number, prompt_id, prompt, extra_data, outputs_to_execute = item[:5]
        client_id = extra_data.get("client_id")
        self.interrupt.clear()  # nodes.interrupt_processing(False)
        run = Run(prompt_id=prompt_id, prompt=prompt, schema=self.schema, input_dir=self.input_dir,
                  output_dir=self.output_dir, temp_dir=self.temp_dir, installed_models=self.installed_models,
                  interrupt=self.interrupt, abort=threading.Event(), faults=self._take_faults(),
                  delay_s=self.delay_s, step_s=self.step_s)
        with self.queue.mutex:
            if item_id not in self.queue.currently_running:  # a restart came in between
                return
            self.current = _Current(run, prompt_id, client_id)

        def send(event, data, sid):
            if not run.abort.is_set():
                self.send_sync(event, data, sid)

        messages: list = []

        def add_message(event: str, data: dict, broadcast: bool) -> None:
            data = {**data, "timestamp": _now_ms()}
            messages.append([event, data])
            if client_id is not None or broadcast:
                send(event, data, client_id)

        states: dict[str, dict] = {}

        def progress_state() -> None:
            nodes = {n: {"value": s["value"], "max": s["max"], "state": s["state"], "node_id": n,
                         "prompt_id": prompt_id, "display_node_id": n, "parent_node_id": None, "real_node_id": n}
                     for n, s in states.items()}
            send("progress_state", {"prompt_id": prompt_id, "nodes": nodes}, None)

        def on_progress(node_id: str, value: int, total: int) -> None:
            run.check_interrupt()
            send("progress", {"value": value, "max": total, "prompt_id": prompt_id, "node": node_id}, client_id)
            states[node_id] = {"value": value, "max": total, "state": "running"}
            progress_state()

        def on_preview(frame: np.ndarray) -> None:
            small = frame
            scale = 512 / max(frame.shape[:2])
            if scale < 1:
                small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
            if ok:
                send(PREVIEW_IMAGE, struct.pack(">I", 1) + jpeg.tobytes(), client_id)

        def on_sampling() -> None:
            # drop at the first sampler step at which a socket is connected (a client that is
            # slow to connect would otherwise miss the fault)
            if run.faults.get("drop_ws") and self.sockets and self.loop is not None:
                run.faults.pop("drop_ws", None)
                asyncio.run_coroutine_threadsafe(self.drop_sockets(), self.loop).result(5)

        run.progress, run.preview, run.on_sampling = on_progress, on_preview, on_sampling

        add_message("execution_start", {"prompt_id": prompt_id}, broadcast=False)
        keys = cache_keys(prompt, self.schema, self.input_dir, self.output_dir, self.temp_dir)
        with self.queue.mutex:
            # CLASSIC cache: what the new prompt does not use is dropped
            used = set(keys.values())
            for key in [k for k in self.node_cache if k not in used]:
                del self.node_cache[key]
            cached = [n for n in prompt if keys[n] in self.node_cache]
            self.stats["cached_nodes"] += len(cached)
        add_message("execution_cached", {"nodes": cached, "prompt_id": prompt_id}, broadcast=False)
        outputs: dict[str, tuple] = {}
        ui_outputs: dict[str, dict] = {}
        executed: list[str] = []
        success = True
        interrupted = False
        for node_id in _execution_order(prompt, outputs_to_execute, frozenset(cached)):
            class_type = prompt[node_id]["class_type"]
            if node_id in cached:  # served from the cache: no "executing", its UI output again
                out, ui = self.node_cache[keys[node_id]]
                outputs[node_id] = out
                if client_id is not None:
                    send("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                      "prompt_id": prompt_id}, client_id)
                if ui:
                    ui_outputs[node_id] = {"meta": {"node_id": node_id, "display_node": node_id,
                                                    "parent_node": None, "real_node_id": node_id}, "output": ui}
                continue
            states[node_id] = {"value": 0, "max": 1, "state": "running"}
            self.running_node = node_id
            progress_state()
            if client_id is not None:
                self.last_node_id = node_id
                send("executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id}, client_id)
            try:
                out, ui = run_node(run, node_id, outputs)
            except InterruptProcessingException:
                if run.abort.is_set():
                    return
                add_message("execution_interrupted", {"prompt_id": prompt_id, "node_id": node_id,
                                                      "node_type": class_type, "executed": list(executed)},
                            broadcast=True)
                success, interrupted = False, True
                break
            except Exception as ex:  # noqa: BLE001 - reported like ComfyUI reports node errors
                if run.abort.is_set():
                    return
                typ, _, tb = sys.exc_info()
                tips = OOM_TIPS if isinstance(ex, OutOfMemoryError) else ""
                current_inputs = {k: [_format_value(v)] for k, v in prompt[node_id]["inputs"].items()}
                add_message("execution_error", {
                    "prompt_id": prompt_id, "node_id": node_id, "node_type": class_type,
                    "executed": list(executed), "exception_message": "{}\n{}".format(ex, tips),
                    "exception_type": _full_type_name(typ), "traceback": traceback.format_tb(tb),
                    "current_inputs": current_inputs, "current_outputs": [],
                }, broadcast=False)
                states[node_id]["state"] = "error"
                progress_state()
                success = False
                break
            outputs[node_id] = out
            with self.queue.mutex:
                self.node_cache[keys[node_id]] = (out, ui)
            if ui:
                ui_outputs[node_id] = {"meta": {"node_id": node_id, "display_node": node_id, "parent_node": None,
                                                "real_node_id": node_id}, "output": ui}
                if client_id is not None:
                    send("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                      "prompt_id": prompt_id}, client_id)
            states[node_id] = {"value": states[node_id]["max"], "max": states[node_id]["max"], "state": "finished"}
            progress_state()
            executed.append(node_id)
        else:
            add_message("execution_success", {"prompt_id": prompt_id}, broadcast=False)

        history_result = {"outputs": {k: v["output"] for k, v in ui_outputs.items()},
                          "meta": {k: v["meta"] for k, v in ui_outputs.items()}}
        with self.queue.mutex:
            if run.abort.is_set() or item_id not in self.queue.currently_running:
                return
            self.stats["executed"] += 1
            self.stats["succeeded" if success else ("interrupted" if interrupted else "failed")] += 1
            self.queue.task_done(item_id, history_result,
                                 {"status_str": "success" if success else "error", "completed": success,
                                  "messages": messages})
            self.current = None
            self.last_node_id = None
        if client_id is not None:
            send("executing", {"node": None, "prompt_id": prompt_id}, client_id)

    # ------------------------------------------------------------------ control

    async def restart(self) -> None:
        """Forget everything, like a killed and restarted ComfyUI process."""
        with self.queue.mutex:
            cur = self.current
            if cur is not None:
                cur.run.abort.set()
            self.queue.queue = []
            self.queue.currently_running.clear()
            self.queue.history.clear()
            self.current = None
            self.last_node_id = None
            self.number = 0
            self.node_cache.clear()  # a new process starts with an empty cache
            self.stats["restarts"] += 1
        await self.drop_sockets()

    def object_info(self) -> dict:
        info = copy.deepcopy(self.schema)
        files = sorted(p.name for p in self.input_dir.iterdir() if p.is_file())
        for (cls, name) in list(MODEL_LIST_INPUTS) + list(FILE_LIST_INPUTS):
            spec = (info.get(cls, {}).get("input", {}).get("required") or {}).get(name)
            if spec is None:
                continue
            choices = model_choices(cls, name, self.installed_models) if (cls, name) in MODEL_LIST_INPUTS else files
            if spec[0] == "COMBO":
                spec[1]["options"] = choices
            else:
                spec[0] = choices
        return info

    # ------------------------------------------------------------------ http

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=1024**3)
        app[STANDIN_KEY] = self
        routes = [
            ("GET", "/ws", self.ws_handler),
            ("GET", "/system_stats", self.system_stats),
            ("GET", "/features", self.features),
            ("GET", "/object_info", self.get_object_info),
            ("GET", "/object_info/{node_class}", self.get_object_info_node),
            ("GET", "/prompt", self.get_prompt),
            ("POST", "/prompt", self.post_prompt),
            ("GET", "/queue", self.get_queue),
            ("POST", "/queue", self.post_queue),
            ("GET", "/history", self.get_history),
            ("GET", "/history/{prompt_id}", self.get_history_prompt),
            ("POST", "/history", self.post_history),
            ("POST", "/interrupt", self.post_interrupt),
            ("POST", "/upload/image", self.upload_image),
            ("GET", "/view", self.view),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
            app.router.add_route(method, "/api" + path, handler)
        app.router.add_post("/standin/faults", self.post_faults)
        app.router.add_get("/standin/faults", self.get_faults)
        app.router.add_get("/standin/stats", self.get_stats)
        app.router.add_post("/standin/models", self.post_models)

        async def on_startup(_app):
            self._start()

        async def on_cleanup(_app):
            await self._shutdown()

        app.on_startup.append(on_startup)
        app.on_cleanup.append(on_cleanup)
        return app

    async def ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "")
        if sid:
            # reusing an existing session: as ComfyUI's server, the old socket is forgotten (left
            # open, it hears nothing more) and the new one takes its place at once, with no await
            # in between, so no message of a running prompt falls between the two
            self.sockets.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        self.sockets[sid] = ws
        self.sockets_metadata[sid] = {"feature_flags": {}}
        self.stats["ws_connections"] += 1
        try:
            await self._send("status", {"status": self._queue_info(), "sid": sid}, sid)
            cur = self.current
            if cur is not None and cur.client_id == sid and self.last_node_id is not None:
                await self._send("executing", {"node": self.last_node_id}, sid)
            first = True
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        data = json.loads(msg.data)
                    except json.JSONDecodeError:
                        continue
                    if first and isinstance(data, dict) and data.get("type") == "feature_flags":
                        self.sockets_metadata[sid]["feature_flags"] = data.get("data", {})
                        await self._send("feature_flags", self._features(), sid)
                    first = False
        finally:
            if self.sockets.get(sid) is ws:
                self.sockets.pop(sid, None)
                self.sockets_metadata.pop(sid, None)
        return ws

    def _features(self) -> dict:
        return {"supports_preview_metadata": True, "max_upload_size": 1024**3, "extension": {"manager": {}}}

    async def features(self, request: web.Request) -> web.Response:
        return web.json_response(self._features())

    async def system_stats(self, request: web.Request) -> web.Response:
        gib = 1024**3
        return web.json_response({
            "system": {"os": os.name, "ram_total": 128 * gib, "ram_free": 100 * gib,
                       "comfyui_version": COMFYUI_VERSION, "required_frontend_version": "1.35.9",
                       "installed_templates_version": "0.7.66", "required_templates_version": "0.7.66",
                       "python_version": sys.version, "pytorch_version": "2.9.1+cu128 (stand-in)",
                       "embedded_python": False, "argv": ["main.py", "--listen", "127.0.0.1"]},
            "devices": [{"name": "cuda:0 NVIDIA H100 80GB HBM3 : cudaMallocAsync", "type": "cuda", "index": 0,
                         "vram_total": 85_017_821_184, "vram_free": 84_000_000_000,
                         "torch_vram_total": 0, "torch_vram_free": 0}],
        })

    async def get_object_info(self, request: web.Request) -> web.Response:
        return web.json_response(self.object_info())

    async def get_object_info_node(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        info = self.object_info()
        return web.json_response({name: info[name]} if name in info else {})

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self._queue_info())

    async def post_prompt(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        self.stats["prompts_received"] += 1
        if "number" in json_data:
            number = float(json_data["number"])
        else:
            number = self.number
            if json_data.get("front"):
                number = -number
            self.number += 1
        if "prompt" not in json_data:
            error = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                     "extra_info": {}}
            self.stats["prompts_rejected"] += 1
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt = json_data["prompt"]
        prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
        valid = check_prompt(prompt, self.schema, check_files=True, input_dir=self.input_dir,
                             output_dir=self.output_dir, temp_dir=self.temp_dir,
                             installed_models=self.installed_models,
                             partial_execution_targets=json_data.get("partial_execution_targets"))
        extra_data = dict(json_data.get("extra_data") or {})
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        if valid[0]:
            self.stats["prompts_queued"] += 1
            self.queue.put((number, prompt_id, prompt, extra_data, valid[2], {}))
            return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": valid[3]})
        self.stats["prompts_rejected"] += 1
        return web.json_response({"error": valid[1], "node_errors": valid[3]}, status=400)

    async def get_queue(self, request: web.Request) -> web.Response:
        running, pending = self.queue.get_current_queue()
        return web.json_response({"queue_running": [list(x[:5]) for x in running],
                                  "queue_pending": [list(x[:5]) for x in pending]})

    async def post_queue(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        if json_data.get("clear"):
            self.queue.wipe_queue()
        for id_to_delete in json_data.get("delete", []) or []:
            self.queue.delete_queue_item(lambda a, i=id_to_delete: a[1] == i)
        return web.Response(status=200)

    async def get_history(self, request: web.Request) -> web.Response:
        q = request.rel_url.query
        max_items = int(q["max_items"]) if "max_items" in q else None
        offset = int(q["offset"]) if "offset" in q else -1
        return web.json_response(self.queue.get_history(max_items=max_items, offset=offset))

    async def get_history_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self.queue.get_history(prompt_id=request.match_info["prompt_id"]))

    async def post_history(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        with self.queue.mutex:
            if json_data.get("clear"):
                self.queue.history.clear()
            for k in json_data.get("delete", []) or []:
                self.queue.history.pop(k, None)
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.Response:
        try:
            json_data = await request.json()
        except (json.JSONDecodeError, ValueError):
            json_data = {}
        if not isinstance(json_data, dict):
            json_data = {}
        self.stats["interrupt_requests"] += 1
        prompt_id = json_data.get("prompt_id")
        if prompt_id:
            running, _ = self.queue.get_current_queue()
            if any(item[1] == prompt_id for item in running):
                self.interrupt.set()
        else:
            self.interrupt.set()
        return web.Response(status=200)

    def _dir_by_type(self, kind: str | None) -> Path | None:
        return {"input": self.input_dir, "output": self.output_dir, "temp": self.temp_dir}.get(kind or "input")

    async def upload_image(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        overwrite = post.get("overwrite")
        upload_type = post.get("type") or "input"
        upload_dir = self._dir_by_type(upload_type)
        if upload_dir is None or not hasattr(image, "file"):
            return web.Response(status=400)
        filename = image.filename
        if not filename:
            return web.Response(status=400)
        subfolder = post.get("subfolder", "") or ""
        folder = Path(os.path.join(upload_dir, os.path.normpath(subfolder)))
        filepath = Path(os.path.abspath(os.path.join(folder, filename)))
        if os.path.commonpath((str(upload_dir), str(filepath))) != str(upload_dir):
            return web.Response(status=400)
        folder.mkdir(parents=True, exist_ok=True)
        data = image.file.read()
        duplicate = False
        if not (overwrite is not None and overwrite in ("true", "1")):
            stem, ext = os.path.splitext(filename)
            i = 1
            while filepath.exists():
                if filepath.read_bytes() == data:
                    duplicate = True
                    break
                filename = f"{stem} ({i}){ext}"
                filepath = folder / filename
                i += 1
        if not duplicate:
            filepath.write_bytes(data)
        self.stats["uploads"] += 1
        return web.json_response({"name": filename, "subfolder": subfolder, "type": upload_type})

    async def view(self, request: web.Request) -> web.StreamResponse:
        q = request.rel_url.query
        if "filename" not in q:
            return web.Response(status=404)
        filename = q["filename"]
        kind = None
        for suffix in (" [input]", " [output]", " [temp]"):
            if filename.endswith(suffix):
                filename, kind = filename[: -len(suffix)], suffix.strip(" []")
                break
        if not filename or filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        base = self._dir_by_type(kind or q.get("type", "output"))
        if base is None:
            return web.Response(status=400)
        if "subfolder" in q:
            full = os.path.join(base, q["subfolder"])
            if os.path.commonpath((os.path.abspath(full), str(base))) != str(base):
                return web.Response(status=403)
            base = Path(full)
        name = os.path.basename(filename)
        path = Path(base) / name
        if not path.is_file():
            return web.Response(status=404)
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if content_type in {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript",
                            "text/css"}:
            content_type = "application/octet-stream"
        return web.FileResponse(path, headers={"Content-Disposition": f'filename="{name}"',
                                               "Content-Type": content_type})

    # ------------------------------------------------------------------ test control

    async def post_faults(self, request: web.Request) -> web.Response:
        data = await request.json()
        if data.get("reset"):
            with self.queue.mutex:
                self.faults.clear()
            self.delay_s = 0.0
        if "delay_s" in data:
            self.delay_s = float(data["delay_s"] or 0)
        with self.queue.mutex:
            for key in ONE_SHOT_FAULTS:
                if key in data:
                    if data[key]:
                        self.faults[key] = data[key]
                    else:
                        self.faults.pop(key, None)
        if data.get("restart"):
            await self.restart()
        return await self.get_faults(request)

    async def get_faults(self, request: web.Request) -> web.Response:
        with self.queue.mutex:
            return web.json_response({**self.faults, "delay_s": self.delay_s})

    async def get_stats(self, request: web.Request) -> web.Response:
        cur = self.current
        return web.json_response({**self.stats, "running_prompt": cur.prompt_id if cur else None,
                                  "running_node": self.running_node if cur else None})

    async def post_models(self, request: web.Request) -> web.Response:
        data = await request.json()
        for folder, names in data.items():
            self.installed_models[folder] = tuple(names)
        return web.json_response({k: list(v) for k, v in self.installed_models.items()})


def create_app(root: Path, schema: dict | None = None, **kwargs) -> web.Application:
    """The stand-in as an aiohttp application (its StandIn is app[STANDIN_KEY])."""
    return StandIn(root, schema, **kwargs).app


class StandInServer:
    """A running stand-in on 127.0.0.1 (see start_standin)."""

    def __init__(self, standin: StandIn, runner: web.AppRunner, host: str, port: int) -> None:
        self.standin = standin
        self.runner = runner
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"

    @property
    def root(self) -> Path:
        return self.standin.root

    async def close(self) -> None:
        await self.runner.cleanup()

    async def __aenter__(self) -> "StandInServer":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


async def start_standin(root: Path, schema: dict | None = None, *, host: str = "127.0.0.1", port: int = 0,
                        **kwargs) -> StandInServer:
    """Start the stand-in in the running event loop on host:port (0: a free port)."""
    standin = StandIn(root, schema, **kwargs)
    runner = web.AppRunner(standin.app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1] if site._server and site._server.sockets else port  # noqa: SLF001
    return StandInServer(standin, runner, host, bound)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tests.comfy_standin", description="ComfyUI 0.8.0 stand-in server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8188)
    ap.add_argument("--root", type=Path, required=True, help="folder for input/, output/ and temp/")
    ap.add_argument("--schema", type=Path, default=None, help="object_info schema (default: the test fixture)")
    ap.add_argument("--step-s", type=float, default=0.05, help="seconds per sampler step")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    schema = load_schema(args.schema) if args.schema else None
    web.run_app(create_app(args.root, schema, step_s=args.step_s), host=args.host, port=args.port)
    return 0
