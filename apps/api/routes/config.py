"""Configuration: the settings and gate policy in force, and checks of documents."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from apps.api.auth import OperatorCaller, forbidden_below
from apps.api.config_schemas import OperatorConfig
from apps.api.responses import errors
from apps.api.routing import ProtectedRoute
from apps.orchestrator.control import configuration
from apps.orchestrator.control.configuration import MAX_DOCUMENT_BYTES
from apps.orchestrator.model.models import KeyRole
from apps.wire.schemas import DocumentKind, ValidationReport

router = APIRouter(prefix="/config", tags=["config"], route_class=ProtectedRoute)

_DOCUMENT = {
    "requestBody": {
        "required": True,
        "description": 'A settings document (names as in .env, e.g. {"PORT": 8000}) or a '
        f"gate-policy document (a gates: section), as JSON or YAML, at most "
        f"{MAX_DOCUMENT_BYTES} bytes.",
        "content": {
            # Any document: what is wrong with one (a list where a mapping belongs, say) is in
            # the report, not an error.
            "application/json": {"schema": {}},
            "application/yaml": {"schema": {}},
        },
    }
}


async def _document_body(request: Request) -> bytes:
    """The raw body; the route refuses one over its limit before it is read."""
    return await request.body()


DocumentBody = Annotated[bytes, Depends(_document_body)]
KindQuery = Annotated[
    DocumentKind | None,
    Query(
        description="settings or gate_policy; when absent, the body's `kind` field, else a "
        "document with a gates: section is a gate policy."
    ),
]


@router.get("/operator")
async def get_operator_config(request: Request) -> OperatorConfig:
    """The settings in force, every secret redacted, and the gate policy with its source."""
    effective = configuration.effective_configuration(request.app.state.settings)
    return OperatorConfig.model_validate(effective)


@router.post(
    "/validate",
    openapi_extra=_DOCUMENT,
    max_body_size=MAX_DOCUMENT_BYTES,
    responses={
        **forbidden_below(KeyRole.OPERATOR),
        **errors(
            400,
            422,
            described={
                400: "The body is empty, or not JSON or YAML; `detail` says where.",
                422: "`kind` is not settings or gate_policy, or query and body differ.",
            },
        ),
    },
)
async def validate_config(
    _caller: OperatorCaller, body: DocumentBody, request: Request, kind: KindQuery = None
) -> ValidationReport:
    """Check a settings or gate-policy document, JSON or YAML by Content-Type, and list every
    problem with its location; nothing is changed or read besides the document."""
    report = configuration.validate_document(body, request.headers.get("content-type"), kind)
    return ValidationReport.model_validate(report)
