/* crispedit browser editor: OpenSeadragon deep-zoom viewer + a server-side mask + edit jobs.
 * The browser only ever receives tiles of the level on screen; the full-resolution image and mask stay on the
 * server. No build step: plain ES2020. */
"use strict";

const $ = (id) => document.getElementById(id);
const S = {
  doc: null,            // the open document (server JSON)
  viewer: null,
  layers: {},           // name -> {key, item}: base (before), top (after), mask
  gen: {}, waiting: {}, // per layer: request counter, promises waiting for a complete image
  tool: "pan",
  drag: null,           // current stroke / shape being drawn
  job: null, es: null,
  blinkTimer: null,
  busyMask: 0,
};

// ---------------------------------------------------------------- helpers
async function api(method, url, body, raw) {
  const opt = { method, headers: {} };
  if (raw !== undefined) { opt.body = raw; opt.headers["Content-Type"] = "application/octet-stream"; }
  else if (body !== undefined) { opt.body = JSON.stringify(body); opt.headers["Content-Type"] = "application/json"; }
  const r = await fetch(url, opt);
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) {
    let msg = (data && (data.error || (typeof data.detail === "string" ? data.detail : null))) || `${r.status} ${r.statusText}`;
    if (data && Array.isArray(data.detail)) msg = "bad request: " + data.detail.map((d) => d.msg).join("; ");
    throw new Error(msg);
  }
  return data;
}

function status(msg, kind) {
  const el = $("status");
  el.textContent = msg || "";
  el.className = kind || "";
}

function fail(e) { status("error: " + (e && e.message ? e.message : e), "error"); }

function levels(w, h) { return Math.ceil(Math.log2(Math.max(w, h, 1))); }

function baseItem() { return S.layers.base ? S.layers.base.item : null; }

// ---------------------------------------------------------------- viewer and layers
function initViewer() {
  S.viewer = OpenSeadragon({
    element: $("viewer"),
    prefixUrl: "/static/vendor/openseadragon/images/",
    showNavigationControl: false,
    drawer: "canvas",
    maxZoomPixelRatio: 16,         // zoom well beyond 1:1 to see single pixels
    minZoomImageRatio: 0.5,
    visibilityRatio: 0.5,
    animationTime: 0.5,
    blendTime: 0,
    imageLoaderLimit: 8,
    gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true, flickEnabled: false },
    keyboardNavEnabled: false,
  });
  const v = S.viewer;
  v.addHandler("zoom", updateZoomInfo);
  v.addHandler("animation-finish", updateZoomInfo);
  v.addHandler("animation", redrawPaint);
  v.addHandler("canvas-press", onPress);
  v.addHandler("canvas-drag", onDrag);
  v.addHandler("canvas-release", onRelease);
  window.addEventListener("resize", sizePaint);
  const el = $("viewer");
  el.addEventListener("pointermove", (e) => {
    const r = el.getBoundingClientRect();
    S.hover = [e.clientX - r.left, e.clientY - r.top];
    if (!S.drag && (S.tool === "brush" || S.tool === "eraser")) redrawPaint();
  });
  el.addEventListener("pointerleave", () => { S.hover = null; redrawPaint(); });
  sizePaint();
}

function imageZoom() {
  const it = baseItem();
  return it ? it.viewportToImageZoom(S.viewer.viewport.getZoom(true)) : 0;
}

function updateZoomInfo() {
  const z = imageZoom();
  $("zoom-info").textContent = z ? `${(z * 100).toFixed(z < 0.1 ? 1 : 0)}%` : "–";
  const smooth = z < 1.5;   // beyond 1:1 show pixels as squares
  if (S.viewer.drawer && S.viewer.drawer.setImageSmoothingEnabled && S._smooth !== smooth) {
    S._smooth = smooth;
    S.viewer.drawer.setImageSmoothingEnabled(smooth);
  }
}

/** Put a tiled image in the named layer (kept if the key is unchanged); resolves when its tiles are in.
 * The previous image of the layer stays on screen until the new one is complete (no flicker); a request that
 * a newer one overtakes resolves when that newer one is complete. */
