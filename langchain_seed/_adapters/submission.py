"""Handing a call's requests to the engine, and each run its own.

- :func:`submit_call`: every prompt of one call in one submission (the ``n`` samples of a
  prompt as one engine group); :func:`wait_all` / :func:`await_all` wait on the futures.
- :class:`Handoff`: LangChain runs a batch, or a ``generate`` of several inputs, as one run
  per input (threads, tasks or a loop). So that every input reaches the engine at once, the
  call renders and submits every input before the runs start, and hands each run the
  futures of its own input: the call's :class:`Handoff` is in scope while its runs execute
  (:func:`handing_over`), each run takes its entry by a key that names its input (the
  input object itself, or the message objects LangChain hands the run), and the call's
  :class:`~langchain_seed._adapters.options.CallOptions` come with it, so no run parses
  them again. Entries no run takes (a run that failed before it submitted) are cancelled
  when the call ends.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import defaultdict, deque
from collections.abc import Hashable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from typing import TYPE_CHECKING

from langchain_seed._adapters.options import CallOptions
from langchain_seed.engine.config import sample_seed
from langchain_seed.engine.serving.client import Prompt

if TYPE_CHECKING:
    from langchain_seed.engine import GenerationResult
    from langchain_seed.engine.serving.client import EngineClient

Futures = list[list["Future[GenerationResult]"]]
"""``futures[prompt][sample]`` of one call."""


def submit_call(engine: EngineClient, prompts: Sequence[Prompt], options: CallOptions) -> Futures:
    """Hand every prompt of one call to the engine together -> futures[prompt][sample].

    With ``n == 1`` all prompts go in one ``submit_many``. With ``n > 1`` the ``n`` samples of
    prompt i form one engine group (prefilled once, consensus drafting across samples); the
    groups are submitted back to back, before any result is awaited. If a submission fails,
    the requests already submitted are cancelled and the error is raised.
    """
    params, n = options.params, options.n
    if n == 1:
        return [[future] for future in engine.submit_many(list(prompts), params)]
    samples = [params] * n
    if params.seed is not None:  # seed + j, wrapped into the seed range past 2**64 - 1
        samples = [replace(params, seed=sample_seed(params.seed, j)) for j in range(n)]
    submitted: Futures = []
    try:
        for prompt in prompts:
            group = f"lc-{uuid.uuid4().hex[:12]}"
            submitted.append(list(engine.submit_many([prompt] * n, samples, group=group)))
    except BaseException:
        cancel_all(submitted)
        raise
    return submitted


def cancel_all(futures: Futures) -> None:
    """Cancel every future not yet resolved (the engine frees their slots at its next step)."""
    for row in futures:
        for future in row:
            future.cancel()


def wait_all(futures: Futures) -> list[list[GenerationResult]]:
    """Block until every request resolves; on the first error cancel the rest and raise it."""
    try:
        return [[future.result() for future in row] for row in futures]
    except BaseException:
        cancel_all(futures)
        raise


async def await_all(futures: Futures) -> list[list[GenerationResult]]:
    """Await every request on the running loop (no thread per request).

    Cancelling the awaiting task, or the first error, cancels the remaining requests.
    """
    flat = [asyncio.wrap_future(future) for row in futures for future in row]
    try:
        results = await asyncio.gather(*flat)
    except BaseException:
        cancel_all(futures)
        raise
    shaped: list[list[GenerationResult]] = []
    for row in futures:
        shaped.append(results[: len(row)])
        results = results[len(row) :]
    return shaped


# ---------------------------------------------------------------------------------------
# Handing each run its own requests


class Handoff:
    """One call's options and the requests it submitted for its runs, by the runs' keys.

    Args:
        model: the model whose runs take from it.
        options: the call's options (the runs use them as they are).
        entries: ``(key, futures of one input)`` for the inputs submitted ahead; a key may
            repeat (the same input twice), its entries are taken in order.
        only: the one input's futures of a call that has one input (any key takes it).
    """

    def __init__(
        self,
        model: object,
        options: CallOptions,
        entries: Sequence[tuple[Hashable, list[Future[GenerationResult]]]] = (),
        only: list[Future[GenerationResult]] | None = None,
    ) -> None:
        self.model = model
        self.options = options
        self._lock = threading.Lock()
        self._entries: dict[Hashable, deque[list[Future[GenerationResult]]]] = defaultdict(deque)
        for key, row in entries:
            self._entries[key].append(row)
        self._only = only

    def take(self, key: Hashable) -> list[Future[GenerationResult]] | None:
        """The futures of the run whose input ``key`` names, or ``None`` (not submitted)."""
        with self._lock:
            if self._only is not None:
                only, self._only = self._only, None
                return only
            queue = self._entries.get(key)
            return queue.popleft() if queue else None

    def cancel_rest(self) -> None:
        """Cancel the requests no run took."""
        with self._lock:
            rest = [row for queue in self._entries.values() for row in queue]
            if self._only is not None:
                rest.append(self._only)
            self._entries.clear()
            self._only = None
        cancel_all(rest)


_BATCH: ContextVar[Handoff | None] = ContextVar("langchain_seed_batch", default=None)
"""A batch's hand-off, taken by the per-input runs (``invoke``) by their input object."""
_CALL: ContextVar[Handoff | None] = ContextVar("langchain_seed_call", default=None)
"""A ``generate`` call's hand-off, taken by its runs (``_generate`` / ``_stream``)."""


@contextmanager
def handing_over(handoff: Handoff, *, batch: bool = False) -> Iterator[Handoff]:
    """Put ``handoff`` in scope for the runs started inside; cancel what they leave.

    LangChain copies the context into the worker threads and tasks of a batch, so the runs
    of this call see it (and a call nested inside hands over its own).
    """
    var = _BATCH if batch else _CALL
    token = var.set(handoff)
    try:
        yield handoff
    finally:
        var.reset(token)
        handoff.cancel_rest()


def handed_over(model: object, *, batch: bool = False) -> Handoff | None:
    """The hand-off in scope for ``model``'s runs, or ``None``."""
    handoff = (_BATCH if batch else _CALL).get()
    return handoff if handoff is not None and handoff.model is model else None
