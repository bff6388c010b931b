"""Incremental detokenization in ``TextTracker``: exact text, stop strings, linear cost.

Tokenizers are built offline: the embedded SmolLM2 tokenizer (read from its GGUF file), a
byte-level BPE trained here, a sentencepiece-like Metaspace + byte-fallback fast tokenizer
and a slow (pure Python) sentencepiece-like one.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, replace
from typing import Any

import pytest

from langchain_seed.engine.config import SamplingParams
from langchain_seed.engine.sequence import SequenceState
from langchain_seed.engine.text.detokenizer import DetokState, TextTracker

SPECIALS = ["<s>", "</s>", "<pad>"]
MULTI_BYTE = ["é", "ö", "ß", "€", "中", "😀", "👍🏽", "🦀"]
TRAINING_TEXT = (
    "hello world, the quick brown fox jumps over the lazy dog. wörld café naïve "
    "straße 中文 😀 👍🏽 the end. hello hello world world the the fox fox\n"
) * 20
SP_PIECES = ["▁", "▁hello", "▁world", "▁the", "▁end", "llo", "wö", "rld", "é", ".", ",", "!", "a"]


@dataclass
class Case:
    """A tokenizer and the ids a random output is drawn from."""

    tokenizer: Any
    byte_ids: list[int]
    """Token id of each byte value (index = byte)."""
    text_ids: list[int]
    """Ordinary (non-special) tokens."""
    special_ids: list[int]
    prefix_stable: bool = True
    """Appending tokens never changes text already decoded. False for ``tokenizers``'
    ByteFallback: one invalid byte turns its whole run of byte tokens into U+FFFD, valid
    characters before it included, so no streaming can show only final text there."""


# ----- tokenizers ---------------------------------------------------------------------
def byte_level_case(tokenizer: Any) -> Case:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = bytes_to_unicode()
    byte_ids = [tokenizer.convert_tokens_to_ids(chars[b]) for b in range(256)]
    text = tokenizer.encode(TRAINING_TEXT[:300], add_special_tokens=False)
    return Case(tokenizer, byte_ids, sorted(set(text)), list(tokenizer.all_special_ids))


def trained_byte_level() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=SPECIALS,
    )
    core.train_from_iterator([TRAINING_TEXT], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )


def sp_vocab() -> dict[str, int]:
    tokens = SPECIALS + [f"<0x{b:02X}>" for b in range(256)] + SP_PIECES
    return {tok: i for i, tok in enumerate(tokens)}


def sp_case(tokenizer: Any, prefix_stable: bool) -> Case:
    vocab = sp_vocab()
    byte_ids = [vocab[f"<0x{b:02X}>"] for b in range(256)]
    return Case(tokenizer, byte_ids, [vocab[p] for p in SP_PIECES], [0, 1, 2], prefix_stable)


def metaspace_fast() -> Any:
    """Llama-style fast tokenizer: Metaspace pieces, byte fallback, one leading space cut."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(vocab=sp_vocab(), merges=[], byte_fallback=True))
    core.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(content=" ", left=1, right=0),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def sentencepiece_slow() -> Any:
    """A slow (Python) sentencepiece-like tokenizer: byte runs, '▁' spaces, leading one cut."""
    from transformers import PythonBackend

    vocab = sp_vocab()
    inverse = {i: tok for tok, i in vocab.items()}

    class SlowSentencePiece(PythonBackend):  # type: ignore[misc]
        def get_vocab(self) -> dict[str, int]:
            return dict(vocab)

        @property
        def vocab_size(self) -> int:
            return len(vocab)

        def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
            return [f"<0x{b:02X}>" for b in text.encode()]

        def _convert_token_to_id(self, token: str) -> int:
            return vocab[token]

        def _convert_id_to_token(self, index: int) -> str:
            return inverse[index]

        def convert_tokens_to_string(self, tokens: list[str]) -> str:
            parts: list[str] = []
            run = bytearray()
            for tok in tokens:
                if tok.startswith("<0x") and len(tok) == 6:
                    run.append(int(tok[3:5], 16))
                    continue
                parts.append(run.decode("utf-8", errors="replace"))
                run.clear()
                parts.append(tok.replace("▁", " "))
            parts.append(run.decode("utf-8", errors="replace"))
            text = "".join(parts)
            return text[1:] if text.startswith(" ") else text

    return SlowSentencePiece(bos_token="<s>", eos_token="</s>", pad_token="<pad>")


