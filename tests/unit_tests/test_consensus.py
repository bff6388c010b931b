"""The consensus-DAG drafter: support, incremental index, groups."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_seed.engine.config import SamplingParams
from langchain_seed.engine.sequence import SequenceState
from langchain_seed.engine.speculation.drafters.consensus import ConsensusDraft, ConsensusDrafter

PARAMS = SamplingParams(max_tokens=512)


def make_seq(prompt: list[int], output: list[int], group: str | None = "g") -> SequenceState:
    return SequenceState(
        prompt_ids=list(prompt), params=PARAMS, group=group, output_ids=list(output)
    )


def index_of(drafter: ConsensusDrafter, group: str) -> dict[tuple[int, ...], dict[int, list[int]]]:
    """A group's n-gram index keyed by seq_id: n-gram -> seq_id -> continuation positions."""
    found = drafter._groups.get(group) or drafter._retired.get(group)
    if found is None:
        return {}
    return {
        gram: {found.slots[slot].seq.seq_id: list(cs) for slot, cs in hits.items()}
        for gram, hits in found.index.items()
    }


def group_of(prompt: list[int], outputs: list[list[int]], group: str = "g") -> list[SequenceState]:
    return [make_seq(prompt, out, group) for out in outputs]


tokens = st.lists(st.integers(0, 4), max_size=30)
groups = st.tuples(
    st.lists(st.integers(0, 4), min_size=1, max_size=6),  # shared prompt
    st.lists(tokens, min_size=1, max_size=6),  # outputs of the members
)


def supported(draft: list[int], me: SequenceState, others: list[SequenceState]) -> bool:
    """Every draft token follows its predecessor somewhere in a sibling's output."""
    for d, tok in enumerate(draft):
        before = draft[d - 1] if d else me.token_ids[-1]
        ok = False
        for other in others:
            full, start = other.token_ids, len(other.prompt_ids)
            if any(
                full[q] == tok and full[q - 1] == before for q in range(max(start, 1), len(full))
            ):
                ok = True
                break
        if not ok:
            return False
    return True


def contiguous_in_a_sibling(
    draft: list[int], me: SequenceState, others: list[SequenceState]
) -> bool:
    """``[last token] + draft`` occurs in one sibling, the draft inside its output."""
    if not draft:
        return True
    want = [me.token_ids[-1], *draft]
    for other in others:
        full, start = other.token_ids, len(other.prompt_ids)
        for q in range(max(start, 1), len(full) - len(draft) + 1):
            if full[q - 1 : q + len(draft)] == want:
                return True
    return False


@settings(max_examples=150, deadline=None)
@given(groups, st.integers(1, 8), st.sampled_from([0.0, 0.3, 0.5, 0.8, 1.0]), st.integers(1, 3))
def test_every_draft_token_is_supported_by_a_sibling(group, max_len, threshold, min_ngram):
    prompt, outputs = group
    seqs = group_of(prompt, outputs)
    drafter = ConsensusDrafter(threshold=threshold, min_ngram=min_ngram)
    drafts = drafter.propose(seqs, [max_len] * len(seqs))
    for i, (seq, draft) in enumerate(zip(seqs, drafts, strict=True)):
        assert draft.probs is None and draft.drafter == "consensus"
        assert len(draft.tokens) <= max_len
        others = seqs[:i] + seqs[i + 1 :]
        assert supported(draft.tokens, seq, others)
        if draft.tokens:  # the first token follows the matched suffix (>= min_ngram tokens)
            n = min(min_ngram, len(seq.token_ids))
            want = [*seq.token_ids[-n:], draft.tokens[0]]
            assert any(
                o.token_ids[q - n : q + 1] == want
                for o in others
                for q in range(max(len(o.prompt_ids), n), len(o.token_ids))
            )


@settings(max_examples=150, deadline=None)
@given(groups, st.integers(1, 8), st.sampled_from([0.0, 0.5, 1.0]))
def test_without_merges_each_draft_is_one_siblings_continuation(group, max_len, threshold):
    prompt, outputs = group
    seqs = group_of(prompt, outputs)
    drafter = ConsensusDrafter(threshold=threshold, merge_ngram=0, min_ngram=1)
    drafts = drafter.propose(seqs, [max_len] * len(seqs))
    for i, (seq, draft) in enumerate(zip(seqs, drafts, strict=True)):
        others = seqs[:i] + seqs[i + 1 :]
        assert contiguous_in_a_sibling(draft.tokens, seq, others)


