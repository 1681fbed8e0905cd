// The run page: its live stream moves the DAG's colours, the figures and the timeline; cancel
// and resume show only while the run's status allows them, and ask for confirmation first.
import { setNodeStatus } from "./dag.js";
import { getJson, postJson, problem } from "./http.js";
import { follow, showStateIn } from "./live.js";
import { refreshPanel } from "./panel.js";
import { FINAL_RUN_EVENTS, NODE_STATUS, RUN_STATUS, statusBadge } from "./status.js";
import { appendEvent } from "./timeline.js";
import { timeElement } from "./time.js";

const run = document.getElementById("run");
const runId = run.dataset.runId;
let figuresQueued = false;
const showState = showStateIn(document.getElementById("live-state"));

function setText(id, text) {
  const element = document.getElementById(id);
  if (element) element.textContent = text;
}

function setTime(id, iso) {
  const element = document.getElementById(id);
  if (element && iso) element.replaceChildren(timeElement(iso));
}

async function refreshFigures() {
  const result = await getJson(`/runs/${runId}`);
  if (!result.ok) return;
  const data = result.data;
  const counts = Object.entries(data.node_counts);
  const done = counts
    .filter(([s]) => ["succeeded", "failed", "cancelled", "skipped"].includes(s))
    .reduce((sum, [, n]) => sum + n, 0);
  setText("run-progress", `${done} / ${counts.reduce((sum, [, n]) => sum + n, 0)}`);
  setText("run-tokens", String(data.usage.total_tokens));
  setText("run-cost", data.usage.cost.toFixed(4));
  setTime("run-started", data.started_at);
  setTime("run-finished", data.finished_at);
  const cost = document.getElementById("budget-cost");
  if (cost) cost.value = data.usage.cost;
  const tokens = document.getElementById("budget-tokens");
  if (tokens) tokens.value = data.usage.total_tokens;
}

// Figures are read again at most every 300 ms, however many events arrive.
function scheduleFigures() {
  if (figuresQueued) return;
  figuresQueued = true;
  setTimeout(() => {
    figuresQueued = false;
    refreshFigures();
  }, 300);
}

// What an operator may do to a run in each status (the API answers 409 to anything else).
const ACTIONS = {
  cancel: ["queued", "running", "waiting"],
  resume: ["failed", "cancelled"],
};

function showActions(status) {
  for (const button of document.querySelectorAll("button[data-action]")) {
    button.hidden = !ACTIONS[button.dataset.action].includes(status);
  }
}

function setRunStatus(status) {
  run.dataset.status = status;
  document.getElementById("run-status").replaceChildren(statusBadge(status));
  showActions(status);
}

function onEvent(event) {
  appendEvent(event);
  if (event.node_id && NODE_STATUS[event.type]) {
    setNodeStatus(event.node_id, NODE_STATUS[event.type]);
    refreshPanel(event.node_id);
  }
  if (RUN_STATUS[event.type]) setRunStatus(RUN_STATUS[event.type]);
  scheduleFigures();
}

showActions(run.dataset.status);

// A run that has ended has nothing more to say (a resume reloads the page).
if (!["succeeded", "failed", "cancelled"].includes(run.dataset.status)) {
  follow(`/runs/${runId}/events/stream`, run.dataset.after, onEvent, {
    isFinal: (event) => FINAL_RUN_EVENTS.has(event.type),
    onState: (state, detail) => {
      run.dataset.stream = state;
      showState(state, detail);
    },
  });
}

const QUESTIONS = {
  cancel: "Cancel this run? Nodes in flight are stopped and no node starts after it.",
  resume: "Resume this run from where it stopped? Succeeded nodes are kept.",
};

for (const button of document.querySelectorAll("button[data-action]")) {
  button.addEventListener("click", async () => {
    const action = button.dataset.action;
    if (!window.confirm(QUESTIONS[action])) return;
    const result = await postJson(`/runs/${runId}/${action}`);
    setText("action-message", result.ok ? `${action} requested` : problem(result));
    // A resumed run has a new stream: the page starts again from the run as it is.
    if (result.ok && action === "resume") location.reload();
  });
}
