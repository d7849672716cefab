"""The estimate before start (issue 21): POST /v2/{endpoint}/estimate and starter.py --estimate,
against the real Temporal and S3 servers and in-process workers (preview backend); the fleet
simulation and the price table on their own."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import pytest

from longtalk.fleet import read_fleet
from longtalk.fleet_sim import SimRender, simulate
from longtalk.gpu_time import Prices, default_window_s, window_kind
from longtalk.settings import Settings
from longtalk.usage import actual_usage
from longtalk.windows import WindowParams, total_frames, window_count
from longtalk.testing import KEY_A, api_settings
from tests.api_server import running_api_with_fleet
from tests.helpers import run_starter, write_job
from tests.media import EXAMPLES, samples_16k

pytestmark = pytest.mark.timeout(300)
EP = "ep-estimate"
PRICE = "*=3.6"  # 3.6 per GPU hour: a thousandth a second


@pytest.fixture(scope="module")
def own_settings(settings):
    return api_settings(settings, gpu_prices=PRICE)


@pytest.fixture(scope="module")
async def api(own_settings, temporal_client, store, workers):
    async with running_api_with_fleet(own_settings, temporal_client, store, workers) as base:
        yield base


@pytest.fixture
async def http(api):
    async with httpx.AsyncClient(base_url=f"{api}/v2/{EP}", headers={"Authorization": f"Bearer {KEY_A}"},
                                 timeout=120) as c:
        yield c


def job(size: int, **extra) -> dict:
    return {"input": {"image_path": str(EXAMPLES / "portrait.png"), "wav_path": str(EXAMPLES / "speech.ogg"),
                      "width": size, "height": size, **extra}}


async def everything(client, store) -> tuple[list[str], list[str]]:
    renders = sorted([w.id async for w in client.list_workflows("WorkflowType = 'RenderVideo'")])
    return renders, sorted(await asyncio.to_thread(lambda: list(store.list("renders/"))))


async def run_to_end(http, body: dict) -> dict:
    started = await http.post("/run", json=body)
    assert started.status_code == 200, started.text
    rid = started.json()["id"]
    for _ in range(240):
        status = (await http.get(f"/status/{rid}")).json()
        if status["status"] not in ("IN_QUEUE", "IN_PROGRESS"):
            break
        await asyncio.sleep(0.5)
    assert status["status"] == "COMPLETED", status
    return status


async def test_estimate_matches_the_plan_and_starts_nothing(http, temporal_client, store, own_settings):
    body = job(128, parallel_chains=2)
    before = await everything(temporal_client, store)
    answer = await http.post("/estimate", json=body)
    assert answer.status_code == 200, answer.text
    est = answer.json()
    assert await everything(temporal_client, store) == before  # nothing started, nothing stored
    # the plan's arithmetic on the track's own length
    params = WindowParams(own_settings.window, own_settings.motion, own_settings.fps)
    frames = total_frames(samples_16k(EXAMPLES / "speech.ogg"), params)
    assert abs(est["frames"] - frames) <= 1
    assert est["windows"] == window_count(frames, params) and est["chains"] == 2
    assert set(est["sources"]) >= {"frames", "windows", "chains", "gpu_s", "cost", "wall_s"}
    assert est["gpu_busy_s"] > 0 and est["cost"] == pytest.approx(est["gpu_busy_s"] / 1000, rel=0.01, abs=1e-4)
    assert est["wall_s"] is not None and est["gpu_workers"] >= 1

    status = await run_to_end(http, body)
    plan = await asyncio.to_thread(store.get_json, f"renders/{status['id']}/plan.json")
    assert (plan["total_frames"], plan["windows"], len(plan["chains"])) == (est["frames"], est["windows"],
                                                                            est["chains"])
    usage = status["output"]["usage"]
    assert usage["estimate"]["gpu_busy_s"] > 0  # the plan's own estimate
    actual = usage["actual"]
    assert actual["windows_rendered"] == plan["windows"]
    assert actual["gpu_busy_s"] >= actual["gpu_s"] > 0
    # the session's CPU worker has no prices: the cost says so; with them, the same windows cost
    assert actual["cost"] is None and "LONGTALK_GPU_PRICES" in actual["sources"]["cost"]
    metas = [k for k in await asyncio.to_thread(lambda: list(store.list(f"renders/{status['id']}/windows/")))
             if k.endswith("/meta.json")]
    priced = await asyncio.to_thread(actual_usage, store, metas, Prices(PRICE))
    assert priced["cost"] == pytest.approx(actual["gpu_busy_s"] / 1000, rel=0.01, abs=1e-4)


async def test_history_replaces_the_default_once_a_render_ran(http, store):
    body = job(144)  # a picture size no other test renders: no history yet
    first = (await http.post("/estimate", json=body)).json()
    assert first["sources"]["gpu_s"].count("default:") == 1 and "history" not in first["sources"]["gpu_s"]
    await run_to_end(http, body)
    second = (await http.post("/estimate", json=body)).json()
    assert "history:" in second["sources"]["gpu_s"]
    kind = window_kind("preview", "i2v-single", 144, 144, 81)
    assert second["window_kind"] == kind
    records = [r for r in await asyncio.to_thread(read_fleet, store) if kind in (r.get("timings") or {})]
    assert records, "no fleet record carries the render's window times"
    timing = records[0]["timings"][kind]
    assert timing["n"] >= second["windows"] - 1
    assert second["per_gpu"][0]["window_s"] == pytest.approx(timing["busy_s"], abs=0.01)


@pytest.mark.parametrize("change, field", [
    ({"wav_path": "/nonexistent/talk.wav"}, "wav_path"),
    ({"width": 100}, "width"),
    ({"image_path": None, "image_url": "http://169.254.169.254/x.png"}, "image_url"),
])
async def test_bad_input_is_refused_like_run(http, temporal_client, store, change, field):
    body = job(128)
    body["input"] = {k: v for k, v in {**body["input"], **change}.items() if v is not None}
    before = await everything(temporal_client, store)
    estimate, run = await http.post("/estimate", json=body), await http.post("/run", json=body)
    assert (estimate.status_code, run.status_code) == (400, 400)
    assert estimate.json()["error"].startswith(f"{field}:") and run.json()["error"].startswith(f"{field}:")
    assert await everything(temporal_client, store) == before
    assert (await http.post("/estimate", json={"nope": 1})).json()["error"].startswith("input:")


async def test_starter_estimate_prints_and_starts_nothing(api, temporal_client, store, own_settings, tmp_path):
    path = write_job(tmp_path, image_path=str(EXAMPLES / "portrait.png"), wav_path=str(EXAMPLES / "speech.ogg"),
                     width=128, height=128)
    before = await everything(temporal_client, store)
    rc, out, err = await run_starter(temporal_client, own_settings, path, "--estimate")
    assert rc == 0, err
    assert out["windows"] >= 2 and out["gpu_busy_s"] > 0 and "sources" in out
    assert await everything(temporal_client, store) == before
    rc, _out, err = await run_starter(temporal_client, own_settings, path, "--estimate", "--width", "99")
    assert rc == 2 and "width" in err


def test_fair_queue_simulation():
    # one worker, two one-chain renders: served in turn, so both end near the end
    a, b = SimRender("a", [4], [1.0]), SimRender("b", [4], [1.0])
    simulate([a, b], 1, dispatch_s=0.0)
    assert (a.done_s, b.done_s) == (7.0, 8.0)
    # a chain's windows follow each other: a second worker does not help a one-chain render...
    one = SimRender("one", [6], [1.0, 1.0])
    simulate([one], 2, dispatch_s=0.0)
    assert one.done_s == 6.0
    # ...two chains use both
    two = SimRender("two", [3, 3], [1.0, 1.0])
    simulate([two], 2, dispatch_s=0.0)
    assert two.done_s == 3.0 and two.on_worker == [3, 3]
    # chain affinity: a chain's next window waits for its own worker, so with three chains on two
    # workers the third chain's last window waits for worker 0 while worker 1 idles
    for affinity, done in ((0.0, 3.0), (10.0, 4.0)):
        three = SimRender("three", [2, 2, 2], [1.0, 1.0])
        simulate([three], 2, dispatch_s=0.0, affinity_s=affinity)
        assert three.done_s == done, (affinity, three.done_s)


def test_affinity_wait_is_at_most_half_a_window():
    """A chain waits for its previous worker at most half a window's expected time: longer, and two
    chains pinned to one worker would take turns on it while another worker idles."""
    from longtalk.gpu_time import affinity_wait_s
    from longtalk.spec import RenderSpec

    spec = RenderSpec(width=832, height=480)
    assert affinity_wait_s(Settings(timed_window_s=3.0), "timed", spec) == 2  # half of 3 s, rounded up
    assert affinity_wait_s(Settings(timed_window_s=60.0), "timed", spec) == 10  # the setting's 10 s
    assert affinity_wait_s(Settings(affinity_wait_s=0), "comfyui", spec) == 0  # off stays off
    assert affinity_wait_s(Settings(), "preview", spec) == 1  # at least a second


def test_prices_and_defaults():
    prices = Prices("4090=0.72, H100=0.0009/s")
    assert prices.for_device("NVIDIA GeForce RTX 4090")[0] == pytest.approx(0.0002)
    assert prices.for_device("NVIDIA H100 80GB HBM3")[0] == pytest.approx(0.0009)
    assert prices.for_device("NVIDIA A10G") is None
    with pytest.raises(ValueError, match="LONGTALK_GPU_PRICES"):
        Settings(gpu_prices="4090:0.7")
    base = default_window_s("NVIDIA GeForce RTX 4090", "comfyui", "i2v-single", 832, 480, 81, 2.0)
    half = default_window_s("NVIDIA GeForce RTX 4090", "comfyui", "i2v-single", 416, 480, 81, 2.0)
    assert half.busy_s == pytest.approx(base.busy_s / 2) and "published" in base.source
    assert "has no figure" in default_window_s("NVIDIA L4", "comfyui", "i2v-single", 832, 480, 81, 2.0).source
    assert default_window_s("", "timed", "i2v-single", 64, 64, 81, 3.0).busy_s == 3.0
    assert dataclasses.replace(Settings(), gpu_prices=PRICE).gpu_prices == PRICE
