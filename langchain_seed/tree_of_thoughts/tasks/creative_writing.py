"""Creative Writing as in the Tree-of-Thoughts paper: sample plans, vote; then passages, vote.

Level 0 samples ``n_generate_sample`` plans (generation stops at ``Passage:``), five votes
pick the best; level 1 samples passages that continue the best plan, five votes pick one.
The checker tests the hard constraint: four paragraphs ending with the four sentences.
"""

# ruff: noqa: E501  (prompts are kept verbatim, one line per prompt line)

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from langchain_seed.datasets import creative_writing_input
from langchain_seed.tree_of_thoughts.task import EvaluateMode, GenerateMode, ToTTask

COT_PROMPT = """Write a coherent passage of 4 short paragraphs. The end sentence of each paragraph must be: {input}

Make a plan then write. Your output should be of the following format:

Plan:
Your plan here.

Passage:
Your passage here.
"""

VOTE_PROMPT = """Given an instruction and several choices, decide which choice is most promising. Analyze each choice in detail, then conclude in the last line "The best choice is {{s}}", where s the integer id of the choice.
Instruction: Write a coherent passage of 4 short paragraphs. The end sentence of each paragraph must be: {input}
"""

VOTE_RE = re.compile(r"best choice is\D{0,12}?(\d{1,6})(?!\d)", re.IGNORECASE)
"""``The best choice is 2``: linear (a literal start, bounded gaps); a choice of more than six
digits is no choice (``int`` of a 5,000-digit run raises)."""
SENTENCE_END = re.compile(r"[.!?][\"”’')]?\s+(?=[\"“‘(]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Split at ``. ! ?`` (optionally quoted) followed by a capitalised word."""
    out, start = [], 0
    for match in SENTENCE_END.finditer(text):
        out.append(text[start : match.end()].strip())
        start = match.end()
    out.append(text[start:].strip())
    return [s for s in out if s]


def _norm(text: str) -> str:
    return " ".join(text.replace("’", "'").replace("“", '"').replace("”", '"').split())


def check_passage(x: str, passage: str | None) -> bool:
    """Whether ``passage`` has four paragraphs ending with the four sentences of ``x``.

    Paragraphs are separated by blank lines (by line breaks when that gives four). Where
    the input does not split into four sentences (a few data lines hold fragments), any
    split of the input into four consecutive pieces at spaces is accepted.
    """
    if not passage:
        return False
    paragraphs = [p for p in re.split(r"\n\s*\n", passage.strip()) if p.strip()]
    if len(paragraphs) != 4:
        paragraphs = [p for p in passage.strip().split("\n") if p.strip()]
    if len(paragraphs) != 4:
        return False
    ends = [_norm(p) for p in paragraphs]
    sentences = [_norm(s) for s in split_sentences(x.strip())]
    if len(sentences) == 4:
        return all(e.endswith(s) for e, s in zip(ends, sentences, strict=True))
    return _splits_into(_norm(x), ends)


def _splits_into(rest: str, ends: list[str]) -> bool:
    """``rest`` is s1 + " " + ... + s_k with every paragraph end ``ends[i]`` ending in s_i."""
    if len(ends) == 1:
        return bool(rest) and ends[0].endswith(rest)
    for k, ch in enumerate(rest):
        if ch == " " and ends[0].endswith(rest[:k]) and _splits_into(rest[k + 1 :], ends[1:]):
            return True
    return False


@dataclass
class CreativeWritingTask(ToTTask):
    """Creative Writing (ToT paper): 2 levels, sample 5 + vote 5, beam 1."""

    name: str = "creative_writing"
    steps: int = 2
    generate_mode: GenerateMode = "sample"
    evaluate_mode: EvaluateMode = "vote"
    breadth: int = 1
    n_generate_sample: int = 5
    n_evaluate_sample: int = 5
    temperature: float = 1.0
    generate_max_tokens: int = 384
    evaluate_max_tokens: int = 128
    plan_max_tokens: int = 128
    """Budget of a plan (level 0); passages use ``generate_max_tokens``."""

    def generate_limits(self, step: int) -> tuple[int, list[str] | None]:
        """Plans stop where the passage would begin; passages run to their budget."""
        if step == 0:
            return self.plan_max_tokens, ["\nPassage:"]
        return self.generate_max_tokens, None

    def generate_prompt(self, x: str, state: str, step: int) -> str:
        """The paper's CoT prompt, continued from the plan at level 1."""
        return COT_PROMPT.format(input=x.strip()) + state

    def parse_thoughts(self, x: str, state: str, outputs: list[str], step: int) -> list[str]:
        """Non-empty samples become children; passages get a ``Passage:`` header if missing."""
        children: dict[str, None] = {}  # distinct, in order
        for output in outputs:
            text = output.rstrip()
            if not text.strip():
                continue
            if step >= 1 and "Passage:" not in text:
                text = "\n\nPassage:\n" + text.lstrip("\n")
            children.setdefault(state + text)
        return list(children)

    def vote_prompt(self, x: str, states: list[str], step: int) -> str:
        """The paper's vote prompt with every candidate as ``Choice i``."""
        prompt = VOTE_PROMPT.format(input=x.strip())
        for i, state in enumerate(states, 1):
            shown = state.split("Passage:")[-1].strip() if step >= 1 else state.strip()
            prompt += f"Choice {i}:\n{shown}\n"
        return prompt

    def parse_votes(self, outputs: list[str], n_candidates: int) -> list[float]:
        """Count "The best choice is i" per candidate."""
        votes = [0.0] * n_candidates
        for output in outputs:
            match = VOTE_RE.search(output)
            if match and 1 <= int(match.group(1)) <= n_candidates:
                votes[int(match.group(1)) - 1] += 1
        return votes

    def is_final(self, x: str, state: str) -> bool:
        """Final once the passage is written."""
        return "Passage:" in state

    def answer(self, x: str, state: str) -> str | None:
        """The passage text."""
        if "Passage:" not in state:
            return None
        return state.split("Passage:")[-1].strip() or None

    def check(self, x: str, answer: str | None, gold: str | None = None) -> bool | None:
        """The four paragraphs end with the four given sentences."""
        return check_passage(x, answer)

    def load_example(self, index: int) -> dict[str, Any]:
        """Line ``index`` of ``creative_writing.txt``."""
        return {"input": creative_writing_input(index)}
