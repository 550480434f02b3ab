// An integration's page: test every credential, pause, match quality, the event mapping and its
// overrides, "what would this event become?", dead letters, edit and delete.
import { api, clearErrors, el, fill, hook, hookIfAny, pageData, say, showError, table } from "./api.js";
import { deadLetters } from "./dead-letters.js";
import { eventQuality } from "./event-quality.js";

const id = pageData.integration;
const result = hook("test-result");
const LABELS = { app: "App id, secret and refresh token", conversion_token: "Conversion access token", access_token: "API access token" };
const fieldFor = (field) => field.replace(/^config\./, "").replace(/\[\d+\]$/, "");

function showTest(test) {
  fill(result,
    el("p", { class: test.ok ? "ok" : "problem", text: test.message }),
    test.checks?.length ? el("ul", { class: "checks" }, test.checks.map((c) => el("li", { class: c.ok ? "ok" : "problem" },
      el("strong", { text: `${c.ok ? "✓" : "✗"} ${LABELS[c.credential]}: ` }), c.message))) : null);
}

const saved = sessionStorage.getItem("signal-edge:test");
if (saved) { sessionStorage.removeItem("signal-edge:test"); try { showTest(JSON.parse(saved)); } catch { /* an old note */ } }

// The health above changes with the result: the page reloads, and shows the result again.
hook("send-test").addEventListener("click", async (event) => {
  event.target.disabled = true;
  result.replaceChildren(el("p", { text: "Sending a test event with each credential…" }));
  try {
    sessionStorage.setItem("signal-edge:test", JSON.stringify(await api("POST", `/integrations/${id}/test`)));
    location.reload();
  } catch (err) {
    result.replaceChildren(el("p", { class: "problem", text: err.message }));
    event.target.disabled = false;
  }
});

const SIGNAL_NAMES = { click_id: "Click id (epik)", em: "Email", ph: "Phone", external_id: "External id", ip_and_user_agent: "IP + User-Agent" };

async function matchQuality() {
  const box = hook("match-quality");
  const q = await api("GET", `/integrations/${id}/match-quality?limit=100`);
  if (!q.events) { fill(box, el("p", { class: "help", text: "No delivered events yet." })); return; }
  fill(box,
    el("p", { class: "help", text: `Share of the last ${q.events} delivered events carrying each signal:` }),
    ...q.signals.map((s) => el("div", { class: "meter" },
      el("span", { id: `signal-${s.signal}`, text: SIGNAL_NAMES[s.signal] }),
      el("progress", { max: "1", value: String(s.share), "aria-labelledby": `signal-${s.signal}` }),
      el("span", { text: `${Math.round(s.share * 100)}%` }))),
    q.advice.length
      ? el("div", { class: "advice" }, el("p", { text: "To match more conversions:" }),
        el("ul", {}, q.advice.map((a) => el("li", {}, el("strong", { text: `${SIGNAL_NAMES[a.signal]}: ` }), a.hint))))
      : el("p", { class: "ok", text: "Every signal is carried by at least half of the events." }));
}

// --- the event mapping ---------------------------------------------------------------------
const catalog = await api("GET", "/catalog/pinterest");
const overrides = hook("overrides");
const ORIGINS = { standard: "standard table", variant: "this variant", override: "your override" };

function overrideRow(name = "", event = "custom") {
  const n = overrides.children.length + 1;
  const row = el("div", { class: "override" },
    el("label", { for: `override-name-${n}`, text: "Event name" }),
    el("input", { id: `override-name-${n}`, name: "override_name", value: name, maxlength: "200" }),
    el("label", { for: `override-event-${n}`, text: "Pinterest event" }),
    el("select", { id: `override-event-${n}`, name: "override_event" },
      catalog.event_names.map((e) => el("option", { value: e, selected: e === event, text: e }))),
    el("button", { type: "button", class: "secondary", "aria-label": `Remove override ${n}`, onclick: () => row.remove() }, "Remove"));
  overrides.append(row);
  return row;
}

