"""Executors: one attempt of a node — its LLM call, its artifact file and the sidecar of LLM
metadata beside it — ending in an `Outcome` for the Manager to record."""

import asyncio
import dataclasses
import functools
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apps.core.errors import NotFound, ServiceUnavailable
from apps.core.redaction import configured_secrets, redact
from apps.core.settings import Settings
from apps.orchestrator.infra.providers.base import LLMReply, LLMRequest, Provider, ProviderError
from apps.orchestrator.infra.storage.base import (
    ArtifactStore,
    encode_sidecar,
    sidecar_key,
    start_changes,
    store_changes,
    store_io,
)
from apps.orchestrator.model.models import utcnow
from apps.orchestrator.plans.agents import cost_of
from apps.orchestrator.plans.planning import OUTLINE_KEY, InvalidOutline, Outline, parse_outline
from apps.wire.timestamps import utc_text

SIDECAR_VERSION = 1
# How much of the outputs it wrote last an executor keeps, for the attempts that read them next.
RECENT_OUTPUT_BYTES = 1024 * 1024

SYSTEM_PROMPTS = {
    "planner": "You plan work for a team of agents. Be concrete and brief.",
    "researcher": "You collect facts and cite their sources.",
    "writer": "You write clear, well-structured Markdown.",
    "reviewer": "You review drafts for accuracy, gaps and overlap, and say what to change.",
    "editor": "You edit text for clarity and consistency without changing its meaning.",
    "analyst": "You analyse data and state findings with their evidence.",
    "assembler": "You assemble parts into one coherent document in Markdown.",
}


@dataclass(frozen=True, slots=True)
class NodeWork:
    """A claimed attempt of a node: what it needs to run, as read when it was claimed."""

    id: uuid.UUID
    run_id: uuid.UUID
    run_title: str
    key: str
    role: str
    prompt: str
    provider: str
    model: str
    attempt: int
    max_attempts: int
    timeout_seconds: float
    # (key, storage key) of each dependency's artifact, in plan order, and their total size.
    upstream: tuple[tuple[str, str], ...]
    upstream_bytes: int
    # The run's budget (`max_tokens`, `max_cost`), if its task spec set one.
    budget: dict[str, Any] | None = None
    # The node's resolved gate (see `gate_policy.read_gate`), if it has one.
    gate: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class NodeOutput:
    """A finished call's artifact as written to the store, with its sidecar."""

    name: str
    media_type: str
    storage_key: str
    size: int
    sha256: str
    sidecar: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    cost: float


@dataclass(frozen=True, slots=True)
class Succeeded:
    work: NodeWork
    output: NodeOutput
    # The planner's outline, when the node planned a report.
    outline: Outline | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    work: NodeWork
    message: str
    retryable: bool
    cause: str


Outcome = Succeeded | Failed


@dataclass(frozen=True, slots=True)
class Unstored:
    """A success whose files are not written yet: small outputs of a store that writes them
    cheaply are written by the pass that records them, off the event loop, before it commits
    (`pass_runner`): in the hand-off that runs it, or while it runs (`Executor.store_output`,
    `Executor.writing`), rather than each in a thread of its own."""

    succeeded: Succeeded
    content: bytes
    sidecar: bytes
    # The writing of the files, once begun: a pass that fails after them leaves the output for
    # the next pass, which must not write them again.
    writes: list[Future[Outcome]] = dataclasses.field(
        default_factory=list, compare=False, repr=False
    )

    @property
    def work(self) -> NodeWork:
        return self.succeeded.work


Ended = Outcome | Unstored


def build_request(work: NodeWork, upstream_texts: tuple[tuple[str, str], ...]) -> LLMRequest:
    """The call for `work`: its prompt, with its dependencies' outputs as context."""
    prompt = f"Task: {work.run_title}\n\n{work.prompt}"
    for key, text in upstream_texts:
        prompt += f"\n\n### Output of {key}\n\n{text}"
    schema = Outline.model_json_schema() if work.key == OUTLINE_KEY else None
    if schema:
        prompt += "\n\nAnswer with JSON only, matching this schema:\n" + json.dumps(schema)
    return LLMRequest(
        model=work.model,
        system=SYSTEM_PROMPTS.get(work.role, SYSTEM_PROMPTS["writer"]),
        prompt=prompt,
        timeout_seconds=work.timeout_seconds,
        json_schema=schema,
        role=work.role,
        context=upstream_texts,
    )


