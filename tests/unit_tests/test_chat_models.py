"""ChatSeed on a tiny random model: chat template, batching, streaming, metadata, errors."""

from __future__ import annotations

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
)
from lc_adapter_helpers import Recorder, SpyEngine

from langchain_seed import ChatSeed, SeedLLM
from langchain_seed.engine import SamplingParams

CONVERSATION = [
    SystemMessage("be brief"),
    HumanMessage("hi"),
    AIMessage("hello"),
    HumanMessage("how are you"),
]
TURNS = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello"},
    {"role": "user", "content": "how are you"},
]
INPUTS = ["hello", "abc", [HumanMessage("the cat")], CONVERSATION]


@pytest.fixture(scope="module")
def model_path(tiny_pair) -> str:
    return str(tiny_pair.target_path)


@pytest.fixture
def chat(model_path) -> ChatSeed:
    return ChatSeed(model=model_path, max_tokens=8)


def rendered(chat: ChatSeed, turns: list[dict[str, str]]) -> list[int]:
    """Reference rendering: the tokenizer's chat template with a generation prompt."""
    return list(
        chat.engine.tokenizer.apply_chat_template(
            turns, add_generation_prompt=True, tokenize=True, return_dict=False
        )
    )


def greedy(chat: ChatSeed, turns: list[dict[str, str]], **params) -> str:
    params = {"max_tokens": 8, **params}
    return chat.engine.generate([rendered(chat, turns)], SamplingParams(**params))[0].text


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def spied(chat: ChatSeed, **fields) -> tuple[ChatSeed, SpyEngine]:
    spy = SpyEngine(chat.engine)
    return ChatSeed(max_tokens=8, engine=spy, **fields), spy


def expected(chat: ChatSeed, input_) -> str:
    if isinstance(input_, str):
        return greedy(chat, user(input_))
    if input_ is CONVERSATION:
        return greedy(chat, TURNS)
    return greedy(chat, user(input_[0].content))


def test_invoke_renders_the_chat_template_and_returns_greedy_text(chat):
    message = chat.invoke(CONVERSATION)
    assert isinstance(message, AIMessage)
    assert message.content == greedy(chat, TURNS)


def test_usage_and_response_metadata(chat):
    message = chat.invoke("hello")
    prompt = rendered(chat, user("hello"))
    usage = message.usage_metadata
    assert usage["input_tokens"] == len(prompt)
    assert usage["output_tokens"] == 8
    assert usage["total_tokens"] == len(prompt) + 8
    meta = message.response_metadata
    assert meta["model_name"] == chat.engine.model_name
    assert meta["finish_reason"] == "length"
    assert meta["spec_stats"]["generated_tokens"] == 8


def test_chat_message_with_custom_role_is_rendered_with_that_role(chat):
    message = chat.invoke([ChatMessage(role="user", content="hello")])
    assert message.content == greedy(chat, user("hello"))


def test_text_content_blocks_are_joined(chat):
    blocks = [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}]
    assert chat.invoke([HumanMessage(content=blocks)]).content == greedy(chat, user("hello"))


def test_image_content_is_rejected_clearly(chat):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with pytest.raises(ValueError, match="text content only.*image_url"):
        chat.invoke([HumanMessage(content=[{"type": "text", "text": "what?"}, image])])


def test_unknown_message_type_is_rejected_clearly(chat):
    with pytest.raises(ValueError, match="cannot render a FunctionMessage"):
        chat.invoke([HumanMessage("hi"), FunctionMessage("42", name="f")])


def test_template_failure_is_reported_as_value_error(chat):
    # The tiny template reads m['content'] only; a tokenizer without a template fails.
    engine = chat.engine
    saved = engine.tokenizer.chat_template
    engine.tokenizer.chat_template = None
    try:
        with pytest.raises(ValueError, match="chat template"):
            chat.invoke("hello")
    finally:
        engine.tokenizer.chat_template = saved


def test_batch_is_one_engine_submission(chat):
    chat, spy = spied(chat)
    outputs = chat.batch(INPUTS)
    assert spy.sizes == [len(INPUTS)]
    assert [m.content for m in outputs] == [expected(chat, i) for i in INPUTS]


def test_batch_with_bound_stop_and_max_tokens_is_still_one_submission(chat):
    chat, spy = spied(chat)
    full = greedy(chat, user("hello"), max_tokens=16)
    stop = full[3:5]
    outputs = chat.bind(stop=[stop], max_tokens=16).batch(["hello", "hello", "abc"])
    assert spy.sizes == [3]
    assert [m.content for m in outputs[:2]] == [full[: full.index(stop)]] * 2


def test_batch_keeps_per_input_callbacks(chat):
    chat, spy = spied(chat)
    recorders = [Recorder() for _ in INPUTS]
    chat.batch(INPUTS, config=[{"callbacks": [r]} for r in recorders])
    assert spy.sizes == [len(INPUTS)]
    assert [(r.starts, len(r.ends)) for r in recorders] == [(1, 1)] * len(INPUTS)


def test_batch_honours_max_concurrency_as_submission_size(chat):
    chat, spy = spied(chat)
    outputs = chat.batch(INPUTS + ["z"], config={"max_concurrency": 2})
    assert spy.sizes == [2, 2, 1]
    assert [m.content for m in outputs] == [expected(chat, i) for i in INPUTS + ["z"]]