@settings(max_examples=100, deadline=None)
@given(
    groups,
    st.lists(st.integers(1, 4), min_size=1, max_size=12),  # growth per step
    st.integers(1, 6),
    st.sets(st.integers(0, 5), max_size=3),  # members released before the end
)
def test_incremental_index_equals_rebuild(group, growth, max_len, released):
    prompt, outputs = group
    full = [list(o) for o in outputs]
    seqs = group_of(prompt, [[] for _ in outputs])
    incremental = ConsensusDrafter(min_ngram=1)
    for step, grow in enumerate(growth):
        running = [s for i, s in enumerate(seqs) if not (i in released and step > len(growth) // 2)]
        for i, seq in enumerate(seqs):
            if i in released and step == len(growth) // 2 + 1:
                incremental.release(seq)
        incremental.propose(running, [max_len] * len(running))
        for seq, target in zip(seqs, full, strict=True):
            if seq in running:
                seq.output_ids.extend(target[len(seq.output_ids) : len(seq.output_ids) + grow])
    running = [s for i, s in enumerate(seqs) if i not in released] or seqs[:1]
    got = incremental.propose(running, [max_len] * len(running))
    got_index = index_of(incremental, "g")

    scratch = ConsensusDrafter(min_ngram=1)
    scratch.propose(seqs, [0] * len(seqs))  # sees every member's final output at once
    want = scratch.propose(running, [max_len] * len(running))
    assert got_index == index_of(scratch, "g")
    assert [d.tokens for d in got] == [d.tokens for d in want]
    again = incremental.propose(running, [max_len] * len(running))
    assert [d.tokens for d in again] == [d.tokens for d in got]


@given(tokens, st.integers(1, 8))
def test_single_member_or_no_group_drafts_nothing(output, max_len):
    drafter = ConsensusDrafter(min_ngram=1)
    alone = make_seq([1, 2, 3], output, group="solo")
    loose = make_seq([1, 2, 3], output, group=None)
    assert [d.tokens for d in drafter.propose([alone, loose], [max_len, max_len])] == [[], []]


def test_empty_group_and_zero_budget_draft_nothing():
    drafter = ConsensusDrafter()
    assert drafter.propose([], []) == []
    a, b = group_of([7, 8], [[1, 2, 3, 4], [1, 2]])
    assert [d.tokens for d in drafter.propose([a, b], [0, 0])] == [[], []]


def test_deterministic_example_drafts_what_siblings_said_next():
    prompt = [100, 101]
    a = make_seq(prompt, [5, 6, 7, 8, 9, 10])
    b = make_seq(prompt, [5, 6, 7, 8, 9, 11])
    c = make_seq(prompt, [5, 6, 7, 8, 12, 13])
    me = make_seq(prompt, [5, 6])
    drafter = ConsensusDrafter()
    drafts = drafter.propose([a, b, c, me], [4, 4, 4, 8])
    draft = drafts[3]
    assert isinstance(draft, ConsensusDraft)
    # depth 0,1: 7, 8 (3/3); depth 2: 9 (2/3) beats 12; depth 3: 10 vs 11 tie (1/2 each):
    # ties go to the smaller token id, and 0.5 >= threshold 0.5 keeps drafting.
    assert draft.tokens == [7, 8, 9, 10]
    assert draft.support == pytest.approx([1.0, 1.0, 2 / 3, 0.5])
    assert draft.branches == [(2, 12, pytest.approx(1 / 3)), (3, 11, pytest.approx(0.5))]
    # A sequence that has generated nothing yet drafts its siblings' first tokens.
    fresh = make_seq(prompt, [])
    assert drafter.propose([a, b, c, fresh], [1, 1, 1, 3])[3].tokens == [5, 6, 7]


def test_threshold_stops_where_support_splits():
    prompt = [100, 101]
    outs = [[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 9, 9]]
    me = [1, 2]
    for threshold, want in ((0.5, [3, 4]), (0.67, [])):
        seqs = group_of(prompt, [*outs, me])
        drafter = ConsensusDrafter(threshold=threshold)
        assert drafter.propose(seqs, [4] * 4)[3].tokens == want
    seqs = group_of(prompt, [*outs, me])
    assert ConsensusDrafter(threshold=0.0).propose(seqs, [4] * 4)[3].tokens == [3, 4]


def test_dag_merge_counts_reconverged_siblings_in_the_share():
    prompt = [100, 101]
    me = [1, 2]
    # Depth 0 drafts 8 (3/5); in a trie only the three "8" paths go on, so 41 has share 1.
    outs2 = [
        [1, 2, 3, 5, 6, 7, 40],
        [1, 2, 3, 5, 6, 7, 40],
        [1, 2, 8, 5, 6, 7, 41],
        [1, 2, 8, 5, 6, 7, 41],
        [1, 2, 8, 5, 6, 7, 41],
    ]
    trie = ConsensusDrafter(merge_ngram=0, threshold=0.0)
    dag = ConsensusDrafter(merge_ngram=2, threshold=0.0)
    t = trie.propose(group_of(prompt, [*outs2, me]), [6] * 6)[5]
    g = dag.propose(group_of(prompt, [*outs2, me]), [6] * 6)[5]
    assert t.tokens == g.tokens == [8, 5, 6, 7, 41]
    # The "3" paths rejoin at node (1, 5): same token, same next 2-gram (6, 7).
    assert t.support == pytest.approx([0.6, 1.0, 1.0, 1.0, 1.0])
    assert g.support == pytest.approx([0.6, 1.0, 1.0, 1.0, 0.6])
    assert g.branches[-1] == (4, 40, pytest.approx(0.4))


def test_finished_sibling_stays_evidence_until_the_whole_group_is_released():
    prompt = [100, 101]
    done = make_seq(prompt, [1, 2, 3, 4, 5, 6])
    running = make_seq(prompt, [1, 2])
    drafter = ConsensusDrafter()
    drafter.propose([done, running], [4, 4])
    drafter.release(done)
    assert list(drafter._groups) == ["g"]
    assert drafter.propose([running], [3])[0].tokens == [3, 4, 5]
    running.output_ids += [3, 4]
    drafter.release(running)
    assert list(drafter._groups) == []
    # A late member of the retired group revives it with the old evidence.
    late = make_seq(prompt, [1, 2, 3])
    assert drafter.propose([late], [2])[0].tokens == [4, 5]


def test_release_indexes_tokens_generated_after_the_last_propose():
    prompt = [100, 101]
    a = make_seq(prompt, [1])
    b = make_seq(prompt, [1])
    drafter = ConsensusDrafter()
    drafter.propose([a, b], [2, 2])
    a.output_ids += [2, 3, 4]  # accepted in the step that finished it
    drafter.release(a)
    assert drafter.propose([b], [3])[0].tokens == [2, 3, 4]


def test_retired_groups_are_bounded():
    drafter = ConsensusDrafter(max_retired_groups=2)
    for k in range(5):
        a, b = group_of([1, 2], [[3, 4], [3, 4]], group=f"g{k}")
        drafter.propose([a, b], [2, 2])
        drafter.release(a)
        drafter.release(b)
    assert list(drafter._groups) == []
    assert list(drafter._retired) == ["g3", "g4"]


def test_rewritten_output_is_reindexed():
    prompt = [100, 101]
    a = make_seq(prompt, [1, 2, 3, 4])
    b = make_seq(prompt, [1, 2])
    drafter = ConsensusDrafter()
    drafter.propose([a, b], [2, 2])
    a.output_ids[:] = [1, 2, 9]
    assert drafter.propose([a, b], [2, 2])[1].tokens == [9]
    scratch = ConsensusDrafter()
    scratch.propose([a, b], [2, 2])
    assert index_of(drafter, "g") == index_of(scratch, "g")


@pytest.mark.parametrize(
    "kwargs",
    [{"max_ngram": 0}, {"min_ngram": 5}, {"threshold": 1.5}, {"merge_ngram": -1}],
)
def test_bad_settings_are_rejected(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ConsensusDrafter(**kwargs)


def test_acceptance_weighting_turns_away_from_siblings_that_keep_being_wrong():
    prompt = [100, 101]
    shared = [[20 + 5 * i + j for j in range(5)] for i in range(4)]  # S1..S4, 5 tokens each
    right = [1, 2, 3, 4]  # what A and the drafted-for sequence generate after each S_i
    wrong = [51, 52, 53, 54]  # what B and C generate there
    a = make_seq(prompt, [t for s, r in zip(shared, right, strict=True) for t in (*s, r)])
    b = make_seq(prompt, [t for s, w in zip(shared, wrong, strict=True) for t in (*s, w)])
    c = make_seq(prompt, list(b.output_ids))

    def first_tokens(weighted: bool) -> list[int]:
        me = make_seq(prompt, list(shared[0]))
        seqs = [make_seq(prompt, list(x.output_ids)) for x in (a, b, c)] + [me]
        drafter = ConsensusDrafter(weight_by_acceptance=weighted)
        got = []
        for i in range(4):
            got.append(drafter.propose(seqs, [0, 0, 0, 1])[3].tokens[0])
            me.output_ids += [right[i], *(shared[i + 1] if i < 3 else [])]
        return got

    # Unweighted, B and C outvote A every time. Weighted, every member starts at 1/2; at
    # query i, B and C have missed i times and weigh 1 / (2 + i) each against A's 1/2:
    # 2 x 1/3 still wins at i = 1, 2 x 1/4 ties A at i = 2 (the smaller id, A's, wins).
    assert first_tokens(weighted=False) == [51, 52, 53, 54]
    assert first_tokens(weighted=True) == [51, 52, 3, 4]
