"""The render and fleet pages in headless chromium (api/static/dashboard.js, dashboard.css),
against the real Temporal and S3 servers and in-process workers (preview backend): the live
preview starts from the beginning and jumps to live, the preview sits beside the progress at
desktop sizes and stacks on a phone, a cancelled render resumes from its page, and the fleet
page names the work left."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from api.dashboard.read_model import work_left_text
from longtalk.testing import KEY_A
from tests.test_dashboard import (  # noqa: F401 - fixtures
    EP, SHOTS, api, browser, gpu, job, next_id, own_settings, size, status_sync, submit_sync, wait_for,
)

pytestmark = pytest.mark.timeout(400)


def test_work_left_wording():
    assert work_left_text(31, 2) == "31 windows left in 2 renders"
    assert work_left_text(1, 1) == "1 window left in 1 render"
    assert work_left_text(0, 1, 1) == "0 windows left in 1 render (not planned yet)"
    assert work_left_text(12, 3, 1) == "12 windows left in 3 renders (1 not planned yet)"
    assert work_left_text(0, 0) == "0 windows left: no render running"


def detail(api: str, rid: str) -> dict:
    return httpx.get(f"{api}/dashboard/api/renders/{rid}", headers={"Authorization": f"Bearer {KEY_A}"},
                     timeout=60).json()


def rects(d) -> dict:
    return d.execute_script("""
        const r = (el) => { const b = el.getBoundingClientRect(); return {left: b.left, right: b.right, top: b.top, bottom: b.bottom}; };
        return {progress: r(document.querySelector('.progress-card')), video: r(document.getElementById('preview')),
                height: innerHeight, width: innerWidth, scrollY: scrollY, pageWidth: document.documentElement.scrollWidth};""")


async def test_render_page_preview_layout_and_fleet(api, browser, media, gpu, monkeypatch):  # noqa: F811
    await asyncio.to_thread(preview_layout_and_fleet, api, browser, media, gpu, monkeypatch)


def preview_layout_and_fleet(api, d, media, gpu, monkeypatch):
    from selenium.webdriver.common.by import By

    d.get(f"{api}/login?key={KEY_A}")  # the loopback login link
    rid = next_id(monkeypatch)
    gpu.slow[rid] = 1.5
    assert submit_sync(api, KEY_A, job(media, long=True)) == rid
    # the page opens once many windows are finished: a live-edge start would be seconds in
    wait_for(lambda: detail(api, rid)["hls"]["segments"] >= 9, 120, 0.3, "9 finished windows")
    gpu.slow[rid] = 4.0  # the render keeps running while the page is looked at
    d.get(f"{api}/renders/{rid}")
    d.execute_script("""window.firstPlay = null;
        document.addEventListener('playing', (e) => { if (window.firstPlay === null) window.firstPlay = e.target.currentTime; }, true);""")
    first = wait_for(lambda: d.execute_script("return window.firstPlay"), 60, 0.1, "the preview to start playing")
    assert first < 1.0, f"the preview started at {first} s, not at the beginning"
    ahead = d.execute_script("const v = document.getElementById('preview'); return v.seekable.end(v.seekable.length - 1)")
    assert ahead > 8, ahead  # there was a live edge to start at instead
    d.find_element(By.ID, "to-live").click()
    wait_for(lambda: d.execute_script("return document.getElementById('preview').currentTime") > ahead / 2, 20, 0.2,
             "the jump to live")

    # the preview beside the progress, its controls (the video's bottom) in the first screen
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, (w, h) in (("1366", (1366, 768)), ("1920", (1920, 1080)), ("phone", (390, 844))):
        size(d, w, h)
        d.execute_script("window.scrollTo(0, 0)")
        time.sleep(0.8)
        r = rects(d)
        assert r["pageWidth"] <= r["width"], (label, r)
        p, v = r["progress"], r["video"]
        if label == "phone":  # stacked: the preview under the progress, as wide
            assert v["top"] >= p["bottom"] and abs(v["left"] - p["left"]) < 30, (label, r)
        else:
            assert v["left"] >= p["right"] and v["top"] < p["bottom"], (label, r)  # side by side
            assert 0 <= v["top"] and v["bottom"] <= r["height"] and r["scrollY"] == 0, (label, r)
        d.save_screenshot(str(SHOTS / f"render-page-{label}.png"))
    size(d, 1280, 800)

    # the fleet page names the work left, as the JSON counts it
    d.get(f"{api}/fleet")

    def same():
        tile = d.find_element(By.ID, "t-queue").text.split("\n")
        left = httpx.get(f"{api}/dashboard/api/fleet", headers={"Authorization": f"Bearer {KEY_A}"},
                         timeout=60).json()["queue"]["left"]
        return (tile, left) if " ".join(tile) == left["text"] and left["renders"] >= 1 else None

    tile, left = wait_for(same, 30, 0.3, "the fleet tile to say the work left")
    assert left["windows"] >= 1 and tile[0] == str(left["windows"])
    assert tile[1].startswith("window" + ("" if left["windows"] == 1 else "s") + " left in ")
    gpu.slow[rid] = 0.0
    assert status_sync(api, KEY_A, rid)["status"] == "COMPLETED"


async def test_resume_a_cancelled_render(api, browser, media, gpu, backend, monkeypatch):  # noqa: F811
    await asyncio.to_thread(resume_cancelled, api, browser, media, gpu, backend, monkeypatch)


def resume_cancelled(api, d, media, gpu, backend, monkeypatch):
    from selenium.webdriver.common.by import By

    calls = []
    inner = backend.render_window

    async def render_window(job, progress=None):
        calls.append((job.render_id, job.index))
        return await inner(job, progress)

    monkeypatch.setattr(backend, "render_window", render_window)
    d.get(f"{api}/login?key={KEY_A}")
    rid = next_id(monkeypatch)
    gpu.slow[rid] = 3.0
    assert submit_sync(api, KEY_A, job(media, long=True)) == rid
    wait_for(lambda: detail(api, rid)["windows_done"] >= 2, 120, 0.3, "two finished windows")
    r = httpx.post(f"{api}/v2/{EP}/cancel/{rid}", headers={"Authorization": f"Bearer {KEY_A}"}, timeout=60)
    assert r.status_code == 200, r.text
    assert status_sync(api, KEY_A, rid)["status"] == "CANCELLED"
    kept = {k for k, s in enumerate(detail(api, rid)["states"]) if s in "dt"}
    assert kept and len(kept) < 17
    d.get(f"{api}/renders/{rid}")
    wait_for(lambda: d.find_elements(By.ID, "resume"), 30, 0.3, "the Resume button")
    assert d.find_element(By.CSS_SELECTOR, ".head .status").text == "cancelled"
    gpu.slow[rid] = 0.0
    before = len(calls)
    d.find_element(By.ID, "resume").click()
    note = d.find_element(By.ID, "resume-note").text
    assert f"{len(kept)} stored window" in note, note
    d.find_element(By.ID, "confirm-ok").click()
    # the page follows the resumed run (the same id) to its end
    wait_for(lambda: d.find_element(By.CSS_SELECTOR, ".head .status").text == "completed", 120, 0.3,
             "the resumed render to complete on its page")
    wait_for(lambda: d.find_elements(By.ID, "download"), 30, 0.3, "the download link")
    assert not d.find_elements(By.ID, "resume")
    assert status_sync(api, KEY_A, rid)["status"] == "COMPLETED"
    again = {k for r_id, k in calls[before:] if r_id == rid}
    assert again and not again & kept, (again, kept)  # the stored windows were not rendered again
    # every window is stored once: kept, rendered by the resumed run, or the one a GPU was on when
    # the cancel came (it may finish and be stored after the page counted the kept ones)
    in_flight = {k for r_id, k in calls[:before] if r_id == rid} - kept
    assert set(range(17)) - (again | kept) <= in_flight, (again, kept, in_flight)


async def test_name_and_labels(api, browser, media):  # noqa: F811
    """A job's optional name and labels: refused naming the field, carried to /status, shown in
    the list (with a prompt snippet) and on the render's page, found by the list's search."""
    tag = uuid.uuid4().hex[:8]
    name, labels = f"Quarterly update {tag}", [f"team-{tag}", "lang:en"]
    async with httpx.AsyncClient(base_url=f"{api}/v2/{EP}", timeout=120,
                                 headers={"Authorization": f"Bearer {KEY_A}"}) as c:
        base = job(media)["input"]
        for extra, field in (({"name": 5}, "name"), ({"name": "x" * 101}, "name"),
                             ({"labels": ["ok", "not ok"]}, "labels[1]"), ({"labels": "one"}, "labels")):
            r = await c.post("/run", json={"input": {**base, **extra}})
            assert r.status_code == 400 and r.json()["error"].split(":")[0] == field, (extra, r.text)
        r = await c.post("/run", json={"input": {**base, "prompt": "A woman explains the quarter's numbers",
                                                 "name": name, "labels": labels}})
        assert r.status_code == 200 and not r.json()["warnings"], r.text
        rid = r.json()["id"]
        running = (await c.get(f"/status/{rid}")).json()
        assert running["name"] == name and running["labels"] == labels
        done = (await c.get(f"/status-sync/{rid}?wait=120000")).json()
        assert done["status"] == "COMPLETED" and done["name"] == name and done["labels"] == labels
        plain = await c.post("/run", json={"input": base})  # a RunPod client's job: its body is as before
        plain_status = (await c.get(f"/status/{plain.json()['id']}")).json()
        assert "name" not in plain_status and "labels" not in plain_status
    await asyncio.to_thread(name_and_labels_pages, api, browser, rid, name, labels)


def name_and_labels_pages(api, d, rid, name, labels):
    from selenium.webdriver.common.by import By

    d.get(f"{api}/login?key={KEY_A}")
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, f'tr[data-id="{rid}"] .name'), 30, 0.3, "the named render")
    row = d.find_element(By.CSS_SELECTOR, f'tr[data-id="{rid}"]')
    assert row.find_element(By.CSS_SELECTOR, ".name").text == name
    assert "quarter's numbers" in row.find_element(By.CSS_SELECTOR, ".prompt").text
    assert [e.text for e in row.find_elements(By.CSS_SELECTOR, ".label")] == labels

    def found(q):
        """The ids the list shows for the search q (after a search that finds nothing, so the
        rows read are q's)."""
        box = d.find_element(By.ID, "search")
        for text in ("nothing-is-called-this", q):
            box.clear()
            box.send_keys(text)
            if text != q:
                wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#renders td.empty"), 30, 0.3, "an empty list")
        return wait_for(lambda: (lambda ids: ids if ids and all(ids) else None)(
            [r.get_attribute("data-id") for r in d.find_elements(By.CSS_SELECTOR, "#renders tbody tr")]),
            30, 0.3, f"the list searched for {q!r}")

    assert found(labels[0]) == [rid]  # a label
    assert found(name[:14]) == [rid]  # a name, by its beginning
    assert rid in found("lang:en")
    d.get(f"{api}/renders/{rid}")  # (the list redraws every 2 s: a row is not held to click)
    wait_for(lambda: d.find_element(By.ID, "render-name").text.startswith(name), 30, 0.3, "the name on its page")
    assert [e.text for e in d.find_elements(By.CSS_SELECTOR, "#render-name .label")] == labels
