from typing import Any

import pytest
from pydantic import ValidationError

from apps.orchestrator.plans.task_specs import MAX_NODES, DagSpec, TaskRequest, find_cycle


def _node(key: str, *deps: str, role: str = "writer") -> dict[str, Any]:
    return {"key": key, "role": role, "prompt": f"Do {key}.", "deps": list(deps)}


def _problem(body: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as refused:
        TaskRequest.model_validate(body)
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in refused.value.errors())


def _dag(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"title": "Plan", "task_spec": {"type": "dag", "nodes": list(nodes)}}


def test_the_seed_demo_request_is_accepted() -> None:
    request = TaskRequest.model_validate({"title": "Demo", "task_spec": {"type": "demo"}})
    assert request.task_spec.type == "demo"
    assert request.task_spec.sections == 3


def test_a_report_request_is_accepted_with_its_budget() -> None:
    request = TaskRequest.model_validate(
        {
            "title": "Rapport 80p",
            "task_spec": {"type": "report", "sections": 8, "budget": {"max_cost": 2.5}},
        }
    )
    assert request.task_spec.budget is not None
    assert request.task_spec.budget.max_cost == 2.5


def test_a_cycle_is_refused_with_its_path() -> None:
    problem = _problem(_dag(_node("a", "c"), _node("b", "a"), _node("c", "b"), _node("d")))
    assert "dependency cycle: a -> c -> b -> a" in problem


def test_an_unknown_dependency_is_refused_naming_both_nodes() -> None:
    problem = _problem(_dag(_node("a"), _node("b", "missing")))
    assert "node 'b' depends on unknown node 'missing'" in problem


def test_a_node_depending_on_itself_is_refused() -> None:
    assert "node 'a' depends on itself" in _problem(_dag(_node("a", "a")))


def test_a_dependency_listed_twice_is_refused() -> None:
    # Each dependency is a row of its own: twice, the plan could not be stored (a 500).
    assert "node 'b' lists 'a' twice in its deps" in _problem(
        _dag(_node("a"), _node("b", "a", "a"))
    )


def test_a_duplicate_key_is_refused() -> None:
    assert "node key 'a' is used twice" in _problem(_dag(_node("a"), _node("a")))


def test_an_unknown_role_is_refused_listing_the_roles() -> None:
    problem = _problem(_dag(_node("a", role="astrologer")))
    assert "task_spec.dag.nodes.0.role" in problem
    assert "'planner'" in problem


def test_an_unknown_type_is_refused() -> None:
    problem = _problem({"title": "X", "task_spec": {"type": "poem"}})
    assert "task_spec" in problem
    assert "'demo', 'report', 'dag'" in problem


@pytest.mark.parametrize("title", ["", "   ", "x" * 201])
def test_an_empty_or_overlong_title_is_refused(title: str) -> None:
    assert _problem({"title": title, "task_spec": {"type": "demo"}}).startswith("title: ")


def test_too_many_nodes_are_refused() -> None:
    nodes = [_node(f"n{index}") for index in range(MAX_NODES + 1)]
    assert f"at most {MAX_NODES} items" in _problem(_dag(*nodes))


def test_unknown_fields_are_refused() -> None:
    assert "Extra inputs are not permitted" in _problem(
        {"title": "X", "task_spec": {"type": "demo", "colour": "red"}}
    )


def test_the_title_is_stripped() -> None:
    assert TaskRequest.model_validate(_dag(_node("a")) | {"title": "  Plan  "}).title == "Plan"


def test_a_wide_and_a_deep_dag_of_the_largest_size_are_accepted() -> None:
    wide = [_node("root"), *(_node(f"n{i}", "root") for i in range(MAX_NODES - 1))]
    deep = [_node("n0"), *(_node(f"n{i}", f"n{i - 1}") for i in range(1, MAX_NODES))]
    assert len(DagSpec.model_validate({"type": "dag", "nodes": wide}).nodes) == MAX_NODES
    assert len(DagSpec.model_validate({"type": "dag", "nodes": deep}).nodes) == MAX_NODES


@pytest.mark.parametrize(
    ("deps", "cycle"),
    [
        ({"a": ["b"], "b": []}, None),
        ({"a": ["b", "c"], "b": ["c"], "c": []}, None),
        ({"a": ["b"], "b": ["a"]}, ["a", "b", "a"]),
        ({"x": [], "a": ["b"], "b": ["c"], "c": ["b"]}, ["b", "c", "b"]),
    ],
)
def test_find_cycle(deps: dict[str, list[str]], cycle: list[str] | None) -> None:
    assert find_cycle(deps) == cycle