function setLayer(name, key, tileSource, index, opts) {
  const cur = S.layers[name];
  if (cur && cur.key === key) return Promise.resolve(cur.item);
  const gen = (S.gen[name] = (S.gen[name] || 0) + 1);
  const removeOlder = (keep) => {
    const w = S.viewer.world;
    for (let i = w.getItemCount() - 1; i >= 0; i--) {
      const it = w.getItemAt(i);
      if (it._layer === name && it !== keep) w.removeItem(it);
    }
  };
  const settle = (item) => {   // resolve this request and every older one still waiting
    const waiting = (S.waiting[name] || []).filter((w) => w.gen <= gen);
    S.waiting[name] = (S.waiting[name] || []).filter((w) => w.gen > gen);
    waiting.forEach((w) => w.resolve(item));
  };
  return new Promise((resolve, reject) => {
    (S.waiting[name] = S.waiting[name] || []).push({ gen, resolve });
    if (!key) { removeOlder(null); delete S.layers[name]; settle(null); return; }
    S.viewer.addTiledImage(Object.assign({
      tileSource, index: Math.min(index, S.viewer.world.getItemCount()),
      success: (ev) => {
        const item = ev.item;
        item._layer = name;
        if (gen !== S.gen[name]) { S.viewer.world.removeItem(item); return; }   // overtaken before it arrived
        S.layers[name] = { key, item };
        const done = () => { if (gen === S.gen[name]) { removeOlder(item); settle(item); } };
        if (item.getFullyLoaded()) done(); else item.addOnceHandler("fully-loaded-change", done);
      },
      error: (ev) => { settle(null); reject(new Error(ev.message || "could not load tiles")); },
    }, opts || {}));
  });
}

/* Each overlay tile's URL carries the last mask revision that changed it, so after a stroke only the tiles
 * it touched are fetched again; the others keep their URL and come from the viewer's tile cache. */
function noteMaskChange(box, rev) {
  const d = S.doc;
  if (!S.maskBoxes || S.maskBoxes.length > 200 || !box) S.maskBoxes = [{ box: [0, 0, d.width, d.height], rev }];
  else S.maskBoxes.push({ box, rev });
}

function maskSource(doc) {
  const top = levels(doc.width, doc.height), ts = doc.tile_size, ov = doc.tile_overlap;
  const boxes = (S.maskBoxes || []).slice();
  return {
    width: doc.width, height: doc.height, tileSize: ts, tileOverlap: ov, minLevel: 0, maxLevel: top,
    getTileUrl: (l, x, y) => {
      const f = Math.pow(2, top - l);
      const x0 = (x * ts - ov) * f, y0 = (y * ts - ov) * f, x1 = ((x + 1) * ts + ov) * f, y1 = ((y + 1) * ts + ov) * f;
      let rev = 0;
      for (const b of boxes) {
        if (b.rev > rev && b.box[0] < x1 && b.box[2] > x0 && b.box[1] < y1 && b.box[3] > y0) rev = b.rev;
      }
      return `/api/docs/${doc.id}/mask/${rev}/${l}/${x}_${y}.png`;
    },
  };
}

async function refreshMask() {
  const d = S.doc;
  const show = $("show-mask").checked;
  const key = show && d.mask.painted_px > 0 ? `${d.id}/m${d.mask.rev}` : null;   // no layer (no requests) while empty
  await setLayer("mask", key, key ? maskSource(d) : null, 99, { opacity: 1 });
  const m = d.mask;
  $("mask-info").textContent = m.painted_px ? `${m.painted_px.toLocaleString()} px painted` : "mask empty";
  $("undo").disabled = !m.can_undo;
  $("redo").disabled = !m.can_redo;
}

