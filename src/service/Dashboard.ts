/**
 * The job service's dashboard: one self-contained HTML page (inline CSS and
 * script, nothing loaded from elsewhere, no build step), served at `/` by
 * `JobHttp`. It keeps an API key (typed in, or given as `#key=...` in the
 * URL, then kept in `localStorage`), submits jobs of one prompt per line,
 * lists the tenant's jobs with live progress, cost, rate and the provider's
 * concurrency limit, cancels them, replays their dead letters, charts
 * the throughput and the concurrency limit of the selected job, and shows
 * where its items' time went (a stacked bar of `timeSpent`: in flight,
 * queued for a permit, rate limit, gate, backoff), once a chunk has ended.
 *
 * Live updates come from `GET /jobs/:id/events`, read with `fetch` (an
 * `EventSource` cannot send the `Authorization` header) and resumed with
 * `Last-Event-ID` after a disconnect. Every queued or running job is
 * followed; over HTTP/1.1 at most 4 streams are open at once (a browser
 * opens 6 connections per host, and the page needs some for its requests),
 * 20 over HTTP/2. Jobs beyond that, and jobs submitted elsewhere, are
 * updated by polling `GET /jobs` every 5 seconds.
 *
 * The chart is drawn from the job's events only (a job already over is
 * read from its first event): throughput is the items settled per second
 * between `progress` events at least a second apart, from the `running`
 * state to the final one; the limit line steps at each `limit` event.
 *
 * What it does not promise: more than the newest 100 jobs; a chart finer
 * than the events the service sends; any styling beyond a plain table.
 * Text from the server is inserted as text, never as markup.
 *
 * @since 0.1.0
 */

const style = String.raw`
  :root { color-scheme: light dark; --ok: #2e9d57; --fail: #d64545; --skip: #9aa0a6; --line: #8884; }
  * { box-sizing: border-box; }
  body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; padding: 16px 24px; max-width: 1200px; }
  h1 { font-size: 20px; margin: 0; } h2 { font-size: 16px; margin: 20px 0 8px; }
  header { display: flex; gap: 16px; align-items: center; justify-content: space-between; flex-wrap: wrap; }
  input, textarea, button { font: inherit; }
  input, textarea { padding: 4px 6px; border: 1px solid var(--line); border-radius: 4px; background: transparent; color: inherit; }
  textarea { width: 100%; min-height: 90px; font-family: ui-monospace, monospace; }
  button { padding: 4px 10px; border-radius: 4px; border: 1px solid var(--line); background: #8881; color: inherit; cursor: pointer; }
  button:disabled { opacity: .4; cursor: default; }
  form.submit { display: grid; gap: 8px; } form.submit .row { display: flex; gap: 12px; align-items: center; flex-wrap: wrap; }
  .error { color: var(--fail); min-height: 1.4em; white-space: pre-wrap; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: middle; }
  th { font-weight: 600; font-size: 12px; text-transform: uppercase; opacity: .7; }
  tr[data-testid="job-row"] { cursor: pointer; } tr.selected { background: #8882; }
  td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
  code { font-family: ui-monospace, monospace; font-size: 12px; }
  .state { padding: 1px 6px; border-radius: 8px; font-size: 12px; background: #8882; }
  .state.running { background: #2e7dd633; } .state.finished { background: #2e9d5733; }
  .state.cancelled, .state.failed { background: #d6454533; } .state.stopped { background: #e0a02033; }
  .bar { display: flex; width: 160px; height: 10px; border-radius: 5px; overflow: hidden; background: #8883; }
  .bar span { height: 100%; } .bar .ok { background: var(--ok); } .bar .fail { background: var(--fail); } .bar .skip { background: var(--skip); }
  .progress { display: flex; gap: 6px; align-items: center; }
  svg { width: 100%; max-width: 720px; height: auto; border: 1px solid var(--line); border-radius: 4px; }
  svg text { font-size: 11px; fill: currentColor; opacity: .7; }
  .legend span { margin-right: 12px; } .swatch { display: inline-block; width: 10px; height: 3px; vertical-align: middle; margin-right: 4px; }
  .muted { opacity: .6; }
  .stack { display: flex; width: 100%; max-width: 720px; height: 18px; border-radius: 4px; overflow: hidden; background: #8883; }
  .stack span { height: 100%; }
`

