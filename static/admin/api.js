// Calls to the management API from the UI (session cookie + the page's CSRF token), and the
// small helpers every page uses to find its elements, build DOM and show errors one way.
const csrf = document.querySelector('meta[name="csrf-token"]')?.content;

// The elements a script uses carry data-hook="name" in the page's template
// (collector/admin/templates/): found by that name only, and loudly missing.
export function hook(name) {
  const node = hookIfAny(name);
  if (!node) throw new Error(`this page has no element with data-hook="${name}" (its template and script disagree)`);
  return node;
}

export function hookIfAny(name) { return document.querySelector(`[data-hook="${name}"]`); }

// What the server rendered for the page's script: <main data-hook="page" data-...>.
export const pageData = hook("page").dataset;

export class ApiError extends Error {
  constructor(message, status, field) { super(message); this.status = status; this.field = field; }
}

export async function api(method, path, body) {
  const response = await fetch(`/v1/admin${path}`, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf || "" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
  const data = response.status === 204 ? null : await response.json();
  if (!response.ok) throw new ApiError(data?.error?.message || `HTTP ${response.status}`, response.status, data?.error?.field);
  return data;
}

// Success and progress: a short note at the bottom of the screen. (Errors go beside their field.)
export function say(text) {
  const status = hook("status");
  status.textContent = text;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { status.textContent = ""; }, 6000);
}

// Build DOM without innerHTML: every text goes in through textContent; null children are left out.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value == null) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) if (child != null) node.append(child);
  return node;
}

// A box's new content. (DOM's own replaceChildren writes a null child as the text "null".)
export function fill(box, ...children) {
  box.replaceChildren(...children.flat().filter((child) => child != null));
}

export function badge(status) { return el("span", { class: `badge ${status}`, text: status }); }

export function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

// One time format everywhere: local time with the zone; the ISO time on hover.
export function when(iso) {
  if (!iso) return el("span", { text: "never" });
  const at = new Date(iso);
  return el("time", { datetime: iso, title: iso, text: at.toLocaleString(undefined, { timeZoneName: "short" }) });
}

// A table that becomes labelled cards on a phone: each cell carries its column's name.
export function table(caption, headers, rows) {
  return el("div", { class: "table" }, el("table", { class: "cards" },
    caption ? el("caption", { text: caption }) : null,
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((cell, i) =>
      el("td", { "data-label": headers[i] }, typeof cell === "string" ? document.createTextNode(cell) : cell)))))));
}

// Errors, shown one way: beside the field they are about (else at the top of the form), and
// kept until the form is sent again.
export function clearErrors(form) {
  for (const node of form.querySelectorAll(".field-error[data-for]")) node.remove();
  for (const node of form.querySelectorAll("[aria-invalid]")) {
    node.removeAttribute("aria-invalid");
    node.setAttribute("aria-describedby", (node.getAttribute("aria-describedby") || "").replace(/\s*err-\S+/g, "").trim());
  }
  const top = form.querySelector(".field-error:not([data-for])");
  if (top) { top.hidden = true; top.textContent = ""; }
}

// The field's own label, without its help ("Ad Account ID"), to say what an error is about.
function labelOf(input) {
  const label = input?.labels?.[0];
  if (!label) return null;
  const copy = label.cloneNode(true);
  for (const help of copy.querySelectorAll(".help")) help.remove();
  return copy.textContent.trim() || null;
}

// The API names the field as a path ("config.ad_account_id: is required: ..."): a person reads
// the label they see instead ("Ad Account ID is required: ...").
// (`verbatim`: the message is about what a person pasted, in its own words.)
function plainMessage(err, input) {
  const prefix = `${err.field}: `;
  if (err.verbatim || !err.field || !err.message.startsWith(prefix)) return err.message;
  const rest = err.message.slice(prefix.length);
  const label = labelOf(input) || err.field.split(".").pop().replaceAll("_", " ");
  return /^[a-z]/.test(rest) ? `${label} ${rest}` : rest;
}

export function showError(form, err, fieldFor = (field) => field) {
  const name = err.field ? fieldFor(err.field) : null;
  const input = name ? (form.querySelector(`[data-field="${CSS.escape(err.field)}"]`) || form.elements[name]) : null;
  const target = input instanceof RadioNodeList ? input[0] : input;
  const message = plainMessage(err, target);
  if (target && target.after) {
    const id = `err-${Math.random().toString(36).slice(2, 8)}`;
    const note = el("p", { class: "field-error", id, "data-for": name, role: "alert", text: message });
    (target.closest("label.choice") || target).after(note);
    target.setAttribute("aria-invalid", "true");
    target.setAttribute("aria-describedby", `${target.getAttribute("aria-describedby") || ""} ${id}`.trim());
    target.focus();
    return;
  }
  const top = form.querySelector(".field-error:not([data-for])");
  if (top) { top.textContent = message; top.hidden = false; top.focus?.(); } else say(message);
}

export function list(text) { return text.split(/[\n,]/).map((s) => s.trim()).filter(Boolean); }