@pytest.fixture(scope="module")
def smollm2() -> Case:
    from transformers import AutoTokenizer

    from langchain_seed.engine.execution.loading import ModelLoadError, embedded_gguf_path

    try:
        path = embedded_gguf_path()
    except ModelLoadError as exc:
        pytest.skip(str(exc))
    return byte_level_case(AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name))


@pytest.fixture(scope="module")
def byte_level() -> Case:
    return byte_level_case(trained_byte_level())


@pytest.fixture(scope="module")
def metaspace() -> Case:
    return sp_case(metaspace_fast(), prefix_stable=False)


@pytest.fixture(scope="module")
def slow_sp() -> Case:
    return sp_case(sentencepiece_slow(), prefix_stable=True)


LOCAL_CASES = ["smollm2", "byte_level", "metaspace", "slow_sp"]


# ----- helpers ------------------------------------------------------------------------
def random_ids(case: Case, rng: random.Random, segments: int, invalid: bool = True) -> list[int]:
    """Ordinary tokens, specials and multi-byte characters as byte tokens; with ``invalid``
    also random bytes, random ids and unfinished characters (invalid UTF-8)."""
    ids: list[int] = []
    vocab_size = len(case.tokenizer)
    for _ in range(segments):
        r = rng.random()
        if r < 0.3:
            data = rng.choice(MULTI_BYTE).encode()
            if invalid and rng.random() < 0.2:
                data = data[: rng.randrange(1, len(data))]  # unfinished character
            ids += [case.byte_ids[b] for b in data]
        elif r < 0.4:
            ids.append(rng.choice(case.special_ids))
        elif r < 0.5 and invalid:
            ids.append(case.byte_ids[rng.randrange(256)])
        elif r < 0.6 and invalid:
            ids.append(rng.randrange(vocab_size))
        else:
            ids.append(rng.choice(case.text_ids))
    return ids


def random_chunks(rng: random.Random, total: int) -> list[int]:
    """Chunk sizes 1..17 (a speculative step accepts up to 17 tokens) summing to ``total``."""
    sizes: list[int] = []
    while sum(sizes) < total:
        sizes.append(min(rng.randint(1, 17), total - sum(sizes)))
    return sizes


def full_decode(case: Case, ids: list[int]) -> str:
    return str(case.tokenizer.decode(ids, skip_special_tokens=True))


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """The old behaviour: decode everything, cut before the earliest stop string."""
    hits = [i for i in (text.find(s) for s in stop) if i != -1]
    return (text[: min(hits)], True) if hits else (text, False)


def new_sequence(stop: tuple[str, ...] = ()) -> SequenceState:
    return SequenceState(prompt_ids=[0], params=SamplingParams(max_tokens=10_000, stop=stop))


@dataclass
class Run:
    """What one incremental run saw."""

    seq: SequenceState
    streamed: str
    stopped: bool


def run_incremental(
    case: Case,
    ids: list[int],
    chunks: list[int],
    stop: tuple[str, ...] = (),
    *,
    exact_each_step: bool = True,
    tokenizer: Any = None,
    lock: threading.Lock | None = None,
) -> Run:
    """Append ``ids`` in ``chunks`` as the engine does; check the text after every update."""
    tracker = TextTracker(tokenizer or case.tokenizer, lock or threading.Lock())
    seq = new_sequence(stop)
    streamed, pos = "", 0
    for size in chunks:
        seq.output_ids += ids[pos : pos + size]
        pos += size
        stopped = tracker.update(seq)
        if exact_each_step or stopped:
            full = full_decode(case, seq.output_ids)
            # Only a ByteFallback-like decoder may hold back a window that ends unfinished.
            if case.prefix_stable or stopped or not full.endswith("\ufffd"):
                assert (seq.text, stopped) == cut_at_stop(full, stop), f"after {pos} tokens"
        if stopped:
            return Run(seq, streamed + tracker.delta(seq, final=True), True)
        streamed += tracker.delta(seq, final=False)
    seq.finish_reason = "length"  # the engine sets it before the last update
    stopped = tracker.update(seq)
    assert (seq.text, stopped) == cut_at_stop(full_decode(case, seq.output_ids), stop)
    return Run(seq, streamed + tracker.delta(seq, final=True), stopped)


