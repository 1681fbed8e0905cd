"""Statuses of runs, nodes and gates, and the one table of transitions each may make.

Every status change in the service is checked here. Terminal states are final: the only way out of
one is an operator's explicit resume, which is declared here as its own transition, so a late worker
writing `succeeded` onto a cancelled node is refused whoever asks.
"""

from enum import StrEnum

from apps.core.errors import InvalidTransition

# The statuses are words of the API too; the domain's modules keep importing them from here.
from apps.wire.statuses import GateStatus as GateStatus
from apps.wire.statuses import NodeStatus as NodeStatus
from apps.wire.statuses import RunStatus as RunStatus

RUN_TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
NODE_TERMINAL = frozenset(
    {NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.CANCELLED, NodeStatus.SKIPPED}
)

RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.RUNNING: frozenset(
        {RunStatus.WAITING, RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}
    ),
    RunStatus.WAITING: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}
RUN_RESUMABLE = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})

NODE_TRANSITIONS: dict[NodeStatus, frozenset[NodeStatus]] = {
    NodeStatus.PENDING: frozenset(
        {NodeStatus.READY, NodeStatus.WAITING_APPROVAL, NodeStatus.SKIPPED, NodeStatus.CANCELLED}
    ),
    # Ready to waiting: its dependencies are done and a gate asks for approval before it starts.
    NodeStatus.READY: frozenset(
        {
            NodeStatus.RUNNING,
            NodeStatus.WAITING_APPROVAL,
            NodeStatus.SKIPPED,
            NodeStatus.CANCELLED,
        }
    ),
    # Back to ready is a retry: a failed attempt with attempts left, or a lease taken back.
    NodeStatus.RUNNING: frozenset(
        {
            NodeStatus.READY,
            NodeStatus.WAITING_APPROVAL,
            NodeStatus.SUCCEEDED,
            NodeStatus.FAILED,
            NodeStatus.CANCELLED,
        }
    ),
    NodeStatus.WAITING_APPROVAL: frozenset(
        {
            NodeStatus.READY,
            NodeStatus.SUCCEEDED,
            NodeStatus.FAILED,
            NodeStatus.CANCELLED,
            NodeStatus.SKIPPED,
        }
    ),
    NodeStatus.SUCCEEDED: frozenset(),
    NodeStatus.FAILED: frozenset(),
    NodeStatus.CANCELLED: frozenset(),
    NodeStatus.SKIPPED: frozenset(),
}
NODE_RERUNNABLE = frozenset({NodeStatus.FAILED, NodeStatus.CANCELLED, NodeStatus.SKIPPED})

GATE_TRANSITIONS: dict[GateStatus, frozenset[GateStatus]] = {
    GateStatus.PENDING: frozenset({GateStatus.APPROVED, GateStatus.REJECTED, GateStatus.CANCELLED}),
    GateStatus.APPROVED: frozenset(),
    GateStatus.REJECTED: frozenset(),
    GateStatus.CANCELLED: frozenset(),
}


def check_run_transition(current: RunStatus, target: RunStatus) -> None:
    """Raise `InvalidTransition` unless a run may go from `current` to `target`."""
    if target not in RUN_TRANSITIONS[current]:
        raise InvalidTransition(_refusal("run", current, target, current in RUN_TERMINAL))


def check_run_resume(current: RunStatus) -> None:
    """Raise `InvalidTransition` unless an operator may resume a run in `current`."""
    if current not in RUN_RESUMABLE:
        raise InvalidTransition(f"run is {current}; only a failed or cancelled run can be resumed")


def check_node_transition(current: NodeStatus, target: NodeStatus) -> None:
    """Raise `InvalidTransition` unless a node may go from `current` to `target`."""
    if target not in NODE_TRANSITIONS[current]:
        raise InvalidTransition(_refusal("node", current, target, current in NODE_TERMINAL))


def check_node_rerun(current: NodeStatus) -> None:
    """Raise `InvalidTransition` unless a resume may send a node in `current` back to pending."""
    if current not in NODE_RERUNNABLE:
        raise InvalidTransition(f"node is {current}; only failed, cancelled or skipped nodes rerun")


def check_gate_decision(current: GateStatus, target: GateStatus) -> None:
    """Raise `InvalidTransition` unless a gate in `current` may be decided as `target`."""
    if target not in GATE_TRANSITIONS[current]:
        raise InvalidTransition(f"gate is already {current}")


def _refusal(kind: str, current: StrEnum, target: StrEnum, terminal: bool) -> str:
    if terminal:
        return f"{kind} is {current}, which is final; it cannot become {target}"
    return f"{kind} cannot go from {current} to {target}"