async function showDoc(doc, home) {
  const prevId = S.doc && S.doc.id;
  S.doc = doc;
  if (home || prevId !== doc.id) {
    for (const n of Object.keys(S.layers)) await setLayer(n, null);
    S.maskBoxes = null;
    noteMaskChange(null, doc.mask.rev);
  }
  const cur = doc.versions[doc.current];
  const before = cur.parent !== null ? doc.versions[cur.parent] : null;
  const baseV = before || cur;
  document.body.dataset.viewer = "loading";
  await setLayer("base", `${doc.id}/v${baseV.n}`, baseV.dzi, 0);
  if (home || prevId !== doc.id) S.viewer.viewport.goHome(true);
  await setLayer("top", before ? `${doc.id}/v${cur.n}` : null, cur.dzi, 1);
  await refreshMask();
  document.body.dataset.viewer = "ready";
  updateZoomInfo();
  renderDocInfo();
  renderCompare();
  renderHistory();
}

function renderDocInfo() {
  const d = S.doc;
  $("doc-info").textContent = `${d.width}×${d.height} ${d.format || ""} ${d.bit_depth}-bit · editing v${d.current}`;
  const sel = $("docs");
  sel.innerHTML = "";
  for (const o of S.docList || [d]) {
    const opt = document.createElement("option");
    opt.value = o.id; opt.textContent = o.name; opt.selected = o.id === d.id;
    sel.appendChild(opt);
  }
}

// ---------------------------------------------------------------- open / upload
async function listFiles(dir) {
  try {
    const r = await api("GET", `/api/files?dir=${encodeURIComponent(dir || "")}`);
    $("files-dir").textContent = "/" + r.dir;
    const ul = $("files-list");
    ul.innerHTML = "";
    if (r.dir) {
      const li = document.createElement("li");
      li.className = "dir"; li.textContent = "..";
      li.onclick = () => listFiles(r.dir.split("/").slice(0, -1).join("/"));
      ul.appendChild(li);
    }
    for (const e of r.entries) {
      const li = document.createElement("li");
      li.className = e.type; li.textContent = e.name;
      li.dataset.path = e.path;
      li.onclick = () => (e.type === "dir" ? listFiles(e.path) : openPath(e.path));
      ul.appendChild(li);
    }
    $("files").hidden = false;
  } catch (e) { fail(e); }
}

async function openPath(path) {
  $("files").hidden = true;
  status(`opening ${path}…`);
  try { await addDoc(await api("POST", "/api/open", { path })); } catch (e) { fail(e); }
}

async function upload(file) {
  status(`uploading ${file.name} (${(file.size / 1048576).toFixed(1)} MiB)…`);
  try {
    await addDoc(await api("POST", `/api/upload?name=${encodeURIComponent(file.name)}`, undefined, file));
  } catch (e) { fail(e); }
}

async function addDoc(doc) {
  S.docList = (S.docList || []).filter((d) => d.id !== doc.id).concat([doc]);
  await showDoc(doc, true);
  status(`opened ${doc.name} (${doc.width}×${doc.height})`, "ok");
}

// ---------------------------------------------------------------- painting
function sizePaint() {
  const c = $("paint");
  const r = c.getBoundingClientRect();
  c.width = Math.round(r.width * devicePixelRatio);
  c.height = Math.round(r.height * devicePixelRatio);
  redrawPaint();
}

function toImage(pos) {
  const p = baseItem().viewerElementToImageCoordinates(pos);
  return [p.x, p.y];
}

function toScreen(x, y) {
  return baseItem().imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));
}

function screenPerImagePx() {
  const a = toScreen(0, 0), b = toScreen(1000, 0);
  return (b.x - a.x) / 1000;
}

