// The dashboard page: one live snapshot of every app each second (server-sent events).
"use strict";

const appsEl = document.getElementById("apps");
const statusEl = document.getElementById("status");
const panels = new Map();  // app id -> its log/version panel, kept across re-renders

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value;
  if (cls) el.className = cls;
  return el;
}

function containers(states) {
  const parts = Object.entries(states || {}).map(([state, n]) => `${n} ${state}`);
  return parts.length ? parts.join(", ") : "none";
}

function functionRow(fn) {
  const row = document.createElement("tr");
  row.dataset.function = fn.function;
  const name = document.createElement("td");
  name.append(text("strong", fn.function));
  if (fn.url) {
    const link = document.createElement("a");
    link.href = fn.url; link.textContent = fn.url; link.target = "_blank"; link.rel = "noopener";
    name.append(document.createElement("br"), link);
  }
  const cell = text("td", containers(fn.containers), "containers");
  for (const c of fn.container_list || []) {
    if (c.state !== "ready" && c.state !== "busy" && c.state !== "starting") continue;
    const stop = text("button", `stop ${c.id}`, "container-stop");
    stop.title = `drain container ${c.id} (${c.state}, ${c.in_flight} in flight): it finishes its requests, then stops`;
    stop.dataset.container = c.id;
    stop.addEventListener("click", () => stopContainer(fn.app, c.id));
    cell.append(document.createElement("br"), stop);
  }
  if (fn.settings) {
    const s = fn.settings;
    name.append(text("div", `containers ${s.min_containers}–${s.max_containers}, ${s.max_inputs} input(s) each` +
      (s.buffer_containers ? `, +${s.buffer_containers} buffer` : "") + `, idle ${s.scaledown_window} s, timeout ${s.timeout} s` +
      (fn.gpu ? `, gpu ${[].concat(fn.gpu).join(" or ")}` : ""),
      "settings muted"));
  }
  if (fn.image) {
    name.append(text("div", `image ${fn.image.hash}${fn.image.python ? ` · Python ${fn.image.python}` : ""}` +
      (fn.image.steps.length ? ` · ${fn.image.steps.join(" ")}` : ""), "image muted"));
  }
  row.append(name, cell,
             text("td", `${fn.in_flight} in flight, ${fn.queued} queued`, "load"));
  const last = document.createElement("td");
  if (fn.state === "failed" || fn.last_error) last.append(text("span", fn.last_error || "failed", "error"));
  row.append(last);
  return row;
}

function appCard(app) {
  for (const fn of [...(app.endpoints || []), ...(app.functions || [])]) fn.app = app.id;
  const card = document.createElement("section");
  card.className = "app";
  card.dataset.app = app.id;
  const title = document.createElement("h2");
  title.append(text("span", app.name), text("span", app.state, `badge ${app.state}`),
               text("span", `${app.mode} · version ${app.version}`, "muted"));
  if (app.state === "running") {
    const stop = text("button", "Stop", "danger");
    stop.addEventListener("click", () => stopApp(app.id));
    title.append(stop);
  }
  const logsButton = text("button", "Logs & versions");
  logsButton.className = "toggle";
  logsButton.addEventListener("click", () => togglePanel(app.id, app.mode === "deploy" ? app.version : null));
  title.append(logsButton);
  card.append(title);
  if (app.error) card.append(text("p", app.error, "error"));
  const fns = [...(app.endpoints || []), ...(app.functions || [])];
  if (fns.length) {
    const table = document.createElement("table");
    const head = document.createElement("thead");
    const hr = document.createElement("tr");
    for (const h of ["function", "containers", "requests", "last error"]) hr.append(text("th", h));
    head.append(hr);
    const body = document.createElement("tbody");
    for (const fn of fns) body.append(functionRow(fn));
    table.append(head, body);
    card.append(table);
  }
  const panel = panels.get(app.id);
  if (panel) card.append(panel.el);
  return card;
}

