"""What the LangChain classes and the reasoning layer need of an engine.

:class:`EngineClient` is the interface both backends implement: the embedded
:class:`~langchain_seed.engine.Engine` and
:class:`~langchain_seed.backends.vllm.VLLMEngine`. A backend implements submission
(:meth:`EngineClient.submit_many`, futures of :class:`GenerationResult`, an ``on_delta``
callback for streaming), its tokenizer face (``chat``: prompts, chat templates, token
bytes), the stats and closing; prompt checking and the blocking, async and streaming
conveniences here are built on those. The module also holds :class:`SharedEngines`, the
registry each backend keeps of its engines.
"""

from __future__ import annotations

import abc
import asyncio
import atexit
import queue
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from collections.abc import Sequence as Seq
from concurrent.futures import Future
from typing import Any, Generic, Self, TypeVar, cast

from langchain_seed.engine.config import SamplingParams, as_token_id
from langchain_seed.engine.results import GenerationResult
from langchain_seed.engine.sequence import check_prompt_ids, check_text
from langchain_seed.engine.stats import EngineStats
from langchain_seed.engine.text.tokenizer import ChatTokenizer

Prompt = str | list[int]
"""A prompt: text (tokenized with special tokens) or token ids (a rendered chat template)."""


class EngineClient(abc.ABC):
    """An engine the LangChain classes submit to (see the module docstring)."""

    _registered: tuple[SharedEngines[Any], Hashable] | None = None
    """Set by the :class:`SharedEngines` registry that holds this engine."""

    chat: ChatTokenizer
    """The model's tokenizer and chat template, behind a lock (set by the backend)."""

    # ----- what a backend implements -------------------------------------------------
    @abc.abstractmethod
    def submit_many(
        self,
        prompts: Seq[Prompt],
        params: SamplingParams | Seq[SamplingParams] | None = None,
        *,
        group: str | Seq[str | None] | None = None,
        on_delta: Callable[[str], None] | None = None,
    ) -> list[Future[GenerationResult]]:
        """Queue several requests together; one future per prompt, in order.

        ``group`` is one group id for all prompts, or one (or ``None``) per prompt: the
        samples of one prompt, which share its prefix.

        Raises:
            ValueError: an empty or over-long prompt, or a params list of the wrong length.
            EngineClosedError: the engine is closed.
        """

    def check_prompt(self, prompt: Prompt, params: SamplingParams | None = None) -> list[int]:
        """Token ids of ``prompt`` if this engine can run it with ``params``.

        Raises:
            ValueError: the prompt is empty, is text with a lone surrogate (not encodable),
                has token ids that are no integers or are outside the vocabulary, or does
                not fit the context (or ``max_cache_tokens``) with ``max_tokens``.
            TypeError: the prompt is neither a str nor a list of token ids (bytes, say).
        """
        params = params if params is not None else SamplingParams()
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("prompt is empty")
            check_text("prompt", prompt)
            ids = self.encode(prompt)
        elif isinstance(prompt, (list, tuple)):
            ids = [t for t in (as_token_id(t) for t in prompt) if t is not None]
            if len(ids) != len(prompt):
                bad = [t for t in prompt if as_token_id(t) is None]
                raise ValueError(
                    f"prompt token ids must be integers >= 0, got {bad[:5]!r} "
                    f"(a prompt is a str or a list of int token ids)"
                )
            bad_ids = [t for t in ids if t >= self.vocab_size]
            if bad_ids:
                raise ValueError(
                    f"prompt token ids {bad_ids[:5]} are outside the model's vocabulary "
                    f"(ids must be in [0, {self.vocab_size}))"
                )
        else:
            raise TypeError(
                f"a prompt must be a str or a list of int token ids, got {type(prompt).__name__}"
                + (" (decode bytes to str first)" if isinstance(prompt, (bytes, bytearray)) else "")
            )
        return check_prompt_ids(
            ids, params, max_context=self.max_context, max_cache_tokens=self._cache_token_limit()
        )

    @staticmethod
    def _per_prompt(
        prompts: Seq[Prompt],
        params: SamplingParams | Seq[SamplingParams] | None,
        group: str | Seq[str | None] | None,
    ) -> tuple[list[SamplingParams], list[str | None]]:
        """:meth:`submit_many`'s ``params`` and ``group`` as one entry per prompt.

        Raises:
            ValueError: ``prompts`` is a string, or a list has the wrong length.
            TypeError: ``params`` is neither a SamplingParams nor a list of them.
        """
        if isinstance(prompts, str):
            raise ValueError("prompts must be a list of prompts; use submit() for one prompt")
        count = len(prompts)
        if params is None or isinstance(params, SamplingParams):
            plist = [params if params is not None else SamplingParams()] * count
        else:
            plist = list(params) if isinstance(params, (list, tuple)) else [cast(Any, params)]
            wrong = [p for p in plist if not isinstance(p, SamplingParams)]
            if wrong:
                raise TypeError(
                    "params must be a SamplingParams, a list of them (one per prompt) or None, "
                    f"got {type(wrong[0]).__name__} {wrong[0]!r}"
                    + (" (build SamplingParams(**it))" if isinstance(wrong[0], dict) else "")
                )
            if len(plist) != count:
                raise ValueError(f"got {len(plist)} SamplingParams for {count} prompts")
        if group is None or isinstance(group, str):
            groups: list[str | None] = [group] * count
        else:
            groups = list(group)
            if len(groups) != count:
                raise ValueError(f"got {len(groups)} groups for {count} prompts")
        return plist, groups

    def _cache_token_limit(self) -> int | None:
        """Most tokens (prompt + output) one request may hold; ``None``: the context only."""
        return None

    # ----- the tokenizer face (a backend sets ``chat``) -----------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt text (special tokens as the tokenizer adds them).

        Raises:
            ValueError: ``text`` has a lone surrogate (it is not valid Unicode text).
        """
        return self.chat.encode(text)

    @property
    def tool_call_format(self) -> str:
        """How the chat template writes tool calls: ``"hermes"``, ``"llama"`` or ``"none"``.

        See :func:`~langchain_seed.engine.text.tokenizer.template_tool_format`.
        """
        return self.chat.tool_call_format

    def token_bytes(self, ids: Seq[int]) -> list[bytes]:
        """The bytes each token of ``ids`` stands for (part of a character, at times)."""
        return self.chat.token_bytes(ids)

    def render_chat(self, messages: Seq[dict[str, Any]], **template_kwargs: Any) -> list[int]:
        """Prompt token ids of chat ``messages`` through the tokenizer's chat template.

        Args:
            messages: ``{"role": ..., "content": ...}`` turns.
            **template_kwargs: passed to ``apply_chat_template`` (e.g. ``tools``).

        Raises:
            ValueError: a text in ``messages`` has a lone surrogate (naming where).
        """
        return self.chat.render_chat(messages, **template_kwargs)

    @property
    def chat_template_renders_tools(self) -> bool:
        """Whether the tokenizer's chat template takes ``tools`` (renders tool schemas)."""
        return self.chat.renders_tools

    # ----- what a backend implements (continued) -------------------------------------
    @property
    @abc.abstractmethod
    def model_name(self) -> str:
        """Display name of the target model."""

    @property
    @abc.abstractmethod
    def max_context(self) -> int:
        """Context length of the target model in tokens."""

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Valid token ids are below it."""

    @abc.abstractmethod
    def stats(self) -> EngineStats:
        """A snapshot of the engine-wide counters (safe to keep)."""

    @abc.abstractmethod
    def reset_stats(self) -> None:
        """Start counting afresh."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """True after :meth:`close`."""

    @abc.abstractmethod
    def close(self, timeout: float = 10.0) -> None:
        """Stop the engine; pending requests fail with ``EngineClosedError``."""

    # ----- built on the above ------------------------------------------------------
    def submit(
        self,
        prompt: Prompt,
        params: SamplingParams | None = None,
        *,
        group: str | None = None,
        on_delta: Callable[[str], None] | None = None,
    ) -> Future[GenerationResult]:
        """Queue one request; it joins the running batch at the next step."""
        return self.submit_many([prompt], params, group=group, on_delta=on_delta)[0]

    def generate(
        self,
        prompts: Seq[Prompt],
        params: SamplingParams | Seq[SamplingParams] | None = None,
        *,
        group: str | Seq[str | None] | None = None,
    ) -> list[GenerationResult]:
        """Run ``prompts`` to completion (one batch) and return their results in order."""
        return [f.result() for f in self.submit_many(prompts, params, group=group)]

    async def agenerate(
        self,
        prompts: Seq[Prompt],
        params: SamplingParams | Seq[SamplingParams] | None = None,
        *,
        group: str | Seq[str | None] | None = None,
    ) -> list[GenerationResult]:
        """Async :meth:`generate`; cancelling the awaiting task cancels the requests."""
        futures = self.submit_many(prompts, params, group=group)
        wrapped = [asyncio.wrap_future(f) for f in futures]
        try:
            return list(await asyncio.gather(*wrapped))
        except asyncio.CancelledError:
            for f in futures:
                f.cancel()
            raise

    def stream(
        self, prompt: Prompt, params: SamplingParams | None = None, *, group: str | None = None
    ) -> Iterator[str]:
        """Yield text deltas of one request as the engine produces them."""
        pieces: queue.Queue[str | None] = queue.Queue()
        future = self.submit(prompt, params, group=group, on_delta=pieces.put)
        future.add_done_callback(lambda _: pieces.put(None))
        try:
            while (piece := pieces.get()) is not None:
                yield piece
            future.result()
        finally:
            future.cancel()

    async def astream(
        self, prompt: Prompt, params: SamplingParams | None = None, *, group: str | None = None
    ) -> AsyncIterator[str]:
        """Async :meth:`stream` (no thread hop per token: the engine posts to this loop)."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()

        def post(piece: str | None) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

        future = self.submit(prompt, params, group=group, on_delta=post)
        future.add_done_callback(lambda _: post(None))
        try:
            while (piece := await pieces.get()) is not None:
                yield piece
            future.result()
        finally:
            future.cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


