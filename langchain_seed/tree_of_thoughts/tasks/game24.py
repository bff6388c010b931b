"""Game of 24 as in the Tree-of-Thoughts paper (Yao et al. 2023): propose + value, b = 5.

The prompts are the paper's (princeton-nlp/tree-of-thought-llm, MIT): a one-shot propose
prompt, a few-shot value prompt over the numbers left (sure / likely / impossible ->
20 / 1 / 0.001), a last-step judge prompt, and the 5-shot chain-of-thought prompt that
turns three steps into the final ``Answer:`` line.
"""

# ruff: noqa: E501  (prompts are kept verbatim, one line per prompt line)

from __future__ import annotations

import ast
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from langchain_seed.datasets import game24_puzzle
from langchain_seed.engine.config import Grammar
from langchain_seed.tree_of_thoughts.task import EvaluateMode, GenerateMode, ToTTask

# fmt: off
COT_PROMPT = """Use numbers and basic arithmetic operations (+ - * /) to obtain 24. Each step, you are only allowed to choose two of the remaining numbers to obtain a new number.
Input: 4 4 6 8
Steps:
4 + 8 = 12 (left: 4 6 12)
6 - 4 = 2 (left: 2 12)
2 * 12 = 24 (left: 24)
Answer: (6 - 4) * (4 + 8) = 24
Input: 2 9 10 12
Steps:
12 * 2 = 24 (left: 9 10 24)
10 - 9 = 1 (left: 1 24)
24 * 1 = 24 (left: 24)
Answer: (12 * 2) * (10 - 9) = 24
Input: 4 9 10 13
Steps:
13 - 10 = 3 (left: 3 4 9)
9 - 3 = 6 (left: 4 6)
4 * 6 = 24 (left: 24)
Answer: 4 * (9 - (13 - 10)) = 24
Input: 1 4 8 8
Steps:
8 / 4 = 2 (left: 1 2 8)
1 + 2 = 3 (left: 3 8)
3 * 8 = 24 (left: 24)
Answer: (1 + 8 / 4) * 8 = 24
Input: 5 5 5 9
Steps:
5 + 5 = 10 (left: 5 9 10)
10 + 5 = 15 (left: 9 15)
15 + 9 = 24 (left: 24)
Answer: ((5 + 5) + 5) + 9 = 24
Input: {input}
"""

PROPOSE_PROMPT = """Input: 2 8 8 14
Possible next steps:
2 + 8 = 10 (left: 8 10 14)
8 / 2 = 4 (left: 4 8 14)
14 + 2 = 16 (left: 8 8 16)
2 * 8 = 16 (left: 8 14 16)
8 - 2 = 6 (left: 6 8 14)
14 - 8 = 6 (left: 2 6 8)
14 /  2 = 7 (left: 7 8 8)
14 - 2 = 12 (left: 8 8 12)
Input: {input}
Possible next steps:
"""

VALUE_PROMPT = """Evaluate if given numbers can reach 24 (sure/likely/impossible)
10 14
10 + 14 = 24
sure
11 12
11 + 12 = 23
12 - 11 = 1
11 * 12 = 132
11 / 12 = 0.91
impossible
4 4 10
4 + 4 + 10 = 8 + 10 = 18
4 * 10 - 4 = 40 - 4 = 36
(10 - 4) * 4 = 6 * 4 = 24
sure
4 9 11
9 + 11 + 4 = 20 + 4 = 24
sure
5 7 8
5 + 7 + 8 = 12 + 8 = 20
(8 - 5) * 7 = 3 * 7 = 21
I cannot obtain 24 now, but numbers are within a reasonable range
likely
5 6 6
5 + 6 + 6 = 17
(6 - 5) * 6 = 1 * 6 = 6
I cannot obtain 24 now, but numbers are within a reasonable range
likely
10 10 11
10 + 10 + 11 = 31
(11 - 10) * 10 = 10
10 10 10 are all too big
impossible
1 3 3
1 * 3 * 3 = 9
(1 + 3) * 3 = 12
1 3 3 are all too small
impossible
{input}
"""

