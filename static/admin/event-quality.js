// Pinterest's Event Quality Score on an integration's page: for the last day and the last 14 days,
// per source platform, the overall status and per signal the share of each event type that carried
// it, the issues Pinterest found, and how many event ids the Pinterest Tag sent too. When the token
// cannot read it, what to do instead.
import { api, el, fill, say, table, when } from "./api.js";

const SIGNALS = {
  hashed_email: "Email (hashed)", hashed_maid: "Mobile ad id (hashed)", ip_address: "IP address",
  user_agent: "User-Agent", click_id_epik: "Click id (epik)", advertiser_external_id: "External id",
  external_event_id: "Event id", order_id: "Order id", order_value: "Order value", product_id: "Product id",
  source_url: "Source URL",
};
const STATUS = { GOOD: "Good", FAIR: "Fair", NEEDS_IMPROVEMENT: "Needs improvement" };
const PERIODS = { "1d": "Last day", "14d": "Last 14 days" };
const percent = (n) => `${Math.round(n * 10) / 10}%`;

function coverage(byEvent) {
  return Object.entries(byEvent).map(([event, d]) => `${event} ${percent(d.coverage)}`).join(", ");
}

function issues(byEvent) {
  const found = Object.values(byEvent).flatMap((d) => d.issues || []);
  return found.length ? el("ul", { class: "plain" }, found.map((i) => el("li", { title: i.id, text: `${i.name}: ${i.reason}` })))
    : "none";
}

function score(s, period) {
  const parts = s.quality_components;
  const rows = Object.entries(SIGNALS).filter(([key]) => parts[key] && Object.keys(parts[key]).length)
    .map(([key, label]) => [label, coverage(parts[key]), issues(parts[key])]);
  const overlap = Object.entries(parts.external_event_id || {}).filter(([, d]) => d.overlap != null)
    .map(([event, d]) => `${event} ${percent(d.overlap)}`).join(", ");
  return [
    el("p", { class: "eqs-status" }, el("strong", { text: `${s.source_platform}: ` }),
      el("span", { class: `badge eqs-${s.overall_status}`, text: STATUS[s.overall_status] || s.overall_status })),
    overlap ? el("p", { class: "eqs-overlap" }, "Event ids the Pinterest Tag sent too (counted once): ", overlap) : null,
    table(`${PERIODS[period] || period}, ${s.source_platform}`, ["Signal", "Coverage by event", "Issues"], rows),
  ];
}

function render(box, q) {
  const parts = [];
  if (q.problem) {
    parts.push(el("p", { class: "problem", id: "eqs-problem", text: q.message }));
    if (q.pinterest_message) parts.push(el("p", { class: "help", text: `Pinterest said: ${q.pinterest_message}` }));
  }
  parts.push(q.scores_at
    ? el("p", { class: "help" }, "Read from Pinterest ", when(q.scores_at), "; next ", when(q.next_refresh_at), ".")
    : el("p", { class: "help", text: "Not read from Pinterest yet." }));
  for (const period of q.periods) {
    parts.push(el("h3", { text: PERIODS[period.lookback_period] || period.lookback_period }));
    if (!period.scores.length) {
      parts.push(el("p", { class: "help", text: q.scores_at
        ? "No score for this period yet: Pinterest scores the events it received in it."
        : "No score shown." }));
      continue;
    }
    for (const s of period.scores) parts.push(...score(s, period.lookback_period));
  }
  fill(box, parts);
}

export async function eventQuality(box, button, id) {
  const load = async (refresh) => render(box, await api("GET", `/integrations/${id}/event-quality${refresh ? "?refresh=1" : ""}`));
  button.addEventListener("click", async () => {
    button.disabled = true;
    say("Reading the Event Quality Score from Pinterest…");
    try { await load(true); say("Event Quality Score read."); } catch (err) { say(err.message); }
    button.disabled = false;
  });
  try { await load(false); } catch (err) { fill(box, el("p", { class: "problem", text: err.message })); }
}
