"""A LangGraph graph of your own around ChatSeed, with two tools, offline on the embedded model.

    .venv/bin/python cookbook/agent_langgraph.py
    .venv/bin/python cookbook/agent_langgraph.py --question "What is 12 times 7?" --auto

``agent_tools.py`` builds the same agent with LangChain's ``create_agent`` (the usual way);
this recipe spells the graph out, for when you want to change its shape. The graph is
LangGraph's ReAct loop: an ``agent`` node (``ChatSeed.bind_tools``) and a
``tools`` node (``ToolNode``), joined by ``tools_condition``. Every tool call the model
makes is valid by construction (the engine decodes it under the tool-call grammar), so the
``tools`` node never sees a malformed call.

The model's policy: a 135M model rarely decides on its own to call a tool, so by default
the agent's first turn must call one (``tool_choice="required"``) and its turn after the
tool results answers in text (``tool_choice="none"``). ``--auto`` leaves every turn to the
model (``tool_choice="auto"``), as a larger model would be run.
"""

from __future__ import annotations

import argparse
import time
from typing import Annotated, Any

from agent_tools import TOOLS, print_conversation  # the cookbook folder is on sys.path
from langchain_core.messages import (
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition
from typing_extensions import TypedDict

from langchain_seed import ChatSeed

SYSTEM = "You are a helpful assistant. Use the tools to compute exact answers."


class State(TypedDict):
    messages: Annotated[list[BaseMessage], add_messages]


def build_agent(chat: ChatSeed, *, auto: bool = False) -> Any:
    """The compiled LangGraph agent: agent node <-> tools node until the model answers."""

    def agent(state: State) -> dict[str, list[BaseMessage]]:
        after_tools = isinstance(state["messages"][-1], ToolMessage)
        choice = "auto" if auto else ("none" if after_tools else "required")
        model = chat.bind_tools(TOOLS, tool_choice=choice, parallel_tool_calls=auto)
        return {"messages": [model.invoke([SystemMessage(SYSTEM), *state["messages"]])]}

    graph = StateGraph(State)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(TOOLS))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile()


def run(
    question: str, *, model: str | None = None, max_tokens: int = 96, auto: bool = False
) -> list[BaseMessage]:
    """Run the agent on one question; returns the whole conversation."""
    chat = ChatSeed(model=model, max_tokens=max_tokens)
    agent = build_agent(chat, auto=auto)
    state = agent.invoke({"messages": [HumanMessage(question)]}, {"recursion_limit": 8})
    return list(state["messages"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question", default="What is 12 times 7?")
    parser.add_argument("--model", default=None, help="target model (default: embedded)")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--auto", action="store_true", help="tool_choice='auto' on every turn")
    args = parser.parse_args()
    t0 = time.perf_counter()
    messages = run(args.question, model=args.model, max_tokens=args.max_tokens, auto=args.auto)
    print_conversation(messages, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
