"""What a request's path is made of. Every value put into a path is first checked for what it
names, then percent-encoded, here and nowhere else: an id like `../keys/alice/revoke?` would
otherwise reach another route with the caller's key. A value that fails raises `InvalidId`
before anything is sent."""

import re
import uuid
from urllib.parse import quote

from apps.wire.schemas import KEY_NAME_PATTERN
from crew_client.errors import InvalidId

# A UUID as the API takes it: 32 hex digits, hyphenated 8-4-4-4-12 or not.
_UUID = re.compile(r"[0-9a-f]{8}(-?[0-9a-f]{4}){3}-?[0-9a-f]{12}", re.IGNORECASE)
_KEY_NAME = re.compile(KEY_NAME_PATTERN)
KEY_NAME_RULE = "1 to 100 letters, digits, '.', '_', '-' or '@', the first a letter or a digit"


def uuid_of(value: uuid.UUID | str, what: str) -> str:
    """`value`, a UUID or its text, as the UUID's canonical text; `what` names it in the error."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str) and _UUID.fullmatch(value):
        return str(uuid.UUID(value))
    raise InvalidId(what, value, "a UUID")


def optional_uuid(value: uuid.UUID | str | None, what: str) -> str | None:
    return None if value is None else uuid_of(value, what)


def key_name(value: str) -> str:
    """`value` if it may be a key's name (the API's rule), else `InvalidId`."""
    if isinstance(value, str) and _KEY_NAME.fullmatch(value):
        return value
    raise InvalidId("key name", value, KEY_NAME_RULE)


def path(*segments: str) -> str:
    """The absolute path of `segments`, each percent-encoded: none can add a `/`, a `?` or a `#`.
    An empty or dot segment would be dropped or climb a level (httpx resolves them), so none is
    taken."""
    if any(segment in ("", ".", "..") for segment in segments):
        raise ValueError(f"not a path segment in {segments!r}")
    return "".join("/" + quote(segment, safe="") for segment in segments)
