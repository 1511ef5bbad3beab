// The dashboard page: one live snapshot of every app each second (server-sent events).
"use strict";

const appsEl = document.getElementById("apps");
const statusEl = document.getElementById("status");

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
  row.append(name, text("td", containers(fn.containers), "containers"),
             text("td", `${fn.in_flight} in flight, ${fn.queued} queued`, "load"));
  const last = document.createElement("td");
  if (fn.state === "failed" || fn.last_error) last.append(text("span", fn.last_error || "failed", "error"));
  row.append(last);
  return row;
}

function appCard(app) {
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
  return card;
}

function render(snapshot) {
  const apps = snapshot.apps || [];
  appsEl.replaceChildren(...(apps.length ? apps.map(appCard)
    : [text("p", "No apps yet: wisp deploy script.py or wisp serve script.py.", "muted")]));
  statusEl.textContent = `live · ${new Date((snapshot.at || Date.now() / 1000) * 1000).toLocaleTimeString()}`;
}

async function stopApp(id) {
  if (!confirm(`Stop app ${id} and its containers?`)) return;
  const answer = await fetch(`/dashboard/api/apps/${encodeURIComponent(id)}/stop`, {method: "POST"});
  if (!answer.ok) alert((await answer.json()).error || `stop failed (${answer.status})`);
}

const events = new EventSource("/dashboard/api/events");
events.onmessage = (event) => render(JSON.parse(event.data));
events.onerror = () => { statusEl.textContent = "disconnected: is the server running? retrying…"; };
