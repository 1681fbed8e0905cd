"""What a browser opening a console page sees when the answer is an error: a page saying what
went wrong, with the same status, detail and headers as the API's JSON answer."""

import json
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette._utils import get_route_path
from starlette.exceptions import HTTPException
from starlette.responses import Response

from apps.console.sessions import signed_in
from apps.console.web import PREFIX, page
from apps.core.errors import CrewError

Handler = Callable[[Request, Exception], Awaitable[Response]]

TITLES = {
    400: "That request is not valid",
    401: "Not signed in",
    403: "Not allowed",
    404: "Not found",
    405: "Not a page",
    413: "Too large",
    422: "That address is not valid",
    503: "The service is unavailable",
}


def _is_page_visit(request: Request) -> bool:
    """A browser opening a console page (`Accept: text/html`), not a script's fetch (`*/*`).
    Whatever the method: a form's POST (signing in, out) is a page visit as well."""
    path = get_route_path(request.scope)
    return (
        path.startswith(PREFIX + "/")
        and not path.startswith(PREFIX + "/static/")
        and "text/html" in request.headers.get("accept", "")
    )


def _as_page(api_handler: Handler) -> Handler:
    async def error_page_or_json(request: Request, error: Exception) -> Response:
        answer = await api_handler(request, error)
        if not _is_page_visit(request):
            return answer
        detail = json.loads(bytes(answer.body)).get("detail", "")
        owner = None
        if answer.status_code < 500:
            # The session is read again only when the database answers: a 503 shows no nav.
            owner = await signed_in(request)
        response = page(
            request,
            "error.html",
            owner,
            status=answer.status_code,
            title=TITLES.get(answer.status_code, "Something went wrong"),
            detail=detail,
        )
        response.status_code = answer.status_code
        for name in ("retry-after", "allow"):
            if name in answer.headers:
                response.headers[name] = answer.headers[name]
        return response

    return error_page_or_json


def install_error_pages(app: FastAPI) -> None:
    """Wrap the API's handlers (installed before) of the errors a console page can meet."""
    for error_class in (CrewError, HTTPException, RequestValidationError):
        api_handler = app.exception_handlers[error_class]
        app.add_exception_handler(error_class, _as_page(api_handler))  # type: ignore[arg-type]
