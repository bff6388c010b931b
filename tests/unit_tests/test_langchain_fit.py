"""What users of ChatOpenAI / ChatOllama reach for (issue 30), on tiny models.

Token counts of what a call sends, log probabilities in OpenAI's format, the model profile
that ``create_agent`` reads, tools and a response format in one call, fast offline failure,
and the package surface (version, exported errors, extras, CLI options).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool

import langchain_seed
from langchain_seed import ChatSeed, SeedLLM

ROOT = Path(__file__).resolve().parents[2]
CONVERSATION = [SystemMessage("be brief"), HumanMessage("what is two and two?")]


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@pytest.fixture(scope="module")
def chat(grammar_pair) -> ChatSeed:
    return ChatSeed(model=str(grammar_pair.target_path), max_tokens=6)


# ----- token counting ----------------------------------------------------------------------
def test_token_count_is_what_the_call_sends(chat):
    sent = chat.invoke(CONVERSATION).usage_metadata["input_tokens"]
    assert chat.get_num_tokens_from_messages(CONVERSATION) == sent


def test_token_count_includes_the_tools(chat):
    bare = chat.get_num_tokens_from_messages(CONVERSATION)
    with_tools = chat.get_num_tokens_from_messages(CONVERSATION, tools=[add])
    sent = chat.bind_tools([add]).invoke(CONVERSATION).usage_metadata["input_tokens"]
    assert with_tools == sent > bare


# ----- log probabilities -------------------------------------------------------------------
def check_logprobs(content: list[dict], top: int) -> None:
    for entry in content:
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
        assert entry["logprob"] <= 0 and isinstance(entry["bytes"], list)
        assert entry["token"] == bytes(entry["bytes"]).decode("utf-8", errors="replace")
        assert len(entry["top_logprobs"]) == top
        if top:
            assert entry["top_logprobs"][0]["logprob"] >= entry["logprob"]


def test_chat_returns_logprobs_in_openai_format(chat):
    message = chat.invoke(CONVERSATION, logprobs=True, top_logprobs=2)
    content = message.response_metadata["logprobs"]["content"]
    assert len(content) == message.usage_metadata["output_tokens"]
    check_logprobs(content, 2)
    assert "logprobs" not in chat.invoke(CONVERSATION).response_metadata


def test_streamed_chunks_add_up_to_the_invoked_logprobs(chat):
    model = chat.model_copy(update={"logprobs": True, "top_logprobs": 1})
    invoked = model.invoke(CONVERSATION)
    chunks = list(model.stream(CONVERSATION))
    assert sum(bool(c.response_metadata.get("logprobs")) for c in chunks) > 1  # per chunk
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.response_metadata["logprobs"] == invoked.response_metadata["logprobs"]


def test_llm_returns_logprobs_in_generation_info(grammar_pair):
    llm = SeedLLM(model=str(grammar_pair.target_path), max_tokens=4, logprobs=True)
    [[generation]] = llm.generate(["hello"]).generations
    content = generation.generation_info["logprobs"]["content"]
    assert len(content) == 4
    check_logprobs(content, 0)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"top_logprobs": 21}, "top_logprobs"), ({"logprobs": "yes"}, "logprobs")],
)
def test_bad_logprob_arguments_name_the_argument(chat, kwargs, named):
    with pytest.raises(ValueError, match=named):
        chat.invoke("hi", **kwargs)


# ----- model profile and tools beside a response format ----------------------------------
def test_profile_declares_what_chat_seed_does(chat, grammar_pair):
    profile = chat.profile
    assert profile["tool_calling"] and profile["tool_choice"] and profile["structured_output"]
    assert profile["tool_call_streaming"] and profile["text_inputs"] and profile["text_outputs"]
    assert not profile["image_inputs"] and not profile["reasoning_output"]
    assert profile["max_input_tokens"] == 4096  # the folder's config.json, nothing loaded


ANSWER = {
    "type": "object",
    "properties": {"value": {"type": "integer", "minimum": 0, "maximum": 999}},
    "required": ["value"],
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "Answer", "schema": ANSWER}}


def test_tools_and_a_response_format_go_in_one_call(chat):
    bound = chat.bind_tools([add], response_format=RESPONSE_FORMAT, max_tokens=120)
    message = bound.invoke("what is 2 + 3?")  # refused before: "one output constraint per call"
    if message.tool_calls:
        assert message.tool_calls[0]["name"] == "add" and not message.invalid_tool_calls
    else:
        assert isinstance(json.loads(message.content)["value"], int)


def test_the_one_call_grammar_is_tool_calls_or_the_answer(chat):
    from langchain_seed._adapters.tools import format_tools

    kwargs = {"tools": format_tools([add]), "response_format": RESPONSE_FORMAT}
    params = chat.call_options(None, kwargs).params
    spec = json.loads(params.grammar.spec)["format"]
    assert spec["type"] == "or"
    assert {e["type"] for e in spec["elements"]} == {"sequence", "json_schema"}
    forced = chat.call_options(None, {**kwargs, "tool_choice": "add"}).params
    assert json.loads(forced.grammar.spec)["format"]["type"] != "or"  # a forced call: no answer
    with pytest.raises(ValueError, match="one output constraint"):
        chat.call_options(None, {**kwargs, "regex": "a+"})


# ----- package surface ---------------------------------------------------------------------
def test_version_and_cli_version():
    from importlib import metadata

    assert langchain_seed.__version__ == metadata.version("langchain-seed")
    done = subprocess.run(
        [sys.executable, "-m", "langchain_seed", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and langchain_seed.__version__ in done.stdout


def test_errors_a_user_catches_are_exported():
    from langchain_seed.engine import EngineError, QueueFullError
    from langchain_seed.engine.execution.loading import ModelLoadError

    assert langchain_seed.ModelLoadError is ModelLoadError
    assert langchain_seed.EngineError is EngineError
    assert langchain_seed.QueueFullError is QueueFullError
    assert issubclass(langchain_seed.EngineClosedError, langchain_seed.EngineError)
    assert issubclass(langchain_seed.RequestCancelledError, langchain_seed.EngineError)


def test_pyproject_declares_extras_classifiers_urls_and_filelock():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert any(dep.startswith("vllm") for dep in extras["vllm"])
    assert any(dep.startswith("langchain>=1.0") for dep in extras["agents"])
    assert any(dep.startswith("filelock") for dep in project["dependencies"])
    assert project["classifiers"] and project["urls"]
    assert '"langchain>=1.0,<2"' in (ROOT / "Makefile").read_text()  # make install has it


def test_chat_response_metadata_names_the_provider(chat):
    assert chat.invoke("hi").response_metadata["model_provider"] == "seed"
    assert all(c.response_metadata["model_provider"] == "seed" for c in chat.stream("hi"))


@pytest.mark.parametrize("command", ["tot", "sc"])
def test_cli_drafters_accept_grammar(command):
    from langchain_seed.cli import build_parser

    args = ["--puzzle", "1 2 3 4"] if command == "tot" else ["--question", "q"]
    parsed = build_parser().parse_args([command, *args, "--drafters", "grammar", "ngram"])
    assert parsed.drafters == ["grammar", "ngram"]


def test_tot_cli_has_no_progress_and_an_in_level_bar(tiny_pair, tmp_path, capsys):
    from langchain_seed.cli import build_parser

    args = build_parser().parse_args(
        ["tot", "--puzzle", "4 5 6 10", "--model", str(tiny_pair.target_path), "--breadth", "1"]
        + ["--steps", "1", "--max-tokens", "8", "--no-tree"]
    )
    assert args.no_progress is False
    assert args.func(args) == 0
    assert "level 0" in capsys.readouterr().err  # the bar, on stderr, names the level
    quiet = build_parser().parse_args(["tot", "--puzzle", "4 5 6 10", "--no-progress"])
    assert quiet.no_progress is True


@pytest.mark.parametrize("method", ["invoke", "batch"])
def test_n_above_one_is_refused_where_one_output_comes_back(chat, method):
    call = chat.invoke if method == "invoke" else lambda x, **kw: chat.batch([x, x], **kw)
    with pytest.raises(ValueError, match="n must be 1.*generate"):
        call("hi", n=2)
    with pytest.raises(ValueError, match="n must be 1"):
        getattr(chat.model_copy(update={"n": 3}), method)("hi" if method == "invoke" else ["hi"])
    assert len(chat.generate([[HumanMessage("hi")]], n=2).generations[0]) == 2


async def test_ainvoke_refuses_n_above_one(chat):
    with pytest.raises(ValueError, match="n must be 1"):
        await chat.ainvoke("hi", n=2)


# keep the imports used by later sections
_ = (AIMessage, ToolMessage, json, time)


# ----- offline failure ---------------------------------------------------------------------
LOAD_UNKNOWN = """
import time
import transformers  # imported before the clock starts: the load's own time is measured
from langchain_seed import ChatSeed, ModelLoadError
import langchain_seed.engine.engine
start = time.perf_counter()
try:
    ChatSeed(model="org/unknown-model").invoke("hi")
except ModelLoadError as exc:
    print(f"{time.perf_counter() - start:.2f}")
    print(exc)
"""


def load_unknown_model(endpoint: str, tmp_path: Path) -> tuple[float, str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(tmp_path / "hf"),  # an empty local cache
        "SEED_CACHE_DIR": str(tmp_path / "seed"),
    }
    done = subprocess.run(
        [sys.executable, "-c", LOAD_UNKNOWN], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    seconds, message = done.stdout.split("\n", 1)
    return float(seconds), message


def test_an_unknown_model_fails_within_seconds_when_the_hub_refuses(tmp_path):
    import socket

    with socket.socket() as probe:  # a local port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    seconds, message = load_unknown_model(f"http://127.0.0.1:{port}", tmp_path)
    assert seconds < 8, seconds
    assert "cannot be reached" in message and "org/unknown-model" in message


def test_an_unknown_model_fails_within_seconds_when_the_hub_never_answers(tmp_path):
    import socket

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        seconds, message = load_unknown_model(
            f"http://127.0.0.1:{silent.getsockname()[1]}", tmp_path
        )
    assert seconds < 12, seconds
    assert "cannot be reached" in message and "timeout" in message
