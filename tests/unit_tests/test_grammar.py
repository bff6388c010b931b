"""Grammar-constrained decoding: exact with every policy and drafter.

Greedy: the engine's constrained output equals a plain constrained-decoding loop (one
forward per token, the grammar's bitmask applied, argmax) token for token, under every
policy and drafter, drafts cut at the grammar's first refused token. Sampling: on a
16-token vocabulary the exact constrained marginals are computed from the target, and
1,500 requests through the model drafter (rejection sampling, sampled drafts) match them;
two deliberately broken variants (drafts cut before a refused sampled token, masks on the
first position only) fail the same check.
"""

from __future__ import annotations

import json
import random

import pytest
import torch

import langchain_seed.engine.text.grammar as grammar_module
from langchain_seed.engine import Engine, EngineConfig, SamplingParams
from langchain_seed.engine.config import Grammar
from langchain_seed.engine.speculation.sampling import process_logits

xgr = pytest.importorskip("xgrammar")

PROMPTS = [
    "abc abc abc abc",
    "the cat sat on a mat",
    "cab cab cab cab cab",
    "x",
    "aaa bbb ccc aaa bbb ccc",
    "hello",
]
REGEX = "[a-e]{3,12}(x|yz)"
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 6}, "ok": {"type": "boolean"}},
    "required": ["name", "ok"],
}
GRAMMARS = {
    "regex": Grammar.regex(REGEX),
    "json_schema": Grammar.json_schema(SCHEMA),
    "ebnf": Grammar.ebnf('root ::= ("ab" | "cd")+ "!"'),
}
MAX_NEW = 24


def constrained_greedy(model, tokenizer, prompt: str, grammar: Grammar, stop_ids) -> list[int]:
    """Constrained greedy decoding without any engine: full forward, bitmask, argmax."""
    vocab = model.get_input_embeddings().num_embeddings
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab, stop_token_ids=stop_ids)
    compiler = xgr.GrammarCompiler(info)
    compiled = {
        "regex": lambda: compiler.compile_regex(grammar.spec),
        "json_schema": lambda: compiler.compile_json_schema(grammar.spec, any_whitespace=False),
        "ebnf": lambda: compiler.compile_grammar(grammar.spec),
    }[grammar.kind]()
    matcher = xgr.GrammarMatcher(compiled)
    bitmask = xgr.allocate_token_bitmask(1, vocab)
    ids = tokenizer(prompt).input_ids
    out: list[int] = []
    with torch.no_grad():
        while len(out) < MAX_NEW:
            logits = model(torch.tensor([ids + out])).logits[0, -1].float()
            matcher.fill_next_token_bitmask(bitmask)
            allowed = grammar_module.unpack_allowed(bitmask[0], logits.shape[-1])
            token = int(logits.masked_fill(~allowed, float("-inf")).argmax())
            out.append(token)
            assert matcher.accept_token(token)
            if token in stop_ids:
                break
    return out


@pytest.fixture(scope="module")
def tiny_pair(grammar_pair):
    return grammar_pair


@pytest.fixture(scope="module")
def stop_ids(tiny_pair) -> list[int]:
    return [tiny_pair.tokenizer.eos_token_id]


@pytest.fixture(scope="module")
def references(tiny_pair, stop_ids) -> dict[str, list[list[int]]]:
    return {
        name: [
            constrained_greedy(tiny_pair.target, tiny_pair.tokenizer, p, g, stop_ids)
            for p in PROMPTS
        ]
        for name, g in GRAMMARS.items()
    }


DRAFTERS = {
    "none": ((), False),
    "ngram": (("ngram",), False),
    "consensus": (("consensus",), False),
    "grammar": (("grammar",), False),
    "model": (("model",), True),
}


@pytest.mark.parametrize("policy", ["autoregressive", "fcfs_rounds", "batched"])
@pytest.mark.parametrize("drafter", list(DRAFTERS))
def test_constrained_greedy_equals_plain_constrained_decoding(
    tiny_pair, references, policy, drafter
):
    drafters, with_draft = DRAFTERS[drafter]
    config = EngineConfig(
        model=str(tiny_pair.target_path),
        draft_model=str(tiny_pair.draft_path) if with_draft else None,
        policy=policy,
        drafters=drafters,
        max_batch_size=8,
        adaptive_gamma=False,
        prefix_cache_tokens=0,
    )
    with Engine(config) as engine:
        for name, grammar in GRAMMARS.items():
            params = SamplingParams(max_tokens=MAX_NEW, grammar=grammar)
            # every prompt twice in one group so that consensus drafts exist
            results = engine.generate(PROMPTS * 2, params)
            got = [r.token_ids for r in results]
            assert got == references[name] * 2, name
        stats = engine.stats()
    if policy != "autoregressive" and drafter in ("model", "grammar"):
        assert stats.spec.accepted > 0, drafter


