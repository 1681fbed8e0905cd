// A node's panel, fetched as server-rendered (sanitised) HTML; its URL goes in the address bar,
// so a link to it can be shared and the back button closes it.
import { url } from "./http.js";
import { localize } from "./time.js";

const run = document.getElementById("run");
const panel = document.getElementById("panel");
let shown = panel.querySelector(".node-panel")?.dataset.nodeId ?? null;

function say(text) {
  const note = document.createElement("p");
  note.className = "error";
  note.textContent = text;
  panel.replaceChildren(note);
  shown = null;
}

async function load(nodeId) {
  let response;
  try {
    // Not followed: a session that ended is answered with a redirect to the sign-in page, which
    // would be drawn inside the panel, and lead back to the bare panel once signed in.
    response = await fetch(url(`/ui/runs/${run.dataset.runId}/nodes/${nodeId}/panel`), {
      credentials: "same-origin",
      redirect: "manual",
    });
  } catch {
    say("The node could not be loaded: the server could not be reached.");
    return;
  }
  if (response.type === "opaqueredirect") {
    say("The session ended: sign in again to see this node.");
    return;
  }
  if (!response.ok) {
    say(`The node could not be loaded: the server answered ${response.status}.`);
    return;
  }
  // Parsed inert (a DOMParser never runs what it parses), on top of the server's sanitising.
  const parsed = new DOMParser().parseFromString(await response.text(), "text/html");
  panel.replaceChildren(...parsed.body.childNodes);
  localize(panel);
  shown = nodeId;
}

export async function openPanel(nodeId, { push = true } = {}) {
  await load(nodeId);
  if (push) history.pushState({ node: nodeId }, "", `?node=${nodeId}`);
}

export function refreshPanel(nodeId) {
  if (nodeId && nodeId === shown) load(nodeId);
}

window.addEventListener("popstate", () => {
  const nodeId = new URLSearchParams(location.search).get("node");
  if (nodeId) load(nodeId);
  else {
    panel.replaceChildren();
    shown = null;
  }
});