# ----- exact text ---------------------------------------------------------------------
@pytest.mark.parametrize("case_name", LOCAL_CASES)
@pytest.mark.parametrize("seed", range(12))
def test_incremental_text_equals_full_decode_after_every_chunk(case_name, seed, request):
    case = request.getfixturevalue(case_name)
    rng = random.Random(seed)
    ids = random_ids(case, rng, segments=60)
    run = run_incremental(case, ids, random_chunks(rng, len(ids)))
    assert run.seq.text == full_decode(case, ids)
    if case.prefix_stable:
        assert run.streamed == run.seq.text


@pytest.mark.parametrize("case_name", LOCAL_CASES)
def test_emoji_bytes_one_at_a_time_keep_text_exact_and_stream_only_whole_chars(case_name, request):
    case = request.getfixturevalue(case_name)
    tracker = TextTracker(case.tokenizer, threading.Lock())
    seq = new_sequence()
    pieces = []
    # "a" is an ordinary token (a byte token for byte-level BPE, a piece for sentencepiece).
    ids = [case.tokenizer.convert_tokens_to_ids("a")] + [case.byte_ids[b] for b in "😀€".encode()]
    for token in ids:
        seq.output_ids.append(token)
        tracker.update(seq)
        full = full_decode(case, seq.output_ids)
        if case.prefix_stable or not full.endswith("\ufffd"):  # else held back (ByteFallback)
            assert seq.text == full
        pieces.append(tracker.delta(seq, final=False))
    assert [p for p in pieces if p] == ["a", "😀", "€"]
    assert seq.text == "a😀€"


def test_delta_holds_back_a_stop_prefix_before_an_unfinished_character(byte_level):
    case = byte_level
    tracker = TextTracker(case.tokenizer, threading.Lock())
    seq = new_sequence(stop=("b😀",))
    streamed = ""
    for b in "ab😀".encode():
        seq.output_ids.append(case.byte_ids[b])
        stopped = tracker.update(seq)
        streamed += tracker.delta(seq, final=stopped)
    assert stopped and streamed == seq.text == "a"


def test_final_update_keeps_an_unfinished_trailing_character(byte_level):
    case = byte_level
    tracker = TextTracker(case.tokenizer, threading.Lock())
    seq = new_sequence()
    seq.output_ids = [case.byte_ids[b] for b in "ok😀".encode()[:-1]]
    tracker.update(seq)
    assert tracker.delta(seq, final=False) == "ok"
    seq.finish_reason = "length"
    tracker.update(seq)
    assert seq.text == full_decode(case, seq.output_ids) == "ok\ufffd"
    assert tracker.delta(seq, final=True) == "\ufffd"


