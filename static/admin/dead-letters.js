// Dead letters of an integration (or of a deleted one): list, replay, export.
import { api, el, say, when } from "./api.js";

export async function deadLetters(box, into) {
  const id = box.dataset.integration;
  const page = await api("GET", `/integrations/${id}/dead-letters?limit=100`);
  if (!page.data.length) { box.replaceChildren(el("p", { class: "help", text: "None: nothing has failed for good." })); return; }
  const rows = page.data.map((d) => el("tr", {},
    el("td", {}, el("input", { type: "checkbox", value: String(d.id), "aria-label": `Select ${d.event_id}` })),
    el("td", {}, el("code", { text: d.event_id || "" })), el("td", { text: d.reason }),
    el("td", { text: String(d.attempts) }), el("td", { text: when(d.dead_at) })));
  const replay = async (ids) => {
    const body = { ...(ids ? { ids } : {}), ...(into ? { into: into.value } : {}) };
    const done = await api("POST", `/integrations/${id}/dead-letters/replay`, Object.keys(body).length ? body : undefined);
    say(`${done.replayed} events queued again, with their original event ids.`);
    deadLetters(box, into);
  };
  box.replaceChildren(
    el("div", { class: "table" }, el("table", {},
      el("thead", {}, el("tr", {}, ...["", "Event id", "Reason", "Attempts", "When"].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows))),
    el("button", { type: "button", class: "secondary", onclick: () => replay([...box.querySelectorAll("input:checked")].map((c) => Number(c.value))) }, "Replay selected"),
    el("button", { type: "button", onclick: () => replay(null) }, "Replay all"),
    el("a", { class: "button secondary", href: `/v1/admin/integrations/${id}/dead-letters/export`, download: "" }, "Export (JSON Lines)"));
}

// The page of a deleted integration: replay goes into the integration chosen above the list.
const into = document.getElementById("replay-into");
if (into) deadLetters(document.getElementById("dead-letters"), into);
