"""The operator console's page: one HTML document with its stylesheet and script inline.

The page holds no data: it logs an admin in (the access token stays in
``sessionStorage``; an expired one is renewed with the refresh cookie), reads the
``/api/v1/admin/...`` endpoints, and follows ``/api/v1/admin/events`` to update without
a reload. Text from the API only ever becomes text nodes (``textContent``, never
``innerHTML``). Nothing is loaded from anywhere else: the content security policy allows
this one script (by its hash) and connections to this origin only.
"""

from __future__ import annotations

import base64
import functools
import hashlib

STYLE = """
:root{--fg:#1d2333;--muted:#667085;--line:#e4e7ee;--soft:#f2f4f8;--bg:#f5f6f9;--card:#fff;
--ink:#151a2b;--accent:#3550e8;--ok:#17805a;--warn:#b45309;--bad:#b42318}
*{box-sizing:border-box}
body{margin:0;color:var(--fg);background:var(--bg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.mono,code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",
monospace;font-size:12.5px}
[hidden]{display:none!important}
header{background:var(--ink);color:#fff;padding:10px 24px;display:flex;align-items:center;gap:18px}
.brand{font-weight:700;font-size:16px}.brand span{color:#9fb0ff;font-weight:500}
.live{display:flex;align-items:center;gap:7px;font-size:12.5px;color:#c9d3ff}
.live i{width:9px;height:9px;border-radius:50%;background:#8a92a6}
.live.on i{background:#34d399;box-shadow:0 0 0 3px rgba(52,211,153,.25)}
.live.wait i{background:#fbbf24}
.who{margin-left:auto;display:flex;align-items:center;gap:12px;font-size:13px;color:#c9d3ff}
main{max-width:1440px;margin:0 auto;padding:16px 24px 40px}
.columns{display:grid;grid-template-columns:minmax(0,1.45fr) minmax(0,1fr);gap:14px;
align-items:start}
.column{display:flex;flex-direction:column;gap:14px;min-width:0}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 16px;
box-shadow:0 1px 2px rgba(20,30,60,.04);min-width:0;margin-bottom:14px}
.column .card{margin-bottom:0}.columns{margin-bottom:14px}
h2{font-size:13px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted);margin:0 0 8px;
display:flex;align-items:baseline;gap:8px}
h2 .n{font-size:12px;text-transform:none;letter-spacing:0;font-weight:500}
table{width:100%;border-collapse:collapse}
th{text-align:left;font-weight:600;color:var(--muted);font-size:11px;text-transform:uppercase;
letter-spacing:.04em;border-bottom:1px solid var(--line);padding:4px 8px;white-space:nowrap}
th.group{text-align:center;border-bottom:0;padding-bottom:0;color:#8a92a6}
td{border-bottom:1px solid #f0f2f6;padding:5px 8px;vertical-align:baseline}
tr:last-child td{border-bottom:0}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.sep{border-left:1px solid var(--line)}
.empty{color:var(--muted);padding:10px 8px;font-style:italic}
.muted{color:var(--muted)}.bad{color:var(--bad)}.warn{color:var(--warn)}.ok{color:var(--ok)}
.chip{display:inline-block;border-radius:5px;padding:0 6px;margin:1px 4px 1px 0;font-size:12px;
background:var(--soft);color:#39415a;white-space:nowrap}
.chip.code{font:600 11.5px/1.6 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
background:#fdeeee;color:#9b1c1c}
.chip.refusal{background:#fff6e9;color:#8a4b00}
.chip.ok{background:#e7f6ef;color:#17704f}.chip.warn{background:#fff6e9;color:#8a4b00}
.chip.bad{background:#fdeeee;color:#9b1c1c}
.bar{height:6px;border-radius:3px;background:var(--soft);margin-top:4px;min-width:60px}
.bar i{display:block;height:100%;border-radius:3px;background:var(--accent)}
.worker{display:grid;grid-template-columns:minmax(0,1.2fr) 110px minmax(0,1.6fr);gap:10px;
padding:7px 0;border-bottom:1px solid #f0f2f6;align-items:start}
.worker:last-child{border-bottom:0}
.worker .id{font-weight:600;word-break:break-all}
.beat{white-space:nowrap}.beat.stale{color:var(--bad);font-weight:600}
.filters{display:flex;gap:8px;align-items:center;flex-wrap:wrap;margin:2px 0 10px}
input{font:inherit;border:1px solid #cfd5e1;border-radius:7px;padding:6px 9px;background:#fff;
color:var(--fg);min-width:0}
input:focus{outline:2px solid rgba(53,80,232,.25);border-color:var(--accent)}
input.invalid{border-color:var(--bad);outline-color:rgba(180,35,24,.2)}
.filters input{width:210px}.filters input[type=search]{width:280px}
.spacer{flex:1}
button{font:inherit;font-size:13px;border-radius:7px;padding:5px 12px;cursor:pointer;
border:1px solid #cfd5e1;background:#fff;color:var(--fg)}
button:hover:not(:disabled){border-color:var(--accent);color:var(--accent)}
button:disabled{opacity:.45;cursor:not-allowed}
button.primary{background:var(--accent);border-color:var(--accent);color:#fff}
button.primary:hover:not(:disabled){background:#2740c9;color:#fff}
button.replay{border-color:#f0c2c2;color:var(--bad)}
button.replay:hover:not(:disabled){background:var(--bad);border-color:var(--bad);color:#fff}
header button{background:transparent;color:#c9d3ff;border-color:#3a4262}
header button:hover:not(:disabled){color:#fff;border-color:#c9d3ff}
td.payload{max-width:340px}
details summary{cursor:pointer;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;
color:#39415a;list-style-position:inside}
pre{background:var(--soft);border-radius:6px;padding:8px 10px;margin:6px 0 2px;
white-space:pre-wrap;word-break:break-all;max-height:240px;overflow:auto}
.msg{color:#39415a;word-break:break-word}
.login{max-width:380px;margin:70px auto}
.login h1{margin:0 0 2px;font-size:22px}
.login label{display:block;margin:12px 0 0;font-size:13px;color:var(--muted)}
.login input{display:block;width:100%;margin-top:4px}
.login button{margin-top:16px;width:100%;padding:8px}
.error{color:var(--bad);min-height:1.4em;margin:10px 0 0}
.scheduler{margin:0 0 8px;font-size:13px}
dialog{border:1px solid var(--line);border-radius:12px;padding:18px 22px;max-width:460px;
box-shadow:0 12px 40px rgba(20,30,60,.25)}
dialog::backdrop{background:rgba(21,26,43,.35)}
dialog h3{margin:0 0 6px;font-size:16px}
dialog .actions{display:flex;justify-content:flex-end;gap:8px;margin-top:16px}
#toast{position:fixed;bottom:18px;left:50%;transform:translateX(-50%);background:var(--ink);
color:#fff;padding:8px 16px;border-radius:8px;font-size:13px;pointer-events:none;
visibility:hidden}
#toast.show{visibility:visible}
@media (max-width:1000px){.columns{grid-template-columns:1fr}}
"""

