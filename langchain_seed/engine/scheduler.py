"""Scheduling policies: bookkeeping on ids and counts, never tensors.

``schedule_admission`` decides which waiting sequences join the batch (memory budget);
``choose_gamma`` sizes each sequence's draft so that speculation never costs more than
it saves, from a linear cost model of a target forward fitted online:

    step_time(tokens fed) ~= c0 + c1 * tokens

A sequence whose drafts are accepted with probability ``a`` gains ``a**k`` expected
tokens from its k-th draft token at a cost of ``c1`` (plus the per-token share of the
draft model's forwards when a model drafts). Draft tokens are added greedily, best
marginal gain first, while they raise the batch's expected tokens per second; with no
useful drafts every gamma is 0 and the step is exactly an autoregressive step.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence as Seq

from langchain_seed.engine.config import EngineConfig
from langchain_seed.engine.sequence import SeqStatus, Sequence

ACCEPTANCE_PRIOR = 0.6
ACCEPTANCE_DECAY = 0.7  # weight of the old estimate in the running acceptance average


class CostModel:
    """Least-squares fit of ``seconds = c0 + c1 * tokens`` over recent forwards."""

    def __init__(self, c0: float = 1.0, c1: float = 0.15, window: int = 64) -> None:
        self.c0, self.c1 = c0, c1
        self.window = window
        self.samples: deque[tuple[int, float]] = deque(maxlen=window)

    def observe(self, tokens: int, seconds: float) -> None:
        """Record one forward that processed ``tokens`` positions in ``seconds``."""
        self.samples.append((tokens, seconds))
        if len(self.samples) < 8:
            return
        n = len(self.samples)
        mean_x = sum(x for x, _ in self.samples) / n
        mean_y = sum(y for _, y in self.samples) / n
        var = sum((x - mean_x) ** 2 for x, _ in self.samples)
        if var < 1e-9:
            return
        slope = sum((x - mean_x) * (y - mean_y) for x, y in self.samples) / var
        intercept = mean_y - slope * mean_x
        if intercept <= 0:
            return
        # Keep the ratio in a sane range: timings on a busy machine are noisy.
        self.c0 = intercept
        self.c1 = min(max(slope, 0.002 * intercept), intercept)

    def step_time(self, tokens: int) -> float:
        """Predicted seconds of a forward over ``tokens`` positions."""
        return self.c0 + self.c1 * tokens


class Scheduler:
    """Waiting queue, admission under the memory budget, and draft sizing."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.cost = CostModel()
        self.draft_cost = CostModel(c0=0.3, c1=0.02)

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
        """Pop the waiting sequences that fit (FIFO; group siblings are kept together)."""
        admitted: list[Sequence] = []
        budget = self.config.max_cache_tokens - self.reserved_tokens()
        slots = self.config.max_batch_size - len(self.running)
        while self.waiting and slots > 0:
            seq = self.waiting[0]
            if seq.reserved_tokens > budget and (self.running or admitted):
                break
            self.waiting.popleft()
            admitted.append(seq)
            budget -= seq.reserved_tokens
            slots -= 1
        return admitted

    def choose_gamma(
        self,
        seqs: Seq[Sequence],
        available: Seq[int],
        acceptance: Seq[float],
        extra_cost: float = 0.0,
    ) -> list[int]:
        """Draft length per sequence maximizing expected tokens per second.

        Args:
            seqs: running sequences (one verification each).
            available: most draft tokens each may get (drafts found, gamma cap, tokens left).
            acceptance: estimated per-token acceptance probability of each sequence's draft.
            extra_cost: seconds each draft token adds besides the verification (the draft
                model's share), in the cost model's units.

        Returns:
            gamma per sequence, ``0 <= gamma[i] <= available[i]``.
        """
        gammas = [0] * len(seqs)
        expected = float(len(seqs))  # every verification yields one token
        seconds = self.cost.step_time(len(seqs))
        unit = self.cost.c1 + extra_cost
        heap = [(-a, i, 1) for i, a in enumerate(acceptance) if available[i] > 0 and a > 0]
        heapq.heapify(heap)
        while heap:
            neg_gain, i, k = heapq.heappop(heap)
            gain = -neg_gain
            # Adding the draft improves throughput iff gain / unit > expected / seconds.
            if gain * seconds <= expected * unit:
                break
            gammas[i] = k
            expected += gain
            seconds += unit
            if k < available[i]:
                heapq.heappush(heap, (-(acceptance[i] ** (k + 1)), i, k + 1))
        return gammas


def update_acceptance(seq: Sequence, drafter: str, drafted: int, accepted: int) -> None:
    """Fold one verification into the sequence's running acceptance estimate for ``drafter``."""
    if drafted <= 0:
        return
    # Per-token acceptance implied by the accepted run: a truncated geometric estimate.
    observed = accepted / drafted if accepted < drafted else min(0.95, accepted / (accepted + 0.5))
    old = seq.acceptance_by_drafter.get(drafter, ACCEPTANCE_PRIOR)
    seq.acceptance_by_drafter[drafter] = ACCEPTANCE_DECAY * old + (1 - ACCEPTANCE_DECAY) * observed
