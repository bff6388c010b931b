"""ChatSeed tool calling and structured output on a tiny random model.

A random model writes nonsense, so these tests check what the grammar guarantees (forced
calls and structured answers parse, name bound tools and follow the schema) and what the
adapter does (tool choice, rendering back, parsing, streaming, errors). What a real model
answers is in the integration tests.
"""

from __future__ import annotations

import json
from typing import Literal

import pytest
from langchain_core.messages import AIMessage, FunctionMessage, HumanMessage, ToolMessage
from lc_adapter_helpers import NAMES, TOOLS, set_light
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from langchain_seed import ChatSeed, SeedLLM
from langchain_seed._adapters.tools import (
    ToolCallStream,
    parse_tool_calls,
    resolve_tool_choice,
    tool_grammar,
)

pytest.importorskip("xgrammar")


@pytest.fixture(scope="module")
def chat(grammar_pair) -> ChatSeed:
    return ChatSeed(model=str(grammar_pair.target_path), max_tokens=120)


def check_call(call: dict) -> None:
    assert call["name"] in NAMES and call["id"].startswith("call_")
    if call["name"] == "set_light":
        assert call["args"]["room"] in ("kitchen", "hall") and isinstance(call["args"]["on"], bool)
    else:
        assert call["args"]["device"] in ("tv", "radio")


# ----- tool choice -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("choice", "want"),
    [
        (None, "auto"),
        ("auto", "auto"),
        ("none", "none"),
        ("any", "required"),
        ("required", "required"),
        ("get_mode", "get_mode"),
        ({"type": "function", "function": {"name": "set_light"}}, "set_light"),
        (True, "required"),
        (False, "none"),
    ],
)
def test_tool_choice_forms(choice, want):
    assert resolve_tool_choice(choice, NAMES) == want


def test_true_with_one_tool_forces_that_tool():
    assert resolve_tool_choice(True, ["get_mode"]) == "get_mode"


def test_unbound_tool_choice_lists_the_bound_tools(chat):
    with pytest.raises(
        ValueError, match=r"'lamp' is not a bound tool; bound tools: \['set_light', 'get_mode'\]"
    ):
        chat.bind_tools(TOOLS, tool_choice="lamp")


def test_tool_without_description_or_name_is_refused(chat):
    def nameless(x: int) -> int:
        return x

    with pytest.raises(ValueError, match="has no description"):
        chat.bind_tools([nameless])
    with pytest.raises(ValueError, match="needs a name"):
        chat.bind_tools([{"type": "function", "function": {"description": "d", "parameters": {}}}])
    # a name given twice keeps its first definition
    assert len(chat.bind_tools([set_light, set_light]).kwargs["tools"]) == 1


# ----- forced calls parse by construction -------------------------------------------------
@pytest.mark.parametrize("choice", ["required", "set_light", "get_mode"])
def test_forced_tool_calls_are_valid_calls_of_bound_tools(chat, choice):
    # one call per answer: a random model would otherwise go on calling until max_tokens
    bound = chat.bind_tools(TOOLS, tool_choice=choice, parallel_tool_calls=False)
    message = bound.invoke("turn on the kitchen light")
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.tool_calls and not message.invalid_tool_calls and message.content == ""
    for call in message.tool_calls:
        check_call(call)
        if choice != "required":
            assert call["name"] == choice
    if choice != "required":
        assert len(message.tool_calls) == 1


def test_required_with_parallel_calls_gives_valid_calls_until_it_stops(chat):
    message = chat.bind_tools(TOOLS, tool_choice="required").invoke("turn on the light")
    assert message.tool_calls
    for call in message.tool_calls:
        check_call(call)
    # only a call cut short by max_tokens can be invalid
    assert len(message.invalid_tool_calls) <= 1
    if message.invalid_tool_calls:
        assert message.response_metadata["finish_reason"] == "length"


def test_tool_choice_none_returns_text_and_auto_text_or_valid_calls(chat):
    assert chat.bind_tools(TOOLS, tool_choice="none").invoke("hi").tool_calls == []
    message = chat.bind_tools(TOOLS).invoke("hi")
    for call in message.tool_calls:
        check_call(call)


def test_a_call_cut_by_max_tokens_is_an_invalid_tool_call(chat):
    message = chat.bind_tools(TOOLS, tool_choice="set_light", max_tokens=12).invoke("light")
    assert message.response_metadata["finish_reason"] == "length"
    assert message.tool_calls == [] and len(message.invalid_tool_calls) == 1
    assert "incomplete" in message.invalid_tool_calls[0]["error"]


def test_streaming_yields_tool_call_chunks_that_add_up_to_the_calls(chat):
    bound = chat.bind_tools(TOOLS, tool_choice="required")
    whole = bound.invoke("turn on the light")
    chunks = list(bound.stream("turn on the light"))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert [c["args"] for c in merged.tool_calls] == [c["args"] for c in whole.tool_calls]
    assert [c["name"] for c in merged.tool_calls] == [c["name"] for c in whole.tool_calls]
    # a call cut by max_tokens stays text in a stream (invalid_tool_calls in invoke)
    assert bool(whole.invalid_tool_calls) == ("<tool_call>" in merged.content)