SHORT_VALUE_PROMPT = """Evaluate if given numbers can reach 24 (sure/likely/impossible)
10 14
10 + 14 = 24
sure
11 12
11 + 12 = 23
impossible
4 4 10
(10 - 4) * 4 = 24
sure
5 7 8
(8 - 5) * 7 = 21
likely
10 10 11
10 + 10 + 11 = 31
impossible
1 3 3
(1 + 3) * 3 = 12
impossible
{input}
"""
"""Not the paper's: one calculation line per example, so a tiny model writes its verdict on
the second line. Measured with SmolLM2-135M (greedy, 24 tokens): the paper's prompt gave no
verdict within 48 tokens on any of 2 states; this one gave a verdict line on 4 of 4."""

VALUE_LAST_STEP_PROMPT = """Use numbers and basic arithmetic operations (+ - * /) to obtain 24. Given an input and an answer, give a judgement (sure/impossible) if the answer is correct, i.e. it uses each input exactly once and no other numbers, and reach 24.
Input: 4 4 6 8
Answer: (4 + 8) * (6 - 4) = 24
Judge: 
sure
Input: 2 9 10 12
Answer: 2 * 12 * (10 - 9) = 24
Judge: 
sure
Input: 4 9 10 13
Answer: (13 - 9) * (10 - 4) = 24
Judge: 
sure
Input: 4 4 6 8
Answer: (4 + 8) * (6 - 4) + 1 = 25
Judge: 
impossible
Input: 2 9 10 12
Answer: 2 * (12 - 10) = 24
Judge: 
impossible
Input: 4 9 10 13
Answer: (13 - 4) * (10 - 9) = 24
Judge: 
impossible
Input: {input}
Answer: {answer}
Judge:"""  # noqa: W291 (the paper's prompt has a space after "Judge:")
# fmt: on

VALUE_MAP = {"sure": 20.0, "likely": 1.0, "impossible": 0.001}
"""The paper's mapping of a judgement to a value; a state's value sums its samples."""

EVALUATION_REGEX = r"([^\n]{0,30}\n){0,2}(sure|likely|impossible)"
"""What a constrained evaluation answer may be (``constrain_evaluations``)."""

STEP_RE = re.compile(
    r"^\s*(?P<expr>\S(?:.*?\S)?)\s*=\s*(?P<result>-?[\d.]+)\s*\(left:(?P<left>[^)]{0,64})\)"
)
r"""A proposed step, ``a op b = c (left: ...)``, at the start of a line.

It reads model output in time linear in the line: ``expr`` ends at a non-space, so the
whitespace before ``=`` is scanned from one place only (``.+?\s*=`` rescanned a run of
spaces from each of its characters: quadratic, 4 s on 50,000 spaces), and the list of numbers
left is bounded (an unbounded one was rescanned from every ``=`` of a line without ``)``)."""

MAX_EXPRESSION_CHARS = 200
"""Longest expression :func:`evaluate_expression` reads; a Game of 24 answer has ~30
characters. It bounds the work: the parse, the nesting and the size of every value."""
MAX_EXPRESSION_DEPTH = 64
"""Deepest nesting (brackets, unary signs, chained operations) :func:`evaluate_expression`
walks."""


def current_numbers(state: str, x: str) -> str:
    """The numbers left after the last step of ``state`` (the input when it is empty)."""
    last_line = state.strip().split("\n")[-1] if state.strip() else x
    return last_line.split("left: ")[-1].split(")")[0].strip()


