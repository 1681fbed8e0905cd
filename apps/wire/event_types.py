"""Every type of event the service writes, with what it means: the words a client filters the
log by (`GET /events?type=`), so a misspelt one is an error rather than an empty page."""

EVENT_TYPES = {
    "run.created": "The task was accepted and planned; the run is queued.",
    "run.started": "A worker started the run, or it went on once its open gates were decided.",
    "run.waiting": "A gate opened: the run waits for a decision (its other nodes go on).",
    "run.cancel_requested": "Someone asked for the run to be cancelled.",
    "run.resumed": "Someone resumed the failed or cancelled run.",
    "run.succeeded": "Every node succeeded.",
    "run.failed": "A node failed, the budget was spent, or the worker could not process it.",
    "run.cancelled": "The run was cancelled, once its calls in flight had ended.",
    "node.ready": "Its dependencies succeeded; it waits for a worker.",
    "node.waiting_approval": "Its gate holds it until a person approves or rejects it.",
    "node.started": "A worker claimed an attempt of it.",
    "node.retrying": "An attempt failed or was handed back; it runs again after a backoff.",
    "node.succeeded": "An attempt ended with its artifact stored.",
    "node.failed": "Its last attempt failed.",
    "node.cancelled": "Its run was cancelled.",
    "node.skipped": "It will not run: its run is failing or was stopped by its budget.",
    "node.requeued": "Its run was resumed; it runs again.",
    "gate.waiting": "A gate opened and waits for a decision.",
    "gate.approved": "A person, or the gate's timeout, approved it.",
    "gate.rejected": "A person, or the gate's timeout, rejected it.",
    "gate.cancelled": "Its run stopped before anyone decided it.",
    "artifact.created": "An attempt's output was stored, with its sidecar.",
    "artifact.edited": "The approver edited the artifact when approving its gate.",
}


def event_types_named(text: str) -> list[str]:
    """The types a comma-separated list names, each once and in order; `ValueError` naming
    those that are not types of event."""
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in EVENT_TYPES]
    if unknown:
        raise ValueError(
            f"not a type of event: {', '.join(map(repr, unknown))}; "
            f"the types are {', '.join(EVENT_TYPES)}"
        )
    return names
