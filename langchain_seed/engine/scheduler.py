"""Admission scheduling: bookkeeping on ids and counts, never tensors.

``schedule_admission`` decides which waiting sequences join the batch within the memory
budget and the batch size, keeping a group's members together. The KV pool is laid out as
one row of ``capacity`` slots per running sequence, the capacity fitting the largest
reservation (:func:`~langchain_seed.engine.execution.kv_cache.row_capacity`), so a set of sequences
fits when ``len(set) * capacity(set) <= max_cache_tokens``: what is admitted is what is
allocated. Draft sizing lives in
:mod:`langchain_seed.engine.speculation.draft_policy`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence as Seq

from langchain_seed.engine.config import EngineConfig
from langchain_seed.engine.execution.kv_cache import row_capacity
from langchain_seed.engine.sequence import SeqStatus, SequenceState


class Scheduler:
    """Waiting queue and admission under the memory budget."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.waiting: deque[SequenceState] = deque()
        self.running: list[SequenceState] = []

    def add(self, seq: SequenceState) -> None:
        """Queue a new sequence (it joins the batch at the next step with room)."""
        seq.status = SeqStatus.WAITING
        self.waiting.append(seq)

    @property
    def has_work(self) -> bool:
        """True while any sequence runs or waits."""
        return bool(self.waiting or self.running)

    def capacity(self, seqs: Seq[SequenceState]) -> int:
        """KV slots per row that a batch of ``seqs`` needs."""
        need = max((s.reserved_tokens for s in seqs), default=1)
        return row_capacity(need, self.config.max_cache_tokens)

    def row_width(self, seqs: Seq[SequenceState], current: int) -> int:
        """KV slots per row for a batch of ``seqs`` now laid out ``current`` wide.

        The current width is kept while it is wide enough and still fits the budget (no
        re-layout of live rows); otherwise the width the batch needs.
        """
        need = self.capacity(seqs)
        if need <= current and len(seqs) * current <= self.config.max_cache_tokens:
            return current
        return need

    def fits(self, seqs: Seq[SequenceState]) -> bool:
        """True when ``seqs`` fit the KV pool together (rows x capacity within the budget)."""
        return len(seqs) * self.capacity(seqs) <= self.config.max_cache_tokens

    def schedule_admission(self) -> list[SequenceState]:
        """Pop the waiting sequences that fit, FIFO, keeping each group together.

        The waiting members of a group are admitted in one step or wait together, so
        they are prefilled once and forked. Only a group that could never fit whole (more
        members than ``max_batch_size``, or more tokens than ``max_cache_tokens``) is
        admitted in parts; its late members fork a running sibling's prompt.
        """
        admitted: list[SequenceState] = []
        slots = self.config.max_batch_size - len(self.running)
        while self.waiting and slots > 0:
            head = self.waiting[0]
            unit = self._unit(head)
            if len(unit) > slots or not self.fits([*self.running, *admitted, *unit]):
                if not self._never_fits(unit):
                    break  # wait until the whole unit fits (FIFO: nothing overtakes it)
                # Admit as many members as fit now (at least one when the batch is empty).
                part: list[SequenceState] = []
                for seq in unit:
                    if len(part) == slots:
                        break
                    if (self.running or admitted or part) and not self.fits(
                        [*self.running, *admitted, *part, seq]
                    ):
                        break
                    part.append(seq)
                if not part:
                    break
                unit = part
            for seq in unit:
                self.waiting.remove(seq)
            admitted.extend(unit)
            slots -= len(unit)
        return admitted

    def _unit(self, head: SequenceState) -> list[SequenceState]:
        """``head`` and, if it is in a group, every waiting member of its group."""
        if head.group is None:
            return [head]
        return [s for s in self.waiting if s.group == head.group]

    def _never_fits(self, unit: list[SequenceState]) -> bool:
        """True when ``unit`` could not be admitted whole even into an empty batch."""
        return len(unit) > self.config.max_batch_size or not self.fits(unit)


def queue_part(seqs: Seq[SequenceState], start: int, limit: int | None) -> int:
    """How many of ``seqs[start:]`` to queue next: all, or a part that fits ``limit``.

    A part never splits a group whose members fit in the queue together (siblings are
    admitted together); a group larger than the queue is split, its late members fork
    a running sibling's prompt at admission.
    """
    rest = len(seqs) - start
    if limit is None or rest <= limit:
        return rest
    end = start + limit
    group = seqs[end - 1].group
    if group is not None and end < len(seqs) and seqs[end].group == group:
        first = end - 1
        while first > start and seqs[first - 1].group == group:
            first -= 1
        if first > start:  # end the part before the group; it starts the next part
            return first - start
    return limit
