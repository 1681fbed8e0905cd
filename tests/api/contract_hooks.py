"""What the contract test (`test_contract.py`) forgives, each for a rule JSON Schema cannot state.

Loaded by schemathesis from SCHEMATHESIS_HOOKS. Everything else it finds is a failure.
"""

from typing import Any

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData


def _detail(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _tampered_cursor(case: Any, response: Any) -> bool:
    """A cursor is opaque: any URL-safe base64 text fits its schema, and only the ones the list
    issued resume it. The 400 says so, and nothing else makes a schema-valid list read a 400."""
    detail = str(_detail(response).get("detail", ""))
    return (
        response.status_code == 400
        and bool((case.query or {}).get("cursor"))
        and (detail.startswith("cursor "))
    )


def _plan_rule(case: Any, response: Any) -> bool:
    """A DAG's keys must be unique, its deps must name nodes of the plan and form no cycle: rules
    across nodes, which the task spec's validator checks and JSON Schema cannot say."""
    if response.status_code != 422 or case.operation.label not in ("POST /tasks", "POST /jobs"):
        return False
    problems = _detail(response).get("errors") or []
    return bool(problems) and all(
        problem.get("loc", [])[:3] == ["body", "task_spec", "dag"] for problem in problems
    )


# What `apps.api.storable_input` refuses in any value of any body or query: text with NUL, an
# integer past 64 bits. It holds in free-form objects too (an approval's JSON merge patch), where
# JSON Schema could only say it field by field.
_UNSTORABLE = frozenset({"string_nul", "int64"})


def _unstorable(response: Any) -> bool:
    problems = _detail(response).get("errors") or []
    return (
        response.status_code == 422
        and bool(problems)
        and all(problem.get("type") in _UNSTORABLE for problem in problems)
    )


def _sentry_check(case: Any, response: Any) -> bool:
    """`GET /sentry-debug` fails on purpose with the 500 it declares: an admin's way to see an
    error reach Sentry."""
    return case.operation.label == "GET /sentry-debug" and response.status_code == 500


@schemathesis.hook
def filter_failure(_ctx: Any, failure: Any, case: Any, response: Any) -> bool:
    if _sentry_check(case, response):
        return False
    if isinstance(failure, RejectedPositiveData):
        forgiven = _tampered_cursor(case, response) or _plan_rule(case, response)
        return not (forgiven or _unstorable(response))
    return True