def test_constrained_output_is_in_the_language(tiny_pair):
    import re

    with Engine(model=str(tiny_pair.target_path), drafters=("ngram",)) as engine:
        results = engine.generate(PROMPTS, SamplingParams(max_tokens=40, grammar=GRAMMARS["regex"]))
        for r in results:
            if r.finish_reason == "stop":
                assert re.fullmatch(REGEX, r.text), r.text
        results = engine.generate(
            PROMPTS, SamplingParams(max_tokens=60, grammar=GRAMMARS["json_schema"])
        )
        finished = [r for r in results if r.finish_reason == "stop"]
        assert finished, [r.text for r in results]
        for r in finished:
            # xgrammar's JSON strings admit raw control characters (JSON wants them
            # escaped); a random model writes some, so parse leniently.
            value = json.loads(r.text, strict=False)
            assert set(value) == {"name", "ok"} and isinstance(value["ok"], bool)


def test_seeded_constrained_sampling_is_the_same_with_and_without_drafts(tiny_pair):
    outputs = []
    for policy, drafters in (("autoregressive", ()), ("batched", ("model", "ngram"))):
        config = EngineConfig(
            model=str(tiny_pair.target_path),
            draft_model=str(tiny_pair.draft_path) if drafters else None,
            policy=policy,
            drafters=drafters,
            adaptive_gamma=False,
        )
        plist = [
            SamplingParams(temperature=0.8, seed=7 + i, max_tokens=20, grammar=GRAMMARS["regex"])
            for i in range(len(PROMPTS))
        ]
        with Engine(config) as engine:
            outputs.append([r.token_ids for r in engine.generate(PROMPTS, plist)])
    assert outputs[0] == outputs[1]


# ----- sampling keeps the constrained distribution ----------------------------------------
WORD_PROMPT = [0, 5, 9, 4, 7]
WORD_REGEX = "(w[1-5]|w[7-9]){3,}"  # 8 of the 16 tokens allowed, at least 3 of them
SAMPLES = 1500
TOLERANCE = 0.075  # max total variation per position; sampling noise is ~0.03 here


def exact_constrained_marginals(model, tokenizer, params: SamplingParams) -> torch.Tensor:
    """[3, vocab] exact marginals of the first three tokens under the masked sampler."""
    vocab = model.config.vocab_size
    allowed = torch.tensor(
        [
            bool(__import__("re").fullmatch(r"w[1-5]|w[7-9]", t))
            for t in tokenizer.convert_ids_to_tokens(list(range(vocab)))
        ]
    )

    def dist(logits: torch.Tensor) -> torch.Tensor:
        return process_logits(logits.masked_fill(~allowed, float("-inf")), params)

    with torch.no_grad():
        base = torch.tensor([WORD_PROMPT])
        p1 = dist(model(base).logits[0, -1][None])[0]
        ctx2 = torch.cat([base.repeat(vocab, 1), torch.arange(vocab)[:, None]], dim=1)
        p2 = dist(model(ctx2).logits[:, -1])
        joint12 = p1[:, None] * p2
        ctx3 = torch.cat(
            [
                base.repeat(vocab * vocab, 1),
                torch.arange(vocab).repeat_interleave(vocab)[:, None],
                torch.arange(vocab).repeat(vocab)[:, None],
            ],
            dim=1,
        )
        p3 = dist(model(ctx3).logits[:, -1]).view(vocab, vocab, vocab)
        m3 = (joint12[:, :, None] * p3).sum(dim=(0, 1))
        return torch.stack([p1, joint12.sum(0), m3])


def sample_constrained(pair, draft_path) -> tuple[torch.Tensor, object]:
    config = EngineConfig(
        model=str(pair.target_path),
        draft_model=str(draft_path),
        policy="batched",
        drafters=("model",),
        max_batch_size=64,
        gamma=3,
        adaptive_gamma=False,
        prefix_cache_tokens=0,
    )
    grammar = Grammar.regex(WORD_REGEX)
    params = SamplingParams(temperature=1.0, max_tokens=3, grammar=grammar)
    random.seed(20261202)
    with Engine(config) as engine:
        results = engine.generate([WORD_PROMPT] * SAMPLES, params)
        stats = engine.stats()
    vocab = pair.target.config.vocab_size
    counts = torch.zeros(3, vocab)
    for r in results:
        for pos, tok in enumerate(r.token_ids[:3]):
            counts[pos, tok] += 1
    return counts / counts.sum(dim=1, keepdim=True), stats


def total_variation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a - b).abs().sum(dim=-1)


@pytest.fixture(scope="module")
def exact_words(tiny_small_vocab_pair) -> torch.Tensor:
    pair = tiny_small_vocab_pair
    return exact_constrained_marginals(pair.target, pair.tokenizer, SamplingParams(temperature=1.0))


def test_constrained_sampling_with_model_drafts_keeps_the_constrained_distribution(
    tiny_small_vocab_pair, far_draft, exact_words
):
    empirical, stats = sample_constrained(tiny_small_vocab_pair, far_draft)
    assert stats.spec.drafted > 0
    distance = total_variation(empirical, exact_words)
    assert (distance < TOLERANCE).all(), f"TV per position {distance.tolist()}"


