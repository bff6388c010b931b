"""LangChain messages -> text and chat-template turns."""

from __future__ import annotations

from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, HumanMessage, SystemMessage

_ROLES: tuple[tuple[type[BaseMessage], str], ...] = (
    (SystemMessage, "system"),
    (HumanMessage, "user"),
    (AIMessage, "assistant"),
)


def message_text(message: BaseMessage, *, strict: bool = False) -> str:
    """The text of a message: string content as is, text blocks joined.

    Args:
        message: any LangChain message.
        strict: raise on a content block that is not text (an image, a tool use) instead of
            leaving it out.

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
        elif strict:
            raise ValueError(
                f"ChatSeed accepts text content only; a {type(message).__name__} holds a "
                f"{block.get('type')!r} content block"
            )
    return "".join(parts)


def to_turn(message: BaseMessage) -> dict[str, str]:
    """One LangChain message -> one ``{"role", "content"}`` turn of a chat template.

    Raises:
        ValueError: for a message type without a chat role, an AI message with tool calls,
            or content that is not text.
    """
    if isinstance(message, ChatMessage):
        role = message.role
    else:
        role = next((r for kind, r in _ROLES if isinstance(message, kind)), "")
    if not role:
        raise ValueError(
            f"ChatSeed cannot render a {type(message).__name__} (type {message.type!r}): "
            "supported are SystemMessage, HumanMessage, AIMessage and ChatMessage"
        )
    if isinstance(message, AIMessage) and message.tool_calls:
        raise ValueError("ChatSeed does not support tool calling: an AIMessage has tool_calls")
    return {"role": role, "content": message_text(message, strict=True)}
