"""What `POST /tasks` accepts: a title and a task spec of type `demo`, `report` or `dag`.

Every rule a plan must keep is checked here, before anything is written: a spec that fails says
which node and why (a cycle names its path).
"""

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from apps.core.roles import NodeKey, Role
from apps.core.strict_models import StrictModel
from apps.orchestrator.plans.gate_policy import GateRule

MAX_NODES = 500
MAX_SECTIONS = 40

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class Spec(StrictModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Budget(Spec):
    """Limits the run may not pass; a run that would is stopped as failed (budget_exceeded)."""

    max_cost: float | None = Field(default=None, gt=0, description="Most the run may cost.")
    max_tokens: int | None = Field(default=None, gt=0, description="Most tokens it may use.")


class NodeSpec(Spec):
    """One step of an explicit plan."""

    key: NodeKey = Field(description="Unique key of the node in the plan.")
    role: Role = Field(description="Role of the agent that does the step.")
    prompt: str = Field(min_length=1, max_length=20_000, description="What the agent is asked.")
    deps: list[NodeKey] = Field(
        default_factory=list, max_length=MAX_NODES, description="Keys this node waits for."
    )
    gate: GateRule | None = Field(
        default=None,
        description="A human gate on this node, over the gate policy's rules; required unless "
        "it says required: false.",
    )
    max_attempts: int = Field(default=3, ge=1, le=10, description="Attempts before it fails.")
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=3600, description="Time one attempt may take."
    )


class DemoSpec(Spec):
    """The seed's small run: plan, parallel writers, review, assembly, on the default agents."""

    type: Literal["demo"]
    sections: int = Field(default=3, ge=1, le=10, description="Parallel writer nodes.")
    budget: Budget | None = None


class ReportSpec(Spec):
    """A document planned by the planner agent: outline, sections in parallel, review, assembly."""

    type: Literal["report"]
    sections: int | None = Field(
        default=None, ge=1, le=MAX_SECTIONS, description="Sections to ask the planner for."
    )
    audience: str | None = Field(default=None, max_length=200, description="Who reads it.")
    budget: Budget | None = None


class DagSpec(Spec):
    """An explicit plan: nodes with their dependencies, run as their dependencies succeed."""

    type: Literal["dag"]
    nodes: list[NodeSpec] = Field(min_length=1, max_length=MAX_NODES)
    budget: Budget | None = None

    @model_validator(mode="after")
    def _is_a_dag(self) -> "DagSpec":
        keys = _unique_keys(self.nodes)
        for node in self.nodes:
            listed: set[str] = set()
            for dep in node.deps:
                if dep == node.key:
                    raise ValueError(f"node {node.key!r} depends on itself")
                if dep not in keys:
                    raise ValueError(f"node {node.key!r} depends on unknown node {dep!r}")
                if dep in listed:
                    raise ValueError(f"node {node.key!r} lists {dep!r} twice in its deps")
                listed.add(dep)
        cycle = find_cycle({node.key: node.deps for node in self.nodes})
        if cycle:
            raise ValueError("dependency cycle: " + " -> ".join(cycle))
        return self


TaskSpec = Annotated[DemoSpec | ReportSpec | DagSpec, Field(discriminator="type")]


class TaskRequest(Spec):
    """A task to run: its title and its spec."""

    title: Title = Field(description="What the run is about, 1 to 200 characters.")
    task_spec: TaskSpec = Field(description="What to run: a demo, a report or an explicit DAG.")


def _unique_keys(nodes: list[NodeSpec]) -> set[str]:
    keys: set[str] = set()
    for node in nodes:
        if node.key in keys:
            raise ValueError(f"node key {node.key!r} is used twice")
        keys.add(node.key)
    return keys


def find_cycle(deps: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a path that ends where it starts, or None for a DAG."""
    done: set[str] = set()
    for start in deps:
        if start in done:
            continue
        path, on_path, pending = [start], {start}, [iter(deps[start])]
        while pending:
            child = next(pending[-1], None)
            if child is None:
                pending.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
            elif child in on_path:
                return [*path[path.index(child) :], child]
            elif child not in done:
                pending.append(iter(deps[child]))
                path.append(child)
                on_path.add(child)
    return None
