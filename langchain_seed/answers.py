"""Answer parsers of self-consistency, and the majority vote (every pattern in linear time).

:func:`gsm8k_answer` (the default) reads GSM8K's ``#### n`` and "The answer is n" styles,
:func:`regex_parser` any pattern, :func:`resolve_parser` turns what ``SelfConsistency``
takes (a regex, an output parser, a callable) into ``text -> answer``;
:func:`normalize_answer` makes an answer a vote key and :func:`majority` counts the votes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, cast

from langchain_core.output_parsers import BaseOutputParser

from langchain_seed.datasets import normalize_number

# These patterns read model output, so each must run in time linear in the text (Python's
# backtracking engine does not promise it; possessive quantifiers would, from Python 3.11 on,
# and we support 3.10). Two rules make them linear: no two quantifiers that can match the same
# long run (of whitespace, digits, stars) stand side by side without a character between
# them that the run cannot contain (``\s*[:=]?\s*\**\s*`` before a missing number tried every
# split of a whitespace run: cubic, 22 s on 1,200 newlines), so a failed attempt backs off
# one character at a time and each step fails at once; and a long run is reached only from
# the few starts just before it (a keyword, ``####``, ``\boxed{``, a digit: none of them can
# be inside the run), so no run is scanned from many starts.
_NUMBER = r"[-+]?\$?\s?\d[\d,]*(?:\.\d+)?"
_HASHES = re.compile(r"####\s*(" + _NUMBER + ")")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")  # not ``\{\s*([^{}]*)``: both match spaces
_ANSWER_IS = re.compile(
    r"(?:the\s+(?:final\s+)?answer\s+is|answer\s*:)\s*(?:[:=]\s*)?(?:\*+\s*)?(" + _NUMBER + ")",
    re.IGNORECASE,
)
_ANY_NUMBER = re.compile(_NUMBER)


def normalize_answer(answer: Any) -> str | None:
    """An answer as a vote key: numbers in canonical form, other text stripped.

    Args:
        answer: what a parser returned (any type; non-strings go through ``str``).

    Returns:
        The key, or ``None`` for ``None`` and blank text (an unparsed sample).
    """
    if answer is None:
        return None
    text = answer if isinstance(answer, str) else str(answer)
    number = normalize_number(text)
    if number is not None:
        return number
    text = text.strip()
    return text or None


def gsm8k_answer(text: str) -> str | None:
    r"""The final number of a GSM8K-style solution.

    Looks, in this order, for the last ``#### n``, the last ``\\boxed{n}``, the last
    "The answer is n" (or "Answer: n"), and finally the last number in the text. The
    number is normalised with :func:`normalize_number`.

    Args:
        text: a model's completion.

    Returns:
        The answer, or ``None`` when the text holds no number.
    """
    for pattern in (_HASHES, _BOXED, _ANSWER_IS):
        found = pattern.findall(text)
        for candidate in reversed(found):
            number = normalize_number(candidate)
            if number is not None:
                return number
    numbers = _ANY_NUMBER.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def regex_parser(pattern: str | re.Pattern[str]) -> Callable[[str], str | None]:
    """A parser that returns the last match of ``pattern`` (its first group if it has one).

    Args:
        pattern: a regular expression, as text or compiled.

    Returns:
        ``text -> answer``; the answer is ``None`` when nothing matches.
    """
    compiled = re.compile(pattern) if isinstance(pattern, str) else pattern

    def parse(text: str) -> str | None:
        matches = list(compiled.finditer(text))
        if not matches:
            return None
        last = matches[-1]
        return last.group(1) if compiled.groups else last.group(0)

    return parse


def resolve_parser(parser: Any) -> Callable[[str], Any]:
    """Turn a regex string, an output parser or a callable into ``text -> answer``.

    Args:
        parser: ``None`` (:func:`gsm8k_answer`), a regex (text or compiled), a LangChain
            output parser (its ``parse``) or any callable taking the completion text.

    Returns:
        The callable.

    Raises:
        TypeError: for anything else.
    """
    if parser is None:
        return gsm8k_answer
    if isinstance(parser, (str, re.Pattern)):
        return regex_parser(parser)
    if isinstance(parser, BaseOutputParser):
        return cast(Callable[[str], Any], parser.parse)
    if callable(parser):
        return cast(Callable[[str], Any], parser)
    raise TypeError(
        f"parser must be a callable, a regex string or an output parser, got {type(parser)}"
    )


def majority(answers: Sequence[str | None]) -> tuple[str | None, dict[str, int]]:
    """Majority vote over parsed answers.

    Args:
        answers: parsed answers; ``None`` (unparsed) does not vote.

    Returns:
        The winner (ties: the answer seen first; ``None`` without votes) and the votes,
        most first.
    """
    ranked = Counter(a for a in answers if a is not None).most_common()
    return (ranked[0][0] if ranked else None), dict(ranked)
