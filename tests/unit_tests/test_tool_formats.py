"""Tool calls in the model's own format: Hermes / Qwen and Llama 3.x, read off the template.

Two tiny byte-level models whose chat templates render tools and tool calls, one in each
format (as Qwen2.5's and Llama 3.1's templates do), and a template that renders no tools
(the Hermes fallback). A random model writes nonsense, so what is checked is what the format
guarantees: the grammar makes calls in the template's format, and they parse back.
"""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from lc_adapter_helpers import NAMES, TOOLS

from langchain_seed import ChatSeed
from langchain_seed._adapters.tool_parsing import HERMES, LLAMA, ToolCallStream, parse_tool_calls
from langchain_seed._adapters.tools import format_tools, tool_grammar
from langchain_seed.engine import Engine, EngineConfig, SamplingParams

pytest.importorskip("xgrammar")

_TOOLS_HEADER = (
    "{%- if tools %}<s>system\nTools:\n{%- for t in tools %}\n{{ t | tojson }}{%- endfor %}\n"
    "CALL</s>\n{%- endif %}"
)
_TURNS = (
    "{%- for m in messages %}<s>{{ m['role'] }}\n"
    "{%- if m.get('tool_calls') %}{%- for c in m['tool_calls'] %}\nCALL_BODY{%- endfor %}"
    "{%- else %}{{ m['content'] }}{%- endif %}</s>\n{%- endfor %}"
    "{%- if add_generation_prompt %}<s>assistant\n{%- endif %}"
)
HERMES_TEMPLATE = (
    (_TOOLS_HEADER + _TURNS)
    .replace(
        "CALL_BODY",
        '<tool_call>\n{"name": "{{ c.function.name }}", "arguments": '
        "{{ c.function.arguments | tojson }}}\n</tool_call>",
    )
    .replace("CALL", 'Answer with <tool_call>{"name": ..., "arguments": ...}</tool_call>')
)
LLAMA_TEMPLATE = (
    (_TOOLS_HEADER + _TURNS)
    .replace(
        "CALL_BODY",
        '{"name": "{{ c.function.name }}", "parameters": {{ c.function.arguments | tojson }}}',
    )
    .replace("CALL", 'Answer with {"name": function name, "parameters": dictionary of arguments}')
)


def model_with_template(pair, tmp_path_factory, template: str | None) -> str:
    """The grammar pair's target saved with another chat template (``None``: no tools)."""
    import copy

    path = tmp_path_factory.mktemp("template")
    tokenizer = copy.deepcopy(pair.tokenizer)
    if template is not None:
        tokenizer.chat_template = template
    pair.target.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module", params=["hermes", "llama", "plain"])
def formatted(request, grammar_pair, tmp_path_factory):
    """``(format name, model path)`` for each template."""
    template = {"hermes": HERMES_TEMPLATE, "llama": LLAMA_TEMPLATE, "plain": None}[request.param]
    return request.param, model_with_template(grammar_pair, tmp_path_factory, template)


def test_the_engine_reads_the_format_off_the_chat_template(formatted):
    name, path = formatted
    engine = Engine(EngineConfig(model=path))
    try:
        assert engine.tool_call_format == {"plain": "none"}.get(name, name)
        assert engine.chat_template_renders_tools == (name != "plain")
    finally:
        engine.close()


def test_a_forced_call_is_written_in_the_templates_format_and_parses(formatted):
    name, path = formatted
    chat = ChatSeed(model=path, max_tokens=150)
    message = chat.bind_tools(TOOLS, tool_choice="set_light").invoke("light the hall")
    [call] = message.tool_calls
    assert call["name"] == "set_light" and call["args"]["room"] in ("kitchen", "hall")
    assert isinstance(call["args"]["on"], bool) and not message.invalid_tool_calls
    # the engine's raw text is in the template's format
    kwargs = {"tools": format_tools(TOOLS), "tool_choice": "set_light"}
    options = chat.call_options(None, kwargs)
    prompt = chat._engine_prompt([HumanMessage("light the hall")], options)
    [raw] = chat.engine.generate([prompt], options.params)
    opening = '{"name": "set_light", "parameters": ' if name == "llama" else "<tool_call>\n"
    assert raw.text.startswith(opening), raw.text


