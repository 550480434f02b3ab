// Integration page: test button, pause, match quality, dead letters and replay, edit and disable.
import { api, el, say } from "./api.js";
import { deadLetters } from "./dead-letters.js";

const id = document.getElementById("send-test").dataset.integration;
const result = document.getElementById("test-result");
const saved = sessionStorage.getItem("signal-edge:test");
if (saved) { result.textContent = saved; sessionStorage.removeItem("signal-edge:test"); }

document.getElementById("send-test").addEventListener("click", async (event) => {
  event.target.disabled = true;
  result.textContent = "Sending a test event to Pinterest…";
  try {
    const test = await api("POST", `/integrations/${id}/test`);
    result.textContent = test.message;
    result.className = test.ok ? "" : "problem";
  } catch (err) {
    result.textContent = err.message;
  } finally {
    event.target.disabled = false;
  }
});

async function matchQuality() {
  const box = document.getElementById("match-quality");
  const q = await api("GET", `/integrations/${id}/match-quality?limit=100`);
  if (!q.events) { box.replaceChildren(el("p", { class: "help", text: "No delivered events yet." })); return; }
  const names = { click_id: "Click id (epik)", em: "Email", ph: "Phone", external_id: "External id", ip_and_user_agent: "IP + User-Agent" };
  box.replaceChildren(
    el("p", { class: "help", text: `Share of the last ${q.events} delivered events carrying each signal:` }),
    ...q.signals.map((s) => el("div", { class: "meter" },
      el("span", { id: `signal-${s.signal}`, text: names[s.signal] }),
      el("progress", { max: "1", value: String(s.share), "aria-labelledby": `signal-${s.signal}` }),
      el("span", { text: `${Math.round(s.share * 100)}%` }))),
    q.hint ? el("p", { class: "problem", text: `Weakest: ${names[q.weakest]}. ${q.hint}` }) : null);
}

document.getElementById("mint-conversion")?.addEventListener("click", async (event) => {
  event.target.disabled = true;
  try {
    await api("POST", `/integrations/${id}/conversion-token`);
    say("A conversion token was minted and saved.");
    location.reload();
  } catch (err) {
    say(err.message);
    event.target.disabled = false;
  }
});

for (const node of document.querySelectorAll("time[datetime]")) {  // local time with the zone; ISO on hover
  const at = new Date(node.getAttribute("datetime"));
  node.title = node.getAttribute("datetime");
  node.textContent = at.toLocaleString(undefined, { timeZoneName: "short" });
}

document.getElementById("edit-integration").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const config = { ad_account_id: form.ad_account_id.value.trim(), test_mode: form.test_mode.checked };
  for (const key of ["access_token", "conversion_token", "app_id", "app_secret", "refresh_token"]) {
    if (form[key].value.trim()) config[key] = form[key].value.trim();
  }
  try {
    await api("PATCH", `/integrations/${id}`, { name: form.name.value, variant: form.variant.value, enabled: form.enabled.checked, config });
    say("Saved.");
    location.reload();
  } catch (err) {
    say(err.message);
  }
});

document.getElementById("pause").addEventListener("click", async (event) => {
  const paused = event.target.dataset.paused !== "true";
  try {
    await api("PATCH", `/integrations/${id}`, { paused });
    location.reload();
  } catch (err) {
    say(err.message);
  }
});

matchQuality();
deadLetters(document.getElementById("dead-letters"));
