import pytest

from apps.core.errors import InvalidTransition
from apps.orchestrator.model.states import (
    NODE_TERMINAL,
    NODE_TRANSITIONS,
    RUN_TERMINAL,
    RUN_TRANSITIONS,
    GateStatus,
    NodeStatus,
    RunStatus,
    check_gate_decision,
    check_node_rerun,
    check_node_transition,
    check_run_resume,
    check_run_transition,
)


def test_every_status_has_its_transitions_declared() -> None:
    assert set(RUN_TRANSITIONS) == set(RunStatus)
    assert set(NODE_TRANSITIONS) == set(NodeStatus)


@pytest.mark.parametrize("terminal", sorted(RUN_TERMINAL))
@pytest.mark.parametrize("target", list(RunStatus))
def test_a_terminal_run_never_changes(terminal: RunStatus, target: RunStatus) -> None:
    with pytest.raises(InvalidTransition, match="final"):
        check_run_transition(terminal, target)


@pytest.mark.parametrize("terminal", sorted(NODE_TERMINAL))
@pytest.mark.parametrize("target", list(NodeStatus))
def test_a_terminal_node_never_changes(terminal: NodeStatus, target: NodeStatus) -> None:
    with pytest.raises(InvalidTransition, match="final"):
        check_node_transition(terminal, target)


def test_a_late_worker_cannot_succeed_a_cancelled_node() -> None:
    with pytest.raises(InvalidTransition) as refused:
        check_node_transition(NodeStatus.CANCELLED, NodeStatus.SUCCEEDED)
    assert refused.value.detail == "node is cancelled, which is final; it cannot become succeeded"
    assert refused.value.status_code == 409


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (RunStatus.QUEUED, RunStatus.RUNNING),
        (RunStatus.RUNNING, RunStatus.WAITING),
        (RunStatus.WAITING, RunStatus.RUNNING),
        (RunStatus.RUNNING, RunStatus.SUCCEEDED),
        (RunStatus.WAITING, RunStatus.CANCELLED),
    ],
)
def test_the_run_lifecycle_is_allowed(current: RunStatus, target: RunStatus) -> None:
    check_run_transition(current, target)


def test_a_queued_run_cannot_succeed_without_running() -> None:
    with pytest.raises(InvalidTransition, match="cannot go from queued to succeeded"):
        check_run_transition(RunStatus.QUEUED, RunStatus.SUCCEEDED)


def test_only_failed_and_cancelled_runs_resume() -> None:
    check_run_resume(RunStatus.FAILED)
    check_run_resume(RunStatus.CANCELLED)
    for status in set(RunStatus) - {RunStatus.FAILED, RunStatus.CANCELLED}:
        with pytest.raises(InvalidTransition, match="only a failed or cancelled run"):
            check_run_resume(status)


def test_a_resume_reruns_failed_cancelled_and_skipped_nodes_only() -> None:
    for status in (NodeStatus.FAILED, NodeStatus.CANCELLED, NodeStatus.SKIPPED):
        check_node_rerun(status)
    with pytest.raises(InvalidTransition):
        check_node_rerun(NodeStatus.SUCCEEDED)


def test_a_gate_is_decided_once() -> None:
    check_gate_decision(GateStatus.PENDING, GateStatus.APPROVED)
    with pytest.raises(InvalidTransition, match="already approved"):
        check_gate_decision(GateStatus.APPROVED, GateStatus.REJECTED)
