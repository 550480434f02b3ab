// Sources: create, copy the snippet, rotate the pipeline key.
import { api, say } from "./api.js";

document.getElementById("new-source")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const body = { name: form.name.value.trim() };
  if (form.domain.value.trim()) body.domain = form.domain.value.trim();
  if (form.default_country.value.trim()) body.default_country = form.default_country.value.trim();
  try {
    const source = await api("POST", "/sources", body);
    location.assign(`/sources/${source.id}`);
  } catch (err) {
    say(err.message);
  }
});

document.getElementById("copy-snippet")?.addEventListener("click", async () => {
  const text = document.getElementById("snippet").value;
  try { await navigator.clipboard.writeText(text); say("Snippet copied."); }
  catch { document.getElementById("snippet").select(); say("Select-all done: press Ctrl+C to copy."); }
});

document.getElementById("rotate-key")?.addEventListener("click", async (event) => {
  if (!confirm("Issue a new pipeline key? Pages with the old snippet will be refused until updated.")) return;
  await api("POST", `/sources/${event.target.dataset.source}/rotate-key`);
  say("New pipeline key issued.");
  location.reload();
});
