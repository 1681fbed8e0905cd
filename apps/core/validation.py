"""Pydantic's validation errors as people read them: where each problem is, and what it is.

Every place that turns a `ValidationError` into words (settings, gate policies, configuration
checks, the planner's outline, the API's 422s) writes a location and a message with these, so a
location reads the same everywhere: the parts of its path joined by dots.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# What pydantic puts before the message of a ValueError raised by a validator of ours.
_VALIDATOR_PREFIX = "Value error, "


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a document: where (`gates.writer.timeout_minutes`) and what."""

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


def error_location(loc: Sequence[int | str]) -> str:
    """Where a problem is: the parts of its location joined by dots (`nodes.0.key`)."""
    return ".".join(str(part) for part in loc)


def error_message(item: Mapping[str, Any]) -> str:
    """What is wrong, as pydantic says it, without the prefix it gives our validators' words."""
    return str(item["msg"]).removeprefix(_VALIDATOR_PREFIX)


def error_problem(item: Mapping[str, Any], *within: str, whole: str = "document") -> Problem:
    """One error of `ValidationError.errors()` as a problem, located inside `within`; an error
    about the whole document is located at `whole`."""
    return Problem(error_location((*within, *item["loc"])) or whole, error_message(item))
