"""A tool-calling agent on ChatSeed with LangChain's ``create_agent``, offline, embedded model.

    .venv/bin/python cookbook/agent_tools.py
    .venv/bin/python cookbook/agent_tools.py --structured   # the final answer as an Answer
    .venv/bin/python cookbook/agent_tools.py --question "What is 12 times 7?" --auto

``create_agent`` (LangChain v1, ``pip install "langchain-seed[agents]"``) runs the model and
the tools in a loop until the model answers. Every tool call the model makes is valid by
construction (the engine decodes it under the tool-call grammar). With ``--structured`` the
agent also gets ``response_format=Answer``: ``ChatSeed``'s profile declares native
structured output, so ``create_agent`` asks for tools and the answer's schema in one call
(the provider strategy) and the engine's grammar allows "tool calls, or an Answer".

The model's policy: a 135M model rarely decides on its own to call a tool, so by default a
middleware makes the agent's first turn call one (``tool_choice="required"``, one call) and
the turn after the tool results answer (``tool_choice="none"``). ``--auto`` leaves every
turn to the model, as a larger model would be run. ``agent_langgraph.py`` is the same agent
as a LangGraph graph of your own.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import ModelRequest, ModelResponse, wrap_model_call
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from langchain_seed import ChatSeed


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers and return the product."""
    return a * b


@tool
def word_length(word: str) -> int:
    """Count the letters of one word."""
    return len(word)


TOOLS = [multiply, word_length]
SYSTEM = "You are a helpful assistant. Use the tools to compute exact answers."


class Answer(BaseModel):
    """The final answer to the question."""

    value: int = Field(ge=-1_000_000, le=1_000_000, description="the number that answers it")


@wrap_model_call
def tool_first(
    request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
) -> ModelResponse:
    """The first turn calls one tool; the turn after the tool results answers."""
    after_tools = isinstance(request.messages[-1], ToolMessage)
    choice = "none" if after_tools else "required"
    settings = {**request.model_settings, "parallel_tool_calls": False}
    if request.response_format is None:
        return handler(request.override(tool_choice=choice, model_settings=settings))
    # With a response format create_agent binds the tools with model_settings only (the
    # request's tool_choice is not passed), so the choice goes there.
    return handler(request.override(model_settings={**settings, "tool_choice": choice}))


def build_agent(chat: ChatSeed, *, auto: bool = False, structured: bool = False) -> Any:
    """The compiled agent: ``create_agent`` with the two tools (and ``Answer``)."""
    return create_agent(
        chat,
        tools=TOOLS,
        system_prompt=SYSTEM,
        response_format=Answer if structured else None,
        middleware=[] if auto else [tool_first],
    )


def run(
    question: str,
    *,
    model: str | None = None,
    max_tokens: int = 96,
    auto: bool = False,
    structured: bool = False,
) -> dict[str, Any]:
    """Run the agent on one question; returns its final state (``messages``, ...)."""
    chat = ChatSeed(model=model, max_tokens=max_tokens)
    agent = build_agent(chat, auto=auto, structured=structured)
    return dict(agent.invoke({"messages": [("user", question)]}, {"recursion_limit": 8}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question", default="What is 12 times 7?")
    parser.add_argument("--model", default=None, help="target model (default: embedded)")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--auto", action="store_true", help="every turn is the model's choice")
    parser.add_argument("--structured", action="store_true", help="response_format=Answer")
    args = parser.parse_args()
    t0 = time.perf_counter()
    state = run(
        args.question,
        model=args.model,
        max_tokens=args.max_tokens,
        auto=args.auto,
        structured=args.structured,
    )
    print_conversation(state["messages"], time.perf_counter() - t0)
    if args.structured:
        print(f"structured_response: {state.get('structured_response')!r}")


def print_conversation(messages: list[BaseMessage], seconds: float) -> None:
    """One line per message: tool calls, tool results, and the text turns."""
    for message in messages:
        if isinstance(message, AIMessage) and message.tool_calls:
            for call in message.tool_calls:
                print(f"[agent -> tool] {call['name']}({call['args']})")
        elif isinstance(message, ToolMessage):
            print(f"[tool  -> agent] {message.name}: {message.content}")
        else:
            print(f"[{message.type}] {message.content}")
    print(f"({len(messages)} messages, {seconds:.1f} s)")


if __name__ == "__main__":
    main()
