// The sources list: create a source.
import { api, clearErrors, hook, showError } from "./api.js";

const form = hook("new-source");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form);
  const body = { name: form.name.value.trim() };
  if (form.domain.value.trim()) body.domain = form.domain.value.trim();
  if (form.default_country.value.trim()) body.default_country = form.default_country.value.trim();
  try {
    const source = await api("POST", "/sources", body);
    location.assign(`/sources/${source.id}`);
  } catch (err) {
    showError(form, err);
  }
});
