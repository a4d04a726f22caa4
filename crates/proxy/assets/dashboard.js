// Fulcrum live dashboard. Hand-written, no dependencies, no build step.
// Reads the SSE stream /api/v1/events with fetch() (so it can send the
// bearer token), keeps two minutes of history per backend, and draws SVG.
"use strict";

const HISTORY = 120;            // samples kept per backend (one a second)
const COLORS = ["#2f6fde", "#1f9d55", "#d98b00", "#9b59b6", "#d64545", "#16a2b8", "#7f8c8d", "#c0392b"];
const history = new Map();      // "cluster/address" -> {rps: [], p99: [], inflight: []}
const $ = (id) => document.getElementById(id);
const tokenInput = $("token");
tokenInput.value = sessionStorage.getItem("fulcrum-token") || "";
tokenInput.addEventListener("change", () => {
  sessionStorage.setItem("fulcrum-token", tokenInput.value.trim());
  connect();
});

function authHeaders() {
  const t = tokenInput.value.trim();
  return t ? { "Authorization": "Bearer " + t } : {};
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function fmt(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return v.toFixed(digits);
}

function setStatus(text, cls) {
  const s = $("status");
  s.textContent = text;
  s.className = "pill " + cls;
}

function message(text, isError) {
  const m = $("message");
  m.textContent = text;
  m.className = isError ? "error" : "";
}

let controller = null;
async function connect() {
  if (controller) controller.abort();
  controller = new AbortController();
  const signal = controller.signal;
  while (!signal.aborted) {
    try {
      const resp = await fetch("/api/v1/events", { headers: authHeaders(), signal });
      if (resp.status === 401) {
        setStatus("token needed", "down");
        message("This admin listener needs the token to show data: enter it above.", true);
        return;
      }
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      setStatus("live", "up");
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
          if (data) render(JSON.parse(data));
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      setStatus("reconnecting", "down");
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function remember(key, b) {
  let h = history.get(key);
  if (!h) { h = { rps: [], p99: [], inflight: [] }; history.set(key, h); }
  const push = (arr, v) => { arr.push(v); if (arr.length > HISTORY) arr.shift(); };
  push(h.rps, b.requests_per_second);
  push(h.p99, b.latency_p99_ms);
  push(h.inflight, b.in_flight);
  return h;
}

function chart(title, unit, series) {
  const w = 300, h = 90, pad = 2;
  let max = 0;
  for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
  if (max <= 0) max = 1;
  const lines = series.map((s) => {
    const n = s.values.length;
    const pts = s.values.map((v, i) => {
      if (v === null) return null;
      const x = w - (n - 1 - i) * (w / (HISTORY - 1));
      const y = h - pad - (v / max) * (h - 2 * pad);
      return x.toFixed(1) + "," + y.toFixed(1);
    }).filter((p) => p !== null);
    return `<polyline fill="none" stroke="${s.color}" stroke-width="1.6" points="${pts.join(" ")}"/>`;
  }).join("");
  const legend = series.map((s) => `<span><i style="background:${s.color}"></i>${esc(s.name)}</span>`).join("");
  return `<div class="chart"><h3>${esc(title)} <span class="muted">(max ${fmt(max, max < 10 ? 1 : 0)} ${unit})</span></h3>
<svg viewBox="0 0 ${w} ${h}" preserveAspectRatio="none">${lines}</svg><div class="legend">${legend}</div></div>`;
}

function render(view) {
  $("generation").textContent = "config generation " + view.generation + " · " + new Date(view.time_ms).toLocaleTimeString();
  const live = new Set();
  const html = view.clusters.map((c) => {
    const rows = [];
    const rps = [], p99 = [], inflight = [];
    c.backends.forEach((b, i) => {
      const key = c.name + "/" + b.address;
      live.add(key);
      const h = remember(key, b);
      const color = COLORS[i % COLORS.length];
      rps.push({ name: b.address, color, values: h.rps });
      p99.push({ name: b.address, color, values: h.p99 });
      inflight.push({ name: b.address, color, values: h.inflight });
      const failing = b.healthy && b.error_rate > 0.5;
      const health = !b.healthy ? "down" : failing ? "failing" : "up";
      const rowClass = !b.healthy ? "down" : b.state !== "enabled" ? b.state : "";
      const action = b.state === "enabled"
        ? `<button data-act="draining">drain</button>`
        : `<button data-act="enabled">enable</button>`;
      rows.push(`<tr class="${rowClass}" data-cluster="${esc(c.name)}" data-address="${esc(b.address)}" data-health="${health}" data-state="${esc(b.state)}">
<td class="l"><i style="display:inline-block;width:10px;height:10px;border-radius:2px;background:${color}"></i> ${esc(b.address)}</td>
<td class="l"><span class="pill ${health}">${health}</span></td>
<td class="l"><span class="pill ${esc(b.state)}">${esc(b.state)}</span></td>
<td>${b.weight}</td>
<td>${b.in_flight}</td>
<td>${fmt(b.requests_per_second, 1)}</td>
<td><span class="bar" style="width:${Math.round(b.share * 60)}px"></span> ${fmt(b.share * 100, 0)}%</td>
<td>${fmt(b.latency_p50_ms, 1)}</td>
<td>${fmt(b.latency_p99_ms, 1)}</td>
<td>${fmt(b.latency_ewma_ms, 1)}</td>
<td>${fmt(b.error_rate * 100, 1)}%</td>
<td>${b.requests_total}</td>
<td>${action}</td></tr>`);
    });
    return `<section class="cluster" data-cluster="${esc(c.name)}">
<h2>${esc(c.name)} <small>${esc(c.algorithm)} · ${c.backends.length} backends · ${fmt(c.requests_per_second, 1)} req/s</small></h2>
<div class="charts">${chart("requests/s", "req/s", rps)}${chart("p99 latency", "ms", p99)}${chart("in flight", "req", inflight)}</div>
<table><thead><tr><th>backend</th><th class="l">health</th><th class="l">admin</th><th>weight</th><th>in flight</th><th>req/s</th><th>share</th><th>p50 ms</th><th>p99 ms</th><th>ewma ms</th><th>errors</th><th>requests</th><th></th></tr></thead>
<tbody>${rows.join("")}</tbody></table></section>`;
  }).join("");
  for (const k of history.keys()) if (!live.has(k)) history.delete(k);
  $("clusters").innerHTML = html || `<p class="muted">No clusters configured.</p>`;
}

document.addEventListener("click", async (ev) => {
  const btn = ev.target.closest("button[data-act]");
  if (!btn) return;
  const row = btn.closest("tr");
  const cluster = row.dataset.cluster, address = row.dataset.address, state = btn.dataset.act;
  btn.disabled = true;
  try {
    const resp = await fetch(`/api/v1/clusters/${encodeURIComponent(cluster)}/backends/${encodeURIComponent(address)}`, {
      method: "PATCH",
      headers: Object.assign({ "Content-Type": "application/json" }, authHeaders()),
      body: JSON.stringify({ state }),
    });
    const body = await resp.json().catch(() => ({}));
    if (resp.ok) message(`${address}: ${state}`, false);
    else message(`${address}: ${body.error || resp.status}`, true);
  } catch (e) {
    message(String(e), true);
  } finally {
    btn.disabled = false;
  }
});

connect();
