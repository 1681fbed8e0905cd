"""Request and response shapes of the HTTP API. Every field is described: the OpenAPI page
is the manual."""

import json
import uuid
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from apps.core.strict_models import StrictModel
from apps.wire.event_types import EVENT_TYPES
from apps.wire.statuses import GateStatus, KeyRole, NodeStatus, RunStatus
from apps.wire.timestamps import Timestamp, ZonedDocument

T = TypeVar("T")

DocumentKind = Literal["settings", "gate_policy"]

# What a key's name may be: the rule `apps.orchestrator.control.api_keys` enforces.
KEY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$"
# The name of the API_KEY setting's key, in any case.
KEY_NAME_RESERVED = r"^[Aa][Dd][Mm][Ii][Nn]$"


class ValidationIssue(BaseModel):
    """One problem a 422 found in the request."""

    loc: list[int | str] = Field(
        description="Where: the part of the request (body, query, path, header), then the path "
        "inside it."
    )
    msg: str = Field(description="What is wrong there.")
    type: str = Field(description="The kind of problem, e.g. missing or string_too_long.")


class ErrorBody(BaseModel):
    """Every error answer: what went wrong in one readable line, and for a 422 each problem."""

    detail: str = Field(description="What went wrong, for a person to read.")
    errors: list[ValidationIssue] | None = Field(
        default=None, description="Each problem of a request that failed validation (a 422 only)."
    )


class Page(BaseModel, Generic[T]):
    """One page of a list; pass `next_cursor` back as `cursor` for the next one."""

    items: list[T] = Field(description="The items of this page.")
    next_cursor: str | None = Field(
        description="Opaque cursor of the next page; null on the last page."
    )


class NodeCounts(BaseModel):
    """How many of a run's nodes are in each status."""

    pending: int = Field(default=0, description="Waiting for their dependencies.")
    ready: int = Field(default=0, description="Ready to be claimed by a worker.")
    running: int = Field(default=0, description="Being run by a worker.")
    waiting_approval: int = Field(default=0, description="Held at a human gate.")
    succeeded: int = Field(default=0, description="Done.")
    failed: int = Field(default=0, description="Failed after their attempts.")
    cancelled: int = Field(default=0, description="Stopped by a cancel.")
    skipped: int = Field(default=0, description="Not run because a dependency failed.")


class Usage(BaseModel):
    prompt_tokens: int = Field(description="Prompt tokens of every LLM call.")
    completion_tokens: int = Field(description="Completion tokens of every LLM call.")
    total_tokens: int = Field(description="Prompt plus completion tokens.")
    cost: float = Field(description="Cost of every LLM call, from the price table.")


def _parsed_if_text(value: Any) -> Any:
    # The server reads these from the database as JSON text; a client reads them as objects.
    return json.loads(value) if isinstance(value, str | bytes) else value


class RunSummary(BaseModel):
    """A run as lists show it: everything but its task spec, which may be megabytes;
    `GET /runs/{run_id}` has the spec."""

    id: uuid.UUID = Field(description="Run id.")
    title: str = Field(description="Title given when the task was submitted.")
    status: RunStatus = Field(description="Current status of the run.")
    task_type: str | None = Field(
        description="Type of the task spec: demo, report or dag; null when the stored spec "
        "cannot be read."
    )
    error: str | None = Field(description="Why the run failed, when it did.")
    created_by: str | None = Field(description="Name of the API key that submitted the task.")
    created_at: Timestamp = Field(description="When the run was created.")
    updated_at: Timestamp = Field(description="When the run last changed.")
    started_at: Timestamp | None = Field(description="When the first node started.")
    finished_at: Timestamp | None = Field(description="When the run reached a final status.")
    cancel_requested_at: Timestamp | None = Field(description="When a cancel was requested.")
    node_counts: Annotated[NodeCounts, BeforeValidator(_parsed_if_text)] = Field(
        description="How many nodes are in each status."
    )
    usage: Annotated[Usage, BeforeValidator(_parsed_if_text)] = Field(
        description="Token and cost totals of the run's LLM calls."
    )


class Run(RunSummary):
    """One execution of a task, with its task spec."""

    task_spec: dict[str, Any] = Field(description="The task specification as submitted.")


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
        # A database row has the agent's provider and model as columns of their own; an
        # answer read by a client has them as `agent` already.
        if isinstance(row, cls) or "agent" in row:
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
    sidecar: ZonedDocument = Field(
        description="LLM metadata: provider, model, latency_ms, usage, cost, prompts, timestamps "
        "(in the X-Timezone zone). "
        "In lists without `prompts` (a prompt carries its dependencies' outputs, so it may be "
        "megabytes): `GET /artifacts/{artifact_id}` has them."
    )


class Event(BaseModel):
    """One thing that happened, in the order it happened."""

    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="Event id; increases with every event, the polling cursor.")
    run_id: uuid.UUID = Field(description="Run the event belongs to.")
    node_id: uuid.UUID | None = Field(description="Node the event is about, if any.")
    type: str = Field(
        description="What happened, one of:\n\n"
        + "\n".join(f"- `{name}`: {meaning}" for name, meaning in EVENT_TYPES.items())
    )
    ts: Timestamp = Field(description="When it happened.")
    data: ZonedDocument = Field(
        description="Details of the event; its timestamps (`*_at`) in the X-Timezone zone."
    )