class CleanUpSpaces:
    """Byte-level decoding + transformers' ``clean_up_tokenization`` (what slow and WordPiece
    tokenizers do with ``clean_up_tokenization_spaces=True``): a decoder that is not local."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def decode(self, ids: list[int], **kwargs: Any) -> str:
        return str(self.inner.clean_up_tokenization(self.inner.decode(ids, **kwargs)))


def test_non_local_decoder_falls_back_to_full_decode_and_stays_exact(byte_level):
    # " ." becomes ".": the space read in the last step disappears once "." arrives, which
    # the window (context = the space) shows and only a full decode gets right.
    case = replace(byte_level, tokenizer=CleanUpSpaces(byte_level.tokenizer))
    ids = byte_level.tokenizer.convert_tokens_to_ids(["x", "Ġ", ".", "y", "Ġ", "Ġ", ",", "z"])
    run = run_incremental(case, ids, [1] * len(ids))
    assert run.seq.text == full_decode(case, ids) == "x.y ,z"


def test_non_local_decoder_beyond_the_context_is_exact_at_the_end(byte_level):
    # " ' " becomes "'": a rule three tokens wide, wider than the one-token context.
    case = replace(byte_level, tokenizer=CleanUpSpaces(byte_level.tokenizer))
    ids = byte_level.tokenizer.convert_tokens_to_ids(["x", "Ġ", "'", "Ġ", "s"])
    run = run_incremental(case, ids, [1] * len(ids), exact_each_step=False)
    assert run.seq.text == full_decode(case, ids) == "x's"


def test_stop_string_is_confirmed_on_the_full_decode(byte_level):
    # The window text holds "' s" but the full decode ("x's") does not: no stop.
    case = replace(byte_level, tokenizer=CleanUpSpaces(byte_level.tokenizer))
    ids = byte_level.tokenizer.convert_tokens_to_ids(["x", "Ġ", "'", "Ġ", "s", "!"])
    run = run_incremental(case, ids, [1] * len(ids), ("' s",), exact_each_step=False)
    assert not run.stopped and run.seq.text == "x's!"


@pytest.mark.parametrize("seed", range(12))
def test_non_local_decoder_final_text_is_exact(byte_level, seed):
    case = replace(byte_level, tokenizer=CleanUpSpaces(byte_level.tokenizer))
    rng = random.Random(seed)
    ids = random_ids(case, rng, segments=60)
    run = run_incremental(case, ids, random_chunks(rng, len(ids)), exact_each_step=False)
    assert run.seq.text == full_decode(case, ids)


def test_update_after_output_truncation_restarts_without_error(byte_level):
    case = byte_level
    tracker = TextTracker(case.tokenizer, threading.Lock())
    seq = new_sequence()
    seq.output_ids = [case.byte_ids[b] for b in "hello wörld".encode()]
    tracker.update(seq)
    assert isinstance(seq.detok, DetokState) and seq.detok.read_offset == len(seq.output_ids)
    del seq.output_ids[3:]
    tracker.update(seq)
    assert seq.text == "hel"


# ----- stop strings -------------------------------------------------------------------
@pytest.mark.parametrize("case_name", LOCAL_CASES)
@pytest.mark.parametrize("seed", range(12))
def test_stop_string_cuts_where_a_full_decode_does(case_name, seed, request):
    case = request.getfixturevalue(case_name)
    rng = random.Random(seed)
    ids = random_ids(case, rng, segments=60)
    text = full_decode(case, ids)
    start = rng.randrange(len(text) // 2, len(text) - 3)
    stop = (text[start : start + rng.randint(1, 3)], "never-in-output")
    run = run_incremental(case, ids, random_chunks(rng, len(ids)), stop)
    assert run.stopped
    if case.prefix_stable:  # else a transient decode may hold the stop string earlier
        assert run.streamed == run.seq.text == text[: text.find(stop[0])]


# ----- cost and locking ---------------------------------------------------------------
class CountingTokenizer:
    """Forwards ``decode``; counts the tokens decoded and checks the lock is held."""

    def __init__(self, inner: Any, lock: threading.Lock) -> None:
        self.inner = inner
        self.lock = lock
        self.decoded_tokens = 0

    def decode(self, ids: list[int], **kwargs: Any) -> str:
        assert self.lock.locked(), "tokenizer called without the tokenizer lock"
        self.decoded_tokens += len(ids)
        return str(self.inner.decode(ids, **kwargs))


@pytest.mark.parametrize("case_name", LOCAL_CASES)
def test_decoding_cost_is_linear_in_output_length(case_name, request):
    case = request.getfixturevalue(case_name)
    rng = random.Random(0)
    # ByteFallback turns a byte run with an invalid byte into U+FFFD, valid characters
    # before it included; each such run costs one full decode, so give it valid UTF-8.
    ids = random_ids(case, rng, segments=2000, invalid=case.prefix_stable)[:2000]
    lock = threading.Lock()
    counting = CountingTokenizer(case.tokenizer, lock)
    # Checking every step would itself decode quadratically: check the end only.
    run_incremental(case, ids, [1] * len(ids), exact_each_step=False, tokenizer=counting, lock=lock)
    # Decoding everything each step would be 2000 * 2001 / 2 ~ 2e6 tokens.
    assert counting.decoded_tokens < 20 * len(ids)


def test_every_tokenizer_call_holds_the_lock(byte_level):
    case = byte_level
    rng = random.Random(1)
    ids = random_ids(case, rng, segments=40)
    lock = threading.Lock()
    counting = CountingTokenizer(case.tokenizer, lock)
    text = full_decode(case, ids)
    stop = (text[len(text) // 2 :][:2],)
    run = run_incremental(
        case, ids, random_chunks(rng, len(ids)), stop, tokenizer=counting, lock=lock
    )
    assert run.stopped and counting.decoded_tokens > 0
