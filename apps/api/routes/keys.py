"""API keys over HTTP, for admins: create one (its secret shown once), list, read, revoke."""

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from apps.api.auth import AdminCaller
from apps.api.dependencies import Cursor, DbSession, Limit, ReadConnection
from apps.api.responses import errors, located
from apps.api.routing import ProtectedRoute
from apps.orchestrator.control import api_keys
from apps.orchestrator.reading import keys
from apps.orchestrator.reading.pagination import DEFAULT_LIMIT
from apps.wire.schemas import KEY_NAME_PATTERN, ApiKey, CreatedApiKey, KeyCreateRequest, Page

router = APIRouter(prefix="/keys", tags=["keys"], route_class=ProtectedRoute)

KeyName = Annotated[str, Path(pattern=KEY_NAME_PATTERN, description="The key's name.")]
MAX_KEY_REQUEST_BYTES = 4 * 1024


@router.get("")
async def list_keys(
    _caller: AdminCaller,
    connection: ReadConnection,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[ApiKey]:
    """Every key, revoked ones included, oldest first; never a secret."""
    page = await keys.list_keys(connection, limit=limit, cursor=cursor)
    return Page[ApiKey].model_validate({"items": page.items, "next_cursor": page.next_cursor})


@router.post(
    "",
    status_code=201,
    max_body_size=MAX_KEY_REQUEST_BYTES,
    responses={
        **located(201, "The key's URL."),
        **errors(
            409,
            described={
                409: "A key of that name exists, or one whose name differs from it only in case "
                "(revoked keys keep theirs)."
            },
        ),
    },
)
async def create_key(
    _caller: AdminCaller, body: KeyCreateRequest, session: DbSession, response: Response
) -> CreatedApiKey:
    """Create a key; the answer holds its secret, which is stored nowhere and not shown again."""
    created = await api_keys.create_key(session, body.name, body.role)
    response.headers["Location"] = f"/keys/{created.row.name}"
    return CreatedApiKey(**dict(ApiKey.model_validate(created.row)), secret=created.secret)


@router.get("/{name}", responses=errors(404))
async def get_key(_caller: AdminCaller, connection: ReadConnection, name: KeyName) -> ApiKey:
    """One key, by name; never its secret."""
    return ApiKey.model_validate(await keys.get_key(connection, name))


@router.post(
    "/{name}/revoke",
    responses=errors(
        404,
        409,
        described={
            409: "The key is already revoked (`detail` says when), or it is the last admin key "
            "and the settings hold none (API_KEY, ADMIN_TOKEN)."
        },
    ),
)
async def revoke_key(
    _caller: AdminCaller, session: DbSession, request: Request, name: KeyName
) -> ApiKey:
    """Revoke a key: its next request is refused, and its open streams end within seconds. The
    last admin key is kept while the settings hold no admin key: no one could manage keys over
    HTTP any more."""
    settings = request.app.state.settings
    settings_admin = settings.api_key is not None or settings.admin_token is not None
    row = await api_keys.revoke_key(session, name, keep_an_admin=not settings_admin)
    return ApiKey.model_validate(row)
