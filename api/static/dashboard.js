// longtalk dashboard: vanilla JS. Every page polls its JSON every 2 s (paused while the tab
// is hidden) and redraws in place; actions go through the API's /v2 routes with the
// session's CSRF token. Text from the server is set with textContent, never as HTML.
(() => {
  "use strict";
  const meta = (n) => document.querySelector(`meta[name="${n}"]`)?.content || "";
  const CSRF = meta("csrf-token"), ENDPOINT = meta("endpoint");
  const POLL_MS = 2000;
  const main = document.getElementById("main");

  // ---- helpers -------------------------------------------------------------------
  function h(tag, attrs = {}, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const dash = "—";
  function fmtDur(s) {
    if (s === null || s === undefined || !isFinite(s)) return dash;
    s = Math.max(0, Math.round(s));
    const d = Math.floor(s / 86400), hh = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60), ss = s % 60;
    if (d) return `${d}d ${hh}h`;
    if (hh) return `${hh}h ${m}m`;
    if (m) return `${m}m ${ss}s`;
    return `${ss}s`;
  }
  function fmtAgo(iso) {
    if (!iso) return dash;
    const s = (Date.now() - Date.parse(iso)) / 1000;
    return s < 5 ? "just now" : `${fmtDur(s)} ago`;
  }
  function fmtTime(iso) { return iso ? new Date(iso).toLocaleString() : dash; }
  function fmtBytes(b) {
    if (b === null || b === undefined) return dash;
    const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return `${b.toFixed(i ? 1 : 0)} ${u[i]}`;
  }
  const MODES = { "i2v-single": "I2V · single", "i2v-multi": "I2V · multi", "v2v-single": "V2V · single", "v2v-multi": "V2V · multi" };
  const STATUS = { running: "running", queued: "queued", completed: "completed", failed: "failed", cancelled: "cancelled", timed_out: "timed out" };
  const statusBadge = (s) => h("span", { class: `status ${s}` }, STATUS[s] || s);
  function bar(done, total, big) {
    const pct = total ? Math.min(100, 100 * (done || 0) / total) : 0;
    return h("div", { class: big ? "bar big" : "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": total || 0, "aria-valuenow": done || 0 },
      h("span", { style: `width:${pct.toFixed(1)}%` }));
  }

  async function getJSON(url) {
    const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); throw new Error("logged out"); }
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw Object.assign(new Error(body.error || `HTTP ${r.status}`), { status: r.status });
    return body;
  }
  // an action through the API's own routes: the session cookie + the CSRF token
  async function api(method, path, body) {
    const r = await fetch(`/v2/${encodeURIComponent(ENDPOINT)}${path}`, {
      method, credentials: "same-origin",
      headers: { "X-CSRF-Token": CSRF, Accept: "application/json", ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const out = await r.json().catch(() => ({}));
    if (!r.ok) throw Object.assign(new Error(out.error || `HTTP ${r.status}`), { status: r.status });
    return out;
  }

  // fn() every POLL_MS while the tab is visible, until it returns "stop"
  function poll(fn) {
    let timer = null, stopped = false;
    const tick = async () => {
      clearTimeout(timer);
      if (stopped) return;
      try { if (await fn() === "stop") { stopped = true; return; } } catch (e) { console.warn(e); }
      timer = setTimeout(tick, POLL_MS);
    };
    document.addEventListener("visibilitychange", () => { if (!document.hidden) tick(); else clearTimeout(timer); });
    tick();
    return tick;
  }

  // A confirmation dialog: what will happen, then an explicit button (Escape/Back cancels).
  function confirmDialog({ title, body, confirm, danger, onConfirm, ready = true }) {
    const dlg = document.getElementById("confirm");
    const msg = h("p", { class: "error", role: "alert" });
    const ok = h("button", { class: danger ? "danger" : "primary", type: "button", id: "confirm-ok", disabled: !ready }, confirm);
    const close = () => dlg.close();
    ok.addEventListener("click", async () => {
      ok.disabled = true; msg.textContent = "";
      try { await onConfirm(); close(); } catch (e) { msg.textContent = e.message; ok.disabled = false; }
    });
    dlg.replaceChildren(h("h3", {}, title), ...[].concat(body), msg,
      h("div", { class: "buttons" }, h("button", { type: "button", id: "confirm-cancel", onclick: close }, "Keep it"), ok));
    dlg.showModal();
    return { ok, msg };
  }

  // ---- renders -------------------------------------------------------------------
  function rendersPage() {
    let status = new URLSearchParams(location.search).get("status") || "";
    let q = new URLSearchParams(location.search).get("q") || "";
    let shown = 50, nextToken = null;
    const chips = h("div", { class: "chips", role: "group", "aria-label": "status" });
    const search = h("input", { type: "search", id: "search", placeholder: "Search by id, name or label…", value: q, "aria-label": "search by id, name or label" });
    const tbody = h("tbody");
    const table = h("div", { class: "table-wrap cards" }, h("table", { id: "renders" },
      h("thead", {}, h("tr", {}, ...["", "Render", "Mode", "Backend", "Stage", "Progress", "ETA", "Started", "Elapsed"].map((t) => h("th", {}, t)))),
      tbody));
    const more = h("div", { class: "more" });
    const note = h("p", { class: "muted", id: "count" });
    main.replaceChildren(h("div", { class: "toolbar" }, chips, search), table, more, note);

    const setUrl = () => history.replaceState(null, "", "?" + new URLSearchParams({ ...(status && { status }), ...(q && { q }) }));
    let debounce;
    search.addEventListener("input", () => { clearTimeout(debounce); debounce = setTimeout(() => { q = search.value.trim(); shown = 50; setUrl(); refresh(); }, 300); });

    const row = (r) => {
      const href = `/renders/${encodeURIComponent(r.id)}`;
      const thumb = r.thumb ? h("img", { src: r.thumb, alt: "", loading: "lazy", width: 64, height: 40 }) : h("div", { class: "ph" });
      const tr = h("tr", { "data-id": r.id, onclick: (e) => { if (!e.target.closest("a")) location.href = href; } },
        h("td", { class: "thumb" }, thumb),
        h("td", { class: "what" }, r.name ? h("a", { class: "name", href }, r.name) : "", h("a", { class: "id", href }, r.id),
          r.prompt ? h("div", { class: "prompt", title: r.prompt }, r.prompt) : "",
          h("div", { class: "sub" }, r.owner || dash, " ", statusBadge(r.status), ...(r.labels || []).map((l) => [" ", h("span", { class: "label" }, l)]))),
        h("td", { "data-label": "" }, MODES[r.mode] || r.mode || dash),
        h("td", { class: "hide-phone" }, r.backend || dash),
        h("td", { "data-label": "stage" }, r.stage || dash),
        h("td", { class: "prog" }, bar(r.windows_done, r.windows_total),
          h("div", { class: "nums" }, r.windows_total ? `${r.windows_done ?? 0} / ${r.windows_total} windows` : "windows " + dash)),
        h("td", { "data-label": "ETA" }, r.status === "running" ? fmtDur(r.eta_s) : dash),
        h("td", { class: "hide-phone", title: fmtTime(r.started) }, fmtAgo(r.started)),
        h("td", { "data-label": "elapsed" }, fmtDur(r.elapsed_s)));
      return tr;
    };

    async function refresh() {
      const params = new URLSearchParams({ limit: Math.min(shown, 200), ...(status && { status }), ...(q && { q }) });
      let data;
      try { data = await getJSON(`/dashboard/api/renders?${params}`); }
      catch (e) { note.textContent = e.message; return; }
      const labels = [["", "All", "all"], ["queued", "Queued"], ["running", "Running"], ["completed", "Completed"], ["failed", "Failed"], ["cancelled", "Cancelled"], ["timed_out", "Timed out"]];
      chips.replaceChildren(...labels.map(([v, label, key]) => h("button", {
        class: "chip", type: "button", "aria-pressed": String(v === status), "data-status": v,
        onclick: () => { status = v; shown = 50; setUrl(); refresh(); },
      }, label, h("span", { class: "n" }, data.counts?.[key || v] ?? 0))));
      tbody.replaceChildren(...data.renders.map(row));
      if (!data.renders.length) tbody.replaceChildren(h("tr", {}, h("td", { colspan: 9, class: "empty" }, q ? "No render id or name starts with that, and no label is that." : "No renders yet.")));
      nextToken = data.next_page_token;
      more.replaceChildren(nextToken && shown < 200 ? h("button", { type: "button", onclick: () => { shown += 50; refresh(); } }, "Show more") : "");
      note.textContent = `${data.renders.length} shown · ${data.admin ? "all owners (admin)" : "your renders"} · updates every ${POLL_MS / 1000} s`;
    }
    poll(refresh);
  }

  // ---- one render ----------------------------------------------------------------
  function renderPage(id) {
    const el = {};
    const card = (title, ...body) => h("section", { class: "card" }, h("h2", {}, title), ...body);
    el.badge = h("span");
    el.meta = h("div", { class: "meta" });
    el.name = h("div", { class: "name", id: "render-name", hidden: true });
    el.actions = h("div", { class: "actions" });
    el.bar = h("div");
    el.line = h("div", { class: "progress-line" });
    el.kv = h("dl", { class: "kv" });
    el.strip = h("div", { class: "strip", id: "strip" });
    el.stripNote = h("div", { class: "legend" }, ...[["--wait", "waiting"], ["--run", "rendering"], ["--done", "done"], ["--retry", "retried"], ["--fail", "failed"]]
      .map(([v, t]) => h("span", {}, h("i", { style: `background:var(${v})` }), t)),
      h("span", {}, "quality: top bar re-rendered, bottom bar flagged, left edge re-anchored"));
    el.preview = h("div", { class: "muted" }, "The preview starts with the first finished window.");
    el.final = h("div");
    el.error = h("section", { class: "card errbox", hidden: true });
    el.links = h("ul", { class: "links" });
    el.versions = h("section", { class: "card", hidden: true });
    const hover = h("div", { class: "hoverbox", hidden: true });
    main.replaceChildren(
      h("div", { class: "head" }, h("div", { class: "title" }, el.name, h("h1", {}, id), el.meta), el.badge, el.actions),
      el.error,
      // desktop: progress, windows and details on the left, the preview beside them on the right
      // (its controls in the first screen); a phone stacks them: progress, preview, windows, ...
      h("div", { class: "grid2 render-grid" },
        h("div", {}, (el.progressCard = card("Progress", el.bar, el.line)), card("Windows", el.strip, el.stripNote), card("Details", el.kv)),
        h("div", {}, (el.videoCard = card("Preview", el.preview, el.final)), card("Links", el.links), el.versions)),
      hover);
    el.progressCard.classList.add("progress-card");
    el.videoCard.classList.add("preview-card");

    let data = null, player = null, cells = [];
    let sawLive = false; // a render seen unfinished keeps its live preview; a finished one shows the final video
    const details = new Map();

    // the hover box: state at once, frames/duration/attempts/worker from the window's record
    el.strip.addEventListener("mouseover", async (e) => {
      const c = e.target.closest(".cell"); if (!c) return;
      const k = +c.dataset.k, st = c.dataset.state;
      const r = c.getBoundingClientRect();
      hover.style.left = Math.min(r.left, innerWidth - 270) + "px"; hover.style.top = (r.bottom + 8) + "px";
      const show = (d) => {
        hover.replaceChildren(h("b", {}, `Window ${k}`), ` · ${({ w: "waiting", r: "rendering", d: "done", t: "retried", f: "failed" })[st]}`,
          d ? h("div", {}, d.frames !== undefined ? `${d.frames} frames (${d.keep_start}–${d.keep_end - 1}) · ${d.duration_s} s` : "")
            : h("div", {}, "…"),
          d && d.attempts ? h("div", {}, `attempts: ${d.attempts}${d.attempt ? ` (kept #${d.attempt})` : ""}`) : "",
          d && d.worker ? h("div", {}, `GPU worker: ${d.worker}`) : "",
          d && d.render_s ? h("div", {}, `render time: ${d.render_s.toFixed(1)} s`) : "",
          d && d.from_render ? h("div", {}, `from ${d.from_render}`) : "",
          d && d.quality ? h("div", {}, `quality: ${[...d.quality.verdict.hard, ...d.quality.verdict.drift, ...d.quality.verdict.notes].join(", ") || "ok"}` +
            (d.quality.rerendered ? ` · re-rendered ${d.quality.rerendered}×` : "") + (d.quality.flagged ? " · flagged" : "") +
            (d.quality.reanchor ? " · re-anchored" : "")) : "");
      };
      hover.hidden = false; show(details.get(k));
      c.dataset.hovered = "1";
      if (!details.has(k) || !"dt".includes(details.get(k)._state)) {
        try {
          const d = await getJSON(`/dashboard/api/renders/${encodeURIComponent(id)}/windows/${k}`);
          d._state = st; details.set(k, d);
          if (c.dataset.hovered) show(d);
        } catch (_) { /* the box keeps what it has */ }
      }
    });
    el.strip.addEventListener("mouseout", (e) => { const c = e.target.closest(".cell"); if (c) delete c.dataset.hovered; hover.hidden = true; });

    function startPlayer() {
      if (player) return;
      const video = h("video", { id: "preview", controls: true, muted: true, autoplay: true, playsinline: true });
      video.muted = true;
      // the preview plays from the render's first frame; "Jump to live" goes to its newest window
      const toLive = h("button", { type: "button", id: "to-live", onclick: () => {
        const live = player && player.liveSyncPosition;
        const end = video.seekable.length ? video.seekable.end(video.seekable.length - 1) : NaN;
        const t = isFinite(live) && live > 0 ? live : end - 1;
        if (isFinite(t)) { video.currentTime = Math.max(0, t); video.play().catch(() => {}); }
      } }, "Jump to live");
      el.preview.replaceChildren(video, h("div", { class: "legend" }, "Live preview from the beginning: the finished windows with the original audio (HLS, grows as windows finish).", toLive));
      const src = data.hls.url;
      if (window.Hls && Hls.isSupported()) {
        player = new Hls({ liveDurationInfinity: false, startPosition: 0 });
        player.loadSource(src);
        player.attachMedia(video);
        player.on(Hls.Events.MANIFEST_PARSED, () => video.play().catch(() => {}));
      } else if (video.canPlayType("application/vnd.apple.mpegurl")) { // Safari plays HLS natively
        video.src = src; player = video;
        video.addEventListener("loadedmetadata", () => { video.currentTime = 0; }, { once: true });
        video.play().catch(() => {});
      } else {
        el.preview.replaceChildren(h("p", { class: "muted" }, "This browser cannot play HLS."));
        player = "none";
      }
    }

    function draw() {
      const d = data;
      el.badge.replaceChildren(statusBadge(d.status));
      el.name.replaceChildren(d.name || "", ...(d.labels || []).flatMap((l) => [" ", h("span", { class: "label" }, l)]));
      el.name.hidden = !d.name && !(d.labels || []).length;
      el.meta.replaceChildren(`${d.owner || dash} · ${MODES[d.mode] || d.mode || dash} · ${d.backend || dash}`,
        ...(d.base ? [" · re-render of ", h("a", { href: `/renders/${encodeURIComponent(d.base)}` }, d.base)] : []));
      el.bar.replaceChildren(bar(d.windows_done, d.windows_total, true));
      el.line.replaceChildren(h("span", { id: "progress-text" }, `${d.windows_done} / ${d.windows_total || dash} windows · stage ${d.stage || dash}`),
        h("span", {}, d.status === "running" ? `ETA ${fmtDur(d.eta_s)}` : ""), h("span", {}, `elapsed ${fmtDur(d.elapsed_s)}`));
      // the strip: cells are reused, only their state changes
      if (cells.length !== d.states.length) {
        cells = [...d.states].map((_, k) => h("div", { class: "cell", "data-k": k }));
        el.strip.replaceChildren(...cells);
        if (!cells.length) el.strip.replaceChildren(h("span", { class: "muted" }, "No windows yet (planned after ingest)."));
      }
      // the quality guard's marks (a finished render): re-rendered, flagged, re-anchored
      const q = d.quality || {}, marks = new Map();
      const mark = (k, m) => marks.set(k, (marks.get(k) || "") + " " + m);
      (q.rerendered || []).forEach((k) => mark(k, "q-redo"));
      (q.flagged || []).forEach((f) => mark(f.window, "q-flag"));
      (q.reanchors || []).forEach((r) => mark(r.window, "q-anchor"));
      [...d.states].forEach((s, k) => {
        const cls = `cell ${s}${marks.get(k) || ""}`;
        if (cells[k].dataset.state !== s || cells[k].className !== cls) { cells[k].dataset.state = s; cells[k].className = cls; }
      });
      const p = d.params || {};
      const rows = [["Started", fmtTime(d.started)], ["Ended", d.closed ? fmtTime(d.closed) : dash], ["Elapsed", fmtDur(d.elapsed_s)],
        ["Frames", d.frames_total ? `${d.frames_total} at ${d.fps} fps (${fmtDur(d.frames_total / d.fps)})` : dash],
        ["Size", p.width ? `${p.width}×${p.height}` : dash], ["Seed", p.seed ?? dash], ["Prompt", p.prompt || dash],
        ["Chains", d.chains && d.chains.length ? d.chains.map(([a, b]) => `${a}–${b}`).join(", ") : dash],
        ["Quality", d.quality ? `${d.quality.windows_measured} windows measured · worst ${d.quality.worst_window ? d.quality.worst_window.window : dash}` +
          ` · re-rendered ${d.quality.rerendered.length} · flagged ${d.quality.flagged.length} · re-anchors ${d.quality.reanchors.length}` +
          (d.quality.max_delta_e !== null ? ` · max ΔE ${d.quality.max_delta_e}` : "") : dash],
        ["GPU use", d.usage ? d.usage.per_gpu.map(usageText).join("; ") || dash : dash]];
      el.kv.replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
      // error
      if (d.error) {
        const e = d.error;
        el.error.hidden = false;
        el.error.replaceChildren(h("h2", {}, "Error"), h("div", { class: "type", id: "error-type" }, e.type),
          h("div", {}, e.field ? `field: ${e.field}` : "", e.window !== null && e.window !== undefined ? `window: ${e.window}` : "",
            e.activity ? ` (in ${e.activity})` : ""),
          h("pre", {}, e.message));
      } else el.error.hidden = true;
      // preview and final video
      if (d.hls.segments > 0 && !player && sawLive) startPlayer();
      if (d.video && !el.final.dataset.done) {
        el.final.dataset.done = "1";
        el.final.replaceChildren(h("h2", { style: "margin-top:1rem" }, "Final video"),
          h("video", { id: "final", controls: true, preload: "metadata", src: d.video.url }),
          h("p", {}, h("a", { class: "button", href: d.video.download_url, download: `${d.id}.mp4`, id: "download" }, "Download MP4")));
        if (!player) { el.preview.replaceChildren(); el.videoCard.querySelector("h2").textContent = "Video"; el.final.querySelector("h2").remove(); }
      }
      // links
      el.links.replaceChildren(h("li", {}, h("a", { href: d.links.temporal, target: "_blank", rel: "noopener" }, "Temporal UI: this workflow")),
        h("li", {}, h("a", { href: d.hls.url, target: "_blank" }, "HLS playlist"), ` (${d.hls.segments} segments${d.hls.ended ? ", ended" : ""})`),
        ...Object.entries(d.links.objects).map(([name, url]) => h("li", {}, h("a", { href: url, target: "_blank", rel: "noopener" }, name))));
      if (d.versions && d.versions.length) {
        el.versions.hidden = false;
        el.versions.replaceChildren(h("h2", {}, "Re-renders of this render"), h("ul", { class: "links" },
          ...d.versions.map((v) => h("li", {}, h("a", { href: `/renders/${encodeURIComponent(v.id)}` }, v.id), " ", statusBadge(v.status)))));
      }
      drawActions();
      document.dispatchEvent(new CustomEvent("lt:render", { detail: d })); // charts.js
    }

    // one GPU kind of usage.actual: a RunPod row says what RunPod billed over every job, and its bound
    function usageText(r) {
      const money = (c) => (c === null || c === undefined ? "no price" : `$${c.toFixed(4)}`);
      if (r.pool !== "runpod") return `${r.device}: ${r.windows} windows, ${fmtDur(r.gpu_busy_s)}, ${money(r.cost)}`;
      return `${r.device}: ${r.windows} windows, billed ${r.billed_s.toFixed(1)} s over ${r.jobs} jobs ` +
        `(${r.jobs_failed} failed${r.jobs_unreported ? `, ${r.jobs_unreported} unreported` : ""}), ${money(r.cost)}; ` +
        `with cold starts and idle time at most ${(r.billed_s + r.unseen_max_s).toFixed(1)} s` +
        (r.cost_max !== undefined ? `, ${money(r.cost_max)}` : "");
    }

    function drawActions() {
      const a = data.actions;
      const key = JSON.stringify(a);
      if (el.actions.dataset.key === key) return;
      el.actions.dataset.key = key;
      el.actions.replaceChildren(
        a.cancel ? h("button", { type: "button", id: "cancel", class: "danger", onclick: cancel }, "Cancel render") : "",
        a.retry ? h("button", { type: "button", id: "retry", class: "primary", onclick: retry }, "Retry") : "",
        a.resume ? h("button", { type: "button", id: "resume", class: "primary", onclick: resume }, "Resume") : "",
        a.rerender ? h("button", { type: "button", id: "rerender", onclick: rerender }, "Re-render windows…") : "");
    }

    // what a cancel leaves, said from the render's state read when the dialog opens (not the
    // last poll): the finished windows stay stored, the windows on a GPU now are named
    function cancelNote(d) {
      const onGpu = [...d.states].flatMap((s, k) => (s === "r" ? [k] : []));
      let gpu = d.status === "queued" ? " No GPU has begun a window yet." : "";
      if (onGpu.length === 1) gpu = ` Window ${onGpu[0]}, the one in flight now, is stopped; it stays stored only if it finishes before the cancel reaches it.`;
      if (onGpu.length > 1) gpu = ` Windows ${onGpu.join(", ")}, those in flight now, are stopped; each stays stored only if it finishes before the cancel reaches it.`;
      return `${d.windows_done} of ${d.windows_total || "?"} windows are finished and stay stored.${gpu} Resume (on this page, once it has stopped) starts it again after the stored windows.`;
    }
    async function cancel() {
      const note = h("p", { class: "note", id: "cancel-note" }, "Reading the render's state…");
      const dlg = confirmDialog({
        title: "Cancel this render?", danger: true, confirm: "Cancel render", ready: false,
        body: [h("p", {}, h("span", { class: "mono" }, id)), note],
        onConfirm: async () => { await api("POST", `/cancel/${encodeURIComponent(id)}`); await refresh(); },
      });
      try {
        data = await getJSON(`/dashboard/api/renders/${encodeURIComponent(id)}`);
        draw();
        note.textContent = cancelNote(data);
        dlg.ok.disabled = !data.actions.cancel;
        if (!data.actions.cancel) note.textContent = `This render is ${data.status} now: there is nothing to cancel.`;
      } catch (e) { dlg.msg.textContent = e.message; }
    }
    function retry() {
      confirmDialog({
        title: "Retry this render?", confirm: "Retry",
        body: [h("p", {}, h("span", { class: "mono" }, id)),
          h("p", { class: "note" }, `It starts again under the same id with its first request. Every stored window (${data.windows_done} of ${data.windows_total || "?"}) is reused, not rendered again.`)],
        onConfirm: async () => { await api("POST", `/retry/${encodeURIComponent(id)}`); await refresh(); },
      });
    }
    // a cancelled render starts again under its id (POST /retry): its stored windows are kept,
    // and the page follows the new run (the same id: the next poll reads it)
    function resume() {
      confirmDialog({
        title: "Resume this render?", confirm: "Resume",
        body: [h("p", {}, h("span", { class: "mono" }, id)),
          h("p", { class: "note", id: "resume-note" }, `It starts again under the same id with its first request. The ${data.windows_done} stored window${data.windows_done === 1 ? " is" : "s are"} kept; only the rest render.`)],
        onConfirm: async () => {
          await api("POST", `/retry/${encodeURIComponent(id)}`);
          if (player && player.destroy) player.destroy();  // the playlist grows again: a fresh player
          player = null; sawLive = true;
          el.preview.replaceChildren(h("div", { class: "muted" }, "The preview starts with the first finished window."));
          await refresh();
        },
      });
    }
    function rerender() {
      const last = Math.max(0, data.windows_total - 1), p = data.params || {};
      const from = h("input", { type: "number", min: 0, max: last, value: Math.max(0, last - 1), id: "rr-from" });
      const to = h("input", { type: "number", min: 0, max: last, value: last, id: "rr-to" });
      const prompt = h("textarea", { id: "rr-prompt" }); prompt.value = p.prompt || "";
      const seed = h("input", { type: "number", id: "rr-seed", value: p.seed ?? "" });
      const note = h("p", { class: "note", id: "rr-count" }, "…");
      let previewKey = null, timer;
      const body = [h("p", {}, "Renders windows again into a new output version; this version stays as it is."),
        h("div", { class: "row" }, h("label", {}, "From window", from), h("label", {}, "To window", to), h("label", {}, "Seed", seed)),
        h("div", { class: "row" }, h("label", { style: "flex-basis:100%" }, "Prompt", prompt)), note];
      const dlg = confirmDialog({
        title: "Re-render windows", confirm: "Re-render", ready: false, body,
        onConfirm: async () => {
          const req = { from: +from.value, to: +to.value };
          if (prompt.value !== (p.prompt || "")) req.prompt = prompt.value;
          if (seed.value !== "" && +seed.value !== p.seed) req.seed = +seed.value;
          const out = await api("POST", `/rerender/${encodeURIComponent(id)}`, req);
          location.href = `/renders/${encodeURIComponent(out.id)}`;
        },
      });
      // how many windows will render again (those chosen and the rest of their chain), from the API
      const check = async () => {
        const k = `${from.value}-${to.value}`;
        dlg.ok.disabled = true;
        if (from.value === "" || to.value === "" || +from.value > +to.value) { note.textContent = "Choose from ≤ to."; return; }
        try {
          const r = await api("GET", `/rerender/${encodeURIComponent(id)}?from=${+from.value}&to=${+to.value}`);
          if (k !== `${from.value}-${to.value}`) return;
          previewKey = k;
          note.textContent = `${r.windows} window${r.windows === 1 ? "" : "s"} will render again: ${r.first}–${r.last}` +
            (r.last > +to.value ? ` (the ${r.last - +to.value} after window ${to.value} follow from it in its chain)` : "") +
            `. The result is a new version; this one stays.`;
          dlg.ok.textContent = `Re-render ${r.windows} window${r.windows === 1 ? "" : "s"}`;
          dlg.ok.disabled = false;
        } catch (e) {
          note.textContent = (e.status === 404 || e.status === 405) && /not found|Method/i.test(e.message) && !/render .* not found/.test(e.message)
            ? "Re-rendering is not available on this server yet." : e.message;
        }
      };
      for (const inp of [from, to]) inp.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(check, 250); });
      check();
    }

    async function refresh() {
      try { data = await getJSON(`/dashboard/api/renders/${encodeURIComponent(id)}`); }
      catch (e) {
        if (e.status === 404) { // gone, or not this key's: asking again every 2 s changes nothing
          main.replaceChildren(h("div", { class: "card", id: "not-found" }, h("p", { class: "error" }, e.message),
            h("p", { class: "muted" }, "This page has stopped asking. The render may belong to another key, or its retention (policy.ttl) has passed."),
            h("a", { href: "/" }, "← all renders")));
          return "stop";
        }
        if (!data) main.replaceChildren(h("div", { class: "card" }, h("p", { class: "error" }, e.message), h("a", { href: "/" }, "← all renders")));
        return;
      }
      document.title = `${data.status} · ${id.slice(0, 8)} · longtalk`;
      if (data.status !== "completed") sawLive = true;
      draw();
    }
    poll(refresh);
  }

  // ---- fleet ---------------------------------------------------------------------
  function fleetPage() {
    const tiles = h("div", { class: "tiles" });
    const tbody = h("tbody");
    const failures = h("ul", { class: "failures links" });
    main.replaceChildren(tiles,
      h("section", { class: "card" }, h("h2", {}, "GPU workers"),
        h("div", { class: "table-wrap cards", style: "border:0" }, h("table", { id: "workers" },
          h("thead", {}, h("tr", {}, ...["Worker", "Device", "Free VRAM", "Build", "Working on", "Last heartbeat", "Windows / h", "State"].map((t) => h("th", {}, t)))),
          tbody))),
      h("section", { class: "card" }, h("h2", {}, "Recent failures"), failures));
    const tile = (v, l, id) => h("div", { class: "tile", id }, h("div", { class: "v" }, v), h("div", { class: "l" }, l));
    async function refresh() {
      const d = await getJSON("/dashboard/api/fleet");
      const healthy = d.workers.filter((w) => w.healthy).length;
      tiles.replaceChildren(tile(`${healthy} / ${d.workers.length}`, "GPU workers healthy", "t-workers"),
        tile(d.queue.left.windows, d.queue.left.text.replace(/^\d+ /, ""), "t-queue"),
        tile(d.throughput.windows_last_hour, "windows rendered, last hour", "t-windows"),
        tile(d.throughput.renders_completed_last_hour, "renders completed, last hour", "t-renders"),
        tile(d.throughput.window_failures_last_hour, "window failures, last hour", "t-fail"));
      tbody.replaceChildren(...d.workers.map((w) => {
        const cur = w.current;
        return h("tr", { "data-worker": w.identity, onclick: null },
          h("td", {}, h("span", { class: "mono" }, w.identity), h("div", { class: "sub" }, (w.backends || []).join(", "))),
          h("td", { "data-label": "" }, w.device || dash),
          h("td", { "data-label": "free VRAM" }, w.vram_free != null ? `${fmtBytes(w.vram_free)}${w.vram_total ? " / " + fmtBytes(w.vram_total) : ""}` : dash),
          h("td", { "data-label": "build", class: "mono" }, w.build_id || dash),
          h("td", { "data-label": "on" }, cur ? (cur.render_id ? [h("a", { href: `/renders/${encodeURIComponent(cur.render_id)}`, class: "mono" }, cur.render_id.slice(0, 8)), ` · window ${cur.window}`] : `a render · window ${cur.window}`) : "idle"),
          h("td", { "data-label": "heartbeat", title: fmtTime(w.heartbeat_at) }, `${fmtDur(w.age_s)} ago`),
          h("td", { "data-label": "windows/h" }, w.windows_last_hour ?? dash),
          h("td", {}, h("span", { class: w.healthy ? "healthy" : "stale" }, w.healthy ? "healthy" : "stale")));
      }));
      if (!d.workers.length) tbody.replaceChildren(h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No GPU worker has reported yet.")));
      failures.replaceChildren(...d.failures.map((f) => h("li", {}, h("a", { href: `/renders/${encodeURIComponent(f.id)}`, class: "mono" }, f.id), " ",
        h("span", { class: "muted" }, fmtAgo(f.closed)), h("div", {}, h("b", {}, f.type), f.field ? ` (${f.field})` : "", ": ", f.message))));
      if (!d.failures.length) failures.replaceChildren(h("li", { class: "muted" }, "None."));
      document.dispatchEvent(new CustomEvent("lt:fleet", { detail: d })); // charts.js
    }
    poll(refresh);
  }

  const page = document.body.dataset.page;
  if (page === "renders") rendersPage();
  else if (page === "render") renderPage(document.body.dataset.render);
  else if (page === "fleet") fleetPage();
})();
