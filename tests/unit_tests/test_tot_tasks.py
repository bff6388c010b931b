"""Built-in Tree-of-Thoughts tasks: prompts, parsers, checkers, data, scripted end-to-end runs."""

from __future__ import annotations

from fractions import Fraction

import pytest
from tot_fakes import ScriptedLLM

from langchain_seed.tree_of_thoughts import TreeOfThoughts, get_task
from langchain_seed.tree_of_thoughts.tasks.creative_writing import (
    CreativeWritingTask,
    check_passage,
    split_sentences,
)
from langchain_seed.tree_of_thoughts.tasks.game24 import (
    Game24Task,
    check_24,
    current_numbers,
    evaluate_expression,
)
from langchain_seed.tree_of_thoughts.tasks.gsm8k import GSM8KTask

# -- Game of 24 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("puzzle", "answer"),
    [
        ("4 5 6 10", "5 * 6 - 10 + 4 = 24"),
        ("3 3 8 8", "8 / (3 - 8 / 3) = 24"),  # needs exact fractions: 8 / (1/3)
        ("1 5 5 5", "Answer: 5 * (5 - 1 / 5) = 24"),
        ("4 4 6 8", "(4 + 8) * (6 - 4)"),
    ],
)
def test_game24_checker_accepts_exact_solutions(puzzle: str, answer: str) -> None:
    assert check_24(puzzle, answer)


@pytest.mark.parametrize(
    ("puzzle", "answer"),
    [
        ("4 5 6 10", "(10 - 4) * (6 - 5) * 4 = 24"),  # 4 twice, 5 once... wrong multiset
        ("4 5 6 10", "4 * 6 = 24"),  # numbers missing
        ("4 5 6 10", "5 * 6 - 10 + 4 + 0 = 24"),  # an extra number
        ("4 5 6 10", "5 * 6 - 10 - 4 = 24"),  # wrong value (12)
        ("3 3 8 8", "8 / (3 - 8 / 3.0) = 24"),  # floats are not allowed
        ("1 1 4 6", "4 / (1 - 1) + 6 = 24"),  # division by zero
        ("4 5 6 10", None),
        ("4 5 6 10", "import os"),
    ],
)
def test_game24_checker_rejects_wrong_answers(puzzle: str, answer: str | None) -> None:
    assert not check_24(puzzle, answer)


def test_evaluate_expression_is_exact() -> None:
    assert evaluate_expression("1 / 3 + 1 / 3 + 1 / 3") == Fraction(1)
    assert evaluate_expression("-(2 - 5) * 8") == 24
    assert evaluate_expression("2 ** 3") is None
    assert evaluate_expression("__import__('os')") is None


def test_game24_prompts_are_the_papers() -> None:
    task = Game24Task()
    prompt = task.generate_prompt("4 5 6 10", "", 0)
    assert prompt.startswith("Input: 2 8 8 14\nPossible next steps:\n2 + 8 = 10 (left: 8 10 14)\n")
    assert "14 /  2 = 7 (left: 7 8 8)\n" in prompt  # the paper's double space, verbatim
    assert prompt.endswith("Input: 4 5 6 10\nPossible next steps:\n")
    value = task.value_prompt("4 5 6 10", "5 * 6 = 30 (left: 4 10 30)\n", 0)
    assert value.startswith("Evaluate if given numbers can reach 24 (sure/likely/impossible)\n")
    assert "5 7 8\n5 + 7 + 8 = 12 + 8 = 20\n" in value and value.endswith("\n4 10 30\n")
    judge = task.value_prompt("4 5 6 10", "a\nb\nc\nAnswer: 5 * 6 - 10 + 4 = 24\n", 3)
    assert judge.endswith("Input: 4 5 6 10\nAnswer: 5 * 6 - 10 + 4 = 24\nJudge:")
    assert "Judge: \nsure\n" in judge
    steps = "5 * 6 = 30 (left: 4 10 30)\n30 - 10 = 20 (left: 4 20)\n20 + 4 = 24 (left: 24)\n"
    cot = task.generate_prompt("4 5 6 10", steps, 3)
    assert cot.endswith("Input: 4 5 6 10\nSteps:\n" + steps)
    assert cot.startswith("Use numbers and basic arithmetic operations (+ - * /) to obtain 24.")


