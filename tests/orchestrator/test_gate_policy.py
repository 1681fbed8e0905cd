import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from apps.core.settings import SettingsError, load_settings
from apps.orchestrator.plans.gate_policy import (
    NO_GATES,
    GatePolicy,
    GatePolicyError,
    GateRule,
    gate_policy_of,
    gate_to_store,
    load_gate_policy,
    parse_gate_policy,
    read_gate,
    resolve_gate,
)
from tests.conftest import process_env

ROOT = Path(__file__).resolve().parents[2]

# The seed's format: stages and roles straight under gates:, each with the seed's three fields.
SEED_FORMAT = """\
project: crew
gates:
  writer:
    required: true
    auto_approve: false
    timeout_minutes: 60
  review:
    required: true
    auto_approve: true
    timeout_minutes: 15
  planner:
    required: false
"""


def _policy(**gates: object) -> GatePolicy:
    policy, problems = parse_gate_policy({"gates": gates})
    assert problems == []
    return policy


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "operator.yaml"
    path.write_text(text)
    return path


def test_a_role_rule_gates_every_node_of_that_role() -> None:
    policy = _policy(writer={"required": True, "timeout_minutes": 60})

    gate = resolve_gate(policy, "writer", "write-1", None)

    assert (gate.required, gate.timeout_minutes, gate.source) == (True, 60, ["role:writer"])
    assert not resolve_gate(policy, "reviewer", "review", None).required


def test_a_key_rule_wins_over_the_role_rule_field_by_field() -> None:
    policy = _policy(
        defaults={"timeout_minutes": 1440, "on_timeout": "reject"},
        writer={"required": True, "timeout_minutes": 60},
        **{"write-2": {"when": "before"}},
    )

    gate = resolve_gate(policy, "writer", "write-2", None)

    assert (gate.required, gate.when, gate.timeout_minutes, gate.on_timeout) == (
        True,
        "before",
        60,
        "reject",
    )
    assert gate.source == ["defaults", "role:writer", "node:write-2"]


def test_the_task_spec_gate_wins_over_the_policy() -> None:
    policy = _policy(writer={"required": True, "timeout_minutes": 60, "auto_approve": True})

    opted_out = resolve_gate(policy, "writer", "draft", GateRule(required=False))
    shortened = resolve_gate(policy, "writer", "draft", GateRule(timeout_minutes=5))

    assert not opted_out.required
    assert (shortened.required, shortened.timeout_minutes, shortened.on_timeout) == (
        True,
        5,
        "approve",
    )
    assert shortened.source == ["role:writer", "task_spec"]


def test_a_task_spec_gate_is_required_unless_it_says_otherwise() -> None:
    gate = resolve_gate(NO_GATES, "editor", "publish", GateRule(on_timeout="reject"))
    assert (gate.required, gate.on_timeout) == (True, "reject")


def test_a_null_timeout_removes_an_inherited_one() -> None:
    policy = _policy(defaults={"timeout_minutes": 30}, writer={"required": True})
    gate = resolve_gate(policy, "writer", "draft", GateRule(timeout_minutes=None))
    assert gate.timeout_minutes is None
    assert gate.expiry is None


def test_auto_approve_means_the_timeout_approves() -> None:
    policy = _policy(writer={"required": True, "auto_approve": True, "timeout_minutes": 10})

    gate = resolve_gate(policy, "writer", "draft", None)

    assert gate.on_timeout == "approve"
    assert gate.expiry == timedelta(minutes=10)
    opened = datetime(2026, 1, 1, tzinfo=UTC)
    assert gate.expires_at(opened) == opened + timedelta(minutes=10)


def test_auto_approve_false_undoes_an_inherited_approve_and_the_default_is_fail() -> None:
    policy = _policy(defaults={"auto_approve": True}, writer={"required": True})
    unchanged = resolve_gate(policy, "writer", "draft", None)
    undone = resolve_gate(policy, "writer", "draft", GateRule(auto_approve=False))
    assert (unchanged.on_timeout, undone.on_timeout) == ("approve", "fail")


def test_a_gate_reviews_the_output_after_the_node_by_default() -> None:
    gate = resolve_gate(_policy(writer={"required": True}), "writer", "draft", None)
    assert (gate.when, gate.timeout_minutes, gate.on_timeout) == ("after", None, "fail")


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"auto_approve": True, "on_timeout": "reject"}, "auto_approve: true means on_timeout"),
        ({"auto_approve": False, "on_timeout": "approve"}, "auto_approve: false contradicts"),
    ],
)
def test_auto_approve_and_on_timeout_must_agree(rule: dict, message: str) -> None:
    _, problems = parse_gate_policy({"gates": {"writer": rule}})
    assert [problem.location for problem in problems] == ["gates.writer"]
    assert message in problems[0].message


def test_what_a_node_stores_is_its_resolved_gate_or_nothing() -> None:
    policy = _policy(writer={"required": True, "auto_approve": True, "timeout_minutes": 60})

    stored = gate_to_store(policy, "writer", "draft", None)

    assert stored == {
        "required": True,
        "when": "after",
        "timeout_minutes": 60.0,
        "on_timeout": "approve",
        "source": ["role:writer"],
    }
    assert gate_to_store(policy, "planner", "plan", None) is None
    gate = read_gate(stored)
    assert gate is not None
    assert (gate.when, gate.expiry, gate.on_timeout) == ("after", timedelta(hours=1), "approve")


