"""SelfConsistency with LangChain fake models, and the answer parsers."""

from __future__ import annotations

import pytest
from langchain_core.language_models import FakeListChatModel, FakeListLLM
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate

from langchain_seed.self_consistency import (
    PROGRESS_EVENT,
    SelfConsistency,
    gsm8k_answer,
    majority,
    normalize_answer,
    normalize_number,
    regex_parser,
)

# ---------------------------------------------------------------------- parsers


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("She has 3 + 4 = 7 apples.\n#### 7", "7"),
        ("#### 1,000", "1000"),
        ("so 12 * 3 = 36. The answer is 36.", "36"),
        ("The answer is $1,250.00.", "1250"),
        ("First 2, then 5. The final answer is: 18 dollars", "18"),
        ("The answer is 3.0", "3"),
        ("Answer: -4", "-4"),
        (r"Thus \boxed{42} is it, not 41", "42"),
        (r"\boxed{ 2.50 }", "2.5"),
        ("The answer is 5. Wait, the answer is 6.", "6"),
        ("I computed 10 then 20 then 30", "30"),
        ("#### 8\nThe answer is 9", "8"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_gsm8k_answer_reads_the_final_number(text, want):
    assert gsm8k_answer(text) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("1,000", "1000"),
        ("3.0", "3"),
        ("003", "3"),
        ("-0", "0"),
        ("+5", "5"),
        ("$7.", "7"),
        ("50%", "50"),
        ("0.50", "0.5"),
        ("abc", None),
        ("1/2", None),
    ],
)
def test_normalize_number(text, want):
    assert normalize_number(text) == want


def test_normalize_answer_keeps_words_and_normalises_numbers():
    assert normalize_answer("  Paris ") == "Paris"
    assert normalize_answer(12.0) == "12"
    assert normalize_answer("   ") is None
    assert normalize_answer(None) is None


def test_regex_parser_takes_the_last_match_and_its_group():
    parse = regex_parser(r"ANSWER=(\w+)")
    assert parse("ANSWER=a then ANSWER=b") == "b"
    assert parse("nothing") is None
    assert regex_parser(r"\d+")("1 and 22") == "22"


def test_majority_ignores_unparsed_and_breaks_ties_by_first_seen():
    assert majority(["4", None, "5", "5", "4"]) == ("4", {"4": 2, "5": 2})
    assert majority([None, None]) == (None, {})


# ---------------------------------------------------------------------- runnable


def llm_with(*texts: str) -> FakeListLLM:
    return FakeListLLM(responses=list(texts))


def test_majority_answer_votes_confidence_and_samples():
    llm = llm_with("x #### 4", "The answer is 4.", "#### 5", "so 4", "The answer is 1,000")
    sc = SelfConsistency(llm=llm, n=5)
    out = sc.invoke({"question": "q"})
    assert out["answer"] == "4"
    assert out["votes"] == {"4": 3, "5": 1, "1000": 1}
    assert out["confidence"] == pytest.approx(3 / 5)
    assert [s["answer"] for s in out["samples"]] == ["4", "4", "5", "4", "1000"]
    assert out["samples"][0]["text"] == "x #### 4"
    stats = out["stats"]
    assert stats["samples"] == 5 and stats["unparsed"] == 0 and stats["rounds"] == 1
    assert stats["early_stopped"] is False and stats["engine_backed"] is False


def test_tie_goes_to_the_answer_seen_first():
    out = SelfConsistency(llm=llm_with("#### 9", "#### 2", "#### 2", "#### 9"), n=4).invoke("q")
    assert out["answer"] == "9"
    assert out["votes"] == {"9": 2, "2": 2}
    assert out["confidence"] == pytest.approx(0.5)


def test_parser_that_raises_marks_the_sample_unparsed_and_the_run_goes_on():
    def strict(text: str) -> str:
        if "bad" in text:
            raise ValueError("cannot parse")
        return text.split()[-1]

    llm = llm_with("answer A", "bad", "answer A", "answer B")
    out = SelfConsistency(llm=llm, n=4, parser=strict).invoke("q")
    assert out["answer"] == "A"
    assert out["votes"] == {"A": 2, "B": 1}
    assert [s["answer"] for s in out["samples"]] == ["A", None, "A", "B"]
    assert out["stats"]["unparsed"] == 1
    assert out["confidence"] == pytest.approx(2 / 4)


