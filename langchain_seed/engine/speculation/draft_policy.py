"""Draft policy: which draft each sequence verifies and how long, from measured numbers only.

A verification step feeds each of its ``b`` rows its pending token plus its draft. The
runner computes ``t`` token positions for it: ``b + sum(draft lengths)`` when the forward
is packed (:mod:`~langchain_seed.engine.execution.packing`, ragged drafts cost only their own
tokens), ``b * (longest draft + 1)`` when every row is padded to the longest. Two models,
refitted every step, decide the lengths:

- :class:`StepCost`: ``log seconds = load + shape(b, t)``. ``shape`` is a table of measured
  relative costs by ``(b, t)`` (the cost is not linear in ``t``: at batch 1 on a CPU,
  2 positions can cost more than 5); ``load`` is one common factor that follows the machine
  (another process on the cores inflates every entry alike). A shape's first timing sets
  its entry against the current load; later ones split the surprise between the entry
  (a share of ``1 / n`` for its ``n``-th timing, never under :data:`SHAPE_RATE`) and
  ``load``, so an entry measured once is not mistaken for a change of load, and a change
  of load moves every entry alike. An unmeasured entry between two measured ones of its
  batch size is interpolated; otherwise it is priced from the plain step of that batch
  size grown by ``(PRIOR_OVERHEAD_TOKENS + t) / (PRIOR_OVERHEAD_TOKENS + b)``.
- :class:`Acceptance`: the acceptance :class:`Rate` of each kind of draft (a drafter, or a
  drafter's evidence class such as ``ngram/3``, a 3-token prompt-lookup match), counted
  engine-wide (greedy or sampled) and per sequence: ``first``, the first draft token's
  acceptance, and ``then``, each next token's after an accepted one. A verification of
  ``g`` draft tokens that accepted ``k`` is a truncated geometric observation of both. A
  new sequence starts from the engine-wide rates, not from a fixed prior.

With rate ``r_i`` per sequence, the ``k``-th token of row ``i``'s draft is worth
``r_i.first * r_i.then ** (k - 1)`` expected tokens. :meth:`DraftPolicy.choose_length`
picks the lengths with the most expected tokens per second: packed, the ``E`` most
valuable draft tokens of the whole batch for the best ``E``; padded, one cap for every
row. It drafts nothing unless that is predicted to beat a plain autoregressive step by
:data:`MIN_GAIN`.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections import deque
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_seed.engine.speculation.drafters.base import Draft

if TYPE_CHECKING:
    from langchain_seed.engine.sequence import SequenceState

logger = logging.getLogger(__name__)

PRIOR_OVERHEAD_TOKENS = 16.0
"""Before a shape is measured, a step is priced as ``overhead + t`` tokens, the overhead
(weights read, kernel launches, the host) worth this many tokens of work."""
MIN_GAIN = 1.02
"""A draft length must beat plain decoding by 2% in predicted tokens per second."""
LOAD_RATE = 0.5  # share of the rest of a surprise taken by the common load factor
SHAPE_RATE = 0.2  # least share of a surprise taken by the observed (b, t) entry
ACCEPTANCE_PRIOR = (1.0, 1.0)  # pseudo (successes, failures) of an unmeasured drafter: a = 0.5
SEQUENCE_WEIGHT = 4.0  # pseudo-observations of the engine-wide estimate in a sequence's
ENGINE_DECAY = 0.998  # engine-wide counts forget slowly: drafters' luck changes with the work


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


class StepCost:
    """Relative cost of a verification forward by ``(rows, computed token positions)``."""

    def __init__(self) -> None:
        self.load = 0.0  # log seconds of the common factor
        self.shape: dict[tuple[int, int], float] = {}  # (b, t) -> log relative cost
        self._timings: dict[tuple[int, int], int] = {}  # (b, t) -> timings folded in
        self._by_rows: dict[int, list[int]] = {}  # b -> sorted measured t

    def relative(self, b: int, t: int) -> float | None:
        """Predicted cost of ``(b, t)`` in load units, or ``None`` with nothing measured yet."""
        if (b, t) in self.shape:
            return math.exp(self.shape[(b, t)])
        measured = self._by_rows.get(b)
        if measured:
            i = bisect.bisect_left(measured, t)
            if 0 < i < len(measured):  # between two measured entries of this batch size
                lo, hi = measured[i - 1], measured[i]
                w = (t - lo) / (hi - lo)
                return math.exp((1 - w) * self.shape[(b, lo)] + w * self.shape[(b, hi)])
            if i == 0:  # below every measured entry: grown from the smallest
                return math.exp(self.shape[(b, measured[0])]) * _growth(measured[0], t)
        # Past the measured range: from the plain step, so that one dear measured shape
        # (at batch 1 on a CPU, 2-3 positions can cost more than 5) does not price every
        # longer draft out before it is tried.
        plain = self._plain(b)
        return None if plain is None else plain * _growth(b, t)

    def seconds(self, b: int, t: int) -> float | None:
        """Predicted seconds of ``(b, t)`` at the current load."""
        rel = self.relative(b, t)
        return None if rel is None else rel * math.exp(self.load)

    def observe(self, b: int, t: int, seconds: float) -> None:
        """Fold one timed forward of ``b`` rows computing ``t`` positions into the model."""
        if seconds <= 0:
            return
        log_t = math.log(seconds)
        key = (b, t)
        if not self.shape:  # the first forward of all sets the scale
            self.load = log_t
        if key not in self.shape:  # a new shape: what it cost at the current load
            self._set(b, t, log_t - self.load)
            return
        n = self._timings[key] = self._timings[key] + 1
        error = log_t - (self.load + self.shape[key])
        own = max(SHAPE_RATE, 1.0 / n)
        self.shape[key] += own * error
        self.load += LOAD_RATE * (1.0 - own) * error

    def _set(self, b: int, t: int, value: float) -> None:
        self.shape[(b, t)] = value
        self._timings[(b, t)] = 1
        bisect.insort(self._by_rows.setdefault(b, []), t)

    def _plain(self, b: int) -> float | None:
        """Relative cost of a plain step of ``b`` rows: measured, or from other batch sizes."""
        rows = sorted(k for k in self._by_rows if (k, k) in self.shape)
        if not rows:
            return None
        i = bisect.bisect_left(rows, b)
        if i == 0 or i == len(rows):
            near = rows[0] if i == 0 else rows[-1]
            return math.exp(self.shape[(near, near)]) * _growth(near, b)
        lo, hi = rows[i - 1], rows[i]
        w = (b - lo) / (hi - lo)
        return math.exp((1 - w) * self.shape[(lo, lo)] + w * self.shape[(hi, hi)])


def _growth(t0: int, t: int) -> float:
    """Prior cost ratio of computing ``t`` positions instead of ``t0``."""
    return (PRIOR_OVERHEAD_TOKENS + t) / (PRIOR_OVERHEAD_TOKENS + t0)


@dataclass(frozen=True, slots=True)
class Rate:
    """Acceptance of a draft: ``first`` token, and ``then`` each next one after an accepted one.

    Drafts are not i.i.d. token by token: a prompt-lookup draft that copies a span either
    misses at once or tends to run on (measured on the Game of 24 search: first token 0.53,
    each next 0.78 for 3-token matches), so one rate for every position underprices long
    drafts of a good span and overprices long drafts of a poor one.
    """

    first: float
    then: float

    def value(self, k: int) -> float:
        """Probability that the ``k``-th draft token (from 1) is accepted."""
        return self.first * self.then ** (k - 1)

    def gain(self, g: int) -> float:
        """Expected accepted tokens of a ``g``-token draft."""
        return sum(self.value(k) for k in range(1, g + 1))


def _rate(a: float | Rate) -> Rate:
    return a if isinstance(a, Rate) else Rate(a, a)


class Acceptance:
    """Measured acceptance of each kind of draft, engine-wide and per sequence.

    The kind is :attr:`Draft.policy_key
    <langchain_seed.engine.speculation.drafters.base.Draft.policy_key>`.
    A verification of ``g`` draft tokens that accepted ``k`` is one observation of the first
    token (accepted when ``k >= 1``) and, after an accepted first token, ``k - 1`` accepted
    next tokens plus one rejected when ``k < g`` (a truncated geometric observation); each
    rate is ``successes / (successes + failures)``. A new sequence starts from the
    engine-wide rates, not from a fixed prior.
    """

    def __init__(self) -> None:
        # (key, greedy) -> [first s, first f, then s, then f]
        self.engine: dict[tuple[str, bool], list[float]] = {}

    def engine_estimate(self, key: str, greedy: bool) -> Rate:
        """Engine-wide acceptance of drafts of ``key`` for greedy or sampled requests."""
        s1, f1, sc, fc = self.engine.get((key, greedy), _PRIOR_COUNTS)
        return Rate(s1 / (s1 + f1), sc / (sc + fc))

    def estimate(self, seq: SequenceState, key: str) -> Rate:
        """Acceptance of drafts of ``key`` for ``seq``: its own record, shrunk to the engine's."""
        prior = self.engine_estimate(key, seq.params.greedy)
        s1, f1, sc, fc = seq.draft_counts.get(key, (0.0, 0.0, 0.0, 0.0))
        w = SEQUENCE_WEIGHT
        return Rate((s1 + w * prior.first) / (s1 + f1 + w), (sc + w * prior.then) / (sc + fc + w))

    def observe(self, seq: SequenceState, key: str, drafted: int, accepted: int) -> None:
        """Count one verification of ``drafted`` tokens of ``key`` (``accepted`` kept)."""
        if drafted <= 0:
            return
        first = (1.0, 0.0) if accepted else (0.0, 1.0)
        then = (accepted - 1.0, 1.0 if accepted < drafted else 0.0) if accepted else (0.0, 0.0)
        counts = (*first, *then)
        mine = seq.draft_counts.get(key, (0.0, 0.0, 0.0, 0.0))
        seq.draft_counts[key] = tuple(m + c for m, c in zip(mine, counts))  # type: ignore[assignment]
        engine = self.engine.setdefault((key, seq.params.greedy), list(_PRIOR_COUNTS))
        for i, c in enumerate(counts):
            engine[i] = ENGINE_DECAY * engine[i] + c