const body = String.raw`
  <header>
    <h1>effect-batch jobs</h1>
    <form id="key-form"><label>API key <input id="key" data-testid="api-key" type="password" size="36" autocomplete="off"></label>
      <button data-testid="connect">Connect</button></form>
  </header>
  <div id="status" class="error" data-testid="status"></div>
  <h2>Submit a job</h2>
  <form id="submit-form" class="submit">
    <textarea id="prompts" data-testid="prompts" placeholder="One prompt per line"></textarea>
    <div class="row">
      <label>Priority <input id="priority" data-testid="priority" type="number" min="-10" max="10" step="1" value="0" style="width:5em"></label>
      <label>Max cost (USD) <input id="max-cost" data-testid="max-cost" type="number" min="0" step="any" placeholder="none" style="width:8em"></label>
      <label>Mode <select id="mode" data-testid="mode"><option value="realtime">live calls</option><option value="batch">provider batches (½ price, ≤ 24 h)</option></select></label>
      <button id="submit" data-testid="submit">Submit</button>
    </div>
    <div id="submit-error" class="error" data-testid="submit-error"></div>
  </form>
  <h2>Jobs</h2>
  <table><thead><tr><th>Job</th><th>State</th><th>Progress</th><th>Cost</th><th>Rate</th><th>Limit</th><th>Failures</th><th></th></tr></thead>
    <tbody id="jobs" data-testid="jobs"></tbody></table>
  <section id="detail" data-testid="detail" hidden>
    <h2>Job <code id="detail-id"></code> <span id="detail-info" class="muted"></span></h2>
    <div class="legend"><span><i class="swatch" style="background:#2e7dd6"></i>throughput (items settled/s, left)</span>
      <span><i class="swatch" style="background:#e08020"></i>concurrency limit (right)</span></div>
    <svg id="chart" data-testid="chart" viewBox="0 0 720 200" role="img" aria-label="throughput and concurrency limit over time"></svg>
    <div id="time-section" hidden>
      <h2>Where the time went</h2>
      <div id="time-bar" class="stack" data-testid="time-bar" role="img" aria-label="where the items' time went"></div>
      <div id="time-legend" class="legend" data-testid="time-legend"></div>
      <p id="time-verdict" data-testid="time-verdict"></p>
    </div>
    <div id="shards-section" hidden>
      <h2>Provider batches</h2>
      <table><thead><tr><th>Shard</th><th>Model</th><th>Lines</th><th>State</th><th>Batch</th></tr></thead><tbody id="shards" data-testid="shards"></tbody></table>
    </div>
    <h2>Failures by class</h2>
    <table><thead><tr><th>Class</th><th>Items</th><th>Last message</th></tr></thead><tbody id="failures" data-testid="failures"></tbody></table>
  </section>
`