async function mapping() {
  const m = await api("GET", `/integrations/${id}/mapping`);
  const priority = m.priority_events === null ? "every event (this variant sends each one at once)"
    : m.priority_events.join(", ");
  fill(hook("mapping"),
    el("p", { id: "event-names-in-effect" }, el("strong", { text: `Event names: ${m.event_names}. ` }), m.event_names_help),
    el("p", {}, el("strong", { text: "Priority events: " }), priority,
      el("span", { class: "help", text: " (sent without waiting for a full batch, first when the rate limit binds)" })),
    table("In effect", ["Your event", "Pinterest event", "From", "Priority"], [...m.rows, m.otherwise].map((r) =>
      [r.incoming, el("code", { text: r.pinterest_event }), ORIGINS[r.origin], r.priority ? "yes" : "no"])));
  overrides.replaceChildren();
  for (const [name, event] of Object.entries(m.event_map)) overrideRow(name, event);
}

hook("add-override").addEventListener("click", () => overrideRow().querySelector("input").focus());

const mappingForm = hook("mapping-form");
mappingForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(mappingForm);
  const event_map = {};
  for (const row of overrides.children) {
    const input = row.querySelector("input");
    const name = input.value.trim();
    input.dataset.field = `config.event_map.${name}`;  // where an error about this name goes
    if (name) event_map[name] = row.querySelector("select").value;
  }
  try {
    await api("PATCH", `/integrations/${id}`, { config: {
      event_map, event_names: mappingForm.event_names.value, send_custom_event_name: mappingForm.send_custom_event_name.checked } });
    say("Mapping saved.");
    await mapping();
  } catch (err) {
    showError(mappingForm, err);
  }
});

// --- what would this event become? ----------------------------------------------------------
const previewForm = hook("preview-form");
previewForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(previewForm);
  const out = hook("preview-result");
  fill(out);  // an answer stands for the event above it, or for none
  let body;
  try { body = JSON.parse(previewForm.event.value); } catch (err) {
    showError(previewForm, { field: "event", message: `Not valid JSON: ${err.message}` });
    return;
  }
  try {
    const p = await api("POST", `/integrations/${id}/preview`, body);
    const block = (title, value) => [el("h3", { text: title }), el("pre", { tabindex: "0", text: JSON.stringify(value, null, 2) })];
    fill(out,
      p.sent ? el("p", {}, "Pinterest would receive ", el("code", { text: p.pinterest_event }),
        ` (event names: ${p.event_names}).`)
        : el("p", { class: "problem", text: p.reason }),
      ...p.warnings.map((w) => el("p", { class: "warning-text", text: `Left out: ${w}` })),
      ...p.schema_errors.map((w) => el("p", { class: "problem", text: `Pinterest's schema: ${w}` })),
      ...(p.payload ? block("Pinterest payload", p.payload) : []),
      ...block("Queued event (PII hashed)", p.incoming));
  } catch (err) {
    showError(previewForm, { message: err.message, field: "event", verbatim: true });
  }
});

// --- edit, pause, delete, mint --------------------------------------------------------------
// The server tells the reloaded page what was minted (a notice kept for this session).
hookIfAny("mint-conversion")?.addEventListener("click", async (event) => {
  event.target.disabled = true;
  try {
    await api("POST", `/integrations/${id}/conversion-token`);
    location.reload();
  } catch (err) {
    say(err.message);
    event.target.disabled = false;
  }
});

const edit = hook("edit-integration");
edit.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(edit);
  const config = { ad_account_id: edit.ad_account_id.value.trim(), test_mode: edit.test_mode.checked };
  for (const key of ["access_token", "conversion_token", "app_id", "app_secret", "refresh_token"]) {
    if (edit[key].value.trim()) config[key] = edit[key].value.trim();
  }
  try {
    await api("PATCH", `/integrations/${id}`, {
      name: edit.name.value, variant: edit.variant.value, enabled: edit.enabled.checked, config,
      consent_categories: new FormData(edit).getAll("consent_categories"),
    });
    say("Saved.");
    location.reload();
  } catch (err) {
    showError(edit, err, fieldFor);
  }
});

hookIfAny("pause")?.addEventListener("click", async (event) => {
  const paused = event.target.dataset.paused !== "true";
  try {
    await api("PATCH", `/integrations/${id}`, { paused });
    location.reload();
  } catch (err) {
    say(err.message);
  }
});

hook("delete-integration").addEventListener("click", async () => {
  if (!confirm("Delete this integration? Its queued events become dead letters.")) return;
  await api("DELETE", `/integrations/${id}`);
  location.assign("/integrations");
});

matchQuality();
eventQuality(hook("event-quality"), hook("eqs-refresh"), id);
mapping();
deadLetters(hook("dead-letters"), id);
