"""The Supervisor: turns a task into a plan of nodes before anything runs.

`demo` and `dag` plans are fixed by the spec. A `report` starts with an outline node done by the
planner agent; once its outline (JSON, checked against `Outline`) is in, `plan_report_body` plans
the sections in parallel, a review and the assembly.
"""

import heapq
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from apps.core.roles import Role
from apps.core.text import NO_NUL
from apps.core.validation import error_problem
from apps.orchestrator.plans.gate_policy import GateRule
from apps.orchestrator.plans.task_specs import MAX_SECTIONS, DagSpec, DemoSpec, NodeSpec, ReportSpec

OUTLINE_KEY = "outline"


@dataclass(frozen=True, slots=True)
class PlannedNode:
    """One node of a plan, before it is stored; plans list nodes so each follows its deps."""

    key: str
    role: Role
    prompt: str
    deps: tuple[str, ...] = ()
    gate: GateRule | None = None
    max_attempts: int = 3
    timeout_seconds: float | None = None


class OutlineSection(BaseModel):
    model_config = ConfigDict(extra="ignore")

    title: str = Field(
        min_length=1, max_length=200, pattern=NO_NUL, description="Heading of the section."
    )
    brief: str = Field(
        min_length=1, max_length=2_000, pattern=NO_NUL, description="What the section covers."
    )


class Outline(BaseModel):
    """What the planner agent must answer for a report, as JSON."""

    model_config = ConfigDict(extra="ignore")

    title: str = Field(
        min_length=1, max_length=200, pattern=NO_NUL, description="Title of the document."
    )
    sections: list[OutlineSection] = Field(min_length=1, max_length=MAX_SECTIONS)


class InvalidOutline(ValueError):
    """The planner's answer is not an outline; the message says why, for the retry prompt."""


def plan_task(title: str, spec: DemoSpec | ReportSpec | DagSpec) -> list[PlannedNode]:
    """The nodes to store for a new run of `spec`, in plan order."""
    match spec:
        case DemoSpec():
            return _demo_plan(title, spec.sections)
        case DagSpec():
            return _dag_plan(spec.nodes)
        case ReportSpec():
            return [_outline_node(title, spec)]


def plan_report_body(title: str, outline: Outline) -> list[PlannedNode]:
    """The nodes that follow a report's outline: one writer per section, a review, the assembly."""
    sections = [
        _writer(
            f"section-{number}",
            f"Write the section {section.title!r} of {title!r}: {section.brief}",
            OUTLINE_KEY,
        )
        for number, section in enumerate(outline.sections, start=1)
    ]
    return _reviewed_and_assembled(
        sections,
        review=f"Review the sections of {outline.title!r} for accuracy, overlap and gaps.",
        assemble=f"Assemble {outline.title!r} from its sections, applying the review.",
    )


def parse_outline(answer: str) -> Outline:
    """The planner's answer as an outline, or `InvalidOutline` saying what is wrong with it."""
    try:
        return Outline.model_validate_json(answer)
    except ValidationError as error:
        problems = "; ".join(str(error_problem(item, whole="answer")) for item in error.errors())
        raise InvalidOutline(problems) from None


def _outline_node(title: str, spec: ReportSpec) -> PlannedNode:
    size = f"{spec.sections} sections" if spec.sections else "the sections it needs"
    audience = f" for {spec.audience}" if spec.audience else ""
    return PlannedNode(
        key=OUTLINE_KEY,
        role="planner",
        prompt=f"Outline the document {title!r}{audience} in {size}.",
    )


def _demo_plan(title: str, sections: int) -> list[PlannedNode]:
    writers = [
        _writer(f"write-{number}", f"Write part {number} of {sections} of {title!r}.", "plan")
        for number in range(1, sections + 1)
    ]
    plan = PlannedNode(key="plan", role="planner", prompt=f"Plan {title!r} in {sections} parts.")
    return [
        plan,
        *_reviewed_and_assembled(
            writers,
            review=f"Review the parts of {title!r}.",
            assemble=f"Assemble {title!r} from its reviewed parts.",
        ),
    ]


def _writer(key: str, prompt: str, after: str) -> PlannedNode:
    return PlannedNode(key=key, role="writer", prompt=prompt, deps=(after,))


def _reviewed_and_assembled(
    parts: list[PlannedNode], *, review: str, assemble: str
) -> list[PlannedNode]:
    """`parts`, then a review of them all, then their assembly, which applies the review."""
    keys = tuple(part.key for part in parts)
    return [
        *parts,
        PlannedNode(key="review", role="reviewer", prompt=review, deps=keys),
        PlannedNode(key="assemble", role="assembler", prompt=assemble, deps=(*keys, "review")),
    ]


def _dag_plan(nodes: list[NodeSpec]) -> list[PlannedNode]:
    """The spec's nodes, each after its deps, otherwise in the order the spec lists them."""
    order = {node.key: index for index, node in enumerate(nodes)}
    waiting = {node.key: len(node.deps) for node in nodes}
    dependents: dict[str, list[str]] = {node.key: [] for node in nodes}
    for node in nodes:
        for dep in node.deps:
            dependents[dep].append(node.key)
    ready = [order[key] for key, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    planned = []
    while ready:
        node = nodes[heapq.heappop(ready)]
        planned.append(_planned(node))
        for dependent in dependents[node.key]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, order[dependent])
    return planned


def _planned(node: NodeSpec) -> PlannedNode:
    return PlannedNode(
        key=node.key,
        role=node.role,
        prompt=node.prompt,
        deps=tuple(node.deps),
        gate=node.gate,
        max_attempts=node.max_attempts,
        timeout_seconds=node.timeout_seconds,
    )
