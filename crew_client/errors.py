"""What the client raises. One class per status the API answers with, each carrying the API's
`detail` (and, for a 422, its `errors`; for a 503, its `retry_after`):

    CrewClientError              anything this client raises
    ├── InvalidId                an id or key name that cannot be one (nothing was sent)
    ├── InvalidKey               an API key no header can carry (nothing is sent)
    ├── CrewConnectionError      the server could not be reached (after the retries)
    ├── UnexpectedAnswer         a success that is not what the route answers (not this API?)
    └── ApiError                 the server answered with an error status
        ├── BadRequest           400  a malformed header, cursor or parameter
        ├── Unauthorized         401  no key, or one unknown or revoked
        ├── Forbidden            403  the key's role may not do this
        ├── NotFound             404
        ├── Conflict             409  e.g. a gate someone else decided
        ├── PayloadTooLarge      413
        ├── Unprocessable        422  `errors` lists each problem
        ├── ServiceUnavailable   503  (after the retries)
        └── ServerError          any other 5xx
"""

from typing import Any, ClassVar

import httpx


class CrewClientError(Exception):
    """Anything this client raises."""


class InvalidId(CrewClientError, ValueError):
    """A value given as an id (or a key's name) that cannot be one; refused before any request,
    so that it never becomes part of another route's path."""

    def __init__(self, what: str, value: object, expected: str) -> None:
        article = "an" if what[:1] in ("a", "e", "i", "o", "u") else "a"
        super().__init__(f"{value!r} is not {article} {what} ({expected})")
        self.what = what
        self.value = value


class InvalidKey(CrewClientError, ValueError):
    """An API key that an HTTP header cannot carry: anything but printable ASCII. Raised when
    the client is made, so that no request goes out with it (httpx would fail on it, or send
    what is not the key). The message never holds the key."""

    def __init__(self) -> None:
        super().__init__("the API key can only hold printable ASCII characters")


class CrewConnectionError(CrewClientError):
    """The server could not be reached, or the connection broke, after the retries."""


class UnexpectedAnswer(CrewClientError):
    """A success whose body is not what the route answers: the URL is not this API's (a proxy's
    sign-in page, another service), or the server speaks another version of it."""


class ApiError(CrewClientError):
    """The API answered with an error status; `detail` is its one-line explanation."""

    status_code: ClassVar[int] = 0

    def __init__(
        self,
        status: int,
        detail: str,
        errors: list[dict[str, Any]] | None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []
        self.retry_after = retry_after  # the answer's Retry-After header, as sent

    def __str__(self) -> str:
        return f"{self.status}: {self.detail}"


class BadRequest(ApiError):
    status_code = 400


class Unauthorized(ApiError):
    status_code = 401


class Forbidden(ApiError):
    status_code = 403


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    status_code = 409


class PayloadTooLarge(ApiError):
    status_code = 413


class Unprocessable(ApiError):
    status_code = 422


class ServiceUnavailable(ApiError):
    status_code = 503


class ServerError(ApiError):
    """A 5xx the API does not document: a fault of the server."""


_BY_STATUS: dict[int, type[ApiError]] = {
    error.status_code: error
    for error in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PayloadTooLarge,
        Unprocessable,
        ServiceUnavailable,
    )
}


def error_of(response: httpx.Response) -> ApiError:
    """The exception for an error answer, with the detail the API sent (or its status line)."""
    detail, errors = response.reason_phrase or f"HTTP {response.status_code}", None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        detail, errors = body["detail"], body.get("errors")
    fallback = ServerError if response.status_code >= 500 else ApiError
    error_class = _BY_STATUS.get(response.status_code, fallback)
    return error_class(response.status_code, detail, errors, response.headers.get("Retry-After"))
