"""LangChain messages -> text and chat-template turns."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

_ROLES: tuple[tuple[type[BaseMessage], str], ...] = (
    (SystemMessage, "system"),
    (HumanMessage, "user"),
    (AIMessage, "assistant"),
)


TOOL_BLOCKS = frozenset({"tool_use", "tool_call", "function_call"})
"""Content blocks that repeat an AI message's ``tool_calls`` (rendered from those)."""


def message_text(message: BaseMessage, *, strict: bool = False) -> str:
    """The text of a message: string content as is, text blocks joined.

    Args:
        message: any LangChain message.
        strict: raise on a content block that is not text (an image, audio) instead of
            leaving it out. An AI message's tool-use blocks are always left out: its
            ``tool_calls`` carry them.

    Raises:
        ValueError: with ``strict``, naming the message type and the block type.
    """
    if isinstance(message.content, str):
        return message.content
    parts = []
    for block in message.content:
        if isinstance(block, str):
            parts.append(block)
        elif block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif block.get("type") in TOOL_BLOCKS and isinstance(message, AIMessage):
            continue
        elif strict:
            raise ValueError(
                f"ChatSeed accepts text content only; a {type(message).__name__} holds a "
                f"{block.get('type')!r} content block"
            )
    return "".join(parts)


def to_turn(
    message: BaseMessage, *, template_tools: bool = False, template_calls: bool = False
) -> dict[str, Any]:
    """One LangChain message -> one ``{"role", "content"}`` turn of a chat template.

    An AI message's tool calls go to the template as OpenAI-style ``tool_calls`` when it
    renders calls itself (``template_calls``: in its own format), else they are written
    after its text in the Hermes format (:func:`~langchain_seed._adapters.tools.call_text`);
    a ``ToolMessage`` becomes a ``tool`` turn, wrapped in ``<tool_response>`` tags unless
    the template renders tools itself (``template_tools``).

    Raises:
        ValueError: for a message type without a chat role, or content that is not text.
    """
    from langchain_seed._adapters.tools import call_text

    if isinstance(message, ToolMessage):
        text = message_text(message, strict=True)
        if not template_tools:
            return {"role": "tool", "content": f"<tool_response>\n{text}\n</tool_response>"}
        return {"role": "tool", "content": text, "tool_call_id": message.tool_call_id}
    if isinstance(message, ChatMessage):
        role = message.role
    else:
        role = next((r for kind, r in _ROLES if isinstance(message, kind)), "")
    if not role:
        raise ValueError(
            f"ChatSeed cannot render a {type(message).__name__} (type {message.type!r}): "
            "supported are SystemMessage, HumanMessage, AIMessage, ToolMessage and ChatMessage"
        )
    content = message_text(message, strict=True)
    if isinstance(message, AIMessage) and message.tool_calls and template_calls:
        calls = [
            {
                "type": "function",
                "id": call.get("id"),
                "function": {"name": call["name"], "arguments": call["args"]},
            }
            for call in message.tool_calls
        ]
        return {"role": role, "content": content, "tool_calls": calls}
    if isinstance(message, AIMessage) and message.tool_calls:
        texts = [call_text(call["name"], call["args"]) for call in message.tool_calls]
        content = "\n".join([content, *texts] if content else texts)
    return {"role": role, "content": content}
