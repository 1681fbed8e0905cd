// What an event says about the status of its node or run.
export const NODE_STATUS = {
  "node.requeued": "pending",
  "node.ready": "ready",
  "node.retrying": "ready",
  "node.started": "running",
  "node.waiting_approval": "waiting_approval",
  "node.succeeded": "succeeded",
  "node.failed": "failed",
  "node.cancelled": "cancelled",
  "node.skipped": "skipped",
};

export const RUN_STATUS = {
  "run.created": "queued",
  "run.started": "running",
  "run.resumed": "running",
  "run.waiting": "waiting",
  "run.succeeded": "succeeded",
  "run.failed": "failed",
  "run.cancelled": "cancelled",
};

export const FINAL_RUN_EVENTS = new Set(["run.succeeded", "run.failed", "run.cancelled"]);

export function statusBadge(status) {
  const badge = document.createElement("span");
  badge.className = `status s-${status}`;
  badge.textContent = status;
  return badge;
}
