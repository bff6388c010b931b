"""Admission scheduling: bookkeeping on ids and counts, never tensors.

``schedule_admission`` decides which waiting sequences join the batch within the memory
budget and the batch size, keeping a group's members together. Draft sizing lives in
:mod:`langchain_seed.engine.draft_policy`.
"""

from __future__ import annotations

from collections import deque

from langchain_seed.engine.config import EngineConfig
from langchain_seed.engine.sequence import SeqStatus, Sequence


class Scheduler:
    """Waiting queue and admission under the memory budget."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        """Queue a new sequence (it joins the batch at the next step with room)."""
        seq.status = SeqStatus.WAITING
        self.waiting.append(seq)

    @property
    def has_work(self) -> bool:
        """True while any sequence runs or waits."""
        return bool(self.waiting or self.running)

    def reserved_tokens(self) -> int:
        """Cache tokens reserved by the running sequences."""
        return sum(s.reserved_tokens for s in self.running)

    def schedule_admission(self) -> list[Sequence]:
        """Pop the waiting sequences that fit, FIFO, keeping each group together.

        The waiting members of a group are admitted in one step or wait together, so
        they are prefilled once and forked. Only a group that could never fit whole (more
        members than ``max_batch_size``, or more tokens than ``max_cache_tokens``) is
        admitted in parts; its late members fork a running sibling's prompt.
        """
        admitted: list[Sequence] = []
        budget = self.config.max_cache_tokens - self.reserved_tokens()
        slots = self.config.max_batch_size - len(self.running)
        while self.waiting and slots > 0:
            head = self.waiting[0]
            unit = self._unit(head)
            tokens = sum(s.reserved_tokens for s in unit)
            if len(unit) > slots or tokens > budget:
                if not self._never_fits(unit):
                    break  # wait until the whole unit fits (FIFO: nothing overtakes it)
                # Admit as many members as fit now (at least one when the batch is empty).
                part: list[Sequence] = []
                for seq in unit:
                    if len(part) == slots:
                        break
                    if seq.reserved_tokens > budget and (self.running or admitted or part):
                        break
                    part.append(seq)
                    budget -= seq.reserved_tokens
                if not part:
                    break
                unit, tokens = part, 0
            else:
                budget -= tokens
            for seq in unit:
                self.waiting.remove(seq)
            admitted.extend(unit)
            slots -= len(unit)
        return admitted

    def _unit(self, head: Sequence) -> list[Sequence]:
        """``head`` and, if it is in a group, every waiting member of its group."""
        if head.group is None:
            return [head]
        return [s for s in self.waiting if s.group == head.group]

    def _never_fits(self, unit: list[Sequence]) -> bool:
        """True when ``unit`` could not be admitted whole even into an empty batch."""
        tokens = sum(s.reserved_tokens for s in unit)
        return len(unit) > self.config.max_batch_size or tokens > self.config.max_cache_tokens