class Executor:
    """Runs node attempts on the providers it is given, keeping outputs in `store`."""

    def __init__(
        self, providers: Mapping[str, Provider], store: ArtifactStore, settings: Settings
    ) -> None:
        self.providers = providers
        self.store = store
        self.settings = settings
        self._secrets = configured_secrets(settings)
        # Attempts whose call has answered and whose output is being written to the store now
        # (outputs too big or a store too slow to be written with a pass).
        self.storing = 0
        self._recent = _RecentOutputs(RECENT_OUTPUT_BYTES)

    async def attempt(self, work: NodeWork) -> Outcome:
        """One attempt of `work`, its files written; every expected failure is a `Failed`,
        never an exception.

        A failure's message is stored on the node and the run and shown to every viewer: what
        a provider or the store said (an echoed Authorization header, a URL with its
        password) is redacted first.
        """
        ended = await self.call(work)
        if isinstance(ended, Unstored):
            return await asyncio.wrap_future(self.writing(ended))
        return ended

    async def call(self, work: NodeWork) -> Ended:
        """`attempt`, except that an output the store writes cheaply (`ArtifactStore.inline`)
        is returned `Unstored`, for the pass that records it to write."""
        try:
            ended = await self._attempt(work)
        except (NotFound, ServiceUnavailable) as error:
            ended = self._store_failed(work, error)
        if isinstance(ended, Failed):
            return dataclasses.replace(ended, message=redact(ended.message, self._secrets))
        return ended

    def writing(self, unstored: Unstored) -> Future[Outcome]:
        """The writing of the files of `unstored`, begun now in the store's thread unless
        begun before: the success once they are written, or why they could not be."""
        return self._begin(unstored, self._write_in_thread)

    def store_output(self, unstored: Unstored) -> Outcome:
        """The success of `unstored` once its files are written, in this thread unless begun
        before, or why they could not be (blocking)."""
        return self._begin(unstored, self._write_here).result()

    def _begin(
        self, unstored: Unstored, begin: Callable[[Unstored], Future[Outcome]]
    ) -> Future[Outcome]:
        """The writing of `unstored`'s files, begun by `begin` unless begun before: they are
        written once, and again only when writing them raised (an error of no store's, which
        the next pass tries again)."""
        writes = unstored.writes
        if not writes or _raised(writes[0]):
            writes[:] = [begin(unstored)]
        return writes[0]

    def _write_in_thread(self, unstored: Unstored) -> Future[Outcome]:
        return start_changes(functools.partial(self._write, unstored))

    def _write_here(self, unstored: Unstored) -> Future[Outcome]:
        written: Future[Outcome] = Future()
        try:
            written.set_result(self._write(unstored))
        except Exception as error:
            written.set_exception(error)
        return written

    def _write(self, unstored: Unstored) -> Outcome:
        succeeded = unstored.succeeded
        try:
            _write_output(self.store, succeeded.output, unstored.content, unstored.sidecar)
        except ServiceUnavailable as error:
            failed = self._store_failed(succeeded.work, error)
            return dataclasses.replace(failed, message=redact(failed.message, self._secrets))
        return succeeded

    @staticmethod
    def _store_failed(work: NodeWork, error: NotFound | ServiceUnavailable) -> Failed:
        # A dependency's output is missing or this one could not be stored: a later attempt,
        # maybe on another host, may find the store whole again.
        message = f"artifact store: {error.detail}"
        return Failed(work, message, retryable=True, cause="artifact_store")

    async def _upstream_texts(self, work: NodeWork) -> tuple[tuple[str, str], ...]:
        """The outputs of `work`'s dependencies: those this executor wrote last from memory (a
        chain's node reads its predecessor's), the others from the store."""
        recent = self._recent.texts(work.upstream)
        if recent is not None:
            return recent
        read = functools.partial(_read_upstream, self.store, work.upstream)
        return await store_io(self.store, work.upstream_bytes, read)

    async def _attempt(self, work: NodeWork) -> Ended:
        provider = self.providers.get(work.provider)
        if provider is None:
            message = f"provider {work.provider!r} is not set up"
            return Failed(work, message, retryable=False, cause="config")
        texts = await self._upstream_texts(work)
        request = build_request(work, texts)
        started_at, clock = utcnow(), time.perf_counter()
        try:
            async with asyncio.timeout(work.timeout_seconds):
                reply = await provider.complete(request)
        except TimeoutError:
            message = f"no answer within {work.timeout_seconds:g}s"
            return Failed(work, message, retryable=True, cause="timeout")
        except ProviderError as error:
            return Failed(work, error.message, retryable=error.retryable, cause="provider")
        latency_ms = (time.perf_counter() - clock) * 1000
        outline = None
        if work.key == OUTLINE_KEY:
            try:
                outline = parse_outline(reply.text)
            except InvalidOutline as error:
                message = f"the planner's outline is invalid: {error}"
                return Failed(work, message, retryable=True, cause="invalid_outline")
        cost = cost_of(
            self.settings, work.provider, work.model, reply.prompt_tokens, reply.completion_tokens
        )
        content = reply.text.encode()
        output = describe_output(
            work, request, reply, content, latency_ms=latency_ms, started_at=started_at, cost=cost
        )
        sidecar = encode_sidecar(output.sidecar)
        succeeded = Succeeded(work, output, outline)
        if self.store.inline(len(content) + len(sidecar)):
            self._recent.add(output.storage_key, reply.text, len(content))
            return Unstored(succeeded, content, sidecar)
        write = functools.partial(_write_output, self.store, output, content, sidecar)
        self.storing += 1
        try:
            await store_changes(write)
        finally:
            self.storing -= 1
        return succeeded


