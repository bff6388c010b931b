"""GSM8K in SEED's setup: sub-question thoughts, evaluations that answer and score them.

A thought is the next sub-question; its evaluation answers it and then scores the state
0-10; the last level asks the original question (the final answer step).

One prompt template serves both phases, so a level's evaluation prompts extend its
generation prompts (prefix reuse) and a child's prompts extend its parent's.
"""

# ruff: noqa: E501  (prompts are kept verbatim, one line per prompt line)

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from langchain_seed.datasets import gsm8k_problem
from langchain_seed.tree_of_thoughts.task import EvaluateMode, GenerateMode, ToTTask

# One shot from the GSM8K *train* split (row 0), so test problems never leak into prompts.
SHOT = """Answer the question by breaking it into sub-questions. Answer each sub-question and rate the progress from 0 to 10.

Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?
Sub-question 1: How many clips did Natalia sell in May?
Answer 1: Natalia sold 48 / 2 = 24 clips in May.
Progress score (0-10): 9
Sub-question 2: Now we can answer the question: How many clips did Natalia sell altogether in April and May?
Answer 2: Natalia sold 48 + 24 = 72 clips altogether. The answer is 72.
Progress score (0-10): 10

Question: {question}
"""

FINAL_QUESTION = "Now we can answer the question:"
# Both patterns read model output and run in linear time: each whitespace run stands between
# two characters it cannot contain (``\s*:?\s*\$?\s*`` tried every split of a run before a
# missing number: cubic, 6 s on 800 spaces), and the label before ``score``'s colon is
# bounded (an unbounded one rescanned the line from every ``score``: quadratic).
ANSWER_RE = re.compile(r"answer is\s*(?::\s*)?(?:\$\s*)?(-?[\d,]*\.?\d+)", re.IGNORECASE)
SCORE_RE = re.compile(r"score[^:\n]{0,40}:\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
"""``Progress score (0-10): 7`` or ``Score: 7``. SmolLM2-135M follows the labelled line,
while it skipped a bare ``Score:`` line and went on with the next sub-question."""

_PLAIN_NUMBER = re.compile(r"-?\d{1,30}(?:\.\d{1,30})?")
"""What :func:`parse_number` reads: no exponent (``Fraction("1e999999999")`` would build a
billion-digit integer), no more digits than any answer has."""


def parse_number(text: str | None) -> Fraction | None:
    """A number such as ``"1,234"``, ``"-3"`` or ``"2.5"`` as an exact fraction.

    Returns:
        The value, or ``None`` for anything else (words, exponents, over 30 digits).
    """
    if text is None:
        return None
    cleaned = text.replace(",", "").replace("$", "").strip().rstrip(".")
    return Fraction(cleaned) if _PLAIN_NUMBER.fullmatch(cleaned) else None


def gold_answer(gold: str) -> str:
    """The number after ``####`` in a GSM8K solution (the whole text if there is none)."""
    return gold.split("####")[-1].strip()


@dataclass
class GSM8KTask(ToTTask):
    """GSM8K as sub-question decomposition (SEED / RAP style), sample + value."""

    name: str = "gsm8k"
    steps: int = 4
    generate_mode: GenerateMode = "sample"
    evaluate_mode: EvaluateMode = "value"
    breadth: int = 2
    n_generate_sample: int = 3
    n_evaluate_sample: int = 1
    temperature: float = 0.7
    generate_max_tokens: int = 48
    evaluate_max_tokens: int = 80
    generate_stop: Any = ("\n",)
    evaluate_stop: Any = ("\nSub-question", "\nQuestion:", "\n\n")
    value_threshold: float = 5.0

    @staticmethod
    def _index(state: str) -> int:
        return state.count("Sub-question ") + 1

    def generate_prompt(self, x: str, state: str, step: int) -> str:
        """The next sub-question; at the last level the original question is asked."""
        i = self._index(state)
        prompt = SHOT.format(question=x.strip()) + state + f"Sub-question {i}:"
        return prompt + " " + FINAL_QUESTION if step == self.steps - 1 else prompt

    def parse_thoughts(self, x: str, state: str, outputs: list[str], step: int) -> list[str]:
        """One child per distinct non-empty first line of the samples."""
        i = self._index(state)
        prefix = f" {FINAL_QUESTION}" if step == self.steps - 1 else ""
        children: dict[str, None] = {}  # distinct, in order
        for output in outputs:
            question = output.strip().split("\n")[0].strip()
            if question:
                children.setdefault(f"{state}Sub-question {i}:{prefix} {question}\n")
        return list(children)

    def value_prompt(self, x: str, state: str, step: int) -> str:
        """Answer the last sub-question, then score."""
        return SHOT.format(question=x.strip()) + state + f"Answer {self._index(state) - 1}:"

    def parse_value(self, x: str, state: str, outputs: list[str]) -> float | None:
        """Mean of the ``Progress score (0-10): n`` lines (clamped to 0-10); ``None`` if none."""
        scores = [float(m.group(1)) for o in outputs if (m := SCORE_RE.search(o))]
        if not scores:
            return None
        return sum(min(max(s, 0.0), 10.0) for s in scores) / len(scores)

    def update_state(self, x: str, state: str, outputs: list[str]) -> str:
        """Append the first answering sample's answer (and its score line) to the state.

        Keeping the score line keeps the state in the few-shot format, so later prompts
        show the model the pattern it should continue.
        """
        for output in outputs:
            answer = SCORE_RE.split(output)[0].strip().split("\n")[0].strip()
            if answer:
                state += f"Answer {self._index(state) - 1}: {answer}\n"
                match = SCORE_RE.search(output)
                return state + (f"Progress score (0-10): {match.group(1)}\n" if match else "")
        return state

    def is_final(self, x: str, state: str) -> bool:
        """Final once an answer says "The answer is n"."""
        last_answers = [ln for ln in state.split("\n") if ln.startswith("Answer ")]
        return bool(last_answers) and ANSWER_RE.search(last_answers[-1]) is not None

    def answer(self, x: str, state: str) -> str | None:
        """The number after the last "The answer is"."""
        matches = ANSWER_RE.findall(state)
        return matches[-1].replace(",", "").rstrip(".") if matches else None

    def check(self, x: str, answer: str | None, gold: str | None = None) -> bool | None:
        """Numeric equality with the gold ``#### n`` (``None`` without gold)."""
        if gold is None:
            return None
        expected = parse_number(gold_answer(gold))
        return expected is not None and parse_number(answer) == expected

    def load_example(self, index: int) -> dict[str, Any]:
        """Row ``index`` of ``gsm8k_test_0_999.jsonl``: ``input`` and ``gold``."""
        row = gsm8k_problem(index)
        return {"input": row["question"], "gold": row["answer"]}
