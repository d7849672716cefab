"""The dashboard's SVG charts (api/dashboard/charts.py, chart_data.py) on known series, and the
fleet records' bounded day of history they draw (longtalk/fleet_history.py). The pages showing
them in a browser: tests/test_dashboard.py."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from api.dashboard import chart_data
from api.dashboard.charts import LEFT, NO_DATA, RIGHT, Axis, Bound, Group, Panel, Series, bars, nice_ticks, panels
from longtalk.fleet_history import HOUR, HOURS, QUEUE_SLOT_S, FleetHistory
from longtalk.quality import QualityBounds

NS = {"s": "http://www.w3.org/2000/svg"}


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and root.get("role") == "img"
    ids = root.get("aria-labelledby").split()
    assert [root.find(f"s:title[@id='{ids[0]}']", NS).text, root.find(f"s:desc[@id='{ids[1]}']", NS).text]
    return root


def points(root: ET.Element, name: str) -> list[tuple[float, float, float, float]]:
    """(x, y, cx, cy) of the series `name`'s points."""
    group = root.find(f".//s:g[@class='series'][@data-name='{name}']", NS)
    return [(float(c.get("data-x")), float(c.get("data-y")), float(c.get("cx")), float(c.get("cy")))
            for c in group.findall("s:circle", NS)]


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]


def test_nice_ticks_span_the_range_in_round_steps():
    assert nice_ticks(0, 10, 4) == [0, 2.5, 5, 7.5, 10]
    assert nice_ticks(0, 0.9, 3) == [0, 0.5, 1.0]
    ticks = nice_ticks(-3.2, 41, 4)
    assert ticks[0] <= -3.2 and ticks[-1] >= 41 and len(ticks) <= 7


def test_points_where_expected_and_the_bound_line():
    width = 500
    axis = Axis("window", 0, 10)
    svg = panels("c1", "Known", "a known series", axis,
                 [Panel("value", [Series("v", [(0, 0.0), (5, 6.0), (10, 3.0)])], Bound(6.0, "bound 6"))], width)
    root = parse(svg)
    pts = points(root, "v")
    assert [(x, y) for x, y, _, _ in pts] == [(0, 0.0), (5, 6.0), (10, 3.0)]
    # x: the plot's left edge, its middle, its right edge
    plot = width - LEFT - RIGHT
    assert [round(cx, 1) for _, _, cx, _ in pts] == [LEFT, round(LEFT + plot / 2, 1), width - RIGHT]
    # y: higher values higher up; 3 halfway between 0 and 6
    y0, y6, y3 = (cy for _, _, _, cy in pts)
    assert y6 < y3 < y0 and y3 == pytest.approx((y0 + y6) / 2, abs=0.11)
    bound = root.find(".//s:line[@class='bound']", NS)
    assert float(bound.get("y1")) == pytest.approx(y6, abs=0.11)  # the bound at 6 where the point at 6 is
    assert "bound 6" in texts(root)
    assert root.get("width") == str(width)


def test_a_gap_breaks_the_line_and_marks_are_drawn():
    axis = Axis("window", 0, 4, marks=[(2, "rerendered"), (3, "reanchored")])
    root = parse(panels("c2", "Gaps", "d", axis, [Panel("s", [Series("a", [(0, 1), (1, 2), (2, None), (3, 1), (4, 2)])])]))
    lines = root.findall(".//s:g[@class='series']/s:polyline", NS)
    assert len(lines) == 2  # 0..1 and 3..4
    assert len(points(root, "a")) == 4
    kinds = [m.get("class") for m in root.findall(".//s:line", NS) if (m.get("class") or "").startswith("mark")]
    assert kinds == ["mark rerendered", "mark reanchored"]
    assert {"re-rendered", "re-anchored"} <= set(texts(root))  # in the legend


def test_empty_series_say_no_data_yet():
    root = parse(panels("c3", "Empty", "nothing yet", Axis("window", 0, 0), [Panel("s", [Series("a", [])]),
                                                                               Panel("t", [Series("b", [(0, None)])])]))
    assert texts(root).count(NO_DATA) == 2 and not root.findall(".//s:circle", NS)
    root = parse(bars("c4", "Empty", "nothing", [Group("GPU", "s", [("estimate", None, "#000")])]))
    assert NO_DATA in texts(root) and not root.findall(".//s:rect", NS)


def test_text_is_escaped():
    evil = '<script>alert(1)</script>"&'
    svg = panels("c5", evil, evil, Axis(evil, 0, 1), [Panel(evil, [Series(evil, [(0, 1.0), (1, 2.0)])], Bound(1, evil))])
    root = parse(svg)
    assert not list(root.iter("{http://www.w3.org/2000/svg}script")) and "<script>" not in svg
    assert evil in texts(root)