# ----- rendering the agent loop back ------------------------------------------------------
def test_tool_calls_and_tool_results_render_back_into_the_prompt(chat, monkeypatch):
    seen = []
    render = chat.engine.render_chat

    def spy(turns, **kw):
        seen.append((turns, kw))
        return render(turns, **kw)

    monkeypatch.setattr(chat.engine, "render_chat", spy)
    call = {"name": "get_mode", "args": {"device": "tv"}, "id": "call_1", "type": "tool_call"}
    history = [
        HumanMessage("what mode is the tv in?"),
        AIMessage("", tool_calls=[call]),
        ToolMessage("standby", tool_call_id="call_1"),
    ]
    chat.bind_tools(TOOLS).invoke(history)
    turns, _ = seen[-1]
    assert turns[0]["role"] == "system" and "<tools>" in turns[0]["content"]
    assert "get_mode" in turns[0]["content"] and "set_light" in turns[0]["content"]
    assert turns[2] == {
        "role": "assistant",
        "content": '<tool_call>\n{"name": "get_mode", "arguments": {"device": "tv"}}\n</tool_call>',
    }
    assert turns[3] == {"role": "tool", "content": "<tool_response>\nstandby\n</tool_response>"}


def test_other_message_types_are_rejected_clearly(chat):
    with pytest.raises(ValueError, match="cannot render a FunctionMessage"):
        chat.invoke([HumanMessage("hi"), FunctionMessage("42", name="f")])


# ----- parsing ----------------------------------------------------------------------------
def test_parse_several_calls_text_and_malformed_ones():
    text = (
        'Sure.\n<tool_call>\n{"name": "get_mode", "arguments": {"device": "tv"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_mode", "arguments": {"device": "radio"}}\n</tool_call>\n'
        "<tool_call>\n{not json}\n</tool_call>\n"
        '<tool_call>\n{"name": "fly", "arguments": {}}\n</tool_call>'
    )
    parsed = parse_tool_calls(text, NAMES)
    assert parsed.content == "Sure."
    assert [c["args"]["device"] for c in parsed.tool_calls] == ["tv", "radio"]
    assert len({c["id"] for c in parsed.tool_calls}) == 2
    errors = [c["error"] for c in parsed.invalid_tool_calls]
    assert len(errors) == 2 and "not a bound tool" in errors[1]


def test_plain_text_is_content_only():
    parsed = parse_tool_calls("no calls here", NAMES)
    assert parsed.content == "no calls here" and parsed.tool_calls == []


def test_stream_splitter_holds_back_a_partial_marker():
    split = ToolCallStream(NAMES)
    out = []
    for piece in [
        "Hi <tool",
        '_call>\n{"name": "get_mode", ',
        '"arguments": {"device": "tv"}}\n</tool_',
        "call>bye",
    ]:
        out.extend(split.feed(piece))
    out.extend(split.close())
    assert out[0] == "Hi " and out[-1] == "bye"
    chunk = out[1]
    assert chunk["name"] == "get_mode" and json.loads(chunk["args"]) == {"device": "tv"}


def test_grammar_modes():
    tools = [t for t in chat_tools()]
    assert tool_grammar(tools, "none") is None
    auto = json.loads(tool_grammar(tools, "auto").spec)["format"]
    assert auto["type"] == "triggered_tags" and auto["at_least_one"] is False
    named = json.loads(tool_grammar(tools, "get_mode").spec)["format"]["elements"][0]
    assert named["type"] == "tags_with_separator" and len(named["tags"]) == 1


def chat_tools():
    from langchain_seed._adapters.tools import format_tools

    return format_tools(TOOLS)


# ----- structured output ------------------------------------------------------------------
class Switch(BaseModel):
    """A light switch setting."""

    room: Literal["kitchen", "hall"]
    on: bool
    note: str = Field(max_length=5)


class SwitchDict(TypedDict):
    """A light switch setting."""

    room: Literal["kitchen", "hall"]
    on: bool


SWITCH_SCHEMA = {
    "title": "Switch",
    "description": "A light switch setting.",
    "type": "object",
    "properties": {"room": {"enum": ["kitchen", "hall"]}, "on": {"type": "boolean"}},
    "required": ["room", "on"],
}


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_structured_output_pydantic(chat, method):
    out = chat.with_structured_output(Switch, method=method, include_raw=True).invoke("kitchen on")
    if method == "json_mode":  # any JSON object: a random model's rarely fits the schema
        assert out["parsed"] is not None or out["parsing_error"] is not None
        json.loads(out["raw"].content, strict=False)
        return
    assert out["parsing_error"] is None, out["raw"]
    assert isinstance(out["parsed"], Switch) and out["parsed"].room in ("kitchen", "hall")


