// A page with a script of its own is rendered inert: nothing on it can be clicked or submitted
// before that script has bound its controls (a click would be lost, and a form would go to the
// server by itself, as a GET with its fields in the URL). Importing the script waits for the
// one the page loads (a module runs once); once it has run the page comes alive. If it failed,
// the page says so instead of half working.
const main = document.querySelector('[data-hook="page"]');
try {
  await import(`./${main.dataset.script}`);
  main.inert = false;
} catch (error) {
  document.querySelector('[data-hook="status"]').textContent =
    `This page's script failed (${error.message}); reload the page.`;
  throw error;
}