def test_bars_are_proportional_and_the_tick_sits_on_its_value():
    root = parse(bars("c6", "Estimate", "d", [Group("GPU time", "s", [("estimate", 100.0, "#111"), ("so far", 25.0, "#222"),
                                                                          ("none", None, "#333")], ("expected", 50.0))],
                      width=600))
    rects = root.findall(".//s:rect[@class='bar']", NS)
    assert [float(r.get("data-value")) for r in rects] == [100.0, 25.0]
    w100, w25 = (float(r.get("width")) for r in rects)
    assert w25 == pytest.approx(w100 / 4, rel=0.01)
    tick = root.find(".//s:line[@class='tick']", NS)
    x0 = float(rects[0].get("x"))
    assert float(tick.get("x1")) == pytest.approx(x0 + w100 / 2, abs=0.2)
    assert "not known" in texts(root)


def test_width_is_clamped():
    root = parse(panels("c7", "t", "d", Axis("x", 0, 1), [Panel("p", [Series("a", [(0, 1)])])], width=10))
    assert int(root.get("width")) == 280
    root = parse(panels("c8", "t", "d", Axis("x", 0, 1), [Panel("p", [Series("a", [(0, 1)])])], width="junk"))
    assert int(root.get("width")) == 640


# ---- the dashboard's charts from their data -----------------------------------------------

def test_windows_chart_from_meta():
    metas = {0: {"render_s": 2.0, "busy_s": 2.5, "queue_s": 0.1, "quality": {"rerendered": 0}},
             1: {"render_s": 3.0, "busy_s": 3.4, "queue_s": None, "quality": {"rerendered": 1, "flagged": True}},
             2: {"render_s": 0.0, "copied_from": "base"}}
    root = parse(chart_data.windows_chart("r1", 5, metas, 640))
    assert [(x, y) for x, y, _, _ in points(root, "rendering")] == [(0, 2.0), (1, 3.0)]  # the copied one left out
    assert [(x, y) for x, y, _, _ in points(root, "waiting for a GPU")] == [(0, 0.1)]  # window 1: not recorded
    marks = [m.get("class") for m in root.findall(".//s:line", NS) if (m.get("class") or "").startswith("mark")]
    assert marks.count("mark rerendered") == 2 and marks.count("mark flagged") == 2  # in both panels
    assert "2 of 5 windows" in root.find("s:desc", NS).text


def test_quality_chart_draws_each_measure_against_its_bound():
    rows = [{"window": 0, "delta_e": 1.0, "delta_e_face": 2.0, "sharpness": 1.0, "face_offset": 0.01, "lipsync": 0.4,
             "rerendered": 0, "flagged": False, "reanchored": False},
            {"window": 1, "delta_e": 7.5, "delta_e_face": None, "sharpness": 0.4, "face_offset": 0.3, "lipsync": -0.1,
             "rerendered": 2, "flagged": True, "reanchored": True}]
    bounds = QualityBounds()
    root = parse(chart_data.quality_chart("r2", 2, rows, bounds, 640))
    labels = texts(root)
    for value in (bounds.delta_e, bounds.delta_e_face, bounds.sharpness, bounds.face_offset):
        assert any(t.startswith(f"bound {value:g}") for t in labels), (value, labels)
    assert len(root.findall(".//s:line[@class='bound']", NS)) == len(chart_data.QUALITY_PANELS)
    assert "Highest colour ΔE 7.50 at window 1" in root.find("s:desc", NS).text
    marks = {m.get("class") for m in root.findall(".//s:line", NS) if (m.get("class") or "").startswith("mark")}
    assert marks == {"mark rerendered", "mark flagged", "mark reanchored"}


def test_estimate_chart_so_far():
    detail = {"status": "running", "elapsed_s": 30.0}
    metas = {k: {"render_s": 1.0, "busy_s": 2.0} for k in range(5)}
    root = parse(chart_data.estimate_chart("r3", 10, {"gpu_busy_s": 40.0, "wall_s": 50.0}, metas, detail, 640))
    values = [float(r.get("data-value")) for r in root.findall(".//s:rect[@class='bar']", NS)]
    assert values == [40.0, 10.0, 50.0, 30.0]
    assert "so far (5/10)" in texts(root) and root.find(".//s:line[@class='tick']", NS) is not None
    root = parse(chart_data.estimate_chart("r4", 10, None, {}, {"status": "queued", "elapsed_s": None}, 640))
    assert NO_DATA in texts(root)


# ---- the fleet's day, recorded by the workers --------------------------------------------

def test_history_splits_busy_time_across_hours_and_counts_overlap_once():
    h = FleetHistory()
    t0 = 100 * HOUR
    h.window(True, t0 + HOUR - 600, t0 + HOUR + 300)  # 600 s in the first hour, 300 s in the next
    h.window(True, t0 + HOUR + 200, t0 + HOUR + 500)  # overlaps the first by 100 s: 200 s more
    h.window(False, t0 + HOUR + 500, t0 + HOUR + 560)
    doc = h.to_json(t0 + HOUR + 600)
    assert doc["hours"] == [[t0, 0, 600.0, 0], [t0 + HOUR, 2, 560.0, 1]]