@pytest.mark.parametrize("schema", [SwitchDict, SWITCH_SCHEMA], ids=["typeddict", "json_schema"])
@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output_dicts(chat, schema, method):
    parsed = chat.with_structured_output(schema, method=method).invoke("hall off")
    assert parsed["room"] in ("kitchen", "hall") and isinstance(parsed["on"], bool)


def test_structured_output_cut_by_max_tokens_reports_the_parse_error(chat):
    runnable = chat.with_structured_output(Switch, include_raw=True, max_tokens=5)
    out = runnable.invoke("kitchen on")
    assert out["raw"].response_metadata["finish_reason"] == "length"
    assert out["parsed"] is None and out["parsing_error"] is not None


def test_structured_output_traces_its_format(chat):
    from langchain_core.callbacks import BaseCallbackHandler

    class Catch(BaseCallbackHandler):
        options: list = []

        def on_chat_model_start(self, serialized, messages, *, options=None, **kwargs):
            self.options.append(options)

    catch = Catch()
    chat.with_structured_output(SWITCH_SCHEMA).invoke("x", config={"callbacks": [catch]})
    fmt = catch.options[0]["ls_structured_output_format"]
    assert fmt["schema"] == SWITCH_SCHEMA and fmt["kwargs"]["method"] == "json_schema"


def test_unknown_method_and_unsupported_schema_construct_are_clear_errors(chat):
    with pytest.raises(ValueError, match="method must be one of"):
        chat.with_structured_output(Switch, method="xml")
    bad = {"type": "object", "properties": {"x": {"type": "string", "pattern": "(?<=a)b"}}}
    with pytest.raises(ValueError, match="json_schema grammar.*Lookbehind"):
        chat.with_structured_output(bad).invoke("x")


def test_seed_llm_takes_regex_and_json_schema_call_options(grammar_pair):
    import re

    llm = SeedLLM(model=str(grammar_pair.target_path), max_tokens=40)
    text = llm.invoke("abc", regex="[a-c]{2,6}!")
    assert re.fullmatch("[a-c]{2,6}!", text)
    value = json.loads(llm.invoke("x", json_schema=SWITCH_SCHEMA), strict=False)
    assert value["room"] in ("kitchen", "hall")
    with pytest.raises(ValueError, match="one output constraint per call"):
        llm.invoke("x", regex="a", json_schema=SWITCH_SCHEMA)


TOOLS_TEMPLATE = (
    "{% if tools %}<s>system\nTOOLS:{% for t in tools %} {{ t['function']['name'] }}"
    "{% endfor %}</s>\n{% endif %}"
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def test_a_template_that_renders_tools_gets_them_and_no_default_prompt(chat, monkeypatch):
    engine = chat.engine
    monkeypatch.setattr(engine.tokenizer, "chat_template", TOOLS_TEMPLATE)
    assert engine.chat_template_renders_tools
    seen = []
    render = engine.render_chat

    def spy(turns, **kw):
        seen.append((turns, kw))
        return render(turns, **kw)

    monkeypatch.setattr(engine, "render_chat", spy)
    history = [HumanMessage("mode?"), ToolMessage("standby", tool_call_id="call_1")]
    chat.bind_tools(TOOLS, tool_choice="get_mode", parallel_tool_calls=False).invoke(history)
    turns, kw = seen[-1]
    assert [t["function"]["name"] for t in kw["tools"]] == NAMES
    assert all("<tools>" not in t["content"] for t in turns)
    assert turns[-1] == {
        "role": "tool",
        "content": "standby",
        "tool_call_id": "call_1",
    }  # the template wraps it


def test_stream_splitter_keeps_an_invalid_call_as_text():
    split = ToolCallStream(NAMES)
    block = '<tool_call>\n{"name": "fly", "arguments": {}}\n</tool_call>'
    assert list(split.feed(block)) + list(split.close()) == [block]


def test_tools_with_tool_choice_none_do_not_count_as_a_constraint():
    from langchain_seed._adapters.options import call_grammar

    kwargs = {
        "tools": chat_tools(),
        "tool_choice": "none",
        "response_format": {"type": "json_object"},
    }
    assert call_grammar(kwargs).kind == "json_object"


def test_seed_llm_cache_never_mixes_constrained_and_free_answers(grammar_pair):
    from langchain_core.caches import InMemoryCache
    from langchain_core.globals import set_llm_cache

    llm = SeedLLM(model=str(grammar_pair.target_path), max_tokens=12)
    free = llm.invoke("abc")
    set_llm_cache(InMemoryCache())
    try:
        constrained = llm.invoke("abc", regex="[a-c]{2,6}!")
        assert llm.invoke("abc") == free
        assert llm.invoke("abc", regex="[a-c]{2,6}!") == constrained != free
    finally:
        set_llm_cache(None)
