"""Request coalescing: identical deterministic samples of a group decode once.

A Tree-of-Thoughts value phase at temperature 0 asks for ``n_evaluate_sample`` samples of
each prompt (3 in the ToT paper's Game of 24), and greedy samples of one prompt are one
sample ``n`` times. Requests of one
:meth:`~langchain_seed.engine.serving.service.EngineService.submit_many` call in the same group
(the ``n`` samples of a prompt, as the LangChain classes submit them) with the same prompt
ids and the same *deterministic* parameters (greedy, or one seed: the engine repeats a
seeded request) are decoded as one sequence, the *leader*; every request still gets its
own future and its own :class:`~langchain_seed.engine.results.GenerationResult` (its own
``request_id``). Output is what each request would get alone, since a deterministic
request's output does not depend on its neighbours (float32; the lossless rules of
:mod:`~langchain_seed.engine.speculation.verification`). Requests outside
a group are left alone (a caller may repeat a prompt on purpose, to load the engine).

- The leader decodes under an internal future; the callers' futures are *views* of it.
- Cancelling a view resolves that view only; the leader is cancelled (and its sequence
  freed) once every view is cancelled.
- A failure of the leader (timeout, engine error) fails every view with the same error.
- Streaming submissions (``on_delta``) are never coalesced: every request streams its own
  deltas.

vLLM's backend does the same for greedy groups (:mod:`langchain_seed.backends.vllm`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence as Seq
from concurrent.futures import Future
from typing import Any

from langchain_seed.engine.results import GenerationResult, RequestCancelledError, settle
from langchain_seed.engine.sequence import SequenceState

COALESCED = "coalesced"
"""``SequenceState.meta`` key: how many other requests a leader decodes for."""


def coalesce(seqs: Seq[SequenceState]) -> list[SequenceState]:
    """The sequences to queue for ``seqs``: one per distinct deterministic request of a group.

    Each sequence's ``future`` (what the caller holds) stays the caller's; a leader with
    followers gets an internal future, and its views are resolved from that one.

    Args:
        seqs: the sequences of one submission, each with its caller-facing future.

    Returns:
        ``seqs`` without the followers (order kept).
    """
    leaders: dict[tuple[Any, ...], SequenceState] = {}
    followers: dict[int, list[SequenceState]] = {}
    queued: list[SequenceState] = []
    for seq in seqs:
        key = _key(seq)
        leader = leaders.get(key) if key is not None else None
        if leader is None:
            if key is not None:
                leaders[key] = seq
            queued.append(seq)
        else:
            followers.setdefault(leader.seq_id, []).append(seq)
    for leader in queued:
        rest = followers.get(leader.seq_id)
        if rest:
            _share(leader, rest)
    return queued


def _key(seq: SequenceState) -> tuple[Any, ...] | None:
    """What makes two requests identical, or ``None`` for a request that is not deterministic."""
    params = seq.params
    if seq.group is None or seq.on_delta is not None:
        return None
    if not (params.greedy or params.seed is not None):
        return None
    fields = tuple(getattr(params, f.name) for f in dataclasses.fields(params))
    return (seq.group, tuple(seq.prompt_ids), fields)


def _share(leader: SequenceState, followers: list[SequenceState]) -> None:
    """Decode ``leader`` under an internal future; resolve every view's future from it."""
    views = [leader, *followers]
    futures: list[Future[GenerationResult]] = [view.future for view in views]
    internal: Future[GenerationResult] = Future()
    leader.future = internal
    leader.meta[COALESCED] = len(followers)

    def resolve(done: Future[GenerationResult]) -> None:
        for view, future in zip(views, futures):  # a view cancelled meanwhile stays cancelled
            if done.cancelled():
                settle(future, RequestCancelledError(f"request {view.seq_id} cancelled"))
            elif (error := done.exception()) is not None:
                settle(future, error)
            else:
                result = done.result()
                settle(
                    future,
                    dataclasses.replace(
                        result,
                        token_ids=list(result.token_ids),
                        logprobs=None if result.logprobs is None else list(result.logprobs),
                        stats=copy.deepcopy(result.stats),
                        request_id=view.seq_id,
                    ),
                )

    def on_view_done(future: Future[GenerationResult]) -> None:
        if future.cancelled() and all(f.cancelled() for f in futures):
            internal.cancel()  # nobody waits any more: the engine frees the sequence

    internal.add_done_callback(resolve)
    for future in futures:
        future.add_done_callback(on_view_done)
