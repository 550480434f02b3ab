// Add Integration: the form is built from GET /v1/admin/catalog/pinterest.
import { api, clearErrors, el, say, showError } from "./api.js";

const form = document.getElementById("integration-form");
const catalog = await api("GET", "/catalog/pinterest");
const fieldFor = (field) => field.replace(/^config\./, "").replace(/\[\d+\]$/, "");
let created = null;  // after a save with warnings the form edits what it created

const variants = document.getElementById("variants");
variants.replaceChildren(el("legend", { text: "2. Variant" }), ...catalog.variants.map((v) =>
  el("label", { class: "choice variant" },
    el("input", { type: "radio", name: "variant", value: v.key, checked: v.key === "default" }),
    el("span", {}, el("strong", { text: v.label }), el("span", { class: "help", text: v.description }),
      el("span", { class: "help", text: `Best for: ${v.use_case}.` })))));

document.getElementById("credentials").replaceChildren(...catalog.credentials.flatMap((field) => [
  el("label", { for: `cfg-${field.key}`, text: field.label }),
  el("input", {
    id: `cfg-${field.key}`, name: field.key, required: field.required, placeholder: field.placeholder,
    type: field.type === "secret" ? "password" : "text", autocomplete: "off",
    inputmode: field.pattern ? "numeric" : null, "aria-describedby": `help-${field.key}`,
  }),
  el("p", { class: "help", id: `help-${field.key}`, text: field.help }),
]));

// Consent categories only matter when the source enforces consent: say so when it does not.
const source = form.elements.source_id;
function consentNote() {
  const option = source.selectedOptions[0];
  document.getElementById("consent-note").hidden = option?.dataset.consent !== "off";
  document.getElementById("consent-source-link").href = `/sources/${encodeURIComponent(source.value)}`;
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
      ...Object.fromEntries(catalog.credentials.map((f) => [f.key, (data.get(f.key) || "").trim()]).filter(([, v]) => v)),
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
  const box = document.getElementById("form-warnings");
  box.replaceChildren(
    el("p", {}, el("strong", { text: "Saved, with warnings. " }), "Check these fields, then save again, or ",
      el("a", { href: `/integrations/${created.id}`, text: "open the integration" }), "."),
    el("ul", {}, warnings.map((w) => el("li", { text: w }))));
  box.hidden = false;
  for (const w of warnings) {  // beside the field too
    const key = (w.match(/^config\.(\w+)/) || [])[1];
    const input = key && document.getElementById(`cfg-${key}`);
    if (input) input.after(el("p", { class: "field-warning", "data-for": key, text: w.replace(/^config\.\w+ /, "") }));
  }
  document.getElementById("save").textContent = "Save changes";
  box.focus?.();
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form);
  for (const node of form.querySelectorAll(".field-warning")) node.remove();
  const button = document.getElementById("save");
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
document.getElementById("connect").addEventListener("click", async () => {
  clearErrors(form);
  try {
    created = await save();
    location.assign(`/oauth/pinterest/start?integration_id=${encodeURIComponent(created.id)}`);
  } catch (err) {
    showError(form, err, fieldFor);
  }
});
