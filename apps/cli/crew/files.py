"""What `crew` reads and writes on this machine rather than over HTTP. A file or an editor that
cannot be used as asked is a `LocalError`, whose message is one line; the command prints it and
exits 64, having changed nothing."""

import re
from pathlib import Path

import click


class LocalError(Exception):
    """A file or an editor that cannot be used as asked; the message says which and why."""


# The editor's file takes the artifact's extension (for its syntax), when it is a plain one.
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,16}")


def edited(content: bytes, name: str) -> str:
    """`content`, an artifact named `name`, as changed in $EDITOR.

    Like `git commit` with an empty message, an edit that leaves the text as it was (a final
    newline aside), saves nothing or empties it is no edit: a `LocalError`, as is an editor
    that fails, so that the caller approves nothing.
    """
    original = _utf8(content, "the artifact")
    suffix = Path(name).suffix
    try:
        saved = click.edit(content, extension=suffix if _EXTENSION.fullmatch(suffix) else ".txt")
    except click.ClickException as error:
        raise LocalError(
            f"the editor failed ({error.format_message()}); nothing was approved"
        ) from None
    if saved is None:
        raise LocalError("the editor saved nothing; nothing was approved")
    text = _utf8(saved, "what the editor saved")
    if not text.strip():
        raise LocalError("the edit left the artifact empty; nothing was approved")
    if text.rstrip("\n") == original.rstrip("\n"):
        raise LocalError(
            "the edit changed nothing; nothing was approved (without --edit, approve releases "
            "the artifact as it is)"
        )
    return text


def _utf8(content: bytes, what: str) -> str:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise LocalError(
            f"{what} is not UTF-8 text (byte {content[error.start]:#04x} at offset "
            f"{error.start}); nothing was approved"
        ) from None