def _cut_before_refused(self, draft, *, keep_refused):
    return ORIGINAL_CONSTRAIN(self, draft, keep_refused=False)


def _first_position_only(self, draft, *, keep_refused):
    out = ORIGINAL_CONSTRAIN(self, draft, keep_refused=keep_refused)
    out.allowed[1:] = -1
    return out


def _lenient_advance(self, tokens):
    for token in tokens:
        self.matcher.accept_token(int(token))


ORIGINAL_CONSTRAIN = grammar_module.RowGrammar.constrain
BROKEN = {
    "cut_before_refused_sampled_token": _cut_before_refused,
    "mask_first_position_only": _first_position_only,
}


@pytest.mark.parametrize("broken", list(BROKEN))
def test_each_broken_grammar_rule_fails_the_distribution_check(
    tiny_small_vocab_pair, far_draft, exact_words, monkeypatch, broken
):
    monkeypatch.setattr(grammar_module.RowGrammar, "constrain", BROKEN[broken])
    # the engine's own guard (a refused emitted token fails the request) is switched off, so
    # that the distribution check itself must catch the broken rule
    monkeypatch.setattr(grammar_module.RowGrammar, "advance", _lenient_advance)
    empirical, _ = sample_constrained(tiny_small_vocab_pair, far_draft)
    distance = total_variation(empirical, exact_words)
    assert (distance >= TOLERANCE).any(), f"TV per position {distance.tolist()}"


# ----- errors -----------------------------------------------------------------------------
def test_a_refused_emitted_token_fails_that_request_only(
    tiny_small_vocab_pair, far_draft, monkeypatch
):
    """The engine's guard: a token the grammar refuses fails its request with a clear error,
    and the other requests still finish."""
    monkeypatch.setattr(grammar_module.RowGrammar, "constrain", _first_position_only)
    config = EngineConfig(
        model=str(tiny_small_vocab_pair.target_path),
        draft_model=str(far_draft),
        drafters=("model",),
        gamma=3,
        adaptive_gamma=False,
    )
    grammar = Grammar.regex(WORD_REGEX)
    with Engine(config) as engine:
        bad = engine.submit_many(
            [WORD_PROMPT] * 64, SamplingParams(temperature=1.0, max_tokens=6, grammar=grammar)
        )
        good = engine.submit_many([WORD_PROMPT] * 8, SamplingParams(max_tokens=6, ignore_eos=True))
        assert all(f.result(timeout=60).finish_reason == "length" for f in good)
        errors = [f.exception(timeout=60) for f in bad]
    assert any(isinstance(e, RuntimeError) and "refused" in str(e) for e in errors)


def test_a_request_failing_in_its_grammar_step_is_not_verified_or_streamed(tiny_pair, monkeypatch):
    def boom(self, draft, *, keep_refused):
        raise RuntimeError("grammar step failed")

    monkeypatch.setattr(grammar_module.RowGrammar, "constrain", boom)
    pieces: list[str] = []
    with Engine(model=str(tiny_pair.target_path), drafters=("ngram",)) as engine:
        bad = engine.submit(
            "abc", SamplingParams(max_tokens=8, grammar=GRAMMARS["regex"]), on_delta=pieces.append
        )
        good = engine.submit("abc", SamplingParams(max_tokens=8))
        assert good.result(timeout=60).finish_reason in ("stop", "length")
        with pytest.raises(RuntimeError, match="grammar step failed"):
            bad.result(timeout=60)
    assert pieces == []


def test_bad_grammars_fail_at_submission_with_the_construct_named(tiny_pair):
    with Engine(model=str(tiny_pair.target_path)) as engine:
        with pytest.raises(ValueError, match="regex grammar.*[Ll]ookbehind"):
            engine.submit("abc", SamplingParams(grammar=Grammar.regex("(?<=a)b")))
        with pytest.raises(ValueError, match="ebnf grammar.*not defined"):
            engine.submit("abc", SamplingParams(grammar=Grammar.ebnf("root ::= missing")))
        # the engine still serves others
        assert engine.generate(["abc"], SamplingParams(max_tokens=3))[0].finish_reason


def test_grammar_spec_validation():
    with pytest.raises(ValueError, match="grammar kind must be one of"):
        Grammar("yaml", "x")
    with pytest.raises(ValueError, match="needs a non-empty spec"):
        Grammar.regex("")
    with pytest.raises(ValueError, match="json_schema is not valid JSON"):
        Grammar.json_schema("{not json")
    with pytest.raises(ValueError, match="grammar and ignore_eos=True cannot be combined"):
        SamplingParams(grammar=Grammar.regex("a+"), ignore_eos=True)
    with pytest.raises(TypeError, match="grammar must be a Grammar"):
        SamplingParams(grammar="[a-z]+")  # type: ignore[arg-type]
