"""The ops dashboard (api/dashboard/; routes in api/routes/): login and sessions, CSRF on
actions, owners and admins, the HLS live preview, the fleet page's JSON; then the pages in a
real browser (Debian's chromium + chromium-driver through Selenium), against the real
Temporal and S3 servers and in-process workers (preview backend)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import uuid
from pathlib import Path

import av
import httpx
import pytest

from api.hls import BASE_S
from longtalk.errors import OutputMismatch
from longtalk.fleet import FleetRecord, record_key
from longtalk.testing import EXAMPLES, KEY_A, KEY_B, api_settings, chromium_paths, headless_chromium
from tests.api_server import cancel_running, running_api
from tests.media import ROOT

pytestmark = pytest.mark.timeout(300)
EP = "dash-ep"
KEY_ROOT = "key-root-" + uuid.uuid4().hex
SHOTS = ROOT / "out" / "screenshots"


@pytest.fixture(scope="module")
def own_settings(settings):
    s = api_settings(settings, heartbeat_timeout_s=4, api_admin_names="root")
    return dataclasses.replace(s, api_keys=s.api_keys + f",root:{KEY_ROOT}", api_endpoint_ids=EP)


@pytest.fixture(scope="module")
async def api(own_settings, temporal_client, store, workers):
    async with running_api(own_settings, temporal_client, store) as base:
        yield base
    await cancel_running(temporal_client, ('alice', 'bob', 'root'))


@dataclasses.dataclass
class Gpu:
    slow: dict  # render id -> seconds each of its windows takes more (a GPU's pace, to watch)
    fail: dict  # render id -> the window that fails (non-retryable)


@pytest.fixture
def gpu(backend, monkeypatch) -> Gpu:
    g = Gpu({}, {})
    render = backend.render_window

    async def render_window(job, progress=None):
        if g.fail.get(job.render_id) == job.index:
            raise OutputMismatch(f"test: window {job.index} came back with the wrong frame count")
        if job.render_id in g.slow:
            await asyncio.sleep(g.slow[job.render_id])
        return await render(job, progress)

    monkeypatch.setattr(backend, "render_window", render_window)
    return g


def job(media, long: bool = False, size: int = 128) -> dict:
    audio = EXAMPLES / "speech.ogg" if long else media["speech_mp3"]
    return {"input": {"image_path": str(media["portrait"]), "wav_path": str(audio), "width": size, "height": size}}


async def session(api: str, key: str) -> httpx.AsyncClient:
    """A client logged in through the form, like a browser: the cookie and the page's CSRF token."""
    c = httpx.AsyncClient(base_url=api, timeout=120, follow_redirects=False)
    r = await c.post("/login", data={"key": key, "next": "/"})
    assert r.status_code == 303, r.text
    page = await c.get("/")
    c.csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
    return c


def next_id(monkeypatch) -> str:
    """The id the API gives the next render (so the test can slow its windows before it starts)."""
    from api import jobs

    rid = str(uuid.uuid4())
    monkeypatch.setattr(jobs, "new_render_id", lambda: rid)
    return rid


async def submit(api: str, key: str, body: dict) -> str:
    async with httpx.AsyncClient(base_url=f"{api}/v2/{EP}", timeout=120,
                                 headers={"Authorization": f"Bearer {key}"}) as c:
        r = await c.post("/run", json=body)
        assert r.status_code == 200, r.text
        return r.json()["id"]


async def wait_status(api: str, key: str, rid: str, timeout_ms: int = 120000) -> dict:
    async with httpx.AsyncClient(base_url=f"{api}/v2/{EP}", timeout=timeout_ms / 1000 + 30,
                                 headers={"Authorization": f"Bearer {key}"}) as c:
        return (await c.get(f"/status-sync/{rid}?wait={timeout_ms}")).json()


# ---- sessions, CSRF, owners ------------------------------------------------------------

