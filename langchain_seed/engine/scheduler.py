"""Scheduling policies: bookkeeping on ids and counts, never tensors.

``schedule_admission`` decides which waiting sequences join the batch (memory budget);
``choose_gamma`` sizes the drafts so that speculation never costs more than it saves, from
a linear cost model of a target forward fitted online:

    step_time(positions) ~= c0 + c1 * positions

A verification forward pads every row to the longest one, so a step whose longest draft
has ``q`` tokens costs ``step_time(b * (q + 1))`` for ``b`` rows, however short the other
drafts are. A sequence whose drafts are accepted with probability ``a`` gains ``a**k``
expected tokens from its k-th draft token. ``choose_gamma`` picks the ``q`` (0 .. gamma)
with the most expected tokens per second and lets every sequence draft up to it; when no
``q > 0`` beats plain decoding (useless drafts, or a compute-bound batch where extra
positions cost what they would save) it is 0 and the step is exactly an autoregressive
step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence as Seq

from langchain_seed.engine.config import EngineConfig
from langchain_seed.engine.sequence import SeqStatus, Sequence

ACCEPTANCE_PRIOR = 0.6
ACCEPTANCE_DECAY = 0.7  # weight of the old estimate in the running acceptance average
PROBE_EVERY = 16  # until the cost model is fitted, every 16th step drafts one token


class CostModel:
    """Least-squares fit of ``seconds = c0 + c1 * tokens`` over recent forwards."""

    def __init__(self, c0: float = 1.0, c1: float = 0.15, window: int = 64) -> None:
        self.c0, self.c1 = c0, c1
        self.window = window
        self.samples: deque[tuple[int, float]] = deque(maxlen=window)
        self.fitted = False
        """True once the coefficients come from measurements rather than the prior."""

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
        self.fitted = True

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
        self._gamma_calls = 0

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

    def choose_gamma(
        self,
        seqs: Seq[Sequence],
        available: Seq[int],
        acceptance: Seq[float],
        extra_cost: float = 0.0,
    ) -> list[int]:
        """Draft length per sequence maximizing the batch's expected tokens per second.

        Args:
            seqs: running sequences (one verification each, one padded forward in all).
            available: most draft tokens each may get (drafts found, gamma cap, tokens left).
            acceptance: estimated per-token acceptance probability of each sequence's draft.
            extra_cost: seconds each draft position adds besides the verification (one
                forward of the draft model over the batch), in the cost model's units.

        Returns:
            gamma per sequence, ``0 <= gamma[i] <= available[i]``; the same cap ``q`` for
            all (drafts shorter than the longest one are free: the forward pads to it).
        """
        b = len(seqs)
        if b == 0:
            return []
        best_q, best_rate = 0, b / self.cost.step_time(b)
        expected = float(b)  # every verification yields one token
        for q in range(1, max(available, default=0) + 1):
            expected += sum(a**q for a, n in zip(acceptance, available) if n >= q and a > 0)
            rate = expected / (self.cost.step_time(b * (q + 1)) + q * extra_cost)
            if rate > best_rate:
                best_q, best_rate = q, rate
        self._gamma_calls += 1
        if best_q == 0 and not self.cost.fitted and self._gamma_calls % PROBE_EVERY == 0:
            # Steps of one shape teach the cost model nothing about extra positions: an
            # occasional one-token draft measures them (until the model is fitted).
            best_q = 1
        return [min(best_q, n) for n in available]


def update_acceptance(seq: Sequence, drafter: str, drafted: int, accepted: int) -> None:
    """Fold one verification into the sequence's running acceptance estimate for ``drafter``."""
    if drafted <= 0:
        return
    # Per-token acceptance implied by the accepted run: a truncated geometric estimate.
    observed = accepted / drafted if accepted < drafted else min(0.95, accepted / (accepted + 0.5))
    old = seq.acceptance_by_drafter.get(drafter, ACCEPTANCE_PRIOR)
    seq.acceptance_by_drafter[drafter] = ACCEPTANCE_DECAY * old + (1 - ACCEPTANCE_DECAY) * observed
