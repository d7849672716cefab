"""Dashboard load times with many renders and several GPU workers.

    .venv/bin/python bench/dashboard.py [--renders 200] [--workers 4] [--running 6] [--reps 10]

Starts its own Temporal dev server and S3 server (free loopback ports, one temporary folder
removed at the end), in-process workers (one CPU worker, `--workers` GPU workers with the
preview backend, each keeping its fleet record) and the HTTP API (uvicorn, in process). Seeds
`--renders` short renders (128x128, one window each, through /run), of which the last
`--running` are long (17 windows) and slowed to about a second a window, so they are still
running while the pages are measured. Then times, `--reps` times each:

- the JSON the pages poll: the renders list (first page of 50, and filtered), one render
  (running; finished: the first call and the cached ones), the fleet, a thumbnail, the HLS
  playlist;
- the pages in headless chromium (when chromium + chromedriver are installed): from
  navigation start to the content drawn (rows of the table, the window strip, the fleet tiles).

Prints a table and a final line `BENCH_JSON {...}`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the project first: bench/api.py (this script's folder) would shadow the api package
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import httpx  # noqa: E402

from longtalk.backends.preview import PreviewBackend  # noqa: E402
from longtalk.converter import DATA_CONVERTER  # noqa: E402
from longtalk.settings import Settings  # noqa: E402
from longtalk.stack import free_port  # noqa: E402
from longtalk.store import ObjectStore  # noqa: E402
from tests.api_server import KEY_A, api_settings, running_api  # noqa: E402
from tests.helpers import s3_process, temporal_process  # noqa: E402
from tests.media import EXAMPLES, cut_audio  # noqa: E402

EP = "bench"


class PacedPreview(PreviewBackend):
    """The preview renderer, `pace_s` slower for every window after the first: the short
    renders (one window) finish at once, the long ones run at about a window a second."""

    def __init__(self, pace_s: float) -> None:
        super().__init__()
        self.pace_s = pace_s

    async def render_window(self, job, progress=None):
        if job.index > 0:
            await asyncio.sleep(self.pace_s)
        return await super().render_window(job, progress)


def stats(samples: list[float]) -> dict:
    s = sorted(samples)
    return {"median_ms": round(1000 * statistics.median(s), 1),
            "p95_ms": round(1000 * s[min(len(s) - 1, int(0.95 * len(s)))], 1),
            "max_ms": round(1000 * s[-1], 1), "n": len(s)}


async def timed(client: httpx.AsyncClient, path: str, reps: int) -> dict:
    print(f"  {path}", flush=True)
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        r = await client.get(path)
        out.append(time.perf_counter() - t)
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
    return {**stats(out), "bytes": len(r.content)}


def browser_times(base: str, key: str, running_id: str, done_id: str, reps: int, rows: int) -> dict:
    from tests.test_dashboard import chromium_paths

    paths = chromium_paths()
    if paths is None:
        return {"skipped": "no chromium + chromedriver"}
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    opts.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,800",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--mute-audio"):
        opts.add_argument(arg)
    opts.page_load_strategy = "eager"
    d = webdriver.Chrome(service=Service(paths[1]), options=opts)
    try:
        d.get(f"{base}/login?key={key}")  # loopback: the login link

        def until(css: str, count: int = 1) -> None:
            deadline = time.monotonic() + 60
            while len(d.find_elements(By.CSS_SELECTOR, css)) < count:
                if time.monotonic() > deadline:
                    raise TimeoutError(css)
                time.sleep(0.01)

        out = {}
        for name, url, css, count in (("renders page", "/", "#renders tbody tr[data-id]", rows),
                                      ("render page (running)", f"/renders/{running_id}", "#strip .cell", 17),
                                      ("render page (done)", f"/renders/{done_id}", "#final", 1),
                                      ("fleet page", "/fleet", "#workers tbody tr[data-worker]", 1)):
            samples = []
            for _ in range(reps):
                t = time.perf_counter()
                d.get(base + url)
                until(css, count)
                samples.append(time.perf_counter() - t)
            out[name] = stats(samples)
        return out
    finally:
        d.quit()


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--renders", type=int, default=200)
    ap.add_argument("--workers", type=int, default=4, help="GPU workers")
    ap.add_argument("--running", type=int, default=6, help="of the renders, long ones still running when measured")
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    procs, workers, tasks = [], [], []
    try:
        base_settings = Settings(
            data_dir=folder, temporal_address=f"127.0.0.1:{free_port()}", s3_endpoint=f"127.0.0.1:{free_port()}",
            bucket="bench", render_queue=f"render-{uuid.uuid4().hex[:6]}", gpu_queue=f"gpu-{uuid.uuid4().hex[:6]}",
            input_roots="*", fleet_heartbeat_s=5)
        procs += [s3_process(base_settings, folder), temporal_process(base_settings, folder)]
        from temporalio.client import Client

        from worker import build_workers

        client = await Client.connect(base_settings.temporal_address, data_converter=DATA_CONVERTER)
        store = ObjectStore.from_settings(base_settings)
        store.ensure_bucket()
        workers += build_workers(client, dataclasses.replace(base_settings, worker_roles="cpu"), store,
                                backends={"preview": PacedPreview(1.0)}, identity="bench")
        for i in range(args.workers):  # a client each: the SDK allows one worker per queue and client
            gpu_client = await Client.connect(base_settings.temporal_address, data_converter=DATA_CONVERTER)
            workers += build_workers(gpu_client, dataclasses.replace(base_settings, worker_roles="gpu"), store,
                                     backends={"preview": PacedPreview(1.0)}, identity=f"gpu{i}")
        tasks += [asyncio.create_task(w.run()) for w in workers]
        settings = api_settings(base_settings)
        speech = cut_audio(EXAMPLES / "speech.ogg", folder / "speech.wav", 1.0, 3.0)
        short = {"input": {"image_path": str(EXAMPLES / "portrait.png"), "wav_path": str(speech),
                           "width": 128, "height": 128, "max_frame": 81}}
        long = {"input": {"image_path": str(EXAMPLES / "portrait.png"), "wav_path": str(EXAMPLES / "speech.ogg"),
                          "width": 128, "height": 128}}
        async with running_api(settings, client, store) as base:
            async with httpx.AsyncClient(base_url=base, timeout=300,
                                         headers={"Authorization": f"Bearer {KEY_A}"}) as c:
                t0 = time.perf_counter()
                gate = asyncio.Semaphore(8)
                ids: list[str] = []

                async def submit(body: dict) -> str:
                    async with gate:
                        r = await c.post(f"/v2/{EP}/run", json=body)
                        assert r.status_code == 200, r.text
                        return r.json()["id"]

                ids = await asyncio.gather(*(submit(short) for _ in range(args.renders - args.running)))
                print(f"submitted {len(ids)} short renders in {time.perf_counter() - t0:.1f}s", flush=True)
                done_id = ids[0]
                for rid in ids:  # until they are all finished
                    await c.get(f"/v2/{EP}/status-sync/{rid}?wait=300000")
                print(f"short renders finished after {time.perf_counter() - t0:.1f}s", flush=True)
                running = [await submit(long) for _ in range(args.running)]
                running_id = running[0]
                while (await c.get(f"/dashboard/api/renders/{running_id}")).json()["windows_done"] < 2:
                    await asyncio.sleep(0.5)
                await asyncio.sleep(6)  # every GPU worker has written its fleet record
                total = (await c.get("/dashboard/api/renders")).json()["counts"]["all"]
                print(f"{total} renders in visibility, {args.running} running; measuring", flush=True)
                results = {
                    "renders JSON (first 50)": await timed(c, "/dashboard/api/renders?limit=50", args.reps),
                    "renders JSON (status=running)": await timed(c, "/dashboard/api/renders?status=running", args.reps),
                    "renders JSON (search by id)": await timed(c, f"/dashboard/api/renders?q={done_id[:6]}", args.reps),
                    "render JSON (running)": await timed(c, f"/dashboard/api/renders/{running_id}", args.reps),
                    "render JSON (done, first)": await timed(c, f"/dashboard/api/renders/{ids[1]}", 1),
                    "render JSON (done, cached)": await timed(c, f"/dashboard/api/renders/{ids[1]}", args.reps),
                    "fleet JSON": await timed(c, "/dashboard/api/fleet", args.reps),
                    "thumbnail (first)": await timed(c, f"/dashboard/api/renders/{ids[2]}/thumb", 1),
                    "HLS playlist (running)": await timed(c, f"/dashboard/api/renders/{running_id}/hls/index.m3u8",
                                                          args.reps),
                    "HLS segment 0 (first build)": await timed(c, f"/dashboard/api/renders/{running_id}/hls/0.ts", 1),
                    "renders page HTML": await timed(c, "/", args.reps),
                }
                print("the pages in chromium", flush=True)
                results.update(await asyncio.to_thread(browser_times, base, KEY_A, running_id, done_id,
                                                       max(3, args.reps // 2), min(50, total)))
                fleet = (await c.get("/dashboard/api/fleet")).json()
                for rid in running:
                    await c.post(f"/v2/{EP}/cancel/{rid}")
        print(f"\n{'what':34s} {'median ms':>10s} {'p95 ms':>8s} {'max ms':>8s}  n")
        for name, r in results.items():
            if "median_ms" in r:
                print(f"{name:34s} {r['median_ms']:10.1f} {r['p95_ms']:8.1f} {r['max_ms']:8.1f}  {r['n']}")
            else:
                print(f"{name:34s} {r}")
        print(f"fleet: {len(fleet['workers'])} workers, queue {fleet['queue']}")
        print("BENCH_JSON " + json.dumps({"renders": total, "gpu_workers": len(fleet["workers"]),
                                          "running": args.running, "results": results}))
        return 0
    finally:
        for w in workers:  # before the servers go: a worker's shutdown talks to Temporal
            await w.shutdown()
        await asyncio.gather(*tasks, return_exceptions=True)
        for p in procs:
            p.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