_PRIOR_COUNTS = (*ACCEPTANCE_PRIOR, *ACCEPTANCE_PRIOR)


def expected_gain(a: float | Rate, g: int) -> float:
    """Expected accepted tokens of a ``g``-token draft at acceptance ``a`` (one rate: i.i.d.)."""
    return _rate(a).gain(g)


class DraftPolicy:
    """Draft choice and length for one engine (see the module docstring).

    Args:
        gamma: most draft tokens per sequence per step.
        packed: the engine verifies ragged drafts packed (each row pays for its own
            tokens) rather than padded to the longest.
    """

    def __init__(self, gamma: int, packed: bool = False) -> None:
        self.gamma = gamma
        self.packed = packed
        self.cost = StepCost()
        self.acceptance = Acceptance()
        self.draft_cost = CostModel(c0=0.3, c1=0.02)
        """Seconds of one draft-model forward over ``b`` rows (linear in ``b``)."""

    def draft(
        self,
        running: Seq[SequenceState],
        drafters: Seq[Any],
        adaptive: bool,
        failures: dict[str, int] | None = None,
    ) -> list[Draft]:
        """One draft per running sequence: propose, pick the best candidate, size it.

        Free drafters propose up to the cap (``gamma`` and the tokens left); a costly
        drafter (the draft model) is asked for the length :meth:`choose_length` picks with
        its own per-position cost, and timed. When ``adaptive``, one length cap for the
        step is then chosen over the chosen drafts (0 = a plain step).

        A drafter that raises drafts no more for the rows it was asked to draft for
        (``SequenceState.drafters_off``; counted in ``failures``): drafts are guesses, so their
        requests go on without them instead of failing.
        """
        caps = [max(0, min(self.gamma, seq.remaining - 1)) for seq in running]
        candidates: list[list[Draft]] = [[] for _ in running]
        for drafter in drafters:
            off = [drafter.name in s.drafters_off for s in running]
            if all(off):
                continue
            lens = [0 if o else c for o, c in zip(off, caps)]
            costly = getattr(drafter, "costly", False)
            if costly and adaptive:
                per_position = self.draft_cost.step_time(len(running))
                acceptance = [self.acceptance.estimate(s, drafter.name) for s in running]
                lens = self.choose_length(running, lens, acceptance, per_position)
            before, t0 = getattr(drafter, "forwards", 0), time.perf_counter()
            try:
                proposed = drafter.propose(running, lens)
            except Exception:
                logger.exception(
                    "drafter %r failed; it stops drafting for the %d requests it was asked for",
                    drafter.name,
                    sum(1 for n in lens if n > 0),
                )
                for seq, n in zip(running, lens):
                    if n > 0:
                        seq.drafters_off.add(drafter.name)
                if failures is not None:
                    failures[drafter.name] = failures.get(drafter.name, 0) + 1
                continue
            forwards = getattr(drafter, "forwards", 0) - before
            if costly and forwards > 0:
                _synchronize(drafter)
                per = (time.perf_counter() - t0) / forwards
                self.draft_cost.observe(len(running), per)
            for i, draft in enumerate(proposed):
                if draft.tokens:
                    candidates[i].append(draft)
        chosen = [self.best(seq, c) for seq, c in zip(running, candidates)]
        for draft, cap in zip(chosen, caps):  # a drafter may return more than it was asked
            if len(draft.tokens) > cap:
                draft.tokens = draft.tokens[:cap]
                if draft.probs is not None:
                    draft.probs = draft.probs[:cap]
        if adaptive:
            gammas = self.choose_length(
                running,
                [len(d.tokens) for d in chosen],
                [self.acceptance.estimate(s, d.policy_key) for s, d in zip(running, chosen)],
            )
            for draft, g in zip(chosen, gammas):
                if g < len(draft.tokens):
                    draft.tokens = draft.tokens[:g]
                    if draft.probs is not None:
                        draft.probs = draft.probs[:g]
        return chosen

    def best(self, seq: SequenceState, candidates: Seq[Draft]) -> Draft:
        """The candidate with the most expected accepted tokens (:meth:`Rate.gain`), copied."""
        best, best_score = Draft(), 0.0
        for draft in candidates:
            rate = self.acceptance.estimate(seq, draft.policy_key)
            score = rate.gain(len(draft.tokens))
            if score > best_score:
                best, best_score = draft, score
        return Draft(list(best.tokens), best.probs, best.drafter, kind=best.kind)

    def choose_length(
        self,
        seqs: Seq[SequenceState],
        available: Seq[int],
        acceptance: Seq[float | Rate],
        extra_seconds: float = 0.0,
    ) -> list[int]:
        """Draft length per sequence maximizing the batch's expected tokens per second.

        Args:
            seqs: running sequences (one verification each, one forward in all).
            available: most draft tokens each may get (drafts found, gamma cap, tokens left).
            acceptance: acceptance estimate of each sequence's draft (a :class:`Rate`, or one
                i.i.d. per-token rate).
            extra_seconds: seconds each draft position adds besides verification (one
                forward of the draft model over the batch).

        Returns:
            At most ``available[i]`` tokens for row ``i``; all zeros when no lengths beat
            plain decoding. Packed, the lengths take the most valuable draft tokens of the
            batch (the ``k``-th token of row ``i`` is worth ``rates[i].value(k)``); padded, they are
            ``min(g, available[i])`` for one cap ``g`` (shorter drafts ride free).
        """
        b = len(seqs)
        if b == 0:
            return []
        base = self.cost.seconds(b, b)
        if base is None:
            return [0] * b
        rates = [_rate(a) for a in acceptance]
        caps = [min(self.gamma, n) if r.first > 0 else 0 for n, r in zip(available, rates)]
        if self.packed:
            return self._packed_lengths(caps, rates, base, extra_seconds)
        best_g, best_rate = 0, b / base
        expected = float(b)  # every verification yields one token
        for g in range(1, max(caps, default=0) + 1):
            expected += sum(r.value(g) for r, n in zip(rates, caps) if n >= g)
            seconds = self.cost.seconds(b, b * (g + 1))
            assert seconds is not None
            rate = expected / (seconds + g * extra_seconds)
            if rate > best_rate * (MIN_GAIN if best_g == 0 else 1.0):
                best_g, best_rate = g, rate
        return [min(best_g, n) for n in caps]

    def _packed_lengths(
        self, caps: list[int], rates: Seq[Rate], base: float, extra_seconds: float
    ) -> list[int]:
        """The best number ``E`` of the batch's most valuable draft tokens, as lengths.

        A row's token values fall with depth, so the ``E`` most valuable tokens are a prefix
        of each row's draft.
        """
        b = len(caps)
        tokens = sorted(
            ((rates[i].value(k), i) for i in range(b) for k in range(1, caps[i] + 1)),
            key=lambda vi: -vi[0],
        )
        best_e, best_rate = 0, b / base
        expected, longest = float(b), 0
        taken = [0] * b
        for e, (value, i) in enumerate(tokens, start=1):
            expected += value
            taken[i] += 1
            longest = max(longest, taken[i])
            seconds = self.cost.seconds(b, b + e)
            assert seconds is not None
            rate = expected / (seconds + longest * extra_seconds)
            if rate > best_rate * (MIN_GAIN if best_e == 0 else 1.0):
                best_e, best_rate = e, rate
        lengths = [0] * b
        for _, i in tokens[:best_e]:
            lengths[i] += 1
        return lengths

    def observe_step(self, b: int, tokens: int, seconds: float) -> None:
        """Time of one verification forward of ``b`` rows computing ``tokens`` positions."""
        self.cost.observe(b, tokens, seconds)

    def observe(self, seq: SequenceState, drafter: str, drafted: int, accepted: int) -> None:
        """One verification's outcome (acceptance counts)."""
        self.acceptance.observe(seq, drafter, drafted, accepted)


def _synchronize(drafter: Any) -> None:
    """Wait for a drafter's device work before reading the clock (CUDA runs async)."""
    runner = getattr(drafter, "runner", None)
    if runner is not None:
        runner.synchronize()
