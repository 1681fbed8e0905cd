// The run's DAG: node colours follow their status; a click (or Enter) opens the node's panel.
import { openPanel } from "./panel.js";

const svg = document.getElementById("dag");
// The DAG shrinks to fit its box (console.css) while its labels stay legible; past that, the box
// scrolls. Set from script: the page's Content-Security-Policy forbids inline styles.
const LEGIBLE_SCALE = 0.75;
svg.style.minWidth = `${Math.round(svg.width.baseVal.value * LEGIBLE_SCALE)}px`;
const nodes = new Map();
for (const element of svg.querySelectorAll("g.node")) nodes.set(element.dataset.nodeId, element);

export function setNodeStatus(nodeId, status) {
  const element = nodes.get(nodeId);
  if (!element) return;
  element.setAttribute("class", `node s-${status}`);
  element.querySelector("title").textContent = `${element.dataset.key}: ${status}`;
}

function chosen(event) {
  const element = event.target.closest?.("g.node");
  if (element) openPanel(element.dataset.nodeId);
}

svg.addEventListener("click", chosen);
svg.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") chosen(event);
});
// When the DAG answered clicks, in ms since navigation: what bench.console reads.
svg.dataset.ready = String(Math.round(performance.now()));