def evaluate_expression(expression: str) -> Fraction | None:
    """Exact value of an arithmetic expression over integers with ``+ - * /`` and brackets.

    Args:
        expression: e.g. ``"(10 - 4) * (6 - 5) * 4"``; ``x`` and ``×`` / ``÷`` are accepted.

    Returns:
        The value as a :class:`~fractions.Fraction`, or ``None`` when the text is not such
        an expression, divides by zero, is longer than :data:`MAX_EXPRESSION_CHARS` or nests
        deeper than :data:`MAX_EXPRESSION_DEPTH`. It never raises: the text is a model's.
    """
    text = expression.replace("×", "*").replace("x", "*").replace("÷", "/").strip()
    if len(text) > MAX_EXPRESSION_CHARS:
        return None
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):  # ValueError: a NUL byte
        return None

    def walk(node: ast.AST, depth: int = 0) -> Fraction:
        if depth > MAX_EXPRESSION_DEPTH:
            raise ValueError("expression nested too deeply")
        depth += 1
        if isinstance(node, ast.Expression):
            return walk(node.body, depth)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return Fraction(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = walk(node.operand, depth)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp):
            left, right = walk(node.left, depth), walk(node.right, depth)
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
            if isinstance(node.op, ast.Div):
                return left / right  # ZeroDivisionError -> None below
        raise ValueError(f"unsupported element {ast.dump(node)}")

    try:
        return walk(tree)
    except (ValueError, ZeroDivisionError, RecursionError):
        return None


def check_24(puzzle: str, answer: str | None) -> bool:
    """Whether ``answer`` uses every number of ``puzzle`` exactly once and equals 24.

    Args:
        puzzle: the four numbers, e.g. ``"4 5 6 10"``.
        answer: ``"(10 - 4) * (6 - 5) * 4 = 24"`` or ``"Answer: ..."`` or the bare expression.

    Returns:
        True when the expression is exactly 24 (fractions, no floats) with the right numbers.
    """
    if not answer:
        return False
    expression = answer.strip().split("\n")[-1].lower().replace("answer:", "").split("=")[0]
    used = Counter(re.findall(r"\d+", expression))
    if used != Counter(re.findall(r"\d+", puzzle)):
        return False
    return evaluate_expression(expression) == 24