BODY = """
<header>
  <div class="brand">Bazaar <span>operator console</span></div>
  <div id="live" class="live"><i></i><span>offline</span></div>
  <div id="who" class="who" hidden><span id="who-name"></span>
    <button id="logout" type="button">Log out</button></div>
</header>
<main>
  <section id="login" class="card login" hidden>
    <h1>Operator console</h1>
    <p class="muted">Log in with an admin account.</p>
    <form id="login-form">
      <label>Username <input id="username" autocomplete="username" required></label>
      <label>Password <input id="password" type="password" autocomplete="current-password"
        required></label>
      <button type="submit" class="primary">Log in</button>
      <p id="login-error" class="error" role="alert"></p>
    </form>
  </section>
  <div id="app" hidden>
    <div class="columns"><div class="column">
      <section class="card" aria-labelledby="h-queues"><h2 id="h-queues">Queues</h2>
        <table id="queues"><thead><tr><th>Queue</th><th class="num">Ready</th>
          <th class="num">Oldest ready</th><th class="num">Delayed</th><th class="num">Dead</th>
        </tr></thead><tbody></tbody></table></section>
      <section class="card" aria-labelledby="h-stats"><h2 id="h-stats">Job types</h2>
        <table id="stats"><thead>
          <tr><th></th><th colspan="4" class="group sep">last 5 minutes</th>
            <th colspan="4" class="group sep">last hour</th></tr>
          <tr><th>Type</th><th class="num sep">Done/s</th><th class="num">Failed</th>
            <th class="num">p50</th><th class="num">p95</th><th class="num sep">Done/s</th>
            <th class="num">Failed</th><th class="num">p50</th><th class="num">p95</th></tr>
        </thead><tbody></tbody></table></section>
    </div><div class="column">
      <section class="card" aria-labelledby="h-workers">
        <h2 id="h-workers">Workers <span id="workers-n" class="n"></span></h2>
        <div id="workers"></div></section>
      <section class="card" aria-labelledby="h-schedules"><h2 id="h-schedules">Schedules</h2>
        <p id="scheduler" class="scheduler"></p>
        <table id="schedules"><thead><tr><th>Task</th><th>Every</th><th>Last run</th>
          <th>Next due</th></tr></thead><tbody></tbody></table></section>
    </div></div>
    <section class="card" aria-labelledby="h-failed">
      <h2 id="h-failed">Failed jobs <span id="failed-n" class="n"></span></h2>
      <div class="filters">
        <input id="f-type" placeholder="Type, e.g. points.charge" list="types"
          aria-label="Type" spellcheck="false">
        <input id="f-code" placeholder="Reason code" list="codes" aria-label="Reason code"
          spellcheck="false">
        <input id="f-q" type="search" placeholder="Text in payload or error, or a job id"
          aria-label="Text">
        <button id="f-clear" type="button">Clear</button>
        <span class="spacer"></span>
        <button id="replay-all" type="button" class="replay">Replay all matching</button>
      </div>
      <datalist id="types"></datalist><datalist id="codes"></datalist>
      <table id="failed"><thead><tr><th>Failed</th><th>Type</th><th>User</th><th>Reason</th>
        <th class="num">Attempts</th><th>Payload</th><th>Replay</th></tr></thead>
        <tbody></tbody></table>
      <button id="more" type="button" hidden>Load more</button>
    </section>
    <section class="card" aria-labelledby="h-outbox">
      <h2 id="h-outbox">Dead outbox events <span id="outbox-n" class="n"></span></h2>
      <table id="outbox"><thead><tr><th>Event</th><th>Topic</th><th class="num">Attempts</th>
        <th>Last error</th><th>Created</th><th>Payload</th><th></th></tr></thead>
        <tbody></tbody></table>
    </section>
  </div>
</main>
<dialog id="confirm" aria-labelledby="confirm-title">
  <h3 id="confirm-title"></h3><p id="confirm-text" class="msg"></p>
  <div class="actions"><button id="confirm-no" type="button">Cancel</button>
    <button id="confirm-yes" type="button" class="primary">Replay</button></div>
</dialog>
<div id="toast" role="status"></div>
"""