// A panel per app: its log as it is written (filtered by container, or any text) and its versions.
function togglePanel(id, current) {
  const open = panels.get(id);
  if (open) {
    open.source.close();
    open.el.remove();
    panels.delete(id);
    return;
  }
  const el = document.createElement("div");
  el.className = "panel";
  el.dataset.panel = id;
  const filter = document.createElement("input");
  filter.placeholder = "filter: a container (c3), or any text";
  filter.className = "filter";
  const pre = document.createElement("pre");
  pre.className = "log";
  const versions = document.createElement("ul");
  versions.className = "versions";
  const charts = document.createElement("div");
  charts.className = "charts";
  const callList = document.createElement("ul");
  callList.className = "calls";
  el.append(text("h3", "Last 15 minutes"), charts, text("h3", "Log"), filter, pre, text("h3", "Versions"), versions,
            text("h3", "Spawned calls"), callList);
  const lines = [];
  const show = () => {
    const needle = filter.value.trim();
    pre.textContent = lines.filter((line) => !needle || line.includes(needle)).slice(-400).join("\n");
    pre.scrollTop = pre.scrollHeight;
  };
  filter.addEventListener("input", show);
  const source = new EventSource(`/dashboard/api/apps/${encodeURIComponent(id)}/logs`);
  source.onmessage = (event) => { lines.push(...JSON.parse(event.data).lines); show(); };
  fetch(`/dashboard/api/apps/${encodeURIComponent(id)}/versions`).then((r) => r.json()).then((data) => {
    versions.replaceChildren(...(data.versions || []).map((v) => {
      const item = text("li", `version ${v.version} · deployed ${new Date(v.deployed_at * 1000).toLocaleString()}`);
      if (current !== null && v.version !== current) {
        const back = text("button", "Roll back to this", "rollback");
        back.addEventListener("click", () => rollBack(id, v.version));
        item.append(" ", back);
      }
      return item;
    }));
  });
  const history = {};
  const live = new EventSource(`/dashboard/api/apps/${encodeURIComponent(id)}/history/stream`);
  live.onmessage = (event) => {
    for (const [fn, points] of Object.entries(JSON.parse(event.data))) {
      history[fn] = (history[fn] || []).concat(points).slice(-900);
    }
    drawCharts(charts, history);
  };
  const refresh = async () => {
    const recent = await fetch(`/dashboard/api/apps/${encodeURIComponent(id)}/calls`);
    if (recent.ok) {
      const list = (await recent.json()).calls || [];
      callList.replaceChildren(...(list.length ? list.map((c) =>
        text("li", `${c.id} · ${c.function} · ${c.state} · ${c.seconds.toFixed(2)} s · ${c.attempts} attempt(s)`))
        : [text("li", "none", "muted")]));
    }
  };
  refresh();
  const timer = setInterval(refresh, 2000);
  panels.set(id, {el, source: {close: () => { source.close(); live.close(); clearInterval(timer); }}});
  document.querySelector(`[data-app="${CSS.escape(id)}"]`)?.append(el);
}

function render(snapshot) {
  const apps = snapshot.apps || [];
  // The open panels move into the new cards, and a moved element loses the focus: a filter being
  // typed into gets it back, with its caret, or every second would take the keys away.
  const focused = document.activeElement;
  const caret = focused instanceof HTMLInputElement ? [focused.selectionStart, focused.selectionEnd] : null;
  appsEl.replaceChildren(...(apps.length ? apps.map(appCard)
    : [text("p", "No apps yet: wisp deploy script.py or wisp serve script.py.", "muted")]));
  if (focused instanceof HTMLElement && focused !== document.activeElement && focused.isConnected) {
    focused.focus();
    if (caret) focused.setSelectionRange(caret[0], caret[1]);
  }
  statusEl.textContent = `live · ${new Date((snapshot.at || Date.now() / 1000) * 1000).toLocaleTimeString()}`;
}

async function rollBack(id, version) {
  if (!confirm(`Deploy version ${version} of ${id} again, as a new version?`)) return;
  const answer = await fetch(`/dashboard/api/apps/${encodeURIComponent(id)}/rollback`, {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({version}),
  });
  const data = await answer.json();
  alert(answer.ok ? `${id} serves version ${version}'s code as version ${data.version}.` : data.error);
}