async def test_login_cookie_logout(api, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(base_url=api, timeout=60) as c:
        r = await c.get("/")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
        assert (await c.get("/dashboard/api/renders")).status_code == 401
        r = await c.post("/login", data={"key": "not-a-key-0123456789", "next": "/"})
        assert r.status_code == 401 and "not valid" in r.text and "lt_session" not in r.headers.get("set-cookie", "")
        # a login form posted from another site is refused
        r = await c.post("/login", data={"key": KEY_A}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
        r = await c.post("/login", data={"key": KEY_A, "next": "//evil.example/x"})
        assert r.status_code == 303 and r.headers["location"] == "/"  # no open redirect
        cookie = r.headers["set-cookie"]
        assert "lt_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert "Secure" not in cookie  # the API listens on loopback (plain http)
        assert KEY_A not in cookie
        page = await c.get("/")
        assert page.status_code == 200 and 'name="csrf-token"' in page.text and "alice" in page.text
        assert KEY_A not in page.text
        assert (await c.get("/dashboard/api/renders")).json()["viewer"] == "alice"
        # logging out needs the page's CSRF token
        assert (await c.post("/logout", data={})).status_code == 403
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
        r = await c.post("/logout", data={"csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/login"
        c.cookies.clear()
        assert (await c.get("/dashboard/api/renders")).status_code == 401
        # a forged or tampered cookie is nobody
        c.cookies.set("lt_session", cookie.split(";")[0].split("=", 1)[1][:-2] + "xx")
        assert (await c.get("/dashboard/api/renders")).status_code == 401
    assert KEY_A not in caplog.text


async def test_login_link_on_loopback(api):
    async with httpx.AsyncClient(base_url=api, timeout=60) as c:
        r = await c.get("/login", params={"key": KEY_B})
        assert r.status_code == 303 and r.headers["location"] == "/"  # the key leaves the address bar
        assert (await c.get("/dashboard/api/renders")).json()["viewer"] == "bob"
        c.cookies.clear()
        assert (await c.get("/login", params={"key": "wrong-key-0123456789"})).status_code == 401


async def test_actions_need_the_csrf_token_and_owners_are_apart(api, media, gpu, monkeypatch):
    rid = next_id(monkeypatch)
    gpu.slow[rid] = 6.0  # longer than a heartbeat interval: the cancel reaches the window
    assert await submit(api, KEY_A, job(media, long=True)) == rid
    alice = await session(api, KEY_A)
    bob = await session(api, KEY_B)
    root = await session(api, KEY_ROOT)
    try:
        # the cookie alone does not act: a page of this server must send the token
        for headers in ({}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": bob.csrf}):
            r = await alice.post(f"/v2/{EP}/cancel/{rid}", headers=headers)
            assert r.status_code == 401, (headers, r.text)
        # another owner's render is not there, on any dashboard route
        for path in (f"/dashboard/api/renders/{rid}", f"/dashboard/api/renders/{rid}/hls/index.m3u8",
                     f"/dashboard/api/renders/{rid}/thumb", f"/dashboard/api/renders/{rid}/windows/0"):
            assert (await bob.get(path)).status_code == 404, path
        assert (await bob.post(f"/v2/{EP}/cancel/{rid}", headers={"X-CSRF-Token": bob.csrf})).status_code == 404
        assert rid not in [r["id"] for r in (await bob.get("/dashboard/api/renders")).json()["renders"]]
        assert rid in [r["id"] for r in (await alice.get("/dashboard/api/renders")).json()["renders"]]
        # the admin sees every owner's renders, and finds one by the beginning of its id
        listed = (await root.get("/dashboard/api/renders", params={"q": rid[:8]})).json()
        assert listed["admin"] and [r["id"] for r in listed["renders"]] == [rid]
        assert listed["renders"][0]["owner"] == "alice"
        assert (await root.get(f"/dashboard/api/renders/{rid}")).json()["owner"] == "alice"
        assert (await alice.get("/dashboard/api/renders", params={"q": "x' OR 1=1"})).status_code == 400
        # with the token, alice cancels her render through the API's own route
        for _ in range(600):  # once a window is finished
            if (await alice.get(f"/dashboard/api/renders/{rid}")).json()["windows_done"] >= 1:
                break
            await asyncio.sleep(0.2)
        r = await alice.post(f"/v2/{EP}/cancel/{rid}", headers={"X-CSRF-Token": alice.csrf})
        assert r.status_code == 200 and r.json()["status"] == "CANCELLED"
        assert (await wait_status(api, KEY_A, rid))["status"] == "CANCELLED"
        running = (await alice.get("/dashboard/api/renders", params={"status": "running"})).json()
        assert rid not in [r["id"] for r in running["renders"]]
        cancelled = (await alice.get("/dashboard/api/renders", params={"status": "cancelled"})).json()
        assert rid in [r["id"] for r in cancelled["renders"]] and cancelled["counts"]["cancelled"] >= 1
        detail = (await alice.get(f"/dashboard/api/renders/{rid}")).json()
        assert detail["status"] == "cancelled" and not detail["actions"]["cancel"]
        assert 1 <= detail["windows_done"] < 17 and detail["states"].count("d") == detail["windows_done"]
        assert detail["states"][0] == "d" and detail["states"][-1] == "w"
    finally:
        for c in (alice, bob, root):
            await c.aclose()


# ---- HLS ---------------------------------------------------------------------------------

def first_pts(data: bytes, tmp: Path, name: str) -> tuple[float, float | None, int]:
    """(first video pts in seconds, first audio pts, video frames) of an MPEG-TS segment."""
    path = tmp / name
    path.write_bytes(data)
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        packets = [p for p in c.demux(v) if p.pts is not None and p.size]
        audio = c.streams.audio[0] if c.streams.audio else None
        assert audio is not None and audio.codec_context.name == "aac"
        assert v.codec_context.name == "h264"
        return min(p.pts for p in packets) * float(v.time_base), \
            float(audio.start_time * audio.time_base) if audio.start_time is not None else None, len(packets)


async def test_hls_playlist_and_segments(api, media, store, tmp_path, gpu, monkeypatch):
    rid = next_id(monkeypatch)
    gpu.slow[rid] = 1.0
    assert await submit(api, KEY_A, job(media, long=True)) == rid
    alice = await session(api, KEY_A)
    try:
        url = f"/dashboard/api/renders/{rid}/hls/index.m3u8"
        growing = None
        for _ in range(600):  # while it renders: EVENT, no ENDLIST, the finished prefix
            text = (await alice.get(url)).text
            segs = [line for line in text.splitlines() if line.endswith(".ts")]
            if segs:
                growing = text
                break
            await asyncio.sleep(0.1)
        assert growing is not None
        assert "#EXT-X-PLAYLIST-TYPE:EVENT" in growing and "#EXT-X-ENDLIST" not in growing
        assert "#EXT-X-DISCONTINUITY" not in growing
        seg0 = await alice.get(f"/dashboard/api/renders/{rid}/hls/0.ts")
        assert seg0.status_code == 200 and seg0.headers["content-type"] == "video/mp2t"
        ahead = await alice.get(f"/dashboard/api/renders/{rid}/hls/16.ts")
        assert ahead.status_code == 404  # not finished yet: no segment
        del gpu.slow[rid]
        assert (await wait_status(api, KEY_A, rid))["status"] == "COMPLETED"
        text = (await alice.get(url)).text
        plan = store.get_json(f"renders/{rid}/plan.json")
        lines = text.splitlines()
        assert lines[0] == "#EXTM3U" and "#EXT-X-PLAYLIST-TYPE:EVENT" in lines and lines[-1] == "#EXT-X-ENDLIST"
        segs = [line for line in lines if line.endswith(".ts")]
        assert segs == [f"{k}.ts" for k in range(plan["windows"])] and len(segs) == 17
        durations = [float(line[8:].rstrip(",")) for line in lines if line.startswith("#EXTINF:")]
        assert abs(sum(durations) - plan["total_frames"] / plan["fps"]) < 1e-3
        assert int(re.search(r"#EXT-X-TARGETDURATION:(\d+)", text).group(1)) >= max(durations)
        frames = 0
        for k in (0, 1, 2, 16):
            r = await alice.get(f"/dashboard/api/renders/{rid}/hls/{k}.ts")
            assert r.status_code == 200
            video_pts, audio_pts, n = first_pts(r.content, tmp_path, f"{k}.ts")
            keep_start, keep_end = plan["frames"][k][2:4]
            # timestamps continue across segments: segment k starts at its first kept frame
            assert abs(video_pts - (BASE_S + keep_start / plan["fps"])) < 1e-3, (k, video_pts)
            assert audio_pts is not None and abs(audio_pts - (BASE_S + keep_start / plan["fps"])) < 0.05
            assert n == keep_end - keep_start
            frames += n
        assert store.exists(f"renders/{rid}/hls/00016.ts")  # built once, kept in the bucket
        again = await alice.get(f"/dashboard/api/renders/{rid}/hls/16.ts")
        assert again.content == r.content
        thumb = await alice.get(f"/dashboard/api/renders/{rid}/thumb")
        assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
        import cv2
        import numpy as np

        img = cv2.imdecode(np.frombuffer(thumb.content, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape[1] == 160
        win = (await alice.get(f"/dashboard/api/renders/{rid}/windows/3")).json()
        assert win["frames"] == plan["frames"][3][3] - plan["frames"][3][2] and win["attempts"] == 1
        assert win["worker"] and win["attempt"] == 1
        detail = (await alice.get(f"/dashboard/api/renders/{rid}")).json()
        assert detail["status"] == "completed" and detail["states"] == "d" * 17
        assert detail["video"]["url"].startswith("http") and detail["hls"]["ended"]
        assert {"output.mp4", "manifest.json", "plan.json", "request.json"} <= set(detail["links"]["objects"])
        assert detail["links"]["temporal"].endswith(f"/workflows/{rid}")
    finally:
        await alice.aclose()


async def test_failed_render_shows_the_classified_error(api, media, gpu, monkeypatch):
    rid = next_id(monkeypatch)
    gpu.fail[rid] = 4
    assert await submit(api, KEY_A, job(media, long=True)) == rid
    alice = await session(api, KEY_A)
    try:
        assert (await wait_status(api, KEY_A, rid))["status"] == "FAILED"
        d = (await alice.get(f"/dashboard/api/renders/{rid}")).json()
        assert d["status"] == "failed" and d["actions"]["retry"]
        assert d["error"]["type"] == "OutputMismatch" and d["error"]["window"] == 4
        assert "wrong frame count" in d["error"]["message"]
        assert d["states"][:4] == "dddd" and d["states"][4] == "f" and set(d["states"][5:]) == {"w"}
        fleet = (await alice.get("/dashboard/api/fleet")).json()
        assert rid in [f["id"] for f in fleet["failures"]]
    finally:
        await alice.aclose()


async def test_list_and_status_agree_newest_first(api, media, gpu, monkeypatch):
    """The list, its Queued/Running chips and /status say the same of every render: one
    render on the GPU (IN_PROGRESS, "running"), one waiting behind it (IN_QUEUE, "queued").
    The list is newest first by start time and keeps that order when renders end."""
    async with httpx.AsyncClient(base_url=api, timeout=60, headers={"Authorization": f"Bearer {KEY_A}"}) as c:
        async def state(rid):
            return (await c.get(f"/v2/{EP}/status/{rid}")).json()["status"]

        first = next_id(monkeypatch)
        gpu.slow[first] = 2.5
        assert await submit(api, KEY_A, job(media, long=True)) == first
        while await state(first) != "IN_PROGRESS":
            await asyncio.sleep(0.1)
        second = next_id(monkeypatch)
        gpu.slow[second] = 2.5
        assert await submit(api, KEY_A, job(media, long=True)) == second
        names = {"IN_QUEUE": "queued", "IN_PROGRESS": "running", "CANCELLED": "cancelled"}
        agreed = []
        for _ in range(60):
            before = {rid: await state(rid) for rid in (first, second)}
            listing = (await c.get("/dashboard/api/renders")).json()
            after = {rid: await state(rid) for rid in (first, second)}
            rows = {r["id"]: r for r in listing["renders"]}
            for rid in (first, second):
                if before[rid] == after[rid]:  # no change in between: the list must say the same
                    assert rows[rid]["status"] == names[before[rid]], (rid, before, rows[rid])
            if before == after == {first: "IN_PROGRESS", second: "IN_QUEUE"}:
                agreed.append(listing["counts"])
                if len(agreed) >= 2:
                    break
            await asyncio.sleep(0.1)
        assert agreed, "never saw one render running and one queued behind it"
        assert all(counts["queued"] >= 1 and counts["running"] >= 1 for counts in agreed), agreed
        queued = (await c.get("/dashboard/api/renders", params={"status": "queued"})).json()["renders"]
        assert second in [r["id"] for r in queued] and first not in [r["id"] for r in queued]

        order = [r["id"] for r in (await c.get("/dashboard/api/renders")).json()["renders"]]
        assert order.index(second) < order.index(first)  # newest first
        gpu.slow[first] = gpu.slow[second] = 0.0
        assert (await wait_status(api, KEY_A, first))["status"] == "COMPLETED"
        rows = (await c.get("/dashboard/api/renders")).json()["renders"]
        starts = [r["started"] for r in rows]
        assert starts == sorted(starts, reverse=True)  # by start time, whatever has ended
        ids = [r["id"] for r in rows]
        assert ids.index(second) < ids.index(first)
        (await wait_status(api, KEY_A, second))


async def test_fleet_json(api, store, own_settings):
    live = FleetRecord(store, f"gpu-live-{uuid.uuid4().hex[:4]}", "abc1234", own_settings.gpu_queue, {}, every_s=10)
    live.begin("some-render", 7)
    live.write()
    gone = FleetRecord(store, f"gpu-gone-{uuid.uuid4().hex[:4]}", "abc1234", own_settings.gpu_queue, {}, every_s=10)
    record = gone.snapshot()
    record["heartbeat_at"] = "2020-01-01T00:00:00+00:00"  # too old even to keep: forgotten
    store.put_json(record_key(gone.identity), record)
    stale = dict(record, identity=gone.identity + "-stale",
                 heartbeat_at=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 120)))
    store.put_json(record_key(stale["identity"]), stale)
    root = await session(api, KEY_ROOT)
    bob = await session(api, KEY_B)
    try:
        d = (await root.get("/dashboard/api/fleet")).json()
        by = {w["identity"]: w for w in d["workers"]}
        assert by[live.identity]["healthy"] and by[live.identity]["current"]["window"] == 7
        assert by[live.identity]["current"]["render_id"] == "some-render"
        assert not by[stale["identity"]]["healthy"] and gone.identity not in by
        assert isinstance(d["queue"]["waiting"], int) and d["queue"]["waiting"] >= 0
        assert set(d["throughput"]) == {"windows_last_hour", "window_failures_last_hour", "renders_completed_last_hour"}
        # a non-admin does not see which render of another owner a GPU works on
        d = (await bob.get("/dashboard/api/fleet")).json()
        assert {w["identity"]: w for w in d["workers"]}[live.identity]["current"]["render_id"] is None
    finally:
        live.remove()
        store.delete(record_key(stale["identity"]))
        await root.aclose()
        await bob.aclose()


async def test_chart_routes_refuse_bad_requests(api):
    alice = await session(api, KEY_A)
    try:
        r = await alice.get("/dashboard/api/fleet/charts/fleet.svg", params={"w": "500"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
        assert 'width="500"' in r.text and "<title" in r.text
        r = await alice.get("/dashboard/api/fleet/charts/fleet.svg", params={"w": "wide"})
        assert r.status_code == 400 and r.json()["error"].startswith("w:")
        assert (await alice.get("/dashboard/api/fleet/charts/nope.svg")).status_code == 404
        assert (await alice.get("/dashboard/api/renders/no-such-render/charts/windows.svg")).status_code == 404
        async with httpx.AsyncClient(base_url=api, timeout=60) as anonymous:
            assert (await anonymous.get("/dashboard/api/fleet/charts/fleet.svg")).status_code == 401
    finally:
        await alice.aclose()


# ---- in a real browser -----------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    paths = chromium_paths()
    if paths is None:
        pytest.skip("no chromium + chromedriver on PATH (Debian: apt-get install chromium chromium-driver; .ci/run does)")
    driver = headless_chromium(paths, "--autoplay-policy=no-user-gesture-required")
    yield driver
    driver.quit()


def size(driver, width: int, height: int) -> None:
    """The viewport (not the window) at width x height."""
    driver.set_window_size(width, height)
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(width + (width - inner[0]), height + (height - inner[1]))


def shoot(driver, name: str) -> None:
    """Screenshots of the page at 1280x800 and on a 390 px phone; the page must not be wider than
    the screen at either (wide tables scroll or turn into cards inside it)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, (w, h) in (("desktop", (1280, 800)), ("phone", (390, 844))):
        size(driver, w, h)
        time.sleep(0.6)
        over = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert over[0] <= over[1], f"{name} at {label}: the page is {over[0]} px wide in a {over[1]} px window"
        driver.save_screenshot(str(SHOTS / f"{name}-{label}.png"))
    size(driver, 1280, 800)


def shoot_charts(driver, name: str, section: str) -> None:
    """Screenshots of a page's charts card (scrolled to it) at desktop and phone width, once the
    charts are drawn again at that width; the page must not be wider than the screen."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, (w, h) in (("desktop", (1280, 800)), ("phone", (390, 844))):
        size(driver, w, h)
        wait_for(lambda: driver.execute_script("""const figs = [...document.querySelectorAll(`#${arguments[0]} figure`)];
            return figs.length && figs.every(f => f.dataset.drawn &&
                f.dataset.drawn.endsWith('|' + Math.floor(f.querySelector('.chart-svg').clientWidth)));""", section),
                 20, 0.2, f"{name}'s charts at {label} width")
        driver.execute_script("document.getElementById(arguments[0]).scrollIntoView()", section)
        time.sleep(0.3)
        over = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert over[0] <= over[1], f"{name} at {label}: the page is {over[0]} px wide in a {over[1]} px window"
        driver.save_screenshot(str(SHOTS / f"{name}-{label}.png"))
    size(driver, 1280, 800)


def wait_for(predicate, timeout: float = 60.0, every: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # the element is being redrawn: try again
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def submit_sync(api: str, key: str, body: dict) -> str:
    r = httpx.post(f"{api}/v2/{EP}/run", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def status_sync(api: str, key: str, rid: str, wait_ms: int = 120000) -> dict:
    return httpx.get(f"{api}/v2/{EP}/status-sync/{rid}?wait={wait_ms}", headers={"Authorization": f"Bearer {key}"},
                     timeout=wait_ms / 1000 + 30).json()


async def test_browser_pages(api, browser, media, gpu, store, monkeypatch):
    # the API serves from this test's event loop: the browser is driven from a thread
    await asyncio.to_thread(browser_pages, api, browser, media, gpu, store, monkeypatch)


def browser_pages(api, d, media, gpu, store, monkeypatch):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    # log in through the form
    d.get(f"{api}/")
    assert "/login" in d.current_url
    d.find_element(By.ID, "key").send_keys(KEY_A)
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(lambda: d.current_url.rstrip("/") == api and d.find_elements(By.ID, "renders"), 30, 0.2,
             "the renders page")
    assert KEY_A not in d.current_url

    # a render this key cannot see: the page says so once and stops asking (no poll every 2 s)
    d.get(f"{api}/renders/no-such-render")
    wait_for(lambda: d.find_elements(By.ID, "not-found"), 20, 0.2, "the not-found card")
    time.sleep(5)
    asked = d.execute_script("""return performance.getEntriesByType('resource')
        .filter(e => e.name.includes('/dashboard/api/renders/no-such-render')).length""")
    assert asked == 1, asked
    icon = d.execute_script("return document.querySelector('link[rel=icon]').href")
    assert httpx.get(icon).headers["content-type"].startswith("image/svg")
    assert httpx.get(f"{api}/favicon.ico").status_code == 200  # what browsers ask for first
    d.get(f"{api}/")
    wait_for(lambda: d.find_elements(By.ID, "renders"), 30, 0.2, "the renders page")

    # start a render through the API; watch it from its page
    rid = next_id(monkeypatch)
    gpu.slow[rid] = 2.0
    assert submit_sync(api, KEY_A, job(media, long=True)) == rid
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, f'tr[data-id="{rid}"]'), 30, 0.3,
             "the new render in the list (no reload)")
    d.get(f"{api}/renders/{rid}")
    seen = set()

    def advanced():
        # one script: the strip, the text and the bar read from the same drawing
        n, done, text, width = d.execute_script("""
            const cells = [...document.querySelectorAll('#strip .cell')];
            return [cells.length, cells.filter(c => c.dataset.state === 'd').length,
                    document.getElementById('progress-text').textContent,
                    document.querySelector('.bar.big > span').style.width];""")
        if n == 17 and 0 < done < 17:
            seen.add((done, text, width))
        return len({s[0] for s in seen}) >= 2

    wait_for(advanced, 120, 0.3, "the progress bar and the strip to advance")
    assert all(f"{done} / 17 windows" in text for done, text, _ in seen), seen
    assert len({w for _, _, w in seen}) >= 2, seen  # the bar itself moved
    # the live preview plays before the render ends
    wait_for(lambda: d.find_elements(By.ID, "preview"), 60, 0.3, "the preview player")
    wait_for(lambda: (d.execute_script("return document.getElementById('preview').currentTime") or 0) > 1.0,
             60, 0.3, "the preview to play")
    status = status_sync(api, KEY_A, rid, 1000)["status"]
    assert status in ("IN_PROGRESS", "IN_QUEUE"), status  # still rendering while it played
    # hovering a finished window shows its frames, duration, attempts and GPU worker
    cell = d.find_element(By.CSS_SELECTOR, "#strip .cell.d")
    ActionChains(d).move_to_element(cell).perform()
    box = wait_for(lambda: (lambda t: t if "frames" in t and "GPU worker" in t else None)(
        d.find_element(By.CSS_SELECTOR, ".hoverbox").text), 20, 0.2, "the window's hover box")
    assert "attempts: 1" in box
    # the charts, drawn while it renders: a point per finished window so far
    running_points = wait_for(lambda: chart_points(d, "windows", "rendering"), 60, 0.3, "the windows chart")
    assert 1 <= running_points < 17
    shoot(d, "render-running")
    gpu.slow[rid] = 0.0
    assert status_sync(api, KEY_A, rid)["status"] == "COMPLETED"
    wait_for(lambda: d.find_elements(By.ID, "download"), 30, 0.3, "the download link")
    assert d.find_element(By.CSS_SELECTOR, ".head .status").text == "completed"
    check_render_charts(d, store, rid)
    shoot_charts(d, "render-charts", "render-charts")

    def gpu_use():
        terms, values = d.find_elements(By.CSS_SELECTOR, "dl.kv dt"), d.find_elements(By.CSS_SELECTOR, "dl.kv dd")
        return next((v.text for t, v in zip(terms, values) if t.text == "GPU use"), None)
    # what the render used (the result's usage.actual): its GPU kind's windows; no price is set here
    use = wait_for(lambda: (lambda t: t if t and "windows" in t else None)(gpu_use()), 30, 0.3, "the GPU use row")
    assert re.search(r": \d+ windows, .+, no price$", use), use

    # cancel a second render from its page, through the confirmation dialog
    other = next_id(monkeypatch)
    gpu.slow[other] = 8.0  # longer than a heartbeat interval: the cancel reaches the window
    assert submit_sync(api, KEY_A, job(media, long=True)) == other
    d.get(f"{api}/renders/{other}")
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#strip .cell.r"), 60, 0.3, "a window in flight")
    d.find_element(By.ID, "cancel").click()
    dialog = d.find_element(By.ID, "confirm")
    # the dialog reads the render's state when it opens: the finished windows stay, the one in
    # flight is named
    note = wait_for(lambda: (lambda t: t if "stay stored" in t else None)(d.find_element(By.ID, "cancel-note").text),
                    20, 0.2, "the cancel dialog's note")
    assert dialog.is_displayed() and "windows are finished and stay stored" in note
    assert re.search(r"Window \d+, the one in flight now, is stopped", note), note
    d.find_element(By.ID, "confirm-cancel").click()  # "Keep it": nothing happens
    time.sleep(1)
    assert status_sync(api, KEY_A, other, 1000)["status"] in ("IN_QUEUE", "IN_PROGRESS")
    d.find_element(By.ID, "cancel").click()
    # the dialog opens afresh: its button waits for the render's state to be read
    wait_for(lambda: d.find_element(By.ID, "confirm-ok").is_enabled(), 20, 0.2, "the cancel button")
    d.find_element(By.ID, "confirm-ok").click()
    wait_for(lambda: d.find_element(By.CSS_SELECTOR, ".head .status").text == "cancelled", 90, 0.3,
             "the render to show cancelled")
    assert status_sync(api, KEY_A, other)["status"] == "CANCELLED"
    assert d.find_element(By.ID, "strip").find_elements(By.CSS_SELECTOR, ".cell.w")  # it stopped early

    # the list and fleet pages, desktop and phone
    d.get(f"{api}/")
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, f'tr[data-id="{rid}"] img'), 30, 0.3,
             "the finished render's thumbnail")
    shoot(d, "renders")
    d.get(f"{api}/fleet")
    wait_for(lambda: d.find_elements(By.ID, "t-queue"), 30, 0.3, "the fleet page")
    check_fleet_chart(d)
    shoot(d, "fleet")
    shoot_charts(d, "fleet-charts", "fleet-charts")
    d.get(f"{api}/renders/{rid}")
    wait_for(lambda: d.find_elements(By.ID, "download"), 30, 0.3, "the finished render")
    shoot(d, "render-done")

    # re-render two windows of the finished render: a new output version with exactly T frames
    d.find_element(By.ID, "rerender").click()
    note = wait_for(lambda: (lambda t: t if t and t != "…" else None)(d.find_element(By.ID, "rr-count").text),
                    30, 0.3, "the re-render count")
    if "not available" in note:
        d.find_element(By.ID, "confirm-cancel").click()
        pytest.skip("the API has no re-render route yet (POST/GET /v2/{ep}/rerender/{id})")
    for field, value in (("rr-from", "14"), ("rr-to", "15")):
        el = d.find_element(By.ID, field)
        el.clear()
        el.send_keys(value)
    note = wait_for(lambda: (lambda t: t if "14–16" in t else None)(d.find_element(By.ID, "rr-count").text),
                    30, 0.3, "the count for windows 14..15")
    assert note.startswith("3 windows")  # 14, 15 and the window after them in the chain
    d.find_element(By.ID, "confirm-ok").click()
    wait_for(lambda: "/renders/" in d.current_url and d.current_url.rsplit("/", 1)[1] != rid, 30, 0.3,
             "the new version's page")
    new_id = d.current_url.rsplit("/", 1)[1]
    assert new_id != rid and new_id.startswith(rid)  # <id>.v<n>
    body = status_sync(api, KEY_A, new_id)
    assert body["status"] == "COMPLETED", body
    plan = store.get_json(f"renders/{rid}/plan.json")
    assert body["output"]["frames"] == plan["total_frames"]
    assert store.exists(f"renders/{rid}/output.mp4")  # the old version stays
    # the new version's page says what it is, and the base lists it
    wait_for(lambda: d.find_element(By.CSS_SELECTOR, ".head .status").text == "completed", 60, 0.3,
             "the new version to show completed")
    assert f"re-render of {rid}" in d.find_element(By.CSS_SELECTOR, ".head .meta").text
    shoot(d, "render-version")
    d.get(f"{api}/renders/{rid}")
    wait_for(lambda: new_id in d.find_element(By.TAG_NAME, "main").text, 30, 0.3, "the base listing its re-render")


def chart_points(d, chart: str, series: str) -> int:
    """How many points the series `series` of the page's chart `chart` has drawn."""
    return d.execute_script("""const [chart, series] = arguments;
        const g = [...document.querySelectorAll(`figure[data-chart="${chart}"] svg.chart g.series`)]
            .find(g => g.dataset.name === series);
        return g ? g.querySelectorAll('circle').length : 0;""", chart, series)


def check_render_charts(d, store, rid: str) -> None:
    """The finished render's charts: a point per window for its GPU time and its queue wait,
    the estimate beside the actual, each quality measure against its bound."""
    from selenium.webdriver.common.by import By

    wait_for(lambda: chart_points(d, "windows", "rendering") == 17, 30, 0.3, "the windows chart to fill up")
    assert chart_points(d, "windows", "waiting for a GPU") == 17  # every window's queue wait recorded
    meta = store.get_json(f"renders/{rid}/windows/00003/meta.json")
    assert meta["queue_s"] >= 0 and meta["busy_s"] >= meta["render_s"] > 0
    shown = d.execute_script("""return [...document.querySelectorAll('figure[data-chart="windows"] g.series')]
        .find(g => g.dataset.name === 'rendering').querySelectorAll('circle')[3].dataset.y""")
    assert float(shown) == pytest.approx(meta["render_s"], abs=1e-3)  # window 3's own time
    bars = wait_for(lambda: d.execute_script("""return [...document.querySelectorAll(
        'figure[data-chart="estimate"] rect.bar')].map(r => +r.dataset.value)"""), 30, 0.3, "the estimate bars")
    estimate = store.get_json(f"renders/{rid}/estimate.json")
    # GPU seconds: estimate, actual; wall time: estimate (none without a healthy worker at plan time), actual
    assert len(bars) == 3 + (estimate["wall_s"] is not None), (bars, estimate)
    assert bars[0] == pytest.approx(estimate["gpu_busy_s"]) and bars[1] > 0 and bars[-1] > 0
    wait_for(lambda: chart_points(d, "quality", "colour ΔE, frame") == 17, 30, 0.3, "the quality chart")
    bounds = d.find_elements(By.CSS_SELECTOR, 'figure[data-chart="quality"] line.bound')
    assert len(bounds) == 5
    title = d.find_element(By.CSS_SELECTOR, 'figure[data-chart="quality"] svg.chart title').get_attribute("textContent")
    assert title == "Quality per window"


def check_fleet_chart(d) -> None:
    """The fleet's day: the test's GPU worker's (test@<build>-gpu) windows this hour, its busy
    share, the queue."""
    def drawn():  # the worker's points in each panel: windows per hour, busy share
        return d.execute_script("""return [...document.querySelectorAll('figure[data-chart="fleet"] g.series')]
            .filter(g => /^test@.*-gpu$/.test(g.dataset.name)).map(g => [...g.querySelectorAll('circle')].map(c => +c.dataset.y))""")

    windows, busy = wait_for(lambda: (lambda p: p if len(p) == 2 and all(p) else None)(drawn()), 30, 0.3,
                             "the fleet chart")
    # this test's renders: 17 windows and more (in one hour, or two if the clock turned meanwhile)
    assert sum(windows) >= 17 and max(busy) > 0 and all(0 <= b <= 1 for b in busy)
    assert chart_points(d, "fleet", "windows waiting (GPU queue)") >= 1


def test_off_loopback_no_login_link_and_a_secure_cookie(settings):
    """Bound to all interfaces, the API refuses `/login?key=` (a key in a URL would cross the
    network and land in proxies' logs) and marks the session cookie Secure (HTTPS only)."""
    from starlette.testclient import TestClient

    from api.app import create_app

    public = dataclasses.replace(api_settings(settings), api_address="0.0.0.0:8000")
    app = create_app(public, client=object(), store=object(), run_worker=False)  # no lifespan: no servers
    with_key = TestClient(app, base_url="https://dash.example")
    r = with_key.get("/login", params={"key": KEY_A}, follow_redirects=False)
    assert r.status_code == 401 and "loopback" in r.text and "set-cookie" not in r.headers
    r = with_key.post("/login", data={"key": KEY_A}, follow_redirects=False)
    assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]
