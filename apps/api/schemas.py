"""Response shapes of the HTTP API. Every field is described: the OpenAPI page is the manual."""

import uuid
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from apps.api.timezone import Timestamp
from apps.orchestrator.states import NodeStatus, RunStatus

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list; pass `next_cursor` back as `cursor` for the next one."""

    items: list[T] = Field(description="The items of this page.")
    next_cursor: str | None = Field(
        description="Opaque cursor of the next page; null on the last page."
    )


class Usage(BaseModel):
    prompt_tokens: int = Field(description="Prompt tokens of every LLM call.")
    completion_tokens: int = Field(description="Completion tokens of every LLM call.")
    total_tokens: int = Field(description="Prompt plus completion tokens.")
    cost: float = Field(description="Cost of every LLM call, from the price table.")


class Run(BaseModel):
    """One execution of a task."""

    id: uuid.UUID = Field(description="Run id.")
    title: str = Field(description="Title given when the task was submitted.")
    status: RunStatus = Field(description="Current status of the run.")
    task_spec: dict[str, Any] = Field(description="The task specification as submitted.")
    error: str | None = Field(description="Why the run failed, when it did.")
    created_by: str | None = Field(description="Name of the API key that submitted the task.")
    created_at: Timestamp = Field(description="When the run was created.")
    updated_at: Timestamp = Field(description="When the run last changed.")
    started_at: Timestamp | None = Field(description="When the first node started.")
    finished_at: Timestamp | None = Field(description="When the run reached a final status.")
    cancel_requested_at: Timestamp | None = Field(description="When a cancel was requested.")
    node_counts: dict[NodeStatus, int] = Field(
        description="Number of the run's nodes in each status."
    )
    usage: Usage = Field(description="Token and cost totals of the run's LLM calls.")

    @model_validator(mode="before")
    @classmethod
    def _from_row(cls, row: Any) -> Any:
        """Nest the row's flat usage columns and list every node status, zeros included."""
        if isinstance(row, cls):
            return row
        counts = row["node_counts"] or {}
        return {
            **row,
            "node_counts": {status: counts.get(status, 0) for status in NodeStatus},
            "usage": {
                "prompt_tokens": row["prompt_tokens"],
                "completion_tokens": row["completion_tokens"],
                "total_tokens": row["total_tokens"],
                "cost": row["cost"],
            },
        }


class Agent(BaseModel):
    provider: str = Field(description="LLM provider the node's role is bound to.")
    model: str = Field(description="Model the node's role is bound to.")


class Node(BaseModel):
    """One step of a run, done by one agent."""

    id: uuid.UUID = Field(description="Node id.")
    run_id: uuid.UUID = Field(description="Run the node belongs to.")
    key: str = Field(description="Key of the node in its run's plan.")
    position: int = Field(description="Place of the node in plan order.")
    role: str = Field(description="Role of the agent that runs the node.")
    status: NodeStatus = Field(description="Current status of the node.")
    deps: list[str] = Field(description="Keys of the nodes this node waits for.")
    attempt: int = Field(description="Attempts started so far.")
    max_attempts: int = Field(description="Attempts allowed before the node fails.")
    timeout_seconds: float | None = Field(description="Time allowed for one attempt.")
    agent: Agent = Field(description="Provider and model bound to the node's role.")
    gate: dict[str, Any] | None = Field(description="Human gate policy of the node, if gated.")
    error: str | None = Field(description="Why the node failed, when it did.")
    created_at: Timestamp = Field(description="When the node was planned.")
    updated_at: Timestamp = Field(description="When the node last changed.")
    started_at: Timestamp | None = Field(description="When the node's latest attempt started.")
    finished_at: Timestamp | None = Field(description="When the node reached a final status.")

    @model_validator(mode="before")
    @classmethod
    def _from_row(cls, row: Any) -> Any:
        if isinstance(row, cls):
            return row
        return {**row, "agent": {"provider": row["provider"], "model": row["model"]}}


class Artifact(BaseModel):
    """A file a node produced, with its sidecar of LLM metadata."""

    id: uuid.UUID = Field(description="Artifact id.")
    run_id: uuid.UUID = Field(description="Run that produced it.")
    node_id: uuid.UUID = Field(description="Node that produced it.")
    name: str = Field(description="File name.")
    media_type: str = Field(description="Media type of the content.")
    size: int = Field(description="Size of the content in bytes.")
    sha256: str = Field(description="SHA-256 of the content, hex.")
    created_at: Timestamp = Field(description="When the artifact was written.")
    sidecar: dict[str, Any] = Field(
        description="LLM metadata: provider, model, latency_ms, usage, cost, prompts, timestamps."
    )


class Event(BaseModel):
    """One thing that happened, in the order it happened."""

    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="Event id; increases with every event, the polling cursor.")
    run_id: uuid.UUID = Field(description="Run the event belongs to.")
    node_id: uuid.UUID | None = Field(description="Node the event is about, if any.")
    type: str = Field(description="What happened, e.g. node.succeeded.")
    ts: Timestamp = Field(description="When it happened.")
    data: dict[str, Any] = Field(description="Details of the event.")


class Health(BaseModel):
    status: str = Field(description="ok, or unavailable when the database cannot be reached.")
    database: str = Field(description="ok, or why the database cannot be reached.")
