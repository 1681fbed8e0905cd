"""`install_console`: the console's pages, static files and headers, added to the app."""

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import RedirectResponse

from apps.console import admin_pages, auth_pages, gates_pages, runs_pages
from apps.console.error_pages import install_error_pages
from apps.console.web import (
    HERE,
    PAGE_METHODS,
    PREFIX,
    SecurityHeaders,
    SignInNeeded,
    path_for,
    sign_in_redirect,
)


async def _home(request: Request) -> RedirectResponse:
    return RedirectResponse(path_for(request, "runs_page"), status_code=307)


def install_console(app: FastAPI) -> None:
    """Serve the console under /ui (and / opening it); no API path changes. Call it after the
    API's error handlers are installed: a console page's errors are pages built on their answers."""
    # `/ui` finds `/ui/` by the router's slash redirect.
    for path in ("/", PREFIX + "/"):
        app.add_api_route(path, _home, methods=PAGE_METHODS, include_in_schema=False)
    for module in (auth_pages, runs_pages, gates_pages, admin_pages):
        app.include_router(module.router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.add_exception_handler(SignInNeeded, sign_in_redirect)
    install_error_pages(app)
    app.add_middleware(SecurityHeaders)
