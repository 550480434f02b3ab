// The page of a deleted integration: its dead letters, replayed into the integration chosen above
// the list (after a warning and a question when it belongs to another source), or exported.
import { hook, pageData } from "./api.js";
import { deadLetters, otherSource } from "./dead-letters.js";

const into = hook("replay-into");
const warn = () => { hook("other-source").hidden = !otherSource(pageData.source, into); };
into.addEventListener("change", warn);
warn();
deadLetters(hook("dead-letters"), pageData.integration, pageData.source, into);
