"""`validate_document` never raises: whatever the body, the answer is a report or a 400/422.

Hypothesis writes settings and gate-policy documents as an operator might (unquoted YAML scalars
that look like dates, numbers or home directories, values of every JSON type, bytes that are no
document at all) and checks that each is answered, never raised out of the validator.
"""

import json
import string

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as fuzzing
from hypothesis import strategies as st

from apps.core.errors import BadRequest, Unprocessable
from apps.core.settings import Settings
from apps.orchestrator.control.configuration import ValidationReport, validate_document
from apps.orchestrator.plans.gate_policy import GateRule

SETTING_NAMES = sorted(name.upper() for name in Settings.model_fields)
RULE_FIELDS = sorted(GateRule.model_fields)
# Scalars that YAML resolves to dates, numbers or special values, and paths and URLs that
# standard functions refuse in ways other than ValueError.
TRICKY = [
    "2020-13-45",
    "2020-02-30",
    "2001-12-14t21:59:43.10-05:00",
    "2020-1-1 25:61:61",
    "9" * 5000,
    "-" + "9" * 4400,
    "0x" + "f" * 5000,
    "0o" + "7" * 5000,
    "0b" + "1" * 20000,
    "1e400",
    "-1e400",
    ".inf",
    ".nan",
    "1_000",
    "190:20:30",
    "~nosuchuser/x",
    "~",
    "~/x",
    "postgresql://u:p@[::1/db",
    "postgresql://u:p@h:99999999/db",
    "sqlite:///\x00",
    "http://[::1",
    "https://a@b/",
    "'\\0'",
    '"\\u0000"',
    "!!binary eA==",
    "!!timestamp 2020-13-45",
    "!!int 2020-13-45",
    "!!float x",
    "!!set {a}",
    "!!omap [a: 1]",
    "!!str",
    "[]",
    "{}",
    "null",
    "yes",
]
FUZZ = fuzzing(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _answered(body: bytes, media_type: str | None) -> None:
    try:
        report = validate_document(body, media_type, None)
    except (BadRequest, Unprocessable):
        return
    assert isinstance(report, ValidationReport)
    assert report.valid == (not report.problems)


raw_scalars = st.one_of(
    st.sampled_from(TRICKY),
    st.text(alphabet=string.printable, max_size=30).map(lambda text: text.replace("\n", " ")),
    st.integers().map(str),
    st.floats().map(repr),
)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.floats(),
        st.text(max_size=20),
        st.sampled_from(TRICKY),
    ),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@pytest.mark.parametrize("path", ["9" * 5000, "x/" * 3000, "\x00"])
def test_an_operator_file_path_the_system_refuses_is_a_problem_not_an_error(path: str) -> None:
    report = validate_document(json.dumps({"OPERATOR_CONFIG": path}).encode(), None, None)
    assert not report.valid
    assert [problem.location for problem in report.problems] == ["OPERATOR_CONFIG"]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(SETTING_NAMES), raw_scalars), max_size=6))
def test_a_settings_document_in_yaml_is_always_answered(lines: list[tuple[str, str]]) -> None:
    body = "".join(f"{name}: {value}\n" for name, value in lines)
    _answered(body.encode(), "application/yaml")


@FUZZ
@given(st.dictionaries(st.sampled_from([*SETTING_NAMES, "kind", "gates"]), json_values))
def test_a_settings_document_in_json_is_always_answered(document: dict[str, object]) -> None:
    _answered(json.dumps(document).encode(), "application/json")


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["defaults", "writer", "planner", "roles", "nodes", "draft", "1x"]),
        st.dictionaries(st.sampled_from([*RULE_FIELDS, "other"]), raw_scalars, max_size=4),
        max_size=4,
    )
)
def test_a_gate_policy_in_yaml_is_always_answered(gates: dict[str, dict[str, str]]) -> None:
    lines = ["gates:"]
    for name, rule in gates.items():
        lines.append(f"  {name}:")
        lines.extend(f"    {field}: {value}" for field, value in rule.items())
    _answered("\n".join(lines).encode(), "application/yaml")


@FUZZ
@given(st.binary(max_size=200), st.sampled_from(["application/json", "application/yaml", None]))
def test_any_bytes_are_answered(body: bytes, media_type: str | None) -> None:
    _answered(body, media_type)