const script = String.raw`
"use strict";
const $ = (id) => document.getElementById(id);
const terminal = (state) => state !== "queued" && state !== "running";
const jobs = new Map();   // id -> the job as GET /jobs/:id shows it
const rows = new Map();   // id -> the row's elements
const feeds = new Map();  // id -> { lastId, retry, active, done, abort, series, failures }
const waiting = [];
let open = 0, selected = null, renderTimer = null;
const nav = performance.getEntriesByType("navigation")[0];
// Each open stream holds a connection; over HTTP/1.1 a browser opens only 6 per host.
const maxStreams = nav && /^h[23]/.test(nav.nextHopProtocol || "") ? 20 : 4;

const key = () => $("key").value.trim();
const el = (tag, attrs, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) node.append(child);
  return node;
};

async function api(method, path, payload) {
  const headers = { authorization: "Bearer " + key() };
  if (payload !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(path, { method, headers, body: payload === undefined ? undefined : JSON.stringify(payload) });
  const json = parse(await res.text());
  if (!res.ok) throw new Error(messageOf(res, json));
  return json;
}
const parse = (text) => { try { return JSON.parse(text); } catch { return null; } };
// Errors are JSON with a message (a payload the schema refuses: issues, each with its path); anything else
// (a proxy's page) is shown by its status.
const messageOf = (res, json) =>
  json && Array.isArray(json.issues) && json.issues.length > 0 ? json.issues.map((i) => (i.path || []).join(".") + ": " + i.message).join("\n")
  : json && typeof json.message === "string" ? json.message : res.status + " " + res.statusText;

function feedOf(id) {
  let feed = feeds.get(id);
  if (!feed) feeds.set(id, feed = { lastId: 0, retry: 2000, active: false, queued: false, done: false, abort: null, series: [], failures: new Map() });
  return feed;
}

// at: when the request that brought the job was sent; an answer older than what an event told is dropped.
function upsert(job, at) {
  const known = jobs.get(job.id);
  if (known && known.at > at) return;
  job.at = at;
  jobs.set(job.id, job);
  if (!rows.has(job.id)) addRow(job);
  schedule(job.id);
}

function addRow(job) {
  const r = {};
  r.tr = el("tr", { "data-testid": "job-row", "data-job-id": job.id });
  r.state = el("span", { class: "state", "data-testid": "state" });
  r.bar = el("div", { class: "bar", "data-testid": "progress" }, r.ok = el("span", { class: "ok" }), r.fail = el("span", { class: "fail" }), r.skip = el("span", { class: "skip" }));
  r.count = el("span", { class: "num" });
  r.cost = el("td", { class: "num", "data-testid": "cost" });
  r.rate = el("td", { class: "num", "data-testid": "rate" });
  r.limit = el("td", { class: "num", "data-testid": "limit" });
  r.failures = el("td", { "data-testid": "failures-summary" });
  r.cancel = el("button", { "data-testid": "cancel", type: "button" }, "Cancel");
  r.replay = el("button", { "data-testid": "replay", type: "button", title: "Run the dead letters again" }, "Replay dead letters");
  r.tr.append(el("td", {}, el("code", {}, job.id)), el("td", {}, r.state), el("td", {}, el("div", { class: "progress" }, r.bar, r.count)),
    r.cost, r.rate, r.limit, r.failures, el("td", { class: "num" }, r.cancel, " ", r.replay));
  r.tr.addEventListener("click", () => select(job.id));
  r.cancel.addEventListener("click", (e) => { e.stopPropagation(); act(job.id, "/cancel"); });
  r.replay.addEventListener("click", (e) => { e.stopPropagation(); act(job.id, "/dead-letters/replay"); });
  rows.set(job.id, r);
  // Newest first.
  const before = Array.from(rows.keys()).map((id) => jobs.get(id)).filter((j) => j.id !== job.id && j.createdAt < job.createdAt)
    .sort((a, b) => b.createdAt - a.createdAt)[0];
  $("jobs").insertBefore(r.tr, before ? rows.get(before.id).tr : null);
}

async function act(id, path) {
  try {
    const at = performance.now(), job = await api("POST", "/jobs/" + id + path);
    if (path !== "/cancel") { feedOf(id).failures.clear(); feedOf(id).deadLetters = false; }
    upsert(job, at);
    if (!terminal(job.state)) follow(id);
  } catch (e) { $("status").textContent = e.message; }
}

const summary = (failures) => {
  const byClass = new Map();
  for (const f of failures.values()) {
    const entry = byClass.get(f.errorClass) || { count: 0, message: "" };
    entry.count++; entry.message = f.message;
    byClass.set(f.errorClass, entry);
  }
  return Array.from(byClass).sort((a, b) => b[1].count - a[1].count);
};

function renderRow(id) {
  const job = jobs.get(id), r = rows.get(id);
  if (!job || !r) return;
  const c = job.counts, done = c.succeeded + c.failed + c.skipped, pct = (n) => (c.total > 0 ? (100 * n) / c.total : 0) + "%";
  r.tr.dataset.state = job.state;
  r.tr.classList.toggle("selected", id === selected);
  r.state.textContent = job.state; r.state.className = "state " + job.state; r.state.title = job.reason || "";
  r.bar.dataset.done = String(done); r.bar.dataset.total = String(c.total);
  r.ok.style.width = pct(c.succeeded); r.fail.style.width = pct(c.failed); r.skip.style.width = pct(c.skipped);
  r.bar.title = c.succeeded + " succeeded, " + c.failed + " failed, " + c.skipped + " skipped, " + c.pending + " pending";
  r.count.textContent = done + "/" + c.total;
  r.cost.textContent = "$" + job.cost.toFixed(4);
  r.rate.textContent = job.rate.toFixed(1) + "/s";
  r.limit.textContent = String(job.concurrencyLimit);
  const classes = summary(feedOf(id).failures);
  r.failures.textContent = classes.length > 0 ? classes.map(([k, v]) => k + " " + v.count).join(", ") : c.failed > 0 ? c.failed + " failed" : "—";
  r.cancel.disabled = terminal(job.state);
  r.replay.disabled = !(terminal(job.state) && c.failed > 0);
}

function schedule(id) {
  if (id) (schedule.dirty ||= new Set()).add(id);
  if (renderTimer === null) renderTimer = setTimeout(render, 50);
}

function render() {
  renderTimer = null;
  for (const id of schedule.dirty || []) renderRow(id);
  schedule.dirty = new Set();
  const job = selected && jobs.get(selected);
  $("detail").hidden = !job;
  if (!job) return;
  $("detail-id").textContent = job.id;
  const meta = Object.entries(job.metadata || {}).map(([k, v]) => k + "=" + v).join(" ");
  $("detail-info").textContent = job.profile + " / " + job.model + ", priority " + job.priority + ", " + job.tokens + " tokens" +
    (job.etaSeconds !== undefined ? ", ETA " + Math.round(job.etaSeconds) + " s" : "") + (job.round > 0 ? ", replayed " + job.round + "×" : "") + (meta ? " — " + meta : "");
  drawChart(feedOf(job.id).series);
  drawTimeSpent(job);
  const shards = feedOf(job.id).shards || [];
  $("shards-section").hidden = job.mode !== "batch";
  $("shards").replaceChildren(...shards.map((s) => el("tr", { "data-testid": "shard" }, el("td", {}, s.key), el("td", {}, s.model),
    el("td", { class: "num" }, String(s.lines)), el("td", {}, s.state + (s.cancelled ? " (cancelled)" : "") + (s.again > 0 ? ", " + s.again + " to the next round" : "")),
    el("td", {}, s.batch || "-"))));
  const tbody = $("failures");
  tbody.replaceChildren(...summary(feedOf(job.id).failures).map(([k, v]) => el("tr", { "data-testid": "failure-class" }, el("td", {}, k), el("td", { class: "num" }, String(v.count)), el("td", {}, v.message))));
  if (tbody.children.length === 0) tbody.append(el("tr", {}, el("td", { colspan: "3", class: "muted" }, job.counts.failed > 0 ? job.counts.failed + " failed" : "No failures")));
}

// The parts of BatchReport.TimeSpent, in the order the bar stacks them; "engine" is what they leave of the wall time.
const timeParts = [
  ["inFlight", "in flight", "#2e7dd6", "the provider's own time set the pace: more concurrency goes faster if it allows"],
  ["queued", "queued for a permit", "#9a6bd6", "the concurrency limit held items back: raise it if the provider allows"],
  ["rateLimit", "rate limit", "#e08020", "waiting on the rate limit: raise the limit or accept the pace"],
  ["gate", "cooldown gate", "#d64545", "the provider refused starts (429s): set the rate limit to its real one"],
  ["backoff", "backoff", "#e0c020", "failures cost the time: see the failures below"],
  ["other", "engine", "#9aa0a6", "the engine's own work"]
];

function drawTimeSpent(job) {
  const spent = job.timeSpent;
  $("time-section").hidden = !spent || !(spent.wallMs > 0);
  if ($("time-section").hidden) return;
  const measured = spent.inFlightMs + spent.queuedMs + spent.rateLimitMs + spent.gateMs + spent.backoffMs;
  const ms = { inFlight: spent.inFlightMs, queued: spent.queuedMs, rateLimit: spent.rateLimitMs, gate: spent.gateMs,
    backoff: spent.backoffMs, other: Math.max(0, spent.wallMs - measured) };
  const shown = timeParts.filter(([part]) => ms[part] > 0).map(([part, name, color, advice]) =>
    ({ part, name, color, advice, share: ms[part] / Math.max(spent.wallMs, measured) }));
  const pct = (share) => Math.round(share * 100) + " %";
  $("time-bar").replaceChildren(...shown.map((p) => el("span", { "data-part": p.part, title: p.name + " " + pct(p.share),
    style: "width:" + (p.share * 100).toFixed(2) + "%;background:" + p.color })));
  $("time-legend").replaceChildren(...shown.map((p) => el("span", {}, el("i", { class: "swatch", style: "background:" + p.color }), p.name + " " + pct(p.share))));
  // As BatchReport.causes: the time queued for a permit is charged to what the permits' holders were doing.
  const held = ms.inFlight + ms.rateLimit + ms.gate;
  const cause = { ...ms };
  if (held > 0) {
    for (const part of ["inFlight", "rateLimit", "gate"]) cause[part] += ms.queued * ms[part] / held;
    cause.queued = 0;
  }
  const top = timeParts.map(([part, name, , advice]) => ({ name, advice, share: cause[part] / Math.max(spent.wallMs, measured) }))
    .reduce((a, b) => (b.share > a.share ? b : a));
  $("time-verdict").textContent = top.share > 0 ? pct(top.share) + " " + top.name + ": " + top.advice + " (" + spent.items + " items)" : "";
}

function svg(tag, attrs, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// Items settled per second over the last second or more (since the previous point only when it is a second back):
// two events a few ms apart would make a spike of nothing.
function throughput(points) {
  return points.map((p, i) => {
    let j = 0;
    for (let k = i - 1; k >= 0; k--) if (points[k].at <= p.at - 1000) { j = k; break; }
    const dt = (p.at - points[j].at) / 1000;
    return { at: p.at, rate: i === 0 || dt <= 0 ? 0 : Math.max(0, p.settled - points[j].settled) / dt };
  });
}

function drawChart(series) {
  const chart = $("chart"), W = 720, H = 200, L = 44, R = 44, T = 10, B = 22;
  chart.replaceChildren();
  if (series.length === 0) { chart.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "waiting for events")); return; }
  const t0 = series[0].at, t1 = Math.max(series[series.length - 1].at, t0 + 1000);
  const rates = throughput(series.filter((p) => p.settled !== undefined)), limits = series.filter((p) => p.limit !== undefined);
  const maxRate = Math.max(1, ...rates.map((p) => p.rate)) * 1.1, maxLimit = Math.max(1, ...limits.map((p) => p.limit)) * 1.1;
  const x = (t) => (L + ((t - t0) / (t1 - t0)) * (W - L - R)).toFixed(1);
  const y = (v, max) => (H - B - (v / max) * (H - T - B)).toFixed(1);
  chart.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "currentColor", "stroke-opacity": 0.3 }),
    svg("text", { x: L - 4, y: T + 10, "text-anchor": "end" }, maxRate.toFixed(0)), svg("text", { x: L - 4, y: H - B, "text-anchor": "end" }, "0"),
    svg("text", { x: W - R + 4, y: T + 10 }, maxLimit.toFixed(0)), svg("text", { x: W - R + 4, y: H - B }, "0"),
    svg("text", { x: L, y: H - 6 }, "0 s"), svg("text", { x: W - R, y: H - 6, "text-anchor": "end" }, ((t1 - t0) / 1000).toFixed(1) + " s"));
  let steps = [];
  for (const p of limits) {
    if (steps.length > 0) steps.push(x(p.at) + "," + steps[steps.length - 1].split(",")[1]);
    steps.push(x(p.at) + "," + y(p.limit, maxLimit));
  }
  if (steps.length > 0) steps.push(x(t1) + "," + steps[steps.length - 1].split(",")[1]);
  // Each rate is the pace over the interval that ends at its point: a step over that interval.
  const flow = rates.slice(1).flatMap((p, i) => [x(rates[i].at) + "," + y(p.rate, maxRate), x(p.at) + "," + y(p.rate, maxRate)]);
  chart.append(svg("polyline", { "data-series": "limit", points: steps.join(" "), fill: "none", stroke: "#e08020", "stroke-width": 2 }),
    svg("polyline", { "data-series": "throughput", points: flow.join(" "), fill: "none", stroke: "#2e7dd6", "stroke-width": 2 }));
}

function select(id) {
  const previous = selected;
  selected = id;
  schedule(previous); schedule(id);
  const job = jobs.get(id), feed = feedOf(id);
  // The chart is built from the job's events: a job already ended is read once, from the start.
  if (feed.lastId === 0) follow(id, true);
  if (job && terminal(job.state) && job.counts.failed > 0) loadDeadLetters(id);
  if (job && job.mode === "batch") loadShards(id);
}

async function loadShards(id) {
  try {
    const { shards } = await api("GET", "/jobs/" + id + "/shards");
    feedOf(id).shards = shards;
    schedule(id);
  } catch (e) { $("status").textContent = e.message; }
}

async function loadDeadLetters(id) {
  try {
    const { items } = await api("GET", "/jobs/" + id + "/dead-letters");
    const feed = feedOf(id);
    feed.failures = new Map(items.map((d) => [d.index, { errorClass: d.errorClass, message: d.message }]));
    feed.deadLetters = true;
    schedule(id);
  } catch (e) { $("status").textContent = e.message; }
}

async function refreshJob(id) {
  try {
    const at = performance.now(), job = await api("GET", "/jobs/" + id);
    upsert(job, at);
    if (terminal(job.state) && job.counts.failed > 0) loadDeadLetters(id);
    if (job.mode === "batch" && id === selected) loadShards(id);
  } catch (e) { $("status").textContent = e.message; }
}

function follow(id, front) {
  const feed = feedOf(id);
  if (feed.active || feed.queued) return;
  if (open >= maxStreams) { feed.queued = true; front ? waiting.unshift(id) : waiting.push(id); return; }
  stream(id, feed);
}

function handle(id, feed, type, data) {
  const job = jobs.get(id);
  // A stream replaying the events of a job already ended feeds the chart only.
  const live = feed.live && job;
  if (live) job.at = performance.now();
  if (type === "progress") {
    feed.series.push({ at: data.at, settled: data.succeeded + data.failed, limit: data.concurrencyLimit });
    if (live) Object.assign(job, { counts: { total: data.total, succeeded: data.succeeded, failed: data.failed, skipped: data.skipped, pending: data.pending },
      cost: data.cost ?? job.cost, tokens: data.tokens ?? job.tokens, rate: data.rate ?? 0, etaSeconds: data.etaSeconds },
      data.concurrencyLimit === undefined ? {} : { concurrencyLimit: data.concurrencyLimit });
  } else if (type === "limit") {
    feed.series.push({ at: data.at, limit: data.limit });
    if (live) job.concurrencyLimit = data.limit;
  } else if (type === "item-failed") {
    // Once the dead letters are read, old failures replayed from the start (perhaps since retried) are not added.
    if (live || !feed.deadLetters) feed.failures.set(data.index, { errorClass: data.errorClass, message: data.message });
  } else if (type === "state") {
    // The start of a run is where its throughput line starts; its end (the job as it is now) is where it ends.
    // Followed live, the job's limit as last read is the limit then.
    if (data.state === "running") feed.series.push({ at: data.at, settled: feed.series.reduce((n, p) => p.settled ?? n, 0), limit: live ? job.concurrencyLimit : undefined });
    const end = () => {
      const now = jobs.get(id), last = feed.series.findLast((p) => p.settled !== undefined);
      if (now && (!last || last.at < data.at)) feed.series.push({ at: data.at, settled: now.counts.succeeded + now.counts.failed, limit: live ? now.concurrencyLimit : undefined });
      schedule(id);
    };
    feed.done = terminal(data.state);
    if (live) { job.state = data.state; job.reason = data.reason; refreshJob(id).then(feed.done ? end : undefined); } else if (feed.done) end();
  }
  schedule(id);
}

async function stream(id, feed) {
  const job = jobs.get(id);
  feed.active = true; feed.queued = false; feed.done = false; feed.live = !job || !terminal(job.state); open++;
  const abort = feed.abort = new AbortController();
  let gone = false;
  try {
    const headers = { authorization: "Bearer " + key() };
    if (feed.lastId > 0) headers["last-event-id"] = String(feed.lastId);
    const res = await fetch("/jobs/" + id + "/events", { headers, signal: abort.signal });
    if (!res.ok) { gone = true; $("status").textContent = "events of " + id + ": " + messageOf(res, parse(await res.text())); return; }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "", frame = { id: null, event: "message", data: [] };
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (frame.id !== null && /^\d+$/.test(frame.id)) feed.lastId = Number(frame.id);
          if (frame.data.length > 0) {
            let data = null;
            try { data = JSON.parse(frame.data.join("\n")); } catch { /* not JSON: ignored */ }
            if (data !== null) handle(id, feed, frame.event, data);
          }
          frame = { id: null, event: "message", data: [] };
          continue;
        }
        if (line.startsWith(":")) continue; // keep-alive
        const colon = line.indexOf(":"), field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "id") frame.id = value;
        else if (field === "event") frame.event = value;
        else if (field === "data") frame.data.push(value);
        else if (field === "retry" && /^\d+$/.test(value)) feed.retry = Number(value);
      }
    }
  } catch {
    if (abort.signal.aborted) gone = true;
  } finally {
    feed.active = false; open--;
    while (open < maxStreams && waiting.length > 0) { const next = waiting.shift(); stream(next, feedOf(next)); }
  }
  // The stream ends by itself after a final state; anything else is a disconnect.
  if (!gone && !feed.done) setTimeout(() => { if (feeds.get(id) === feed) follow(id); }, feed.retry);
}

async function refreshList() {
  if (key() === "") { $("status").textContent = "Enter an API key."; return; }
  try {
    const at = performance.now(), { jobs: page } = await api("GET", "/jobs?limit=100");
    $("status").textContent = "";
    for (const job of page) {
      upsert(job, at);
      if (!terminal(job.state)) follow(job.id);
    }
  } catch (e) { $("status").textContent = e.message; }
}

function reset() {
  for (const feed of feeds.values()) if (feed.abort) feed.abort.abort();
  feeds.clear(); jobs.clear(); rows.clear(); waiting.length = 0; selected = null;
  $("jobs").replaceChildren(); schedule();
  localStorage.setItem("effect-batch.key", key());
  refreshList();
}

$("key-form").addEventListener("submit", (e) => { e.preventDefault(); reset(); });
$("submit-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const error = $("submit-error"), button = $("submit");
  error.textContent = "";
  const items = $("prompts").value.split(/\r?\n/).filter((line) => line.trim() !== "");
  if (items.length === 0) { error.textContent = "Enter at least one prompt, one per line."; return; }
  if (key() !== localStorage.getItem("effect-batch.key")) reset();
  // A batch job takes no priority: it does not share the provider's live limits.
  const payload = $("mode").value === "batch" ? { items, mode: "batch" } : { items, priority: Number($("priority").value || "0") };
  if ($("max-cost").value.trim() !== "") payload.maxCost = Number($("max-cost").value);
  button.disabled = true;
  try {
    const submitted = await api("POST", "/jobs", payload);
    $("prompts").value = "";
    upsert(await api("GET", "/jobs/" + submitted.id), performance.now());
    select(submitted.id);
  } catch (err) {
    error.textContent = err.message;
  } finally { button.disabled = false; }
});

const fragment = /(?:^#|&)key=([^&]*)/.exec(location.hash);
if (fragment) {
  localStorage.setItem("effect-batch.key", decodeURIComponent(fragment[1]));
  history.replaceState(null, "", location.pathname + location.search); // the key is not left in the address bar
}
$("key").value = localStorage.getItem("effect-batch.key") || "";
refreshList();
setInterval(refreshList, 5000);
`

/**
 * The dashboard: HTML with its CSS and script inline.
 *
 * @since 0.1.0
 * @category page
 */
export const page = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>effect-batch jobs</title>
<style>${style}</style>
</head>
<body>${body}<script>${script}</script>
</body>
</html>
`