function redrawPaint() {
  const c = $("paint");
  const g = c.getContext("2d");
  g.setTransform(1, 0, 0, 1, 0, 0);
  g.clearRect(0, 0, c.width, c.height);
  const d = S.drag;
  if (!baseItem()) return;
  g.scale(devicePixelRatio, devicePixelRatio);
  if (!d && S.hover && (S.tool === "brush" || S.tool === "eraser")) {   // the brush outline under the pointer
    const r = Math.max(1, (+$("brush-size").value / 2) * screenPerImagePx());
    g.lineWidth = 1;
    for (const [colour, rr] of [["rgba(0,0,0,0.7)", r + 1], ["rgba(255,255,255,0.9)", r]]) {
      g.strokeStyle = colour;
      g.beginPath(); g.arc(S.hover[0], S.hover[1], rr, 0, 2 * Math.PI); g.stroke();
    }
    return;
  }
  if (!d) return;
  const erase = d.erase;
  g.strokeStyle = erase ? "rgba(255,255,255,0.55)" : "rgba(255,40,90,0.55)";
  g.fillStyle = g.strokeStyle;
  if (d.kind === "stroke") {
    g.lineCap = "round"; g.lineJoin = "round";
    g.lineWidth = Math.max(1, d.size * screenPerImagePx());
    g.beginPath();
    d.points.forEach(([x, y], i) => { const p = toScreen(x, y); i ? g.lineTo(p.x, p.y) : g.moveTo(p.x, p.y); });
    if (d.points.length === 1) { const p = toScreen(...d.points[0]); g.lineTo(p.x + 0.01, p.y); }
    g.stroke();
  } else if (d.end) {
    const a = toScreen(...d.start), b = toScreen(...d.end);
    g.beginPath();
    if (d.kind === "rect") g.rect(Math.min(a.x, b.x), Math.min(a.y, b.y), Math.abs(b.x - a.x), Math.abs(b.y - a.y));
    else g.ellipse((a.x + b.x) / 2, (a.y + b.y) / 2, Math.abs(b.x - a.x) / 2, Math.abs(b.y - a.y) / 2, 0, 0, 2 * Math.PI);
    g.fill();
  }
}

function onPress(ev) {
  if (S.tool === "pan" || !S.doc || !baseItem()) return;
  ev.preventDefaultAction = true;
  const p = toImage(ev.position);
  const erase = S.tool === "eraser" || (ev.originalEvent && ev.originalEvent.altKey);
  if (S.tool === "brush" || S.tool === "eraser") {
    S.drag = { kind: "stroke", points: [p], size: +$("brush-size").value, hardness: +$("hardness").value, erase };
  } else {
    S.drag = { kind: S.tool, start: p, end: null, erase };
  }
  redrawPaint();
}

function onDrag(ev) {
  if (S.tool === "pan") return;
  ev.preventDefaultAction = true;
  const d = S.drag;
  if (!d) return;
  const p = toImage(ev.position);
  if (d.kind === "stroke") {
    const last = d.points[d.points.length - 1];
    if (Math.hypot(p[0] - last[0], p[1] - last[1]) >= Math.max(1, d.size / 8)) d.points.push(p);
  } else d.end = p;
  redrawPaint();
}

async function onRelease(ev) {
  const d = S.drag;
  if (S.tool === "pan" || !d) return;
  if (ev) ev.preventDefaultAction = true;
  if (d.kind === "stroke" && ev && ev.position) {
    const p = toImage(ev.position);
    const last = d.points[d.points.length - 1];
    if (p[0] !== last[0] || p[1] !== last[1]) d.points.push(p);
  }
  let op;
  if (d.kind === "stroke") op = { op: "stroke", points: d.points.map(([x, y]) => [+x.toFixed(2), +y.toFixed(2)]), size: d.size, hardness: d.hardness, erase: d.erase };
  else if (d.end) op = { op: d.kind, box: [d.start[0], d.start[1], d.end[0], d.end[1]], erase: d.erase };
  if (!op) { S.drag = null; redrawPaint(); return; }
  await maskOp(op);
  if (S.drag === d) { S.drag = null; redrawPaint(); }
}

async function maskOp(op) {
  if (!S.doc) return;
  if (!$("show-mask").checked && !["undo", "redo"].includes(op.op)) $("show-mask").checked = true;
  S.busyMask++;
  document.body.dataset.mask = "busy";
  const t0 = performance.now();
  try {
    const r = await api("POST", `/api/docs/${S.doc.id}/mask`, op);
    if (r.rev >= S.doc.mask.rev)   // responses to quick strokes may arrive out of order
      S.doc.mask = { rev: r.rev, painted_px: r.painted_px, can_undo: r.can_undo, can_redo: r.can_redo };
    if (r.box) noteMaskChange(r.box, r.rev);
    await refreshMask();
    S.lastMaskMs = performance.now() - t0;
  } catch (e) { fail(e); }
  finally {
    S.busyMask--;
    if (!S.busyMask) document.body.dataset.mask = `rev${S.doc.mask.rev}`;
  }
}