def test_history_is_bounded_to_a_day_and_survives_a_restart():
    h = FleetHistory()
    start = 1000 * HOUR
    for i in range(72):  # three days, a window and a queue sample every hour
        h.window(True, start + i * HOUR + 10, start + i * HOUR + 70)
        h.queue_sample(i, start + i * HOUR + 5)
    now = start + 71 * HOUR + 100
    doc = h.to_json(now)
    assert len(doc["hours"]) == HOURS + 1 and doc["hours"][-1][0] == start + 71 * HOUR
    assert len(doc["queue"]) == HOURS + 1
    h.queue_sample(3, now)
    h.queue_sample(9, now + 1)
    h.queue_sample(4, now + 2)
    assert h.queue[int(now // QUEUE_SLOT_S * QUEUE_SLOT_S)] == max(71, 9)  # the most seen in the slot
    again = FleetHistory()
    again.window(True, now, now + 10)
    again.merge(doc, now + 10)
    merged = again.to_json(now + 10)
    assert len(merged["hours"]) == HOURS + 1
    assert merged["hours"][-1] == [start + 71 * HOUR, 2, 70.0, 0]


def test_fleet_chart_from_records():
    now = 500 * HOUR + 1800.0
    rec = lambda name, hours, queue: {"identity": name, "history": {"hours": hours, "queue": queue}}  # noqa: E731
    records = [rec("gpu-a", [[500 * HOUR, 30, 900.0, 0], [499 * HOUR, 60, 3600.0, 1]], [[500 * HOUR, 12]]),
               rec("gpu-b", [[500 * HOUR, 3, 90.0, 0]], [[500 * HOUR, 7], [499 * HOUR, 4]]),
               rec("gpu-old", [[400 * HOUR, 99, 3600.0, 0]], [])]  # older than a day: not drawn
    root = parse(chart_data.fleet_chart(records, now, 640))
    windows = root.findall(".//s:g[@class='series']", NS)
    names = [g.get("data-name") for g in windows]
    assert names.count("gpu-a") == 2 and names.count("gpu-b") == 2  # windows per hour and busy
    a_windows, a_busy = [g for g in windows if g.get("data-name") == "gpu-a"]
    ys = lambda g: sorted((float(c.get("data-x")), float(c.get("data-y"))) for c in g.findall("s:circle", NS))  # noqa: E731
    assert ys(a_windows) == [(-1.0, 60.0), (0.0, 30.0)]
    assert ys(a_busy) == [(-1.0, 1.0), (0.0, 0.5)]  # the current hour: 900 s of its 1800 s so far
    queue = root.find(".//s:g[@data-name='windows waiting (GPU queue)']", NS)
    assert sorted(float(c.get("data-y")) for c in queue.findall("s:circle", NS)) == [4.0, 12.0]  # the most seen
    assert "93 windows rendered" in root.find("s:desc", NS).text
    empty = parse(chart_data.fleet_chart([], now, 640))
    assert texts(empty).count(NO_DATA) == 3


def test_a_window_axis_has_whole_ticks():
    root = parse(panels("c9", "t", "d", Axis("window", 0, 3, whole=True), [Panel("p", [Series("a", [(0, 1), (3, 2)])])],
                        width=640))  # without `whole`: 0, 0.5, 1, ...
    labels = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text") if t.get("text-anchor") == "middle"
              and t.text and t.text[0].isdigit()]
    assert labels and all(float(x).is_integer() for x in labels), labels
    assert nice_ticks(0, 3, 8, min_step=1.0) == [0, 1, 2, 3]


async def test_a_worker_samples_the_queue_at_most_every_probe_period(monkeypatch):
    from longtalk import fleet
    from longtalk.fleet import FleetRecord

    clock = [10_000.0 * HOUR]
    monkeypatch.setattr(fleet.time, "time", lambda: clock[0])
    calls = []

    async def probe():
        calls.append(clock[0])
        if len(calls) == 2:
            raise RuntimeError("Temporal away")
        return 4 * len(calls)

    rec = FleetRecord(None, "gpu-x", "b", "gpu", {})
    rec.queue_probe = probe
    await rec.probe_queue()
    await rec.probe_queue()  # too soon: not asked again
    assert len(calls) == 1 and rec.history.to_json(clock[0])["queue"] == [[clock[0], 4]]
    clock[0] += fleet.QUEUE_PROBE_S
    await rec.probe_queue()  # asked, failed: nothing recorded, nothing raised
    clock[0] += fleet.QUEUE_PROBE_S
    await rec.probe_queue()
    assert len(calls) == 3 and rec.history.queue[int(clock[0] // QUEUE_SLOT_S * QUEUE_SLOT_S)] == 12
