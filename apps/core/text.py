"""Text as the database stores it: PostgreSQL refuses a NUL character in any text."""

from apps.core.redaction import redact

# A provider's error may carry a whole HTML page; a run's error and its events keep the start.
MAX_STORED_ERROR = 2_000
_TRUNCATED = " [truncated]"

# For request fields and answers parsed from agents: text with a NUL is refused.
NO_NUL = r"^[^\x00]*$"


def storable_text(text: str) -> str:
    """`text` with every NUL replaced by U+FFFD, for what is recorded from sources this service
    does not control, such as a provider's error message."""
    return text.replace("\x00", "\ufffd")


def storable_error(text: str) -> str:
    """An error from outside (a provider's answer, an exception's message) as runs, nodes and
    their events keep it: credentials redacted, NULs replaced, at most `MAX_STORED_ERROR`
    characters."""
    text = storable_text(redact(text))
    if len(text) <= MAX_STORED_ERROR:
        return text
    return text[: MAX_STORED_ERROR - len(_TRUNCATED)] + _TRUNCATED
