r"""Grammar drafter: the text a request's grammar forces next, as a draft.

Where a grammar allows exactly one continuation for a while (the ``{"name": "`` of a JSON
object, a tool call's ``<tool_call>\n{"name": "get_weather", "arguments": `` header, the
punctuation between keys), xgrammar's matcher knows the whole forced string
(``find_jump_forward_string``). This drafter tokenizes it and proposes it; the target
verifies it like any draft, so the output stays exactly the constrained decoding without
drafts (the forced string may tokenize differently from what the model would write: a
different split is simply not accepted). Unconstrained requests get no draft.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence as Seq
from typing import TYPE_CHECKING

from langchain_seed.engine.speculation.drafters.base import Draft

if TYPE_CHECKING:
    from langchain_seed.engine.sequence import SequenceState


class GrammarDrafter:
    """Drafts a constrained request's forced continuation (deterministic, no model call).

    Args:
        encode: text -> token ids without special tokens (the engine's tokenizer).
    """

    name = "grammar"

    def __init__(self, encode: Callable[[str], list[int]]) -> None:
        self.encode = encode

    def propose(self, sequences: Seq[SequenceState], max_lens: Seq[int]) -> list[Draft]:
        """Up to ``max_lens[i]`` tokens of the text ``sequences[i]``'s grammar forces next."""
        drafts = []
        for seq, n in zip(sequences, max_lens):
            grammar = seq.grammar
            text = grammar.forced_text() if grammar is not None and n > 0 else ""
            tokens = self.encode(text)[:n] if text else []
            drafts.append(Draft(tokens, None, self.name) if tokens else Draft())
        return drafts

    def release(self, sequence: SequenceState) -> None:
        """Nothing to forget: the forced text is read from the request's own matcher."""
