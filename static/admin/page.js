// Every page: server-rendered times in the browser's own zone (the ISO time stays on hover).
for (const node of document.querySelectorAll("time[datetime]")) {
  node.title = node.getAttribute("datetime");
  node.textContent = new Date(node.getAttribute("datetime")).toLocaleString(undefined, { timeZoneName: "short" });
}