def test_streamed_calls_in_the_templates_format_arrive_as_tool_call_chunks(formatted):
    name, path = formatted
    chat = ChatSeed(model=path, max_tokens=150)
    bound = chat.bind_tools(TOOLS, tool_choice="get_mode")
    chunks = list(bound.stream("what mode is the tv in?"))
    calls = [c for chunk in chunks for c in chunk.tool_call_chunks]
    assert len(calls) == 1 and calls[0]["name"] == "get_mode"
    assert json.loads(calls[0]["args"])["device"] in ("tv", "radio")


def test_calls_render_back_through_the_template(formatted):
    name, path = formatted
    chat = ChatSeed(model=path, max_tokens=8)
    history = [
        HumanMessage("light the hall"),
        AIMessage(
            "", tool_calls=[{"name": "set_light", "args": {"room": "hall", "on": True}, "id": "1"}]
        ),
        ToolMessage("hall: on", tool_call_id="1"),
    ]
    text = chat.engine.tokenizer.decode(
        chat._engine_prompt(history, chat.call_options(None, {"tools": []}))
    )
    if name == "llama":
        assert '{"name": "set_light", "parameters": {"room": "hall", "on": true}}' in text
    else:
        assert (
            '<tool_call>\n{"name": "set_light", "arguments": {"room": "hall", "on": true}}' in text
        )


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        (
            HERMES,
            'I will.<tool_call>\n{"name": "get_mode", "arguments": {"device": "tv"}}\n</tool_call>',
        ),
        (LLAMA, 'I will.{"name": "get_mode", "parameters": {"device": "tv"}}'),
    ],
    ids=["hermes", "llama"],
)
def test_each_format_parses_whole_and_streamed(fmt, text):
    parsed = parse_tool_calls(text, NAMES, fmt)
    assert parsed.content == "I will."
    assert [(c["name"], c["args"]) for c in parsed.tool_calls] == [("get_mode", {"device": "tv"})]
    stream = ToolCallStream(NAMES, fmt)
    parts = [p for ch in text for p in stream.feed(ch)] + list(stream.close())
    assert "".join(p for p in parts if isinstance(p, str)) == "I will."
    [chunk] = [p for p in parts if not isinstance(p, str)]
    assert chunk["name"] == "get_mode" and json.loads(chunk["args"]) == {"device": "tv"}


def test_llama_calls_back_to_back_parse_as_two_calls():
    one = '{"name": "get_mode", "parameters": {"device": "%s"}}'
    text = one % "tv" + one % "radio"
    parsed = parse_tool_calls(text, NAMES, LLAMA)
    assert [c["args"]["device"] for c in parsed.tool_calls] == ["tv", "radio"]


def test_llama_grammar_is_xgrammars_llama_structural_tag():
    tools = format_tools(TOOLS)
    spec = json.loads(tool_grammar(tools, "auto", fmt=LLAMA).spec)
    assert spec["format"]["triggers"] == ['{"name": ']
    assert spec["format"]["tags"][0]["begin"] == '{"name": "set_light", "parameters": '
    hermes = json.loads(tool_grammar(tools, "auto", fmt=HERMES).spec)
    assert hermes["format"]["triggers"] == ["<tool_call>"]


def test_sampled_answers_under_the_llama_grammar_parse(formatted):
    name, path = formatted
    if name != "llama":
        pytest.skip("llama format only")
    chat = ChatSeed(model=path, max_tokens=60, temperature=1.0, seed=0)
    grammar = tool_grammar(format_tools(TOOLS), "required", fmt=LLAMA)
    engine = chat.engine
    options = chat.call_options(None, {"tools": format_tools(TOOLS)})
    prompt = chat._engine_prompt([HumanMessage("do it")], options)
    results = engine.generate(
        [prompt] * 4,
        [SamplingParams(max_tokens=60, temperature=1.0, seed=s, grammar=grammar) for s in range(4)],
    )
    for result in results:
        parsed = parse_tool_calls(result.text, NAMES, LLAMA)
        if result.finish_reason == "stop":
            assert parsed.tool_calls and not parsed.invalid_tool_calls, result.text
