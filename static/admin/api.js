// Calls to the management API from the UI: session cookie + the page's CSRF token.
const csrf = document.querySelector('meta[name="csrf-token"]')?.content;

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
  if (response.status === 401) location.assign(`/login?next=${encodeURIComponent(location.pathname)}`);
  const data = response.status === 204 ? null : await response.json();
  if (!response.ok) throw new ApiError(data?.error?.message || `HTTP ${response.status}`, response.status, data?.error?.field);
  return data;
}

export function say(text) {
  const status = document.getElementById("status");
  status.textContent = text;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { status.textContent = ""; }, 6000);
}

// Build DOM without innerHTML: every text goes in through textContent.
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

export function badge(status) { return el("span", { class: `badge ${status}`, text: status }); }

export function when(iso) { return iso ? new Date(iso).toLocaleString() : "never"; }
