"""What text may not carry out of the process, and the one function that takes it out: `redact`.

Every path by which text leaves uses it: log lines, Sentry events, error answers, the errors
stored on runs, nodes and events, the configuration view, and the errors of start-up and the CLIs.
It replaces:

- the configured secrets, `configured_secrets(settings)`: every `SecretStr` setting, and the
  credentials inside the URLs of the settings;
- the password of any URL (`scheme://user:password@host`);
- the value of any URL query parameter named like a credential (`?password=`, `&api_key=`,
  `token`, `secret`, `X-Amz-Signature`, ...);
- credentials in header-like text: `Authorization: Bearer ...`, `X-API-Key: ...`, `api_key=...`,
  and any `Bearer <token>`, as a provider's error may echo a request.
"""

import re
from collections.abc import Iterable, Iterator
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, SecretStr

REDACTED = "[redacted]"
# A configured secret shorter than this is only hidden where a pattern finds it: replacing it
# everywhere would garble ordinary words (a database password "postgres" and its user's name).
MIN_REDACTED_LENGTH = 8

_CREDENTIAL_NAME = re.compile(
    r"[\w.-]*(?:pass|pwd|secret|token|key|auth|signature|credential|session)[\w.-]*|sig", re.I
)
# Every repetition is bounded or cannot backtrack: these run on every log line, whose text a
# client partly writes (a path of 16 KB), and a pattern that backtracks over it would stall the
# process for seconds.
_URL_PASSWORD = re.compile(
    r"\b(?P<lead>[a-z][a-z0-9+.-]{0,31}://[^\s:@/?#]{0,256}:)[^\s/?#]{0,256}(?=@)", re.I
)
# After ?, & or ;, or at the start: Sentry reports a request's query string on its own.
_QUERY_PARAMETER = re.compile(r"(?P<lead>(?:^|[?&;])(?P<name>[\w.-]{1,64})=)[^&#\s\"'<>]*")
_HEADER_CREDENTIAL = re.compile(
    r"(?P<lead>\b(?:proxy-authorization|authorization|x-api-key|api[_-]?key|password|passwd"
    r"|client[_-]secret|access[_-]token)[\"']?[ \t]{0,16}[:=][ \t]{0,16}[\"']?"
    r"(?:(?:bearer|basic|token)[ \t]{1,16})?)(?!(?:bearer|basic|token)\b)[^\s\"',;}&]+",
    re.I,
)
_BEARER_TOKEN = re.compile(r"(?P<lead>\bbearer[ \t]{1,16})[A-Za-z0-9._~+/=-]{8,}", re.I)


def redact(text: str, secrets: Iterable[str] = (), marker: str = REDACTED) -> str:
    """`text` with `secrets` (longest first) and every credential the patterns above find
    replaced by `marker`."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, marker)

    def hidden(match: re.Match[str]) -> str:
        return match["lead"] + marker

    def hidden_if_a_credential(match: re.Match[str]) -> str:
        return hidden(match) if _CREDENTIAL_NAME.fullmatch(match["name"]) else match[0]

    text = _URL_PASSWORD.sub(hidden, text)
    text = _QUERY_PARAMETER.sub(hidden_if_a_credential, text)
    text = _HEADER_CREDENTIAL.sub(hidden, text)
    return _BEARER_TOKEN.sub(hidden, text)


def url_credentials(text: str) -> Iterator[str]:
    """The password, and the values of the credential query parameters, of the URL `text`."""
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:
        return
    if password:
        yield password
    for name, value in parse_qsl(parts.query):
        if value and _CREDENTIAL_NAME.fullmatch(name):
            yield value


def configured_secrets(settings: BaseModel) -> list[str]:
    """What the settings (`apps.core.settings.Settings`, which imports this module) hold that no
    text may show, long enough to be replaced wherever it appears: their `SecretStr` values (and
    a Sentry DSN's key) and the credentials inside their URLs."""
    found: list[str] = []
    for value in settings.model_dump().values():
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            found.append(secret)
            found.extend(_url_user(secret))
            found.extend(url_credentials(secret))
        elif isinstance(value, str) and "://" in value:
            found.extend(url_credentials(value))
    return sorted({item for item in found if len(item) >= MIN_REDACTED_LENGTH})


def _url_user(text: str) -> Iterator[str]:
    try:
        user = urlsplit(text).username
    except ValueError:
        return
    if user:
        yield user
