"""Handing a call's requests to the engine, and waiting for them.

- :func:`submit_call`: every prompt of one call in one submission (the ``n`` samples of a
  prompt as one engine group); :func:`wait_all` / :func:`await_all` wait on the futures.
- :func:`submitted_together` and :func:`submit_all`: batch pre-submission. LangChain runs a
  batch as one run per input (threads, tasks or a loop); :func:`submitted_together` submits
  every input first, and each run's :func:`submit_all` takes its futures instead of
  submitting again, so the whole batch reaches the engine at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from langchain_seed.engine.config import SamplingParams, sample_seed
from langchain_seed.engine.serving.client import Prompt

if TYPE_CHECKING:
    from langchain_seed.engine import GenerationResult
    from langchain_seed.engine.serving.client import EngineClient

logger = logging.getLogger(__name__)

Futures = list[list["Future[GenerationResult]"]]
"""``futures[prompt][sample]`` of one call."""


def submit_call(
    engine: EngineClient, prompts: Sequence[Prompt], params: SamplingParams, n: int
) -> Futures:
    """Hand every prompt of one call to the engine together -> futures[prompt][sample].

    With ``n == 1`` all prompts go in one ``submit_many``. With ``n > 1`` the ``n`` samples of
    prompt i form one engine group (prefilled once, consensus drafting across samples); the
    groups are submitted back to back, before any result is awaited. If a submission fails,
    the requests already submitted are cancelled and the error is raised.
    """
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
# Batch pre-submission


@dataclass
class _Waiting:
    engine: EngineClient
    prompt: Prompt
    params: SamplingParams
    n: int
    futures: list[Future[GenerationResult]]


class _Submitted:
    """Requests of one batch already handed to the engine, each waiting for its run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[_Waiting] = []

    def add(
        self,
        engine: EngineClient,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        n: int,
        futures: Futures,
    ) -> None:
        with self._lock:
            for prompt, row in zip(prompts, futures, strict=True):
                self._waiting.append(_Waiting(engine, prompt, params, n, row))

    def take(
        self, engine: EngineClient, prompt: Prompt, params: SamplingParams, n: int
    ) -> list[Future[GenerationResult]] | None:
        with self._lock:
            for i, entry in enumerate(self._waiting):
                same = entry.engine is engine and entry.prompt == prompt and entry.n == n
                if same and entry.params == params:
                    return self._waiting.pop(i).futures
        return None

    def cancel_rest(self) -> None:
        with self._lock:
            cancel_all([entry.futures for entry in self._waiting])
            self._waiting.clear()


_SUBMITTED: ContextVar[_Submitted | None] = ContextVar("langchain_seed_submitted", default=None)
"""The pre-submitted batch the current run belongs to (LangChain copies the context into the
worker threads and tasks of a batch)."""


@contextmanager
def submitted_together(
    engine: EngineClient, prompts: Sequence[Prompt], params: SamplingParams, n: int
) -> Iterator[None]:
    """Submit ``prompts`` now; runs started inside take their futures with :func:`submit_all`.

    The caller leaves out prompts the engine would refuse, so that their runs raise their
    own errors. If the submission fails, nothing is pre-submitted. Requests no run takes (a
    run that failed before submitting, a cache hit) are cancelled on exit.
    """
    submitted = _Submitted()
    try:
        # A scope inside another one (a generate inside a batch) takes over what the outer
        # scope submitted for these prompts.
        submitted.add(engine, prompts, params, n, submit_all(engine, prompts, params, n))
    except Exception:  # each run then submits on its own and reports its own error
        logger.debug("batch pre-submission skipped", exc_info=True)
    token = _SUBMITTED.set(submitted)
    try:
        yield
    finally:
        _SUBMITTED.reset(token)
        submitted.cancel_rest()


def take(
    engine: EngineClient, prompt: Prompt, params: SamplingParams, n: int
) -> list[Future[GenerationResult]] | None:
    """The futures of this request if the current batch submitted it to ``engine``, else None."""
    submitted = _SUBMITTED.get()
    return submitted.take(engine, prompt, params, n) if submitted is not None else None


def submit_all(
    engine: EngineClient, prompts: Sequence[Prompt], params: SamplingParams, n: int
) -> Futures:
    """The futures of one run: taken from its batch's pre-submission, the rest submitted now.

    If submitting the rest fails, the taken requests are cancelled too.
    """
    futures = [take(engine, p, params, n) for p in prompts]
    missing = [i for i, row in enumerate(futures) if row is None]
    if missing:
        try:
            fresh = submit_call(engine, [prompts[i] for i in missing], params, n)
        except BaseException:
            cancel_all([row for row in futures if row is not None])
            raise
        for i, row in zip(missing, fresh, strict=True):
            futures[i] = row
    return [row for row in futures if row is not None]