function setTool(t) {
  S.tool = t;
  document.querySelectorAll(".tool").forEach((b) => b.classList.toggle("active", b.dataset.tool === t));
  $("viewer").style.cursor = t === "pan" ? "" : "crosshair";
}

// ---------------------------------------------------------------- run
function runParams() {
  const num = (id) => ($(id).value === "" ? undefined : +$(id).value);
  const p = {
    engine: $("engine").value, prompt: $("prompt").value || undefined,
    negative_prompt: $("negative-prompt").value || undefined, seed: num("seed"), steps: num("steps"),
    strength: num("strength"), candidates: num("candidates"), no_check: !$("check").checked,
  };
  if (p.engine === "sd15" && $("model").value) p.model = $("model").value;
  return p;
}

async function run() {
  if (!S.doc) { fail("open a photo first"); return; }
  try {
    const job = await api("POST", `/api/docs/${S.doc.id}/jobs`, runParams());
    S.job = job;
    document.body.dataset.job = "queued";
    $("cancel").disabled = false;
    $("run").disabled = true;
    status(job.queue_position ? `queued (${job.queue_position} ahead)` : "started");
    follow(job.id);
  } catch (e) { fail(e); }
}

function follow(id) {
  if (S.es) S.es.close();
  const es = new EventSource(`/api/jobs/${id}/events`);
  S.es = es;
  es.onmessage = async (m) => {
    const j = JSON.parse(m.data);
    S.job = j;
    const frac = j.total ? j.done / j.total : 0;
    $("progress").value = j.state === "done" ? 1 : frac;
    const eta = j.eta_s != null && j.state === "running" ? ` · ETA ${j.eta_s.toFixed(0)} s` : "";
    const q = j.state === "queued" && j.queue_position ? ` (${j.queue_position} ahead)` : "";
    const terminal = ["done", "failed", "cancelled"].includes(j.state);
    $("progress-text").textContent = terminal ? `${j.state}${j.elapsed_s != null ? ` after ${j.elapsed_s} s` : ""}` :
      `${j.state}${q}: ${j.stage}${j.total ? ` ${j.done}/${j.total}` : ""}${eta}` +
      (j.elapsed_s != null ? ` · ${j.elapsed_s} s` : "");
    if (["done", "failed", "cancelled"].includes(j.state)) {
      es.close(); S.es = null;
      $("cancel").disabled = true; $("run").disabled = false;
      if (j.state === "done") {
        const doc = j.result.doc;
        S.docList = (S.docList || []).map((d) => (d.id === doc.id ? doc : d));
        if (S.doc && S.doc.id === doc.id) {
          $("show-mask").checked = false;   // show the result itself; painting shows the mask again
          await showDoc(doc);
        }
        const v = doc.versions[j.result.version];
        const q = v.quality ? ` · quality ${v.quality.verdict}` : "";
        status(`edit done in ${v.seconds} s (seed ${v.seed})${q}`, "ok");
      } else if (j.state === "failed") fail(j.error);
      else status("cancelled");
      document.body.dataset.job = j.state;
    } else document.body.dataset.job = j.state;
  };
  es.onerror = () => { /* the browser reconnects; the stream ends on a terminal state */ };
}

async function cancel() {
  if (!S.job) return;
  try { await api("POST", `/api/jobs/${S.job.id}/cancel`); status("cancelling…"); } catch (e) { fail(e); }
}

// ---------------------------------------------------------------- compare / keep / history
function topItem() { return S.layers.top ? S.layers.top.item : null; }

function applySlider() {
  const it = topItem();
  if (!it) return;
  const d = S.doc;
  const f = +$("slider").value / 100;
  it.setClip(f >= 1 ? null : new OpenSeadragon.Rect(0, 0, d.width * f, d.height));
}

