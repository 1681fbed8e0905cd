"""Any OpenAI-compatible chat-completions endpoint (OpenAI, Ollama's /v1, vLLM, llama.cpp), through
the `openai` SDK. Its own retries are off: a failed call ends the node's attempt, and the node's
retry policy (backoff with jitter, `max_attempts`) decides what follows.

The SDK is imported, and its client made, at a provider's first call: importing it adds ~15 MB
and ~0.3 s to a process, and every worker (the API's too) builds these providers, while most
never call them (the demo provider, or none in an API without a worker)."""

from typing import TYPE_CHECKING

from apps.orchestrator.infra.providers.base import LLMReply, LLMRequest, ProviderError

if TYPE_CHECKING:
    import openai


class OpenAICompatibleProvider:
    def __init__(self, name: str, base_url: str, api_key: str | None, timeout: float) -> None:
        self.name = name
        self._base_url = base_url
        # Ollama and most local servers ignore the key but the SDK insists on one.
        self._api_key = api_key or "unused"
        self._timeout = timeout
        self._client: openai.AsyncOpenAI | None = None

    async def complete(self, request: LLMRequest) -> LLMReply:
        import openai

        if self._client is None:
            self._client = openai.AsyncOpenAI(
                base_url=self._base_url, api_key=self._api_key, timeout=self._timeout, max_retries=0
            )
        try:
            response = await self._client.chat.completions.create(
                model=request.model,
                messages=[
                    {"role": "system", "content": request.system},
                    {"role": "user", "content": request.prompt},
                ],
                timeout=request.timeout_seconds,
                response_format={"type": "json_object"} if request.json_schema else openai.omit,
            )
        except openai.APITimeoutError:
            raise ProviderError(
                f"{self.name}: no answer within {request.timeout_seconds:g}s", retryable=True
            ) from None
        except openai.APIStatusError as error:
            retryable = error.status_code == 429 or error.status_code >= 500
            raise ProviderError(
                f"{self.name}: HTTP {error.status_code}: {_message(error)}", retryable=retryable
            ) from None
        except openai.APIConnectionError as error:
            raise ProviderError(f"{self.name}: cannot connect: {error}", retryable=True) from None
        choice = response.choices[0].message.content or ""
        usage = response.usage
        return LLMReply(
            text=choice,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )


def _message(error: "openai.APIStatusError") -> str:
    body = error.body
    if isinstance(body, dict):
        detail = body.get("error", body)
        if isinstance(detail, dict) and isinstance(detail.get("message"), str):
            message: str = detail["message"]
            return message
    return error.message
