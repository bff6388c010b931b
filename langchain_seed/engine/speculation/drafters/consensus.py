"""Consensus drafting: draft a sequence's next tokens from what its siblings generated.

The N samples of self-consistency (and the sibling thoughts of a
Tree-of-Thoughts node) agree with each other most of the time, so the tokens the *other*
members of a group already produced are good, free drafts (Li et al. 2025, arXiv 2503.05330).

Vocabulary used in this file:

- *member*: a sequence of a group the drafter has seen (running, or released but kept as
  evidence).
- *continuation position* ``c``: an index into a member's output; the n-grams that end
  just before ``output[c]`` map to ``c``. ``c = 0`` belongs to the n-grams ending at the last
  prompt token, so a sibling that has generated nothing yet can draft the first tokens of
  the others.
- *path*: the continuation ``output[c : c + max_len]`` of one member at its matched position.
- *support* of a draft token at depth ``d``: the summed weight of the paths that reach the
  DAG node ``(d, token)``; its *share* is that weight over the weight of every live path
  with a token at depth ``d``.

Per propose call, for a sequence ``s`` in group ``G``:

1. Catch up the group's index with the tokens members generated since the last call
   (O(new tokens x N_max) dict inserts).
2. Query with the last ``n`` tokens of ``s`` for ``n = max_ngram .. min_ngram``; the first
   ``n`` that matches at least one other member wins and every member matching at that
   ``n`` contributes one path (its latest occurrence that has a continuation).
3. Walk the DAG the paths form: at depth ``d`` tally the live paths' tokens, take the
   heaviest (ties: the smaller token id) while its share >= ``threshold``. Paths that
   disagree die; a dead path comes back (its node merges into the drafted one) when it has
   the drafted token at depth ``d`` and the same next ``merge_ngram`` tokens as a live
   path of that node. Without merges the walk is a trie walk.

Support weights are member counts, or (``weight_by_acceptance``) each member's observed
acceptance. Finished members stay evidence until the whole group is released.

Cost: O(tokens x max_ngram) memory per group; a query costs O(members x max_len).
Measured (pure Python, 2-core CPU shared with other jobs): 32 samples growing to ~200
tokens, gamma 4, one propose call over all 32 costs 0.35-0.5 ms CPU on average (median
wall 0.25-0.45 ms), index updates included; the target forward of such a step takes
~224 ms (the embedded model on this CPU), so drafting is well under 1% of a step.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from langchain_seed.engine.speculation.drafters.base import Draft

if TYPE_CHECKING:
    from langchain_seed.engine.sequence import SequenceState

NgramIndex = dict[tuple[int, ...], dict[int, list[int]]]
"""n-gram -> member slot -> continuation positions (ascending)."""


@dataclass(slots=True)
class ConsensusDraft(Draft):
    """A consensus draft plus the runner-up branch at each depth (for tree verification).

    ``branches[k] = (depth, token, share)``: the second-heaviest token at ``depth`` and its
    share of the support there.
    """

    branches: list[tuple[int, int, float]] = field(default_factory=list)
    support: list[float] = field(default_factory=list)
    """Share of the support of each drafted token (same length as ``tokens``)."""


@dataclass(slots=True, eq=False)
class _Member:
    seq: SequenceState
    slot: int
    next_c: int = 0
    """First continuation position not yet indexed."""
    last_token: int | None = None
    """``output[next_c - 2]`` at indexing time; detects a rewritten output."""
    released: bool = False
    hits: int = 0
    """Draft tokens this member supported that the drafted-for sibling then generated."""
    misses: int = 0
    """Draft tokens this member supported where the sibling generated something else."""
    weight: float = 1.0
    """Support weight: 1, or ``(1 + hits) / (2 + hits + misses)`` with acceptance weighting."""
    pending: tuple[int, list[int], list[list[_Member]]] | None = None
    """Last draft for this member: (output length then, tokens, supporters per depth)."""


@dataclass(slots=True, eq=False)
class _Group:
    members: dict[int, _Member] = field(default_factory=dict)
    """seq_id -> member."""
    slots: list[_Member] = field(default_factory=list)
    index: NgramIndex = field(default_factory=dict)

    @property
    def all_released(self) -> bool:
        return all(m.released for m in self.slots)


class ConsensusDrafter:
    """Multi-sample consensus drafter (deterministic drafts, no model call).

    Args:
        max_ngram: longest query suffix (N_max).
        min_ngram: shortest query suffix tried. The index holds 1-grams too, but matching a
            single token mostly finds unrelated continuations: on a 32-sample simulation with
            10% token noise, ``min_ngram=1`` drafted 13x more tokens than ``2`` for the same
            accepted count (precision 0.07 vs 0.90), so 2 is the default.
        threshold: least share of the support the drafted token needs at each depth.
        merge_ngram: next tokens two nodes must share to merge (0: plain trie, no merges).
        max_retired_groups: fully released groups kept (least recently used first out) in
            case a late member of the same group arrives; their memory is freed beyond this.
        weight_by_acceptance: weight each member's support by how often the tokens it
            supported were then generated by the sibling they were drafted for (the engine
            does not report acceptance to drafters, so it is read off the output's growth:
            the common prefix of the draft and the new tokens). Off by default: plain member
            counts, and drafts depend on the current outputs only.
    """

    name = "consensus"

    def __init__(
        self,
        max_ngram: int = 4,
        min_ngram: int = 2,
        threshold: float = 0.5,
        merge_ngram: int = 2,
        max_retired_groups: int = 8,
        weight_by_acceptance: bool = False,
    ) -> None:
        if not isinstance(max_ngram, int) or max_ngram < 1:
            raise ValueError(f"max_ngram must be an integer >= 1, got {max_ngram!r}")
        if not isinstance(min_ngram, int) or not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"min_ngram must be an integer in [1, max_ngram], got {min_ngram!r}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        if not isinstance(merge_ngram, int) or merge_ngram < 0:
            raise ValueError(f"merge_ngram must be an integer >= 0, got {merge_ngram!r}")
        if not isinstance(max_retired_groups, int) or max_retired_groups < 0:
            raise ValueError(
                f"max_retired_groups must be an integer >= 0, got {max_retired_groups!r}"
            )
        self.max_ngram = max_ngram
        self.min_ngram = min_ngram
        self.threshold = threshold
        self.merge_ngram = merge_ngram
        self.max_retired_groups = max_retired_groups
        self.weight_by_acceptance = weight_by_acceptance
        self._groups: dict[str, _Group] = {}
        self._retired: OrderedDict[str, _Group] = OrderedDict()

    # ------------------------------------------------------------------ protocol

    def propose(self, sequences: Seq[SequenceState], max_lens: Seq[int]) -> list[Draft]:
        """One consensus draft per sequence (empty outside a group of two or more).

        Args:
            sequences: the running sequences; their new output tokens are indexed first.
            max_lens: most draft tokens for each sequence.

        Returns:
            One :class:`ConsensusDraft` per sequence (``probs`` is ``None``).
        """
        touched: dict[str, _Group] = {}
        for seq in sequences:
            if seq.group is not None:
                group = self._join(seq)
                touched[seq.group] = group
        for group in touched.values():
            for member in group.slots:
                self._catch_up(group, member)
        drafts: list[Draft] = []
        for seq, max_len in zip(sequences, max_lens, strict=True):
            mine = touched.get(seq.group) if seq.group is not None else None
            if mine is None or max_len <= 0 or len(mine.slots) < 2:
                drafts.append(ConsensusDraft([], None, self.name))
                continue
            me = mine.members[seq.seq_id]
            if self.weight_by_acceptance:
                self._settle(me)
            drafts.append(self._draft(mine, me, max_len))
        return drafts

    def release(self, sequence: SequenceState) -> None:
        """Keep a finished sequence's tokens as evidence; drop the group once all are done.

        The engine calls this when a sequence finishes or is cancelled. Its siblings may
        still be running, so its tokens stay in the index until every member of the group
        was released; the group then moves to a small LRU of retired groups (a late
        member of the same group revives it) and is freed when that LRU overflows.

        Args:
            sequence: the finished or cancelled sequence.
        """
        if sequence.group is None:
            return
        group = self._groups.get(sequence.group)
        if group is None:
            return  # never drafted for: nobody reads this group
        member = group.members.get(sequence.seq_id)
        if member is None:
            member = self._add_member(group, sequence)
        self._catch_up(group, member)
        member.released = True
        member.pending = None
        if group.all_released:
            del self._groups[sequence.group]
            if self.max_retired_groups:
                self._retired[sequence.group] = group
                while len(self._retired) > self.max_retired_groups:
                    self._retired.popitem(last=False)

    # ------------------------------------------------------------------ index

    def _join(self, seq: SequenceState) -> _Group:
        gid = seq.group
        assert gid is not None
        group = self._groups.get(gid)
        if group is None:
            group = self._retired.pop(gid, None) or _Group()
            self._groups[gid] = group
        member = group.members.get(seq.seq_id)
        if member is None:
            self._add_member(group, seq)
        else:
            member.released = False
        return group

    def _add_member(self, group: _Group, seq: SequenceState) -> _Member:
        member = _Member(seq=seq, slot=len(group.slots))
        if self.weight_by_acceptance:
            member.weight = 0.5  # (1 + hits) / (2 + hits + misses) before any evidence
        group.members[seq.seq_id] = member
        group.slots.append(member)
        return member

    def _catch_up(self, group: _Group, member: _Member) -> None:
        """Index the n-grams ending before continuation positions ``next_c .. len(output)``."""
        out = member.seq.output_ids
        size = len(out)
        start = member.next_c
        if start > size + 1 or (start >= 2 and out[start - 2] != member.last_token):
            self._forget(group, member)  # output shrank or was rewritten: index it again
            start = 0
        if start > size:
            return
        n_max = self.max_ngram
        prompt = member.seq.prompt_ids
        # window = the tokens the new n-grams need: up to n_max before out[start], then out[:size]
        lo = max(0, start - n_max)
        head = n_max - start + lo if start < n_max else 0  # prompt tokens needed before out[lo]
        window = (prompt[max(0, len(prompt) - head) :] if head else []) + out[lo:size]
        offset = len(window) - size  # window position of out[0] is offset; of c is offset + c
        index = group.index
        slot = member.slot
        for c in range(start, size + 1):
            end = offset + c  # the n-grams end just before window[end]
            for n in range(1, min(n_max, end) + 1):
                gram = tuple(window[end - n : end])
                hits = index.get(gram)
                if hits is None:
                    index[gram] = {slot: [c]}
                else:
                    cs = hits.get(slot)
                    if cs is None:
                        hits[slot] = [c]
                    else:
                        cs.append(c)
        member.next_c = size + 1
        member.last_token = out[size - 1] if size else None

    @staticmethod
    def _forget(group: _Group, member: _Member) -> None:
        slot = member.slot
        for gram in [g for g, hits in group.index.items() if slot in hits]:
            hits = group.index[gram]
            del hits[slot]
            if not hits:
                del group.index[gram]
        member.next_c = 0
        member.last_token = None

    # ------------------------------------------------------------------ draft

    def _paths(self, group: _Group, me: _Member, max_len: int) -> list[tuple[_Member, list[int]]]:
        """Continuations of the other members at the longest matching suffix of ``me``."""
        out = me.seq.output_ids
        tail = out[-self.max_ngram :]
        if len(tail) < self.max_ngram:
            prompt = me.seq.prompt_ids
            tail = prompt[max(0, len(prompt) - (self.max_ngram - len(tail))) :] + tail
        index = group.index
        slots = group.slots
        mine = me.slot
        for n in range(min(self.max_ngram, len(tail)), self.min_ngram - 1, -1):
            hits = index.get(tuple(tail[len(tail) - n :]))
            if not hits:
                continue
            paths = []
            for slot, cs in hits.items():
                if slot == mine:
                    continue
                member = slots[slot]
                other = member.seq.output_ids
                c = cs[-1]
                if c >= len(other):  # latest match is at the very end: no continuation yet
                    if len(cs) < 2:
                        continue
                    c = cs[-2]
                paths.append((member, other[c : c + max_len]))
            if paths:
                return paths
        return []

    def _draft(self, group: _Group, me: _Member, max_len: int) -> ConsensusDraft:
        paths = self._paths(group, me, max_len)
        draft = ConsensusDraft([], None, self.name)
        if not paths:
            return draft
        supporters: list[list[_Member]] = []
        if len(paths) == 1:  # one witness: its share is 1 at every depth
            draft.tokens = list(paths[0][1])
            draft.support = [1.0] * len(draft.tokens)
            supporters = [[paths[0][0]]] * len(draft.tokens)
        else:
            self._walk(paths, max_len, draft, supporters)
        if self.weight_by_acceptance and draft.tokens:
            me.pending = (len(me.seq.output_ids), list(draft.tokens), supporters)
        return draft

    def _walk(
        self,
        paths: list[tuple[_Member, list[int]]],
        max_len: int,
        draft: ConsensusDraft,
        supporters: list[list[_Member]],
    ) -> None:
        """Heaviest-edge walk over the DAG of ``paths``; fills ``draft`` and ``supporters``."""
        threshold = self.threshold
        k = self.merge_ngram
        live = paths
        dead: list[tuple[_Member, list[int]]] = []
        for d in range(max_len):
            tally: dict[int, float] = {}
            total = 0.0
            for m, p in live:
                if len(p) > d:
                    t = p[d]
                    tally[t] = tally.get(t, 0.0) + m.weight
                    total += m.weight
            if not total:
                break
            # heaviest token, ties to the smaller id (order-independent: incremental == scratch)
            ranked = sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))
            best, weight = ranked[0]
            if weight < threshold * total:
                break
            draft.tokens.append(best)
            draft.support.append(weight / total)
            if len(ranked) > 1:
                draft.branches.append((d, ranked[1][0], ranked[1][1] / total))
            keep = [mp for mp in live if len(mp[1]) > d and mp[1][d] == best]
            supporters.append([m for m, _ in keep])
            if k:
                # DAG merge: a path with the drafted token at depth d and the same next k
                # tokens as a path of the drafted node joins that node.
                dead.extend(mp for mp in live if len(mp[1]) > d and mp[1][d] != best)
                if dead:
                    nexts = {tuple(p[d + 1 : d + 1 + k]) for _, p in keep if len(p) > d + k}
                    back = [
                        mp
                        for mp in dead
                        if len(mp[1]) > d + k
                        and mp[1][d] == best
                        and tuple(mp[1][d + 1 : d + 1 + k]) in nexts
                    ]
                    if back:
                        keep.extend(back)
                        ids = {id(mp) for mp in back}
                        dead = [mp for mp in dead if id(mp) not in ids]
            live = keep

    @staticmethod
    def _settle(me: _Member) -> None:
        """Credit the members behind ``me``'s last draft with what ``me`` generated since."""
        if me.pending is None:
            return
        start, tokens, supporters = me.pending
        out = me.seq.output_ids
        new = len(out) - start
        if new <= 0:
            return  # not verified yet
        me.pending = None
        matched = 0
        while matched < len(tokens) and matched < new and out[start + matched] == tokens[matched]:
            matched += 1
        for d in range(matched):
            for m in supporters[d]:
                m.hits += 1
        if matched < len(tokens) and new > matched:
            for m in supporters[matched]:
                m.misses += 1
        for d in range(min(matched + 1, len(tokens))):
            for m in supporters[d]:
                m.weight = (1 + m.hits) / (2 + m.hits + m.misses)