def test_game24_short_value_prompt_is_opt_in() -> None:
    state = "5 * 6 = 30 (left: 4 10 30)\n"
    short = Game24Task(value_style="short").value_prompt("4 5 6 10", state, 0)
    paper = Game24Task().value_prompt("4 5 6 10", state, 0)
    assert short != paper and short.endswith("impossible\n4 10 30\n")
    assert "I cannot obtain 24 now" in paper and "I cannot obtain 24 now" not in short
    assert Game24Task(value_style="short").parse_value("", "", ["(10 + 4) * 10 = 140\nimpossible"])


def test_game24_parses_proposals_and_drops_malformed_lines() -> None:
    task = Game24Task()
    out = "4 + 5 = 9 (left: 6 9 10)\nblah\n10 - 6 = 4 (left: 4 4 5)\n4 + 5 = 9 (left: 6 9 10)\n"
    children = task.parse_thoughts("4 5 6 10", "", [out], 0)
    assert children == ["4 + 5 = 9 (left: 6 9 10)\n", "10 - 6 = 4 (left: 4 4 5)\n"]
    assert task.parse_thoughts("4 5 6 10", "", ["no steps at all"], 0) == []
    assert current_numbers(children[0], "4 5 6 10") == "6 9 10"


def test_game24_strict_mode_drops_wrong_arithmetic() -> None:
    out = "4 + 5 = 9 (left: 6 9 10)\n4 + 5 = 10 (left: 6 10 10)\n6 * 7 = 42 (left: 4 5 10 42)"
    strict = Game24Task(strict=True).parse_thoughts("4 5 6 10", "", [out], 0)
    assert strict == ["4 + 5 = 9 (left: 6 9 10)\n"]
    assert len(Game24Task().parse_thoughts("4 5 6 10", "", [out], 0)) == 3


def test_game24_values_map_judgements_and_malformed_is_none() -> None:
    task = Game24Task()
    assert task.parse_value("", "", ["sure", "likely\n4 5", "impossible"]) == 20 + 1 + 0.001
    assert task.parse_value("", "", ["5 + 6 = 11\nlikely\n3 3\nsure"]) == 1  # first judgement
    assert task.parse_value("", "", ["I think so", ""]) is None
    four_lines = "a (left: 1)\nb (left: 1)\nc (left: 1)\nd (left: 1)\n"
    assert task.static_value("", four_lines, 3) == 0.0
    assert task.static_value("", "a (left: 1 2)\n", 0) is None


def _game24_responder(prompt: str) -> str:
    last = prompt.rstrip("\n").split("\n")[-1]
    if prompt.endswith("Possible next steps:\n"):
        numbers = prompt.split("Input: ")[-1].split("\n")[0]
        return {
            "4 5 6 10": "5 * 6 = 30 (left: 4 10 30)\n4 + 5 = 9 (left: 6 9 10)\nnonsense",
            "4 10 30": "30 - 10 = 20 (left: 4 20)\n",
            "6 9 10": "9 - 6 = 3 (left: 3 10)\n",
            "4 20": "20 + 4 = 24 (left: 24)\n",
            "3 10": "3 * 10 = 30 (left: 30)\n",
        }.get(numbers, "")
    if "Steps:\n" in prompt and last.endswith("(left: 24)"):
        return "Answer: 5 * 6 - 10 + 4 = 24\nInput: 1 1 1 1"
    if last == "Judge:":
        return "\nsure"
    return {"4 10 30": "likely", "6 9 10": "likely", "4 20": "sure", "30": "impossible"}.get(
        last, "sure"
    )


def test_game24_scripted_search_finds_and_checks_a_solution() -> None:
    llm = ScriptedLLM(respond=_game24_responder, prompts=[], batches=[], stops=[])
    tot = TreeOfThoughts.from_task(
        "game24", llm=llm, breadth=2, n_evaluate_sample=1, pipeline=False
    )
    result = tot.invoke({"input": "4 5 6 10"})
    assert result["answer"] == "5 * 6 - 10 + 4 = 24"
    assert result["solved"] is True
    assert [s["thought"].strip() for s in result["best_path"]] == [
        "",
        "5 * 6 = 30 (left: 4 10 30)",
        "30 - 10 = 20 (left: 4 20)",
        "20 + 4 = 24 (left: 24)",
        "Answer: 5 * 6 - 10 + 4 = 24",
    ]
    assert llm.stops[0] == ["\nInput:"]
    # generate, evaluate per level; at level 3 the "(left: 30)" branch proposes nothing,
    # so only the answer line is judged
    assert llm.batches == [1, 2, 2, 2, 2, 2, 2, 1]
    assert result["stats"]["malformed_generations"] == 1