function setBlink(on) {
  clearInterval(S.blinkTimer);
  S.blinkTimer = null;
  $("blink").classList.toggle("active", on);
  if (on) S.blinkTimer = setInterval(() => { $("show-after").checked = !$("show-after").checked; applyAfter(); }, 600);
  else { $("show-after").checked = true; applyAfter(); }
}

function applyAfter() { const it = topItem(); if (it) it.setOpacity($("show-after").checked ? 1 : 0); }

function flyTo(x, y, mark) {
  const it = baseItem();
  if (!it) return;
  const vp = S.viewer.viewport;
  if (S.marker) { S.viewer.removeOverlay(S.marker); S.marker = null; }
  if (mark) {
    S.marker = document.createElement("div");
    S.marker.className = "place-marker";
    S.viewer.addOverlay({ element: S.marker, location: it.imageToViewportCoordinates(x, y),
      placement: OpenSeadragon.Placement.CENTER, checkResize: false });
  }
  vp.panTo(it.imageToViewportCoordinates(x, y), false);
  vp.zoomTo(it.imageToViewportZoom(1), null, false);
}

function renderCompare() {
  const d = S.doc, cur = d.versions[d.current];
  const has = cur.parent !== null;
  $("compare-panel").hidden = !has;
  $("keep-panel").hidden = false;
  $("download").href = cur.download;
  $("download").setAttribute("download", "");
  $("report").hidden = !cur.report;
  if (cur.report) $("report").href = cur.report;
  $("workflow").hidden = !cur.workflow;
  if (cur.workflow) $("workflow").href = cur.workflow;
  $("mask-dl").hidden = !cur.mask;
  if (cur.mask) $("mask-dl").href = cur.mask;
  if (!has) { setBlink(false); return; }
  $("slider").value = 100;
  applySlider();
  applyAfter();
  const q = cur.quality;
  const vd = $("verdict");
  const worst = $("worst");
  worst.innerHTML = "";
  if (!q) { vd.textContent = "no quality check for this run"; return; }
  vd.innerHTML = "";
  const b = document.createElement("span");
  b.className = `verdict-${q.verdict}`; b.textContent = `quality: ${q.verdict}`;
  vd.appendChild(b);
  const reasons = document.createElement("div");
  reasons.className = "muted"; reasons.textContent = (q.reasons || []).join("; ") || "no defect found";
  vd.appendChild(reasons);
  for (const note of (cur.notes || []).filter((n) => !n.startsWith("check: "))) {
    const nd = document.createElement("div");
    nd.className = "muted"; nd.textContent = "note: " + note;
    vd.appendChild(nd);
  }
  (q.worst_places || []).forEach(([x, y, s], i) => {
    const li = document.createElement("li");
    const bt = document.createElement("button");
    bt.className = "worst-place";
    bt.textContent = `x ${x}, y ${y} · seam ${Number(s).toFixed(1)}`;
    bt.title = "fly there at 1:1";
    bt.onclick = () => flyTo(x, y, true);
    li.appendChild(bt); worst.appendChild(li);
  });
}

function renderHistory() {
  const d = S.doc;
  $("history-panel").hidden = d.versions.length < 2;
  const ol = $("history");
  ol.innerHTML = "";
  d.versions.forEach((v) => {
    const li = document.createElement("li");
    li.className = v.n === d.current ? "current" : "";
    const b = document.createElement("button");
    b.textContent = `v${v.n} ${v.label}${v.parent !== null && v.parent !== v.n - 1 ? ` (from v${v.parent})` : ""}`;
    b.onclick = async () => {
      try { await showDoc(await api("POST", `/api/docs/${d.id}/current`, { version: v.n })); } catch (e) { fail(e); }
    };
    li.appendChild(b); ol.appendChild(li);
  });
}

