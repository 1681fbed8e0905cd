"""What every LLM provider offers the executor: one chat completion, with its token counts."""

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class LLMRequest:
    model: str
    system: str
    prompt: str
    timeout_seconds: float
    # When set, the answer must be JSON of this schema (the report's outline).
    json_schema: dict[str, Any] | None = None
    # The role asking, and its dependencies' outputs (also written into `prompt`) by node key.
    role: str = "writer"
    context: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class LLMReply:
    text: str
    prompt_tokens: int
    completion_tokens: int


class ProviderError(Exception):
    """A call that failed; `retryable` when another attempt may succeed (timeouts, 429, 5xx)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class Provider(Protocol):
    async def complete(self, request: LLMRequest) -> LLMReply: ...
