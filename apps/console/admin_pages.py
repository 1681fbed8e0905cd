"""The new-task form and its check, the settings in force, and the keys page for admins.

A task is submitted by the page to `POST /tasks` itself; the check here turns the form (a DAG
pasted as JSON or YAML included) into the task request and validates it first, so nothing is
submitted until it is valid. Keys are made and revoked by the domain's functions, as
`crew-keys` does.
"""

import itertools
import json
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.responses import JSONResponse, Response

from apps.console.sessions import check_not_forged
from apps.console.web import PAGE_METHODS, Admin, Cursor, Operator, console_router, page
from apps.core.database import unit_of_work
from apps.core.errors import BadRequest, PayloadTooLarge, Unprocessable
from apps.core.storable import unstorable_values
from apps.core.validation import error_location, error_message
from apps.orchestrator.control import api_keys, configuration
from apps.orchestrator.model.models import KeyRole
from apps.orchestrator.plans.documents import DocumentError, read_json, read_yaml
from apps.orchestrator.plans.task_specs import TaskRequest
from apps.orchestrator.reading import keys
from apps.orchestrator.reading.pagination import DEFAULT_LIMIT

router = console_router()

MAX_JSON_BYTES = 16 * 1024 * 1024
# The problems a check lists at most: enough to fix a form by, however many a pasted plan has.
MAX_PROBLEMS = 20


async def _json_body(request: Request, limit: int = 64 * 1024) -> dict[str, Any]:
    check_not_forged(request)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"the body is over {limit:,} bytes")
    try:
        document = read_json(bytes(body))
    except DocumentError as error:
        raise BadRequest(f"the body is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise BadRequest("the body is not a JSON object")
    return document


def _spec_of(form: dict[str, Any]) -> dict[str, Any]:
    """The task spec the form describes, with the form field of each problem findable."""
    kind = form.get("type", "demo")
    spec: dict[str, Any] = {"type": kind}
    if kind == "dag":
        try:
            nodes = read_yaml(str(form.get("nodes", "")))
        except DocumentError as error:
            raise _FieldProblem("nodes", str(error)) from None
        spec["nodes"] = nodes.get("nodes") if isinstance(nodes, dict) else nodes
    for name in ("sections", "audience"):
        if form.get(name) not in (None, ""):
            spec[name] = form[name]
    budget = {name: form[name] for name in ("max_cost", "max_tokens") if form.get(name)}
    if budget:
        spec["budget"] = budget
    return spec


class _FieldProblem(Exception):
    """A form field the task request cannot even be built from (a DAG that is not YAML)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _form_field(location: str, kind: str) -> str:
    """The form field a problem at `location` (`task_spec.dag.nodes.0.key`) belongs to."""
    parts = location.split(".")
    for field in ("title", "max_cost", "max_tokens", "sections", "audience"):
        if field in parts:
            return field
    return "nodes" if kind == "dag" else "type"


@router.api_route("/tasks/new", methods=PAGE_METHODS)
async def new_task_page(request: Request, owner: Operator) -> Response:
    """The form for a demo, report or dag task."""
    return page(request, "new_task.html", owner)


@router.post("/tasks/check")
async def check_task(request: Request, owner: Operator) -> Response:
    """The form as a task request, validated as `POST /tasks` will; 422 with each field's
    problem."""
    form = await _json_body(request, MAX_JSON_BYTES)
    try:
        task = {"title": form.get("title", ""), "task_spec": _spec_of(form)}
        # What `POST /tasks` refuses before validating the task.
        if unstorable := list(itertools.islice(unstorable_values(task, ()), MAX_PROBLEMS)):
            return _invalid(_problem(item, str(form.get("type"))) for item in unstorable)
        TaskRequest.model_validate(task)
    except _FieldProblem as error:
        problem = {"field": error.field, "message": error.message}
        return JSONResponse({"detail": error.message, "errors": [problem]}, 422)
    except ValidationError as error:
        return _invalid(_problem(item, str(form.get("type"))) for item in error.errors())
    return JSONResponse({"task": task})


def _problem(item: Mapping[str, Any], kind: str) -> dict[str, str]:
    """A validation error as the form shows it: the field it is about, and what is wrong."""
    where = error_location(item["loc"])
    return {"field": _form_field(where, kind), "message": f"{where}: {error_message(item)}"}


def _invalid(problems: Iterable[dict[str, str]]) -> Response:
    return JSONResponse({"detail": "the task is not valid", "errors": list(problems)}, 422)


@router.api_route("/settings", methods=PAGE_METHODS)
async def settings_page(request: Request, owner: Operator) -> Response:
    """The configuration in force (secrets redacted), the gate policy, and a validation box."""
    effective = configuration.effective_configuration(request.app.state.settings)
    return page(
        request,
        "settings.html",
        owner,
        settings_json=json.dumps(effective["settings"], indent=2, sort_keys=True),
        policy_json=json.dumps(effective["gate_policy"], indent=2, default=str),
    )


@router.api_route("/keys", methods=PAGE_METHODS)
async def keys_page(
    request: Request,
    owner: Admin,
    cursor: Cursor = None,
) -> Response:
    """The keys, revoked ones included, oldest first a page at a time; create one (shown
    once) or revoke one."""
    async with request.app.state.engine.connect() as connection:
        found = await keys.list_keys(connection, limit=DEFAULT_LIMIT, cursor=cursor)
    return page(
        request,
        "keys.html",
        owner,
        keys=found.items,
        next_cursor=found.next_cursor,
        roles=[role.value for role in KeyRole],
    )


def _key_name(form: dict[str, Any]) -> str:
    name = str(form.get("name", ""))
    # PostgreSQL refuses a NUL in any text: looked up, such a name would be a 500.
    if "\x00" in name:
        raise Unprocessable("name: Text may not contain NUL characters (\\u0000)")
    return name


@router.post("/keys")
async def create_key(request: Request, owner: Admin) -> Response:
    """Make a key; its secret is in this answer and nowhere else."""
    form = await _json_body(request)
    role = form.get("role", "")
    if role not in KeyRole.__members__.values():
        raise Unprocessable(f"role must be one of {', '.join(KeyRole)}")
    async with unit_of_work(request.app.state.sessions) as session:
        created = await api_keys.create_key(session, _key_name(form), KeyRole(role))
    return JSONResponse({"name": created.row.name, "role": role, "key": created.secret}, 201)


@router.post("/keys/revoke")
async def revoke_key(request: Request, owner: Admin) -> Response:
    """Revoke a key by name: its requests and console sessions end at once."""
    form = await _json_body(request)
    async with unit_of_work(request.app.state.sessions) as session:
        row = await api_keys.revoke_key(session, _key_name(form))
    revoked_at = row.revoked_at.isoformat() if row.revoked_at else None
    return JSONResponse({"name": row.name, "revoked_at": revoked_at})