def _raised(future: Future[Outcome]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


class _RecentOutputs:
    """The texts of the last outputs an executor wrote, by storage key, up to `limit` bytes:
    the next attempts read them without the store. A key is written once (see `storage`), so
    the text kept is what the store holds. An output is kept from its call's answer, before
    its files are written: only an output that was recorded, its files written, is ever an
    upstream."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._size = 0
        self._texts: dict[str, tuple[str, int]] = {}

    def add(self, storage_key: str, text: str, size: int) -> None:
        _, replaced = self._texts.pop(storage_key, ("", 0))
        self._texts[storage_key] = (text, size)
        self._size += size - replaced
        while self._size > self._limit:
            oldest = next(iter(self._texts))
            self._size -= self._texts.pop(oldest)[1]

    def texts(self, upstream: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...] | None:
        """Each dependency's (key, text), when every one is kept; else None."""
        try:
            return tuple((key, self._texts[storage_key][0]) for key, storage_key in upstream)
        except KeyError:
            return None


def _read_upstream(
    store: ArtifactStore, upstream: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    return tuple((key, store.read(storage_key).decode()) for key, storage_key in upstream)


def describe_output(
    work: NodeWork,
    request: LLMRequest,
    reply: LLMReply,
    content: bytes,
    *,
    latency_ms: float,
    started_at: datetime,
    cost: float,
) -> NodeOutput:
    """The artifact of a reply (`content`, its text encoded) and its sidecar, to be written
    as `<run>/<attempt>/<name>`, named for the node's key, which is its run's only one (see
    `apps.orchestrator.infra.storage.base`).

    Every attempt writes files of its own: a retry (after a rejection, a timeout, a lease taken
    back, a resume) never rewrites what an earlier attempt's artifact describes.
    """
    is_json = request.json_schema is not None
    name = f"{work.key}.json" if is_json else f"{work.key}.md"
    run_id, node_id = str(work.run_id), str(work.id)
    sidecar = {
        "version": SIDECAR_VERSION,
        "run_id": run_id,
        "node_id": node_id,
        "attempt": work.attempt,
        "provider": work.provider,
        "model": work.model,
        "latency_ms": round(latency_ms, 3),
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
        "cost": cost,
        "prompts": {"system": request.system, "user": request.prompt},
        "timestamps": {"started_at": utc_text(started_at), "finished_at": utc_text(utcnow())},
    }
    return NodeOutput(
        name=name,
        media_type="application/json" if is_json else "text/markdown",
        storage_key=f"{run_id}/{work.attempt}/{name}",
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        sidecar=sidecar,
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
        cost=cost,
    )


def _write_output(store: ArtifactStore, output: NodeOutput, content: bytes, sidecar: bytes) -> None:
    store.write(output.storage_key, content)
    store.write(sidecar_key(output.storage_key), sidecar)