async def test_abatch_is_one_engine_submission(chat):
    chat, spy = spied(chat)
    outputs = await chat.abatch(INPUTS)
    assert spy.sizes == [len(INPUTS)]
    assert [m.content for m in outputs] == [expected(chat, i) for i in INPUTS]


def test_batch_with_a_bad_input_returns_its_error_and_the_other_outputs(chat):
    chat, spy = spied(chat)
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    inputs = ["hello", [HumanMessage(content=[image])], "abc"]
    outputs = chat.batch(inputs, return_exceptions=True)
    assert spy.sizes == [2]
    assert isinstance(outputs[1], ValueError)
    assert outputs[0].content == expected(chat, "hello")
    assert outputs[2].content == expected(chat, "abc")


def test_generate_returns_n_samples_per_input_from_one_group_each(chat):
    chat, spy = spied(chat)
    result = chat.generate([[HumanMessage("hello")], [HumanMessage("abc")]], n=3, temperature=1.0)
    assert [len(row) for row in result.generations] == [3, 3]
    assert spy.sizes == [3, 3]
    assert len({g.message.content for g in result.generations[0]}) > 1


def test_stream_yields_real_pieces_then_a_last_chunk_with_usage(chat):
    chunks = list(chat.stream("hello"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert len([c for c in chunks if c.content]) > 1
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    assert full.content == chat.invoke("hello").content
    assert chunks[-1].chunk_position == "last"
    assert full.usage_metadata["output_tokens"] == 8
    assert full.response_metadata["finish_reason"] == "length"


async def test_astream_pieces_join_to_invoke_content(chat):
    pieces = [c.content async for c in chat.astream("hello")]
    assert len([p for p in pieces if p]) > 1
    assert "".join(pieces) == chat.invoke("hello").content


def test_streaming_field_fires_new_token_callbacks_on_invoke(model_path, chat):
    recorder = Recorder()
    streaming = ChatSeed(model=model_path, max_tokens=8, streaming=True)
    message = streaming.invoke("hello", config={"callbacks": [recorder]})
    assert message.content == chat.invoke("hello").content
    assert len([t for t in recorder.tokens if t]) > 1
    assert "".join(recorder.tokens) == message.content


async def test_astream_events_reports_stream_chunks(chat):
    chunks = [
        event["data"]["chunk"].content
        async for event in chat.astream_events("hello", version="v2")
        if event["event"] == "on_chat_model_stream"
    ]
    assert "".join(chunks) == chat.invoke("hello").content


def test_stop_string_cuts_output_in_invoke_and_stream(chat):
    full = greedy(chat, user("hello"), max_tokens=16)
    stop = full[3:5]
    cut = full[: full.index(stop)]
    assert chat.invoke("hello", max_tokens=16, stop=[stop]).content == cut
    assert "".join(c.content for c in chat.stream("hello", max_tokens=16, stop=[stop])) == cut


def test_chat_from_llm_takes_its_configuration_and_engine(model_path):
    llm = SeedLLM(model=model_path, max_tokens=5, temperature=0.3, seed=2)
    chat = ChatSeed(llm=llm)
    assert (chat.model, chat.max_tokens, chat.temperature, chat.seed) == (model_path, 5, 0.3, 2)
    assert chat.engine is llm.engine
    assert ChatSeed(llm=llm, max_tokens=9).max_tokens == 9
    spy = SpyEngine(llm.engine)
    assert ChatSeed(llm=SeedLLM(engine=spy)).engine is spy


def test_equal_configurations_share_one_engine(chat, model_path):
    assert ChatSeed(model=model_path, temperature=0.9).engine is chat.engine
    assert SeedLLM(model=model_path).engine is chat.engine


def test_invalid_fields_raise_naming_the_field():
    with pytest.raises(ValueError, match="top_p"):
        ChatSeed(top_p=1.5)
    with pytest.raises(ValueError, match="llm must be a SeedLLM"):
        ChatSeed(llm="SmolLM2")


def test_standard_timeout_name_sets_request_timeout():
    assert ChatSeed(timeout=30).request_timeout == 30


def test_cache_never_collapses_independent_samples(chat):
    cache = InMemoryCache()
    chat, spy = spied(chat, cache=cache)
    chat.invoke("hello"), chat.invoke("hello")
    assert len(spy.submissions) == 1
    chat.invoke("hello", temperature=1.0), chat.invoke("hello", temperature=1.0)
    assert len(spy.submissions) == 3
    chat.generate([[HumanMessage("hello")]], n=2), chat.generate([[HumanMessage("hello")]], n=2)
    assert len(spy.submissions) == 5
    chat.invoke("hello", temperature=1.0, seed=1), chat.invoke("hello", temperature=1.0, seed=1)
    assert len(spy.submissions) == 6


def test_ls_params_reflect_model_override_and_sampling(chat):
    params = chat._get_ls_params(stop=["x"], model="other")
    assert params["ls_model_name"] == "other" and params["ls_model_type"] == "chat"
    assert chat._get_ls_params()["ls_model_name"] == chat.model
