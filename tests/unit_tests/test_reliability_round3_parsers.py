"""Issue 26 (reliability, round 3), the parsers' side: what reads model output.

- 4: every parser of model output runs in linear time on degenerate text (long runs of
  whitespace, digits, commas, markers), and the async runs parse off the event loop;
- 9: ``with_structured_output(method="function_calling")`` constrains to the model's own
  JSON schema, recursion included;
- 10: what the tool-call grammar lets through parses, whole and streamed (a ``</tool_call>``
  inside a string, raw control characters inside a length-limited string);
- 12: the Game of 24 checker and the task parsers never raise, and bound their work.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.language_models import FakeListLLM
from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field
from tot_fakes import PathTask, path_llm

from langchain_seed._adapters.tools import ToolCallStream, parse_tool_calls, tool_grammar
from langchain_seed.self_consistency import SelfConsistency, gsm8k_answer, normalize_answer
from langchain_seed.tree_of_thoughts import TreeOfThoughts
from langchain_seed.tree_of_thoughts.tasks.creative_writing import (
    CreativeWritingTask,
    check_passage,
)
from langchain_seed.tree_of_thoughts.tasks.game24 import (
    STEP_RE,
    Game24Task,
    check_24,
    evaluate_expression,
)
from langchain_seed.tree_of_thoughts.tasks.gsm8k import ANSWER_RE, SCORE_RE, GSM8KTask

SIZES = (250, 1_000, 4_000, 16_000, 64_000)
"""Lengths of the degenerate texts, each 4x the last: 64,000 characters is 1,000 tokens of
SmolLM2's 64-space token. A parse that grows cubically or quadratically crosses the time
bound at one of them (and the test stops there instead of hanging)."""

DEGENERATE: dict[str, Callable[[int], str]] = {
    "spaces": lambda n: " " * n,
    "newlines": lambda n: "\n" * n,
    "mixed whitespace": lambda n: " \t\n" * (n // 3),
    "digits": lambda n: "1" * n,
    "commas": lambda n: "1," * (n // 2),
    "dots": lambda n: "1." * (n // 2),
    "stars": lambda n: "*" * n,
    "answer is + newlines": lambda n: "The answer is" + "\n" * n,
    "answer is + 64-space tokens": lambda n: "The answer is" + " " * (n // 64 * 64),
    "answer: + spaces + colon": lambda n: "Answer:" + " " * (n // 2) + ":" + " " * (n // 2),
    "answer is $ + spaces": lambda n: "answer is $" + " " * n,
    "answer is + stars": lambda n: "The answer is: " + "* " * (n // 2),
    "the + spaces": lambda n: "the" + " " * (n // 2) + "final" + " " * (n // 2),
    "repeated answer is": lambda n: "the answer is " * (n // 14),
    "#### + spaces": lambda n: "####" + " " * n,
    "repeated ####": lambda n: "#### " * (n // 5),
    "boxed + spaces": lambda n: "\\boxed{" + " " * n,
    "repeated boxed": lambda n: "\\boxed{ " * (n // 8),
    "repeated score": lambda n: "score " * (n // 6),
    "score + long label": lambda n: "Progress score" + " (0-10)" * (n // 7),
    "step + spaces": lambda n: "1" + " " * n + "x",
    "step without left": lambda n: "4 + 8 = 12 " * (n // 11),
    "repeated = (left:": lambda n: "=1(left:" * (n // 8),
    "many steps": lambda n: "4 + 8 = 12 (left: 4 6 12)\n" * (n // 26),
    "repeated best choice": lambda n: "best choice is " * (n // 15),
    "best choice + digits": lambda n: "The best choice is " + "7" * n,
    "blank lines": lambda n: "\n \n" * (n // 3),
    "sentence ends": lambda n: ". " * (n // 2),
    "open brackets": lambda n: "(" * n,
    "unary minus": lambda n: "-" * n + "1",
    "open tool calls": lambda n: "<tool_call>" * (n // 11),
    "marker in an open string": lambda n: (
        '<tool_call>{"a": "' + "</tool_call><tool_call>" * (n // 23)
    ),
    "nested arrays": lambda n: "<tool_call>" + "[" * (n // 2) + "]" * (n // 2) + "</tool_call>",
    "bad calls": lambda n: "<tool_call> x </tool_call>" * (n // 26),
}

GAME24 = Game24Task()
GAME24_STRICT = Game24Task(strict=True)
GSM8K = GSM8KTask()
WRITING = CreativeWritingTask()
NAMES = ["note"]


def _stream(text: str, size: int = 7) -> list[Any]:
    split = ToolCallStream(NAMES)
    out: list[Any] = []
    for i in range(0, len(text), size):
        out.extend(split.feed(text[i : i + size]))
    out.extend(split.close())
    return out


PARSERS: dict[str, Callable[[str], Any]] = {
    "self_consistency.gsm8k_answer": gsm8k_answer,
    "self_consistency.normalize_answer": normalize_answer,
    "gsm8k.ANSWER_RE": ANSWER_RE.findall,
    "gsm8k.SCORE_RE": SCORE_RE.findall,
    "gsm8k.parse_thoughts": lambda s: GSM8K.parse_thoughts("q", "", [s], 0),
    "gsm8k.parse_value": lambda s: GSM8K.parse_value("q", "", [s]),
    "gsm8k.update_state": lambda s: GSM8K.update_state("q", "", [s]),
    "gsm8k.is_final": lambda s: GSM8K.is_final("q", "Answer 1: " + s),
    "gsm8k.answer": lambda s: GSM8K.answer("q", s),
    "gsm8k.check": lambda s: GSM8K.check("q", s, "#### 5"),
    "game24.STEP_RE": STEP_RE.match,
    "game24.parse_thoughts": lambda s: GAME24.parse_thoughts("4 5 6 10", "", [s], 0),
    "game24.parse_thoughts strict": lambda s: GAME24_STRICT.parse_thoughts("4 5 6 10", "", [s], 0),
    "game24.parse_value": lambda s: GAME24.parse_value("4 5 6 10", "", [s]),
    "game24.answer": lambda s: GAME24.answer("4 5 6 10", "Answer: " + s),
    "game24.check_24": lambda s: check_24("4 5 6 10", s),
    "game24.evaluate_expression": evaluate_expression,
    "creative_writing.parse_votes": lambda s: WRITING.parse_votes([s], 5),
    "creative_writing.check_passage": lambda s: check_passage("A. B. C. D.", s),
    "tools.parse_tool_calls": lambda s: parse_tool_calls(s, NAMES),
    "tools.ToolCallStream": _stream,
}


# ----- 4: linear time ---------------------------------------------------------------------
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", list(PARSERS))
def test_each_output_parser_runs_in_linear_time_on_degenerate_text(name: str) -> None:
    parse = PARSERS[name]
    for kind, make in DEGENERATE.items():
        for size in SIZES:
            text = make(size)
            start = time.perf_counter()
            parse(text)
            seconds = time.perf_counter() - start
            # linear: a few ms at the largest size; the backtracking patterns took seconds
            # at a few thousand characters and would take days at 64,000
            assert seconds < 1.0, f"{name}: {seconds:.1f} s on {kind!r} x {len(text)}"


async def _loop_stall(run: Any) -> tuple[Any, float]:
    """Await ``run`` while a heartbeat measures the longest time the loop did not answer."""
    stall, done = 0.0, False

    async def heartbeat() -> None:
        nonlocal stall
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            stall, last = max(stall, now - last), now

    beat = asyncio.create_task(heartbeat())
    try:
        result = await run
    finally:
        done = True
        await beat
    return result, stall


@pytest.mark.timeout(60)
async def test_async_self_consistency_parses_samples_off_the_event_loop() -> None:
    def slow_parser(text: str) -> str:
        time.sleep(0.4)  # a user's parser, or a pathological text
        return text.split()[-1]

    llm = FakeListLLM(responses=["so 7", "so 7", "so 8"])
    sc = SelfConsistency(llm=llm, n=3, parser=slow_parser)
    result, stall = await _loop_stall(sc.ainvoke({"question": "?"}))
    assert result["answer"] == "7" and result["votes"] == {"7": 2, "8": 1}
    assert stall < 0.3, f"the event loop stalled {stall:.2f} s while samples were parsed"


@dataclass
class _SlowPathTask(PathTask):
    def parse_thoughts(self, x: str, state: str, outputs: list[str], step: int) -> list[str]:
        time.sleep(0.6)  # a task's parser, or a pathological text
        return super().parse_thoughts(x, state, outputs, step)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pipeline", [True, False])
async def test_async_tree_of_thoughts_parses_off_the_event_loop(pipeline: bool) -> None:
    llm = path_llm({"/": "a\nb"}, {"/a": 1, "/b": 2})
    tot = TreeOfThoughts(llm=llm, task=_SlowPathTask(), steps=1, pipeline=pipeline)
    result, stall = await _loop_stall(tot.ainvoke({"input": "go"}))
    assert result["answer"] == "/b"
    assert stall < 0.3, f"the event loop stalled {stall:.2f} s while thoughts were parsed"


# ----- 9: function calling keeps the model's own schema -----------------------------------
class Node(BaseModel):
    """A tree node."""

    value: int
    children: list[Node] = Field(default_factory=list)


def _grammar_accepts(grammar: Any, text: str) -> bool:
    xgr = pytest.importorskip("xgrammar")
    from xgrammar.testing import _is_grammar_accept_string

    return bool(_is_grammar_accept_string(xgr.Grammar.from_structural_tag(grammar.spec), text))


def _call(name: str, arguments: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'


@pytest.fixture(scope="module")
def chat(grammar_pair) -> Any:
    pytest.importorskip("xgrammar")
    from langchain_seed import ChatSeed

    return ChatSeed(model=str(grammar_pair.target_path), max_tokens=160)


def test_function_calling_grammar_follows_a_recursive_schema_at_every_depth(chat) -> None:
    bound = chat.with_structured_output(Node, method="function_calling").first
    grammar = tool_grammar(bound.kwargs["tools"], bound.kwargs["tool_choice"])
    good = '{"value": 1, "children": [{"value": 2, "children": [{"value": 3}]}]}'
    assert _grammar_accepts(grammar, _call("Node", good))
    for bad in (
        '{"value": 1, "children": [{"bogus": true}]}',
        '{"value": 1, "children": [{"value": "two"}]}',
        '{"value": 1, "children": [{"value": 2, "children": [7]}]}',
    ):
        assert not _grammar_accepts(grammar, _call("Node", bad)), bad


def plant(tree: Node, name: str) -> str:
    """Plant a tree.

    Args:
        tree: the tree to plant.
        name: its name.
    """
    return name


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        (Node, '{{"value": 1, "children": [{child}]}}'),
        (plant, '{{"tree": {{"value": 1, "children": [{child}]}}, "name": "oak"}}'),
        (
            StructuredTool.from_function(plant),
            '{{"tree": {{"value": 1, "children": [{child}]}}, "name": "oak"}}',
        ),
    ],
    ids=["pydantic class", "function", "tool"],
)
def test_bind_tools_keeps_a_recursive_tool_schema(chat, tool: Any, arguments: str) -> None:
    bound = chat.bind_tools([tool], tool_choice=True)
    name = bound.kwargs["tool_choice"]
    grammar = tool_grammar(bound.kwargs["tools"], name)
    assert _grammar_accepts(grammar, _call(name, arguments.format(child='{"value": 2}')))
    for child in ("{}", '{"value": 2, "children": [{"value": "x"}]}', "7"):
        assert not _grammar_accepts(grammar, _call(name, arguments.format(child=child))), child


@pytest.mark.timeout(300)
def test_function_calling_answers_of_a_recursive_model_all_validate(grammar_pair) -> None:
    from langchain_seed import ChatSeed

    sampling = ChatSeed(
        model=str(grammar_pair.target_path), max_tokens=160, temperature=1.0, seed=3
    )
    runnable = sampling.with_structured_output(Node, method="function_calling", include_raw=True)
    outs = runnable.batch([f"tree {i}" for i in range(10)])
    finished = [o for o in outs if o["raw"].response_metadata["finish_reason"] != "length"]
    assert finished, "every answer ran out of tokens: raise max_tokens"
    errors = [o["parsing_error"] for o in finished if o["parsing_error"] is not None]
    assert not errors, errors[0]
    assert all(isinstance(o["parsed"], Node) for o in finished)


# ----- 10: what the tool-call grammar lets through parses ---------------------------------
NOTE_TOOL = {
    "type": "function",
    "function": {
        "name": "note",
        "description": "Keep a note.",
        "parameters": {
            "type": "object",
            "properties": {
                "text": {"type": "string"},
                "tag": {"type": "string", "maxLength": 24},
            },
            "required": ["text"],
        },
    },
}
"""``text`` may hold any escaped character, ``</tool_call>`` too; ``tag``, a length-limited
string, may hold control characters raw (xgrammar 0.2 compiles it without escapes)."""


def _note_call(args: dict[str, str]) -> str:
    text = json.dumps(args["text"], ensure_ascii=False)
    tag = f', "tag": "{args["tag"]}"' if "tag" in args else ""  # raw: as the grammar allows
    return _call("note", '{"text": ' + text + tag + "}")


def _streamed_calls(completion: str, size: int) -> tuple[list[dict], str]:
    split = ToolCallStream(NAMES)
    parts: list[Any] = []
    for i in range(0, len(completion), size):
        parts.extend(split.feed(completion[i : i + size]))
    parts.extend(split.close())
    chunks = [p for p in parts if not isinstance(p, str)]
    return chunks, "".join(p for p in parts if isinstance(p, str))


CALLS = {
    "close marker": {"text": "a </tool_call> b"},
    "only the marker": {"text": "</tool_call>"},
    "quotes and brackets": {"text": 'q " } ] \\ {'},
    "raw tab": {"text": "x", "tag": "tab\there"},
    "raw control characters": {"text": "x", "tag": "bell\x07 and \x01\x1f"},
}


@pytest.mark.parametrize("args", list(CALLS.values()), ids=list(CALLS))
@pytest.mark.parametrize("choice", ["note", "auto", "required"])
def test_a_call_the_grammar_allows_parses_whole_and_streamed(args: dict, choice: str) -> None:
    completion = _note_call(args)
    if choice == "auto":
        completion = "Sure.\n" + completion + "\nDone."
    assert _grammar_accepts(tool_grammar([NOTE_TOOL], choice), completion)
    parsed = parse_tool_calls(completion, NAMES)
    assert parsed.invalid_tool_calls == []
    assert [c["args"] for c in parsed.tool_calls] == [args]
    for size in (1, 5, len(completion)):
        chunks, rest = _streamed_calls(completion, size)
        assert [json.loads(c["args"]) for c in chunks] == [args], size
        assert "tool_call" not in rest


_TAG_CHARS = st.characters(exclude_categories=("Cs",), exclude_characters='\n\r"\\')


@settings(max_examples=150, deadline=None, database=None)
@given(
    calls=st.lists(
        st.fixed_dictionaries(
            {
                "text": st.lists(
                    st.one_of(
                        st.sampled_from(["</tool_call>", "<tool_call>", '"', "\\", "}", "]"]),
                        st.text(max_size=4),
                    ),
                    max_size=8,
                ).map("".join)
            },
            optional={"tag": st.text(_TAG_CHARS, max_size=12)},
        ),
        min_size=1,
        max_size=3,
    ),
    size=st.integers(1, 40),
)
def test_every_call_the_grammar_accepts_parses_to_its_arguments(calls: list, size: int) -> None:
    completion = "\n".join(_note_call(args) for args in calls)
    assert _grammar_accepts(tool_grammar([NOTE_TOOL], "required"), completion)
    parsed = parse_tool_calls(completion, NAMES)
    assert parsed.invalid_tool_calls == []
    assert [c["args"] for c in parsed.tool_calls] == calls
    chunks, _ = _streamed_calls(completion, size)
    assert [json.loads(c["args"]) for c in chunks] == calls


def test_a_call_cut_inside_a_string_holding_the_marker_stays_invalid() -> None:
    cut = '<tool_call>\n{"name": "note", "arguments": {"text": "a </tool_call> b'
    parsed = parse_tool_calls("Hi " + cut, NAMES)
    assert parsed.tool_calls == [] and len(parsed.invalid_tool_calls) == 1
    assert parsed.content == "Hi"
    chunks, rest = _streamed_calls("Hi " + cut, 3)
    assert chunks == [] and rest == "Hi " + cut


# ----- 12: checkers and task parsers never raise ------------------------------------------
SOLUTION = "(5 * 6) - (10 - 4)"
"""24 from 4 5 6 10; the hostile answers use exactly these numbers, so the checker reaches
the evaluation."""
HOSTILE_ANSWERS = {
    "unary minus chain": "-" * 5001 + SOLUTION,
    "unary plus chain": "+" * 5000 + SOLUTION,
    "deep brackets": "(" * 1000 + SOLUTION + ")" * 1000,
    "deep negated brackets": "-(" * 2000 + SOLUTION + ")" * 2000,
    "long input": "(5 * 6)" + " " * 100_000 + "- (10 - 4)",
    "nul byte": SOLUTION + "\x00",
    "power": "(5 * 6) ** (10 - 4)",
    "float": "(5.0 * 6) - (10 - 4)",
    "division by zero": "(5 * 6) / ((4 - 4) * 10)",
    "not arithmetic": "__import__(5, 6, 10, 4)",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("answer", list(HOSTILE_ANSWERS.values()), ids=list(HOSTILE_ANSWERS))
def test_the_game24_checker_judges_any_answer_without_raising(answer: str) -> None:
    start = time.perf_counter()
    assert check_24("4 5 6 10", answer) is False
    assert check_24("4 5 6 10", "Answer: " + answer + " = 24") is False
    assert GAME24.check("4 5 6 10", answer) is False
    assert evaluate_expression(answer) is None
    assert time.perf_counter() - start < 1.0


def test_evaluate_expression_still_reads_game24_answers() -> None:
    assert evaluate_expression(SOLUTION) == 24
    assert evaluate_expression("-(2 - 5) * -(-8)") == 24
    assert check_24("4 5 6 10", f"Answer: {SOLUTION} = 24")
    assert check_24("4 5 6 10", "-(-(" + SOLUTION + "))")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "line",
    [
        "4 + 6 = 10 (left: 5 10 1e9999999)",
        "4 + 6 = 10 (left: 5 10 1/0)",
        "4 + 6 = 1e2 (left: 5 10)",
        "4" + " + 0" * 3000 + " = 4 (left: 4 5 6 10)",
    ],
    ids=["exponent", "division by zero", "exponent result", "huge expression"],
)
def test_strict_game24_steps_never_raise_or_run_long(line: str) -> None:
    start = time.perf_counter()
    assert GAME24_STRICT.parse_thoughts("4 5 6 10", "", [line], 0) == []
    assert time.perf_counter() - start < 1.0


def test_strict_game24_steps_still_check_the_arithmetic() -> None:
    lines = [
        "4 + 6 = 10 (left: 5 6 10)",
        "4 + 6 = 10 (left: 5 10 10)",
        "4 + 6 = 11 (left: 5 10 11)",
    ]
    kept = GAME24_STRICT.parse_thoughts("4 5 6 10", "", ["\n".join(lines)], 0)
    assert kept == ["4 + 6 = 10 (left: 5 10 10)\n"]


_FRAGMENTS = [
    "The answer is",
    "answer is",
    "Answer:",
    "####",
    "\\boxed{",
    "}",
    "Progress score (0-10):",
    "score",
    "Sub-question 1:",
    "Answer 1:",
    "(left:",
    ")",
    " = ",
    "Answer: ",
    "best choice is",
    "Passage:",
    "sure",
    "likely",
    "impossible",
    "<tool_call>",
    "</tool_call>",
    '{"name": "note", "arguments": ',
    "1e999",
    "-",
    "(",
    "**",
    "$",
    ",",
    ".",
    "\n",
    " " * 64,
    "\x00",
]
MODEL_TEXT = st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=6)), max_size=30).map(
    "".join
)


@settings(max_examples=300, deadline=None, database=None)
@given(text=MODEL_TEXT, state=MODEL_TEXT)
def test_no_task_or_answer_parser_raises_on_any_model_text(text: str, state: str) -> None:
    for parse in PARSERS.values():
        parse(text)
    for task, x in (
        (GAME24, "4 5 6 10"),
        (GAME24_STRICT, "4 5 6 10"),
        (GSM8K, "q"),
        (WRITING, "A. B. C. D."),
    ):
        # what the search relies on: child states are strings, answers a string or None,
        # checks a bool or None, values a number or None, one vote count per candidate
        for step in (0, 1, task.steps - 1):
            children = task.parse_thoughts(x, state, [text, text], step)
            assert all(isinstance(child, str) for child in children)
        assert isinstance(task.is_final(x, state + text), bool)
        answer = task.answer(x, state + text)
        assert answer is None or isinstance(answer, str)
        assert task.check(x, text, "#### 5") in (True, False, None)
        assert task.check(x, answer, "#### 5") in (True, False, None)
        static = task.static_value(x, state + text, 1)
        assert static is None or isinstance(static, (int, float))
        if task.evaluate_mode == "value":
            value = task.parse_value(x, state, [text, text])
            assert value is None or isinstance(value, (int, float))
            task.update_state(x, state, [text])
            assert isinstance(task.value_prompt(x, state + text, 1), str)
            assert isinstance(task.generate_prompt(x, state + text, 1), str)
        else:
            votes = task.parse_votes([text, text], 3)
            assert len(votes) == 3
            assert isinstance(task.vote_prompt(x, [state, text], 1), str)
