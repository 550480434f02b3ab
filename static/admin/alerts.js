// The Alerts page: open incidents, destinations (add, test, enable, delete) and the history.
import { api, clearErrors, el, hook, say, showError, table, when } from "./api.js";

const incidents = hook("incidents");
const destinations = hook("destinations");
const history = hook("history");
const form = hook("destination-form");

async function showIncidents() {
  const page = await api("GET", "/alerts/incidents");
  incidents.replaceChildren(page.data.length
    ? table(null, ["Since", "Rule", "Subject", "What"], page.data.map((i) => [when(i.opened_at), i.rule, i.subject, i.message]))
    : el("p", { class: "ok", text: "None: nothing is wrong now." }));
}

async function showDestinations() {
  const page = await api("GET", "/alerts/destinations");
  if (!page.data.length) {
    destinations.replaceChildren(el("p", { class: "help", text: "None yet: add one below, or alerts go only to the log." }));
    return;
  }
  destinations.replaceChildren(table(null, ["Name", "Kind", "URL", "Enabled", ""], page.data.map((d) => [
    d.name, d.kind, el("code", { text: d.url }),
    el("input", { type: "checkbox", checked: d.enabled, "aria-label": `Send alerts to ${d.name}`, onchange: async (e) => {
      await api("PATCH", `/alerts/destinations/${d.id}`, { enabled: e.target.checked });
      say(`${d.name} ${e.target.checked ? "receives" : "no longer receives"} alerts.`);
    } }),
    el("span", {},
      el("button", { type: "button", class: "secondary", onclick: async () => {
        say(`Sending a test alert to ${d.name}…`);
        const outcome = await api("POST", `/alerts/destinations/${d.id}/test`);
        say(outcome.message);
        showHistory();
      } }, "Send test alert"), " ",
      el("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm(`Delete the destination ${d.name}?`)) return;
        await api("DELETE", `/alerts/destinations/${d.id}`);
        showDestinations();
      } }, "Delete")),
  ])));
}

async function showHistory() {
  const page = await api("GET", "/alerts/history?limit=50");
  history.replaceChildren(page.data.length
    ? table(null, ["When", "State", "Rule", "What", "Delivered"], page.data.map((a) => [
      when(a.at), a.state, a.rule, a.message,
      a.deliveries.map((d) => `${d.status}${d.attempts > 1 ? ` after ${d.attempts} attempts` : ""}${d.error ? `: ${d.error}` : ""}`).join("; ") || "no destination"]))
    : el("p", { class: "help", text: "No alert yet." }));
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form);
  try {
    await api("POST", "/alerts/destinations", { name: form.elements.name.value.trim(), kind: form.elements.kind.value,
      url: form.elements.url.value.trim() });
    form.reset();
    say("Destination added: send it a test alert to check it.");
    showDestinations();
  } catch (err) {
    showError(form, err);
  }
});

async function refresh() {
  await Promise.all([showIncidents(), showHistory()]);
}
await Promise.all([refresh(), showDestinations()]);
setInterval(refresh, 5000);