// ---------------------------------------------------------------- wiring
function wire() {
  $("open-btn").onclick = () => listFiles("");
  $("files-close").onclick = () => { $("files").hidden = true; };
  $("upload").onchange = (e) => { if (e.target.files[0]) upload(e.target.files[0]); e.target.value = ""; };
  $("close-doc").onclick = async () => {
    if (!S.doc) return;
    try {
      await api("DELETE", `/api/docs/${S.doc.id}`);
      S.docList = (S.docList || []).filter((d) => d.id !== S.doc.id);
      for (const n of Object.keys(S.layers)) await setLayer(n, null);
      S.doc = null;
      if (S.docList.length) await showDoc(S.docList[S.docList.length - 1], true);
      else { document.body.dataset.viewer = "empty"; $("docs").innerHTML = ""; $("doc-info").textContent = "";
        for (const id of ["compare-panel", "keep-panel", "history-panel"]) $(id).hidden = true; }
      status("closed; its work files are deleted");
    } catch (e) { fail(e); }
  };
  $("docs").onchange = async (e) => { try { await showDoc(await api("GET", `/api/docs/${e.target.value}`), true); } catch (err) { fail(err); } };
  $("fit").onclick = () => S.viewer.viewport.goHome();
  $("one-to-one").onclick = () => { const it = baseItem(); if (it) S.viewer.viewport.zoomTo(it.imageToViewportZoom(1)); };
  document.querySelectorAll(".tool").forEach((b) => (b.onclick = () => setTool(b.dataset.tool)));
  $("brush-size").oninput = () => { $("brush-size-out").textContent = $("brush-size").value; redrawPaint(); };
  $("hardness").oninput = () => { $("hardness-out").textContent = $("hardness").value; };
  for (const op of ["undo", "redo", "invert", "clear"]) $(op).onclick = () => maskOp({ op });
  $("show-mask").onchange = () => S.doc && refreshMask();
  $("engine").onchange = () => { $("model-row").hidden = $("engine").value !== "sd15"; };
  $("run").onclick = run;
  $("cancel").onclick = cancel;
  $("slider").oninput = applySlider;
  $("blink").onclick = () => setBlink(!S.blinkTimer);
  $("show-after").onchange = applyAfter;
  document.addEventListener("keydown", (e) => {
    if (["INPUT", "TEXTAREA", "SELECT"].includes(e.target.tagName)) return;
    const k = e.key.toLowerCase();
    if ((e.ctrlKey || e.metaKey) && k === "z") { e.preventDefault(); maskOp({ op: e.shiftKey ? "redo" : "undo" }); return; }
    const tools = { h: "pan", b: "brush", e: "eraser", r: "rect", o: "ellipse" };
    if (tools[k]) setTool(tools[k]);
    else if (k === "x") setBlink(!S.blinkTimer);
    else if (k === "[" || k === "]") {
      const b = $("brush-size");
      b.value = Math.round(+b.value * (k === "]" ? 1.25 : 0.8));
      b.oninput();
    } else if (k === "0") $("fit").click();
    else if (k === "1") $("one-to-one").click();
  });
}

async function start() {
  initViewer();
  wire();
  try {
    const cfg = await api("GET", "/api/config");
    S.docList = cfg.docs;
    if (cfg.model) $("model").placeholder = `default: ${cfg.model}`;
    if (cfg.docs.length) await showDoc(cfg.docs[cfg.docs.length - 1], true);
    else status("open a photo from the served folder, or upload one");
    const running = (cfg.jobs || []).filter((j) => S.doc && j.doc === S.doc.id);   // after a page reload
    if (running.length) {
      S.job = running[running.length - 1];
      $("cancel").disabled = false; $("run").disabled = true;
      follow(S.job.id);
    }
  } catch (e) { fail(e); }
}

/** Resolves once the view stopped moving and every layer has the tiles it needs (tests, benchmark). */
function settled() {
  return new Promise((resolve) => {
    const check = () => {
      const vp = S.viewer.viewport;
      const moving = Math.abs(vp.getZoom(true) - vp.getZoom(false)) > 1e-9 ||
        vp.getCenter(true).distanceTo(vp.getCenter(false)) > 1e-9;
      const items = Object.values(S.layers).map((l) => l.item);
      if (!moving && items.length && items.every((it) => it.getFullyLoaded())) resolve(true);
      else requestAnimationFrame(check);
    };
    requestAnimationFrame(check);
  });
}

window.crispedit = { S, flyTo, maskOp, imageZoom, openPath, settled };   // for tests and the benchmark
start();
