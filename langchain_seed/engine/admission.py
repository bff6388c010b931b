"""Admission: give newly admitted sequences their prompt KV with as little prefill as possible.

Invariant: a running sequence's cache holds every token but the pending last one, so a
prompt ``P`` needs the KV of ``P[:-1]``. Three sources, cheapest first:

- a *group fork*: sequences admitted together with the same prompt (the N samples of
  self-consistency, ToT siblings) are prefilled once, the others copy the leader's row;
  a sequence whose prompt equals a *running* sequence's (the late members of a group too
  large to admit at once) copies that row, which still holds the prompt's KV;
- the *prefix cache*: the longest cached prefix is copied in, only the rest is prefilled;
- a *shared header* among prompts admitted together (a level of ToT value prompts): the
  first prompt of each cluster is prefilled in a first wave and inserted into the prefix
  cache, so the others of the cluster hit it in the second wave.

What is left to compute of the second wave's prompts is, with ``defer`` (the target runs
the own execution path), not prefilled here: it stays in ``SequenceState.unfed_prompt``
and the engine's next forwards feed it ahead of the pending token, beside the other rows'
decode and draft tokens (the unified step: no separate prefill forward, no second read of
the weights). A leader whose row others fork now is prefilled here (they copy its KV),
and so is every prompt when the target runs the transformers forward. Draft models
always prefill here. :meth:`Admitter.complete` inserts a deferred prompt into the prefix
cache once its KV is written.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from typing import TYPE_CHECKING

from langchain_seed.engine.execution.prefix_cache import KV, PrefixCache, PrefixHandle
from langchain_seed.engine.execution.runner import ModelRunner

if TYPE_CHECKING:
    from langchain_seed.engine.sequence import SequenceState

MIN_SHARED_HEADER = 32
"""Tokens two admitted prompts must share (beyond the cache) to prefill a header first."""


def _key(seq: SequenceState) -> tuple[int, ...]:
    return tuple(seq.prompt_ids[:-1])


def _common(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Admitter:
    """Prefills admitted sequences using forks and the prefix cache.

    Args:
        runners: every model whose cache is filled, by name: ``"target"`` and the draft
            model's, if any (the prefix cache stores each model's KV under that name).
        prefix_cache: the engine's prefix cache.
        defer: leave the target's prefill of the last wave to the engine's forwards
            (``SequenceState.unfed_prompt``; the module docstring).
    """

    def __init__(
        self, runners: dict[str, ModelRunner], prefix_cache: PrefixCache, defer: bool = False
    ) -> None:
        self.runners = runners
        self.prefix_cache = prefix_cache
        self.defer = defer
        self._waves: list[list[SequenceState]] = []
        self._leader: dict[int, SequenceState] = {}

    def order(
        self, seqs: list[SequenceState], running: Seq[SequenceState] = ()
    ) -> list[SequenceState]:
        """Order admitted sequences for row assignment: header wave, other leaders, forks.

        ``running`` are the sequences already in the batch: an admitted sequence with the
        same prompt as one of them forks its row instead of prefilling.
        """
        leaders: dict[tuple[int, ...], SequenceState] = {}
        solo: list[SequenceState] = []  # one-token prompts: nothing to prefill or share
        followers: list[SequenceState] = []
        self._leader = {}
        in_batch = {
            _key(s): s for s in running if s.row >= 0 and not s.finished and not s.unfed_prompt
        }
        for seq in seqs:
            key = _key(seq)
            if not key:
                solo.append(seq)
            elif key in in_batch:
                followers.append(seq)
                self._leader[seq.seq_id] = in_batch[key]
            elif key in leaders:
                followers.append(seq)
                self._leader[seq.seq_id] = leaders[key]
            else:
                leaders[key] = seq
        heads: list[SequenceState] = []
        if self.prefix_cache.enabled and len(leaders) > 1:
            ranked = sorted(leaders.items())
            cached = {key: self.prefix_cache.match(key)[0] for key, _ in ranked}
            i = 0
            while i < len(ranked):
                head_key, head = ranked[i]
                j = i + 1
                while j < len(ranked) and (
                    _common(head_key, ranked[j][0]) - max(cached[head_key], cached[ranked[j][0]])
                    >= MIN_SHARED_HEADER
                ):
                    j += 1
                if j - i >= 2:  # a cluster sharing a header: prefill its head first
                    heads.append(head)
                i = j
        head_ids = {s.seq_id for s in heads}
        rest = [s for s in leaders.values() if s.seq_id not in head_ids] + solo
        self._waves = [heads, rest]
        ordered = heads + rest + followers
        assert len(ordered) == len(seqs), "admission lost a sequence"
        return ordered

    def admit(self, seqs: list[SequenceState]) -> None:
        """Fill the caches of ``seqs`` (already ordered by :meth:`order`, rows assigned).

        With ``defer``, the last wave's sequences that no other one forks keep their
        uncached prompt tokens in ``unfed_prompt`` for the engine's next forward.
        """
        forked = {leader.seq_id for leader in self._leader.values()}
        for i, wave in enumerate(self._waves):
            if wave:
                last = i == len(self._waves) - 1
                self._prefill_wave(wave, {s.seq_id for s in wave if self.defer and last} - forked)
        for seq in seqs:
            leader = self._leader.get(seq.seq_id)
            if leader is None:
                continue
            length = len(seq.prompt_ids) - 1
            for name, runner in self.runners.items():
                # A running leader's draft cache may lag behind its prompt; the draft model
                # catches up on the missing tokens at its next proposal.
                held = min(length, runner.lengths[leader.row])
                assert name != "target" or held == length, "a running row lost its prompt KV"
                runner.cache.copy_prefix(leader.row, seq.row, held)
            seq.stats.cached_prompt_tokens = length

    def _prefill_wave(self, wave: list[SequenceState], deferred: set[int]) -> None:
        runners = self.runners
        feeds = []
        for seq in wave:
            key = _key(seq)
            cached = 0
            if self.prefix_cache.enabled:
                cached, kv, handle = self._lookup(key)
                seq.prefix_handle = handle
                for name, runner in runners.items():
                    runner.keep(seq.row, 0)
                    if cached and name in kv:
                        runner.cache.write(seq.row, 0, kv[name])
                        runner.keep(seq.row, cached)
            else:
                for runner in runners.values():
                    runner.keep(seq.row, 0)
            seq.stats.cached_prompt_tokens = cached
            seq.stats.target_tokens += len(key) - cached
            feeds.append(list(key[cached:]))
        start = wave[0].row
        for name, runner in runners.items():
            # A draft model with a shorter context holds the prompt up to its last position
            # only (it drafts nothing for a longer sequence; ModelDrafter.propose).
            room = [max(0, runner.max_positions - runner.lengths[s.row]) for s in wave]
            cut = [
                0 if name == "target" and s.seq_id in deferred else n for s, n in zip(wave, room)
            ]
            runner.prefill(start, [f[:n] for f, n in zip(feeds, cut)])
        for seq, feed in zip(wave, feeds):
            if seq.seq_id in deferred and feed:
                seq.unfed_prompt = feed
            else:  # prefilled here, or wholly cached already
                self.complete(seq)

    def complete(self, seq: SequenceState) -> None:
        """``seq``'s prompt KV is written: insert it into the prefix cache (when enabled)."""
        if not self.prefix_cache.enabled:
            return
        runners = self.runners
        row = seq.row

        def read(begin: int, end: int) -> dict[str, KV]:
            return {n: r.cache.read(row, begin, end) for n, r in runners.items()}

        handle = self.prefix_cache.insert(_key(seq), read)
        self.prefix_cache.release(seq.prefix_handle)
        seq.prefix_handle = handle

    def _lookup(self, key: tuple[int, ...]) -> tuple[int, dict[str, KV], PrefixHandle]:
        cached, kv, handle = self.prefix_cache.lookup(key, "target")
        out: dict[str, KV] = {}
        if kv is None:
            return 0, out, handle
        out["target"] = kv
        others = [name for name in self.runners if name != "target"]
        if others:
            # Spans are inserted with every model's KV, so the draft's is there too.
            _, path = self.prefix_cache.match(key)
            for name in others:
                out[name] = self.prefix_cache.gather(path, cached, name)
        return cached, out, handle