def test_no_parsable_sample_gives_no_answer():
    out = SelfConsistency(llm=llm_with("hmm", "no idea"), n=2).invoke("q")
    assert out["answer"] is None and out["votes"] == {} and out["confidence"] == 0.0
    assert out["stats"]["unparsed"] == 2


def test_regex_string_and_output_parser_are_accepted():
    llm = llm_with("pick=7", "pick=8", "pick=7")
    assert SelfConsistency(llm=llm, n=3, parser=r"pick=(\d+)").invoke("q")["answer"] == "7"
    llm = llm_with(" yes ", "no", "yes")
    assert SelfConsistency(llm=llm, n=3, parser=StrOutputParser()).invoke("q")["answer"] == "yes"


def test_a_non_parser_is_rejected_at_construction():
    with pytest.raises(ValueError, match="parser"):
        SelfConsistency(llm=llm_with("x"), parser=42)


def test_prompt_template_formats_the_input():
    seen: list[str] = []

    class Spy(FakeListLLM):
        def _call(self, prompt: str, *args, **kwargs) -> str:  # type: ignore[override]
            seen.append(prompt)
            return super()._call(prompt, *args, **kwargs)

    sc = SelfConsistency(
        llm=Spy(responses=["#### 1"]), n=2, prompt=PromptTemplate.from_template("Q: {q}!")
    )
    sc.invoke({"q": "two plus two"})
    sc.invoke("three")
    assert seen == ["Q: two plus two!"] * 2 + ["Q: three!"] * 2


def test_string_input_needs_a_one_variable_prompt():
    sc = SelfConsistency(llm=llm_with("#### 1"), n=1, prompt="{a} and {b}")
    with pytest.raises(ValueError, match="one variable"):
        sc.invoke("x")


def test_chat_model_fallback_uses_message_text():
    chat = FakeListChatModel(responses=["The answer is 12.", "The answer is 12.", "#### 3"])
    prompt = ChatPromptTemplate.from_messages([("system", "be brief"), ("human", "{question}")])
    out = SelfConsistency(llm=chat, prompt=prompt, n=3).invoke({"question": "q"})
    assert out["answer"] == "12" and out["votes"] == {"12": 2, "3": 1}


def test_early_stop_ends_when_the_leader_cannot_be_overtaken():
    # n = 8 in rounds of 2: after 6 samples "5" has 5 votes vs 1 with 2 left -> stop.
    texts = ["#### 5", "#### 5", "#### 6", "#### 5", "#### 5", "#### 5", "#### 7", "#### 7"]
    llm = llm_with(*texts)
    out = SelfConsistency(llm=llm, n=8, early_stop=True, round_size=2).invoke("q")
    assert out["answer"] == "5"
    assert out["stats"]["samples"] == 6 and out["stats"]["rounds"] == 3
    assert out["stats"]["early_stopped"] is True
    assert llm.i == 6  # the model was called exactly 6 times
    assert out["confidence"] == pytest.approx(5 / 6)


def test_early_stop_keeps_sampling_while_a_tie_is_still_possible():
    # After 4 of 6: 3 vs 1 with 2 left: 3 > 1 + 2 is false, so sample on.
    texts = ["#### 1", "#### 1", "#### 1", "#### 2", "#### 2", "#### 2"]
    out = SelfConsistency(llm=llm_with(*texts), n=6, early_stop=True, round_size=2).invoke("q")
    assert out["stats"]["samples"] == 6 and out["stats"]["early_stopped"] is False
    assert out["votes"] == {"1": 3, "2": 3} and out["answer"] == "1"


def test_default_rounds_keep_at_least_four_samples_per_group():
    texts = ["#### 5"] * 16
    out = SelfConsistency(llm=llm_with(*texts), n=8, early_stop=True).invoke("q")
    # rounds of max(ceil(8 / 4), 4) = 4: after 4 unanimous votes, 4 > 0 + 4 fails; after 8
    # the run is complete anyway.
    assert out["stats"]["rounds"] == 2 and out["stats"]["samples"] == 8
    out = SelfConsistency(llm=llm_with(*texts), n=16, early_stop=True).invoke("q")
    assert out["stats"]["rounds"] == 3 and out["stats"]["early_stopped"] is True  # 12 > 0 + 4


