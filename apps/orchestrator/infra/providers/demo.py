"""The offline provider: deterministic answers derived from the request, after a set latency."""

import asyncio
import hashlib
import json
import re

from apps.orchestrator.infra.providers.base import LLMReply, LLMRequest

_WORDS = (
    "agents", "plan", "review", "draft", "evidence", "summary", "risk", "scope", "outcome",
    "method", "source", "metric", "finding", "context", "decision", "owner", "timeline",
    "budget", "quality", "signal", "assumption",
)  # fmt: skip


# What a planner is asked (`planning._outline_node`): "... in 8 sections."; else it picks.
_SECTIONS_ASKED = re.compile(r"\bin (\d+) sections\b")
DEFAULT_SECTIONS = 3


def _words(seed: bytes, count: int) -> list[str]:
    stream = hashlib.sha256(seed).digest()
    while len(stream) < count:
        stream += hashlib.sha256(stream).digest()
    return [_WORDS[byte % len(_WORDS)] for byte in stream[:count]]


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


class DemoProvider:
    """Answers the same request with the same text, so runs and tests are reproducible."""

    def __init__(self, latency_seconds: float) -> None:
        self.latency_seconds = latency_seconds

    async def complete(self, request: LLMRequest) -> LLMReply:
        await asyncio.sleep(self.latency_seconds)
        seed = f"{request.model}\n{request.system}\n{request.prompt}".encode()
        if request.json_schema:
            text = self._outline(seed, request)
        elif request.role == "assembler":
            text = self._assembly(request)
        else:
            text = self._markdown(seed, request)
        return LLMReply(
            text=text,
            prompt_tokens=_tokens(request.system) + _tokens(request.prompt),
            completion_tokens=_tokens(text),
        )

    @staticmethod
    def _markdown(seed: bytes, request: LLMRequest) -> str:
        # The prompt is "Task: <title>", then the node's own instruction, then its context.
        paragraphs = request.prompt.split("\n\n")
        heading = paragraphs[min(1, len(paragraphs) - 1)].splitlines()[0][:80]
        words = _words(seed, 48)
        paragraphs = [
            " ".join(words[start : start + 16]).capitalize() + "." for start in (0, 16, 32)
        ]
        return f"## {heading}\n\n" + "\n\n".join(paragraphs) + "\n"

    @staticmethod
    def _assembly(request: LLMRequest) -> str:
        """The parts it was given, in order, under one title: what an assembler is asked for."""
        title = request.prompt.splitlines()[0].removeprefix("Task: ")
        parts = [text.strip() for key, text in request.context if key != "review"]
        return f"# {title}\n\n" + "\n\n".join(parts) + "\n"

    @staticmethod
    def _outline(seed: bytes, request: LLMRequest) -> str:
        """As many sections as the prompt asks for, under the task's title, as a planner
        that follows its instructions would answer."""
        asked = _SECTIONS_ASKED.search(request.prompt)
        count = int(asked.group(1)) if asked else DEFAULT_SECTIONS
        words = _words(seed, 3 * count + 3)
        sections = [
            {
                "title": f"{words[i].capitalize()} and {words[i + 1]}",
                "brief": " ".join(words[i : i + 6]),
            }
            for i in range(0, 3 * count, 3)
        ]
        title = request.prompt.splitlines()[0].removeprefix("Task: ").strip()
        return json.dumps(
            {"title": title or " ".join(words[:3]).capitalize(), "sections": sections}
        )
