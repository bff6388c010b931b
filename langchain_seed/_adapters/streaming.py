"""One engine request read piece by piece as the engine decodes it.

The engine thread never runs LangChain code: text pieces reach the caller's thread or event
loop through a queue, and callbacks fire there.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, cast

from langchain_seed.engine.config import SamplingParams
from langchain_seed.engine.serving.client import Prompt

if TYPE_CHECKING:
    from langchain_seed.engine import GenerationResult
    from langchain_seed.engine.serving.client import EngineClient

_DONE = object()


class DeltaStream:
    """One engine request whose text arrives piece by piece.

    Iterate it (``for piece in stream``) on the caller's thread, or ``async for`` it when it
    was opened with ``loop=``. A request that asks for logprobs yields
    :class:`~langchain_seed.engine.TextDelta` pieces (``piece.logprobs``). Leaving the
    iteration early cancels the request. Build one with :func:`open_stream` (or
    :meth:`DeltaStream.of_future` for a request submitted without streaming).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._aqueue: asyncio.Queue[object] | None = asyncio.Queue() if loop else None
        self.future: Future[GenerationResult] = Future()
        self.streamed_logprobs = 0
        """Logprob entries the pieces yielded so far carried (:class:`TextDelta`)."""

    def _attach(self, future: Future[GenerationResult]) -> None:
        self.future = future
        future.add_done_callback(lambda _: self._put(_DONE))

    def _put(self, item: object) -> None:
        if self._loop is None or self._aqueue is None:
            self._queue.put(item)
            return
        try:
            self._loop.call_soon_threadsafe(self._aqueue.put_nowait, item)
        except RuntimeError:  # the caller's loop is closed: nobody reads any more
            self.future.cancel()

    @classmethod
    def of_future(
        cls, future: Future[GenerationResult], loop: asyncio.AbstractEventLoop | None = None
    ) -> DeltaStream:
        """A request submitted without streaming (ahead of its run): its text comes whole."""
        stream = cls(loop)
        future.add_done_callback(stream._put_whole_text)
        stream._attach(future)
        return stream

    def _put_whole_text(self, future: Future[GenerationResult]) -> None:
        if not future.cancelled() and future.exception() is None:
            self._put(future.result().text)

    def __iter__(self) -> Iterator[str]:
        try:
            while (item := self._queue.get()) is not _DONE:
                yield self._piece(item)
        finally:
            self.future.cancel()  # no-op once resolved

    async def __aiter__(self) -> AsyncIterator[str]:
        if self._aqueue is None:
            raise RuntimeError("DeltaStream was opened without an event loop")
        try:
            while (item := await self._aqueue.get()) is not _DONE:
                yield self._piece(item)
        finally:
            self.future.cancel()

    def _piece(self, item: object) -> str:
        """A queued piece as it is yielded: a :class:`TextDelta` stays one (its logprobs)."""
        piece = cast(str, item)
        self.streamed_logprobs += len(getattr(piece, "logprobs", ()))
        return piece

    def result(self) -> GenerationResult:
        """The finished request (raises the request's error)."""
        return self.future.result()


def open_stream(
    engine: EngineClient,
    prompt: Prompt,
    params: SamplingParams,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
) -> DeltaStream:
    """Submit one request and read its text as it is decoded."""
    stream = DeltaStream(loop)
    stream._attach(engine.submit(prompt, params, on_delta=stream._put))
    return stream
