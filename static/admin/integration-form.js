// Add Integration: the form is rendered from GET /v1/admin/catalog/pinterest (its credential fields
// in two groups: pasted tokens, or an app to connect with Pinterest); this sends it.
import { api, clearErrors, el, hook, say, showError } from "./api.js";

const form = hook("integration-form");
const fieldFor = (field) => field.replace(/^config\./, "").replace(/\[\d+\]$/, "");
const credentials = [...form.querySelectorAll("[data-credential]")];
let created = null;  // after a save with warnings the form edits what it created

// Consent categories only matter when the source enforces consent: say so when it does not.
const source = hook("source");
function consentNote() {
  const option = source.selectedOptions[0];
  hook("consent-note").hidden = option?.dataset.consent !== "off";
  hook("consent-source-link").href = `/sources/${encodeURIComponent(source.value)}`;
}
source.addEventListener("change", consentNote);
consentNote();

function body() {
  const data = new FormData(form);
  return {
    source_id: data.get("source_id"), vendor: data.get("vendor"), name: data.get("name"), enabled: true,
    variant: data.get("variant"),
    // Only what was filled in: the credentials are alternatives (pasted tokens, or an app to connect).
    config: {
      ...Object.fromEntries(credentials.map((input) => [input.name, input.value.trim()]).filter(([, v]) => v)),
      test_mode: form.test_mode.checked,
    },
    consent_categories: data.getAll("consent_categories"),
  };
}

async function save() {
  const values = body();
  if (!created) return api("POST", "/integrations", values);
  const { source_id, vendor, ...changes } = values;
  return api("PATCH", `/integrations/${created.id}`, changes);
}

function showWarnings(warnings) {
  const box = hook("form-warnings");
  box.replaceChildren(
    el("p", {}, el("strong", { text: "Saved, with warnings. " }), "Check these fields, then save again, or ",
      el("a", { href: `/integrations/${created.id}`, text: "open the integration" }), "."),
    el("ul", {}, warnings.map((w) => el("li", { text: w }))));
  box.hidden = false;
  for (const w of warnings) {  // beside the field too
    const key = (w.match(/^config\.(\w+)/) || [])[1];
    const input = key && form.elements[key];
    if (input?.after) input.after(el("p", { class: "field-warning", "data-for": key, text: w.replace(/^config\.\w+ /, "") }));
  }
  hook("save").textContent = "Save changes";
  box.focus?.();
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form);
  for (const node of form.querySelectorAll(".field-warning")) node.remove();
  const button = hook("save");
  button.disabled = true;
  try {
    created = await save();
    say("Saved. Checking the credentials with Pinterest…");
    const test = await api("POST", `/integrations/${created.id}/test`);
    sessionStorage.setItem("signal-edge:test", JSON.stringify(test));
    if (created.warnings.length) showWarnings(created.warnings);
    else location.assign(`/integrations/${created.id}`);
  } catch (err) {
    showError(form, err, fieldFor);
  } finally {
    button.disabled = false;
  }
});

// Connect with Pinterest: save with the app's id and secret, then sign in at Pinterest.
hook("connect").addEventListener("click", async () => {
  clearErrors(form);
  try {
    created = await save();
    location.assign(`/oauth/pinterest/start?integration_id=${encodeURIComponent(created.id)}`);
  } catch (err) {
    showError(form, err, fieldFor);
  }
});
