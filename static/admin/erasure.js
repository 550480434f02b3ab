// The Erasure page: erase one person through POST /v1/admin/erasure, and say what went.
import { api, clearErrors, el, hook, showError } from "./api.js";

const form = hook("erasure-form");
const result = hook("erasure-result");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form);
  const body = {};
  for (const name of ["email", "phone", "country", "user_id", "anonymous_id"]) {
    const value = form.elements[name].value.trim();
    if (value) body[name] = value;
  }
  const days = form.elements.suppress_days.value.trim();
  if (days) body.suppress_days = Number(days);
  if (!confirm("Erase everything signal-edge holds about this person? This cannot be undone.")) return;
  try {
    const done = await api("POST", "/erasure", body);
    form.reset();
    result.replaceChildren(el("section", { class: "card", "aria-labelledby": "erased-h" },
      el("h2", { id: "erased-h", text: "Erased" }),
      el("p", { class: "ok", role: "status", text: done.message }),
      el("p", { class: "help", text: `Recorded in the audit log as ${done.id}, identified by ${done.identified_by.join(", ")}.` })));
  } catch (err) {
    showError(form, err);
  }
});