SCRIPT = r"""
"use strict";
const API = "/api/v1", KEY = "bazaar.console";
const $ = (sel) => document.querySelector(sel);
const TYPE = /^[a-z][a-z0-9_.]{0,63}$/, CODE = /^[A-Z][A-Z0-9_]{0,63}$/;
const DASH = "\u2013", STALE_BEAT = 10, TERMINAL = new Set(["succeeded", "failed"]);
const state = {token: sessionStorage.getItem(KEY + ".token"), stream: null, opened: false,
  failed: [], cursor: null, shown: 50, replays: new Map(), retry: 1000, timers: []};

// -- DOM: text from the API only ever becomes text nodes
function h(tag, props, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "data") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) {
    if (kid !== null && kid !== undefined && kid !== false)
      el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}
const fill = (tbody, rows, cols, empty) =>
  tbody.replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", {colspan: cols,
    class: "empty"}, empty))]));
function toast(text) {
  const el = $("#toast");
  el.textContent = text;
  el.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => el.classList.remove("show"), 4000);
}

// -- numbers and times
function dur(s) {
  s = Math.max(0, Math.floor(s));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor(s % 3600 / 60) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor(s % 86400 / 3600) + "h";
}
const ms = (v) => v === null ? DASH : v < 1000 ? Math.round(v) + " ms"
  : (v / 1000).toFixed(v < 10000 ? 2 : 1) + " s";
const rate = (v) => v === 0 ? "0" : v < 0.1 ? String(Number(v.toPrecision(2)))
  : v < 10 ? v.toFixed(2) : v.toFixed(1);
const pct = (v) => v === 0 ? "0" : (v * 100).toFixed(v < 0.1 ? 1 : 0) + " %";
const when = (iso) => iso ? Date.parse(iso) : null;
// an age or a due time that the ticker keeps current: "12 s ago", "in 40 s"
const since = (t, suffix = "") => t === null ? h("span", {class: "muted"}, DASH)
  : h("span", {data: {since: t, suffix}, title: new Date(t).toLocaleString()},
    dur((Date.now() - t) / 1000) + suffix);
const until = (t) => t === null ? h("span", {class: "muted"}, DASH)
  : h("span", {data: {until: t}, title: new Date(t).toLocaleString()}, dueText(t));
const dueText = (t) => t - Date.now() < 1000 ? "due now" : "in " + dur((t - Date.now()) / 1000);
function tick() {
  const now = Date.now();
  for (const el of document.querySelectorAll("[data-since]")) {
    const age = (now - Number(el.dataset.since)) / 1000;
    el.textContent = dur(age) + el.dataset.suffix;
    if (el.classList.contains("beat")) el.classList.toggle("stale", age > STALE_BEAT);
  }
  for (const el of document.querySelectorAll("[data-until]"))
    el.textContent = dueText(Number(el.dataset.until));
}

// -- the API, with the token renewed once when it has expired
class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || "HTTP " + status);
    this.status = status;
    this.code = body?.error?.code;
  }
}
function refresh() {
  state.refreshing ??= fetch(API + "/users/refresh", {method: "POST",
    headers: {"Content-Type": "application/json"}, body: "{}"})
    .then(async (r) => r.ok && setToken((await r.json()).access_token))
    .catch(() => false).finally(() => { state.refreshing = null; });
  return state.refreshing;
}
async function api(method, path, body) {
  for (let attempt = 0; ; attempt++) {
    const headers = {Authorization: "Bearer " + state.token};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(API + path, {method, headers,
      body: body === undefined ? undefined : JSON.stringify(body)});
    if (r.status === 401 && attempt === 0 && await refresh()) continue;
    const data = r.status === 204 ? null : await r.json().catch(() => null);
    if (r.status === 401) signOut("Your session has ended: log in again.");
    if (!r.ok) throw new ApiError(r.status, data);
    return data;
  }
}
function setToken(token) {
  state.token = token;
  sessionStorage.setItem(KEY + ".token", token);
  return true;
}

// -- log in, log out
$("#login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const username = $("#username").value, error = $("#login-error");
  error.textContent = "";
  const r = await fetch(API + "/users/login", {method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({username, password: $("#password").value})});
  const data = await r.json().catch(() => null);
  if (!r.ok) {
    error.textContent = data?.error?.message || "Login failed (HTTP " + r.status + ")";
    return;
  }
  setToken(data.access_token);
  sessionStorage.setItem(KEY + ".user", username);
  $("#password").value = "";
  start();
});
$("#logout").addEventListener("click", async () => {
  await fetch(API + "/users/logout", {method: "POST",
    headers: {Authorization: "Bearer " + state.token}}).catch(() => null);
  signOut("");
});
function signOut(message) {
  sessionStorage.removeItem(KEY + ".token");
  state.token = null;
  stopStream();
  state.timers.forEach(clearInterval);
  state.timers = [];
  $("#app").hidden = $("#who").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message;
  $("#username").focus();
}
async function start() {
  try {
    await api("GET", "/admin/queues");  // an admin's token?
  } catch (e) {
    if (e.status === 403) {
      await fetch(API + "/users/logout", {method: "POST",
        headers: {Authorization: "Bearer " + state.token}}).catch(() => null);
      signOut("This account does not hold the admin role.");
    } else if (e.status !== 401) signOut(e.message);
    return;
  }
  $("#login").hidden = true;
  $("#app").hidden = $("#who").hidden = false;
  $("#who-name").textContent = sessionStorage.getItem(KEY + ".user") || "";
  loadAll();
  connect();
  state.timers = [setInterval(loadSchedules, 10000), setInterval(loadOutbox, 15000),
    setInterval(loadStats, 30000)];
}

// -- the live stream
function setLive(mode, text) {
  $("#live").className = "live " + mode;
  $("#live span").textContent = text;
}
function stopStream() {
  if (state.stream) state.stream.close();
  state.stream = null;
  setLive("", "offline");
}
function connect() {
  stopStream();
  const stream = new EventSource(API + "/admin/events?access_token="
    + encodeURIComponent(state.token));
  state.stream = stream;
  setLive("wait", "connecting");
  stream.onopen = () => {
    setLive("on", "live");
    state.retry = 1000;
    if (state.opened) loadAll();  // what happened while we were away
    state.opened = true;
  };
  stream.onerror = () => {
    if (stream.readyState !== EventSource.CLOSED) return setLive("wait", "reconnecting");
    setLive("", "offline");
    setTimeout(async () => {  // refused (an expired token?): ask once, renewing it, then retry
      if (state.stream !== stream) return;
      try { await api("GET", "/admin/queues"); } catch (e) { if (!state.token) return; }
      if (state.stream === stream) connect();
    }, state.retry);
    state.retry = Math.min(state.retry * 2, 15000);
  };
  stream.addEventListener("snapshot", (e) => renderSnapshot(JSON.parse(e.data)));
  stream.addEventListener("jobs", () => { loadStatsSoon(); checkReplays(); });
  stream.addEventListener("failed", () => loadFailedSoon());
  stream.addEventListener("resync", () => loadAll());
}
function throttle(fn, gap) {
  let last = 0, timer = null;
  return () => {
    if (timer !== null) return;
    timer = setTimeout(() => { timer = null; last = Date.now(); fn(); },
      Math.max(0, last + gap - Date.now()));
  };
}
const loadStatsSoon = throttle(() => loadStats(), 5000);
const loadFailedSoon = throttle(() => loadFailed(), 500);
function loadAll() {
  loadSnapshot(); loadStats(); loadSchedules(); loadFailed(); loadOutbox();
}
const quietly = (promise) => promise.catch((e) => { if (e.status !== 401) toast(e.message); });

// -- queues and workers
async function loadSnapshot() {
  const [queues, workers] = await Promise.all([api("GET", "/admin/queues"),
    api("GET", "/admin/workers")]).catch(() => [null, null]);
  if (queues) renderSnapshot({queues: queues.items, workers: workers.items});
}
function renderSnapshot({queues, workers}) {
  const now = Date.now(), top = Math.max(10, ...queues.map((q) => q.depth));
  const served = new Set(workers.flatMap((w) => w.queues));
  fill($("#queues tbody"), queues.map((q) => h("tr", {"data-queue": q.name},
    h("td", {}, h("b", {}, q.name), " ",
      q.depth && !served.has(q.name) ? h("span", {class: "chip bad"},
        "no worker") : null,
      h("div", {class: "bar"}, barFill(q.depth / top))),
    h("td", {class: "num depth"}, q.depth),
    h("td", {class: "num"}, q.depth ? since(now - q.oldest_age_seconds * 1000)
      : h("span", {class: "muted"}, DASH)),
    h("td", {class: "num"}, q.delayed),
    h("td", {class: "num" + (q.dead ? " bad" : "")}, q.dead))), 5, "No queues");
  $("#workers-n").textContent = workers.length + " running";
  $("#workers").replaceChildren(...(workers.length ? workers.map((w) => h("div",
    {class: "worker"},
    h("div", {}, h("div", {class: "id mono"}, w.host + ":" + w.pid),
      w.queues.map((q) => h("span", {class: "chip"}, q))),
    h("div", {}, h("span", {class: "muted"}, "beat "),
      h("span", {class: "beat", data: {since: now - w.heartbeat_age_seconds * 1000,
        suffix: " ago"}}, dur(w.heartbeat_age_seconds) + " ago")),
    h("div", {}, w.running.length ? w.running.map((r) => h("span", {class: "chip",
      title: r.job_id}, r.type + " · ", since(now - r.seconds * 1000)))
      : h("span", {class: "muted"}, "idle")))) : [h("p", {class: "empty bad"},
    "No worker is running: jobs wait in their queues.")]));
  tick();
}
function barFill(share) {
  const fillEl = h("i");
  fillEl.style.width = Math.min(100, share * 100).toFixed(1) + "%";
  return fillEl;
}

// -- job types
async function loadStats() {
  const [short, long] = await Promise.all([api("GET", "/admin/stats?window=300"),
    api("GET", "/admin/stats?window=3600")]).catch(() => [null, null]);
  if (!short) return;
  const by = (s) => new Map(s.items.map((i) => [i.type, i]));
  const a = by(short), b = by(long), types = [...new Set([...b.keys(), ...a.keys()])].sort();
  const cells = (i, window) => i ? [  // the rate from the counts: finer than per_second
    h("td", {class: "num sep", title: (i.succeeded + i.failed) + " done"},
      rate((i.succeeded + i.failed) / window)),
    h("td", {class: "num" + (i.failed ? " bad" : ""), title: i.failed + " of "
      + (i.failed + i.succeeded)}, pct(i.failure_ratio)),
    h("td", {class: "num"}, ms(i.p50_ms)), h("td", {class: "num"}, ms(i.p95_ms))]
    : [h("td", {class: "num muted sep"}, DASH), h("td", {class: "num muted"}, DASH),
      h("td", {class: "num muted"}, DASH), h("td", {class: "num muted"}, DASH)];
  fill($("#stats tbody"), types.map((t) => h("tr", {}, h("td", {class: "mono"}, t),
    cells(a.get(t), short.window), cells(b.get(t), long.window))), 9,
    "No job finished in the last hour");
  knownTypes(types);
}
function knownTypes(types) {
  const list = $("#types"), have = new Set([...list.options].map((o) => o.value));
  for (const t of types) if (!have.has(t)) list.append(h("option", {value: t}));
}

// -- schedules
async function loadSchedules() {
  const s = await api("GET", "/admin/schedules").catch(() => null);
  if (!s) return;
  $("#scheduler").replaceChildren(s.active
    ? h("span", {}, "Active scheduler ", h("span", {class: "chip ok mono"}, s.active))
    : h("span", {class: "warn"}, "No scheduler holds the lock: periodic tasks are not run."));
  fill($("#schedules tbody"), s.items.map((i) => h("tr", {}, h("td", {class: "mono"}, i.id),
    h("td", {class: "mono"}, i.every), h("td", {}, since(when(i.last_run_at), " ago")),
    h("td", {}, until(when(i.next_due_at))))), 4, "No periodic tasks");
  tick();
}

// -- failed jobs: the filters live in the URL
const filterInputs = {type: $("#f-type"), code: $("#f-code"), q: $("#f-q")};
function readFilters() {
  const f = {type: filterInputs.type.value.trim(),
    code: filterInputs.code.value.trim().toUpperCase(), q: filterInputs.q.value.trim()};
  filterInputs.type.classList.toggle("invalid", !!f.type && !TYPE.test(f.type));
  filterInputs.code.classList.toggle("invalid", !!f.code && !CODE.test(f.code));
  return f;
}
function filtersValid(f) {
  return (!f.type || TYPE.test(f.type)) && (!f.code || CODE.test(f.code));
}
function writeUrl(f) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(f)) if (v) params.set(k, v);
  const query = params.toString();
  history.replaceState(null, "", location.pathname + (query ? "?" + query : ""));
}
function filterChanged() {
  const f = readFilters();
  writeUrl(f);
  state.shown = 50;
  loadFailed();
}
function debounced(fn, wait) {
  let timer;
  return () => { clearTimeout(timer); timer = setTimeout(fn, wait); };
}
for (const input of Object.values(filterInputs)) input.addEventListener("input",
  debounced(filterChanged, 300));
$("#f-clear").addEventListener("click", () => {
  for (const input of Object.values(filterInputs)) input.value = "";
  filterChanged();
});
const fromUrl = new URLSearchParams(location.search);
for (const [k, input] of Object.entries(filterInputs)) input.value = fromUrl.get(k) || "";

function failedQuery(f, limit, cursor) {
  const params = new URLSearchParams({status: "failed", limit: String(limit)});
  for (const [k, v] of Object.entries(f)) if (v) params.set(k, v);
  if (cursor) params.set("cursor", cursor);
  return "/admin/jobs?" + params;
}
async function loadFailed(more = false) {
  const f = readFilters();
  updateReplayAll(f);
  if (!filtersValid(f)) return;
  const limit = more ? 50 : Math.min(100, Math.max(50, state.shown));
  let page;
  try {
    page = await api("GET", failedQuery(f, limit, more ? state.cursor : null));
  } catch (e) {
    if (e.status !== 401) toast(e.message);
    return;
  }
  if (JSON.stringify(readFilters()) !== JSON.stringify(f)) return;  // changed meanwhile
  state.failed = more ? state.failed.concat(page.items) : page.items;
  state.cursor = page.next_cursor;
  state.shown = state.failed.length;
  renderFailed();
  checkReplays();
}
$("#more").addEventListener("click", () => loadFailed(true));

function renderFailed() {
  const now = Date.now(), codes = $("#codes");
  const known = new Set([...codes.options].map((o) => o.value));
  $("#failed-n").textContent = state.failed.length + (state.cursor ? "+" : "") + " shown";
  fill($("#failed tbody"), state.failed.map((job) => {
    const code = job.error?.code || "";
    if (code && !known.has(code)) { known.add(code); codes.append(h("option", {value: code})); }
    return h("tr", {"data-job": job.id},
      h("td", {}, since(when(job.finished_at) ?? now, " ago")),
      h("td", {class: "mono"}, job.type),
      h("td", {class: "num"}, job.user_id),
      h("td", {}, h("span", {class: "chip code" + (code === "INTERNAL_ERROR" ? "" : " refusal")},
        code || "?"), " ", h("span", {class: "msg"}, job.error?.message || "")),
      h("td", {class: "num"}, job.attempts),
      h("td", {class: "payload"}, payloadCell(job)),
      h("td", {class: "action"}, replayCell(job)));
  }), 7, "No failed job matches");
  knownTypes(state.failed.map((j) => j.type));
  $("#more").hidden = !state.cursor;
  tick();
}
function payloadCell(job) {
  const text = JSON.stringify(job.payload);
  return h("details", {}, h("summary", {class: "mono", title: text}, text),
    h("pre", {}, JSON.stringify({job_id: job.id, payload: job.payload, error: job.error,
      created_at: job.created_at, started_at: job.started_at, finished_at: job.finished_at,
      replay_of: job.replay_of}, null, 2)));
}
function replayCell(job) {
  const replay = job.replayed_by;
  if (replay) {
    const status = state.replays.get(replay) || "recorded";
    const tone = status === "succeeded" ? "ok" : status === "failed" ? "bad" : "warn";
    return h("span", {class: "replayed"}, h("span", {class: "muted"}, "replayed → "),
      h("span", {class: "mono", title: replay}, replay.slice(0, 8)), " ",
      h("span", {class: "chip " + tone + " replay-status"}, status));
  }
  if (job.replayable) return h("button", {type: "button", class: "replay",
    onclick: () => replayOne(job)}, "Replay");
  return h("span", {class: "muted", title: "only an INTERNAL_ERROR failure can be replayed"},
    job.error?.code === "INTERNAL_ERROR" ? DASH : "refusal");
}
async function replayOne(job) {
  const ok = await ask("Replay this job?", "A new " + job.type + " job for user "
    + job.user_id + " with the same payload replaces failed job " + job.id + ".", "Replay");
  if (!ok) return;
  try {
    const replay = await api("POST", "/admin/jobs/" + encodeURIComponent(job.id) + "/replay");
    job.replayed_by = replay.id;
    job.replayable = false;
    state.replays.set(replay.id, replay.status);
    toast("Replayed as " + replay.id);
  } catch (e) {
    if (e.status !== 401) toast(e.message);
  }
  renderFailed();
  loadFailedSoon();
}
// the status of the replays on show, until they reach an outcome
async function checkReplays() {
  const open = state.failed.map((j) => j.replayed_by)
    .filter((id) => id && !TERMINAL.has(state.replays.get(id))).slice(0, 20);
  if (!open.length) return;
  const found = await Promise.all(open.map((id) =>
    api("GET", "/admin/jobs?limit=1&q=" + id).then((p) => p.items.find((j) => j.id === id))
      .catch(() => null)));
  let changed = false;
  for (const job of found.filter(Boolean)) {
    changed ||= state.replays.get(job.id) !== job.status;
    state.replays.set(job.id, job.status);
  }
  if (changed) renderFailed();
}
function updateReplayAll(f) {
  const button = $("#replay-all");
  button.disabled = (!!f.code && f.code !== "INTERNAL_ERROR") || !filtersValid(f);
  button.title = f.code && f.code !== "INTERNAL_ERROR"
    ? "Only INTERNAL_ERROR failures can be replayed"
    : "Replay every replayable failed job of this filter";
}
$("#replay-all").addEventListener("click", async () => {
  const f = readFilters();
  const what = (f.type ? f.type + " jobs" : "jobs of every type")
    + (f.q ? " holding \u201c" + f.q + "\u201d" : "");
  const ok = await ask("Replay all matching?", "Every " + what + " that failed INTERNAL_ERROR "
    + "and was not replayed yet becomes a new job.", "Replay all");
  if (!ok) return;
  try {
    const body = {};
    if (f.type) body.type = f.type;
    if (f.code) body.code = f.code;
    if (f.q) body.q = f.q;
    const r = await api("POST", "/admin/jobs/replay", body);
    toast("Replayed " + r.replayed + " job" + (r.replayed === 1 ? "" : "s"));
  } catch (e) {
    if (e.status !== 401) toast(e.message);
  }
  loadFailed();
});

// -- dead outbox events
async function loadOutbox() {
  const page = await api("GET", "/admin/outbox?status=DEAD&limit=50").catch(() => null);
  if (!page) return;
  $("#outbox-n").textContent = page.items.length + (page.next_cursor ? "+" : "");
  fill($("#outbox tbody"), page.items.map((e) => h("tr", {},
    h("td", {class: "mono"}, "#" + e.id), h("td", {class: "mono"}, e.topic),
    h("td", {class: "num"}, e.attempts), h("td", {class: "msg"}, e.last_error || DASH),
    h("td", {}, since(when(e.created_at), " ago")),
    h("td", {class: "payload"}, h("details", {}, h("summary", {class: "mono"},
      JSON.stringify(e.payload)), h("pre", {}, JSON.stringify(e.payload, null, 2)))),
    h("td", {}, h("button", {type: "button", class: "replay",
      onclick: () => replayEvent(e)}, "Replay")))), 7, "No dead events");
  tick();
}
async function replayEvent(event) {
  const ok = await ask("Deliver this event again?", "Outbox event #" + event.id + " ("
    + event.topic + ") gets a fresh round of delivery attempts.", "Replay");
  if (!ok) return;
  try {
    await api("POST", "/admin/outbox/" + event.id + "/replay");
    toast("Event #" + event.id + " is pending delivery again");
  } catch (e) {
    if (e.status !== 401) toast(e.message);
  }
  loadOutbox();
}

// -- the confirmation dialog
function ask(title, text, action) {
  const dialog = $("#confirm"), yes = $("#confirm-yes"), no = $("#confirm-no");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  yes.textContent = action;
  dialog.showModal();
  no.focus();
  return new Promise((resolve) => {
    const done = (ok) => {
      yes.onclick = no.onclick = dialog.oncancel = null;
      dialog.close();
      resolve(ok);
    };
    yes.onclick = () => done(true);
    no.onclick = () => done(false);
    dialog.oncancel = () => done(false);
  });
}

setInterval(tick, 1000);
if (state.token) start(); else signOut("");
"""


@functools.cache
def render_console() -> tuple[str, str]:
    """The page, and the content security policy that lets its script (alone) run."""
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    csp = ("default-src 'none'; style-src 'unsafe-inline'; "
           f"script-src 'sha256-{digest}'; connect-src 'self'; base-uri 'none'; "
           "form-action 'none'; frame-ancestors 'none'")
    html = ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<title>Bazaar · operator console</title>"
            f"<style>{STYLE}</style></head><body>{BODY}<script>{SCRIPT}</script>"
            "</body></html>\n")
    return html, csp
