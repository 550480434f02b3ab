// Live event debugger: recent events, then Server-Sent Events as they happen. One row per event
// and integration, kept newest first, updated as its outcome changes. "queued" lists what the
// queue still holds (waiting behind a paused or failing integration, or for a retry).
import { api, badge, el, fill, hook, plural, when } from "./api.js";

const filters = hook("filters");
const tbody = hook("events");
const live = hook("live-state");
const detail = hook("detail");
const empty = hook("empty");
const integrations = new Map([...filters.integration_id.options].filter((o) => o.value)
  .map((o) => [o.value, { name: o.textContent, source: o.dataset.source, enabled: o.dataset.enabled === "true" }]));
const rows = new Map();
let stream;
let opener = null;  // the button that opened the detail panel: focus goes back to it

const key = (r) => `${r.event_id}|${r.integration_id || ""}`;

function closeDetail() {
  if (detail.hidden) return;
  detail.hidden = true;
  if (opener?.isConnected) opener.focus();
  opener = null;
}

function show(record, button) {
  opener = button;
  detail.hidden = false;
  const block = (title, value) => value == null ? [] : [el("h3", { text: title }), el("pre", { tabindex: "0", text: JSON.stringify(value, null, 2) })];
  const target = record.integration_id ? integrations.get(record.integration_id)?.name || record.integration_id : "every integration of the source";
  const sent = record.pinterest_event ? `as ${record.pinterest_event}` : "not sent";
  fill(hook("detail-body"),
    el("p", {}, badge(record.status), ` ${record.event}, ${sent}, for ${target}. ${plural(record.attempts || 0, "attempt")} so far.`),
    el("p", {}, "Received ", when(record.at)),
    record.message ? el("p", { class: record.status === "failed" ? "problem" : "help", text: record.message }) : null,
    ...(record.warnings || []).map((w) => el("p", { class: "help", text: `Warning: ${w}` })),
    ...(record.incoming?.notes || []).map((n) => el("p", { class: "help", text: `Note: ${n}` })),
    ...block("Incoming event (PII hashed)", record.incoming), ...block("Pinterest payload", record.payload));
  hook("detail-heading").focus();
}

function remove(k) {
  rows.get(k)?.remove();
  rows.delete(k);
}

function place(record) {
  const view = el("button", { type: "button", class: "secondary", "aria-label": `View ${record.event} ${record.event_id}` }, "View");
  view.addEventListener("click", () => show(record, view));
  const integ = record.integration_id ? integrations.get(record.integration_id)?.name || record.integration_id : "all";
  const row = el("tr", { "data-event": record.event_id, "data-status": record.status, "data-at": record.at },
    el("td", { "data-label": "Time" }, when(record.at)),
    el("td", { "data-label": "Event" }, el("span", { class: "truncate", title: record.event, text: record.event })),
    el("td", { "data-label": "Integration" }, el("span", { class: "truncate", title: integ, text: integ })),
    el("td", { "data-label": "Pinterest", text: record.pinterest_event || "" }),
    el("td", { "data-label": "Status" }, badge(record.status)),
    el("td", { "data-label": "Details" }, view));
  remove(key(record));
  // Strict newest first: before the first row that is older.
  const older = [...tbody.children].find((r) => r.dataset.at < record.at);
  tbody.insertBefore(row, older || null);
  rows.set(key(record), row);
  while (rows.size > 500) { const last = tbody.lastElementChild; rows.delete([...rows].find(([, r]) => r === last)[0]); last.remove(); }
}

// A live "queued" record stands for every enabled integration of its source: a row for each.
function expand(record) {
  if (record.integration_id || record.status !== "queued") return [record];
  const mine = [...integrations].filter(([, i]) => i.source === record.source_id && i.enabled).map(([id]) => id);
  return mine.length ? mine.map((id) => ({ ...record, integration_id: id })) : [record];
}

function wanted(record) {
  const f = filters;
  return (!f.source_id.value || record.source_id === f.source_id.value)
    && (!f.integration_id.value || record.integration_id === f.integration_id.value)
    && (!f.status.value || record.status === f.status.value);
}

function arrive(record) {
  for (const r of expand(record)) {
    remove(`${r.event_id}|`);
    if (wanted(r)) place(r);
    else remove(key(r));  // e.g. under "queued": it left the queue
  }
  empty.hidden = rows.size > 0;
}

async function start() {
  stream?.close();
  closeDetail();
  rows.clear();
  tbody.replaceChildren();
  const params = new URLSearchParams();
  for (const name of ["source_id", "integration_id", "status"]) if (filters[name].value) params.set(name, filters[name].value);
  history.replaceState(null, "", `/debugger${params.size ? `?${params}` : ""}`);
  const listing = new URLSearchParams(params);
  listing.set("limit", "100");
  const recent = await api("GET", `/debugger/events?${listing}`);
  for (const record of recent.data) arrive(record);
  empty.hidden = rows.size > 0;
  params.delete("status");  // outcomes too: under "queued" they take events off the list
  params.delete("integration_id");  // live "queued" records name no integration; filtered here
  stream = new EventSource(`/v1/admin/debugger/stream?${params}`);
  stream.onopen = () => { live.textContent = "Live: new events appear as they happen."; };
  stream.onerror = () => { live.textContent = "Reconnecting to the live stream…"; };
  stream.onmessage = (message) => arrive(JSON.parse(message.data));
}

filters.addEventListener("change", start);
hook("close-detail").addEventListener("click", closeDetail);
document.addEventListener("keydown", (event) => { if (event.key === "Escape") closeDetail(); });
start();
