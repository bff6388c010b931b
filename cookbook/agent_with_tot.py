"""An agent whose tool is a Tree-of-Thoughts search: LangGraph + ChatSeed + TreeOfThoughts.

    .venv/bin/python cookbook/agent_with_tot.py
    .venv/bin/python cookbook/agent_with_tot.py --question "Make 24 from 1 1 4 6" --breadth 3

The agent (LangGraph's ReAct loop on ``ChatSeed``) has one tool, ``solve_24``, which runs
``TreeOfThoughts.from_task("game24", ...)`` on the numbers the model passes. The chat model
and the search share one engine (``ChatSeed(llm=SeedLLM(...))``): the agent's calls and the
search's generation and evaluation phases are decoded by the same continuous batch.

As in ``agent_tools.py``, the first turn must call the tool and the turn after the result
answers in text, which a 135M model needs; the tool call itself is valid by construction.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from agent_tools import print_conversation  # the cookbook folder is on sys.path
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import StructuredTool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from pydantic import BaseModel, Field

from langchain_seed import ChatSeed, SeedLLM
from langchain_seed.tree_of_thoughts import TreeOfThoughts

SYSTEM = "You solve Game of 24 puzzles with the solve_24 tool. Pass the four numbers."


class Puzzle(BaseModel):
    """Four numbers separated by spaces."""

    numbers: str = Field(pattern=r"^[0-9]{1,2} [0-9]{1,2} [0-9]{1,2} [0-9]{1,2}$")


def make_solver(llm: SeedLLM, *, breadth: int, max_nodes: int | None) -> StructuredTool:
    """The ``solve_24`` tool: one ToT search over the numbers given."""
    tot = TreeOfThoughts.from_task("game24", llm=llm, breadth=breadth, max_nodes=max_nodes)

    def solve_24(numbers: str) -> str:
        """Search for an expression that makes 24 from four numbers, e.g. "4 5 6 10"."""
        result = tot.invoke({"input": numbers})
        if result["answer"] is None:
            return f"no expression found for {numbers} ({result['stats']['nodes']} nodes searched)"
        verdict = "correct" if result["solved"] else "not checked correct"
        return f"{result['answer']} ({verdict}, {result['stats']['nodes']} nodes searched)"

    # The pattern is part of the tool's schema, so the grammar makes the model pass four
    # numbers and nothing else.
    return StructuredTool.from_function(solve_24, args_schema=Puzzle)


def build_agent(chat: ChatSeed, solver: StructuredTool) -> Any:
    """agent node <-> tools node, the tool forced first and a text answer after it."""

    def agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
        choice = "none" if isinstance(state["messages"][-1], ToolMessage) else "solve_24"
        model = chat.bind_tools([solver], tool_choice=choice)
        return {"messages": [model.invoke([SystemMessage(SYSTEM), *state["messages"]])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([solver]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile()


def run(
    question: str,
    *,
    model: str | None = None,
    breadth: int = 2,
    max_nodes: int | None = 12,
    max_tokens: int = 64,
) -> list[BaseMessage]:
    """Run the agent on one question; returns the whole conversation."""
    llm = SeedLLM(model=model, temperature=0, max_tokens=max_tokens)
    chat = ChatSeed(llm=llm)  # the same engine for the agent and the search
    agent = build_agent(chat, make_solver(llm, breadth=breadth, max_nodes=max_nodes))
    state = agent.invoke({"messages": [HumanMessage(question)]}, {"recursion_limit": 6})
    return list(state["messages"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question", default="Use 4 5 6 10 to make 24.")
    parser.add_argument("--model", default=None, help="target model (default: embedded)")
    parser.add_argument("--breadth", type=int, default=2, help="ToT beam width")
    parser.add_argument("--max-nodes", type=int, default=12, help="ToT node budget")
    args = parser.parse_args()
    t0 = time.perf_counter()
    messages = run(args.question, model=args.model, breadth=args.breadth, max_nodes=args.max_nodes)
    print_conversation(messages, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
