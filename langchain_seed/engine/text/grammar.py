"""Grammar-constrained decoding with xgrammar, speculation included (still lossless).

A request whose :class:`~langchain_seed.engine.config.SamplingParams` carries a
:class:`~langchain_seed.engine.config.Grammar` gets a :class:`RowGrammar`: an xgrammar
matcher that follows the request's output. Every step:

1. :meth:`RowGrammar.constrain` walks the step's draft through the matcher: at each
   position it fills the token bitmask of what the grammar allows next, and it cuts the
   draft at the first token the grammar refuses. The matcher is rolled back to where it
   was, so a draft never changes the request's grammar state.
2. Verification (:mod:`~langchain_seed.engine.speculation.verification`) masks the row's
   logits at every verified position with its bitmask
   (refused tokens get ``-inf``) before any acceptance rule runs, so the target
   distribution at every position is the constrained one.
3. :meth:`RowGrammar.advance` feeds the emitted tokens (accepted draft + next token).

Where the draft is cut keeps decoding exact. A draft verified by matching (greedy and
seeded rows) or a deterministic draft (n-gram, consensus) is cut *before* the refused
token: that token can never be accepted, and the token emitted in its place is the
target's constrained token either way. A sampled draft-model draft verified by rejection
sampling keeps the refused token as its last: at a rejected position the rule emits a draw
from ``max(p - q, 0)``, and that residual is what makes the output distributed as ``p``.
Cutting before the token would draw from ``p`` instead, giving
``P(x) = p(x) + q(refused) * (p(x) - r(x))``: the target distribution skewed away from the
tokens the draft model favours. (The refused token has ``p = 0`` under the mask, so it is
rejected with certainty: the kept position costs one verified position, never a token.)

Without speculation the same masks make this plain constrained decoding; the tests check
that every policy and drafter gives exactly that output.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from langchain_seed.engine.config import Grammar
from langchain_seed.engine.speculation.drafters.base import Draft

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

INSTALL_HINT = "pip install 'langchain-seed[agents]'  (or: pip install xgrammar)"

_XGR_PREFIX = re.compile(r"^\[[0-9:]+\]\s+\S+:\d+:\s*")


def _xgrammar() -> Any:
    try:
        import xgrammar
    except ImportError as exc:
        raise ImportError(
            f"grammar-constrained decoding (tool calls, structured output) needs xgrammar: "
            f"{INSTALL_HINT}"
        ) from exc
    return xgrammar


class GrammarCompiler:
    """Compiles grammars for one tokenizer (cached) and makes per-request matchers.

    Args:
        tokenizer: the target's tokenizer.
        vocab_size: rows of the target's logits (may exceed the tokenizer's length).
        stop_ids: tokens that end a request (EOS); the grammar allows them once it is
            complete.
        tokenizer_lock: the engine's tokenizer lock.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        vocab_size: int,
        stop_ids: Iterable[int],
        tokenizer_lock: threading.Lock,
    ) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.stop_ids = sorted(stop_ids)
        self._tokenizer_lock = tokenizer_lock
        self._lock = threading.Lock()
        self._compiler: Any = None

    def _get(self) -> Any:
        with self._lock:
            if self._compiler is None:
                xgr = _xgrammar()
                with self._tokenizer_lock:  # the engine thread decodes with this tokenizer
                    info = xgr.TokenizerInfo.from_huggingface(
                        self.tokenizer, vocab_size=self.vocab_size, stop_token_ids=self.stop_ids
                    )
                self._compiler = xgr.GrammarCompiler(info, max_threads=2)
            return self._compiler

    def compile(self, grammar: Grammar) -> Any:
        """The compiled grammar (xgrammar caches repeats).

        Raises:
            ValueError: naming the construct the compiler cannot handle.
        """
        compiler = self._get()
        try:
            if grammar.kind == "json_schema":
                return compiler.compile_json_schema(grammar.spec, any_whitespace=False)
            if grammar.kind == "json_object":  # the builtin JSON grammar allows any value
                return compiler.compile_json_schema('{"type": "object"}', any_whitespace=False)
            if grammar.kind == "regex":
                return compiler.compile_regex(grammar.spec)
            if grammar.kind == "ebnf":
                return compiler.compile_grammar(grammar.spec)
            return compiler.compile_structural_tag(grammar.spec)
        except (RuntimeError, ValueError, TypeError, json.JSONDecodeError) as exc:
            message = _XGR_PREFIX.sub("", str(exc).strip().splitlines()[0] if str(exc) else "")
            raise ValueError(f"cannot compile the {grammar.kind} grammar: {message}") from exc

    def matcher(self, grammar: Grammar) -> RowGrammar:
        """A fresh matcher for one request (compiles ``grammar`` first)."""
        return RowGrammar(self.compile(grammar), self.vocab_size)


