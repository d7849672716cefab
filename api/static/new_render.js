// longtalk dashboard, "New render" (/new): a form that builds the /run body. The estimate
// (POST /v2/{endpoint}/estimate, the same body) updates as the form changes; submitting posts
// the body to /run (upload progress shown) and opens the render's page. The API's errors name
// a job field ("wav_base64: ..."): the message goes beside that field. Text from the server is
// set with textContent, never as HTML.
(() => {
  "use strict";
  if (document.body.dataset.page !== "new") return;
  const meta = (n) => document.querySelector(`meta[name="${n}"]`)?.content || "";
  const CSRF = meta("csrf-token"), ENDPOINT = meta("endpoint");
  const API = `/v2/${encodeURIComponent(ENDPOINT)}`;
  const main = document.getElementById("main");
  const $ = (id) => document.getElementById(id);
  // a media field: its job keys by source (the API's MEDIA_KEYS)
  const MEDIA = {
    image: { label: "Portrait", keys: { path: "image_path", url: "image_url", upload: "image_base64" }, accept: "image/*" },
    video: { label: "Source video", keys: { path: "video_path", url: "video_url", upload: "video_base64" }, accept: "video/*" },
    audio: { label: "Speech", keys: { path: "wav_path", url: "wav_url", upload: "wav_base64" }, accept: "audio/*,video/*" },
    audio_2: { label: "Second speaker's speech", keys: { path: "wav_path_2", url: "wav_url_2", upload: "wav_base64_2" }, accept: "audio/*,video/*" },
  };
  const NUMBERS = ["width", "height", "seed", "max_frame", "parallel_chains"];
  const files = {};  // media field -> its uploaded file as a data URI

  function fmtDur(s) {
    if (s === null || s === undefined || !isFinite(s)) return "—";
    s = Math.max(0, Math.round(s));
    const hh = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60), ss = s % 60;
    return hh ? `${hh}h ${m}m` : m ? `${m}m ${ss}s` : `${ss}s`;
  }

  function mediaField(field) {
    const m = MEDIA[field];
    return `<fieldset class="media" id="f-${field}"><legend>${m.label}</legend>
      <div class="src" role="radiogroup">${["upload", "url", "path"].map((s, i) =>
        `<label><input type="radio" name="src-${field}" value="${s}"${i ? "" : " checked"}> ${s === "upload" ? "Upload" : s === "url" ? "URL" : "Path on the volume"}</label>`).join("")}</div>
      <input type="file" id="file-${field}" accept="${m.accept}">
      <input type="url" id="url-${field}" placeholder="https://…" hidden>
      <input type="text" id="path-${field}" placeholder="/workspace/…" hidden>
      <p class="field-error" id="err-${field}" role="alert"></p></fieldset>`;
  }

  main.innerHTML = `<h1>New render</h1>
  <div class="grid2 new-render"><div><form id="new-form" class="card" novalidate>
    <p class="field-error" id="err-form" role="alert"></p>
    <div class="row"><label>Mode <select id="input_type"><option value="image">Portrait → video (I2V)</option>
      <option value="video">Source video → video (V2V)</option></select></label>
    <label>Speakers <select id="person_count"><option value="single">One</option><option value="multi">Two</option></select></label></div>
    ${mediaField("image")}${mediaField("video")}${mediaField("audio")}${mediaField("audio_2")}
    <label for="prompt">Prompt</label><textarea id="prompt" placeholder="A person is talking"></textarea>
    <p class="field-error" id="err-prompt" role="alert"></p>
    <div class="row"><label>Name (optional)<input type="text" id="name" maxlength="100" placeholder="Quarterly update">
      <span class="field-error" id="err-name" role="alert"></span></label>
    <label>Labels (optional, comma separated)<input type="text" id="labels" placeholder="team-a, lang:en">
      <span class="field-error" id="err-labels" role="alert"></span></label></div>
    <div class="row">${NUMBERS.map((n) => `<label>${n.replace("_", " ")}<input type="number" id="${n}" min="0"
      placeholder="${{ width: 512, height: 512, seed: "default", max_frame: "all", parallel_chains: "default" }[n]}">
      <span class="field-error" id="err-${n}" role="alert"></span></label>`).join("")}</div>
    <div class="upload" id="upload" hidden><div class="bar big"><span id="upload-bar" style="width:0%"></span></div>
      <span id="upload-text" class="muted"></span></div>
    <button type="submit" class="primary" id="start">Start render</button>
  </form></div>
  <div><section class="card" id="estimate" aria-live="polite"><h2>Estimate</h2>
    <p class="muted" id="est-note">Choose the speech to see what the render will take.</p><dl id="est"></dl></section></div></div>`;

  function shown() {
    const video = $("input_type").value === "video", multi = $("person_count").value === "multi";
    $("f-image").hidden = video;
    $("f-video").hidden = !video;
    $("f-audio_2").hidden = !multi;
    for (const field of Object.keys(MEDIA)) {
      const src = document.querySelector(`input[name="src-${field}"]:checked`).value;
      $(`file-${field}`).hidden = src !== "upload";
      $(`url-${field}`).hidden = src !== "url";
      $(`path-${field}`).hidden = src !== "path";
    }
  }

  function body() {
    const inp = { input_type: $("input_type").value, person_count: $("person_count").value };
    const used = [inp.input_type === "video" ? "video" : "image", "audio", ...(inp.person_count === "multi" ? ["audio_2"] : [])];
    for (const field of used) {
      const src = document.querySelector(`input[name="src-${field}"]:checked`).value;
      const value = src === "upload" ? files[field] : $(`${src}-${field}`).value.trim();
      if (value) inp[MEDIA[field].keys[src]] = value;
    }
    const prompt = $("prompt").value.trim();
    if (prompt) inp.prompt = prompt;
    const name = $("name").value.trim(), labels = $("labels").value.split(",").map((l) => l.trim()).filter(Boolean);
    if (name) inp.name = name;
    if (labels.length) inp.labels = labels;
    for (const n of NUMBERS) {
      const v = $(n).value.trim();
      if (v !== "") inp[n] = Number(v);
    }
    return { input: inp };
  }

  // "wav_base64_2: ..." -> the element beside the field it names
  function errorSlot(message) {
    const key = (message.match(/^([a-z_0-9.]+)(?:\[\d+\])?:/) || [])[1] || "";  // labels[2]: -> labels
    for (const [field, m] of Object.entries(MEDIA)) if (Object.values(m.keys).includes(key)) return $(`err-${field}`);
    return $(`err-${key}`) || $("err-form");
  }
  function clearErrors() { for (const el of document.querySelectorAll(".field-error")) el.textContent = ""; }
  function showError(message) { clearErrors(); errorSlot(message).textContent = message; }

  function row(label, value, source) {
    return [Object.assign(document.createElement("dt"), { textContent: label }),
      Object.assign(document.createElement("dd"), { textContent: value, title: source || "" })];
  }
  function showEstimate(e) {
    const s = e.sources || {};
    $("est-note").textContent = "Hover a number for where it comes from.";
    $("est").replaceChildren(...[
      row("Video", `${fmtDur(e.duration_s)} · ${e.frames} frames`, s.frames),
      row("Windows", `${e.windows} in ${e.chains} chain${e.chains === 1 ? "" : "s"}`, `${s.windows}; ${s.chains}`),
      row("GPU time", fmtDur(e.gpu_busy_s), s.gpu_s),
      row("Wall time", e.wall_s === null ? "no GPU worker now" : `${fmtDur(e.wall_s)} (done ≈ ${new Date(e.eta).toLocaleTimeString()})`, s.wall_s),
      row("Queue ahead", e.queue_ahead ? `${e.queue_ahead.windows} windows in ${e.queue_ahead.renders} render(s)` : "—", s.wall_s),
      row("Cost", e.cost === null || e.cost === undefined ? "no price set" : e.cost.toFixed(e.cost < 1 ? 4 : 2), s.cost),
    ].flat());
  }

  let asked = 0, timer = null;
  function estimateSoon() {
    clearTimeout(timer);
    timer = setTimeout(estimate, 500);
  }
  async function estimate() {
    const b = body();
    if (!Object.keys(b.input).some((k) => k.startsWith("wav_"))) return;
    const mine = ++asked;
    $("est-note").textContent = "Estimating…";
    const r = await fetch(`${API}/estimate`, { method: "POST", credentials: "same-origin",
      headers: { "X-CSRF-Token": CSRF, "Content-Type": "application/json", Accept: "application/json" }, body: JSON.stringify(b) });
    const answer = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
    if (mine !== asked) return;  // a newer form state asked meanwhile
    if (r.ok) { clearErrors(); showEstimate(answer); }
    else { showError(answer.error || `HTTP ${r.status}`); $("est-note").textContent = "Fix the form to see the estimate."; $("est").replaceChildren(); }
  }

  function submit(ev) {
    ev.preventDefault();
    clearErrors();
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `${API}/run`);
    xhr.setRequestHeader("Content-Type", "application/json");
    xhr.setRequestHeader("X-CSRF-Token", CSRF);
    $("upload").hidden = false;
    $("start").disabled = true;
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable) return;
      $("upload-bar").style.width = `${(100 * e.loaded / e.total).toFixed(1)}%`;
      $("upload-text").textContent = `sending ${Math.round(e.loaded / 1024)} of ${Math.round(e.total / 1024)} KiB`;
    };
    xhr.onload = () => {
      let answer = {};
      try { answer = JSON.parse(xhr.responseText); } catch (e) { answer = { error: `HTTP ${xhr.status}` }; }
      if (xhr.status === 200 && answer.id) { location.href = `/renders/${encodeURIComponent(answer.id)}`; return; }
      $("start").disabled = false;
      $("upload").hidden = true;
      showError(answer.error || `HTTP ${xhr.status}`);
    };
    xhr.onerror = () => { $("start").disabled = false; showError("the request did not reach the server"); };
    xhr.send(JSON.stringify(body()));
  }

  for (const field of Object.keys(MEDIA)) {
    $(`file-${field}`).addEventListener("change", (ev) => {
      const file = ev.target.files[0];
      if (!file) { delete files[field]; estimateSoon(); return; }
      const reader = new FileReader();
      reader.onload = () => { files[field] = reader.result; estimateSoon(); };
      reader.readAsDataURL(file);
    });
  }
  const form = $("new-form");
  form.addEventListener("change", () => { shown(); estimateSoon(); });
  form.addEventListener("input", (ev) => { if (ev.target.type !== "file") estimateSoon(); });
  form.addEventListener("submit", submit);
  shown();
})();
