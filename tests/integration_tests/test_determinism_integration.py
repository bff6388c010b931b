"""Temperature 0 is one answer in bfloat16 too, as a LangChain user meets it.

On the own execution path (the embedded model on a CPU with a C++ compiler) a row's logits
do not depend on what runs beside it, so LangChain's checks hold in bfloat16: a ``batch``
equals the same ``invoke`` calls one by one, and a structured-output call gives the same
text the first time, beside other calls and after them (a prefix-cache hit included). Where
the own path does not run, these guarantees hold in float32 only and the tests skip.
"""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from langchain_seed import ChatSeed
from langchain_seed.engine import Engine, EngineConfig

pytestmark = pytest.mark.integration

QUESTIONS = [
    "What is 17 times 3?",
    "Name a planet with rings.",
    "Write a haiku about rain.",
    "Give two uses of a paperclip.",
    "Janet has 3 apples and buys 5 more. How many now?",
    "What colour is the sky at noon?",
]


@pytest.fixture(scope="module")
def engine():
    config = EngineConfig(dtype="bfloat16", max_batch_size=8)
    with Engine(config) as engine:
        if engine.runner.execution != "own":
            pytest.skip(f"the own execution path does not run here ({engine.runner.execution})")
        yield engine


def test_bfloat16_batch_equals_sequential_invokes(engine):
    chat = ChatSeed(engine=engine, temperature=0, max_tokens=24)
    batched = [m.content for m in chat.batch(QUESTIONS)]
    one_by_one = [chat.invoke(q).content for q in QUESTIONS]
    assert batched == one_by_one


class Answer(BaseModel):
    answer: str
    confidence: int


def test_bfloat16_structured_output_is_the_same_first_beside_and_after_other_calls(engine):
    pytest.importorskip("xgrammar")
    chat = ChatSeed(engine=engine, temperature=0, max_tokens=48)
    structured = chat.with_structured_output(Answer, method="json_mode", include_raw=True)
    prompt = "Reply in JSON with keys answer and confidence: what is the capital of Italy?"

    first = structured.invoke(prompt)["raw"].content

    async def beside_others() -> str:
        others = [chat.ainvoke(q) for q in QUESTIONS]
        results = await asyncio.gather(structured.ainvoke(prompt), *others)
        return str(results[0]["raw"].content)

    beside = asyncio.run(beside_others())
    after = structured.invoke(prompt)["raw"].content  # its prompt now in the prefix cache
    assert first == beside == after