def test_reading_a_gate_that_holds_no_one_gives_nothing() -> None:
    assert read_gate(None) is None
    assert read_gate({"required": False, "timeout_minutes": 5}) is None


def test_a_gate_stored_before_on_timeout_was_resolved_still_reads() -> None:
    gate = read_gate({"required": True, "auto_approve": True, "on_timeout": None})
    assert gate is not None
    assert gate.on_timeout == "approve"


def test_every_problem_of_a_policy_is_reported_with_its_location() -> None:
    _, problems = parse_gate_policy(
        {
            "gates": {
                "writer": {"timeout_minutes": 0, "on_timeout": "shrug", "timout": 5},
                "Not A Key": {"required": True},
                "review": "yes",
                "roles": {"astrologer": {"required": True}, "writer": {}},
            }
        }
    )

    assert [(problem.location, problem.message.split(";")[0]) for problem in problems] == [
        ("gates.writer.timeout_minutes", "Input should be greater than 0"),
        ("gates.writer.on_timeout", "Input should be 'approve', 'reject' or 'fail'"),
        ("gates.writer.timout", "not a gate field"),
        (
            "gates.Not A Key",
            "not a role (planner, researcher, writer, reviewer, editor, analyst, "
            "assembler) nor a node key (a lowercase letter, then up to 63 lowercase letters, "
            "digits, - or _)",
        ),
        (
            "gates.review",
            "must be a mapping of required, auto_approve, timeout_minutes, on_timeout, when",
        ),
        ("gates.roles.astrologer", "not a role"),
    ]


def test_a_role_given_twice_is_a_problem_once_its_first_rule_is_good() -> None:
    _, problems = parse_gate_policy(
        {"gates": {"writer": {"required": True}, "roles": {"writer": {"required": False}}}}
    )
    assert [str(problem) for problem in problems] == [
        "gates.roles.writer: writer already has a rule at gates.writer"
    ]


@pytest.mark.parametrize(
    ("document", "location"),
    [([], "document"), ({"other": 1}, "gates"), ({"gates": [1]}, "gates")],
)
def test_a_document_without_a_gates_mapping_is_a_problem(document: object, location: str) -> None:
    _, problems = parse_gate_policy(document)
    assert [problem.location for problem in problems] == [location]


def test_the_seed_format_file_loads(tmp_path: Path) -> None:
    policy = load_gate_policy(_write(tmp_path, SEED_FORMAT))

    assert policy.roles["writer"] == GateRule(required=True, auto_approve=False, timeout_minutes=60)
    assert policy.roles["planner"].required is False
    review = resolve_gate(policy, "reviewer", "review", None)
    assert (review.required, review.timeout_minutes, review.on_timeout) == (True, 15, "approve")


def test_the_example_policy_in_docs_loads() -> None:
    policy = load_gate_policy(ROOT / "docs" / "operator.example.yaml")
    assert resolve_gate(policy, "writer", "write-1", None).required


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("gates:\n  writer:\n    timeout_minutes: -5\n", "gates.writer.timeout_minutes: "),
        ("gates:\n  writer: {required: true\n", "line 3, column 1: "),
        ("gates:\n  writer: {}\n  writer: {}\n", "line 3, column 3: key 'writer' is given twice"),
        ("x: &a {required: true}\ngates:\n  writer: *a\n", "line 3, column 11: aliases"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file_and_the_place(
    tmp_path: Path, text: str, where: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(GatePolicyError) as raised:
        load_gate_policy(path)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {where}")


def test_a_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(GatePolicyError, match=r"nowhere\.yaml: cannot be read: No such file"):
        load_gate_policy(tmp_path / "nowhere.yaml")


def test_the_settings_carry_the_policy_of_their_file(tmp_path: Path) -> None:
    settings = load_settings(_env_file=None, gate_policy_file=_write(tmp_path, SEED_FORMAT))
    assert "writer" in gate_policy_of(settings).roles
    # No GATE_POLICY_FILE, and no gates: in an operator file (the repository's has some).
    assert gate_policy_of(load_settings(_env_file=None, gate_policy_file=None)) == NO_GATES


def test_a_bad_policy_file_is_a_settings_error_naming_the_variable(tmp_path: Path) -> None:
    path = _write(tmp_path, "gates:\n  writer:\n    timeout_minutes: 0\n")
    with pytest.raises(SettingsError) as raised:
        gate_policy_of(load_settings(_env_file=None, gate_policy_file=path))
    assert str(raised.value) == (
        f"invalid setting GATE_POLICY_FILE: {path}: gates.writer.timeout_minutes: "
        "Input should be greater than 0"
    )


def test_the_server_refuses_to_start_with_a_bad_policy_file(tmp_path: Path) -> None:
    _write(tmp_path, "gates:\n  writer:\n    on_timeout: later\n")
    result = subprocess.run(
        [sys.executable, "-m", "apps.api"],
        cwd=tmp_path,
        env=process_env(GATE_POLICY_FILE="operator.yaml"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: invalid setting GATE_POLICY_FILE: operator.yaml: gates.writer.on_timeout: "
        "Input should be 'approve', 'reject' or 'fail'"
    ]
