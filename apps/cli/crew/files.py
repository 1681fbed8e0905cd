"""What `crew` reads and writes on this machine rather than over HTTP. A file or an editor that
cannot be used as asked is a `LocalError`, whose message is one line; the command prints it and
exits 64, having changed nothing."""

import json
import re
from pathlib import Path
from typing import Any

import click
import yaml


class LocalError(Exception):
    """A file or an editor that cannot be used as asked; the message says which and why."""


NOTHING_APPROVED = "; nothing was approved"
# The editor's file takes the artifact's extension (for its syntax), when it is a plain one.
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,16}")


def edited(content: bytes, name: str) -> str:
    """`content`, an artifact named `name`, as changed in $EDITOR.

    Like `git commit` with an empty message, an edit that leaves the text as it was (a final
    newline aside), saves nothing or empties it is no edit: a `LocalError`, as is an editor
    that fails, so that the caller approves nothing.
    """
    original = _text(content, "the artifact", then=NOTHING_APPROVED)
    suffix = Path(name).suffix
    try:
        saved = click.edit(content, extension=suffix if _EXTENSION.fullmatch(suffix) else ".txt")
    except click.ClickException as error:
        raise LocalError(
            f"the editor failed ({error.format_message()}){NOTHING_APPROVED}"
        ) from None
    except OSError as error:  # its temporary file
        raise LocalError(
            f"the editor failed ({error.strerror or error}){NOTHING_APPROVED}"
        ) from None
    if saved is None:
        raise LocalError(f"the editor saved nothing{NOTHING_APPROVED}")
    text = _text(saved, "what the editor saved", then=NOTHING_APPROVED)
    if not text.strip():
        raise LocalError(f"the edit left the artifact empty{NOTHING_APPROVED}")
    if text.rstrip("\n") == original.rstrip("\n"):
        raise LocalError(
            f"the edit changed nothing{NOTHING_APPROVED} (without --edit, approve releases the "
            "artifact as it is)"
        )
    return text


def read_spec(path: Path) -> dict[str, Any]:
    """The task spec in `path`, a JSON or YAML mapping that JSON can carry to the API."""
    text = _read(path, "the spec")
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise LocalError(f"the spec {path} is not JSON or YAML: {_yaml_problem(error)}") from None
    if not isinstance(loaded, dict):
        raise LocalError(f"the spec {path} is not a JSON or YAML mapping")
    try:
        json.dumps(loaded, allow_nan=False)
    except (TypeError, ValueError) as error:  # a YAML date, .nan, a set...
        raise LocalError(f"the spec {path} holds what JSON cannot: {error}") from None
    return loaded


def read_patch(path: Path) -> str | dict[str, Any]:
    """A `.json` file's object is a JSON merge patch; any other text is the artifact's new
    content."""
    text = _read(path, "the patch file")
    if path.suffix != ".json":
        return text
    try:
        patch = json.loads(text, parse_constant=_not_json)
    except ValueError as error:
        raise LocalError(f"the patch file {path} is not JSON: {error}") from None
    return patch if isinstance(patch, dict) else text


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not a JSON value")


def write(path: Path, content: bytes) -> None:
    try:
        path.write_bytes(content)
    except OSError as error:
        raise LocalError(f"cannot write {path}: {error.strerror or error}") from None


def _read(path: Path, what: str) -> str:
    try:
        content = path.read_bytes()
    except OSError as error:
        raise LocalError(f"cannot read {what} {path}: {error.strerror or error}") from None
    return _text(content, f"{what} {path}")


def _text(content: bytes, what: str, then: str = "") -> str:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise LocalError(
            f"{what} is not UTF-8 text (byte {content[error.start]:#04x} at offset "
            f"{error.start}){then}"
        ) from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    """The parser's complaint on one line, where it was found."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem:
        mark = error.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return f"{error.problem}{where}"
    return " ".join(str(error).split())
