// A source's page, "Serve it from your own site": the deployment check (how this source's
// requests arrive, what browsers do with its cookies, the fix), kept current by the page's
// refresh, and the form that changes the names the edge answers on.
import { api, clearErrors, el, fill, hook, pageData, say, showError, table, when } from "./api.js";

const box = hook("deployment");
const form = hook("serving-form");
const id = pageData.source;

export function showDeployment(source) {
  const check = source.deployment;
  const lines = [
    el("p", { class: check.warning ? "problem" : check.status === "same-origin" ? "ok" : "help", id: "deployment-status" },
      el("strong", { text: check.warning ? "Warning: requests arrive cross-site. " : `Requests arrive ${check.status}. ` }),
      check.summary),
  ];
  if (check.safari) lines.push(el("p", {}, el("strong", { text: "Safari: " }), check.safari));
  if (check.chrome) lines.push(el("p", {}, el("strong", { text: "Chrome: " }), check.chrome));
  if (check.fix) lines.push(el("p", {}, el("strong", { text: "Fix: " }), check.fix));
  if (check.arrivals.length) {
    lines.push(table("How requests arrived (this node)", ["Arrival", "Requests", "Last", "From", "To"],
      check.arrivals.map((a) => [a.arrival, String(a.requests), when(a.last_at), a.origin || "", a.host || ""])));
  }
  fill(box, lines);
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form);
  try {
    await api("PATCH", `/sources/${id}`, {
      serving: { prefix: form.prefix.value.trim(), script: form.script.value.trim(), endpoint: form.endpoint.value.trim() },
      pintrk_bridge: form.pintrk_bridge.checked,
    });
    say("Saved: the edge answers on these paths now.");
    location.reload();
  } catch (err) {
    showError(form, err, (field) => field.split(".").pop());
  }
});