async function stopContainer(app, id) {
  if (!confirm(`Drain and stop container ${id}? It finishes its requests first.`)) return;
  const answer = await fetch(`/dashboard/api/apps/${encodeURIComponent(app)}/containers/${encodeURIComponent(id)}/stop`,
                             {method: "POST"});
  if (!answer.ok) alert((await answer.json()).error || `stop failed (${answer.status})`);
}

async function stopApp(id) {
  if (!confirm(`Stop app ${id} and its containers?`)) return;
  const answer = await fetch(`/dashboard/api/apps/${encodeURIComponent(id)}/stop`, {method: "POST"});
  if (!answer.ok) alert((await answer.json()).error || `stop failed (${answer.status})`);
}

// The cluster view: each node's capacity, what its containers reserve, how many run there.
const clusterEl = document.getElementById("cluster");
async function refreshCluster() {
  const answer = await fetch("/dashboard/api/cluster");
  if (!answer.ok) return;
  const nodes = (await answer.json()).nodes || [];
  clusterEl.replaceChildren(...nodes.map((n) => {
    const el = text("div", `${n.name}: ${n.containers} container(s) · CPU ${n.reserved_cpus}/${n.cpus} reserved · ` +
      `memory ${n.reserved_memory_mb}/${n.memory_mb} MB reserved`, "node");
    el.dataset.node = n.name;
    el.dataset.containers = String(n.containers);
    return el;
  }));
}
refreshCluster();
setInterval(refreshCluster, 2000);

const events = new EventSource("/dashboard/api/events");
events.onmessage = (event) => render(JSON.parse(event.data));
events.onerror = () => { statusEl.textContent = "disconnected: is the server running? retrying…"; };

// Charts: one small SVG per measure per function, drawn from the history points.
const SERIES = [
  ["requests/s", (p) => Object.values(p.by_status).reduce((a, b) => a + b, 0), "requests"],
  ["4xx/s", (p) => p.by_status["4xx"] || 0, "client-errors"],
  ["5xx/s", (p) => p.by_status["5xx"] || 0, "errors"],
  ["p50 ms", (p) => p.p50_ms, "p50"],
  ["p99 ms", (p) => p.p99_ms, "p99"],
  ["queue wait ms", (p) => p.wait_ms, "wait"],
  ["cold starts", (p) => p.cold_starts, "cold"],
  ["cold start ms", (p) => p.cold_start_ms, "cold-ms"],
  ["containers", (p) => Object.values(p.containers).reduce((a, b) => a + b, 0), "containers"],
];

function drawCharts(el, history) {
  el.replaceChildren();
  for (const [fn, points] of Object.entries(history)) {
    const row = document.createElement("div");
    row.className = "chart-row";
    row.dataset.function = fn;
    row.append(text("strong", fn));
    for (const [label, pick, key] of SERIES) row.append(chart(label, points.map(pick), key));
    el.append(row);
  }
}

function chart(label, values, key) {
  const box = document.createElement("figure");
  box.className = "chart";
  box.dataset.series = key;
  const numbers = values.filter((v) => v !== null && v !== undefined);
  const max = numbers.length ? Math.max(...numbers) : 0;
  box.dataset.max = String(max);
  const last = numbers.length ? numbers[numbers.length - 1] : null;
  const width = 180, height = 40;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  if (values.length > 1 && max > 0) {
    const step = width / (values.length - 1);
    const path = values.map((v, i) => `${i ? "L" : "M"}${(i * step).toFixed(1)},${(height - ((v || 0) / max) * (height - 2)).toFixed(1)}`).join(" ");
    const line = document.createElementNS(ns, "path");
    line.setAttribute("d", path);
    svg.append(line);
  }
  const caption = document.createElement("figcaption");
  caption.textContent = `${label}: ${last === null ? "–" : Math.round(last * 10) / 10} (max ${Math.round(max * 10) / 10})`;
  box.append(svg, caption);
  return box;
}
