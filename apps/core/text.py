"""Text as the database stores it: PostgreSQL refuses a NUL character in any text."""

# For request fields and answers parsed from agents: text with a NUL is refused.
NO_NUL = r"^[^\x00]*$"


def storable_text(text: str) -> str:
    """`text` with every NUL replaced by U+FFFD, for what is recorded from sources this service
    does not control, such as a provider's error message."""
    return text.replace("\x00", "\ufffd")
