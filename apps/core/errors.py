"""The service's error hierarchy. Each error carries the HTTP status it maps to, so the edge turns
any of them into a JSON answer and expected outcomes are never reported as faults.

    CrewError                 500  an unexpected fault
    ├── BadRequest            400  a malformed header, cursor or parameter
    ├── Unauthorized          401  no key, or a key that is not known
    ├── Forbidden             403  a known key whose role may not do this
    ├── NotFound              404  the named run, node, artifact or file does not exist
    ├── Conflict              409  the request does not fit the current state
    │   └── InvalidTransition 409  a status change the state rules refuse
    ├── PayloadTooLarge       413
    ├── Unprocessable         422  a well-formed request whose content is invalid
    └── ServiceUnavailable    503  a service we depend on (the artifact store) failed to answer
"""

from typing import ClassVar


class CrewError(Exception):
    status_code: ClassVar[int] = 500
    headers: ClassVar[dict[str, str]] = {}

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(CrewError):
    status_code = 400


class Unauthorized(CrewError):
    status_code = 401
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": 'Bearer realm="crew-orchestrator"'}


class Forbidden(CrewError):
    status_code = 403


class NotFound(CrewError):
    status_code = 404


class Conflict(CrewError):
    status_code = 409


class InvalidTransition(Conflict):
    pass


class PayloadTooLarge(CrewError):
    status_code = 413


class UnsupportedMediaType(CrewError):
    status_code = 415


class Unprocessable(CrewError):
    status_code = 422


class ServiceUnavailable(CrewError):
    status_code = 503
    # As the OpenAPI document says of every 503: a client may try again after a second.
    headers: ClassVar[dict[str, str]] = {"Retry-After": "1"}
