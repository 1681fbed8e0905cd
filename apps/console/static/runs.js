// The runs page, live: a new run appears at the top, a run's row changes with its events.
import { getJson, url } from "./http.js";
import { follow, showStateIn } from "./live.js";
import { statusBadge } from "./status.js";
import { timeElement } from "./time.js";

const table = document.getElementById("runs");
const body = table.querySelector("tbody");
const pending = new Map();

function duration(run) {
  if (!run.started_at || !run.finished_at) return "";
  const seconds = (new Date(run.finished_at) - new Date(run.started_at)) / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

function cells(run) {
  const counts = Object.entries(run.node_counts);
  const total = counts.reduce((sum, [, n]) => sum + n, 0);
  const done = counts
    .filter(([status]) => ["succeeded", "failed", "cancelled", "skipped"].includes(status))
    .reduce((sum, [, n]) => sum + n, 0);
  const link = document.createElement("a");
  link.href = url(`/ui/runs/${run.id}`);
  // Isolated, as the server writes it: a bidi control in a title stays inside it.
  const title = document.createElement("bdi");
  title.textContent = run.title;
  link.append(title);
  return [
    statusBadge(run.status),
    link,
    `${done} / ${total}`,
    String(run.usage.total_tokens),
    run.usage.cost.toFixed(4),
    duration(run),
    run.created_by ?? "",
    timeElement(run.created_at),
  ];
}

const COLUMNS = ["status", "title", "progress", "tokens num", "cost num", "duration", "by", "created"];

function fill(row, run) {
  row.dataset.runId = run.id;
  row.dataset.status = run.status;
  row.replaceChildren(
    ...cells(run).map((content, index) => {
      const cell = document.createElement("td");
      cell.className = COLUMNS[index].split(" ").map((name, i) => (i ? name : `c-${name}`)).join(" ");
      cell.append(content);
      return cell;
    }),
  );
}

function matchesFilters(run) {
  const { status, createdAfter, createdBefore } = table.dataset;
  const q = table.dataset.q.toLowerCase();
  // The filter's dates are UTC days, as the API's timestamps are (no X-Timezone is sent).
  const day = run.created_at.slice(0, 10);
  return (
    (!status || run.status === status) &&
    (!q || run.title.toLowerCase().includes(q)) &&
    (!createdAfter || day >= createdAfter) &&
    (!createdBefore || day <= createdBefore)
  );
}

async function refresh(runId) {
  const result = await getJson(`/runs/${runId}`);
  if (!result.ok) return;
  const run = result.data;
  let row = body.querySelector(`tr[data-run-id="${runId}"]`);
  if (!row) {
    if (!matchesFilters(run)) return;
    body.querySelector("tr.empty")?.remove();
    row = document.createElement("tr");
    body.prepend(row);
  }
  fill(row, run);
}

// One refresh at a time per run, and at most one more queued: a burst of events costs two reads.
function scheduleRefresh(runId) {
  const state = pending.get(runId);
  if (state) {
    state.again = true;
    return;
  }
  const entry = { again: false };
  pending.set(runId, entry);
  refresh(runId).finally(() => {
    pending.delete(runId);
    if (entry.again) scheduleRefresh(runId);
  });
}

if (table.dataset.live === "on") {
  const onEvent = (event) => {
    const known = body.querySelector(`tr[data-run-id="${event.run_id}"]`);
    if (known || event.type === "run.created") scheduleRefresh(event.run_id);
  };
  follow("/events/stream", table.dataset.after, onEvent, {
    onState: showStateIn(document.getElementById("live-state")),
  });
}