@dataclass
class Game24Task(ToTTask):
    """Game of 24: the ToT paper's propose + value BFS (three steps, then the answer)."""

    name: str = "game24"
    steps: int = 4
    generate_mode: GenerateMode = "propose"
    evaluate_mode: EvaluateMode = "value"
    breadth: int = 5
    n_generate_sample: int = 1
    n_evaluate_sample: int = 3
    temperature: float = 0.7
    generate_max_tokens: int = 96
    evaluate_max_tokens: int = 48
    generate_stop: Any = ("\nInput:",)
    evaluate_stop: Any = None
    value_threshold: float = 1.0
    strict: bool = False
    """Drop proposals whose arithmetic or numbers-left do not add up (the paper keeps them)."""
    value_style: Literal["paper", "short"] = "paper"
    """``"paper"``: the ToT value prompt verbatim; ``"short"``: one-line examples that a
    ~100M-parameter model follows in format (see :data:`SHORT_VALUE_PROMPT`)."""

    def generate_prompt(self, x: str, state: str, step: int) -> str:
        """Propose prompt over the numbers left; the CoT prompt once only 24 is left."""
        numbers = current_numbers(state, x)
        if numbers == "24":
            # The paper appends the steps right after "Steps:"; the newline matches its shots.
            return COT_PROMPT.format(input=x) + "Steps:\n" + state
        return PROPOSE_PROMPT.format(input=numbers)

    def parse_thoughts(self, x: str, state: str, outputs: list[str], step: int) -> list[str]:
        """Every well-formed line becomes a child (``a op b = c (left: ...)`` or ``Answer:``)."""
        answer_step = current_numbers(state, x) == "24"
        children: dict[str, None] = {}  # distinct, in order
        for output in outputs:
            for line in output.split("\n"):
                line = line.strip()
                if answer_step:
                    ok = line.lower().startswith("answer:")
                else:
                    match = STEP_RE.match(line)
                    ok = match is not None and (
                        not self.strict or _step_adds_up(current_numbers(state, x), match)
                    )
                if ok:
                    children.setdefault(state + line + "\n")
        return list(children)

    def static_value(self, x: str, state: str, step: int) -> float | None:
        """Four lines without an answer are a dead end (the paper's rule)."""
        if len(state.strip().split("\n")) == 4 and "answer" not in state.lower():
            return 0.0
        return None

    def value_prompt(self, x: str, state: str, step: int) -> str:
        """Value prompt over the numbers left, or the judge prompt for an answer line."""
        last_line = state.strip().split("\n")[-1]
        if "left: " not in last_line:
            answer = last_line.lower().replace("answer: ", "")
            return VALUE_LAST_STEP_PROMPT.format(input=x, answer=answer)
        template = SHORT_VALUE_PROMPT if self.value_style == "short" else VALUE_PROMPT
        return template.format(input=current_numbers(state, x))

    def evaluation_grammar(self, step: int) -> Grammar | None:
        """With ``constrain_evaluations``: up to two short lines, then the judgement word.

        Fits both value prompts (a calculation line, then sure / likely / impossible) and
        the judge prompt (the word after ``Judge:``) within ``evaluate_max_tokens``.
        """
        if not self.constrain_evaluations:
            return None
        return Grammar.regex(EVALUATION_REGEX)

    def parse_value(self, x: str, state: str, outputs: list[str]) -> float | None:
        """Sum of 20 / 1 / 0.001 over the samples' judgements (``None`` if none parses).

        The paper reads each sample's last line; a small model keeps writing new examples
        until ``max_tokens``, so the first line that is a judgement word is used instead.
        """
        names = [_judgement(o) for o in outputs]
        if not any(names):
            return None
        return sum(VALUE_MAP[n] for n in names if n)

    def is_final(self, x: str, state: str) -> bool:
        """A state is final once it has an ``Answer:`` line."""
        return any(line.strip().lower().startswith("answer:") for line in state.split("\n"))

    def answer(self, x: str, state: str) -> str | None:
        """The text after the last ``Answer:``, e.g. ``(10 - 4) * (6 - 5) * 4 = 24``."""
        lines = [ln.strip() for ln in state.split("\n") if ln.strip().lower().startswith("answer:")]
        return lines[-1][len("answer:") :].strip() if lines else None

    def check(self, x: str, answer: str | None, gold: str | None = None) -> bool | None:
        """Exact check: each input number once, value 24 (no gold needed)."""
        return check_24(x, answer)

    def load_example(self, index: int) -> dict[str, Any]:
        """Row ``index`` of ``game24.csv``."""
        return {"input": game24_puzzle(index)}


def _judgement(output: str) -> str | None:
    for line in output.split("\n"):
        word = line.strip().lower().rstrip(".")
        if word in VALUE_MAP:
            return word
    return None


_DECIMAL = re.compile(r"-?\d{1,12}(?:\.\d{1,12})?")
"""A number as a step writes it. Nothing else becomes a :class:`Fraction`: model text such as
``1e999999999`` would make ``Fraction`` build a billion-digit integer."""


def _numbers(texts: list[str]) -> Counter[Fraction] | None:
    """The multiset of ``texts`` as numbers, ``None`` if one is not a :data:`_DECIMAL`."""
    if not all(_DECIMAL.fullmatch(t) for t in texts):
        return None
    return Counter(Fraction(t) for t in texts)


def _step_adds_up(numbers_before: str, match: re.Match[str]) -> bool:
    """``a op b = c`` is right and ``left`` is the numbers before with a, b replaced by c."""
    value = evaluate_expression(match.group("expr"))
    result = _numbers([match.group("result")])
    before = _numbers(numbers_before.split())
    left = _numbers(match.group("left").split())
    operands = _numbers(re.findall(r"\d+(?:\.\d+)?", match.group("expr")))
    if value is None or result is None or before is None or left is None or operands is None:
        return False
    if operands - before:  # an operand that is not among the numbers left
        return False
    return value == next(iter(result)) and before - operands + result == left
