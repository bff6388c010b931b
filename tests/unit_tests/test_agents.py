"""Agents for real: create_agent and LangGraph graphs over ChatSeed (tiny model), and the
agent cookbooks."""

from __future__ import annotations

import importlib.util
import operator
import sys
from pathlib import Path
from typing import Annotated

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from typing_extensions import TypedDict

from langchain_seed import ChatSeed
from langchain_seed.engine import Engine, EngineConfig

pytest.importorskip("xgrammar")
langgraph = pytest.importorskip("langgraph")
from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.types import Send  # noqa: E402

COOKBOOK = Path(__file__).resolve().parents[2] / "cookbook"
BRANCHES = 6


def load_cookbook(name: str):
    if str(COOKBOOK) not in sys.path:  # as when a recipe runs as a script
        sys.path.insert(0, str(COOKBOOK))
    spec = importlib.util.spec_from_file_location(f"cookbook_{name}", COOKBOOK / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class FanOut(TypedDict):
    questions: list[str]
    answers: Annotated[list[str], operator.add]


def fan_out_graph(chat: ChatSeed):
    def ask(state: dict) -> dict:
        return {"answers": [chat.invoke(state["question"]).content]}

    def route(state: FanOut) -> list[Send]:
        return [Send("ask", {"question": q}) for q in state["questions"]]

    graph = StateGraph(FanOut)
    graph.add_node("ask", ask)
    graph.add_conditional_edges(START, route, ["ask"])
    graph.add_edge("ask", END)
    return graph.compile()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_langgraph_send_branches_run_as_one_engine_batch(grammar_pair, mode):
    import asyncio

    config = EngineConfig(model=str(grammar_pair.target_path), max_batch_size=16)
    with Engine(config) as engine:
        chat = ChatSeed(engine=engine, max_tokens=48)
        graph = fan_out_graph(chat)
        state = {"questions": [f"question number {i}" for i in range(BRANCHES)], "answers": []}
        engine.reset_stats()
        if mode == "sync":
            out = graph.invoke(state, {"max_concurrency": BRANCHES})
        else:
            out = asyncio.run(graph.ainvoke(state, {"max_concurrency": BRANCHES}))
        stats = engine.stats()
    assert len(out["answers"]) == BRANCHES
    assert stats.peak_batch_size >= BRANCHES, stats.peak_batch_size


def check_tool_loop(messages: list) -> None:
    calls = [m for m in messages if isinstance(m, AIMessage) and m.tool_calls]
    results = [m for m in messages if isinstance(m, ToolMessage)]
    assert calls and results, messages
    call = calls[0].tool_calls[0]
    assert call["name"] in ("multiply", "word_length")
    assert results[0].status != "error", results[0].content  # the call was valid
    assert isinstance(messages[-1], AIMessage) and not messages[-1].tool_calls


def test_create_agent_cookbook_runs_a_tool_loop(grammar_pair):
    agent_tools = load_cookbook("agent_tools")
    # a random model writes long numbers: room for the call to finish
    state = agent_tools.run(
        "What is 12 times 7?", model=str(grammar_pair.target_path), max_tokens=400
    )
    check_tool_loop(state["messages"])


def test_create_agent_cookbook_with_response_format_returns_the_answer(grammar_pair):
    agent_tools = load_cookbook("agent_tools")
    model = str(grammar_pair.target_path)
    state = agent_tools.run("What is 12 times 7?", model=model, max_tokens=400, structured=True)
    check_tool_loop(state["messages"])
    assert isinstance(state["structured_response"], agent_tools.Answer)
    # the provider strategy: the answer is the last message's JSON, no "Answer" tool call
    assert not any(isinstance(m, ToolMessage) and m.name == "Answer" for m in state["messages"])


def test_langgraph_cookbook_graph_runs_a_tool_loop(grammar_pair):
    agent_langgraph = load_cookbook("agent_langgraph")
    model = str(grammar_pair.target_path)
    check_tool_loop(agent_langgraph.run("What is 12 times 7?", model=model, max_tokens=400))


@pytest.mark.parametrize("with_tools", [False, True], ids=["no_tools", "tools"])
def test_create_agent_takes_the_provider_strategy_with_and_without_tools(grammar_pair, with_tools):
    """ChatSeed's profile declares structured output, so create_agent binds the response
    format itself (beside the tools, in one call) and reads the answer from the message."""
    from langchain.agents import create_agent
    from langchain_core.tools import tool
    from pydantic import BaseModel

    class Answer(BaseModel):
        """The answer."""

        value: int

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    chat = ChatSeed(model=str(grammar_pair.target_path), max_tokens=60)
    assert chat.profile["structured_output"] and chat.profile["tool_calling"]
    agent = create_agent(chat, tools=[add] if with_tools else [], response_format=Answer)
    state = agent.invoke({"messages": [("user", "what is 2 + 3?")]}, {"recursion_limit": 12})
    assert isinstance(state["structured_response"], Answer)
    assert not any(isinstance(m, ToolMessage) and m.name == "Answer" for m in state["messages"])


def test_agent_with_tot_cookbook_calls_the_search(grammar_pair):
    agent_with_tot = load_cookbook("agent_with_tot")
    messages = agent_with_tot.run(
        "Use 4 5 6 10 to make 24.",
        model=str(grammar_pair.target_path),
        breadth=1,
        max_nodes=3,
        max_tokens=200,  # one token per byte: room for the whole call
    )
    calls = [m for m in messages if isinstance(m, AIMessage) and m.tool_calls]
    assert calls and calls[0].tool_calls[0]["name"] == "solve_24"
    numbers = calls[0].tool_calls[0]["args"]["numbers"]
    assert len(numbers.split()) == 4 and all(n.isdigit() for n in numbers.split())
    result = next(m for m in messages if isinstance(m, ToolMessage))
    assert "nodes searched" in result.content
