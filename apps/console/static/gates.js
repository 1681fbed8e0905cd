// The gates inbox: approve, approve with an edit (shown as a diff first), reject with retry or
// fail. j/k move between gates, a approves, e edits, r rejects. A 409 says who decided first.
import { lineDiff } from "./diff.js";
import { postJson, problem } from "./http.js";
import { localize } from "./time.js";

const gates = [...document.querySelectorAll("li.gate")];
let current = 0;

function focus(index) {
  if (!gates.length) return;
  current = Math.max(0, Math.min(gates.length - 1, index));
  gates.forEach((gate, i) => gate.classList.toggle("current", i === current));
  gates[current].focus();
}

// "the gate of node … is already approved by alice at 2026-…" with the time made local.
function conflictText(detail) {
  return detail.replace(/\d{4}-\d\d-\d\d[ T][\d:.]+(?:[+-]\d\d:\d\d|Z)?/, (iso) => {
    const date = new Date(iso.replace(" ", "T") + (/[Z+-]\d*:?\d*$/.test(iso.slice(10)) ? "" : "Z"));
    return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
  }).replace(/^the gate of node \S+ is /, "");
}

// The one 409 that ends a gate here. Others leave it open to another decision: an artifact
// whose file is lost cannot be approved, and the answer says to reject with retry instead.
const ALREADY_DECIDED = /^the gate of node \S+ is already /;

function setButtons(gate, disabled) {
  gate.querySelectorAll(".decide button, .editor button").forEach((b) => (b.disabled = disabled));
}

function settle(gate, text, outcome) {
  gate.querySelector(".outcome").textContent = text;
  gate.dataset.outcome = outcome;
  setButtons(gate, true);
}

// One decision per gate: a double click or a second key press while the first is on its way
// would be answered 409 and turn "Approved." into "Already decided".
async function decide(gate, verb, body) {
  if (gate.dataset.outcome || gate.dataset.busy) return;
  gate.dataset.busy = "true";
  setButtons(gate, true);
  const payload = { node_id: gate.dataset.nodeId, notes: gate.querySelector(".notes").value || null, ...body };
  const result = await postJson(`/runs/${gate.dataset.runId}/${verb}`, payload);
  delete gate.dataset.busy;
  if (result.ok) settle(gate, verb === "approve" ? "Approved." : `Rejected (${payload.action}).`, "done");
  else if (result.status === 409 && ALREADY_DECIDED.test(problem(result)))
    settle(gate, `Already decided: ${conflictText(problem(result))}`, "conflict");
  else {
    gate.querySelector(".outcome").textContent = problem(result);
    setButtons(gate, false);
  }
}

function original(gate) {
  return gate.querySelector(".edit-text").defaultValue;
}

const actions = {
  approve: (gate) => decide(gate, "approve", {}),
  reject: (gate) => decide(gate, "reject", { action: gate.querySelector(".reject-action").value }),
  edit: (gate) => {
    const editor = gate.querySelector(".editor");
    if (!editor) return;
    editor.hidden = false;
    editor.querySelector("textarea").focus();
  },
  preview: (gate) => {
    const diff = gate.querySelector(".diff");
    diff.textContent = lineDiff(original(gate), gate.querySelector(".edit-text").value);
    diff.hidden = false;
    gate.querySelector('[data-action="send-edit"]').hidden = false;
  },
  "send-edit": (gate) => decide(gate, "approve", { patch: gate.querySelector(".edit-text").value }),
};

for (const [index, gate] of gates.entries()) {
  gate.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    current = index;
    if (button) actions[button.dataset.action](gate);
  });
}

document.addEventListener("keydown", (event) => {
  if (event.target.matches("input, textarea, select") || event.ctrlKey || event.metaKey) return;
  const gate = gates[current];
  const keys = {
    j: () => focus(current + 1),
    k: () => focus(current - 1),
    a: () => gate && gate.querySelector('[data-action="approve"]') && actions.approve(gate),
    e: () => gate && actions.edit(gate),
    r: () => gate && gate.querySelector('[data-action="reject"]') && actions.reject(gate),
  };
  if (keys[event.key]) {
    event.preventDefault();
    keys[event.key]();
  }
});

localize();
focus(0);
