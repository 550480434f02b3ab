// Add Integration: the form is built from GET /v1/admin/catalog/pinterest.
import { api, el, say } from "./api.js";

const form = document.getElementById("integration-form");
const catalog = await api("GET", "/catalog/pinterest");

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
    inputmode: field.pattern ? "numeric" : null, pattern: field.pattern ? field.pattern.replace(/^\^|\$$/g, "") : null,
    "aria-describedby": `help-${field.key}`,
  }),
  el("p", { class: "help", id: `help-${field.key}`, text: field.help }),
]));

const consent = document.getElementById("consent");
consent.append(el("p", { class: "help", text: "Events reach Pinterest only when the visitor granted all of these (when the source enforces consent)." }),
  ...catalog.consent_categories.map((c) => el("label", { class: "choice" },
    el("input", { type: "checkbox", name: "consent_categories", value: c, checked: c === "advertising" }), c)));

const error = document.getElementById("form-error");

function showError(err) {
  const key = (err.field || "").replace(/^config\./, "");
  const input = document.getElementById(`cfg-${key}`) || form.elements[key];
  error.textContent = err.message;
  error.hidden = false;
  if (input?.focus) { input.setAttribute("aria-invalid", "true"); input.focus(); }
}

function body() {
  const data = new FormData(form);
  return {
    source_id: data.get("source_id"), vendor: data.get("vendor"), name: data.get("name"), enabled: true,
    variant: data.get("variant"),
    // Only what was filled in: the credentials are alternatives (pasted tokens, or an app to connect).
    config: Object.fromEntries(catalog.credentials.map((f) => [f.key, (data.get(f.key) || "").trim()]).filter(([, v]) => v)),
    consent_categories: data.getAll("consent_categories"),
  };
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  const save = document.getElementById("save");
  save.disabled = true;
  try {
    const created = await api("POST", "/integrations", body());
    say("Saved. Checking the credentials with Pinterest…");
    const test = await api("POST", `/integrations/${created.id}/test`);
    sessionStorage.setItem("signal-edge:test", test.message);
    location.assign(`/integrations/${created.id}`);
  } catch (err) {
    showError(err);
  } finally {
    save.disabled = false;
  }
});

// Connect with Pinterest: save with the app's id and secret, then sign in at Pinterest.
document.getElementById("connect").addEventListener("click", async () => {
  error.hidden = true;
  try {
    const created = await api("POST", "/integrations", body());
    location.assign(`/oauth/pinterest/start?integration_id=${encodeURIComponent(created.id)}`);
  } catch (err) {
    showError(err);
  }
});
