// A source's page: what was refused and when an event last came (refreshed every few seconds),
// the snippet, consent and privacy, the server key, edit and delete.
import { api, clearErrors, el, fill, hook, list, pageData, say, showError, table, when } from "./api.js";
import { showDeployment } from "./deployment.js";

const box = hook("refusals");
const id = pageData.source;
const lastField = (field) => field.replace(/\[\d+\]$/, "").split(".").pop();
const REASONS = {
  origin_not_allowed: "page on a site this source does not allow",
  rate_limited: "over the rate limit",
  invalid_event: "event with a wrong or missing field",
  event_too_large: "event too large",
  too_deep: "event nested too deeply",
  body_too_large: "request too large",
  too_many_events: "too many events in one request",
  malformed_json: "not valid JSON",
  invalid_body: "request body of the wrong shape",
  empty_batch: "empty batch",
  queue_full: "delivery queue full",
  storage_unavailable: "database unavailable",
  expired_pipeline_key: "a replaced pipeline key, after its overlap",
};

async function activity() {
  const source = await api("GET", `/sources/${id}`);
  showDeployment(source);
  fill(hook("last-event"), when(source.last_event_at));
  const counts = Object.entries(source.rejected).sort((a, b) => b[1] - a[1]);
  if (!counts.length) {
    fill(box, el("p", { class: "ok", text: "Nothing refused: every request so far was accepted." }));
    return;
  }
  fill(box,
    table("Refused, by reason", ["Reason", "Count"], counts.map(([reason, n]) =>
      [el("span", {}, el("code", { text: reason }), ` ${REASONS[reason] || ""}`), String(n)])),
    table("The last few", ["When", "Reason", "What"], source.recent_refusals.map((r) =>
      [when(r.at), r.reason, el("span", { class: "wrap", text: r.detail })])));
}

hook("copy-snippet").addEventListener("click", async () => {
  const text = hook("snippet").value;
  try { await navigator.clipboard.writeText(text); say("Snippet copied."); }
  catch { hook("snippet").select(); say("Selected: press Ctrl+C to copy."); }
});

hook("rotate-key").addEventListener("click", async () => {
  if (!confirm("Issue a new pipeline key? Pages with the old snippet keep working for 7 days, then are refused until updated.")) return;
  await api("POST", `/sources/${id}/rotate-key`);
  say("New pipeline key issued.");
  location.reload();
});

hook("issue-server-key").addEventListener("click", async () => {
  if (!confirm("Issue a new server key? The current one stops working at once.")) return;
  const issued = await api("POST", `/sources/${id}/rotate-server-key`);
  fill(hook("new-server-key"),
    el("strong", { text: "Copy it now, it is not shown again: " }), el("code", { text: issued.server_key }));
  hook("server-key").textContent = `${issued.server_key.slice(0, 8)}****${issued.server_key.slice(-4)}`;
});

const consent = hook("consent-form");
consent.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(consent);
  const data = new FormData(consent);
  try {
    await api("PATCH", `/sources/${id}`, {
      consent: { enabled: consent.enabled.checked, default_categories: data.getAll("default_categories") },
      privacy: { ldp: data.get("ldp"), ldp_states: list(data.get("ldp_states")), url_params_to_remove: list(data.get("url_params_to_remove")), gpc: data.get("gpc") },
    });
    say(consent.enabled.checked ? "Saved: consent is enforced." : "Saved: consent is not enforced.");
  } catch (err) {
    showError(consent, err, lastField);
  }
});

const edit = hook("edit-source");
edit.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(edit);
  try {
    await api("PATCH", `/sources/${id}`, {
      name: edit.name.value.trim(), domain: edit.domain.value.trim() || null,
      allowed_origins: list(edit.allowed_origins.value), default_country: edit.default_country.value.trim() || null,
    });
    location.reload();
  } catch (err) {
    showError(edit, err, lastField);
  }
});

hook("delete-source").addEventListener("click", async () => {
  if (!confirm("Delete this source? Pages with its snippet will be refused.")) return;
  const error = hook("delete-error");
  try {
    await api("DELETE", `/sources/${id}`);
    location.assign("/sources");
  } catch (err) {
    error.textContent = err.message;
    error.hidden = false;
  }
});

activity();
setInterval(() => { if (!document.hidden) activity().catch(() => {}); }, 3000);