E = TypeVar("E", bound=EngineClient)


class SharedEngines(Generic[E]):
    """A process-wide registry of one backend's engines, with its exit hook.

    Shared engines are kept one per configuration key (:meth:`get`): an engine is built
    under the registry's lock, so threads racing for one configuration get one engine (one
    batch, one memory budget), never one each; a closed (or dead) engine is replaced by a
    fresh one on the next :meth:`get`. Every engine of the backend, shared or not, is
    tracked (:meth:`track`) and closed at interpreter exit, so no engine's work is still
    in flight when its libraries tear down.

    Args:
        exit_timeout: seconds each engine's close may take at exit.
    """

    def __init__(self, exit_timeout: float = 30.0) -> None:
        self._engines: dict[Hashable, E] = {}
        self._lock = threading.RLock()  # reentrant: replacing a dead engine closes it here
        self._live: weakref.WeakSet[E] = weakref.WeakSet()
        self._exit_timeout = exit_timeout
        self._hooked = False

    def track(self, engine: E) -> None:
        """Close ``engine`` at interpreter exit if it is still open.

        The exit hook is registered with the first engine tracked: after the backend's own
        libraries were imported, so it runs before their exit handlers (last registered,
        first run).
        """
        with self._lock:
            self._live.add(engine)
            if not self._hooked:
                atexit.register(self._close_live)
                self._hooked = True

    def _close_live(self) -> None:
        for engine in list(self._live):
            engine.close(timeout=self._exit_timeout)

    def get(self, key: Hashable, build: Callable[[], E]) -> E:
        """The engine for ``key``, built with ``build()`` on first use."""
        with self._lock:
            engine = self._engines.get(key)
            if engine is None or engine.closed:
                if engine is not None:
                    engine.close()  # idempotent; frees what a dead engine still holds
                engine = build()
                engine._registered = (self, key)
                self._engines[key] = engine
            return engine

    def remove(self, engine: EngineClient) -> None:
        """Forget ``engine`` as a shared engine (its :meth:`~EngineClient.close` calls this)."""
        registered = getattr(engine, "_registered", None)
        if registered is None or registered[0] is not self:
            return
        with self._lock:
            if self._engines.get(registered[1]) is engine:
                del self._engines[registered[1]]

    def engines(self) -> list[E]:
        """The shared engines registered now."""
        with self._lock:
            return list(self._engines.values())

    def close_all(self) -> int:
        """Close every shared engine; returns how many were closed."""
        engines = self.engines()
        for engine in engines:
            engine.close()
        return len(engines)