def test_without_early_stop_all_samples_are_drawn():
    texts = ["#### 5"] * 8
    out = SelfConsistency(llm=llm_with(*texts), n=8).invoke("q")
    assert out["stats"]["samples"] == 8 and out["stats"]["rounds"] == 1


def test_batch_samples_every_question_and_keeps_answers_apart():
    # One model call per round for all questions: q1 gets samples 0-2, q2 samples 3-5.
    llm = llm_with("#### 1", "#### 1", "#### 2", "#### 7", "#### 8", "#### 8")
    outs = SelfConsistency(llm=llm, n=3).batch([{"question": "a"}, {"question": "b"}])
    assert [o["answer"] for o in outs] == ["1", "8"]
    assert [o["votes"] for o in outs] == [{"1": 2, "2": 1}, {"7": 1, "8": 2}]


def test_batch_early_stop_drops_decided_questions():
    # n = 6 in rounds of 2; each round is one model call over the active questions.
    # After round 2, x has 4 votes for "3" vs 0 with 2 left -> stops; y (2 vs 2) goes on.
    llm = llm_with(
        "#### 3", "#### 3", "#### 4", "#### 5",  # round 1: q1, q1, q2, q2
        "#### 3", "#### 3", "#### 5", "#### 4",  # round 2
        "#### 5", "#### 5",  # round 3: q2 only
    )  # fmt: skip
    outs = SelfConsistency(llm=llm, n=6, early_stop=True, round_size=2).batch(["x", "y"])
    assert outs[0]["stats"]["samples"] == 4 and outs[0]["stats"]["early_stopped"] is True
    assert outs[1]["stats"]["samples"] == 6 and outs[1]["answer"] == "5"
    assert llm.i == 0  # all 10 responses consumed, the fake cycled back to the start


async def test_async_invoke_and_batch_match_sync():
    texts = ["#### 2", "#### 3", "#### 2"]
    sync = SelfConsistency(llm=llm_with(*texts), n=3).invoke("q")
    asyn = await SelfConsistency(llm=llm_with(*texts), n=3).ainvoke("q")
    assert asyn["answer"] == sync["answer"] == "2"
    assert asyn["votes"] == sync["votes"]
    outs = await SelfConsistency(llm=llm_with(*texts, *texts), n=3).abatch(["a", "b"])
    assert [o["answer"] for o in outs] == ["2", "2"]
    assert await SelfConsistency(llm=llm_with("x"), n=1).abatch([]) == []


async def test_astream_events_reports_progress_after_every_round():
    texts = ["#### 5", "#### 5", "#### 6", "#### 5", "#### 5", "#### 5", "#### 7", "#### 7"]
    sc = SelfConsistency(llm=llm_with(*texts), n=8, early_stop=True, round_size=2)
    events = [
        ev
        async for ev in sc.astream_events("q", version="v2")
        if ev["event"] == "on_custom_event" and ev["name"] == PROGRESS_EVENT
    ]
    assert [ev["data"]["drawn"] for ev in events] == [2, 4, 6]
    assert events[-1]["data"]["done"] is True and events[-1]["data"]["leader"] == "5"
    assert events[0]["data"]["votes"] == {"5": 2}


def test_sync_progress_events_reach_callbacks():
    from langchain_core.callbacks import BaseCallbackHandler

    got: list[dict] = []

    class Collect(BaseCallbackHandler):
        def on_custom_event(self, name, data, **kwargs):
            if name == PROGRESS_EVENT:
                got.append(data)

    sc = SelfConsistency(llm=llm_with("#### 1"), n=4, early_stop=True, round_size=1)
    out = sc.invoke("q", config={"callbacks": [Collect()]})
    assert [d["drawn"] for d in got] == [1, 2, 3]  # 3 votes vs 0 with 1 left: decided
    assert out["stats"]["early_stopped"] is True


def test_invalid_n_is_rejected():
    with pytest.raises(ValueError, match="n"):
        SelfConsistency(llm=llm_with("x"), n=0)
