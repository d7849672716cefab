// longtalk dashboard charts: SVG drawn by the server (api/dashboard/charts.py) at the width of
// its card. dashboard.js announces every refresh of the render and fleet pages ("lt:render",
// "lt:fleet" events with the JSON it drew); a chart is fetched again when what it draws has
// changed (windows finished, status) or the card's width has. The SVG is parsed as XML
// (DOMParser, no scripts run) and its <svg> element put in place.
(() => {
  "use strict";
  const main = document.getElementById("main");
  const h = (tag, attrs = {}, ...kids) => {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    el.append(...kids);
    return el;
  };

  // one card of figures; each figure knows its URL and what it was last drawn for
  function section(id, title, charts) {
    let card = document.getElementById(id);
    if (card) return card;
    card = h("section", { class: "card charts", id }, h("h2", {}, title));
    for (const [name, caption] of charts) {
      card.append(h("figure", { class: "chart-box", "data-chart": name },
        h("div", { class: "chart-svg" }, h("p", { class: "muted" }, "Loading…")), h("figcaption", {}, caption)));
    }
    main.append(card);
    return card;
  }

  async function draw(fig, url, key) {
    const box = fig.querySelector(".chart-svg");
    const width = Math.floor(box.clientWidth || fig.clientWidth || 640);
    const want = `${key}|${width}`;
    if (fig.dataset.drawn === want || fig.dataset.loading === want) return;
    fig.dataset.loading = want;
    try {
      const r = await fetch(`${url}?w=${width}`, { credentials: "same-origin" });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const doc = new DOMParser().parseFromString(await r.text(), "image/svg+xml");
      const svg = doc.documentElement;
      if (svg.nodeName !== "svg") throw new Error("not an SVG");
      box.replaceChildren(document.importNode(svg, true));
      fig.dataset.drawn = want;
    } catch (e) {
      box.replaceChildren(h("p", { class: "error" }, `chart not drawn: ${e.message}`));
    } finally {
      if (fig.dataset.loading === want) delete fig.dataset.loading;
    }
  }

  const RENDER = [["windows", "GPU time and queue wait of each window (hover a point for its value)."],
    ["estimate", "The plan-time estimate against what the render has used."],
    ["quality", "The quality guard's measures per window, each with its bound (dashed red)."]];
  let last = null;
  function renderCharts(d) {
    last = d;
    if (!d.windows_total) return; // planned after ingest: nothing to draw yet
    const card = section("render-charts", "Charts", RENDER);
    const base = `/dashboard/api/renders/${encodeURIComponent(d.id)}/charts`;
    const key = `${d.status}|${d.states}`;
    for (const fig of card.querySelectorAll("figure")) draw(fig, `${base}/${fig.dataset.chart}.svg`, key);
  }

  function fleetCharts(d) {
    const card = section("fleet-charts", "Last 24 hours", [["fleet", "Windows per hour and GPU busy per worker; the windows waiting on the GPU queue."]]);
    // the day moves on its own: drawn again every 30 s of polls, or when the workers' windows change
    const key = `${d.workers.map((w) => `${w.identity}:${w.windows_last_hour}`).join(",")}|${Math.floor(Date.now() / 30000)}`;
    for (const fig of card.querySelectorAll("figure")) draw(fig, `/dashboard/api/fleet/charts/${fig.dataset.chart}.svg`, key);
  }

  let lastFleet = null;
  document.addEventListener("lt:render", (e) => renderCharts(e.detail));
  document.addEventListener("lt:fleet", (e) => { lastFleet = e.detail; fleetCharts(e.detail); });
  let resize;
  addEventListener("resize", () => {
    clearTimeout(resize);
    resize = setTimeout(() => { if (last) renderCharts(last); if (lastFleet) fleetCharts(lastFleet); }, 250);
  });
})();
