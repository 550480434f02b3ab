// Live event debugger: recent events, then Server-Sent Events as they happen. One row per
// event and integration, updated in place as its outcome changes.
import { api, badge, el } from "./api.js";

const filters = document.getElementById("filters");
const tbody = document.querySelector("#events tbody");
const live = document.getElementById("live-state");
const detail = document.getElementById("detail");
const rows = new Map();
let stream;

const key = (r) => `${r.event_id}|${r.integration_id || ""}`;

function query() {
  const params = new URLSearchParams();
  for (const name of ["source_id", "integration_id", "status"]) if (filters[name].value) params.set(name, filters[name].value);
  return params;
}

function show(record) {
  detail.hidden = false;
  const block = (title, value) => value == null ? [] : [el("h3", { text: title }), el("pre", { text: JSON.stringify(value, null, 2) })];
  document.getElementById("detail-body").replaceChildren(
    el("p", {}, badge(record.status), ` ${record.event} → ${record.pinterest_event || "not sent"} · attempt ${record.attempts || 0}`),
    record.message ? el("p", { class: record.status === "failed" ? "problem" : "help", text: record.message }) : null,
    ...(record.warnings || []).map((w) => el("p", { class: "help", text: `Warning: ${w}` })),
    ...block("Incoming event (PII hashed)", record.incoming), ...block("Pinterest payload", record.payload));
  document.getElementById("detail-h").focus();
}

function upsert(record, prepend = true) {
  if (record.integration_id) {  // the outcome replaces the event's "queued" row
    const queued = rows.get(`${record.event_id}|`);
    if (queued) { queued.remove(); rows.delete(`${record.event_id}|`); }
  }
  const row = el("tr", { "data-event": record.event_id, "data-status": record.status },
    el("td", { text: new Date(record.at).toLocaleTimeString() }),
    el("td", { text: record.event }),
    el("td", { text: record.pinterest_event || "" }),
    el("td", {}, badge(record.status)),
    el("td", {}, el("button", { type: "button", class: "secondary", onclick: () => show(record), "aria-label": `Details of ${record.event} ${record.event_id}` }, "View")));
  const old = rows.get(key(record));
  if (old) old.replaceWith(row);
  else if (prepend) tbody.prepend(row);
  else tbody.append(row);
  rows.set(key(record), row);
  while (rows.size > 500) { const [k, r] = rows.entries().next().value; r.remove(); rows.delete(k); }
}

async function start() {
  stream?.close();
  rows.clear();
  tbody.replaceChildren();
  const params = query();
  history.replaceState(null, "", `/debugger${params.size ? `?${params}` : ""}`);
  params.set("limit", "100");
  const recent = await api("GET", `/debugger/events?${params}`);
  for (const record of recent.data.slice().reverse()) upsert(record);
  params.delete("limit");
  stream = new EventSource(`/v1/admin/debugger/stream?${params}`);
  stream.onopen = () => { live.textContent = "Live: new events appear as they happen."; };
  stream.onerror = () => { live.textContent = "Reconnecting to the live stream…"; };
  stream.onmessage = (message) => upsert(JSON.parse(message.data));
}

filters.addEventListener("change", start);
document.getElementById("close-detail").addEventListener("click", () => { detail.hidden = true; });
start();
