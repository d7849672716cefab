"""Per-window overhead the service adds around one ComfyUI prompt, against the stand-in.

    .venv/bin/python bench/comfy_overhead.py [--windows 10] [--size 512]

Runs ComfyUIBackend.render_window for consecutive windows of one render against the
ComfyUI stand-in (tests/comfy_standin, run as its own process: `python -m tests.comfy_standin`,
as a real ComfyUI is) and splits each window's wall time into
uploads, submit, waiting for the prompt (the stand-in's own execution: the preview renderer
standing in for the GPU), output downloads + PNG decode, and colour matching. The overhead the
service adds is everything but the wait.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from longtalk import av_io  # noqa: E402
from longtalk.backends import comfyui as comfy_backend  # noqa: E402
from longtalk.backends.base import WindowJob  # noqa: E402
from longtalk.comfy.client import ComfyClient  # noqa: E402
from longtalk.comfy.config import GraphConfig  # noqa: E402
from longtalk.spec import RenderSpec  # noqa: E402
from longtalk.stack import free_port  # noqa: E402
from longtalk.testing import standin_process  # noqa: E402


class Timed:
    """Wraps the client's calls and adds up their wall time by name."""

    def __init__(self, client: ComfyClient) -> None:
        self.client, self.spent = client, {}

    def wrap(self, name: str) -> None:
        original = getattr(self.client, name)

        async def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - started
        setattr(self.client, name, timed)


async def main(windows: int, size: int) -> None:
    speech = av_io.decode_audio_16k(ROOT / "examples" / "speech.ogg", "audio")
    portrait = av_io.fit_image(av_io.decode_image((ROOT / "examples" / "portrait.png").read_bytes(), "image"),
                               size, size)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        standin = standin_process("tests.comfy_standin", port, Path(tmp), "--root", str(Path(tmp) / "comfy"),
                                  "--step-s", "0")
        try:
            rows = await measure(ComfyClient(f"http://127.0.0.1:{port}", poll_interval_s=0.05), windows, size,
                                 speech, portrait)
        finally:
            standin.stop()
    print_rows(rows, windows, size)


async def measure(client: ComfyClient, windows: int, size: int, speech, portrait) -> list[dict]:
    """Each window's wall time and the client's calls in it, by name."""
    timed = Timed(client)
    for name in ("upload", "submit", "wait", "download", "find", "history", "system_stats"):
        timed.wrap(name)
    backend = comfy_backend.ComfyUIBackend(client, GraphConfig())
    rid = f"bench-{uuid.uuid4().hex[:6]}"
    tail = np.repeat(portrait[None], 9, axis=0)
    spec = RenderSpec(width=size, height=size, window=81, motion=9, fps=25)
    rows = []
    try:
        for k in range(windows):
            job = WindowJob(render_id=rid, index=k, spec=spec, frame_start=72 * k, reference=portrait, tail=tail,
                            audio=[speech[72 * k * 640:(72 * k + 81) * 640]], chain_start=(k == 0))
            timed.spent.clear()
            started = time.perf_counter()
            frames = await backend.render_window(job)
            total = time.perf_counter() - started
            tail = frames[-9:]
            spent = dict(timed.spent)
            rows.append({"total": total, **spent, "overhead": total - spent.get("wait", 0.0)})
    finally:
        await backend.close()
    return rows


def print_rows(rows: list[dict], windows: int, size: int) -> None:
    print(f"ComfyUI per-window overhead against the stand-in: {windows} windows of {size}x{size}x81, "
          f"9 tail PNGs up, 81 PNG frames down")
    keys = ["total", "wait", "overhead", "upload", "submit", "find", "history", "download", "system_stats"]
    print(f"{'':10s}" + "".join(f"{k:>12s}" for k in keys))
    for label, fn in (("median", statistics.median), ("max", max)):
        print(f"{label:10s}" + "".join(f"{fn([r.get(k, 0.0) for r in rows[1:] or rows]) * 1000:11.1f}m"
                                      for k in keys))
    print("(ms; 'wait' is the stand-in executing the graph, the rest is what the service adds; "
          "window 0 excluded from the statistics)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=10)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    asyncio.run(main(args.windows, args.size))