class RowGrammar:
    """The grammar state of one request, following its emitted tokens."""

    def __init__(self, compiled: Any, vocab_size: int) -> None:
        xgr = _xgrammar()
        self._xgr = xgr
        self.matcher = xgr.GrammarMatcher(compiled)
        self.vocab_size = vocab_size

    def constrain(self, draft: Draft, *, keep_refused: bool) -> Draft:
        """``draft`` cut at the grammar's first refused token, with a bitmask per position.

        Args:
            draft: the step's draft for this request.
            keep_refused: keep the refused token as the draft's last (sampled drafts
                verified by rejection sampling; see the module docstring).

        Returns:
            A draft of ``k`` tokens whose ``allowed`` is ``[k + 1, words]`` (int32 bits):
            what the grammar allows at each verified position.
        """
        tokens = draft.tokens
        masks = self._xgr.allocate_token_bitmask(len(tokens) + 1, self.vocab_size)
        walked = 0
        keep = len(tokens)
        for i in range(len(tokens) + 1):
            self.matcher.fill_next_token_bitmask(masks, i)
            if i == len(tokens):
                break
            if not self.matcher.accept_token(int(tokens[i])):  # refused: state unchanged
                keep = i + 1 if keep_refused else i
                if keep_refused:
                    masks[i + 1].fill_(-1)  # after a refused token: never reached
                break
            walked += 1
            if self.matcher.is_terminated():  # a drafted stop token: the request ends there
                keep = i + 1
                masks[i + 1].fill_(-1)  # after the stop token: never reached
                break
        if walked:
            self.matcher.rollback(walked)
        probs = draft.probs[:keep] if draft.probs is not None else None
        return replace(draft, tokens=list(tokens[:keep]), probs=probs, allowed=masks[: keep + 1])

    def advance(self, tokens: Iterable[int]) -> None:
        """Feed the emitted tokens (the accepted draft and the next token).

        Raises:
            RuntimeError: if the grammar refuses an emitted token (a bug: masks make every
                emitted token allowed).
        """
        for token in tokens:
            if self.matcher.is_terminated():
                return
            if not self.matcher.accept_token(int(token)):
                raise RuntimeError(f"the grammar refused emitted token {token}")

    def forced_text(self) -> str:
        """The longest text the grammar allows as the only continuation from here."""
        if self.matcher.is_terminated():
            return ""
        return str(self.matcher.find_jump_forward_string())


def unpack_allowed(bits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``[..., words]`` int32 bitmasks -> ``[..., vocab_size]`` bool (True: allowed).

    Token ids past the bitmask's last word (logits wider than the tokenizer) are refused.
    """
    shifts = torch.arange(32, dtype=torch.int32, device=bits.device)
    allowed = (((bits[..., None] >> shifts) & 1).flatten(-2) != 0)[..., :vocab_size]
    missing = vocab_size - allowed.shape[-1]
    if missing > 0:
        allowed = torch.nn.functional.pad(allowed, (0, missing), value=False)
    return allowed