def test_game24_wrong_answer_is_not_solved() -> None:
    def respond(prompt: str) -> str:
        if "Steps:\n" in prompt:
            return "Answer: 5 * 6 - 10 - 4 = 24"
        return _game24_responder(prompt)

    llm = ScriptedLLM(respond=respond, prompts=[], batches=[], stops=[])
    result = TreeOfThoughts.from_task("game24", llm=llm, breadth=1, n_evaluate_sample=1).invoke(
        {"input": "4 5 6 10"}
    )
    assert result["answer"] == "5 * 6 - 10 - 4 = 24"
    assert result["solved"] is False


# -- GSM8K ----------------------------------------------------------------------------

QUESTION = "Tom has 3 bags with 4 apples each. He eats 2 apples. How many apples are left?"


def _gsm8k_responder(prompt: str) -> str:
    if prompt.endswith("Sub-question 1:"):
        return " How many apples does Tom have?\nAnswer 1: junk"
    if prompt.endswith("Answer 1:"):
        return " Tom has 3 * 4 = 12 apples.\nProgress score (0-10): 8\n"
    if prompt.endswith("Sub-question 2: Now we can answer the question:"):
        return " How many apples are left?"
    if prompt.endswith("Answer 2:"):
        return " 12 - 2 = 10 apples are left. The answer is 10.\nProgress score (0-10): 10"
    return "???"


def test_gsm8k_scripted_search_answers_and_checks_gold() -> None:
    llm = ScriptedLLM(respond=_gsm8k_responder, prompts=[], batches=[], stops=[])
    tot = TreeOfThoughts.from_task("gsm8k", llm=llm, steps=2, n_generate_sample=2)
    result = tot.invoke({"input": QUESTION, "gold": "3 * 4 - 2 = 10\n#### 10"})
    assert result["answer"] == "10"
    assert result["solved"] is True
    best = result["tree"][result["best_path"][-1]["id"]]
    assert best["state"] == (
        "Sub-question 1: How many apples does Tom have?\n"
        "Answer 1: Tom has 3 * 4 = 12 apples.\n"
        "Progress score (0-10): 8\n"
        "Sub-question 2: Now we can answer the question: How many apples are left?\n"
        "Answer 2: 12 - 2 = 10 apples are left. The answer is 10.\n"
        "Progress score (0-10): 10\n"
    )
    assert best["value"] == 10.0 and best["final"]
    # two identical samples give one child (deduplicated), and the evaluation prompt
    # extends the generation prompt of the same level (shared prefix)
    assert len(result["tree"]) == 3
    gen, val = llm.prompts[0], llm.prompts[2]
    assert val.startswith(gen) and val.endswith("Answer 1:")
    assert llm.stops[0] == ["\n"]


def test_gsm8k_checker_and_unparsable_scores() -> None:
    task = GSM8KTask()
    assert task.check(QUESTION, "1,000", "#### 1000") is True
    assert task.check(QUESTION, "10.0", "#### 10") is True
    assert task.check(QUESTION, "11", "#### 10") is False
    assert task.check(QUESTION, None, "#### 10") is False
    assert task.check(QUESTION, "10", None) is None
    assert task.parse_value(QUESTION, "", ["no score here"]) is None
    assert task.parse_value(QUESTION, "", ["x\nScore: 14", "y\nScore: 4"]) == 7.0  # clamped
    state = "Sub-question 1: q?\n"
    updated = task.update_state(QUESTION, state, ["", " a.\nScore: 3"])
    assert updated == state + "Answer 1: a.\nProgress score (0-10): 3\n"
    assert task.update_state(QUESTION, state, [" b."]) == state + "Answer 1: b.\n"
    assert task.answer(QUESTION, "Answer 2: so the answer is $1,250.") == "1250"


def test_gsm8k_wrong_gold_is_not_solved() -> None:
    llm = ScriptedLLM(respond=_gsm8k_responder, prompts=[], batches=[], stops=[])
    result = TreeOfThoughts.from_task("gsm8k", llm=llm, steps=2).invoke(
        {"question": QUESTION, "answer": "#### 11"}
    )
    assert result["answer"] == "10" and result["solved"] is False


