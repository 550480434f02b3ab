// Dead letters of an integration (or of a deleted one): list, replay, export.
import { api, el, fill, plural, say, table, when } from "./api.js";

// `source`: the source the events came from; `into`: the <select> of where to replay them
// (a deleted integration's page), else they go back into the integration itself.
export async function deadLetters(box, id, source = null, into = null) {
  const page = await api("GET", `/integrations/${id}/dead-letters?limit=100`);
  if (!page.data.length) { fill(box, el("p", { class: "help", text: "None: nothing has failed for good." })); return; }
  const replaySelected = el("button", { type: "button", class: "secondary", disabled: true }, "Replay selected");
  const boxes = page.data.map((d) => el("input", {
    type: "checkbox", value: String(d.id), disabled: !d.replayable, "aria-label": `Select ${d.event_id || d.id}`,
    onchange: () => { replaySelected.disabled = !box.querySelector("input:checked"); },
  }));
  const replay = async (ids) => {
    const elsewhere = into && otherSource(source, into);
    if (elsewhere && !confirm("These events came from another source than the integration you chose: replayed there, "
                              + "one site's visitors go to another site's Pinterest ad account. Replay them there?")) return;
    const body = { ...(ids ? { ids } : {}), ...(into ? { into: into.value } : {}), ...(elsewhere ? { confirm_other_source: true } : {}) };
    const done = await api("POST", `/integrations/${id}/dead-letters/replay`, Object.keys(body).length ? body : undefined);
    say(`${plural(done.replayed, "event")} queued again, with ${done.replayed === 1 ? "its" : "their"} original event id${done.replayed === 1 ? "" : "s"}.`);
    deadLetters(box, id, source, into);
  };
  replaySelected.addEventListener("click", () => replay([...box.querySelectorAll("input:checked")].map((c) => Number(c.value))));
  const tooOld = page.data.filter((d) => !d.replayable).length;
  fill(box,
    el("p", { class: "help", text: `${plural(page.data.length, "event")}${page.has_more ? " (the first 100)" : ""} failed for good.` }),
    table(null, ["", "Event id", "Reason", "Attempts", "When"], page.data.map((d, i) => [
      boxes[i], el("code", { text: d.event_id || "" }),
      el("span", {}, d.reason, d.replayable ? null : el("span", { class: "warning-text", text: ` (${d.not_replayable_reason})` })),
      String(d.attempts), when(d.dead_at)])),
    tooOld ? el("p", { class: "help", text: `${plural(tooOld, "event")} over 7 days old cannot be replayed (Pinterest refuses them): export them instead.` }) : null,
    replaySelected,
    el("button", { type: "button", disabled: tooOld === page.data.length, onclick: () => replay(null) }, "Replay all"),
    el("a", { class: "button secondary", href: `/v1/admin/integrations/${id}/dead-letters/export`, download: "" }, "Export (JSON Lines)"));
}

// Another source's integration sends to another site's ad account: warned beside the choice, confirmed on replay.
export function otherSource(source, into) {
  return into.selectedOptions[0]?.dataset.source !== source;
}

