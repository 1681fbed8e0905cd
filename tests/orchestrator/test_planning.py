import json

import pytest

from apps.orchestrator.plans.planning import (
    OUTLINE_KEY,
    InvalidOutline,
    Outline,
    parse_outline,
    plan_report_body,
    plan_task,
)
from apps.orchestrator.plans.task_specs import DagSpec, DemoSpec, ReportSpec


def _follows_its_deps(plan: list) -> bool:
    seen: set[str] = set()
    for node in plan:
        if not set(node.deps) <= seen:
            return False
        seen.add(node.key)
    return True


def test_the_demo_plan_is_plan_parallel_writers_review_assemble() -> None:
    plan = plan_task("Demo", DemoSpec(type="demo"))
    assert [node.key for node in plan] == [
        "plan",
        "write-1",
        "write-2",
        "write-3",
        "review",
        "assemble",
    ]
    assert {node.deps for node in plan[1:4]} == {("plan",)}
    assert plan[4].deps == ("write-1", "write-2", "write-3")
    assert [node.role for node in plan] == [
        "planner",
        "writer",
        "writer",
        "writer",
        "reviewer",
        "assembler",
    ]


def test_the_same_task_always_gets_the_same_plan() -> None:
    assert plan_task("Demo", DemoSpec(type="demo")) == plan_task("Demo", DemoSpec(type="demo"))


def test_a_dag_is_planned_in_spec_order_where_its_deps_allow() -> None:
    spec = DagSpec.model_validate(
        {
            "type": "dag",
            "nodes": [
                {"key": "publish", "role": "editor", "prompt": "p", "deps": ["draft"]},
                {"key": "research", "role": "researcher", "prompt": "r"},
                {"key": "draft", "role": "writer", "prompt": "d", "deps": ["research"]},
                {"key": "notes", "role": "analyst", "prompt": "n"},
            ],
        }
    )
    plan = plan_task("Plan", spec)
    assert [node.key for node in plan] == ["research", "draft", "publish", "notes"]
    assert _follows_its_deps(plan)


def test_a_dag_node_keeps_its_gate_and_retry_policy() -> None:
    spec = DagSpec.model_validate(
        {
            "type": "dag",
            "nodes": [
                {
                    "key": "draft",
                    "role": "writer",
                    "prompt": "d",
                    "gate": {"when": "before", "timeout_minutes": 30, "on_timeout": "reject"},
                    "max_attempts": 5,
                    "timeout_seconds": 12,
                }
            ],
        }
    )
    (node,) = plan_task("Plan", spec)
    assert node.gate is not None
    assert (node.gate.when, node.gate.on_timeout) == ("before", "reject")
    assert (node.max_attempts, node.timeout_seconds) == (5, 12)


def test_a_report_starts_with_the_planners_outline() -> None:
    (outline,) = plan_task("Rapport 80p", ReportSpec(type="report", sections=8, audience="board"))
    assert (outline.key, outline.role) == (OUTLINE_KEY, "planner")
    assert "8 sections" in outline.prompt
    assert "board" in outline.prompt


def test_an_outline_becomes_parallel_sections_a_review_and_the_assembly() -> None:
    outline = Outline.model_validate(
        {
            "title": "Rapport",
            "sections": [{"title": "Contexte", "brief": "b1"}, {"title": "Analyse", "brief": "b2"}],
        }
    )
    body = plan_report_body("Rapport 80p", outline)
    assert [node.key for node in body] == ["section-1", "section-2", "review", "assemble"]
    assert body[0].deps == body[1].deps == (OUTLINE_KEY,)
    assert body[2].deps == ("section-1", "section-2")
    assert "Contexte" in body[0].prompt
    assert _follows_its_deps([plan_task("R", ReportSpec(type="report"))[0], *body])


def test_a_planner_answer_is_parsed_as_an_outline() -> None:
    answer = json.dumps({"title": "T", "sections": [{"title": "S", "brief": "B"}]})
    assert parse_outline(answer).sections[0].title == "S"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("Sure! Here is an outline:", "Invalid JSON"),
        ('{"title": "T", "sections": []}', "sections: List should have at least 1 item"),
        ('{"title": "T", "sections": [{"title": "S"}]}', "sections.0.brief: Field required"),
    ],
)
def test_an_invalid_outline_says_what_is_wrong(answer: str, reason: str) -> None:
    with pytest.raises(InvalidOutline, match=reason):
        parse_outline(answer)