# -- Creative writing -----------------------------------------------------------------

SENTENCES = "It was cold. The dog barked! She smiled. They went home."
GOOD = (
    "Winter came.\nIt was cold.\n\nA noise.\nThe dog barked!\n\n"
    "Joy.\nShe smiled.\n\nLate.\nThey went home."
)


def test_creative_writing_checker() -> None:
    assert split_sentences(SENTENCES) == [
        "It was cold.",
        "The dog barked!",
        "She smiled.",
        "They went home.",
    ]
    assert check_passage(SENTENCES, GOOD)
    assert not check_passage(SENTENCES, GOOD.replace("She smiled.", "She laughed."))
    swapped = "A. It was cold.\n\nB. She smiled.\n\nC. The dog barked!\n\nD. They went home."
    assert not check_passage(SENTENCES, swapped)
    assert not check_passage(
        SENTENCES, "It was cold. The dog barked!\n\nShe smiled.\n\nThey went home."
    )
    assert not check_passage(SENTENCES, None)
    fragment = "Instead of a party You sit down. He ran. It rained."  # three "sentences"
    ok = "x Instead of a party\n\ny You sit down.\n\nz He ran.\n\nw It rained."
    assert check_passage(fragment, ok)


def _writing_responder(prompt: str) -> str:
    if "The best choice is" in prompt and "Choice 1:" in prompt:
        return "Choice 2 is more coherent.\nThe best choice is 2"
    if prompt.endswith("Your passage here.\n"):
        return "Plan:\nFour scenes." if "seed-a" not in prompt else ""
    return "\nPassage:\n" + GOOD


def test_creative_writing_scripted_plans_vote_passages_vote() -> None:
    calls: list[str] = []

    def respond(prompt: str) -> str:
        calls.append(prompt)
        if prompt.endswith("Your passage here.\n"):
            plans = [c for c in calls if c.endswith("Your passage here.\n")]
            return f"Plan:\nplan {len(plans)}"
        return _writing_responder(prompt)

    llm = ScriptedLLM(respond=respond, prompts=[], batches=[], stops=[])
    result = TreeOfThoughts.from_task("creative_writing", llm=llm).invoke({"input": SENTENCES})
    assert llm.batches == [5, 5, 5, 5]  # 5 plans, 5 votes, 5 passages, 5 votes
    assert llm.stops[0] == ["\nPassage:"]
    plans = [n for n in result["tree"] if n["depth"] == 1]
    assert [n["status"] for n in plans] == ["pruned", "kept", "pruned", "pruned", "pruned"]
    assert plans[1]["value"] == 5.0
    passages = [n for n in result["tree"] if n["depth"] == 2]
    assert len(passages) == 1 and passages[0]["parent"] == plans[1]["id"]  # 5 equal samples
    assert result["answer"] == GOOD
    assert result["solved"] is True


def test_creative_writing_vote_parsing() -> None:
    task = CreativeWritingTask()
    votes = task.parse_votes(
        ["The best choice is 3", "best choice is 1.", "no idea", "The best choice is 9"], 3
    )
    assert votes == [1.0, 0.0, 1.0]
    prompt = task.vote_prompt(SENTENCES, ["Plan:\nA", "Plan:\nB"], 0)
    assert prompt.endswith("Choice 1:\nPlan:\nA\nChoice 2:\nPlan:\nB\n")
    assert 'conclude in the last line "The best choice is {s}"' in prompt


# -- data -----------------------------------------------------------------------------


def test_builtin_tasks_load_their_data(shared_data_dir) -> None:  # type: ignore[no-untyped-def]
    assert get_task("game24").load_example(0) == {"input": "1 1 4 6"}
    row = get_task("gsm8k").load_example(0)
    assert row["input"].startswith("Janet") and row["gold"].endswith("#### 18")
    assert len(split_sentences(get_task("creative_writing").load_example(0)["input"])) == 4
    with pytest.raises(IndexError, match="out of range"):
        get_task("game24").load_example(10**6)


def test_missing_data_folder_is_a_clear_error(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SEED_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="SEED_DATA_DIR"):
        get_task("game24").load_example(0)
    monkeypatch.setenv("SEED_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="gsm8k_test_0_999.jsonl is missing"):
        get_task("gsm8k").load_example(0)