class Health(BaseModel):
    status: str = Field(description="ok, or unavailable when the database cannot be reached.")
    database: str = Field(description="ok, or why the database cannot be reached.")


class Gate(BaseModel):
    """A human gate on a node: waiting in the operator's inbox, or decided."""

    id: uuid.UUID = Field(description="Gate id.")
    run_id: uuid.UUID = Field(description="Run of the gated node.")
    run_title: str = Field(description="Title of that run.")
    node_id: uuid.UUID = Field(description="The gated node.")
    node_key: str = Field(description="Key of the gated node in its run's plan.")
    artifact_id: uuid.UUID | None = Field(
        description="The output waiting for approval; null for a gate before the node starts."
    )
    status: GateStatus = Field(
        description="pending, approved, rejected, or cancelled (its run stopped first)."
    )
    when: Literal["before", "after"] = Field(
        description="before: the node waits to start; after: its output waits for approval."
    )
    on_timeout: str | None = Field(description="What the gate decides when it expires.")
    opened_at: Timestamp = Field(description="When the gate opened.")
    expires_at: Timestamp | None = Field(description="When it times out; null: never.")
    decided_at: Timestamp | None = Field(description="When it was decided.")
    decided_by: str | None = Field(
        description="Name of the API key that decided, or `timeout` for an automatic decision."
    )
    automatic: bool = Field(description="Whether the timeout decided, not a person.")
    action: str | None = Field(description="approve, retry or fail, once decided.")
    notes: str | None = Field(description="What the decider wrote.")


class ApproveRequest(StrictModel):
    """Release a waiting gate."""

    node_id: uuid.UUID | None = Field(
        default=None, description="The gated node; may be left out when only one gate waits."
    )
    notes: str | None = Field(default=None, max_length=10_000, description="Why, for the record.")
    patch: str | dict[str, Any] | None = Field(
        default=None,
        description="Edit the gated artifact before dependents see it: its new content as "
        "text, or a JSON merge patch (RFC 7396) for a JSON artifact. The original is kept.",
    )


class RejectRequest(StrictModel):
    """Turn down a waiting gate."""

    node_id: uuid.UUID | None = Field(
        default=None, description="The gated node; may be left out when only one gate waits."
    )
    notes: str | None = Field(
        default=None,
        max_length=10_000,
        description="Why; with `retry`, given to the agent as feedback for its next attempt.",
    )
    action: Literal["retry", "fail"] = Field(
        default="retry",
        description="retry: run the node again with the notes as feedback (a gate after the "
        "node's output); fail: fail the node and its run. Rejecting a gate before the node "
        "starts fails it.",
    )


class ApiKey(BaseModel):
    """An API key as the service knows it: never its secret, which only its creation shows."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID = Field(description="Key id.")
    name: str = Field(description="Name; what decisions and runs record as who acted.")
    role: KeyRole = Field(
        description="viewer: reads; operator: reads, tasks, gate decisions, cancel, resume; "
        "admin: everything."
    )
    key_prefix: str = Field(description="The secret's first characters, to tell keys apart.")
    created_at: Timestamp = Field(description="When the key was created.")
    last_used_at: Timestamp | None = Field(
        description="When the key was last used (recorded at most once a minute)."
    )
    revoked_at: Timestamp | None = Field(description="When the key was revoked; null: it works.")


class CreatedApiKey(ApiKey):
    """A new key, with its secret: shown this once, stored nowhere (only its SHA-256 is)."""

    secret: str = Field(description="The key to send as X-API-Key or Authorization: Bearer.")


class KeyCreateRequest(StrictModel):
    """A key to create."""

    name: str = Field(
        pattern=KEY_NAME_PATTERN,
        description="1 to 100 letters, digits, '.', '_', '-' or '@', starting with a letter or "
        "digit; unique, revoked keys included; `admin` is kept for the API_KEY setting.",
        json_schema_extra={"not": {"pattern": KEY_NAME_RESERVED}},
    )
    role: KeyRole = Field(description="What the key may do.")


class ValidationProblem(BaseModel):
    """One thing wrong with a document."""

    model_config = ConfigDict(from_attributes=True)

    location: str = Field(
        description="Where: a setting's name (PORT, LLM_ROLE_MODELS.writer) or a path in the "
        "policy (gates.writer.timeout_minutes); `document` for the document as a whole."
    )
    message: str = Field(description="What is wrong there.")


class ValidationReport(BaseModel):
    """What a check of a document found; nothing was changed."""

    model_config = ConfigDict(from_attributes=True)

    valid: bool = Field(description="True when the document has no problem.")
    kind: DocumentKind = Field(description="What the document was checked as.")
    problems: list[ValidationProblem] = Field(description="Every problem, in document order.")
    notes: list[str] = Field(
        description="What the check did not look at, e.g. a file GATE_POLICY_FILE names."
    )
