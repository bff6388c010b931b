"""Finishing: the finish rules, and finished requests leaving the batch (step 5).

A sequence finishes (:meth:`Finishing.append`, as step 4 keeps its tokens) on

- an EOS token of the model (unless ``ignore_eos``) or one of ``stop_token_ids``: the
  token is kept, as transformers ``generate`` keeps it;
- ``max_tokens`` generated tokens;
- a stop string in its text: the text ends before it, and the tokens after the one that
  completed it are dropped, so a speculative step ends where token-by-token decoding
  would have ended.

A streaming request (``on_delta``) gets every new piece of text that can no longer change
(:class:`~langchain_seed.engine.text.detokenizer.TextTracker`), with its tokens' logprobs
when it asks for them (:class:`~langchain_seed.engine.results.TextDelta`).

Step 5 (:meth:`Finishing.release_finished`): a finished sequence leaves the batch (the last
running row moves into its row, so rows stay contiguous), its drafter state and prefix-cache
references are released, and its future is settled with its result or its error. Cancelled
and timed-out requests are finished first, at the start of a step (:meth:`Finishing.reap`);
after a step failed, every request fails with the cause (:meth:`Finishing.fail_all`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence as Seq

from langchain_seed.engine.execution.prefix_cache import PrefixCache
from langchain_seed.engine.execution.runner import ModelRunner
from langchain_seed.engine.results import RequestCancelledError, TextDelta, TokenLogprob, settle
from langchain_seed.engine.scheduler import Scheduler
from langchain_seed.engine.sequence import SeqStatus, SequenceState
from langchain_seed.engine.speculation.drafters.base import Drafter
from langchain_seed.engine.stats import EngineStats, SpecStats
from langchain_seed.engine.text.detokenizer import TextTracker

logger = logging.getLogger(__name__)


class Finishing:
    """Finishes sequences and releases finished ones (see the module docstring).

    Args:
        eos_ids: the model's end-of-sequence token ids.
        text: the engine's detokenizer.
        scheduler: the waiting queue and the running rows.
        runners: every model whose KV rows follow the batch's rows.
        drafters: the engine's drafters (their state of a finished sequence is released).
        prefix_cache: the engine's prefix cache (a finished sequence's references go back).
    """

    def __init__(
        self,
        eos_ids: set[int],
        text: TextTracker,
        scheduler: Scheduler,
        runners: dict[str, ModelRunner],
        drafters: list[Drafter],
        prefix_cache: PrefixCache,
    ) -> None:
        self.eos_ids = eos_ids
        self.text = text
        self.scheduler = scheduler
        self.runners = runners
        self.drafters = drafters
        self.prefix_cache = prefix_cache

    def append(
        self,
        seq: SequenceState,
        tokens: list[int],
        logprobs: Seq[TokenLogprob] | None,
        totals: SpecStats,
    ) -> None:
        """Add verified ``tokens`` (and their logprobs) to ``seq``; finish it when a rule says.

        The tokens kept count in ``seq.stats`` and in ``totals`` (the engine's) before a
        streamed piece reaches the caller.
        """
        before = len(seq.output_ids)
        for i, token in enumerate(tokens):
            seq.output_ids.append(token)
            if seq.logprobs is not None and logprobs is not None:
                seq.logprobs.append(logprobs[i])
            seq.stats.generated_tokens += 1
            totals.generated_tokens += 1
            if (token in self.eos_ids and not seq.params.ignore_eos) or (
                token in seq.params.stop_token_ids
            ):
                seq.finish_reason = "stop"
                break
            if len(seq.output_ids) >= seq.params.max_tokens:
                seq.finish_reason = "length"
                break
        if self.text.update(seq):
            seq.finish_reason = "stop"
            extra = self._trim_after_stop(seq, before)
            seq.stats.generated_tokens -= extra
            totals.generated_tokens -= extra
        if seq.finish_reason is not None:
            seq.status = SeqStatus.FINISHED
        if seq.on_delta is not None:
            piece = self.text.delta(seq, final=seq.finished)
            if piece:
                seq.on_delta(_with_logprobs(seq, piece))

    def _trim_after_stop(self, seq: SequenceState, before: int) -> int:
        """Drop the tokens after the one that completed a stop string; returns how many."""
        for end in range(before + 1, len(seq.output_ids)):
            text = self.text.decode(seq.output_ids[:end])
            if any(stop in text for stop in seq.params.stop):
                extra = len(seq.output_ids) - end
                del seq.output_ids[end:]
                if seq.logprobs is not None:
                    del seq.logprobs[end:]
                return extra
        return 0

    # ----- step 5 ------------------------------------------------------------------
    def reap(self, stats: EngineStats) -> None:
        """Finish cancelled and timed-out requests (running or waiting)."""
        now = time.monotonic()
        for seq in list(self.scheduler.waiting) + self.scheduler.running:
            if seq.future.cancelled():
                seq.fail(RequestCancelledError(f"request {seq.seq_id} cancelled"))
                stats.requests_cancelled += 1
            elif seq.deadline is not None and now > seq.deadline:
                seq.fail(seq.timeout_error())
        waiting = [s for s in self.scheduler.waiting if s.finished]
        for seq in waiting:
            self.scheduler.waiting.remove(seq)
            self._settle(seq, stats)
        self.release_finished(stats)

    def release_finished(self, stats: EngineStats) -> None:
        """Settle finished sequences and keep the rows of running ones contiguous."""
        running = self.scheduler.running
        i = 0
        while i < len(running):
            seq = running[i]
            if not seq.finished:
                i += 1
                continue
            last = running[-1]
            if last is not seq:
                for runner in self.runners.values():
                    runner.cache.move_row(last.row, seq.row)
                last.row = seq.row
                running[i] = last
            running.pop()
            self._settle(seq, stats)

    def _settle(self, seq: SequenceState, stats: EngineStats) -> None:
        """Release a finished sequence's state and settle its future (result or error)."""
        for drafter in self.drafters:
            drafter.release(seq)
        self.prefix_cache.release(seq.prefix_handle)
        seq.prefix_handle = None
        seq.row = -1
        error = seq.meta.get("error")
        if error is not None:
            if not isinstance(error, RequestCancelledError):
                stats.requests_failed += 1
            seq.status = SeqStatus.FINISHED
            settle(seq.future, error)
            return
        stats.requests_finished += 1
        settle(seq.future, seq.result())

    def fail_all(
        self,
        exc: BaseException,
        include_waiting: bool,
        also: Seq[SequenceState],
        stats: EngineStats,
    ) -> None:
        """Fail every running request (and waiting ones, and ``also``) with ``exc``.

        After a failed step the KV rows may be half written, so no row is moved: every
        affected request is settled with the cause, and its drafter state (consensus group
        membership, model-draft bookkeeping) and prefix-cache references are released.
        """
        seqs = [*also, *self.scheduler.running]
        self.scheduler.running.clear()
        if include_waiting:
            seqs += self.scheduler.waiting
            self.scheduler.waiting.clear()
        for seq in seqs:
            seq.fail(exc)
            try:
                self._settle(seq, stats)
            except Exception:  # releasing drafter state failed: the caller still hears why
                logger.exception("releasing request %s failed", seq.seq_id)
                stats.requests_failed += 1
                seq.status = SeqStatus.FINISHED
                settle(seq.future, seq.meta.get("error", exc))


def _with_logprobs(seq: SequenceState, piece: str) -> str:
    """``piece`` as a :class:`TextDelta` with the entries not streamed yet, if asked for."""
    if seq.logprobs is None:
        return piece
    fresh, seq.streamed_logprobs = seq.logprobs[seq.streamed_logprobs :], len(seq.logprobs)
    return TextDelta(piece, fresh)
